//! `GET /metrics`, `/metrics/timeseries` and `/metrics/summary`: event counts, answered by
//! [`crate::metrics::EventMetrics`] once the index has every event acknowledged before the
//! request began (or, past `--read-wait`, with `"partial": true`).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use super::error::ApiError;
use super::events::read_position;
use super::params::{known_pairs, parse_time};
use super::AppState;
use crate::config::parse_duration;
use crate::live::SubscribeError;
use crate::metrics::{GroupBy, Interval, SeriesError, SeriesQuery, MAX_WINDOW_SECONDS};
use crate::telemetry;

pub const DEFAULT_WINDOW_SECONDS: u64 = 60;

/// How often `/stream/metrics` pushes the `/metrics` document.
const PUSH_EVERY: Duration = Duration::from_secs(1);

/// `GET /metrics?window=60s`
pub async fn window(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut window_seconds = DEFAULT_WINDOW_SECONDS;
    for (name, value) in known_pairs(query.as_deref(), &["window"])? {
        window_seconds = parse_window(&name, &value)?;
    }
    let (_, complete) = read_position(&state).await;
    let report = state
        .metrics
        .window(window_seconds)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(with_partial(&report, complete))
}

fn parse_window(name: &str, value: &str) -> Result<u64, ApiError> {
    let invalid = |reason: String| ApiError::invalid_parameter(name, format!("'{name}' {reason}"));
    let duration = parse_duration(value).map_err(invalid)?;
    let millis = duration.as_millis();
    if millis % 1_000 != 0 || !(1..=MAX_WINDOW_SECONDS as u128).contains(&(millis / 1_000)) {
        return Err(invalid(
            "must be whole seconds from 1s to 24h, e.g. 30s, 10m, 1h".to_owned(),
        ));
    }
    Ok((millis / 1_000) as u64)
}

/// `GET /metrics/timeseries?from&to&interval&group_by&type&service`
pub async fn timeseries(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let known = ["from", "to", "interval", "group_by", "type", "service"];
    let mut series = SeriesQuery {
        interval: Interval::Minute,
        from_ms: None,
        to_ms: None,
        group_by: GroupBy::None,
        kind: None,
        service: None,
    };
    for (name, value) in known_pairs(query.as_deref(), &known)? {
        match name.as_str() {
            "from" => series.from_ms = Some(parse_time(&name, &value)?),
            "to" => series.to_ms = Some(parse_time(&name, &value)?),
            "interval" => {
                series.interval = match value.as_str() {
                    "minute" => Interval::Minute,
                    "hour" => Interval::Hour,
                    "day" => Interval::Day,
                    _ => {
                        return Err(ApiError::invalid_parameter(
                            &name,
                            "'interval' must be minute, hour or day",
                        ))
                    }
                }
            }
            "group_by" => {
                series.group_by = match value.as_str() {
                    "none" => GroupBy::None,
                    "type" => GroupBy::Type,
                    "service" => GroupBy::Service,
                    _ => {
                        return Err(ApiError::invalid_parameter(
                            &name,
                            "'group_by' must be type, service or none",
                        ))
                    }
                }
            }
            "type" => series.kind = Some(value),
            _ => series.service = Some(value),
        }
    }
    let (_, complete) = read_position(&state).await;
    let report = state
        .metrics
        .timeseries(series)
        .await
        .map_err(|err| match err {
            SeriesError::FromAfterTo => ApiError::invalid_parameter("from", err.to_string()),
            SeriesError::TooManyPoints { .. } => {
                ApiError::invalid_parameter("interval", err.to_string())
            }
            SeriesError::Store(err) => ApiError::StoreUnavailable(err),
        })?;
    Ok(with_partial(&report, complete))
}

/// `GET /metrics/summary`
pub async fn summary(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    known_pairs(query.as_deref(), &[])?;
    let (_, complete) = read_position(&state).await;
    let report = state
        .metrics
        .summary()
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(with_partial(&report, complete))
}

/// The report as JSON, saying `"partial": true` when the index had not caught up.
fn with_partial(report: &impl Serialize, complete: bool) -> Json<Value> {
    let mut value = serde_json::to_value(report).expect("reports serialize");
    if !complete {
        value["partial"] = Value::Bool(true);
    }
    Json(value)
}

/// `GET /metrics/prometheus`: the service's own metrics in the Prometheus text format.
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let (pending_events, pending_capacity) = state.ingest.pending();
    let progress = state.ingest.progress();
    let stats = state.live.stats();
    let text = telemetry::render(telemetry::Snapshot {
        pending_events,
        pending_capacity,
        committed_seq: progress.committed(),
        indexed_seq: progress.indexed(),
        stream_subscribers: stats.subscribers.load(Ordering::Relaxed) as u64,
        stream_lagged: stats.lagged.load(Ordering::Relaxed),
        stream_dropped_groups: stats.dropped_groups.load(Ordering::Relaxed),
        rate_limited: state.rate_limits.rejected(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `GET /stream/metrics?window=60s`: Server-Sent Events pushing the `/metrics` document
/// (`event: metrics`) at once and then every second, for dashboards. It shares the
/// `--max-subscribers` limit with `/stream` and ends when the server shuts down. Pushes do
/// not wait for the indexer: each shows what is indexed at that moment.
pub async fn stream(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut window_seconds = DEFAULT_WINDOW_SECONDS;
    for (name, value) in known_pairs(query.as_deref(), &["window"])? {
        window_seconds = parse_window(&name, &value)?;
    }
    if state.live.is_shutting_down() {
        return Err(SubscribeError::ShuttingDown.into());
    }
    let slot = state.live.try_acquire_slot()?;
    let mut every = tokio::time::interval(PUSH_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let pushes = futures_util::stream::unfold(
        (state, every, slot),
        move |(state, mut every, slot)| async move {
            tokio::select! {
                _ = every.tick() => {}
                _ = state.live.until_shutdown() => return None,
            }
            let frame = match state.metrics.window(window_seconds).await {
                Ok(report) => {
                    let json = serde_json::to_string(&report).expect("reports serialize");
                    format!("event: metrics\ndata: {json}\n\n")
                }
                // Keep the stream; the next push may succeed.
                Err(err) => format!(
                    ": metrics unavailable: {}\n\n",
                    err.to_string().replace('\n', " ")
                ),
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(frame)),
                (state, every, slot),
            ))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(pushes),
    )
        .into_response())
}
