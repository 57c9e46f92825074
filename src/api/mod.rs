//! The HTTP API: routes, and the answers for unknown routes (the state handlers see is
//! [`state::AppState`]).

pub mod admission;
pub mod alerts;
pub mod auth;
pub mod body;
pub mod cors;
pub mod cursor;
pub mod dashboard;
pub mod dead_letters;
pub mod edge;
pub mod error;
pub mod events;
pub mod export;
pub mod guard;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod rate_limit;
pub mod refusals;
pub mod schema;
pub mod sdk;
pub mod snapshot;
pub mod state;
pub mod stream;
pub mod submit;

use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::auth::keys::Scope;
use error::ApiError;
use state::AppState;

pub fn router(state: AppState) -> Router {
    let guard = |scope: Scope| {
        axum::middleware::from_fn_with_state(
            auth::Guard {
                keys: state.keys.clone(),
                scope,
            },
            auth::require,
        )
    };
    // Open without a key: probes, the API description and the dashboard's files (the page
    // asks for a key itself).
    let open = Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .merge(openapi::routes())
        .merge(dashboard::routes());
    let ingest = Router::new()
        .route("/events", post(events::ingest))
        .route_layer(guard(Scope::Ingest));
    let read = Router::new()
        .route("/events", get(events::list))
        .route("/events/export", get(export::export))
        .route("/events/{id}", get(events::get_one))
        .route("/metrics", get(metrics::window))
        .route("/metrics/timeseries", get(metrics::timeseries))
        .route("/metrics/summary", get(metrics::summary))
        .route("/metrics/prometheus", get(metrics::prometheus))
        .route("/stream", get(stream::subscribe))
        .route("/stream/metrics", get(metrics::stream))
        .route("/health/detailed", get(health::detailed))
        .route("/alerts", get(alerts::list))
        .route("/alerts/history", get(alerts::history))
        .route("/alerts/rules", get(alerts::rules))
        .route("/alerts/rules/{name}", get(alerts::rule))
        .route("/alerts/silences", get(alerts::silences));
    // Only when configured: without a query limit, reads pay nothing for it. Inside the
    // key check, so that a key's requests are limited by key.
    let read = if state.rate_limits.query.is_some() {
        read.route_layer(axum::middleware::from_fn_with_state(
            state.rate_limits.clone(),
            rate_limit::limit_queries,
        ))
    } else {
        read
    };
    let read = read.route_layer(guard(Scope::Read));
    let admin = Router::new()
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", delete(keys::revoke))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/alerts/rules", post(alerts::create_rule))
        .route(
            "/alerts/rules/{name}",
            put(alerts::replace_rule).delete(alerts::delete_rule),
        )
        .route("/alerts/silences", post(alerts::create_silence))
        .route_layer(guard(Scope::Admin));
    // The SDKs' endpoints check their keys themselves: SDKs send them in their bodies. Static
    // routes win over `/v1/{call}`.
    let sdks = sdk::posthog::PATHS.iter().fold(
        Router::new()
            .route("/v1/batch", post(sdk::segment::batch))
            .route("/v1/import", post(sdk::segment::batch))
            .route("/v1/logs", post(sdk::otlp::logs))
            .route("/v1/{call}", post(sdk::segment::call)),
        |sdks, path| {
            sdks.route(path, post(sdk::posthog::capture))
                .route(&format!("{path}/"), post(sdk::posthog::capture))
        },
    );
    let routes = open.merge(ingest).merge(sdks).merge(read).merge(admin);
    routes
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::edge,
        ))
        .with_state(state)
}

async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
