//! `GET /health` (liveness), `/health/ready` (can it take events now?) and
//! `/health/detailed` (what an operator looks at).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::rate_limit::RateLimitsReport;
use super::state::AppState;
use crate::connections::ConnectionsReport;
use crate::error_code::ErrorCode;
use crate::event::timefmt::format_rfc3339_ms;
use crate::health::size_on_disk;
use crate::retention::RetentionReport;
use crate::store::partitioning::Span;

/// Readiness fails from this share of a bound on: refusing is near, let a balancer steer away.
const NEARLY_FULL: f64 = 0.9;

/// `{"status": "ok"}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Alive {
    #[schema(inline)]
    pub status: AliveStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AliveStatus {
    Ok,
}

/// Ready to serve: `{"status": "ready"}`, or `not_ready` with the reasons (and, as every
/// `503`, an `error` code and a `message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(inline)]
    pub status: ReadinessStatus,
    /// With `not_ready`: `not_ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<ErrorCode>,
    /// With `not_ready`: the reasons in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
    /// With `not_ready`: why, one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

/// What the service is doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDetails {
    #[schema(inline)]
    pub status: ReadinessStatus,
    /// Why it is not ready (empty when it is), as `/health/ready` gives them.
    pub reasons: Vec<String>,
    /// The server's version.
    pub version: &'static str,
    pub uptime_seconds: u64,
    /// Each component by name (`log` or `queue`, `store`, `indexer` or `worker`,
    /// `retention`...).
    pub components: BTreeMap<&'static str, ComponentReport>,
    /// The data directory and its size; `null` for a process of a cluster, which keeps none.
    #[schema(required = true)]
    pub data: Option<DataReport>,
    pub queue: QueueReport,
    pub events: EventsReport,
    /// The last commit to the log; `null` before the first (or without a log).
    #[schema(required = true)]
    pub last_commit: Option<CommitReport>,
    /// The live stream.
    pub stream: StreamReport,
    pub rate_limits: RateLimitsReport,
    pub retention: RetentionReport,
    /// Open connections, and those refused or timed out since start.
    pub connections: ConnectionsReport,
}

/// A component's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentReport {
    #[schema(inline)]
    pub status: ComponentStatus,
    /// The last failure, kept after recovery; `null` if it never failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    Ok,
    Failing,
}

/// Where the data is kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataReport {
    pub dir: String,
    pub size_on_disk_bytes: u64,
}

/// The ingest queue: events submitted and not yet committed, and what waits behind the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueReport {
    pub pending_events: u64,
    /// `--max-pending-events`.
    pub capacity: u64,
    /// Events committed and not yet stored.
    pub backlog: u64,
    pub backlog_capacity: u64,
    /// What the backlog waits for, e.g. `the index backlog`.
    pub backlog_is: &'static str,
}

/// The events stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsReport {
    /// `null` when the count cannot be read.
    #[schema(required = true)]
    pub stored: Option<u64>,
    /// The oldest event's timestamp; `null` when there is none (or on a read error).
    #[schema(required = true, format = DateTime)]
    pub oldest: Option<String>,
    /// The newest event's timestamp.
    #[schema(required = true, format = DateTime)]
    pub newest: Option<String>,
    /// Why the time range could not be read.
    #[schema(required = true)]
    pub read_error: Option<String>,
    /// The last `seq` durable in the log; `null` on an API node of a cluster, which has no
    /// log or index of its own.
    #[schema(required = true)]
    pub committed_seq: Option<u64>,
    /// The last `seq` of the log in the store.
    #[schema(required = true)]
    pub indexed_seq: Option<u64>,
    /// How many time partitions the events are in, by span: old data is kept in months and
    /// years, so a backfill shows here. `null` when they cannot be read.
    #[schema(required = true)]
    pub partitions: Option<PartitionsReport>,
}

/// Time partitions by span.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionsReport {
    pub total: usize,
    pub day: usize,
    pub month: usize,
    pub year: usize,
}

/// The last commit to the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitReport {
    #[schema(format = DateTime)]
    pub at: String,
    pub latency_ms: f64,
}

/// The live stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamReport {
    pub subscribers: usize,
    /// Subscribers disconnected for falling too far behind, since start.
    pub lagged_disconnects: u64,
}

/// Liveness
///
/// `200` as long as the process answers.
#[utoipa::path(
    get, path = "/health", tag = "health", operation_id = "health",
    responses((status = 200, description = "Alive", body = Alive))
)]
pub async fn live() -> Json<Alive> {
    Json(Alive {
        status: AliveStatus::Ok,
    })
}

/// Readiness
///
/// `200` when events can be taken (the log and the store accept writes, the ingest queue and
/// the index backlog are below 90%, no shutdown under way); `503` with the reasons otherwise.
#[utoipa::path(
    get, path = "/health/ready", tag = "health", operation_id = "healthReady",
    responses(
        (status = 200, description = "Ready", body = Readiness,
            example = json!({"status": "ready"})),
        (status = 503, description = "Not ready", body = Readiness,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again")),
            example = json!({"status": "not_ready", "error": "not_ready", "message": "the store does not accept writes: disk full", "reasons": ["the store does not accept writes: disk full"]})),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let reasons = not_ready_reasons(&state);
    if reasons.is_empty() {
        return Json(Readiness {
            status: ReadinessStatus::Ready,
            error: None,
            message: None,
            reasons,
        })
        .into_response();
    }
    let code = ErrorCode::NotReady;
    let body = Readiness {
        status: ReadinessStatus::NotReady,
        error: Some(code),
        message: Some(reasons.join("; ")),
        reasons,
    };
    (code.status(), [(header::RETRY_AFTER, "1")], Json(body)).into_response()
}

fn not_ready_reasons(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if state.live.is_shutting_down() {
        reasons.push("the server is shutting down".to_owned());
    }
    reasons.extend(state.health.not_ready_reasons());
    let (pending, capacity) = state.ingest.pending();
    if pending as f64 >= NEARLY_FULL * capacity as f64 {
        reasons.push(format!(
            "the ingest queue is {pending} of {capacity} events full"
        ));
    }
    let backlog = state.ingest.backlog();
    if backlog.events as f64 >= NEARLY_FULL * backlog.max as f64 {
        reasons.push(format!(
            "{} is {} of at most {} events",
            backlog.what, backlog.events, backlog.max
        ));
    }
    reasons
}

/// Details
///
/// The version, uptime, each component's state (the log or the queue, the store, the indexer
/// or the worker, retention...), the ingest queue, the events, the last commit, the live
/// stream, the rate limits, retention and the connections.
#[utoipa::path(
    get, path = "/health/detailed", tag = "health", operation_id = "healthDetailed",
    responses((status = 200, description = "What the service is doing", body = HealthDetails))
)]
pub async fn detailed(State(state): State<AppState>) -> Json<HealthDetails> {
    let health = &state.health;
    let data = match health.data_dir() {
        Some(dir) => {
            let path = dir.to_owned();
            let size_on_disk_bytes = tokio::task::spawn_blocking(move || size_on_disk(&path))
                .await
                .unwrap_or(0);
            Some(DataReport {
                dir: dir.display().to_string(),
                size_on_disk_bytes,
            })
        }
        None => None,
    };
    let (oldest, newest, read_error) = match state.store.time_range().await {
        Ok(Some((oldest, newest))) => (
            Some(format_rfc3339_ms(oldest)),
            Some(format_rfc3339_ms(newest)),
            None,
        ),
        Ok(None) => (None, None, None),
        Err(err) => (None, None, Some(format!("{err:#}"))),
    };
    let components = health
        .components()
        .iter()
        .map(|component| {
            let state = component.state();
            let status = if state.failing {
                ComponentStatus::Failing
            } else {
                ComponentStatus::Ok
            };
            let report = ComponentReport {
                status,
                last_error: state.last_error,
            };
            (state.name, report)
        })
        .collect();
    let (pending_events, capacity) = state.ingest.pending();
    let backlog = state.ingest.backlog();
    let positions = state.ingest.positions();
    let stats = state.live.stats();
    let last_commit = health
        .last_commit()
        .get()
        .map(|(at_ms, micros)| CommitReport {
            at: format_rfc3339_ms(at_ms),
            latency_ms: micros as f64 / 1000.0,
        });
    let reasons = not_ready_reasons(&state);
    let partitions = state.store.partitions().await.ok().map(|ranges| {
        let count = |span| ranges.iter().filter(|range| range.span == span).count();
        PartitionsReport {
            total: ranges.len(),
            day: count(Span::Day),
            month: count(Span::Month),
            year: count(Span::Year),
        }
    });
    let stored = state.metrics.stored_events().await.ok();
    Json(HealthDetails {
        status: if reasons.is_empty() {
            ReadinessStatus::Ready
        } else {
            ReadinessStatus::NotReady
        },
        reasons,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: health.uptime_seconds(),
        components,
        data,
        queue: QueueReport {
            pending_events,
            capacity,
            backlog: backlog.events,
            backlog_capacity: backlog.max,
            backlog_is: backlog.what,
        },
        events: EventsReport {
            stored,
            oldest,
            newest,
            read_error,
            committed_seq: positions.map(|positions| positions.committed),
            indexed_seq: positions.map(|positions| positions.indexed),
            partitions,
        },
        last_commit,
        stream: StreamReport {
            subscribers: stats.subscribers.load(Ordering::Relaxed),
            lagged_disconnects: stats.lagged.load(Ordering::Relaxed),
        },
        rate_limits: state.rate_limits.report(),
        retention: state.retention.report(),
        connections: state.http.connections.report(state.http.max_connections),
    })
}
