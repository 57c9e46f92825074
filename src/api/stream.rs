//! `GET /stream`: the live event stream as Server-Sent Events, with the filters of
//! `GET /events` and resumption from `Last-Event-ID` (or `?since=`). What to deliver is the
//! [`crate::live`] module's business; this is the query parsing and the SSE framing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use utoipa::IntoParams;

use super::error::ApiError;
use super::params::{known_pairs, EventFilterParams};
use super::refusals::StreamRefusals;
use super::state::AppState;
use crate::live::{Filter, LiveEvent, Step, Subscription};

/// A comment line this often keeps idle connections (and proxies) from timing out.
const HEARTBEAT: Duration = Duration::from_secs(15);

const LAST_EVENT_ID: &str = "Last-Event-ID";

#[derive(Debug, PartialEq, Eq)]
struct StreamParams {
    filter: Filter,
    since: Option<u64>,
}

/// `since` of `GET /stream`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SinceParam {
    /// Resume after this `seq`.
    #[param(required = false)]
    pub since: u64,
}

/// `Last-Event-ID` of `GET /stream`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LastEventIdHeader {
    /// Resume after this `seq` (wins over `since`); sent by a reconnecting `EventSource`.
    #[param(rename = "Last-Event-ID", required = false)]
    pub last_event_id: u64,
}

/// Follow events live
///
/// Server-Sent Events: a `: connected` comment at once, then one `event: event` per
/// committed event matching the filters (`id:` its `seq`, `data:` its JSON on one line), a
/// `: heartbeat` comment every 15 s. Without `Last-Event-ID` or `since`, the events
/// committed after connecting; with one, first every stored matching event after that
/// `seq`, then the live ones, with no gap and no duplicate. A subscriber more than
/// `--stream-buffer` events behind gets `event: lagged` with `data: {"last_seq": N}` and is
/// disconnected: it can resume from `N`.
#[utoipa::path(
    get, path = "/stream", tag = "stream", operation_id = "streamEvents",
    params(EventFilterParams, SinceParam, LastEventIdHeader),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream",
            body = String,
            example = json!("id: 1043\nevent: event\ndata: {\"id\":\"019a…\",\"type\":\"signup\",…,\"seq\":1043}\n\n")),
        StreamRefusals,
    )
)]
pub async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_stream_params(query.as_deref(), &headers)?;
    let subscription = state.live.subscribe(params.filter, params.since).await?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Asks nginx-like proxies not to buffer the stream.
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    Ok((headers, Body::from_stream(sse_body(subscription))).into_response())
}

/// Parses the query string and the `Last-Event-ID` header, as strictly as `GET /events`.
fn parse_stream_params(
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<StreamParams, ApiError> {
    let mut filter = Filter::default();
    let mut since = None;
    for (name, value) in known_pairs(raw_query, &["type", "service", "user_id", "since"])? {
        match name.as_str() {
            "type" => filter.kind = Some(value),
            "service" => filter.service = Some(value),
            "user_id" => filter.user_id = Some(value),
            _ => since = Some(parse_seq(&name, &value)?),
        }
    }
    // A reconnecting EventSource sends the URL it first used (maybe with `since`) and the
    // last id it received: the header is the more recent position.
    if let Some(value) = headers.get(LAST_EVENT_ID) {
        let value = value.to_str().map_err(|_| {
            ApiError::invalid_parameter(LAST_EVENT_ID, "'Last-Event-ID' must be an event seq")
        })?;
        since = Some(parse_seq(LAST_EVENT_ID, value.trim())?);
    }
    Ok(StreamParams { filter, since })
}

/// A position to resume after: a `seq`, which is never above 2^63 - 1 (the stores keep
/// seqs as signed 64-bit integers), so a larger number cannot be one.
fn parse_seq(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&seq| seq <= i64::MAX as u64)
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                name,
                format!(
                    "'{name}' must be the seq of the last event received: a whole number \
                     from 0 to {}",
                    i64::MAX
                ),
            )
        })
}

struct BodyState {
    subscription: Subscription,
    heartbeat: Interval,
    events: Vec<Arc<LiveEvent>>,
    opened: bool,
    ended: bool,
}

/// The response body: a first comment at once (so the client has the headers without
/// waiting for an event), then the events, several per chunk when they come fast, heartbeat
/// comments, and a final `lagged` event if the subscriber fell behind.
fn sse_body(subscription: Subscription) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = BodyState {
        subscription,
        heartbeat,
        events: Vec::new(),
        opened: false,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        if !state.opened {
            state.opened = true;
            return Some((Ok(Bytes::from_static(b": connected\n\n")), state));
        }
        let chunk = tokio::select! {
            // `next` is cancel-safe: a heartbeat winning the race loses nothing.
            step = state.subscription.next(&mut state.events) => match step {
                Step::Events => frame_events(&state.events),
                Step::Lagged { last_seq } => {
                    state.ended = true;
                    Bytes::from(format!(
                        "event: lagged\ndata: {{\"last_seq\":{last_seq}}}\n\n"
                    ))
                }
                Step::End => return None,
            },
            _ = state.heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
        };
        Some((Ok(chunk), state))
    })
}

/// `id: {seq}\nevent: event\ndata: {json}\n\n` for each event, in one buffer.
fn frame_events(events: &[Arc<LiveEvent>]) -> Bytes {
    let size: usize = events.iter().map(|event| event.json.len() + 48).sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(event.seq.to_string().as_bytes());
        out.extend_from_slice(b"\nevent: event\ndata: ");
        out.extend_from_slice(&event.json);
        out.extend_from_slice(b"\n\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, last_event_id: Option<&str>) -> Result<StreamParams, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert(LAST_EVENT_ID, HeaderValue::from_str(id).unwrap());
        }
        parse_stream_params(Some(query), &headers)
    }

    fn error_parameter(query: &str, last_event_id: Option<&str>) -> String {
        match parse(query, last_event_id) {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("expected an invalid parameter for {query}, got {other:?}"),
        }
    }

    #[test]
    fn filters_and_resume_points_parse() {
        let params = parse("type=signup&service=api&user_id=u%201&since=42", None).unwrap();
        assert_eq!(params.filter.kind.as_deref(), Some("signup"));
        assert_eq!(params.filter.service.as_deref(), Some("api"));
        assert_eq!(params.filter.user_id.as_deref(), Some("u 1"));
        assert_eq!(params.since, Some(42));
        assert_eq!(parse("", None).unwrap().since, None);
        assert_eq!(
            parse("since=5", Some("7")).unwrap().since,
            Some(7),
            "the header is the newer position"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(error_parameter("since=abc", None), "since");
        assert_eq!(error_parameter("since=-1", None), "since");
        assert_eq!(error_parameter("since=", None), "since");
        assert_eq!(error_parameter("", Some("x1")), "Last-Event-ID");
        assert_eq!(error_parameter("limit=5", None), "limit");
        assert_eq!(error_parameter("type=a&type=b", None), "type");
    }

    #[test]
    fn events_are_framed_one_per_message() {
        let events = [
            Arc::new(LiveEvent {
                seq: 7,
                json: b"{\"seq\":7}".to_vec().into_boxed_slice(),
            }),
            Arc::new(LiveEvent {
                seq: 9,
                json: b"{\"seq\":9}".to_vec().into_boxed_slice(),
            }),
        ];
        assert_eq!(
            &frame_events(&events)[..],
            b"id: 7\nevent: event\ndata: {\"seq\":7}\n\nid: 9\nevent: event\ndata: {\"seq\":9}\n\n"
        );
    }
}
