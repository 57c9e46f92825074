//! The HTTP API: routes, the shared state handlers see, and the answers for unknown routes.

pub mod admission;
pub mod body;
pub mod cors;
pub mod cursor;
pub mod dashboard;
pub mod dead_letters;
pub mod error;
pub mod events;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod rate_limit;
pub mod request_id;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::clock::Clock;
use crate::connections::OpenConnections;
use crate::health::Health;
use crate::live::Live;
use crate::metrics::EventMetrics;
use crate::queue::redis::RedisStream;
use crate::queue::Ingest;
use crate::retention::Retention;
use crate::store::Store;
use cursor::CursorKey;
use error::ApiError;
use guard::AllowedHosts;
use rate_limit::RateLimits;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub health: Arc<Health>,
    pub rate_limits: Arc<RateLimits>,
    /// Requests in progress, against `--max-concurrent-requests`.
    pub in_flight: Arc<admission::InFlight>,
    pub ingest: Ingest,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<EventMetrics>,
    pub clock: Arc<dyn Clock>,
    /// How long a query waits for the indexer (read-your-writes).
    pub read_wait: Duration,
    /// The live stream: subscriptions and their counters.
    pub live: Live,
    /// What ingest refuses as already expired, and the retention job's report.
    pub retention: Arc<Retention>,
    /// A cluster's queue, for its dead letters (`None` with the embedded queue, which has
    /// none: invalid events are refused at ingest).
    pub dead_letters: Option<RedisStream>,
    /// How requests are taken at the edge.
    pub http: Arc<HttpPolicy>,
    /// Signs the paging cursors with the deployment's secret.
    pub cursors: Arc<CursorKey>,
}

/// How requests are taken at the edge, and the connections they come on.
pub struct HttpPolicy {
    pub connections: Arc<OpenConnections>,
    /// `--max-connections`, for the report.
    pub max_connections: usize,
    /// `--min-body-rate`: bytes per second.
    pub min_body_rate: u64,
    /// The `Host`s served (`None`: any).
    pub hosts: Option<Arc<AllowedHosts>>,
    /// The origins granted CORS (`None`: none).
    pub cors: Option<Arc<cors::CorsOrigins>>,
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/events", get(events::list).post(events::ingest))
        .route("/events/{id}", get(events::get_one))
        .route("/metrics", get(metrics::window))
        .route("/metrics/timeseries", get(metrics::timeseries))
        .route("/metrics/summary", get(metrics::summary))
        .route("/metrics/prometheus", get(metrics::prometheus))
        .route("/stream", get(stream::subscribe))
        .route("/stream/metrics", get(metrics::stream))
        .route("/dead-letters", get(dead_letters::list))
        .route(
            "/dead-letters/replay",
            axum::routing::post(dead_letters::replay),
        )
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .merge(openapi::routes())
        .merge(dashboard::routes());
    // Only when configured: without a query limit, reads pay nothing for it.
    let routes = if state.rate_limits.query.is_some() {
        routes.route_layer(axum::middleware::from_fn_with_state(
            state.rate_limits.clone(),
            rate_limit::limit_queries,
        ))
    } else {
        routes
    };
    let routes = routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.in_flight.clone(),
            admission::limit_in_flight,
        ));
    let routes = match &state.http.hosts {
        Some(hosts) => routes.layer(axum::middleware::from_fn_with_state(
            hosts.clone(),
            guard::check_host,
        )),
        None => routes,
    };
    // Outside the Host check (and, later, authentication): preflights carry neither a key nor
    // anything else to check, and refusals still name the origin for its page.
    let routes = match &state.http.cors {
        Some(origins) => routes.layer(axum::middleware::from_fn_with_state(
            origins.clone(),
            cors::cors,
        )),
        None => routes,
    };
    routes
        .layer(axum::middleware::from_fn(guard::answer_headers))
        .layer(axum::middleware::from_fn(crate::telemetry::track_requests))
        // Outermost: everything above runs, and logs, inside the request's span.
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
