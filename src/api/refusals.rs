//! The refusals several operations share, for the API description: reusable answers
//! (referenced from the document's `components`) and the sets of them that operations of a
//! kind give.

use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, PartialSchema, ToResponse, ToSchema};

use super::error::{ErrorBody, NoValidEvents};

/// Bad query parameter (`invalid_parameter`, naming it in `parameter`).
#[derive(ToResponse)]
#[response(example = json!({
    "error": "invalid_parameter", "parameter": "order",
    "message": "'order' must be 'asc' or 'desc'"
}))]
pub struct BadParameter(pub ErrorBody);

/// Not found (`not_found`).
#[derive(ToResponse)]
#[response(example = json!({"error": "not_found", "message": "no event with id 'order-1001'"}))]
pub struct NotFound(pub ErrorBody);

/// Too many events are waiting (`ingest_queue_full`), the indexer is too far behind
/// (`index_backlog_full`), or the client is over `--ingest-rate-limit` (`rate_limited`, with
/// the `RateLimit-*` headers). Nothing of the request was stored: retrying after
/// `Retry-After` seconds is safe.
#[derive(ToResponse)]
#[response(
    headers(
        ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        ("RateLimit-Limit" = u64, description = "With `rate_limited`: the client's bucket size"),
        ("RateLimit-Remaining" = u64, description = "With `rate_limited`: 0"),
        ("RateLimit-Reset" = u64, description = "With `rate_limited`: seconds until the request fits"),
    ),
    example = json!({"error": "ingest_queue_full",
        "message": "too many events are waiting to be committed (100000 of at most 100000)"})
)]
pub struct TooManyRequests(pub ErrorBody);

/// The client is over `--query-rate-limit` (`rate_limited`): retry after `Retry-After`
/// seconds.
#[derive(ToResponse)]
#[response(
    headers(
        ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        ("RateLimit-Limit" = u64, description = "The client's bucket size"),
        ("RateLimit-Remaining" = u64, description = "0"),
        ("RateLimit-Reset" = u64, description = "Seconds until a request fits"),
    ),
    example = json!({"error": "rate_limited",
        "message": "rate limit of 50 per second (burst 50) exceeded; retry in 0.4 s",
        "retry_after_seconds": 1})
)]
pub struct RateLimited(pub ErrorBody);

/// Temporarily unavailable: `store_unavailable`, `not_yet_indexed` (queries);
/// `log_unavailable`, `shutting_down` (ingestion); `too_many_subscribers`, `shutting_down`
/// (streams); `overloaded` (any route but health: `--max-concurrent-requests` reached). Nothing was
/// changed: retrying after `Retry-After` seconds is safe.
#[derive(ToResponse)]
#[response(
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
    example = json!({"error": "store_unavailable",
        "message": "the store is unavailable: database is locked"})
)]
pub struct Unavailable(pub ErrorBody);

/// What reading events, counts or dead letters (or replaying these) may be refused with: a
/// bad parameter, the query rate limit, the store or the queue unavailable.
#[derive(IntoResponses)]
pub enum ReadRefusals {
    #[response(status = 400)]
    BadParameter(#[ref_response] BadParameter),
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// What a stream may be refused with (streams have no rate limit: they are long-lived and
/// counted against `--max-subscribers`).
#[derive(IntoResponses)]
pub enum StreamRefusals {
    #[response(status = 400)]
    BadParameter(#[ref_response] BadParameter),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// What the SDK endpoints (Segment's, PostHog's) may refuse a body with besides a `400`: too
/// slow to arrive, too large, of a type they do not read; the ingest limits; the queue
/// unavailable.
#[derive(IntoResponses)]
pub enum SdkRefusals {
    #[response(status = 408, description = "`request_timeout`")]
    RequestTimeout(ErrorBody),
    #[response(status = 413, description = "`payload_too_large`")]
    PayloadTooLarge(ErrorBody),
    #[response(status = 415, description = "`unsupported_media_type`")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 429)]
    TooManyRequests(#[ref_response] TooManyRequests),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// A `400` of `POST /events`: `no_valid_events` (with every event's error), `malformed_json`
/// (with `line` and `column`) or `invalid_body` (e.g. a gzip body that does not decompress).
pub struct IngestBadRequest;

impl PartialSchema for IngestBadRequest {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(NoValidEvents::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for IngestBadRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            (NoValidEvents::name(), NoValidEvents::schema()),
            (ErrorBody::name(), ErrorBody::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
        NoValidEvents::schemas(schemas);
    }
}
