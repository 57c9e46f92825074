//! The HTTP API: routes, the shared state handlers see, and the answers for unknown routes.

pub mod error;
pub mod events;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::clock::Clock;
use crate::ingest::Ingest;
use crate::live::Live;
use crate::metrics::EventMetrics;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<EventMetrics>,
    pub clock: Arc<dyn Clock>,
    /// How long a query waits for the indexer (read-your-writes).
    pub read_wait: Duration,
    /// The live stream: subscriptions and their counters.
    pub live: Live,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/events", get(events::list).post(events::ingest))
        .route("/events/{id}", get(events::get_one))
        .route("/metrics", get(metrics::window))
        .route("/metrics/timeseries", get(metrics::timeseries))
        .route("/metrics/summary", get(metrics::summary))
        .route("/metrics/prometheus", get(metrics::prometheus))
        .route("/stream", get(stream::subscribe))
        .route("/stream/metrics", get(metrics::stream))
        .route("/health", get(health))
        .merge(openapi::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::telemetry::track_requests))
        .with_state(state)
}

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
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
