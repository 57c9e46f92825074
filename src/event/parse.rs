//! Turns a request body (one JSON value or NDJSON lines) into validated [`NewEvent`]s, one
//! result per event, so that a bad event is reported without failing the rest of the batch.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::timefmt;
use super::NewEvent;

pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024; // after decompression (checked by the caller)

pub const MAX_TYPE_CHARS: usize = 100;
pub const MAX_SERVICE_CHARS: usize = 100;
pub const MAX_USER_ID_CHARS: usize = 256;
pub const MAX_MESSAGE_CHARS: usize = 2_000;
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The metadata limit of the SDK endpoints, Segment's per-call limit: their metadata carries
/// the SDK's `context` besides the event's properties.
pub const MAX_SDK_METADATA_BYTES: usize = 32 * 1024;
/// The metadata key a skew-corrected event keeps the timestamp its client sent under.
pub const ORIGINAL_TIMESTAMP_KEY: &str = "original_timestamp";
pub const MAX_METADATA_DEPTH: usize = 10;
/// How far ahead of the time of receipt an event may be: allows for clients' clock skew.
pub const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One reason an event was refused (an event may have several). `field` is the key as the
/// client wrote it (an alias such as `eventType` stays so), or "" when the error is about the
/// whole event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        FieldError::new("", message)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.field, self.message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not valid JSON (single object or array body). line/column from serde_json (1-based line).
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    /// More than MAX_EVENTS_PER_REQUEST events.
    TooManyEvents { count_at_least: usize },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed {
                line,
                column,
                reason,
            } => write!(f, "malformed JSON at line {line} column {column}: {reason}"),
            BodyError::TooManyEvents { count_at_least } => write!(
                f,
                "too many events: at least {count_at_least}, at most {MAX_EVENTS_PER_REQUEST} are allowed per request"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// A valid event, or every reason it is invalid (at least one): structural problems (unknown,
/// repeated or conflicting keys) in document order, then the fields' own, in the order of
/// [`NewEvent`]'s fields. All of them, so that a client can fix an event in one pass.
pub type EventResult = Result<NewEvent, Vec<FieldError>>;

/// One event's outcome. `index` is its position in the array, or its line number (from 0)
/// in NDJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub index: usize,
    pub result: EventResult,
}

/// What timestamps are checked against, fixed once per request.
#[derive(Clone, Copy)]
pub struct TimeBounds<'a> {
    /// The time of receipt (injected clock): the timestamp of an event that has none, and
    /// where "more than 24 h in the future" is counted from.
    pub now_ms: i64,
    /// Older timestamps are refused (the retention would delete them at once), with the
    /// message `too_old` gives: made only for an event refused, not for every request.
    pub oldest_ms: i64,
    pub too_old: &'a (dyn Fn() -> String + Sync),
    /// When the client says it sent the request (a `Sent-At` header, or a batch's `sentAt`),
    /// for the events that carry no `sent_at` of their own: see [`correct_skew`].
    pub sent_at_ms: Option<i64>,
    /// [`MAX_METADATA_BYTES`], or more on the SDK endpoints.
    pub max_metadata_bytes: usize,
}

/// Segment's clock-skew rule: an event stamped `timestamp` by a client whose clock said
/// `sent_at` when it sent it happened `sent_at - timestamp` before the server received it.
/// A wrong client clock shifts both alike, so the difference is right where the absolute
/// times are not.
pub fn correct_skew(timestamp_ms: i64, sent_at_ms: i64, received_ms: i64) -> i64 {
    received_ms.saturating_sub(sent_at_ms.saturating_sub(timestamp_ms))
}

/// Splits and parses a body.
///
/// The caller has already limited `body` to [`MAX_BODY_BYTES`].
pub fn parse_body(
    body: &[u8],
    format: BodyFormat,
    bounds: &TimeBounds<'_>,
) -> Result<Vec<Item>, BodyError> {
    let (body, bom_len) = match body.strip_prefix(BOM) {
        Some(rest) => (rest, BOM.len()),
        None => (body, 0),
    };
    match format {
        BodyFormat::Json => parse_json_body(body, bom_len, bounds),
        BodyFormat::Ndjson => parse_ndjson_body(body, bounds),
    }
}

/// Parses one JSON value's text as an event (an NDJSON line, or an OTLP record's event
/// text): text that is not JSON is reported as an invalid event, not as a malformed body.
pub fn parse_event(raw: &str, bounds: &TimeBounds<'_>) -> EventResult {
    parse_event_text(raw, bounds).unwrap_or_else(|e| Err(vec![invalid_json(&e)]))
}

fn parse_json_body(
    body: &[u8],
    bom_len: usize,
    bounds: &TimeBounds<'_>,
) -> Result<Vec<Item>, BodyError> {
    // Validating up front lets serde_json take the faster `&str` path and borrow strings.
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = position_of(body, e.valid_up_to(), bom_len);
        BodyError::Malformed {
            line,
            column,
            reason: "invalid UTF-8".to_owned(),
        }
    })?;
    if first_non_whitespace(text) != Some(b'[') {
        let result = parse_event_text(text, bounds).map_err(|e| malformed(&e, bom_len))?;
        return Ok(vec![Item { index: 0, result }]);
    }

    let mut too_many = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let items = de
        .deserialize_seq(EventsVisitor {
            bounds,
            too_many: &mut too_many,
        })
        .and_then(|items| de.end().map(|()| items));
    match items {
        Ok(items) => Ok(items),
        Err(_) if too_many => Err(BodyError::TooManyEvents {
            count_at_least: MAX_EVENTS_PER_REQUEST + 1,
        }),
        Err(e) => Err(malformed(&e, bom_len)),
    }
}

/// Parses an array's elements as events in the one pass that also checks the whole body's
/// syntax (a syntax error anywhere still refuses the body), giving up as soon as there are
/// too many so that a huge array of tiny elements costs neither time nor memory.
struct EventsVisitor<'b, 'f> {
    bounds: &'b TimeBounds<'b>,
    too_many: &'f mut bool,
}

impl<'de> Visitor<'de> for EventsVisitor<'_, '_> {
    type Value = Vec<Item>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(result) = seq.next_element_seed(EventSeed {
            bounds: self.bounds,
        })? {
            if items.len() == MAX_EVENTS_PER_REQUEST {
                *self.too_many = true;
                return Err(de::Error::custom("too many events"));
            }
            items.push(Item {
                index: items.len(),
                result,
            });
        }
        Ok(items)
    }
}

/// One JSON value (a body, an array's element or an NDJSON line) read as an event if it is
/// an object, and refused, once read to its end, if it is any other value.
struct EventSeed<'b> {
    bounds: &'b TimeBounds<'b>,
}

impl EventSeed<'_> {
    fn not_an_object<E>(self) -> Result<EventResult, E> {
        Ok(Err(vec![FieldError::whole("event must be a JSON object")]))
    }
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = EventResult;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EventResult, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = EventResult;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventResult, A::Error> {
        Ok(EventVisitor.visit_map(map)?.into_event(self.bounds))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventResult, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }

    fn visit_unit<E: de::Error>(self) -> Result<EventResult, E> {
        self.not_an_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<EventResult, E> {
        self.not_an_object()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<EventResult, E> {
        self.not_an_object()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<EventResult, E> {
        self.not_an_object()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<EventResult, E> {
        self.not_an_object()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<EventResult, E> {
        self.not_an_object()
    }
}

fn parse_ndjson_body(body: &[u8], bounds: &TimeBounds<'_>) -> Result<Vec<Item>, BodyError> {
    let lines = || {
        body.split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
    };
    // Counting is a plain byte scan, far cheaper than parsing events only to refuse them.
    let count = lines().take(MAX_EVENTS_PER_REQUEST + 1).count();
    if count > MAX_EVENTS_PER_REQUEST {
        return Err(BodyError::TooManyEvents {
            count_at_least: count,
        });
    }
    let mut items = Vec::with_capacity(count);
    items.extend(lines().map(|(index, line)| Item {
        index,
        result: parse_ndjson_line(line.strip_suffix(b"\r").unwrap_or(line), bounds),
    }));
    Ok(items)
}

fn parse_ndjson_line(line: &[u8], bounds: &TimeBounds<'_>) -> EventResult {
    let text = std::str::from_utf8(line).map_err(|e| {
        vec![FieldError::whole(format!(
            "invalid UTF-8 at column {}",
            e.valid_up_to() + 1
        ))]
    })?;
    parse_event(text, bounds)
}

/// Parses one event, checking the JSON syntax in the same pass: the outer error is a syntax
/// error, the inner one an invalid event.
fn parse_event_text(text: &str, bounds: &TimeBounds<'_>) -> Result<EventResult, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let result = EventSeed { bounds }.deserialize(&mut de)?;
    de.end()?;
    Ok(result)
}

fn first_non_whitespace(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn malformed(e: &serde_json::Error, bom_len: usize) -> BodyError {
    // serde_json counts columns in bytes of what it was given, which starts after the BOM.
    let column = if e.line() == 1 {
        e.column() + bom_len
    } else {
        e.column()
    };
    BodyError::Malformed {
        line: e.line(),
        column,
        reason: reason(e),
    }
}

fn invalid_json(e: &serde_json::Error) -> FieldError {
    FieldError::whole(format!(
        "invalid JSON: {} at column {}",
        reason(e),
        e.column()
    ))
}

/// serde_json's message without the " at line L column C" it appends.
fn reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(reason) => reason.to_owned(),
        None => full,
    }
}

/// 1-based line and byte column of `offset`, counted the way serde_json does.
fn position_of(body: &[u8], offset: usize, bom_len: usize) -> (usize, usize) {
    let before = &body[..offset];
    match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => (
            1 + before.iter().filter(|&&b| b == b'\n').count(),
            offset - nl,
        ),
        None => (1, offset + 1 + bom_len),
    }
}

// --- One event -------------------------------------------------------------------------

/// The fields of [`NewEvent`], as places a key's value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Type,
    Timestamp,
    Service,
    UserId,
    Message,
    Metadata,
    Id,
    SentAt,
}

const SLOTS: usize = 8;

/// Every accepted top-level key with its slot; the first key of each slot is its canonical name.
const KEYS: [(&str, Slot); 15] = [
    ("type", Slot::Type),
    ("eventType", Slot::Type),
    ("event_type", Slot::Type),
    ("event", Slot::Type),
    ("timestamp", Slot::Timestamp),
    ("service", Slot::Service),
    ("source", Slot::Service),
    ("user_id", Slot::UserId),
    ("userId", Slot::UserId),
    ("message", Slot::Message),
    ("metadata", Slot::Metadata),
    ("properties", Slot::Metadata),
    ("id", Slot::Id),
    ("sent_at", Slot::SentAt),
    ("sentAt", Slot::SentAt),
];

/// Every accepted top-level key (for the API description's test).
#[cfg(test)]
pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(name, _)| *name)
}

/// A top-level key: an index into [`KEYS`], or a name no event has.
enum Key {
    Known(usize),
    Unknown(String),
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        // A `match` compiles to length-then-bytes comparisons; no allocation for known keys.
        let known = match s {
            "type" => 0,
            "eventType" => 1,
            "event_type" => 2,
            "event" => 3,
            "timestamp" => 4,
            "service" => 5,
            "source" => 6,
            "user_id" => 7,
            "userId" => 8,
            "message" => 9,
            "metadata" => 10,
            "properties" => 11,
            "id" => 12,
            "sent_at" => 13,
            "sentAt" => 14,
            _ => return Ok(Key::Unknown(s.to_owned())),
        };
        Ok(Key::Known(known))
    }
}

impl<'de> DeserializeSeed<'de> for KeyVisitor {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

/// A top-level value, reduced to what validation needs. Strings borrow from the body when
/// they contain no escapes.
#[derive(Debug)]
enum Val<'de> {
    Null,
    Str(Cow<'de, str>),
    /// A number JSON gives exactly as an integer (one that fits in 64 bits, signed or not).
    Int(i128),
    /// Any other number: with a fraction or an exponent, or beyond 64 bits.
    Float(f64),
    /// A boolean, array or object where none is wanted.
    Other,
    /// Metadata: the exact text, checked later.
    Raw(&'de RawValue),
    /// Metadata assembled from an SDK call's members, checked later.
    Text(String),
}

struct ValVisitor;

impl<'de> DeserializeSeed<'de> for ValVisitor {
    type Value = Val<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Val<'de>, E> {
        Ok(Val::Int(n.into()))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Val<'de>, E> {
        Ok(Val::Int(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Val<'de>, E> {
        Ok(Val::Float(n))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }
}

/// What the top-level object held, before validation.
#[derive(Default)]
struct Fields<'de> {
    /// Per slot: the name of the key that gave the value, and the value.
    values: [Option<(&'static str, Val<'de>)>; SLOTS],
    /// Structural problems (unknown, repeated or conflicting keys), in document order, each
    /// once.
    errors: Vec<FieldError>,
}

impl Fields<'_> {
    fn structural(&mut self, error: FieldError) {
        // The same error again (a key given thrice, an unknown key twice) is no other problem
        // to fix.
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    /// Reads every entry, also after a problem: every problem is reported, and a syntax
    /// error later in the text still wins (the caller must be able to tell broken JSON from
    /// a bad event). Of a repeated key or of conflicting aliases, the first value is kept and
    /// validated.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        let mut seen = 0u16;
        while let Some(key) = map.next_key_seed(KeyVisitor)? {
            let k = match key {
                Key::Known(k) => k,
                Key::Unknown(name) => {
                    fields.structural(FieldError::new(name, "unknown field"));
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let (name, slot) = KEYS[k];
            if seen & (1 << k) != 0 {
                fields.structural(FieldError::new(name, "duplicate key"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            seen |= 1 << k;
            let val = if slot == Slot::Metadata {
                metadata_val(map.next_value()?)
            } else {
                map.next_value_seed(ValVisitor)?
            };
            let entry = &mut fields.values[slot as usize];
            match entry {
                // Two aliases of one field: refuse rather than guess, unless one is null (absent).
                Some((other, prev)) if !matches!(prev, Val::Null) => {
                    if !matches!(val, Val::Null) {
                        let message = format!("conflicts with \"{other}\"");
                        fields.structural(FieldError::new(name, message));
                    }
                }
                _ => *entry = Some((name, val)),
            }
        }
        Ok(fields)
    }
}

/// Keeps a field's value, or records why it is invalid.
fn valid<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    result.map_err(|error| errors.push(error)).ok()
}

impl<'de> Fields<'de> {
    /// The slot's key name and value, with null treated as absent.
    fn take(&mut self, slot: Slot) -> Option<(&'static str, Val<'de>)> {
        match self.values[slot as usize].take() {
            Some((_, Val::Null)) | None => None,
            entry => entry,
        }
    }

    fn present(&self, slot: Slot) -> bool {
        matches!(&self.values[slot as usize], Some((_, v)) if !matches!(v, Val::Null))
    }

    /// Validates every field, collecting every error.
    fn into_event(mut self, bounds: &TimeBounds<'_>) -> EventResult {
        let mut errors = std::mem::take(&mut self.errors);
        let kind = match self.take(Slot::Type) {
            Some(entry) => valid(&mut errors, kind(entry)),
            // The log shape: structured log lines carry no type of their own.
            None if self.present(Slot::Service) && self.present(Slot::Message) => {
                Some("log".to_owned())
            }
            None => {
                errors.push(FieldError::new("type", "is required"));
                None
            }
        };
        let sent_at = match self.take(Slot::SentAt) {
            None => Some(bounds.sent_at_ms),
            Some((name, val)) => valid(
                &mut errors,
                time(val)
                    .map(Some)
                    .map_err(|message| FieldError::new(name, message)),
            ),
        };
        // A timestamp corrected for skew is kept as sent under ORIGINAL_TIMESTAMP_KEY, and is
        // not the client's own for deduplication: a retry is corrected by another amount.
        let mut original = None;
        let timestamp = match self.take(Slot::Timestamp) {
            None => Some((bounds.now_ms, false)),
            Some((name, val)) => valid(
                &mut errors,
                time(val)
                    .map(|ms| match sent_at.flatten() {
                        Some(sent_at_ms) => {
                            original = Some(ms);
                            (correct_skew(ms, sent_at_ms, bounds.now_ms), false)
                        }
                        None => (ms, true),
                    })
                    .and_then(|(ms, sent)| within(ms, bounds).map(|ms| (ms, sent)))
                    .map_err(|message| FieldError::new(name, message)),
            ),
        };
        let service = valid(
            &mut errors,
            self.take(Slot::Service).map(service).transpose(),
        );
        let user_id = valid(
            &mut errors,
            self.take(Slot::UserId).map(user_id).transpose(),
        );
        let message = valid(
            &mut errors,
            optional_string(self.take(Slot::Message), 0, MAX_MESSAGE_CHARS),
        );
        let metadata = valid(
            &mut errors,
            self.take(Slot::Metadata)
                .map(|(name, val)| {
                    metadata(val, bounds.max_metadata_bytes).map_err(|m| FieldError::new(name, m))
                })
                .transpose(),
        );
        let metadata = match (metadata, original) {
            (Some(metadata), Some(ms)) => Some(with_original_timestamp(metadata, ms)),
            (metadata, _) => metadata,
        };
        let id = valid(
            &mut errors,
            optional_string(self.take(Slot::Id), 1, MAX_ID_CHARS),
        );
        match (kind, timestamp, service, user_id, message, metadata, id) {
            (
                Some(kind),
                Some((timestamp_ms, timestamp_sent)),
                Some(service),
                Some(user_id),
                Some(message),
                Some(metadata),
                Some(id),
            ) if errors.is_empty() => Ok(NewEvent {
                id,
                kind,
                timestamp_ms,
                timestamp_sent,
                service,
                user_id,
                message,
                metadata,
            }),
            _ => Err(errors),
        }
    }
}

/// An event assembled from another API's fields (an SDK's call) rather than read from
/// Eventide's own JSON text: validated by the same rules as an event sent to
/// `POST /events`, without writing the call out in Eventide's shape and reading it again.
/// Each value carries the name the client gave it, so that errors name the client's fields.
#[derive(Default)]
pub struct Assembled<'de> {
    fields: Fields<'de>,
}

impl<'de> Assembled<'de> {
    /// Sets `slot` from a JSON value the client sent as `name` (null: as if absent). A
    /// slot already set keeps its value: the caller sets the value it prefers first.
    pub fn value(&mut self, slot: Slot, name: &'static str, raw: &'de RawValue) {
        let val = if slot == Slot::Metadata {
            metadata_val(raw)
        } else {
            // `raw` is valid JSON already, which every JSON value is to `ValVisitor`.
            let mut de = serde_json::Deserializer::from_str(raw.get());
            ValVisitor.deserialize(&mut de).unwrap_or(Val::Other)
        };
        self.set(slot, name, val);
    }

    /// Reads the next value of `map` into `slot`, as the client sent it under `name`: for
    /// a visitor that reads an SDK's call in one pass.
    pub fn read<A: MapAccess<'de>>(
        &mut self,
        slot: Slot,
        name: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let val = if slot == Slot::Metadata {
            metadata_val(map.next_value()?)
        } else {
            map.next_value_seed(ValVisitor)?
        };
        self.set(slot, name, val);
        Ok(())
    }

    /// Sets `slot` to a string the request implies (the call an endpoint stands for, the
    /// name of the key a request came with).
    pub fn string(&mut self, slot: Slot, name: &'static str, value: impl Into<Cow<'de, str>>) {
        self.set(slot, name, Val::Str(value.into()));
    }

    /// Sets the metadata to a JSON object's text, assembled from the client's members.
    pub fn metadata(&mut self, name: &'static str, text: String) {
        self.set(Slot::Metadata, name, Val::Text(text));
    }

    pub fn is_set(&self, slot: Slot) -> bool {
        self.fields.present(slot)
    }

    fn set(&mut self, slot: Slot, name: &'static str, val: Val<'de>) {
        if !matches!(val, Val::Null) && !self.fields.present(slot) {
            self.fields.values[slot as usize] = Some((name, val));
        }
    }

    /// The event, or every reason it is invalid.
    pub fn validate(self, bounds: &TimeBounds<'_>) -> EventResult {
        self.fields.into_event(bounds)
    }
}

/// Metadata as sent: kept as its exact text, checked later.
fn metadata_val(raw: &RawValue) -> Val<'_> {
    if raw.get() == "null" {
        Val::Null
    } else {
        Val::Raw(raw)
    }
}

fn optional_string(
    entry: Option<(&'static str, Val<'_>)>,
    min: usize,
    max: usize,
) -> Result<Option<String>, FieldError> {
    entry.map(|entry| string(entry, min, max)).transpose()
}

/// A string of `min..=max` chars (Unicode scalar values), `min` being 0 or 1.
fn string(
    (name, val): (&'static str, Val<'_>),
    min: usize,
    max: usize,
) -> Result<String, FieldError> {
    let Val::Str(s) = val else {
        return Err(FieldError::new(name, "must be a string"));
    };
    // A UTF-8 string has at most as many chars as bytes, so counting is rarely needed.
    let too_long = s.len() > max && s.chars().count() > max;
    if too_long || (min > 0 && s.is_empty()) {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min}-{max} characters")
        };
        return Err(FieldError::new(name, message));
    }
    Ok(s.into_owned())
}

/// `type`: a name, and not blank (it is what events are counted and filtered by).
fn kind(entry: (&'static str, Val<'_>)) -> Result<String, FieldError> {
    let name = entry.0;
    let kind = string(entry, 0, MAX_TYPE_CHARS)?;
    visible_name(name, &kind)?;
    not_blank(name, &kind, "must not be blank (empty or only whitespace)")?;
    Ok(kind)
}

/// `service`: a name, and not blank either. An empty service is refused rather than taken
/// as absent: either would silently change what the client meant, and the client can leave
/// the field out (or send null) itself.
fn service(entry: (&'static str, Val<'_>)) -> Result<String, FieldError> {
    let name = entry.0;
    let service = string(entry, 0, MAX_SERVICE_CHARS)?;
    visible_name(name, &service)?;
    not_blank(
        name,
        &service,
        "must not be blank (empty or only whitespace): leave it out, or send null, when there is none",
    )?;
    Ok(service)
}

/// `user_id`: a name, or an integer (older systems send numbers), kept as its decimal text
/// so that it is found by `?user_id=42` like the string "42".
fn user_id((name, val): (&'static str, Val<'_>)) -> Result<String, FieldError> {
    match val {
        Val::Int(n) => Ok(n.to_string()),
        // Its decimal text would not be what the client has: a fraction or an exponent
        // has no single spelling, and beyond 64 bits JSON numbers lose digits.
        Val::Float(_) => Err(FieldError::new(
            name,
            "must be a string or an integer (no fraction or exponent, at most 64 bits): send other numbers as strings",
        )),
        Val::Str(_) => {
            let user_id = string((name, val), 0, MAX_USER_ID_CHARS)?;
            visible_name(name, &user_id)?;
            Ok(user_id)
        }
        _ => Err(FieldError::new(name, "must be a string or an integer")),
    }
}

/// Refuses the characters that make a name (`type`, `service`, `user_id`) mean something
/// else than it shows: control characters (C0 such as NUL and ESC, DEL, and C1, whose CSI
/// acts as ESC `[` in some terminals) and bidirectional overrides and isolates (which
/// reorder the text around them on screen). Names are filtered by, grouped by and shown;
/// `message` and `metadata` are free text and keep anything.
fn visible_name(name: &'static str, value: &str) -> Result<(), FieldError> {
    // Printable ASCII, by far the common case, needs no decoding.
    if value.bytes().all(|b| matches!(b, b' '..=b'~')) {
        return Ok(());
    }
    let found = value.chars().enumerate().find_map(|(i, c)| {
        if c.is_control() {
            Some((i, c, "a control character"))
        } else if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            Some((i, c, "a bidirectional formatting character"))
        } else {
            None
        }
    });
    match found {
        None => Ok(()),
        Some((i, c, what)) => Err(FieldError::new(
            name,
            format!(
                "contains {what} (U+{:04X}) at position {}",
                u32::from(c),
                i + 1
            ),
        )),
    }
}

/// Refuses a value with nothing but whitespace (Unicode's White_Space), or nothing at all.
fn not_blank(name: &'static str, value: &str, message: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(name, message));
    }
    Ok(())
}

/// A time as the client wrote it, in epoch milliseconds.
fn time(val: Val<'_>) -> Result<i64, String> {
    match val {
        Val::Str(s) => timefmt::parse_rfc3339_ms(&s),
        // Integers beyond 2^53 lose precision as f64, but every such timestamp is out of
        // range anyway.
        Val::Int(n) => timefmt::epoch_number_to_ms(n as f64),
        Val::Float(n) => timefmt::epoch_number_to_ms(n),
        _ => Err(
            "must be an RFC 3339 string or a number of epoch seconds or milliseconds".to_owned(),
        ),
    }
}

/// An event's time, refused when too far ahead or older than the retention keeps.
fn within(ms: i64, bounds: &TimeBounds<'_>) -> Result<i64, String> {
    if ms.saturating_sub(bounds.now_ms) > MAX_FUTURE_MS {
        return Err("is more than 24 h in the future".to_owned());
    }
    if ms < bounds.oldest_ms {
        return Err((bounds.too_old)());
    }
    Ok(ms)
}

/// The metadata with the timestamp the client sent (RFC 3339) added first, unless the
/// client already has a key of that name.
fn with_original_timestamp(metadata: Option<String>, original_ms: i64) -> Option<String> {
    let entry = format!(
        "\"{ORIGINAL_TIMESTAMP_KEY}\":\"{}\"",
        timefmt::format_rfc3339_ms(original_ms)
    );
    Some(match metadata {
        None => format!("{{{entry}}}"),
        Some(text) if text.contains(&format!("\"{ORIGINAL_TIMESTAMP_KEY}\"")) => text,
        Some(text) => {
            // The text is a valid JSON object: `{`, maybe whitespace, then `}` or a key.
            let rest = text[1..].trim_start();
            if rest.starts_with('}') {
                format!("{{{entry}}}")
            } else {
                format!("{{{entry},{rest}")
            }
        }
    })
}

fn metadata(val: Val<'_>, max_bytes: usize) -> Result<String, String> {
    let text: Cow<'_, str> = match val {
        Val::Raw(raw) => Cow::Borrowed(raw.get()),
        Val::Text(text) => Cow::Owned(text),
        _ => return Err("must be a JSON object".to_owned()),
    };
    if !text.starts_with('{') {
        return Err("must be a JSON object".to_owned());
    }
    if text.len() > max_bytes {
        return Err(format!("must be at most {max_bytes} bytes"));
    }
    let mut de = serde_json::Deserializer::from_str(&text);
    de.deserialize_any(Walker { depth: 1 }).map_err(|e| {
        if e.is_data() {
            reason(&e)
        } else {
            // Only number overflow gets here: the text already passed serde_json's scan.
            format!("invalid JSON: {}", reason(&e))
        }
    })?;
    Ok(text.into_owned())
}

/// Walks metadata to enforce the nesting limit and unique keys. `depth` is the level the
/// value would be at if it is an object or array (the metadata object itself is 1).
///
/// It stops at the first level too deep, so its own recursion stays shallow.
#[derive(Clone, Copy)]
struct Walker {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walker {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker {
    fn enter<E: de::Error>(&self) -> Result<Walker, E> {
        if self.depth > MAX_METADATA_DEPTH {
            return Err(E::custom(format!(
                "nesting deeper than {MAX_METADATA_DEPTH} levels"
            )));
        }
        Ok(Walker {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Walker {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(CowKey)? {
            if let Some(key) = keys.insert(key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A metadata key, borrowed from the body unless it had escapes.
struct CowKey;

impl<'de> DeserializeSeed<'de> for CowKey {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowKey {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// The keys of one object. Typical metadata has a handful, where a linear scan beats
/// hashing; past that a set keeps a 16 KiB object of tiny keys from going quadratic.
#[derive(Default)]
struct KeySet<'de> {
    small: Vec<Cow<'de, str>>,
    large: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> KeySet<'de> {
    const SMALL: usize = 16;

    /// Adds `key`, or hands it back if it was already there.
    fn insert(&mut self, key: Cow<'de, str>) -> Option<Cow<'de, str>> {
        let large = match &mut self.large {
            Some(large) => large,
            None => {
                if self.small.contains(&key) {
                    return Some(key);
                }
                if self.small.len() < Self::SMALL {
                    self.small.push(key);
                    return None;
                }
                self.large.insert(self.small.drain(..).collect())
            }
        };
        if large.contains(&key) {
            return Some(key);
        }
        large.insert(key);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    /// 2024-06-01T00:00:00Z.
    const NOW: i64 = 1_717_200_000_000;

    fn never() -> String {
        unreachable!("no timestamp is before i64::MIN")
    }

    /// Received at `now_ms`, with no retention.
    fn at(now_ms: i64) -> TimeBounds<'static> {
        TimeBounds {
            now_ms,
            oldest_ms: i64::MIN,
            too_old: &never,
            sent_at_ms: None,
            max_metadata_bytes: MAX_METADATA_BYTES,
        }
    }

    fn ev(json: &str) -> EventResult {
        parse_event(json, &at(NOW))
    }

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            id: None,
            kind: kind.to_owned(),
            timestamp_ms: NOW,
            timestamp_sent: false,
            service: None,
            user_id: None,
            message: None,
            metadata: None,
        }
    }

    fn fail(field: &str, message: &str) -> EventResult {
        fails(&[(field, message)])
    }

    /// Invalid, for these reasons in this order.
    fn fails(errors: &[(&str, &str)]) -> EventResult {
        Err(errors
            .iter()
            .map(|(field, message)| FieldError::new(*field, *message))
            .collect())
    }

    /// Runs `(json, expected)` rows, naming the failing row.
    fn check(rows: &[(&str, EventResult)]) {
        for (json, want) in rows {
            assert_eq!(&ev(json), want, "{json}");
        }
    }

    /// Runs `(value, expected)` rows, each on an event of type `a` whose member `field` is
    /// `value` (JSON text), naming the failing row.
    fn check_field(field: &str, rows: &[(&str, EventResult)]) {
        for (value, want) in rows {
            let json = format!(r#"{{"type":"a","{field}":{value}}}"#);
            assert_eq!(&ev(&json), want, "{json}");
        }
    }

    fn with<F: FnOnce(&mut NewEvent)>(kind: &str, f: F) -> EventResult {
        let mut e = event(kind);
        f(&mut e);
        Ok(e)
    }

    fn obj(entries: &[(&str, Value)]) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }

    #[test]
    fn key_table_matches_key_visitor() {
        for (i, (name, _)) in KEYS.iter().enumerate() {
            let key = KeyVisitor.visit_str::<serde_json::Error>(name);
            assert!(matches!(key, Ok(Key::Known(k)) if k == i), "{name}");
        }
    }

    #[test]
    fn a_sent_at_corrects_the_clock_skew_and_keeps_the_original() {
        let hour = 3_600_000;
        let ahead = timefmt::format_rfc3339_ms(NOW + hour);
        let ten_s_earlier = timefmt::format_rfc3339_ms(NOW + hour - 10_000);
        // A client an hour ahead, whose event happened 10 s before it sent it.
        check(&[
            (
                &obj(&[
                    ("type", json!("a")),
                    ("timestamp", json!(ten_s_earlier)),
                    ("sent_at", json!(ahead)),
                    ("metadata", json!({"k": 1})),
                ]),
                with("a", |e| {
                    e.timestamp_ms = NOW - 10_000;
                    e.metadata = Some(format!(
                        r#"{{"original_timestamp":"{ten_s_earlier}","k":1}}"#
                    ));
                }),
            ),
            // Epoch milliseconds, camelCase, no metadata of its own.
            (
                &obj(&[
                    ("type", json!("a")),
                    ("timestamp", json!(NOW + hour)),
                    ("sentAt", json!(NOW + hour)),
                ]),
                with("a", |e| {
                    e.metadata = Some(format!(r#"{{"original_timestamp":"{ahead}"}}"#));
                }),
            ),
            // Without a timestamp there is nothing to correct.
            (
                &obj(&[("type", json!("a")), ("sent_at", json!(ahead))]),
                Ok(event("a")),
            ),
            (
                &obj(&[("type", json!("a")), ("sent_at", json!("soon"))]),
                fail(
                    "sent_at",
                    "must be an RFC 3339 date-time with offset, e.g. 2024-01-15T10:30:00Z \
                     (the 'year' component could not be parsed)",
                ),
            ),
        ]);
        // The request's Sent-At, for events without their own; the client's key wins.
        let bounds = TimeBounds {
            sent_at_ms: Some(NOW + hour),
            ..at(NOW)
        };
        let sent = parse_event(
            &obj(&[
                ("type", json!("a")),
                ("timestamp", json!(NOW + hour - 5)),
                ("metadata", json!({"original_timestamp": 7})),
            ]),
            &bounds,
        )
        .unwrap();
        assert_eq!(sent.timestamp_ms, NOW - 5);
        assert!(
            !sent.timestamp_sent,
            "a retry is corrected by another amount"
        );
        assert_eq!(
            sent.metadata.as_deref(),
            Some(r#"{"original_timestamp":7}"#)
        );
        // A corrected time is checked like any other: two days ahead is still too far.
        let far = parse_event(
            &obj(&[
                ("type", json!("a")),
                ("timestamp", json!(NOW + 49 * hour)),
                ("sent_at", json!(NOW + hour)),
            ]),
            &at(NOW),
        );
        assert_eq!(far, fail("timestamp", "is more than 24 h in the future"));
    }

    const BLANK_TYPE: &str = "must not be blank (empty or only whitespace)";
    const BLANK_SERVICE: &str = "must not be blank (empty or only whitespace): leave it out, or send null, when there is none";
    const NOT_A_USER_ID: &str = "must be a string or an integer";
    const INEXACT_USER_ID: &str = "must be a string or an integer (no fraction or exponent, at most 64 bits): send other numbers as strings";

    #[test]
    fn type_rules() {
        let a100 = "a".repeat(100);
        let e100 = "😀".repeat(100);
        check(&[
            (r#"{"type":"signup"}"#, Ok(event("signup"))),
            (r#"{"eventType":"signup"}"#, Ok(event("signup"))),
            (r#"{"event_type":"signup"}"#, Ok(event("signup"))),
            (r#"{"event":"signup"}"#, Ok(event("signup"))),
            (&obj(&[("type", json!(a100))]), Ok(event(&a100))),
            (&obj(&[("type", json!(e100))]), Ok(event(&e100))),
            (
                &obj(&[("type", json!("a".repeat(101)))]),
                fail("type", "must be at most 100 characters"),
            ),
            (
                &obj(&[("event", json!("😀".repeat(101)))]),
                fail("event", "must be at most 100 characters"),
            ),
            (r#"{"type":""}"#, fail("type", BLANK_TYPE)),
            (r#"{"type":" "}"#, fail("type", BLANK_TYPE)),
            (
                r#"{"eventType":"\u3000 \u00a0"}"#,
                fail("eventType", BLANK_TYPE),
            ),
            (r#"{"type":" a "}"#, Ok(event(" a "))),
            (r#"{"type":5}"#, fail("type", "must be a string")),
            (
                r#"{"eventType":true}"#,
                fail("eventType", "must be a string"),
            ),
            (r#"{"type":["a"]}"#, fail("type", "must be a string")),
            (r#"{"type":{"a":1}}"#, fail("type", "must be a string")),
            ("{}", fail("type", "is required")),
            (r#"{"type":null}"#, fail("type", "is required")),
            (r#"{"service":"s"}"#, fail("type", "is required")),
            (r#"{"message":"m"}"#, fail("type", "is required")),
            (
                r#"{"service":"s","message":null}"#,
                fail("type", "is required"),
            ),
            (
                r#"{"type":"a","event":"b"}"#,
                fail("event", "conflicts with \"type\""),
            ),
            (
                r#"{"event_type":"b","eventType":"a"}"#,
                fail("eventType", "conflicts with \"event_type\""),
            ),
            (r#"{"type":"a","event":null}"#, Ok(event("a"))),
            (r#"{"type":null,"event":"b"}"#, Ok(event("b"))),
        ]);
    }

    #[test]
    fn log_shape_gets_type_log() {
        let log = |service: &str| {
            with("log", |e| {
                e.service = Some(service.to_owned());
                e.message = Some("m".to_owned());
            })
        };
        check(&[
            (r#"{"service":"s","message":"m"}"#, log("s")),
            (r#"{"source":"s","message":"m"}"#, log("s")),
            (r#"{"type":null,"service":"s","message":"m"}"#, log("s")),
            (
                r#"{"service":"","message":"m"}"#,
                fail("service", BLANK_SERVICE),
            ),
            (
                r#"{"service":1,"message":"m"}"#,
                fail("service", "must be a string"),
            ),
        ]);
        assert_eq!(
            ev(r#"{"type":"t","service":"s","message":"m"}"#)
                .unwrap()
                .kind,
            "t"
        );
    }

    #[test]
    fn timestamp_rules() {
        let at = |ms: i64| {
            with("a", |e| {
                e.timestamp_ms = ms;
                e.timestamp_sent = true;
            })
        };
        let bad_rfc = "must be an RFC 3339 date-time with offset, e.g. 2024-01-15T10:30:00Z";
        let wrong_type = "must be an RFC 3339 string or a number of epoch seconds or milliseconds";
        let future = "is more than 24 h in the future";
        assert_eq!(ev(r#"{"type":"a"}"#), Ok(event("a")));
        check_field(
            "timestamp",
            &[
                ("null", Ok(event("a"))),
                (r#""2024-01-15T10:30:00Z""#, at(1_705_314_600_000)),
                (
                    r#""2024-01-15T10:30:00.123456+02:00""#,
                    at(1_705_307_400_123),
                ),
                ("1700000000", at(1_700_000_000_000)),
                ("1600000000.5", at(1_600_000_000_500)),
                ("1600000000123", at(1_600_000_000_123)),
                ("1600000000123.9", at(1_600_000_000_123)),
                ("0", at(0)),
                ("1e3", at(1_000_000)),
                (&(NOW + MAX_FUTURE_MS).to_string(), at(NOW + MAX_FUTURE_MS)),
                (
                    &(NOW + MAX_FUTURE_MS + 1).to_string(),
                    fail("timestamp", future),
                ),
                ("1717286401", fail("timestamp", future)),
                (r#""2024-06-02T00:00:00.001Z""#, fail("timestamp", future)),
                (
                    "-1e12",
                    fail("timestamp", "must not be before the year 0000"),
                ),
                (
                    "1e300",
                    fail("timestamp", "must not be beyond the year 9999"),
                ),
                ("true", fail("timestamp", wrong_type)),
                ("{}", fail("timestamp", wrong_type)),
                ("[1]", fail("timestamp", wrong_type)),
            ],
        );
        for text in [
            "2024-01-15T10:30:00",
            "2024-01-15",
            "yesterday",
            "",
            "1700000000",
        ] {
            let json = obj(&[("type", json!("a")), ("timestamp", json!(text))]);
            let errors = ev(&json).unwrap_err();
            let [err] = &errors[..] else {
                panic!("{json}: {errors:?}")
            };
            assert_eq!(err.field, "timestamp", "{json}");
            assert!(err.message.starts_with(bad_rfc), "{json}: {err}");
        }
    }

    #[test]
    fn string_field_rules() {
        let max = |field: &str, alias: &str, limit: usize| {
            let set = |e: &mut NewEvent, v: String| match field {
                "service" => e.service = Some(v),
                "user_id" => e.user_id = Some(v),
                "message" => e.message = Some(v),
                _ => e.id = Some(v),
            };
            let ok = "é".repeat(limit);
            let ok_event = with("a", |e| set(e, ok.clone()));
            let message = if field == "id" {
                format!("must be 1-{limit} characters")
            } else {
                format!("must be at most {limit} characters")
            };
            let not_a_string = if field == "user_id" {
                NOT_A_USER_ID
            } else {
                "must be a string"
            };
            for key in [field, alias] {
                check(&[
                    (
                        &obj(&[("type", json!("a")), (key, json!(ok))]),
                        ok_event.clone(),
                    ),
                    (
                        &obj(&[("type", json!("a")), (key, json!("x".repeat(limit + 1)))]),
                        fail(key, &message),
                    ),
                    (
                        &obj(&[("type", json!("a")), (key, json!(true))]),
                        fail(key, not_a_string),
                    ),
                    (
                        &obj(&[("type", json!("a")), (key, Value::Null)]),
                        Ok(event("a")),
                    ),
                ]);
            }
            let empty = obj(&[("type", json!("a")), (field, json!(""))]);
            match field {
                "id" => assert_eq!(ev(&empty), fail("id", &message)),
                "service" => assert_eq!(ev(&empty), fail("service", BLANK_SERVICE)),
                _ => assert_eq!(ev(&empty), with("a", |e| set(e, String::new())), "{empty}"),
            }
        };
        max("service", "source", 100);
        max("user_id", "userId", 256);
        max("message", "message", 2000);
        max("id", "id", 128);
        check(&[
            (
                r#"{"type":"a","service":"s","source":"t"}"#,
                fail("source", "conflicts with \"service\""),
            ),
            (
                r#"{"type":"a","userId":"u","user_id":"v"}"#,
                fail("user_id", "conflicts with \"userId\""),
            ),
            (
                r#"{"type":"a","source":null,"service":"s"}"#,
                with("a", |e| e.service = Some("s".to_owned())),
            ),
            (
                r#"{"type":"a","service":7}"#,
                fail("service", "must be a string"),
            ),
            (
                r#"{"type":"a","message":7}"#,
                fail("message", "must be a string"),
            ),
            (r#"{"type":"a","id":7}"#, fail("id", "must be a string")),
            (
                r#"{"type":"a","source":" \t"}"#,
                fail(
                    "source",
                    "contains a control character (U+0009) at position 2",
                ),
            ),
            (
                r#"{"type":"a","service":"\u2003"}"#,
                fail("service", BLANK_SERVICE),
            ),
            (
                r#"{"type":"a","service":" s "}"#,
                with("a", |e| e.service = Some(" s ".to_owned())),
            ),
            (
                r#"{"type":"a","user_id":" "}"#,
                with("a", |e| e.user_id = Some(" ".to_owned())),
            ),
        ]);
    }

    #[test]
    fn numeric_user_ids_are_kept_as_their_decimal_text() {
        let user = |u: &str| with("a", |e| e.user_id = Some(u.to_owned()));
        check_field(
            "user_id",
            &[
                ("42", user("42")),
                ("9007199254740993", user("9007199254740993")),
                ("18446744073709551615", user("18446744073709551615")),
                ("-9223372036854775808", user("-9223372036854775808")),
                ("18446744073709551616", fail("user_id", INEXACT_USER_ID)),
                ("4.5", fail("user_id", INEXACT_USER_ID)),
                ("1e3", fail("user_id", INEXACT_USER_ID)),
                ("[1]", fail("user_id", NOT_A_USER_ID)),
                ("{}", fail("user_id", NOT_A_USER_ID)),
            ],
        );
        check_field(
            "userId",
            &[
                ("0", user("0")),
                ("-7", user("-7")),
                ("1.0", fail("userId", INEXACT_USER_ID)),
            ],
        );
        // A number and a string of one alias pair still conflict.
        assert_eq!(
            ev(r#"{"type":"a","user_id":1,"userId":"1"}"#),
            fail("userId", "conflicts with \"user_id\"")
        );
    }

    #[test]
    fn names_refuse_control_and_bidirectional_formatting_characters() {
        let control = |field: &str, code: &str, position: usize| {
            fail(
                field,
                &format!("contains a control character (U+{code}) at position {position}"),
            )
        };
        let bidi = |field: &str, code: &str, position: usize| {
            fail(field, &format!("contains a bidirectional formatting character (U+{code}) at position {position}"))
        };
        check(&[
            (r#"{"type":"\u0000"}"#, control("type", "0000", 1)),
            (r#"{"type":"ab\u001b[31m"}"#, control("type", "001B", 3)),
            (r#"{"event":"é😀\u0007"}"#, control("event", "0007", 3)),
            (r#"{"type":"a\nb"}"#, control("type", "000A", 2)),
            (r#"{"type":"a\u007f"}"#, control("type", "007F", 2)),
            (r#"{"type":"a\u009b"}"#, control("type", "009B", 2)),
            (r#"{"type":"\u202eevil"}"#, bidi("type", "202E", 1)),
            (
                r#"{"type":"a","service":"x\u202ay"}"#,
                bidi("service", "202A", 2),
            ),
            (
                r#"{"type":"a","source":"\u2066"}"#,
                bidi("source", "2066", 1),
            ),
            (
                r#"{"type":"a","user_id":"u\u2069"}"#,
                bidi("user_id", "2069", 2),
            ),
            (
                r#"{"type":"a","userId":"\u001b"}"#,
                control("userId", "001B", 1),
            ),
            // The first such character is named.
            (r#"{"type":"\u2067\u0000"}"#, bidi("type", "2067", 1)),
            // Neighbours that are fine: other formatting characters, line separators.
            (
                r#"{"type":"a\u200e\u2028\u2065\u206a\u00a0\u00a1"}"#,
                Ok(event("a\u{200e}\u{2028}\u{2065}\u{206a}\u{a0}\u{a1}")),
            ),
        ]);
    }

    #[test]
    fn strings_are_kept_exactly_as_sent() {
        let name = " lead \"quoted\" back\\slash é 😀 \u{200b} trail  ";
        let text = " \t lead \"quoted\" back\\slash \u{0} \u{1b} \u{1f} \u{7f} \u{202e} é 😀 \u{2028} trail  ";
        let json = obj(&[
            ("type", json!(name)),
            ("service", json!(name)),
            ("userId", json!(name)),
            ("message", json!(text)),
            ("id", json!(text)),
        ]);
        let e = ev(&json).unwrap();
        for got in [Some(e.kind), e.service, e.user_id] {
            assert_eq!(got.as_deref(), Some(name));
        }
        for got in [e.message, e.id] {
            assert_eq!(got.as_deref(), Some(text));
        }
        // Escapes that serde_json would not write itself.
        let e = ev(r#"{"type":"\u0041\/\ud83d\ude00","message":"a\nb"}"#).unwrap();
        assert_eq!(e.kind, "A/😀");
        assert_eq!(e.message.as_deref(), Some("a\nb"));
    }

    #[test]
    fn every_error_of_an_event_is_reported() {
        check(&[
            (
                r#"{"type":" ","timestamp":true,"service":"","user_id":1.5,"message":5,"metadata":[],"id":""}"#,
                fails(&[
                    ("type", BLANK_TYPE),
                    (
                        "timestamp",
                        "must be an RFC 3339 string or a number of epoch seconds or milliseconds",
                    ),
                    ("service", BLANK_SERVICE),
                    ("user_id", INEXACT_USER_ID),
                    ("message", "must be a string"),
                    ("metadata", "must be a JSON object"),
                    ("id", "must be 1-128 characters"),
                ]),
            ),
            // Structural problems first, in document order, each once; then the fields'.
            (
                r#"{"colour":1,"type":"\u001b","event":"b","type":"c","size":2,"colour":3,"type":"d","userId":true}"#,
                fails(&[
                    ("colour", "unknown field"),
                    ("event", "conflicts with \"type\""),
                    ("type", "duplicate key"),
                    ("size", "unknown field"),
                    (
                        "type",
                        "contains a control character (U+001B) at position 1",
                    ),
                    ("userId", NOT_A_USER_ID),
                ]),
            ),
            (
                r#"{"Type":"a","message":"m"}"#,
                fails(&[("Type", "unknown field"), ("type", "is required")]),
            ),
        ]);
    }

    #[test]
    fn timestamps_older_than_the_retention_are_refused() {
        let oldest_ms = NOW - 1_000;
        let too_old = || "is older than the retention".to_owned();
        let bounds = TimeBounds {
            now_ms: NOW,
            oldest_ms,
            too_old: &too_old,
            sent_at_ms: None,
            max_metadata_bytes: MAX_METADATA_BYTES,
        };
        let with_ts = |ts: i64| obj(&[("type", json!("a")), ("timestamp", json!(ts))]);
        assert!(parse_event(&with_ts(oldest_ms), &bounds).is_ok());
        assert_eq!(
            parse_event(&with_ts(oldest_ms - 1), &bounds),
            fail("timestamp", "is older than the retention")
        );
        assert!(parse_event(r#"{"type":"a"}"#, &bounds).is_ok());
        // Reported with the event's other errors.
        assert_eq!(
            parse_event(r#"{"type":"","timestamp":0}"#, &bounds),
            fails(&[
                ("type", BLANK_TYPE),
                ("timestamp", "is older than the retention")
            ])
        );
    }

    #[test]
    fn metadata_rules() {
        let meta = |text: &str| with("a", |e| e.metadata = Some(text.to_owned()));
        let not_object = "must be a JSON object";
        let nest = |levels: usize, open: &str, close: &str| {
            format!(
                "{{{}1{}}}",
                open.repeat(levels - 1),
                close.repeat(levels - 1)
            )
            .replacen('{', "{\"k\":", 1)
        };
        let deep_objects = |levels: usize| {
            let mut s = String::from("1");
            for _ in 0..levels {
                s = format!("{{\"k\":{s}}}");
            }
            s
        };
        let ten = deep_objects(10);
        let ten_mixed = nest(10, "[", "]");
        check(&[
            (
                r#"{"type":"a","metadata":{"plan":"pro"}}"#,
                meta(r#"{"plan":"pro"}"#),
            ),
            (r#"{"type":"a","properties":{}}"#, meta("{}")),
            (r#"{"type":"a","metadata":null}"#, Ok(event("a"))),
            (
                r#"{"type":"a","metadata":[]}"#,
                fail("metadata", not_object),
            ),
            (
                r#"{"type":"a","metadata":"{}"}"#,
                fail("metadata", not_object),
            ),
            (
                r#"{"type":"a","properties":3}"#,
                fail("properties", not_object),
            ),
            (
                r#"{"type":"a","metadata":true}"#,
                fail("metadata", not_object),
            ),
            (&format!(r#"{{"type":"a","metadata":{ten}}}"#), meta(&ten)),
            (
                &format!(r#"{{"type":"a","metadata":{ten_mixed}}}"#),
                meta(&ten_mixed),
            ),
            (
                &format!(r#"{{"type":"a","metadata":{}}}"#, deep_objects(11)),
                fail("metadata", "nesting deeper than 10 levels"),
            ),
            (
                &format!(r#"{{"type":"a","metadata":{}}}"#, nest(11, "[", "]")),
                fail("metadata", "nesting deeper than 10 levels"),
            ),
            (
                &format!(r#"{{"type":"a","metadata":{}}}"#, deep_objects(500)),
                fail("metadata", "nesting deeper than 10 levels"),
            ),
            (
                r#"{"type":"a","metadata":{"a":1,"b":2,"a":3}}"#,
                fail("metadata", "duplicate key \"a\""),
            ),
            (
                r#"{"type":"a","metadata":{"x":[{"b":1,"b":2}]}}"#,
                fail("metadata", "duplicate key \"b\""),
            ),
            (
                r#"{"type":"a","metadata":{"a":1,"\u0061":2}}"#,
                fail("metadata", "duplicate key \"a\""),
            ),
            (
                r#"{"type":"a","metadata":{"x":{"a":1},"y":{"a":1}}}"#,
                meta(r#"{"x":{"a":1},"y":{"a":1}}"#),
            ),
            (
                r#"{"type":"a","metadata":{"n":1e999}}"#,
                fail("metadata", "invalid JSON: number out of range"),
            ),
        ]);
        // Many keys, so the duplicate is found by the hashed path.
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let unique = format!("{{{}}}", keys.join(","));
        let dup = format!("{{{},\"k7\":0}}", keys.join(","));
        check(&[
            (
                &format!(r#"{{"type":"a","metadata":{unique}}}"#),
                meta(&unique),
            ),
            (
                &format!(r#"{{"type":"a","metadata":{dup}}}"#),
                fail("metadata", "duplicate key \"k7\""),
            ),
        ]);
    }

    #[test]
    fn metadata_size_limit_is_on_the_text_as_sent() {
        // {"p":"…"} is 8 bytes plus the padding.
        let exact = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_METADATA_BYTES - 8));
        assert_eq!(exact.len(), MAX_METADATA_BYTES);
        let over = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_METADATA_BYTES - 7));
        let with_space = format!(r#"{{"p":"{}" }}"#, "x".repeat(MAX_METADATA_BYTES - 8));
        assert_eq!(
            ev(&format!(r#"{{"type":"a","metadata":{exact}}}"#))
                .unwrap()
                .metadata,
            Some(exact)
        );
        for text in [over, with_space] {
            assert_eq!(
                ev(&format!(r#"{{"type":"a","metadata":{text}}}"#)),
                fail("metadata", "must be at most 16384 bytes")
            );
        }
    }

    #[test]
    fn metadata_text_round_trips() {
        let text = r#"{"z":1.50,"a":1e3,"m":[1, 2 ,{"k":-0.0}],"s":"\u00e9\n","n":null,"big":12345678901234567890123}"#;
        let e = ev(&format!("{{\"type\":\"a\",\"metadata\": {text} }}")).unwrap();
        assert_eq!(e.metadata.as_deref(), Some(text));
    }

    #[test]
    fn structural_rules() {
        let whole = "event must be a JSON object";
        check(&[
            (r#"{"type":"a","foo":1}"#, fail("foo", "unknown field")),
            (
                r#"{"Type":"a"}"#,
                fails(&[("Type", "unknown field"), ("type", "is required")]),
            ),
            (r#"{"type":"a","":1}"#, fail("", "unknown field")),
            (r#"{"type":"a","type":"b"}"#, fail("type", "duplicate key")),
            (r#"{"type":"a","type":null}"#, fail("type", "duplicate key")),
            (
                r#"{"type":"a","timestamp":1,"timestamp":2}"#,
                fail("timestamp", "duplicate key"),
            ),
            (
                r#"{"type":"a","metadata":{},"metadata":{}}"#,
                fail("metadata", "duplicate key"),
            ),
            // Every problem is reported: structural ones first, in document order.
            (
                r#"{"foo":1,"type":5}"#,
                fails(&[("foo", "unknown field"), ("type", "must be a string")]),
            ),
            (
                r#"{"type":5,"foo":1}"#,
                fails(&[("foo", "unknown field"), ("type", "must be a string")]),
            ),
            (
                r#"{"bar":1,"foo":1,"bar":2}"#,
                fails(&[
                    ("bar", "unknown field"),
                    ("foo", "unknown field"),
                    ("type", "is required"),
                ]),
            ),
            (
                r#"{"type":"a","type":"b","type":"c","id":"x","id":"y"}"#,
                fails(&[("type", "duplicate key"), ("id", "duplicate key")]),
            ),
            (
                r#"{"type":"a","event":"b","eventType":"c","service":"s","source":"t"}"#,
                fails(&[
                    ("event", "conflicts with \"type\""),
                    ("eventType", "conflicts with \"type\""),
                    ("source", "conflicts with \"service\""),
                ]),
            ),
            ("[]", fail("", whole)),
            (r#"[{"type":"a"}]"#, fail("", whole)),
            (r#""x""#, fail("", whole)),
            ("null", fail("", whole)),
            ("12", fail("", whole)),
            (" \n{\"type\":\"a\"}\n ", Ok(event("a"))),
        ]);
        // Not JSON at all: parse_event's contract was broken, reported as an invalid event.
        let errors = ev(r#"{"type":"a""#).unwrap_err();
        let [err] = &errors[..] else {
            panic!("{errors:?}")
        };
        assert_eq!(err.field, "");
        assert!(err.message.starts_with("invalid JSON: EOF"), "{err}");
    }

    #[test]
    fn historical_shapes() {
        check(&[
            (
                r#"{"eventType":"signup","userId":"u1","timestamp":1700000000,"metadata":{"plan":"pro"}}"#,
                Ok(NewEvent {
                    id: None,
                    kind: "signup".to_owned(),
                    timestamp_ms: 1_700_000_000_000,
                    timestamp_sent: true,
                    service: None,
                    user_id: Some("u1".to_owned()),
                    message: None,
                    metadata: Some(r#"{"plan":"pro"}"#.to_owned()),
                }),
            ),
            (
                r#"{"timestamp":"2024-01-15T10:30:00+02:00","service":"auth","message":"login ok","metadata":{"ip":"1.2.3.4"}}"#,
                Ok(NewEvent {
                    id: None,
                    kind: "log".to_owned(),
                    timestamp_ms: 1_705_307_400_000, // 2024-01-15T08:30:00Z
                    timestamp_sent: true,
                    service: Some("auth".to_owned()),
                    user_id: None,
                    message: Some("login ok".to_owned()),
                    metadata: Some(r#"{"ip":"1.2.3.4"}"#.to_owned()),
                }),
            ),
        ]);
        assert_eq!(
            crate::event::timefmt::format_rfc3339_ms(1_705_307_400_000),
            "2024-01-15T08:30:00.000Z"
        );
    }

    fn body(text: &[u8], format: BodyFormat) -> Result<Vec<Item>, BodyError> {
        parse_body(text, format, &at(NOW))
    }

    fn item(index: usize, result: EventResult) -> Item {
        Item { index, result }
    }

    #[test]
    fn json_body_mixed_batch() {
        let text = br#"[
            {"type":"a"},
            {"type":""},
            5,
            {"service":"s","message":"m","foo":1},
            {"event":"b","id":"k1"}
        ]"#;
        assert_eq!(
            body(text, BodyFormat::Json),
            Ok(vec![
                item(0, Ok(event("a"))),
                item(1, fail("type", BLANK_TYPE)),
                item(2, fail("", "event must be a JSON object")),
                item(3, fail("foo", "unknown field")),
                item(4, with("b", |e| e.id = Some("k1".to_owned()))),
            ])
        );
    }

    #[test]
    fn json_body_shapes() {
        let j = BodyFormat::Json;
        // One event, alone or in an array, with a BOM and white space around.
        for text in [
            &br#"{"type":"a"}"#[..],
            b"\xEF\xBB\xBF \r\n\t{\"type\":\"a\"}\n\n",
            b"\xEF\xBB\xBF[{\"type\":\"a\"}]",
        ] {
            let text_lossy = String::from_utf8_lossy(text);
            assert_eq!(
                body(text, j),
                Ok(vec![item(0, Ok(event("a")))]),
                "{text_lossy}"
            );
        }
        assert_eq!(body(b"[]", j), Ok(vec![]));
        assert_eq!(body(b" [ ] ", j), Ok(vec![]));
        for text in [&b"\"x\""[..], b"[[]]"] {
            let not_an_object = fail("", "event must be a JSON object");
            let text_lossy = String::from_utf8_lossy(text);
            assert_eq!(
                body(text, j),
                Ok(vec![item(0, not_an_object)]),
                "{text_lossy}"
            );
        }
    }

    fn malformed_at(text: &[u8]) -> (usize, usize, String) {
        match body(text, BodyFormat::Json) {
            Err(BodyError::Malformed {
                line,
                column,
                reason,
            }) => (line, column, reason),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn json_body_malformed() {
        let rows: &[(&[u8], usize, usize, &str)] = &[
            (b"", 1, 0, "EOF while parsing a value"),
            (b"   ", 1, 3, "EOF while parsing a value"),
            (b"{\"type\":\"a\"", 1, 11, "EOF while parsing an object"),
            (
                b"[{\"type\":\"a\"},\n  {\"type\" \"b\"}]",
                2,
                11,
                "expected `:`",
            ),
            (b"{\"type\":\"a\"} x", 1, 14, "trailing characters"),
            (b"[{\"type\":\"a\"}] [", 1, 16, "trailing characters"),
            (b"[1,]", 1, 4, "trailing comma"),
            (b"{\"type\":\"a\",\"foo\":1,}", 1, 21, "trailing comma"),
            (b"{\"foo\":1, bad}", 1, 11, "key must be a string"),
            (b"\xEF\xBB\xBF{x", 1, 5, "key must be a string"),
            (b"{\"type\":\"\xFF\"}", 1, 10, "invalid UTF-8"),
            (b"[\n{\"type\":\"a\xC3\"}]", 2, 11, "invalid UTF-8"),
            (b"\xEF\xBB\xBF\xFF", 1, 4, "invalid UTF-8"),
            (b"\xEF\xBB", 1, 1, "invalid UTF-8"),
        ];
        for &(text, line, column, reason) in rows {
            assert_eq!(
                malformed_at(text),
                (line, column, reason.to_owned()),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn too_many_events() {
        for format in [BodyFormat::Json, BodyFormat::Ndjson] {
            let (open, sep, close) = match format {
                BodyFormat::Json => ("[", ",", "]"),
                BodyFormat::Ndjson => ("", "\n\n", "\n"),
            };
            let batch = |n: usize| {
                let items = vec![r#"{"type":"a"}"#; n];
                format!("{open}{}{close}", items.join(sep))
            };
            let ok = body(batch(MAX_EVENTS_PER_REQUEST).as_bytes(), format).unwrap();
            assert_eq!(ok.len(), MAX_EVENTS_PER_REQUEST);
            assert!(ok.iter().all(|i| i.result.is_ok()));
            for n in [MAX_EVENTS_PER_REQUEST + 1, 50_000] {
                assert_eq!(
                    body(batch(n).as_bytes(), format),
                    Err(BodyError::TooManyEvents {
                        count_at_least: MAX_EVENTS_PER_REQUEST + 1
                    }),
                    "{format:?} {n}"
                );
            }
        }
        // Counting happens before anything else is looked at.
        let mut text = format!("[{}", "1,".repeat(MAX_EVENTS_PER_REQUEST + 1));
        text.push_str("nope");
        assert!(matches!(
            body(text.as_bytes(), BodyFormat::Json),
            Err(BodyError::TooManyEvents { .. })
        ));
    }

    #[test]
    fn ndjson_body() {
        let text = b"{\"type\":\"a\"}\n\
            \n\
            {\"type\":\"b\"\n\
            \x20 \t\r\n\
            {\"type\":\"c\",\"foo\":1}\r\n\
            [1]\n\
            {\"type\":\"\xFF\"}\n\
            {\"foo\":1, bad}\n\
            {\"type\":\"d\"} {\"type\":\"e\"}\n\
            \x20 {\"type\":\"f\"}  \r\n";
        let items = body(text, BodyFormat::Ndjson).unwrap();
        let got: Vec<(usize, Result<String, Vec<FieldError>>)> = items
            .into_iter()
            .map(|i| (i.index, i.result.map(|e| e.kind)))
            .collect();
        let whole = |m: &str| Err(vec![FieldError::whole(m)]);
        assert_eq!(
            got,
            vec![
                (0, Ok("a".to_owned())),
                (
                    2,
                    whole("invalid JSON: EOF while parsing an object at column 11")
                ),
                (4, Err(vec![FieldError::new("foo", "unknown field")])),
                (5, whole("event must be a JSON object")),
                (6, whole("invalid UTF-8 at column 10")),
                (7, whole("invalid JSON: key must be a string at column 11")),
                (8, whole("invalid JSON: trailing characters at column 14")),
                (9, Ok("f".to_owned())),
            ]
        );
        let n = BodyFormat::Ndjson;
        assert_eq!(body(b"", n), Ok(vec![]));
        assert_eq!(body(b"\n \n\r\n", n), Ok(vec![]));
        assert_eq!(
            body(b"\xEF\xBB\xBF{\"type\":\"a\"}", n),
            Ok(vec![item(0, Ok(event("a")))])
        );
        assert_eq!(
            body(b"\n\n{\"type\":\"a\"}", n),
            Ok(vec![item(2, Ok(event("a")))])
        );
    }

    #[test]
    fn error_display() {
        let e = BodyError::Malformed {
            line: 2,
            column: 5,
            reason: "expected value".to_owned(),
        };
        assert_eq!(
            e.to_string(),
            "malformed JSON at line 2 column 5: expected value"
        );
        assert_eq!(
            FieldError::new("type", "is required").to_string(),
            "type is required"
        );
    }

    // --- Properties ----------------------------------------------------------------------

    fn arb_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => any::<char>(),
            1 => prop::sample::select(vec![
                '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é', '😀',
                '\u{2028}', '\u{feff}', ' ',
            ]),
        ]
    }

    fn arb_text(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
        prop::collection::vec(arb_char(), len).prop_map(|cs| cs.into_iter().collect())
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            arb_text(0..=12).prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(arb_text(0..=6), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects whose keys are mostly event fields, duplicates allowed, values anything.
    fn arb_event_like() -> impl Strategy<Value = String> {
        let names: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        let key = prop_oneof![
            4 => prop::sample::select(names).prop_map(str::to_owned),
            1 => arb_text(0..=6),
        ];
        let value = prop_oneof![
            2 => arb_json(),
            1 => arb_text(0..=120).prop_map(Value::String),
            1 => (0i64..=4_000_000_000_000).prop_map(Value::from),
        ];
        prop::collection::vec((key, value), 0..8).prop_map(|entries| {
            let entries: Vec<(&str, Value)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            obj(&entries)
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = body(&bytes, BodyFormat::Json);
            let _ = body(&bytes, BodyFormat::Ndjson);
        }

        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let text = value.to_string();
            let json = body(text.as_bytes(), BodyFormat::Json);
            // Anything serde_json itself accepts is a well-formed body.
            prop_assert!(!matches!(json, Err(BodyError::Malformed { .. })), "{text}: {json:?}");
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let _ = body(pretty.as_bytes(), BodyFormat::Json);
            let _ = body(pretty.as_bytes(), BodyFormat::Ndjson);
            let _ = body(text.as_bytes(), BodyFormat::Ndjson);
        }

        #[test]
        fn event_like_objects_never_panic(objects in prop::collection::vec(arb_event_like(), 0..6)) {
            for text in &objects {
                let items = body(text.as_bytes(), BodyFormat::Json).unwrap();
                prop_assert_eq!(items.len(), 1);
            }
            let array = format!("[{}]", objects.join(","));
            prop_assert_eq!(body(array.as_bytes(), BodyFormat::Json).unwrap().len(), objects.len());
            let lines = objects.join("\n");
            let items = body(lines.as_bytes(), BodyFormat::Ndjson).unwrap();
            prop_assert_eq!(items.len(), objects.len());
            // Each NDJSON line gives the same result as the same text in an array.
            for (i, item) in items.iter().enumerate() {
                prop_assert_eq!(&item.result, &parse_event(&objects[i], &at(NOW)));
            }
        }

        #[test]
        fn broken_text_never_panics(text in arb_event_like(), cut in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let cut = cut.index(bytes.len() + 1);
            let _ = body(&bytes[..cut], BodyFormat::Json);
            let _ = body(&bytes[..cut], BodyFormat::Ndjson);
        }
    }

    /// How a generated event spells its timestamp, the milliseconds it means, and whether
    /// it counts as sent.
    fn arb_timestamp() -> impl Strategy<Value = (Option<Value>, i64, bool)> {
        let latest = NOW + MAX_FUTURE_MS;
        prop_oneof![
            Just((None, NOW, false)),
            Just((Some(Value::Null), NOW, false)),
            (0..=latest, 0i128..1_000_000, -1439i32..=1439).prop_map(|(ms, nanos, minutes)| {
                let offset = time::UtcOffset::from_whole_seconds(minutes * 60).unwrap();
                let text = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(ms) * 1_000_000 + nanos,
                )
                .unwrap()
                .to_offset(offset)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
                (Some(Value::String(text)), ms, true)
            }),
            (100_000_000_000..=latest).prop_map(|ms| (Some(Value::from(ms)), ms, true)),
            (0..=latest / 1000).prop_map(|s| (Some(Value::from(s)), s * 1000, true)),
            (0..=latest / 1000, 0i64..1000).prop_map(|(s, frac)| {
                let n = s as f64 + frac as f64 / 1000.0;
                (Some(json!(n)), s * 1000 + frac, true)
            }),
        ]
    }

    /// A character a name (`type`, `service`, `user_id`) may hold: mapped rather than
    /// filtered, as filtering long names would reject too many cases.
    fn arb_name_char() -> impl Strategy<Value = char> {
        arb_char().prop_map(|c| {
            let forbidden =
                c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if forbidden {
                '_'
            } else {
                c
            }
        })
    }

    /// A name of `len` characters, blank or not.
    fn arb_name(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
        prop::collection::vec(arb_name_char(), len).prop_map(|cs| cs.into_iter().collect())
    }

    fn arb_non_blank_name(max: usize) -> impl Strategy<Value = String> {
        arb_name(1..=max).prop_map(|mut s| {
            if s.trim().is_empty() {
                let first = s.chars().next().map_or(0, char::len_utf8);
                s.replace_range(..first, "n");
            }
            s
        })
    }

    /// A value as sent and as stored.
    fn sent_as_is(s: String) -> (Value, String) {
        (Value::String(s.clone()), s)
    }

    /// An optional field: absent, null, or a value (with the alias to write it under).
    fn arb_optional(
        aliases: &'static [&'static str],
        value: impl Strategy<Value = (Value, String)>,
    ) -> impl Strategy<Value = (&'static str, Option<Option<(Value, String)>>)> {
        let value = prop_oneof![
            1 => Just(None),
            1 => Just(Some(None)),
            4 => value.prop_map(|v| Some(Some(v))),
        ];
        (prop::sample::select(aliases), value)
    }

    fn arb_user_id() -> impl Strategy<Value = (Value, String)> {
        prop_oneof![
            3 => arb_name(0..=256).prop_map(sent_as_is),
            1 => any::<i64>().prop_map(|n| (Value::from(n), n.to_string())),
            1 => any::<u64>().prop_map(|n| (Value::from(n), n.to_string())),
        ]
    }

    /// A metadata object as sent, and as stored (its JSON text).
    fn arb_metadata() -> impl Strategy<Value = (Value, String)> {
        prop::collection::btree_map(arb_text(0..=8), arb_json(), 0..8)
            .prop_map(|m| m.into_iter().collect::<Map<String, Value>>())
            .prop_filter("fits", |m| {
                serde_json::to_string(m).unwrap().len() <= MAX_METADATA_BYTES
            })
            .prop_map(|m| {
                let value = Value::Object(m);
                let text = value.to_string();
                (value, text)
            })
    }

    prop_compose! {
        fn arb_valid_event()(
            kind in (
                prop::sample::select(&["type", "eventType", "event_type", "event"][..]),
                prop::option::weighted(0.8, arb_non_blank_name(MAX_TYPE_CHARS)),
            ),
            ts in arb_timestamp(),
            service in arb_optional(
                &["service", "source"],
                arb_non_blank_name(MAX_SERVICE_CHARS).prop_map(sent_as_is),
            ),
            user_id in arb_optional(&["user_id", "userId"], arb_user_id()),
            message in arb_optional(&["message"], arb_text(0..=2000).prop_map(sent_as_is)),
            id in arb_optional(&["id"], arb_text(1..=128).prop_map(sent_as_is)),
            metadata in (
                prop::sample::select(&["metadata", "properties"][..]),
                prop::option::of(prop::option::of(arb_metadata())),
            ),
        ) -> (String, NewEvent) {
            let mut map = Map::new();
            let mut put = |(key, v): (&str, Option<Option<(Value, String)>>)| {
                let v = v?;
                map.insert(key.to_owned(), v.as_ref().map_or(Value::Null, |(sent, _)| sent.clone()));
                v.map(|(_, stored)| stored)
            };
            let (kind_key, kind) = kind;
            // Without a type, the event takes the log shape.
            let log = kind.is_none();
            let service = match (log, service) {
                (true, (key, None | Some(None))) => (key, Some(Some(sent_as_is("svc".to_owned())))),
                (_, s) => s,
            };
            let message = match (log, message) {
                (true, (key, None | Some(None))) => (key, Some(Some(sent_as_is(String::new())))),
                (_, m) => m,
            };
            let kind = match kind {
                Some(k) => put((kind_key, Some(Some(sent_as_is(k))))).unwrap(),
                None => "log".to_owned(),
            };
            let (ts_value, timestamp_ms, timestamp_sent) = ts;
            let event = NewEvent {
                id: put(id),
                kind,
                timestamp_ms,
                timestamp_sent,
                service: put(service),
                user_id: put(user_id),
                message: put(message),
                metadata: put(metadata),
            };
            if let Some(v) = ts_value {
                map.insert("timestamp".to_owned(), v);
            }
            (Value::Object(map).to_string(), event)
        }
    }

    /// Per slot, in the order errors are reported: its aliases, a value that breaks it, and
    /// the error that value gets.
    const BREAKERS: [(&[&str], &str, &str); SLOTS] = [
        (
            &["type", "eventType", "event_type", "event"],
            r#"" ""#,
            BLANK_TYPE,
        ),
        (
            &["sent_at", "sentAt"],
            "[]",
            "must be an RFC 3339 string or a number of epoch seconds or milliseconds",
        ),
        (
            &["timestamp"],
            "true",
            "must be an RFC 3339 string or a number of epoch seconds or milliseconds",
        ),
        (&["service", "source"], r#""""#, BLANK_SERVICE),
        (&["user_id", "userId"], "1.5", INEXACT_USER_ID),
        (&["message"], "5", "must be a string"),
        (&["metadata", "properties"], "[]", "must be a JSON object"),
        (&["id"], r#""""#, "must be 1-128 characters"),
    ];

    proptest! {
        #[test]
        fn valid_events_parse_back((text, want) in arb_valid_event()) {
            prop_assert_eq!(parse_event(&text, &at(NOW)), Ok(want.clone()));
            let items = body(text.as_bytes(), BodyFormat::Ndjson).unwrap();
            prop_assert_eq!(items, vec![item(0, Ok(want.clone()))]);
            let array = format!("[{text},{text}]");
            let items = body(array.as_bytes(), BodyFormat::Json).unwrap();
            prop_assert_eq!(items, vec![item(0, Ok(want.clone())), item(1, Ok(want))]);
        }

        /// Breaking any fields of a valid event, and adding unknown ones, gets one error per
        /// problem, all of them: unknown fields first, then the fields in their order.
        #[test]
        fn every_error_is_reported(
            (text, _) in arb_valid_event(),
            broken in prop::collection::vec(any::<bool>(), SLOTS),
            unknown in 0usize..3,
        ) {
            let Value::Object(mut map) = serde_json::from_str(&text).unwrap() else {
                unreachable!("an event is an object")
            };
            let mut want = Vec::new();
            for i in 0..unknown {
                // After every known key in the text, whether the map keeps insertion order
                // or sorts.
                let name = format!("zz{i}");
                map.insert(name.clone(), json!(i));
                want.push(FieldError::new(name, "unknown field"));
            }
            for ((aliases, value, message), broken) in BREAKERS.iter().zip(&broken) {
                if !broken {
                    continue;
                }
                let key = aliases.iter().find(|k| map.contains_key(**k)).unwrap_or(&aliases[0]);
                map.insert(key.to_string(), serde_json::from_str(value).unwrap());
                want.push(FieldError::new(*key, *message));
            }
            let text = Value::Object(map).to_string();
            let got = parse_event(&text, &at(NOW));
            if want.is_empty() {
                prop_assert!(got.is_ok(), "{}: {:?}", text, got);
            } else {
                prop_assert_eq!(got, Err(want), "{}", text);
            }
        }
    }
}
