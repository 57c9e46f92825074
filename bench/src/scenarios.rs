//! The benchmark scenarios single, batch, sustained, query and metrics (stream is in
//! [`super::stream`]). Each variant of a scenario runs against a fresh server so figures
//! do not leak between them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use testkit::http::{url_encode, HttpConnection, Response};

use super::contention::CoreBurner;
use super::gen::{
    ClientIds, EventShape, IdSource, RequestTemplate, Rng, Wire, EVENT_TYPES, SERVICES, USERS,
};
use super::key::get_request;
use super::load::{
    describe_refusal, ensure_connected, rate, run_post_load, LoadOutcome, Pace, PostLoad,
    ProbeOutcome, Prober, Schedule, REQUEST_TIMEOUT,
};
use super::report::Report;
use super::server::{thread_cpu_seconds, RunningServer, ScratchDir, ServerCommand};
use super::stats::{micros, LatencySummary};

/// Events per batch request in the batch, sustained and preload loads.
pub(super) const BATCH_SIZE: usize = 1000;
/// Batches are large; a few connections keep the server busy without thrashing it.
pub(super) const BATCH_CONNECTIONS: usize = 8;
/// Enough concurrency to keep up with the offered rate while some batches wait on
/// back-off or slow answers.
const SUSTAINED_CONNECTIONS: usize = 16;
/// Connections of the query and metrics mixes.
const QUERY_CONNECTIONS: usize = 16;
/// Events per page in the query mix.
const QUERY_LIMIT: u32 = 50;
/// Distinct single-event bodies; patched slots vary the rest.
pub(super) const SINGLE_TEMPLATES: usize = 64;
/// Distinct batch bodies (~380 KB each at 1,000 events).
pub(super) const BATCH_TEMPLATES: usize = 4;
/// Bound on preloading a data set, including 429 back-off.
pub(super) const PRELOAD_LIMIT: Duration = Duration::from_secs(3600);
/// Bound on waiting for preloaded events to become queryable: the metrics preload, with
/// timestamps spread over a day, took 430 s to index on the 2-core machine (the query
/// preload 80 s), so this leaves room for a slower run while still ending a hung one.
const INDEXING_LIMIT: Duration = Duration::from_secs(1800);

/// Everything the scenarios share for one `eventide-bench` invocation.
#[derive(Debug)]
pub struct BenchContext {
    pub server: ServerCommand,
    pub scratch: ScratchDir,
    pub keep_data: bool,
    pub connections: usize,
    pub query_events: u64,
    pub metrics_events: u64,
    pub sustained_rate: u64,
    pub retention_events: u64,
    pub backfill_events: u64,
    pub client_events: u64,
    /// Whether the sustained scenario also runs beside a process burning a core.
    pub contended: bool,
    pub cluster: ClusterTargets,
}

/// Where the cluster's servers are, from `eventide-bench --postgres-url/--redis-url`.
#[derive(Debug, Clone)]
pub struct ClusterTargets {
    pub postgres_url: String,
    pub redis_url: String,
}

/// The server a scenario's work runs against.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerHandle {
    pub addr: SocketAddr,
    pub pid: u32,
}

/// The outcome of one variant plus the server's peak memory during it.
pub(super) struct Measured<T> {
    pub value: T,
    pub peak_rss_mb: f64,
}

impl BenchContext {
    /// Starts a fresh server for `label` with `command`, runs `work` against it, reads its
    /// peak RSS, and stops it, also when `work` failed.
    pub(super) async fn with_server<T, F, Fut>(
        &self,
        label: &str,
        command: &ServerCommand,
        null_store: bool,
        work: F,
    ) -> Result<Measured<T>>
    where
        F: FnOnce(ServerHandle) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let data_dir = self.scratch.path().join(label);
        let log_path = self.scratch.path().join(format!("{label}.log"));
        let server = RunningServer::start(command, &data_dir, &log_path, null_store)
            .await
            .with_context(|| format!("starting the server for {label}"))?;
        progress(&format!("{label}: server up at {}", server.addr()));
        let result = work(ServerHandle {
            addr: server.addr(),
            pid: server.pid(),
        })
        .await;
        let peak_rss_mb = server.peak_rss_mb();
        server.stop().await?;
        if !self.keep_data {
            // Data sets reach gigabytes; do not let them pile up across variants.
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        // The variant's writes still in the page cache would otherwise be flushed during
        // the next one, which would pay for them.
        tokio::task::spawn_blocking(|| {
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() }
        })
        .await?;
        Ok(Measured {
            value: result.with_context(|| format!("running {label}"))?,
            peak_rss_mb: peak_rss_mb?,
        })
    }

    /// One unpaced ingest variant: `connections` connections sending `templates` until
    /// `duration` has passed.
    async fn ingest_variant(
        &self,
        label: &str,
        null_store: bool,
        connections: usize,
        templates: &[RequestTemplate],
        duration: Duration,
    ) -> Result<Measured<LoadOutcome>> {
        let measured = self
            .with_server(label, &self.server, null_store, |server| async move {
                let addr = server.addr;
                let ids = Arc::new(IdSource::new(&mut Rng::from_clock(0)));
                Ok(run_post_load(PostLoad {
                    addr,
                    connections,
                    templates: templates.to_vec(),
                    final_request: None,
                    ids,
                    schedule: Schedule::UntilDeadline {
                        deadline: Instant::now() + duration,
                    },
                    probes: None,
                })
                .await)
            })
            .await?;
        let outcome = &measured.value;
        progress(&format!(
            "{label}: {:.0} events/s ({} acknowledged, {} x 429, {} errors)",
            outcome.events_per_sec(),
            outcome.acknowledged_events,
            outcome.rejected_429,
            outcome.errors
        ));
        warn_errors(label, outcome);
        Ok(measured)
    }

    /// The same load against the durable server (`{name}-durable`) and one with the null
    /// store (`{name}-null-store`): the report `name` opened with the durable figures and how
    /// they compare, and both outcomes.
    async fn durable_against_null_store(
        &self,
        name: &str,
        connections: usize,
        templates: &[RequestTemplate],
        duration: Duration,
    ) -> Result<(Report, Measured<LoadOutcome>, Measured<LoadOutcome>)> {
        let durable_label = format!("{name}-durable");
        let mut durable = self
            .ingest_variant(&durable_label, false, connections, templates, duration)
            .await?;
        let null_label = format!("{name}-null-store");
        let null_store = self
            .ingest_variant(&null_label, true, connections, templates, duration)
            .await?;
        let mut report = Report::new(name);
        push_ingest_figures(&mut report, &mut durable);
        push_null_store_comparison(
            &mut report,
            durable.value.events_per_sec(),
            null_store.value.events_per_sec(),
        );
        Ok((report, durable, null_store))
    }
}

/// One event per POST from many connections: durable, null store, and client ids.
pub async fn single(context: &BenchContext, duration: Duration) -> Result<Report> {
    let connections = context.connections;
    let mut rng = Rng::from_clock(1);
    let server_ids = templates(SINGLE_TEMPLATES, 1, ClientIds::None, &mut rng);
    let client_ids = templates(SINGLE_TEMPLATES, 1, ClientIds::Every, &mut rng);

    let (mut report, durable, null_store) = context
        .durable_against_null_store("single", connections, &server_ids, duration)
        .await?;
    let mut with_ids = context
        .ingest_variant(
            "single-client-ids",
            false,
            connections,
            &client_ids,
            duration,
        )
        .await?;
    report.push_rate("client_ids_events_per_sec", with_ids.value.events_per_sec());
    let with_ids_latency = LatencySummary::from_micros(&mut with_ids.value.latencies_us);
    report.push_ms("client_ids_p99_ms", with_ids_latency.p99_ms);
    report.push(
        "errors",
        durable.value.errors + null_store.value.errors + with_ids.value.errors,
    );
    report.push("rejected_429", durable.value.rejected_429);
    report.push("null_store_rejected_429", null_store.value.rejected_429);
    report.push("client_ids_rejected_429", with_ids.value.rejected_429);
    report.push("connections", connections as u64);
    report.push_seconds("duration_s", duration);
    report.push_mb("null_store_peak_rss_mb", null_store.peak_rss_mb);
    report.push_mb("client_ids_peak_rss_mb", with_ids.peak_rss_mb);
    Ok(report)
}

/// 1,000-event POSTs from a few connections: durable and null store.
pub async fn batch(context: &BenchContext, duration: Duration) -> Result<Report> {
    let mut rng = Rng::from_clock(2);
    let batches = templates(BATCH_TEMPLATES, BATCH_SIZE, ClientIds::None, &mut rng);
    let (mut report, durable, null_store) = context
        .durable_against_null_store("batch", BATCH_CONNECTIONS, &batches, duration)
        .await?;
    report.push("errors", durable.value.errors + null_store.value.errors);
    report.push("rejected_429", durable.value.rejected_429);
    report.push("null_store_rejected_429", null_store.value.rejected_429);
    report.push("batch_size", BATCH_SIZE as u64);
    report.push("event_bytes", (batches[0].body_len() / BATCH_SIZE) as u64);
    report.push("connections", BATCH_CONNECTIONS as u64);
    report.push_seconds("duration_s", duration);
    report.push_mb("null_store_peak_rss_mb", null_store.peak_rss_mb);
    Ok(report)
}

/// Events per request of the SDK scenario: what SDKs batch (Segment's Python SDK sends up
/// to 100 calls a request).
const SDK_BATCH: usize = 100;

/// 100-event batches with client ids, as SDKs send them: to `POST /events`, then the same
/// events as Segment `track` calls to `/v1/batch`, and how close the second comes.
pub async fn sdk(context: &BenchContext, duration: Duration) -> Result<Report> {
    let batches = |wire| -> Vec<RequestTemplate> {
        // The same seed: the same events in both APIs.
        let mut rng = Rng::with_seed(3);
        let shape = EventShape {
            wire,
            ..EventShape::default()
        };
        (0..BATCH_TEMPLATES)
            .map(|_| {
                RequestTemplate::build_with(SDK_BATCH, true, ClientIds::Every, shape, &mut rng)
            })
            .collect()
    };
    let mut native = context
        .ingest_variant(
            "sdk-events",
            false,
            BATCH_CONNECTIONS,
            &batches(Wire::Eventide),
            duration,
        )
        .await?;
    let mut segment = context
        .ingest_variant(
            "sdk-segment",
            false,
            BATCH_CONNECTIONS,
            &batches(Wire::Segment),
            duration,
        )
        .await?;
    let mut report = Report::new("sdk");
    push_ingest_figures(&mut report, &mut native);
    report.push_rate("segment_events_per_sec", segment.value.events_per_sec());
    report.push_ratio(
        "segment_to_events_ratio",
        segment.value.events_per_sec(),
        native.value.events_per_sec(),
    );
    let segment_latency = LatencySummary::from_micros(&mut segment.value.latencies_us);
    report.push_ms("segment_p99_ms", segment_latency.p99_ms);
    report.push("errors", native.value.errors + segment.value.errors);
    report.push(
        "rejected_429",
        native.value.rejected_429 + segment.value.rejected_429,
    );
    report.push("batch_size", SDK_BATCH as u64);
    report.push("connections", BATCH_CONNECTIONS as u64);
    report.push_seconds("duration_s", duration);
    Ok(report)
}

/// The first figures of every ingest report: rate, latency, memory.
fn push_ingest_figures(report: &mut Report, measured: &mut Measured<LoadOutcome>) {
    report.push_rate("events_per_sec", measured.value.events_per_sec());
    report.push_latency(
        "",
        &LatencySummary::from_micros(&mut measured.value.latencies_us),
    );
    report.push_mb("server_peak_rss_mb", measured.peak_rss_mb);
}

/// What one sustained variant measured.
struct SustainedRun {
    load: LoadOutcome,
    queryable_events: u64,
    probes: ProbeOutcome,
    /// The offered rate (events/s) at each step of the controller.
    rates: Vec<f64>,
}

impl SustainedRun {
    /// The mean offered rate over the last quarter of the run, once the controller settled.
    fn settled_rate(&self) -> f64 {
        let tail = &self.rates[self.rates.len() * 3 / 4..];
        if tail.is_empty() {
            0.0
        } else {
            tail.iter().sum::<f64>() / tail.len() as f64
        }
    }

    /// Events queryable at the end per second of load.
    fn events_per_sec(&self) -> f64 {
        rate(self.queryable_events, self.load.elapsed)
    }

    fn errors(&self) -> u64 {
        self.load.errors + self.probes.errors.errors
    }
}

/// How much longer than the contended run the burner may spin if the bench dies without
/// killing it: the server's start and drain.
const CONTENDED_BURN_SLACK: Duration = Duration::from_secs(120);

/// Paced batches at the offered rate with visibility probes: server ids, then client ids
/// (and with `--contended`, server ids again beside a process burning a core).
pub async fn sustained(context: &BenchContext, duration: Duration) -> Result<Report> {
    let offered_rate = context.sustained_rate;
    let mut rng = Rng::from_clock(3);
    let probed = templates(
        BATCH_TEMPLATES,
        BATCH_SIZE,
        ClientIds::FirstEventOnly,
        &mut rng,
    );
    let all_ids = templates(BATCH_TEMPLATES, BATCH_SIZE, ClientIds::Every, &mut rng);
    let max_rate = offered_rate as f64;

    let mut server_ids =
        sustained_variant(context, "sustained-durable", &probed, max_rate, duration).await?;
    let mut with_ids = sustained_variant(
        context,
        "sustained-client-ids",
        &all_ids,
        max_rate,
        duration,
    )
    .await?;

    let mut report = Report::new("sustained");
    report.push_rate("events_per_sec", server_ids.value.events_per_sec());
    report.push_latency(
        "",
        &LatencySummary::from_micros(&mut server_ids.value.load.latencies_us),
    );
    report.push_mb("server_peak_rss_mb", server_ids.peak_rss_mb);
    report.push(
        "errors",
        server_ids.value.errors() + with_ids.value.errors(),
    );
    report.push("max_offered_rate", offered_rate);
    report.push_rate("settled_offered_rate", server_ids.value.settled_rate());
    report.push_rate(
        "client_ids_settled_offered_rate",
        with_ids.value.settled_rate(),
    );
    report.push("rejected_429", server_ids.value.load.rejected_429);
    report.push(
        "acknowledged_events",
        server_ids.value.load.acknowledged_events,
    );
    report.push("queryable_events", server_ids.value.queryable_events);
    let lag = LatencySummary::from_micros(&mut server_ids.value.probes.lags_us);
    report.push_latency("visibility_lag_", &lag);
    report.push("probes", lag.count as u64);
    report.push("probes_skipped", server_ids.value.probes.skipped);
    report.push("probes_timed_out", server_ids.value.probes.timed_out);
    report.push_rate("client_ids_events_per_sec", with_ids.value.events_per_sec());
    let with_ids_lag = LatencySummary::from_micros(&mut with_ids.value.probes.lags_us);
    report.push_ms("client_ids_visibility_lag_p99_ms", with_ids_lag.p99_ms);
    report.push("client_ids_rejected_429", with_ids.value.load.rejected_429);
    report.push("batch_size", BATCH_SIZE as u64);
    report.push("connections", SUSTAINED_CONNECTIONS as u64);
    report.push_seconds("duration_s", duration);
    report.push_mb("client_ids_peak_rss_mb", with_ids.peak_rss_mb);
    if context.contended {
        let _burner = CoreBurner::start(duration + CONTENDED_BURN_SLACK)?;
        let mut contended =
            sustained_variant(context, "sustained-contended", &probed, max_rate, duration).await?;
        report.push_rate("contended_events_per_sec", contended.value.events_per_sec());
        let lag = LatencySummary::from_micros(&mut contended.value.probes.lags_us);
        report.push_ms("contended_visibility_lag_p99_ms", lag.p99_ms);
        report.push("contended_errors", contended.value.errors());
    }
    Ok(report)
}

async fn sustained_variant(
    context: &BenchContext,
    label: &str,
    batches: &[RequestTemplate],
    max_rate: f64,
    duration: Duration,
) -> Result<Measured<SustainedRun>> {
    let measured = context
        .with_server(label, &context.server, false, |server| async move {
            let addr = server.addr;
            let prober = Prober::new(addr);
            let start = Instant::now();
            let deadline = start + duration;
            let pace = Pace::new(start, max_rate * INITIAL_RATE_SHARE / BATCH_SIZE as f64);
            let controller = tokio::spawn(keep_indexer_up(
                Arc::clone(&pace),
                Arc::clone(&prober),
                max_rate,
                deadline,
            ));
            let load = run_post_load(PostLoad {
                addr,
                connections: SUSTAINED_CONNECTIONS,
                templates: batches.to_vec(),
                final_request: None,
                ids: Arc::new(IdSource::new(&mut Rng::from_clock(4))),
                schedule: Schedule::Paced { pace, deadline },
                probes: Some(Arc::clone(&prober)),
            })
            .await;
            let rates = controller.await.unwrap_or_default();
            // Count right after the load stops: events still unindexed do not count.
            let queryable_events = fetch_total(addr).await?;
            let probes = prober.finish().await;
            Ok(SustainedRun {
                load,
                queryable_events,
                probes,
                rates,
            })
        })
        .await?;
    let run = &measured.value;
    progress(&format!(
        "{label}: {:.0} queryable events/s ({} acknowledged, {} queryable, {} x 429, {} errors)",
        run.events_per_sec(),
        run.load.acknowledged_events,
        run.queryable_events,
        run.load.rejected_429,
        run.errors()
    ));
    warn_errors(label, &run.load);
    warn_errors(&format!("{label} probes"), &run.probes.errors);
    Ok(measured)
}

/// The kinds of query in the query mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryKind {
    /// Newest page of one event type.
    Type,
    /// The page after a previous type page, via its `next_cursor`.
    Cursor,
    /// Newest page of one user.
    User,
    /// Newest page of one service.
    Service,
}

/// Query latencies by kind, plus the shared error tally.
#[derive(Debug, Default)]
struct QueryOutcome {
    type_us: Vec<u32>,
    cursor_us: Vec<u32>,
    user_us: Vec<u32>,
    service_us: Vec<u32>,
    tally: LoadOutcome,
}

impl MixOutcome for QueryOutcome {
    fn tally(&mut self) -> &mut LoadOutcome {
        &mut self.tally
    }

    fn merge(&mut self, other: QueryOutcome) {
        self.type_us.extend(other.type_us);
        self.cursor_us.extend(other.cursor_us);
        self.user_us.extend(other.user_us);
        self.service_us.extend(other.service_us);
        self.tally.merge(other.tally);
    }
}

/// A data set loaded into a server before it is queried.
pub(super) struct Preloaded {
    pub load: LoadOutcome,
    /// Events queryable once the wait ended (at least all acknowledged ones).
    indexed_events: u64,
    indexing_wait: Duration,
}

impl Preloaded {
    /// The preload's figures, shared by the query and metrics reports.
    fn push_figures(&self, report: &mut Report) {
        report.push("preloaded_events", self.load.acknowledged_events);
        report.push("indexed_events", self.indexed_events);
        report.push_seconds("preload_s", self.load.elapsed);
        report.push_seconds("indexing_wait_s", self.indexing_wait);
    }
}

/// Posts `total_events` events of `shape`, with client ids as `ids` says, in time order, as
/// [`BATCH_SIZE`]-event batches (the last request holding the remainder) from
/// [`BATCH_CONNECTIONS`] connections, retrying 429s until `give_up_at`, and says how fast it
/// went.
pub(super) async fn post_in_batches(
    addr: SocketAddr,
    label: &str,
    total_events: u64,
    shape: EventShape,
    ids: ClientIds,
    give_up_at: Instant,
) -> LoadOutcome {
    let mut rng = Rng::from_clock(5);
    let batches: Vec<RequestTemplate> = (0..BATCH_TEMPLATES)
        .map(|_| RequestTemplate::build_with(BATCH_SIZE, true, ids, shape, &mut rng))
        .collect();
    let remainder = (total_events % BATCH_SIZE as u64) as usize;
    let final_request =
        (remainder > 0).then(|| RequestTemplate::build_with(remainder, true, ids, shape, &mut rng));
    let load = run_post_load(PostLoad {
        addr,
        connections: BATCH_CONNECTIONS,
        templates: batches,
        final_request,
        ids: Arc::new(IdSource::new(&mut rng)),
        schedule: Schedule::Count {
            requests: total_events.div_ceil(BATCH_SIZE as u64),
            give_up_at,
        },
        probes: None,
    })
    .await;
    progress(&format!(
        "{label}: {} events acknowledged in {:.1} s ({:.0} events/s, {} x 429, {} errors)",
        load.acknowledged_events,
        load.elapsed.as_secs_f64(),
        load.events_per_sec(),
        load.rejected_429,
        load.errors
    ));
    load
}

/// Loads `total_events` events of `shape` in 1,000-event batches from a few connections
/// (retrying 429s), then waits until all acknowledged events are queryable.
pub(super) async fn preload(
    addr: SocketAddr,
    label: &str,
    total_events: u64,
    shape: EventShape,
) -> Result<Preloaded> {
    progress(&format!("{label}: preloading {total_events} events"));
    let give_up_at = Instant::now() + PRELOAD_LIMIT;
    let load = post_in_batches(
        addr,
        label,
        total_events,
        shape,
        ClientIds::None,
        give_up_at,
    )
    .await;
    warn_errors(&format!("{label} preload"), &load);
    let waiting_since = Instant::now();
    let indexed_events = wait_until_indexed(addr, label, load.acknowledged_events).await?;
    let indexing_wait = waiting_since.elapsed();
    progress(&format!(
        "{label}: {indexed_events} events queryable after {:.1} s",
        indexing_wait.as_secs_f64()
    ));
    Ok(Preloaded {
        load,
        indexed_events,
        indexing_wait,
    })
}

/// What the query scenario measured.
struct QueryRun {
    preloaded: Preloaded,
    indexing: Option<IndexingCost>,
    queries: QueryOutcome,
}

/// The embedded store's writer threads, which do all of the store's writing (the events',
/// `src/store/sqlite/writer.rs`, and the user index's, `src/store/sqlite/user_store.rs`):
/// their CPU time together is the store's cost of indexing. A binary from before the user
/// index had a thread of its own has only the first.
const STORE_WRITER_THREADS: [&str; 2] = ["eventide-store-writer", "eventide-users-writer"];

/// The CPU time of the store's writer threads together, in seconds; an error when none runs.
fn store_writers_cpu_seconds(pid: u32) -> Result<f64> {
    let mut found = STORE_WRITER_THREADS
        .iter()
        .filter_map(|name| thread_cpu_seconds(pid, name).ok())
        .peekable();
    anyhow::ensure!(
        found.peek().is_some(),
        "process {pid} has no store writer thread"
    );
    Ok(found.sum())
}

/// The store's CPU time per event indexed: on average over the preload, and for two probes
/// of [`INDEXING_PROBE_SHARE`] more events each stored once the preload is in, which is the
/// cost at the preload's size: with server ids, then with a client id on every event. Only
/// the embedded store has writer threads to measure.
struct IndexingCost {
    preload_us_per_event: f64,
    probe_events: u64,
    probe_us_per_event: f64,
    client_ids_probe_us_per_event: f64,
}

/// A probe's size, as a share of the preload.
const INDEXING_PROBE_SHARE: u64 = 20;

impl IndexingCost {
    async fn measure(server: &ServerHandle, preloaded: &Preloaded) -> Result<Option<Self>> {
        let Ok(after_preload) = store_writers_cpu_seconds(server.pid) else {
            return Ok(None);
        };
        let events = (preloaded.indexed_events / INDEXING_PROBE_SHARE).max(BATCH_SIZE as u64);
        let stored = preloaded.indexed_events;
        let label = "indexing probe, server ids";
        let (probe_us_per_event, stored) =
            Self::probe(server, label, ClientIds::None, events, stored).await?;
        let label = "indexing probe, client ids";
        let (client_ids_probe_us_per_event, _) =
            Self::probe(server, label, ClientIds::Every, events, stored).await?;
        Ok(Some(IndexingCost {
            preload_us_per_event: per_event_us(after_preload, preloaded.indexed_events),
            probe_events: events,
            probe_us_per_event,
            client_ids_probe_us_per_event,
        }))
    }

    /// Stores `events` more events with ids as `ids` says, over the `stored` already in;
    /// returns the writers' CPU per event they cost and how many are stored now.
    async fn probe(
        server: &ServerHandle,
        label: &str,
        ids: ClientIds,
        events: u64,
        stored: u64,
    ) -> Result<(f64, u64)> {
        progress(&format!("{label}: storing {events} more events"));
        let before = store_writers_cpu_seconds(server.pid)?;
        let give_up_at = Instant::now() + PRELOAD_LIMIT;
        let shape = EventShape::default();
        let load = post_in_batches(server.addr, label, events, shape, ids, give_up_at).await;
        warn_errors(label, &load);
        let expected = stored + load.acknowledged_events;
        let indexed = wait_until_indexed(server.addr, label, expected).await?;
        let spent = store_writers_cpu_seconds(server.pid)? - before;
        Ok((per_event_us(spent, indexed - stored), indexed))
    }

    fn push_figures(&self, report: &mut Report) {
        report.push_rate("index_cpu_us_per_event", self.preload_us_per_event);
        report.push("index_probe_events", self.probe_events);
        report.push_rate("index_probe_cpu_us_per_event", self.probe_us_per_event);
        report.push_rate(
            "index_client_ids_probe_cpu_us_per_event",
            self.client_ids_probe_us_per_event,
        );
    }
}

/// `seconds` of CPU over `events`, in microseconds per event.
fn per_event_us(seconds: f64, events: u64) -> f64 {
    seconds * 1e6 / events.max(1) as f64
}

/// Preload `--query-events` events, wait until they are indexed, then run the query mix.
pub async fn query(context: &BenchContext, duration: Duration) -> Result<Report> {
    let total_events = context.query_events;
    let mut measured = context
        .with_server("query", &context.server, false, |server| async move {
            let addr = server.addr;
            let preloaded = preload(addr, "query", total_events, EventShape::default()).await?;
            let indexing = IndexingCost::measure(&server, &preloaded).await?;
            progress(&format!("query: querying for {} s", duration.as_secs()));
            let queries = run_query_mix(addr, duration).await;
            Ok(QueryRun {
                preloaded,
                indexing,
                queries,
            })
        })
        .await?;
    let run = &mut measured.value;
    warn_errors("query mix", &run.queries.tally);

    let mut all_queries: Vec<u32> = [
        &run.queries.type_us,
        &run.queries.cursor_us,
        &run.queries.user_us,
        &run.queries.service_us,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    let overall = LatencySummary::from_micros(&mut all_queries);
    let by_type = LatencySummary::from_micros(&mut run.queries.type_us);
    let by_cursor = LatencySummary::from_micros(&mut run.queries.cursor_us);
    let by_user = LatencySummary::from_micros(&mut run.queries.user_us);
    let by_service = LatencySummary::from_micros(&mut run.queries.service_us);
    let preload = &run.preloaded.load;

    let mut report = mix_report(
        "query",
        preload,
        &overall,
        &run.queries.tally,
        measured.peak_rss_mb,
    );
    report.push_latency("type_", &by_type);
    report.push_latency("cursor_", &by_cursor);
    report.push_latency("user_", &by_user);
    report.push_latency("service_", &by_service);
    run.preloaded.push_figures(&mut report);
    if let Some(indexing) = &run.indexing {
        indexing.push_figures(&mut report);
    }
    push_mix_closing(&mut report, preload, &run.queries.tally, duration);
    Ok(report)
}

/// The metrics mix: report-field prefix and request path of each endpoint, in the order
/// they are reported. Without `from`/`to` a time series covers the last 60 intervals: 60
/// minutes, or 60 hours for `interval=hour`.
const METRICS_ENDPOINTS: [(&str, &str); 6] = [
    ("window_60s_", "/metrics"),
    ("window_1h_", "/metrics?window=1h"),
    ("window_24h_", "/metrics?window=24h"),
    ("timeseries_", "/metrics/timeseries"),
    (
        "timeseries_hour_service_",
        "/metrics/timeseries?interval=hour&group_by=service",
    ),
    ("summary_", "/metrics/summary"),
];
/// The metrics preload's timestamps reach this far back (uniformly), so every window and
/// the 24-hour summary have data.
const METRICS_SPREAD: Duration = Duration::from_secs(24 * 3600);

/// Latencies of the metrics mix, by endpoint (as in [`METRICS_ENDPOINTS`]).
#[derive(Debug, Default)]
struct MetricsOutcome {
    by_endpoint: [Vec<u32>; METRICS_ENDPOINTS.len()],
    /// 200 answers that said `"partial": true` (the index was behind): should be none
    /// once the preload is indexed.
    partial: u64,
    tally: LoadOutcome,
}

impl MixOutcome for MetricsOutcome {
    fn tally(&mut self) -> &mut LoadOutcome {
        &mut self.tally
    }

    fn merge(&mut self, other: MetricsOutcome) {
        for (mine, theirs) in self.by_endpoint.iter_mut().zip(other.by_endpoint) {
            mine.extend(theirs);
        }
        self.partial += other.partial;
        self.tally.merge(other.tally);
    }
}

/// What the metrics scenario measured.
struct MetricsRun {
    preloaded: Preloaded,
    /// `total` of `/metrics?window=24h` right before the mix: the preload, less the
    /// events that aged out of the window while it was indexed.
    window_24h_total: u64,
    queries: MetricsOutcome,
}

/// Preload `--metrics-events` events with timestamps over the last 24 hours, wait until
/// they are indexed, then run the metrics mix.
pub async fn metrics(context: &BenchContext, duration: Duration) -> Result<Report> {
    let total_events = context.metrics_events;
    let shape = EventShape {
        timestamp_spread_ms: METRICS_SPREAD.as_millis() as u64,
        // In time order, as a day of traffic arrives: shuffled timestamps would measure the
        // index B-trees' random inserts (minutes of indexing), not the metrics.
        in_order_over_events: total_events,
        ..EventShape::default()
    };
    let mut measured = context
        .with_server("metrics", &context.server, false, |server| async move {
            let addr = server.addr;
            let preloaded = preload(addr, "metrics", total_events, shape).await?;
            let window_24h_total = fetch_u64_field(addr, "/metrics?window=24h", "total").await?;
            progress(&format!(
                "metrics: /metrics?window=24h counts {window_24h_total} events; querying for {} s",
                duration.as_secs()
            ));
            let queries = run_metrics_mix(addr, duration).await;
            Ok(MetricsRun {
                preloaded,
                window_24h_total,
                queries,
            })
        })
        .await?;
    let run = &mut measured.value;
    warn_errors("metrics mix", &run.queries.tally);
    let preload = &run.preloaded.load;

    let mut all_queries: Vec<u32> = run.queries.by_endpoint.iter().flatten().copied().collect();
    let overall = LatencySummary::from_micros(&mut all_queries);

    let mut report = mix_report(
        "metrics",
        preload,
        &overall,
        &run.queries.tally,
        measured.peak_rss_mb,
    );
    for ((prefix, _), samples) in METRICS_ENDPOINTS
        .iter()
        .zip(run.queries.by_endpoint.iter_mut())
    {
        let summary = LatencySummary::from_micros(samples);
        report.push_latency(prefix, &summary);
        // A slow endpoint holds connections and starves the others of samples: show how
        // many each percentile rests on.
        report.push(&format!("{prefix}queries"), summary.count as u64);
    }
    report.push("partial_answers", run.queries.partial);
    run.preloaded.push_figures(&mut report);
    report.push("window_24h_total", run.window_24h_total);
    push_mix_closing(&mut report, preload, &run.queries.tally, duration);
    Ok(report)
}

/// Runs the metrics mix (each request an endpoint of [`METRICS_ENDPOINTS`] at random) from
/// [`QUERY_CONNECTIONS`] connections for `duration`.
async fn run_metrics_mix(addr: SocketAddr, duration: Duration) -> MetricsOutcome {
    let started = Instant::now();
    let deadline = started + duration;
    let gets: Arc<Vec<Get>> = Arc::new(
        METRICS_ENDPOINTS
            .iter()
            .map(|(_, path)| Get::new(path))
            .collect(),
    );
    let tasks: Vec<_> = (0..QUERY_CONNECTIONS)
        .map(|index| {
            let gets = Arc::clone(&gets);
            tokio::spawn(async move {
                metrics_connection_loop(addr, deadline, index as u64, &gets).await
            })
        })
        .collect();
    gather("metrics", tasks, started).await
}

async fn metrics_connection_loop(
    addr: SocketAddr,
    deadline: Instant,
    index: u64,
    gets: &[Get],
) -> MetricsOutcome {
    let mut rng = Rng::from_clock(200 + index);
    let mut outcome = MetricsOutcome::default();
    let mut connection: Option<HttpConnection> = None;
    while Instant::now() < deadline {
        let endpoint = rng.below(METRICS_ENDPOINTS.len() as u64) as usize;
        let get = &gets[endpoint];
        let answer = timed_get(&mut connection, addr, get, &mut outcome.tally, deadline).await;
        match answer {
            Answer::Ok(latency, response) => {
                outcome.partial += partial_count(&response);
                outcome.by_endpoint[endpoint].push(latency);
            }
            Answer::Retry | Answer::Refused => {}
            Answer::Broken => connection = None,
        }
    }
    outcome
}

pub(super) fn find_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Polls the stored total until it reaches `expected` (bounded); returns the last total.
pub(super) async fn wait_until_indexed(
    addr: SocketAddr,
    label: &str,
    expected: u64,
) -> Result<u64> {
    let started = Instant::now();
    let mut last_progress = started;
    loop {
        let total = fetch_total(addr).await?;
        if total >= expected {
            return Ok(total);
        }
        if started.elapsed() >= INDEXING_LIMIT {
            bail!(
                "only {total} of {expected} acknowledged events queryable after {INDEXING_LIMIT:?}"
            );
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            progress(&format!(
                "{label}: {total} of {expected} events queryable so far"
            ));
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the query mix from [`QUERY_CONNECTIONS`] connections for `duration`.
async fn run_query_mix(addr: SocketAddr, duration: Duration) -> QueryOutcome {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..QUERY_CONNECTIONS)
        .map(|index| tokio::spawn(query_connection_loop(addr, deadline, index as u64)))
        .collect();
    gather("query", tasks, started).await
}

/// What one connection of a request mix measured, merged across connections.
trait MixOutcome: Default {
    fn merge(&mut self, other: Self);
    fn tally(&mut self) -> &mut LoadOutcome;
}

/// The first figures of a scenario that preloads events and then runs a request mix:
/// the preload's rate, the mix's overall latency, memory, errors and request rate.
fn mix_report(
    scenario: &str,
    preload: &LoadOutcome,
    overall: &LatencySummary,
    mix: &LoadOutcome,
    peak_rss_mb: f64,
) -> Report {
    let mut report = Report::new(scenario);
    report.push_rate("events_per_sec", preload.events_per_sec());
    report.push_latency("", overall);
    report.push_mb("server_peak_rss_mb", peak_rss_mb);
    report.push("errors", preload.errors + mix.errors);
    report.push_rate("queries_per_sec", rate(overall.count as u64, mix.elapsed));
    report.push("queries", overall.count as u64);
    report
}

/// The last figures of a mix's report: the 429s of the preload and the mix, the connections
/// and the duration.
fn push_mix_closing(
    report: &mut Report,
    preload: &LoadOutcome,
    mix: &LoadOutcome,
    duration: Duration,
) {
    report.push("rejected_429", preload.rejected_429 + mix.rejected_429);
    report.push("connections", QUERY_CONNECTIONS as u64);
    report.push_seconds("duration_s", duration);
}

/// Waits for a mix's connection tasks and merges what they measured; the mix's elapsed
/// time runs from `started`.
async fn gather<T: MixOutcome>(
    mix: &str,
    tasks: Vec<tokio::task::JoinHandle<T>>,
    started: Instant,
) -> T {
    let mut outcome = T::default();
    for task in tasks {
        match task.await {
            Ok(partial) => outcome.merge(partial),
            Err(error) => outcome
                .tally()
                .record_error(format!("{mix} task failed: {error}")),
        }
    }
    outcome.tally().elapsed = started.elapsed();
    outcome
}

/// The part of a page response the query mix needs.
#[derive(Deserialize)]
struct PageCursor {
    #[serde(default)]
    next_cursor: Option<serde_json::Value>,
}

/// A cursor as text, whatever JSON type the server chose for it.
fn cursor_text(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

async fn query_connection_loop(addr: SocketAddr, deadline: Instant, index: u64) -> QueryOutcome {
    let mut rng = Rng::from_clock(100 + index);
    let mut outcome = QueryOutcome::default();
    let mut connection: Option<HttpConnection> = None;
    // The type and cursor of the page this connection read last, for the next cursor query.
    let mut saved_cursor: Option<(u64, String)> = None;

    while Instant::now() < deadline {
        // Mix: 40% newest-of-type, 30% next page by cursor (when one is saved), 20% user,
        // 10% service.
        let roll = rng.below(10);
        let (kind, event_type, path) = match (&saved_cursor, roll) {
            (Some((event_type, cursor)), 4..=6) => (
                QueryKind::Cursor,
                *event_type,
                format!(
                    "/events?type=type-{event_type:02}&limit={QUERY_LIMIT}&cursor={}",
                    url_encode(cursor)
                ),
            ),
            (_, 0..=6) => {
                let event_type = rng.below(EVENT_TYPES);
                let path = format!("/events?type=type-{event_type:02}&limit={QUERY_LIMIT}");
                (QueryKind::Type, event_type, path)
            }
            (_, 7..=8) => {
                let path = format!(
                    "/events?user_id=user-{:06}&limit={QUERY_LIMIT}",
                    rng.below(USERS)
                );
                (QueryKind::User, 0, path)
            }
            _ => {
                let path = format!(
                    "/events?service=svc-{:02}&limit={QUERY_LIMIT}",
                    rng.below(SERVICES)
                );
                (QueryKind::Service, 0, path)
            }
        };
        let get = Get::new(&path);
        let answer = timed_get(&mut connection, addr, &get, &mut outcome.tally, deadline).await;
        match answer {
            Answer::Ok(latency, response) => {
                // User and service pages are not followed by cursor.
                let unfollowed = match kind {
                    QueryKind::User => Some(&mut outcome.user_us),
                    QueryKind::Service => Some(&mut outcome.service_us),
                    QueryKind::Type | QueryKind::Cursor => None,
                };
                if let Some(latencies) = unfollowed {
                    latencies.push(latency);
                    continue;
                }
                match serde_json::from_slice::<PageCursor>(response.body) {
                    Ok(page) => {
                        if kind == QueryKind::Type {
                            outcome.type_us.push(latency);
                        } else {
                            outcome.cursor_us.push(latency);
                        }
                        saved_cursor =
                            cursor_text(page.next_cursor).map(|cursor| (event_type, cursor));
                    }
                    Err(error) => outcome.tally.record_error(format!(
                        "GET {path}: unreadable page ({error}): {}",
                        response.body_excerpt()
                    )),
                }
            }
            Answer::Retry => {}
            // A failing cursor would fail again; start over from a fresh type page.
            Answer::Refused => saved_cursor = None,
            Answer::Broken => connection = None,
        }
    }
    outcome
}

/// How one GET of a query mix went.
pub(super) enum Answer<'a> {
    /// 200: the latency in microseconds and the response.
    Ok(u32, Response<'a>),
    /// 429 (counted), after backing off as asked (not past the deadline); or no connection
    /// could be opened (recorded, after a short pause).
    Retry,
    /// Another status; recorded as an error.
    Refused,
    /// The connection failed or timed out (recorded): the caller must drop it.
    Broken,
}

/// A GET ready to send: its path, for error lines, and its request bytes.
pub(super) struct Get {
    path: String,
    request: Vec<u8>,
}

impl Get {
    pub(super) fn new(path: &str) -> Get {
        Get {
            path: path.to_owned(),
            request: get_request(path),
        }
    }
}

/// 1 when an answer says `"partial": true` (the server could not wait for the indexer), else 0:
/// to count them.
pub(super) fn partial_count(response: &Response<'_>) -> u64 {
    u64::from(find_bytes(response.body, br#""partial":true"#))
}

/// Sends one GET on `connection` (opened if needed) and times it; everything but a 200 is
/// tallied here.
pub(super) async fn timed_get<'c>(
    connection: &'c mut Option<HttpConnection>,
    addr: SocketAddr,
    get: &Get,
    tally: &mut LoadOutcome,
    deadline: Instant,
) -> Answer<'c> {
    let Get { path, request } = get;
    let Some(open) = ensure_connected(connection, addr, tally).await else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Answer::Retry;
    };
    let sent_at = Instant::now();
    match tokio::time::timeout(REQUEST_TIMEOUT, open.send(request)).await {
        Ok(Ok(response)) if response.status == 200 => {
            Answer::Ok(micros(sent_at.elapsed()), response)
        }
        Ok(Ok(response)) if response.status == 429 => {
            tally.rejected_429 += 1;
            let wait = response.retry_after.unwrap_or(Duration::from_millis(200));
            tokio::time::sleep_until((Instant::now() + wait).min(deadline).into()).await;
            Answer::Retry
        }
        Ok(Ok(response)) => {
            tally.record_error(describe_refusal(&format!("GET {path}"), &response));
            Answer::Refused
        }
        Ok(Err(error)) => {
            tally.record_error(format!("GET {path}: {error:#}"));
            Answer::Broken
        }
        Err(_) => {
            tally.record_error(format!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"));
            Answer::Broken
        }
    }
}

/// The number of stored, queryable events (`total` of `GET /events?page=1&page_size=1`).
async fn fetch_total(addr: SocketAddr) -> Result<u64> {
    fetch_u64_field(addr, "/events?page=1&page_size=1", "total").await
}

/// The body of a `200` answer to `GET path`, on a new connection; anything else is an
/// error naming the request.
pub(super) async fn fetch_body(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut connection = HttpConnection::connect(addr).await?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, connection.send(&get_request(path)))
        .await
        .map_err(|_| anyhow!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))??;
    if response.status != 200 {
        bail!(describe_refusal(&format!("GET {path}"), &response));
    }
    Ok(response.body.to_vec())
}

/// The top-level number `field` of the JSON answer to `GET path`, on a new connection.
async fn fetch_u64_field(addr: SocketAddr, path: &str, field: &str) -> Result<u64> {
    let body = fetch_body(addr, path).await?;
    let excerpt = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("GET {path}: not JSON: {}", excerpt()))?;
    answer[field]
        .as_u64()
        .ok_or_else(|| anyhow!("GET {path}: no numeric `{field}` in {}", excerpt()))
}

/// `count` request templates of `events` events each (single events are sent as bare
/// objects, batches as arrays).
pub(super) fn templates(
    count: usize,
    events: usize,
    client_ids: ClientIds,
    rng: &mut Rng,
) -> Vec<RequestTemplate> {
    (0..count)
        .map(|_| RequestTemplate::build(events, events > 1, client_ids, rng))
        .collect()
}

/// Prints progress to stderr, which stays free of the `--json` output on stdout. Never
/// panics (`eprintln!` does when stderr is a closed pipe): a scenario must get to its
/// clean-up, such as the cluster scenario's schema.
pub(super) fn progress(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[bench] {message}");
}

/// Makes sure errors are seen, not only counted.
pub(super) fn warn_errors(label: &str, outcome: &LoadOutcome) {
    if outcome.errors == 0 {
        return;
    }
    eprintln!("[bench] WARNING: {label}: {} errors, e.g.:", outcome.errors);
    for sample in &outcome.error_samples {
        eprintln!("[bench]   {sample}");
    }
}

/// The null store's rate and how close the durable path comes to it.
fn push_null_store_comparison(report: &mut Report, durable_per_sec: f64, null_store_per_sec: f64) {
    report.push_rate("null_store_events_per_sec", null_store_per_sec);
    report.push_ratio("durable_to_null_ratio", durable_per_sec, null_store_per_sec);
}

/// The sustained run starts at this share of the ceiling and finds its level from there.
const INITIAL_RATE_SHARE: f64 = 0.2;
/// How often the offered rate is adjusted.
const CONTROL_STEP: Duration = Duration::from_millis(250);
/// Above this much unindexed traffic (in seconds of load) the rate goes down, below the
/// lower mark it goes up: together they keep visibility lag well under a second.
const BACKLOG_HIGH_S: f64 = 0.4;
const BACKLOG_LOW_S: f64 = 0.2;

/// Adjusts `pace` so the indexer keeps up ("the highest rate the indexer keeps up with"):
/// one event per batch is probed, so probes in flight times the batch size is about the
/// number of acknowledged events not yet visible, a signal with no delay (unlike finished
/// probes, which report a growing lag only once it has shrunk again). Returns the offered
/// rate at each step.
async fn keep_indexer_up(
    pace: Arc<Pace>,
    prober: Arc<Prober>,
    max_rate: f64,
    deadline: Instant,
) -> Vec<f64> {
    let mut rates = Vec::new();
    while Instant::now() + CONTROL_STEP < deadline {
        tokio::time::sleep(CONTROL_STEP).await;
        let rate = pace.rate() * BATCH_SIZE as f64;
        let backlog_s = (prober.in_flight() * BATCH_SIZE) as f64 / rate;
        let next = if backlog_s > BACKLOG_HIGH_S {
            rate * 0.85
        } else if backlog_s < BACKLOG_LOW_S {
            (rate * 1.05).min(max_rate)
        } else {
            rate
        };
        pace.set_rate(next / BATCH_SIZE as f64);
        rates.push(next);
    }
    rates
}
