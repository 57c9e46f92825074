//! Self-metrics: how the service itself is doing, in the Prometheus text format at
//! `GET /metrics/prometheus` (the `metrics` facade with its Prometheus recorder).
//!
//! Counters and histograms are recorded where things happen; gauges that mirror state kept
//! elsewhere (queue depth, subscribers) are read when scraped, so the hot paths pay nothing
//! for them.

use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::connections::ConnectionsReport;

pub const EVENTS_INGESTED: &str = "eventide_events_ingested_total";
pub const EVENTS_REJECTED: &str = "eventide_events_rejected_total";
pub const EVENTS_DUPLICATE: &str = "eventide_events_duplicate_total";
/// Events not stored because their client id was accepted with other content.
pub const EVENTS_CONFLICT: &str = "eventide_events_conflict_total";
pub const PENDING_EVENTS: &str = "eventide_ingest_pending_events";
pub const PENDING_CAPACITY: &str = "eventide_ingest_pending_capacity";
pub const INDEX_BACKLOG: &str = "eventide_index_backlog_events";
pub const COMMITTED_SEQ: &str = "eventide_log_committed_seq";
pub const INDEXED_SEQ: &str = "eventide_index_indexed_seq";
pub const COMMIT_BATCH: &str = "eventide_commit_batch_events";
pub const COMMIT_DURATION: &str = "eventide_commit_duration_seconds";
pub const INDEX_BATCH_DURATION: &str = "eventide_index_batch_duration_seconds";
pub const HTTP_REQUESTS: &str = "eventide_http_requests_total";
pub const HTTP_DURATION: &str = "eventide_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "eventide_rate_limited_requests_total";
pub const STREAM_SUBSCRIBERS: &str = "eventide_stream_subscribers";
pub const STREAM_LAGGED: &str = "eventide_stream_lagged_disconnects_total";
/// Commit groups the live stream dispatcher had no room for (their subscribers lagged out).
pub const STREAM_DROPPED_GROUPS: &str = "eventide_stream_dropped_groups_total";
pub const CONNECTIONS_OPEN: &str = "eventide_connections_open";
/// Requests refused by authentication, by reason (`missing`, `unknown`, `revoked`,
/// `expired`, `forbidden`).
pub const AUTH_FAILURES: &str = "eventide_auth_failures_total";
/// Alerts by state (`inactive`, `pending`, `firing`), at the last evaluation.
pub const ALERTS: &str = "eventide_alerts";
/// Alert notices by channel and outcome (`sent`; `failed`: one count per failed attempt;
/// `dropped`: the channel's queue was full).
pub const ALERT_NOTIFICATIONS: &str = "eventide_alert_notifications_total";
/// Connections refused for being beyond `--max-connections`.
pub const CONNECTIONS_REFUSED: &str = "eventide_connections_refused_total";
/// Connections closed for making no progress, by cause (`header`, `idle`, `body`, `write`).
pub const CONNECTIONS_TIMED_OUT: &str = "eventide_connections_timed_out_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it). Call before creating
/// the handles that record, such as the log writer's: handles made earlier record nothing.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS)
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Only when something else in the process installed one first.
            tracing::warn!(
                "a metrics recorder was already installed; /metrics/prometheus will be empty"
            );
        }
        handle
    })
}

/// Handles for the log writer's per-commit figures.
pub struct CommitMetrics {
    batch: Histogram,
    duration: Histogram,
}

impl CommitMetrics {
    pub fn new() -> CommitMetrics {
        CommitMetrics {
            batch: histogram!(COMMIT_BATCH),
            duration: histogram!(COMMIT_DURATION),
        }
    }

    pub fn record(&self, events: usize, took: Duration) {
        self.batch.record(events as f64);
        self.duration.record(took.as_secs_f64());
    }
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn index_batch(took: Duration) {
    histogram!(INDEX_BATCH_DURATION).record(took.as_secs_f64());
}

/// What a POST /events did with its events.
pub fn events_ingested(accepted: usize, duplicates: usize, conflicts: usize) {
    static ACCEPTED: OnceLock<Counter> = OnceLock::new();
    static DUPLICATES: OnceLock<Counter> = OnceLock::new();
    static CONFLICTS: OnceLock<Counter> = OnceLock::new();
    ACCEPTED
        .get_or_init(|| counter!(EVENTS_INGESTED))
        .increment(accepted as u64);
    if duplicates > 0 {
        DUPLICATES
            .get_or_init(|| counter!(EVENTS_DUPLICATE))
            .increment(duplicates as u64);
    }
    if conflicts > 0 {
        CONFLICTS
            .get_or_init(|| counter!(EVENTS_CONFLICT))
            .increment(conflicts as u64);
    }
}

/// Events refused, by reason: `invalid` (per-event validation), or why a whole batch was
/// (`ingest_queue_full`, `index_backlog_full`, `log_unavailable`, `shutting_down`).
pub fn events_rejected(reason: &'static str, events: usize) {
    if events > 0 {
        counter!(EVENTS_REJECTED, "reason" => reason).increment(events as u64);
    }
}

/// A request refused by authentication.
/// How many alerts are in each state, after an evaluation.
pub fn alerts_by_state(inactive: u64, pending: u64, firing: u64) {
    gauge!(ALERTS, "state" => "inactive").set(inactive as f64);
    gauge!(ALERTS, "state" => "pending").set(pending as f64);
    gauge!(ALERTS, "state" => "firing").set(firing as f64);
}

/// A notice to `channel`: `sent`, an attempt `failed`, or `dropped` (its queue was full; it
/// is offered again at the next evaluation).
pub fn alert_notification(channel: &str, outcome: &'static str) {
    counter!(ALERT_NOTIFICATIONS, "channel" => channel.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn auth_failed(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// State read at scrape time.
pub struct Snapshot {
    pub pending_events: u64,
    pub pending_capacity: u64,
    /// The log's committed and indexed seqs (none on an API node of a cluster).
    pub positions: Option<(u64, u64)>,
    pub stream_subscribers: u64,
    pub stream_lagged: u64,
    pub stream_dropped_groups: u64,
    /// Requests refused by the ingest and the query rate limits.
    pub rate_limited: [u64; 2],
    pub connections: ConnectionsReport,
}

/// The exposition text, with the gauges set from `snapshot` first.
pub fn render(snapshot: Snapshot) -> String {
    let handle = install();
    gauge!(PENDING_EVENTS).set(snapshot.pending_events as f64);
    gauge!(PENDING_CAPACITY).set(snapshot.pending_capacity as f64);
    if let Some((committed, indexed)) = snapshot.positions {
        gauge!(COMMITTED_SEQ).set(committed as f64);
        gauge!(INDEXED_SEQ).set(indexed as f64);
        gauge!(INDEX_BACKLOG).set(committed.saturating_sub(indexed) as f64);
    }
    gauge!(STREAM_SUBSCRIBERS).set(snapshot.stream_subscribers as f64);
    counter!(STREAM_LAGGED).absolute(snapshot.stream_lagged);
    counter!(STREAM_DROPPED_GROUPS).absolute(snapshot.stream_dropped_groups);
    for (limit, refused) in ["ingest", "query"].into_iter().zip(snapshot.rate_limited) {
        counter!(RATE_LIMITED, "limit" => limit).absolute(refused);
    }
    let connections = &snapshot.connections;
    gauge!(CONNECTIONS_OPEN).set(connections.open as f64);
    counter!(CONNECTIONS_REFUSED).absolute(connections.refused);
    for (&cause, &count) in &connections.timed_out {
        counter!(CONNECTIONS_TIMED_OUT, "cause" => cause).absolute(count);
    }
    handle.render()
}

/// Drains the histograms' raw samples into their buckets now and then, so memory stays flat
/// between scrapes.
pub async fn run_upkeep(mut stop: tokio::sync::watch::Receiver<bool>) {
    let handle = install();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

/// A request being counted: its route and method, and when it began. Made as the request
/// arrives (inside the router, where its route is known) and finished with its status.
pub struct RequestTiming {
    started: Instant,
    route: usize,
    method: usize,
}

impl RequestTiming {
    pub fn start(request: &Request) -> RequestTiming {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, |path| route_index(path.as_str()));
        let method = METHODS
            .iter()
            .position(|known| *known == request.method().as_str())
            .unwrap_or(METHODS.len() - 1);
        RequestTiming {
            started: Instant::now(),
            route,
            method,
        }
    }

    /// Counts the request by route, method and status, and records how long it took.
    pub fn finish(self, status: u16) {
        let RequestTiming {
            started,
            route,
            method,
        } = self;
        let handles = &*REQUEST_HANDLES;
        match STATUSES.iter().position(|known| *known == status) {
            Some(index) => handles.requests(route, method, index).increment(1),
            None => counter!(
                HTTP_REQUESTS,
                "route" => ROUTES[route],
                "method" => METHODS[method],
                "status" => status.to_string()
            )
            .increment(1),
        }
        handles
            .duration(route)
            .record(started.elapsed().as_secs_f64());
    }
}

/// Route labels: the set is fixed, so labels never explode. The last two stand for the
/// routes not listed and for requests that matched no route.
const ROUTES: &[&str] = &[
    "/events",
    "/events/{id}",
    "/metrics",
    "/metrics/timeseries",
    "/metrics/summary",
    "/metrics/prometheus",
    "/stream",
    "/stream/metrics",
    "/dead-letters",
    "/dead-letters/replay",
    "/health",
    "/health/ready",
    "/health/detailed",
    "/openapi.json",
    "/docs",
    "/",
    "/assets/{file}",
    "other",
    "unmatched",
];
const UNMATCHED: usize = ROUTES.len() - 1;
const METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
];
/// Statuses whose counters are kept at hand; others are looked up by name.
const STATUSES: &[u16] = &[200, 202, 400, 404, 405, 413, 415, 429, 500, 503];

fn route_index(path: &str) -> usize {
    ROUTES[..UNMATCHED - 1]
        .iter()
        .position(|route| *route == path)
        .unwrap_or(UNMATCHED - 1)
}

/// Handles of the per-request metrics, made on first use: looking a labelled metric up by
/// name on every request (allocating its labels) measurably cost single-event ingestion.
struct RequestHandles {
    requests: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
}

static REQUEST_HANDLES: LazyLock<RequestHandles> = LazyLock::new(|| RequestHandles {
    requests: (0..ROUTES.len() * METHODS.len() * STATUSES.len())
        .map(|_| OnceLock::new())
        .collect(),
    durations: (0..ROUTES.len()).map(|_| OnceLock::new()).collect(),
});

impl RequestHandles {
    fn requests(&self, route: usize, method: usize, status: usize) -> &Counter {
        let slot = (route * METHODS.len() + method) * STATUSES.len() + status;
        self.requests[slot].get_or_init(|| {
            counter!(
                HTTP_REQUESTS,
                "route" => ROUTES[route],
                "method" => METHODS[method],
                "status" => STATUSES[status].to_string()
            )
        })
    }

    fn duration(&self, route: usize) -> &Histogram {
        self.durations[route].get_or_init(|| histogram!(HTTP_DURATION, "route" => ROUTES[route]))
    }
}
