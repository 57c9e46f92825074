//! What every ingest endpoint shares once it has the request's events in Eventide's shape:
//! the time bounds they are validated against, ids for those without one, the ingest rate
//! limit, durable submission and the answer (`POST /events` and the SDK endpoints).

use axum::http::{Extensions, HeaderMap, HeaderName};

use super::error::ApiError;
use super::rate_limit::ClientKey;
use super::schema::{EventError, IngestAnswer};
use super::state::AppState;
use crate::event::parse::{BodyError, Item, TimeBounds, MAX_EVENTS_PER_REQUEST};
use crate::event::timefmt;
use crate::queue::{ids, PreparedBatch};
use crate::telemetry;

/// Runs `parse` with the bounds of a request received at `now_ms`: its retention cutoff,
/// the time the client says it sent the request, and the metadata limit.
pub fn with_bounds<T>(
    state: &AppState,
    now_ms: i64,
    sent_at_ms: Option<i64>,
    max_metadata_bytes: usize,
    parse: impl FnOnce(&TimeBounds<'_>) -> T,
) -> T {
    // Once per request, not per event.
    let oldest_ms = state.retention.cutoff_ms(now_ms).unwrap_or(i64::MIN);
    let too_old = || state.retention.refusal(oldest_ms);
    parse(&TimeBounds {
        now_ms,
        oldest_ms,
        too_old: &too_old,
        sent_at_ms,
        max_metadata_bytes,
    })
}

/// The `Sent-At` header (RFC 3339, or epoch seconds or milliseconds), when there is one.
pub fn sent_at_header(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    const SENT_AT: HeaderName = HeaderName::from_static("sent-at");
    let Some(value) = headers.get(SENT_AT) else {
        return Ok(None);
    };
    let bad = |reason: String| ApiError::invalid_parameter("Sent-At", format!("Sent-At {reason}"));
    let text = value
        .to_str()
        .map_err(|_| bad("must be printable ASCII".to_owned()))?
        .trim();
    // Written as the `from`/`to` query parameters are.
    timefmt::parse_time_param(text).map(Some).map_err(bad)
}

/// A body refused as a whole, as the API answers it.
pub fn body_error(err: BodyError) -> ApiError {
    match err {
        BodyError::Malformed {
            line,
            column,
            reason,
        } => ApiError::MalformedJson {
            line,
            column,
            reason,
        },
        BodyError::TooManyEvents { count_at_least } => ApiError::PayloadTooLarge(format!(
            "{count_at_least} or more events in one request; at most {MAX_EVENTS_PER_REQUEST}"
        )),
    }
}

/// Stores the valid events of `items` durably (answering only then), after the ingest rate
/// limit of the request's key or address; `NoValidEvents` when none is valid, `413` beyond
/// [`MAX_EVENTS_PER_REQUEST`] (the SDKs' shapes are counted only once mapped).
pub async fn submit(
    state: &AppState,
    extensions: &Extensions,
    now_ms: i64,
    items: Vec<Item>,
) -> Result<IngestAnswer, ApiError> {
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(body_error(BodyError::TooManyEvents {
            count_at_least: items.len(),
        }));
    }
    let mut batch = PreparedBatch::new(now_ms, items.len());
    let mut answer = IngestAnswer {
        accepted: 0,
        duplicates: 0,
        conflicts: 0,
        ids: Vec::with_capacity(items.len()),
        errors: Vec::new(),
    };
    let mut invalid = 0;
    for item in items {
        match item.result {
            Ok(event) => {
                let id = match &event.id {
                    Some(id) => id.clone(),
                    None => ids::new_event_id(now_ms),
                };
                batch.push(&event, &id);
                answer.ids.push(Some(id));
            }
            Err(errors) => {
                invalid += 1;
                answer
                    .errors
                    .extend(errors.into_iter().map(|error| EventError {
                        index: item.index,
                        field: error.field,
                        message: error.message,
                    }));
                answer.ids.push(None);
            }
        }
    }
    telemetry::events_rejected("invalid", invalid);
    if batch.is_empty() {
        return Err(ApiError::NoValidEvents(answer));
    }

    let submitted = batch.len();
    if let Some(limiter) = &state.rate_limits.ingest {
        let cells = u32::try_from(submitted).unwrap_or(u32::MAX);
        let client = ClientKey::of(extensions);
        if let Err(limited) = limiter.check(&client, cells) {
            telemetry::events_rejected("rate_limited", submitted);
            return Err(ApiError::RateLimited(limited));
        }
    }
    let outcome = match state.ingest.submit(batch).await {
        Ok(outcome) => outcome,
        Err(err) => {
            let err = ApiError::from(err);
            telemetry::events_rejected(err.code().as_str(), submitted);
            return Err(err);
        }
    };
    answer.duplicates = outcome.duplicates;
    answer.conflicts = outcome.conflicts;
    answer.accepted = submitted - outcome.duplicates - outcome.conflicts;
    telemetry::events_ingested(answer.accepted, answer.duplicates, answer.conflicts);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sent_at_is_rfc3339_or_epoch() {
        let mut headers = HeaderMap::new();
        assert_eq!(sent_at_header(&headers).unwrap(), None);
        headers.insert("sent-at", HeaderValue::from_static("2024-06-01T00:00:00Z"));
        assert_eq!(sent_at_header(&headers).unwrap(), Some(1_717_200_000_000));
        headers.insert("sent-at", HeaderValue::from_static("1717200000000"));
        assert_eq!(sent_at_header(&headers).unwrap(), Some(1_717_200_000_000));
        headers.insert("sent-at", HeaderValue::from_static("yesterday"));
        let err = sent_at_header(&headers).unwrap_err();
        assert!(err.to_string().starts_with("Sent-At "), "{err}");
    }
}
