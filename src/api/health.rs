//! `GET /health` (liveness), `/health/ready` (can it take events now?) and
//! `/health/detailed` (what an operator looks at).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{openapi, AppState};
use crate::event::timefmt::format_rfc3339_ms;
use crate::health::size_on_disk;
use crate::store::partitioning::Span;

/// Readiness fails from this share of a bound on: refusing is near, let a balancer steer away.
const NEARLY_FULL: f64 = 0.9;

/// Liveness
///
/// `200` as long as the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health",
    responses((status = 200, description = "Alive", body = openapi::Alive))
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness
///
/// `200` when events can be taken (the log and the store accept writes, the ingest queue and
/// the index backlog are below 90%, no shutdown under way); `503` with the reasons otherwise.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "healthReady",
    responses(
        (status = 200, description = "Ready", body = openapi::Readiness,
            example = json!({"status": "ready"})),
        (status = 503, description = "Not ready", body = openapi::Readiness,
            example = json!({"status": "not_ready", "error": "not_ready", "message": "the store does not accept writes: disk full", "reasons": ["the store does not accept writes: disk full"]})),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let reasons = not_ready_reasons(&state);
    if reasons.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({
            "status": "not_ready",
            "error": "not_ready",
            "message": reasons.join("; "),
            "reasons": reasons,
        });
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            Json(body),
        )
            .into_response()
    }
}

fn not_ready_reasons(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if state.live.is_shutting_down() {
        reasons.push("the server is shutting down".to_owned());
    }
    let log = state.health.log_state();
    if log.failing {
        let error = log.last_error.unwrap_or_default();
        // An API node of a cluster has the queue in place of the log.
        let what = if state.ingest.is_remote() {
            "the queue"
        } else {
            "the durable log"
        };
        reasons.push(format!("{what} cannot be written: {error}"));
    }
    let store = state.health.store_state();
    if store.failing {
        let error = store.last_error.unwrap_or_default();
        reasons.push(format!("the store does not accept writes: {error}"));
    }
    let (pending, capacity) = state.ingest.pending();
    if pending as f64 >= NEARLY_FULL * capacity as f64 {
        reasons.push(format!(
            "the ingest queue is {pending} of {capacity} events full"
        ));
    }
    let backlog = state.ingest.backlog();
    let max_backlog = state.ingest.max_backlog();
    if backlog as f64 >= NEARLY_FULL * max_backlog as f64 {
        let what = if state.ingest.is_remote() {
            "the queue's backlog (events the workers have not stored)"
        } else {
            "the index backlog"
        };
        reasons.push(format!(
            "{what} is {backlog} of at most {max_backlog} events"
        ));
    }
    reasons
}

/// Details
///
/// The version, uptime, and the state of the store, the log, the ingest queue, the events,
/// the last commit, the live stream and the rate limits.
#[utoipa::path(
    get,
    path = "/health/detailed",
    tag = "health",
    operation_id = "healthDetailed",
    responses((status = 200, description = "What the service is doing", body = openapi::HealthDetails))
)]
pub async fn detailed(State(state): State<AppState>) -> Json<Value> {
    let health = &state.health;
    let dir = health.data_dir().to_owned();
    let size_bytes = tokio::task::spawn_blocking(move || size_on_disk(&dir))
        .await
        .unwrap_or(0);
    let time_range = state.store.time_range().await;
    let partitions = state.store.partitions().await.ok().map(|ranges| {
        let count = |span| ranges.iter().filter(|range| range.span == span).count();
        json!({
            "total": ranges.len(),
            "day": count(Span::Day),
            "month": count(Span::Month),
            "year": count(Span::Year),
        })
    });
    let store_state = health.store_state();
    let log_state = health.log_state();
    let (oldest, newest, range_error) = match time_range {
        Ok(Some((oldest, newest))) => (
            Some(format_rfc3339_ms(oldest)),
            Some(format_rfc3339_ms(newest)),
            None,
        ),
        Ok(None) => (None, None, None),
        Err(err) => (None, None, Some(format!("{err:#}"))),
    };
    let store_ok = !store_state.failing && range_error.is_none();
    let (pending, capacity) = state.ingest.pending();
    let progress = state.ingest.progress();
    let stats = state.live.stats();
    let last_commit = health.last_commit().map(|(at_ms, micros)| {
        json!({ "at": format_rfc3339_ms(at_ms), "latency_ms": micros as f64 / 1000.0 })
    });
    let reasons = not_ready_reasons(&state);
    let stored = state.metrics.stored_events().await.ok();
    Json(json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": health.uptime_seconds(),
        "store": {
            "status": if store_ok { "ok" } else { "failing" },
            "last_error": store_state.last_error.or(range_error),
            "size_on_disk_bytes": size_bytes,
            // How many time partitions the events are in, by span (old data is kept in
            // months and years: a backfill shows here).
            "partitions": partitions,
            "data_dir": health.data_dir().display().to_string(),
        },
        "log": {
            "status": if log_state.failing { "failing" } else { "ok" },
            "last_error": log_state.last_error,
        },
        "queue": {
            "pending_events": pending,
            "capacity": capacity,
            "index_backlog": state.ingest.backlog(),
            "index_backlog_capacity": state.ingest.max_backlog(),
        },
        "events": {
            "stored": stored,
            "oldest": oldest,
            "newest": newest,
            // An API node of a cluster has no log or index of its own.
            "committed_seq": progress.map(|progress| progress.committed()),
            "indexed_seq": progress.map(|progress| progress.indexed()),
        },
        "last_commit": last_commit,
        "stream": {
            "subscribers": stats.subscribers.load(Ordering::Relaxed),
            "lagged_disconnects": stats.lagged.load(Ordering::Relaxed),
        },
        "rate_limits": state.rate_limits.report(),
        "retention": state.retention.report(),
    }))
}
