//! `GET /metrics`, `/metrics/timeseries` and `/metrics/summary`: event counts, answered by
//! [`crate::metrics::EventMetrics`] once the index has every event acknowledged before the
//! request began (or, past `--read-wait`, with `"partial": true`); `/stream/metrics`, the
//! `/metrics` document pushed every second; `/metrics/prometheus`, the service's own.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::MissedTickBehavior;
use utoipa::IntoParams;

use super::error::ApiError;
use super::params::{known_pairs, parse_time};
use super::refusals::{ReadRefusals, StreamRefusals};
use super::schema::Time;
use super::snapshot::Snapshot;
use super::state::AppState;
use crate::config::parse_duration;
use crate::metrics::{
    GroupBy, Interval, SeriesError, SeriesQuery, SeriesReport, SummaryReport, WindowReport,
    MAX_TOP, MAX_WINDOW_SECONDS,
};
use crate::telemetry;

pub const DEFAULT_WINDOW_SECONDS: u64 = 60;
/// Types and services a `/stream/metrics` push lists by name unless `top` says otherwise:
/// a dashboard shows fewer, and each subscriber gets a push every second.
const DEFAULT_PUSH_TOP: usize = 20;

/// How often `/stream/metrics` pushes the `/metrics` document.
const PUSH_EVERY: Duration = Duration::from_secs(1);

/// `window` of `/metrics` and `/stream/metrics`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowParam {
    /// The window ending now: whole seconds from `1s` to `24h`, as a number and a unit
    /// (`ms`, `s`, `m`, `h`, `d`), e.g. `30s`, `10m`, `1h`. Counted to the second up to an
    /// hour, by whole minutes beyond.
    #[param(
        required = false,
        default = "60s",
        example = "10m",
        pattern = "^[0-9]+(ms|s|m|h|d)$"
    )]
    pub window: String,
}

/// `top` of `/metrics`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopParam {
    /// How many types, and how many services, are listed by name: those with the most
    /// events in the window. The others' events are summed under `(other)`.
    #[param(required = false, minimum = 0, maximum = 50, default = 50)]
    pub top: u64,
}

/// `top` of `/stream/metrics`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushTopParam {
    /// How many types, and how many services, each push lists by name: those with the most
    /// events in the window. The others' events are summed under `(other)`.
    #[param(required = false, minimum = 0, maximum = 50, default = 20)]
    pub top: u64,
}

/// The parameters of `/metrics/timeseries`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// The bucket holding this time is the first. Default: 59 buckets before `to`'s.
    #[param(required = false, value_type = Time, example = "2024-01-15T00:00:00Z")]
    pub from: String,
    /// The bucket holding this time is the last. Default: now.
    #[param(required = false, value_type = Time)]
    pub to: String,
    #[param(required = false, inline)]
    pub interval: Interval,
    #[param(required = false, inline)]
    pub group_by: GroupBy,
    /// Only events of this type.
    #[param(rename = "type", required = false)]
    pub kind: String,
    /// Only events of this service.
    #[param(required = false)]
    pub service: String,
}

/// Counts of a window
///
/// Events whose timestamp lies in the `window` ending now, by type and by service: the
/// `top` largest of each by name, the rest summed under `(other)`. Late events count in
/// their own time, future-dated ones once their time comes.
#[utoipa::path(
    get, path = "/metrics", tag = "metrics", operation_id = "getMetrics",
    params(WindowParam, TopParam),
    responses((status = 200, description = "The counts", body = WindowReport), ReadRefusals)
)]
pub async fn window(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<WindowReport>, ApiError> {
    let (window_seconds, top) = window_params(query.as_deref(), MAX_TOP)?;
    let snapshot = Snapshot::take(&state).await;
    let mut report = state
        .metrics
        .window(window_seconds, top)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    report.partial = snapshot.partial;
    Ok(Json(report))
}

/// The `window` (in seconds) and `top` of `/metrics` and `/stream/metrics`, their only
/// parameters.
fn window_params(query: Option<&str>, default_top: usize) -> Result<(u64, usize), ApiError> {
    let mut window_seconds = DEFAULT_WINDOW_SECONDS;
    let mut top = default_top;
    for (name, value) in known_pairs(query, &["window", "top"])? {
        if name == "top" {
            top = value
                .parse()
                .ok()
                .filter(|top| *top <= MAX_TOP)
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        &name,
                        format!("'top' must be a whole number from 0 to {MAX_TOP}"),
                    )
                })?;
        } else {
            window_seconds = parse_window(&name, &value)?;
        }
    }
    Ok((window_seconds, top))
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

/// Time series
///
/// Event counts per `interval` bucket (aligned to UTC), every bucket from the one holding
/// `from` to the one holding `to`, empty ones as `0`. Grouped by type or service, the
/// types or services beyond `--max-tracked-types` or `--max-tracked-services` are summed in
/// one series, `(other)`. At most 10,000 points (buckets × series): beyond, `400`.
#[utoipa::path(
    get, path = "/metrics/timeseries", tag = "metrics", operation_id = "getTimeseries",
    params(SeriesParams),
    responses((status = 200, description = "The series", body = SeriesReport), ReadRefusals)
)]
pub async fn timeseries(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SeriesReport>, ApiError> {
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
                series.interval = one_of(&name, &value, INTERVALS, "minute, hour or day")?;
            }
            "group_by" => {
                series.group_by = one_of(&name, &value, GROUPINGS, "type, service or none")?;
            }
            "type" => series.kind = Some(value),
            _ => series.service = Some(value),
        }
    }
    let snapshot = Snapshot::take(&state).await;
    let mut report = state
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
    report.partial = snapshot.partial;
    Ok(Json(report))
}

/// The values of `interval`.
const INTERVALS: [(&str, Interval); 3] = [
    ("minute", Interval::Minute),
    ("hour", Interval::Hour),
    ("day", Interval::Day),
];

/// The values of `group_by`.
const GROUPINGS: [(&str, GroupBy); 3] = [
    ("none", GroupBy::None),
    ("type", GroupBy::Type),
    ("service", GroupBy::Service),
];

/// The choice named `value` among `choices` for the parameter `name`; an unknown one is a
/// `400` listing the `allowed` names.
fn one_of<T, const N: usize>(
    name: &str,
    value: &str,
    choices: [(&str, T); N],
    allowed: &str,
) -> Result<T, ApiError> {
    choices
        .into_iter()
        .find_map(|(choice, it)| (choice == value).then_some(it))
        .ok_or_else(|| ApiError::invalid_parameter(name, format!("'{name}' must be {allowed}")))
}

/// Summary
///
/// Totals, the last hour and 24 hours, the top 10 services and types of the last 24 hours
/// with the sum of the others, and each of its hours. Takes no parameter.
#[utoipa::path(
    get, path = "/metrics/summary", tag = "metrics", operation_id = "getSummary",
    responses((status = 200, description = "The summary", body = SummaryReport), ReadRefusals)
)]
pub async fn summary(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SummaryReport>, ApiError> {
    known_pairs(query.as_deref(), &[])?;
    let snapshot = Snapshot::take(&state).await;
    let mut report = state
        .metrics
        .summary()
        .await
        .map_err(ApiError::StoreUnavailable)?;
    report.partial = snapshot.partial;
    Ok(Json(report))
}

/// The service's own metrics
///
/// In the Prometheus text format: events ingested, rejected and duplicate, queue depth,
/// commit and index latencies, HTTP requests by route, method and status, stream subscribers.
#[utoipa::path(
    get, path = "/metrics/prometheus", tag = "metrics", operation_id = "getPrometheusMetrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4",
            content_type = "text/plain", body = String),
    )
)]
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let (pending_events, pending_capacity) = state.ingest.pending();
    let positions = state.ingest.positions();
    let stats = state.live.stats();
    let text = telemetry::render(telemetry::Snapshot {
        pending_events,
        pending_capacity,
        positions: positions.map(|positions| (positions.committed, positions.indexed)),
        stream_subscribers: stats.subscribers.load(Ordering::Relaxed) as u64,
        stream_lagged: stats.lagged.load(Ordering::Relaxed),
        stream_dropped_groups: stats.dropped_groups.load(Ordering::Relaxed),
        rate_limited: state.rate_limits.rejected(),
        connections: state.http.connections.report(state.http.max_connections),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Live counts
///
/// Server-Sent Events pushing the `/metrics` document (`event: metrics`, `data:` the
/// document on one line, with the `top` types and services by name, 20 unless said) at once
/// and then every second, for dashboards. It shares the
/// `--max-subscribers` limit with `/stream` and ends when the server shuts down. Pushes do
/// not wait for the indexer: each shows what is indexed at that moment.
#[utoipa::path(
    get, path = "/stream/metrics", tag = "stream", operation_id = "streamMetrics",
    params(WindowParam, PushTopParam),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream",
            body = String, example = json!("event: metrics\ndata: {\"window_seconds\":60,…}\n\n")),
        StreamRefusals,
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (window_seconds, top) = window_params(query.as_deref(), DEFAULT_PUSH_TOP)?;
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
            let frame = match state.metrics.window(window_seconds, top).await {
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
