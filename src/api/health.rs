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
    get,
    path = "/health/detailed",
    tag = "health",
    operation_id = "healthDetailed",
    responses((status = 200, description = "What the service is doing", body = openapi::HealthDetails))
)]
pub async fn detailed(State(state): State<AppState>) -> Json<Value> {
    let health = &state.health;
    let data = match health.data_dir() {
        Some(dir) => {
            let path = dir.to_owned();
            let size_bytes = tokio::task::spawn_blocking(move || size_on_disk(&path))
                .await
                .unwrap_or(0);
            json!({ "dir": dir.display().to_string(), "size_on_disk_bytes": size_bytes })
        }
        None => Value::Null,
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
    let components: serde_json::Map<String, Value> = health
        .components()
        .iter()
        .map(|component| {
            let state = component.state();
            (
                state.name.to_owned(),
                json!({
                    "status": if state.failing { "failing" } else { "ok" },
                    "last_error": state.last_error,
                }),
            )
        })
        .collect();
    let (pending, capacity) = state.ingest.pending();
    let backlog = state.ingest.backlog();
    let positions = state.ingest.positions();
    let stats = state.live.stats();
    let last_commit = health.last_commit().get().map(|(at_ms, micros)| {
        json!({ "at": format_rfc3339_ms(at_ms), "latency_ms": micros as f64 / 1000.0 })
    });
    let reasons = not_ready_reasons(&state);
    let stored = state.metrics.stored_events().await.ok();
    Json(json!({
        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
        "reasons": reasons,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": health.uptime_seconds(),
        "components": components,
        "data": data,
        "queue": {
            "pending_events": pending,
            "capacity": capacity,
            "backlog": backlog.events,
            "backlog_capacity": backlog.max,
            "backlog_is": backlog.what,
        },
        "events": {
            "stored": stored,
            "oldest": oldest,
            "newest": newest,
            "read_error": read_error,
            // An API node of a cluster has no log or index of its own.
            "committed_seq": positions.map(|positions| positions.committed),
            "indexed_seq": positions.map(|positions| positions.indexed),
        },
        "last_commit": last_commit,
        "stream": {
            "subscribers": stats.subscribers.load(Ordering::Relaxed),
            "lagged_disconnects": stats.lagged.load(Ordering::Relaxed),
        },
        "rate_limits": state.rate_limits.report(),
        "retention": state.retention.report(),
        "connections": state.http.connections.report(state.http.max_connections),
    }))
}
