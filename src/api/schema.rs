//! Schemas several modules of the API share: what `POST /events` takes and answers (the
//! answer also makes the `no_valid_events` error), and the times of bodies and query
//! parameters.
//!
//! What a client sends is described by hand: no Rust type holds raw input, which
//! [`crate::event::parse`] reads field by field (a test checks that both know the same
//! fields). What the server answers is a Rust type, serialized as described.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// An event as sent. Some fields have other spellings, listed after the main ones; giving
/// two spellings of one field makes the event invalid, and so does any other field.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "type": "signup", "user_id": "u-42", "service": "auth", "metadata": {"plan": "pro"}
})))]
pub struct NewEvent {
    /// 1–100 characters, not blank (only whitespace), without control characters
    /// (U+0000–U+001F, U+007F–U+009F) or bidirectional overrides and isolates
    /// (U+202A–U+202E, U+2066–U+2069). Required, except that an event with `service` and
    /// `message` and no type gets the type `log`.
    #[serde(rename = "type")]
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub kind: String,
    /// Absent: the time of receipt. More than 24 hours ahead, or older than the retention:
    /// invalid.
    #[schema(required = false)]
    pub timestamp: Time,
    /// Not blank (leave it out or send null when there is none), and no control or
    /// bidirectional formatting characters, as for `type`.
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub service: String,
    #[schema(required = false)]
    pub user_id: UserId,
    #[schema(required = false, max_length = 2000)]
    pub message: String,
    /// Any JSON object up to 16 KiB, nested at most 10 deep; returned exactly as sent.
    #[schema(required = false, value_type = Object)]
    pub metadata: Value,
    /// An idempotency key, 1–128 characters: an event whose `id` was accepted in the last
    /// `--dedup-window` is not stored again, and counted in `duplicates` (the same content)
    /// or `conflicts` (other content; the first version stays).
    #[schema(required = false, min_length = 1, max_length = 128)]
    pub id: String,
    /// When the client sent the event by its own clock: the `timestamp` is then corrected
    /// for the client's clock skew (see the `Sent-At` header, which this overrides).
    #[schema(required = false)]
    pub sent_at: Time,
    /// Another spelling of `sent_at`.
    #[serde(rename = "sentAt")]
    #[schema(required = false)]
    pub sent_at_camel: Time,
    /// Another spelling of `type`.
    #[serde(rename = "eventType")]
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub event_type_camel: String,
    /// Another spelling of `type`.
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub event_type: String,
    /// Another spelling of `type`.
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub event: String,
    /// Another spelling of `service`.
    #[schema(required = false, min_length = 1, max_length = 100)]
    pub source: String,
    /// Another spelling of `user_id`.
    #[serde(rename = "userId")]
    #[schema(required = false)]
    pub user_id_camel: UserId,
    /// Another spelling of `metadata`.
    #[schema(required = false, value_type = Object)]
    pub properties: Value,
}

/// A time: RFC 3339 with an offset, or an epoch number (seconds below 100,000,000,000,
/// milliseconds from there; fractions allowed), from the year 0000 to 9999.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Time {
    #[schema(format = DateTime)]
    Rfc3339(String),
    Epoch(f64),
}

/// A user id as sent: a string, or an integer (older systems send numbers).
pub struct UserId;

impl PartialSchema for UserId {
    // By hand: the derive puts no length limit on one variant of an untagged enum.
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(256)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .description(Some(
                "A string of at most 256 characters without control or bidirectional \
                formatting characters (as for `type`), or an integer of at most 64 bits, \
                stored as its decimal string (`42` is stored, returned and found as `\"42\"`). \
                Other numbers (with a fraction or an exponent) are invalid: send them as \
                strings.",
            ))
            .into()
    }
}

impl ToSchema for UserId {}

/// The body of `POST /events` as JSON: one event or an array of them (at most 10,000).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum NewEvents {
    One(Box<NewEvent>),
    Many(Vec<NewEvent>),
}

/// The answer of `POST /events`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "accepted": 2, "duplicates": 0, "conflicts": 0,
    "ids": ["order-1001", "019a1b2c-3d4e-7f00-8a9b-0c1d2e3f4a5b", null],
    "errors": [{"index": 2, "field": "colour", "message": "unknown field"},
        {"index": 2, "field": "type", "message": "must not be blank (empty or only whitespace)"}]
})))]
pub struct IngestAnswer {
    /// Events stored by this request.
    pub accepted: usize,
    /// Valid events not stored again: their `id` was accepted before, with the same content
    /// (a retry). `accepted + duplicates + conflicts` is the number of valid events.
    pub duplicates: usize,
    /// Valid events not stored because their `id` was accepted before with other content
    /// (type, timestamp if one was sent, service, user id, message or metadata): the first
    /// version stays. Only told apart from `duplicates` while the id is in memory (see
    /// `--dedup-window`); a repeat found by the store is counted in `accepted`.
    pub conflicts: usize,
    /// Each event's id, in request order (`null` for an invalid event).
    pub ids: Vec<Option<String>>,
    /// What is wrong with the invalid events, which were not stored: every problem of each,
    /// one entry per problem (entries of one event share its `index`).
    pub errors: Vec<EventError>,
}

/// One reason why an event of a request is invalid.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventError {
    /// Position of the event in the request (from 0; the line, from 0, for NDJSON).
    pub index: usize,
    /// The field at fault (empty when it is the event as a whole).
    pub field: String,
    pub message: String,
}
