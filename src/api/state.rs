//! What every handler can reach: the service's parts, and how requests are taken at the
//! edge.

use std::sync::Arc;
use std::time::Duration;

use super::admission::InFlight;
use super::cursor::CursorKey;
use super::guard::AllowedHosts;
use super::rate_limit::RateLimits;
use crate::alerts::Alerts;
use crate::auth::Keys;
use crate::clock::Clock;
use crate::connections::OpenConnections;
use crate::health::Health;
use crate::live::Live;
use crate::metrics::EventMetrics;
use crate::queue::redis::RedisStream;
use crate::queue::Ingest;
use crate::retention::Retention;
use crate::store::Store;

/// What every handler can reach, behind one `Arc`: axum clones the state for every handler
/// and middleware a request passes through, and one reference count costs far less than a
/// dozen (measured: cloning and dropping the fields one by one took about a tenth of the
/// server's CPU on single-event POSTs).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The service's parts, as the handlers see them.
pub struct Services {
    pub health: Arc<Health>,
    pub rate_limits: Arc<RateLimits>,
    /// Requests in progress, against `--max-concurrent-requests`.
    pub in_flight: Arc<InFlight>,
    pub ingest: Ingest,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<EventMetrics>,
    pub clock: Arc<dyn Clock>,
    /// How long a query waits for the indexer (read-your-writes).
    pub read_wait: Duration,
    /// How long an export waits for the indexer; past it, `503`.
    pub export_wait: Duration,
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
    /// The API keys, and whether a request needs one.
    pub keys: Arc<Keys>,
    /// Alert rules, their state, history and silences.
    pub alerts: Arc<Alerts>,
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
    pub cors: Option<Arc<super::cors::CorsOrigins>>,
}
