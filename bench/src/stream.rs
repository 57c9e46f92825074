//! The stream scenario: 1,010 `/stream` subscribers (one per event type of 1,000, plus 10
//! unfiltered) on one server while events are ingested, measuring delivery latency and
//! completeness; then the ingest rate with and without those subscribers.
//!
//! Four runs, each on a fresh server started with `--max-subscribers 2000`:
//! 1. `stream-paced`: subscribers connect (all response heads in) before ingest starts; then
//!    [`OFFERED_RATE`] events/s in [`STREAM_BATCH`]-event batches for `--duration`; the bench
//!    waits until every acknowledged event reached its [`DELIVERIES_PER_EVENT`] subscribers
//!    (bounded) and stops reading.
//! 2. `stream-paced-alone`: the same paced load without subscribers, for comparison.
//! 3. `stream-ingest-alone`: unpaced ingest of the same requests from [`CAPACITY_CONNECTIONS`]
//!    connections for [`CAPACITY_DURATION`] (or `--duration` if shorter), no subscribers.
//! 4. `stream-ingest-with-subscribers`: the same, with the 1,010 subscribers connected and
//!    reading. The subscribers run in the bench process, on the two cores the server uses;
//!    the report shows the cores each process used while the load ran.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::gen::{ClientIds, EventShape, IdSource, RequestTemplate, Rng};
use super::load::{run_post_load, LoadOutcome, Pace, PostLoad, Schedule};
use super::report::Report;
use super::scenarios::{
    fetch_body, progress, warn_errors, BenchContext, Measured, ServerHandle, BATCH_TEMPLATES,
};
use super::server::{cpu_seconds, ServerCommand};
use super::stats::LatencySummary;
use super::subscriber::{subscribe, SubscriberLinks, SubscriberOutcome, Subscription};

/// Event types of the stream scenario, `type-000` .. `type-999`, one subscriber each.
const STREAM_TYPES: u64 = 1000;
/// Subscribers without a filter: each receives every event.
const UNFILTERED_SUBSCRIBERS: usize = 10;
const SUBSCRIBERS: usize = STREAM_TYPES as usize + UNFILTERED_SUBSCRIBERS;
/// Every event matches one typed subscriber and all unfiltered ones.
const DELIVERIES_PER_EVENT: u64 = 1 + UNFILTERED_SUBSCRIBERS as u64;
/// Events per second offered in the paced run.
const OFFERED_RATE: f64 = 20_000.0;
/// Events per `POST` in all three runs.
const STREAM_BATCH: usize = 100;
/// Connections of the paced run: at 200 requests/s a few are plenty, the rest absorb slow
/// answers without the pace slipping.
const PACED_CONNECTIONS: usize = 8;
/// Connections of the unpaced runs: enough 100-event requests in flight to keep the
/// server's ingest path busy (as the batch scenario does with 1,000-event ones).
const CAPACITY_CONNECTIONS: usize = 8;
/// The unpaced runs last this long at most (less if `--duration` is shorter): at ~400,000
/// events/s a longer run without subscribers would fill the server's 5,000,000-event index
/// backlog and be slowed by 429s, which would measure the indexer, not the ingest path.
const CAPACITY_DURATION: Duration = Duration::from_secs(10);
/// The server's subscriber limit for these runs (its default, 1,000, is below 1,010).
const MAX_SUBSCRIBERS: &str = "2000";
/// Open files the bench and the server each need: a socket per subscriber, plus some.
const NEEDED_OPEN_FILES: u64 = SUBSCRIBERS as u64 + 1024;
/// Bound on all subscribers getting their response heads.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// After the load, how long the bench waits at most for the outstanding deliveries...
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// ...and how long it waits once no delivery arrives any more.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Subscribers, ingest at 20,000 events/s, then unpaced ingest with and without them.
pub async fn stream(context: &BenchContext, duration: Duration) -> Result<Report> {
    raise_open_files_limit(NEEDED_OPEN_FILES)?;
    let command = with_max_subscribers(&context.server);
    let shape = EventShape {
        types: STREAM_TYPES,
        ..EventShape::default()
    };
    let mut rng = Rng::from_clock(7);
    let batches: Vec<RequestTemplate> = (0..BATCH_TEMPLATES)
        .map(|_| RequestTemplate::build_with(STREAM_BATCH, true, ClientIds::None, shape, &mut rng))
        .collect();
    let capacity_duration = duration.min(CAPACITY_DURATION);
    let run = |label: &'static str, subscribers: bool, pace: Option<f64>| Phase {
        label,
        subscribers,
        connections: if pace.is_some() {
            PACED_CONNECTIONS
        } else {
            CAPACITY_CONNECTIONS
        },
        requests_per_sec: pace,
        templates: batches.clone(),
        shape,
        duration: if pace.is_some() {
            duration
        } else {
            capacity_duration
        },
    };

    let paced_rate = OFFERED_RATE / STREAM_BATCH as f64;
    let mut paced = run("stream-paced", true, Some(paced_rate))
        .run(context, &command)
        .await?;
    let mut paced_alone = run("stream-paced-alone", false, Some(paced_rate))
        .run(context, &command)
        .await?;
    let alone = run("stream-ingest-alone", false, None)
        .run(context, &command)
        .await?;
    let mut with_subscribers = run("stream-ingest-with-subscribers", true, None)
        .run(context, &command)
        .await?;

    let errors = paced.value.errors()
        + paced_alone.value.errors()
        + alone.value.errors()
        + with_subscribers.value.errors();
    let paced_run = &mut paced.value;
    let expected = paced_run.expected_deliveries();
    let seen = paced_run.seen.get_or_insert_with(Default::default);
    let delivery = LatencySummary::from_micros(&mut seen.delivery_us);
    let mut report = Report::new("stream");
    report.push_rate("events_per_sec", paced_run.load.events_per_sec());
    // Receipt time minus the event's timestamp, which the generator sets right before
    // sending: POST-to-receipt, an upper bound of commit-to-receipt.
    report.push_latency("delivery_", &delivery);
    report.push_mb("server_peak_rss_mb", paced.peak_rss_mb);
    report.push("errors", errors);
    report.push("offered_events_per_sec", OFFERED_RATE);
    report.push("acknowledged_events", paced_run.load.acknowledged_events);
    report.push("expected_deliveries", expected);
    report.push("events_delivered", seen.delivered);
    report.push("lagged", seen.lagged);
    report.push("disconnected", seen.disconnected);
    report.push("out_of_order", seen.out_of_order);
    report.push("misrouted", seen.misrouted);
    report.push("dropped_groups", paced_run.dropped_groups);
    report.push("rejected_429", paced_run.load.rejected_429);
    report.push_ms(
        "ingest_p99_ms",
        LatencySummary::from_micros(&mut paced_run.load.latencies_us).p99_ms,
    );
    push_cores(&mut report, "", paced_run.cpu);
    // The same paced load on a server without subscribers: what they cost ingestion at
    // the scenario's rate.
    let paced_alone_run = &mut paced_alone.value;
    report.push_rate(
        "paced_alone_events_per_sec",
        paced_alone_run.load.events_per_sec(),
    );
    report.push_ratio(
        "paced_with_to_alone_ratio",
        paced_run.load.events_per_sec(),
        paced_alone_run.load.events_per_sec(),
    );
    report.push_ms(
        "paced_alone_ingest_p99_ms",
        LatencySummary::from_micros(&mut paced_alone_run.load.latencies_us).p99_ms,
    );
    push_cores(&mut report, "paced_alone_", paced_alone_run.cpu);
    report.push("subscribers", SUBSCRIBERS as u64);
    report.push("unfiltered_subscribers", UNFILTERED_SUBSCRIBERS as u64);
    report.push("event_types", STREAM_TYPES);
    report.push("batch_size", STREAM_BATCH as u64);

    let alone_rate = alone.value.load.events_per_sec();
    let with_run = &mut with_subscribers.value;
    let with_rate = with_run.load.events_per_sec();
    report.push_rate("alone_events_per_sec", alone_rate);
    report.push_rate("with_subscribers_events_per_sec", with_rate);
    report.push_ratio("with_to_alone_ratio", with_rate, alone_rate);
    let with_expected = with_run.expected_deliveries();
    let with_seen = with_run.seen.get_or_insert_with(Default::default);
    report.push("with_subscribers_expected_deliveries", with_expected);
    report.push("with_subscribers_delivered", with_seen.delivered);
    report.push("with_subscribers_lagged", with_seen.lagged);
    report.push("with_subscribers_dropped_groups", with_run.dropped_groups);
    report.push_ms(
        "with_subscribers_delivery_p99_ms",
        LatencySummary::from_micros(&mut with_seen.delivery_us).p99_ms,
    );
    push_cores(&mut report, "alone_", alone.value.cpu);
    push_cores(&mut report, "with_subscribers_", with_run.cpu);
    report.push("alone_rejected_429", alone.value.load.rejected_429);
    report.push("with_subscribers_rejected_429", with_run.load.rejected_429);
    report.push("capacity_connections", CAPACITY_CONNECTIONS as u64);
    report.push_seconds("capacity_duration_s", capacity_duration);
    report.push_mb("alone_peak_rss_mb", alone.peak_rss_mb);
    report.push_mb("with_subscribers_peak_rss_mb", with_subscribers.peak_rss_mb);
    report.push_seconds("duration_s", duration);
    Ok(report)
}

/// The server's counter of commit groups dropped before its stream dispatcher.
const DROPPED_GROUPS_COUNTER: &str = "eventide_stream_dropped_groups_total";

/// The value of the unlabelled Prometheus counter `name` at `/metrics/prometheus`.
async fn fetch_counter(addr: SocketAddr, name: &str) -> Result<u64> {
    let path = "/metrics/prometheus";
    let body = fetch_body(addr, path).await?;
    let text = String::from_utf8_lossy(&body);
    counter_value(&text, name).ok_or_else(|| anyhow!("GET {path}: no sample of {name}"))
}

/// The value of the sample `name` (without labels) in Prometheus text.
fn counter_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        Some(value as u64)
    })
}

/// `<prefix>server_cores` and `<prefix>bench_cores`, to two decimals.
fn push_cores(report: &mut Report, prefix: &str, cpu: CpuUse) {
    let two_decimals = |cores: Option<f64>| cores.map(|cores| (cores * 100.0).round() / 100.0);
    report.push(
        &format!("{prefix}server_cores"),
        two_decimals(cpu.server_cores),
    );
    report.push(
        &format!("{prefix}bench_cores"),
        two_decimals(cpu.bench_cores),
    );
}

/// One of the scenario's runs.
struct Phase {
    label: &'static str,
    /// Connect the 1,010 subscribers before the load and read until it is delivered.
    subscribers: bool,
    connections: usize,
    /// Paced at this many requests per second; unpaced (back to back) when `None`.
    requests_per_sec: Option<f64>,
    templates: Vec<RequestTemplate>,
    shape: EventShape,
    duration: Duration,
}

/// What one run measured.
struct PhaseRun {
    load: LoadOutcome,
    /// What the subscribers saw, for runs with subscribers.
    seen: Option<SubscriberOutcome>,
    /// CPU used while the load ran.
    cpu: CpuUse,
    /// The server's count of commit groups its stream dispatcher never got (its queue was
    /// full), each of which lags out every subscriber; `None` if it could not be read.
    dropped_groups: Option<u64>,
}

/// Cores used (CPU seconds per second) by the server and by the bench itself (load
/// generator and subscribers) over an interval; `None` where /proc could not be read.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server_cores: Option<f64>,
    bench_cores: Option<f64>,
}

/// CPU seconds of the server and of this process at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    server: Option<f64>,
    bench: Option<f64>,
}

impl CpuSample {
    fn take(server_pid: u32) -> Self {
        CpuSample {
            at: Instant::now(),
            server: cpu_seconds(server_pid).ok(),
            bench: cpu_seconds(std::process::id()).ok(),
        }
    }

    fn until(&self, later: &CpuSample) -> CpuUse {
        let seconds = (later.at - self.at).as_secs_f64().max(1e-9);
        let cores = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / seconds);
        CpuUse {
            server_cores: cores(self.server, later.server),
            bench_cores: cores(self.bench, later.bench),
        }
    }
}

impl PhaseRun {
    /// Deliveries owed for the acknowledged events (0 without subscribers).
    fn expected_deliveries(&self) -> u64 {
        if self.seen.is_some() {
            self.load.acknowledged_events * DELIVERIES_PER_EVENT
        } else {
            0
        }
    }

    fn errors(&self) -> u64 {
        self.load.errors + self.seen.as_ref().map_or(0, |seen| seen.tally.errors)
    }
}

impl Phase {
    async fn run(
        self,
        context: &BenchContext,
        command: &ServerCommand,
    ) -> Result<Measured<PhaseRun>> {
        let label = self.label;
        let measured = context
            .with_server(label, command, false, |server| self.run_on(server))
            .await?;
        let run = &measured.value;
        let cores = |cores: Option<f64>| cores.map_or("?".to_owned(), |c| format!("{c:.2}"));
        let mut line = format!(
            "{label}: {:.0} events/s ({} acknowledged, {} x 429, {} errors; cores used: server {}, bench {})",
            run.load.events_per_sec(),
            run.load.acknowledged_events,
            run.load.rejected_429,
            run.load.errors,
            cores(run.cpu.server_cores),
            cores(run.cpu.bench_cores),
        );
        if let Some(seen) = &run.seen {
            line.push_str(&format!(
                "; {} of {} deliveries, {} lagged, {} disconnected, {} dropped commit groups",
                seen.delivered,
                run.expected_deliveries(),
                seen.lagged,
                seen.disconnected,
                run.dropped_groups
                    .map_or("?".to_owned(), |count| count.to_string())
            ));
        }
        progress(&line);
        warn_errors(label, &run.load);
        if let Some(seen) = &run.seen {
            warn_errors(&format!("{label} subscribers"), &seen.tally);
        }
        Ok(measured)
    }

    async fn run_on(self, server: ServerHandle) -> Result<PhaseRun> {
        let label = self.label;
        let addr = server.addr;
        let subscribers = if self.subscribers {
            Some(Subscribers::connect(addr, label, self.shape).await?)
        } else {
            None
        };
        let start = Instant::now();
        let deadline = start + self.duration;
        let schedule = match self.requests_per_sec {
            Some(rate) => Schedule::Paced {
                pace: Pace::new(start, rate),
                deadline,
            },
            None => Schedule::UntilDeadline { deadline },
        };
        let offered = match self.requests_per_sec {
            Some(rate) => format!("{:.0} events/s", rate * STREAM_BATCH as f64),
            None => "unpaced".to_owned(),
        };
        progress(&format!(
            "{label}: ingesting {offered} in {STREAM_BATCH}-event batches from {} connections for {} s",
            self.connections,
            self.duration.as_secs()
        ));
        let cpu_before = CpuSample::take(server.pid);
        let load = run_post_load(PostLoad {
            addr,
            connections: self.connections,
            templates: self.templates,
            final_request: None,
            ids: Arc::new(IdSource::new(&mut Rng::from_clock(8))),
            schedule,
            probes: None,
        })
        .await;
        let cpu = cpu_before.until(&CpuSample::take(server.pid));
        let seen = match subscribers {
            Some(subscribers) => {
                let expected = load.acknowledged_events * DELIVERIES_PER_EVENT;
                subscribers.drain(label, expected).await;
                Some(subscribers.stop().await)
            }
            None => None,
        };
        let dropped_groups = match fetch_counter(addr, DROPPED_GROUPS_COUNTER).await {
            Ok(count) => Some(count),
            Err(error) => {
                progress(&format!(
                    "{label}: {DROPPED_GROUPS_COUNTER} not read: {error:#}"
                ));
                None
            }
        };
        Ok(PhaseRun {
            load,
            seen,
            cpu,
            dropped_groups,
        })
    }
}

/// The running subscriber tasks of one server.
struct Subscribers {
    tasks: Vec<JoinHandle<SubscriberOutcome>>,
    stop: watch::Sender<bool>,
    delivered: Arc<AtomicU64>,
}

impl Subscribers {
    /// Starts the 1,010 subscribers and waits until every one has its response head (so
    /// its subscription is registered); fails if any cannot subscribe.
    async fn connect(addr: SocketAddr, label: &str, shape: EventShape) -> Result<Subscribers> {
        let (ready_sender, mut ready) = mpsc::unbounded_channel();
        let (stop, stop_receiver) = watch::channel(false);
        let delivered = Arc::new(AtomicU64::new(0));
        let typed = (0..STREAM_TYPES).map(|index| {
            let name = shape.type_name(index);
            Subscription {
                path_and_query: format!("/stream?type={name}"),
                only_type: Some(name),
            }
        });
        let unfiltered = (0..UNFILTERED_SUBSCRIBERS).map(|_| Subscription {
            path_and_query: "/stream".to_owned(),
            only_type: None,
        });
        let started = Instant::now();
        let tasks = typed
            .chain(unfiltered)
            .map(|subscription| {
                let links = SubscriberLinks {
                    ready: ready_sender.clone(),
                    stop: stop_receiver.clone(),
                    delivered: Arc::clone(&delivered),
                };
                tokio::spawn(subscribe(addr, subscription, links))
            })
            .collect();
        drop(ready_sender);
        let subscribers = Subscribers {
            tasks,
            stop,
            delivered,
        };

        let give_up_at = started + CONNECT_LIMIT;
        let mut connected = 0;
        let mut failed = 0;
        let mut first_failure = None;
        while connected + failed < SUBSCRIBERS {
            match tokio::time::timeout_at(give_up_at.into(), ready.recv()).await {
                Ok(Some(Ok(()))) => connected += 1,
                Ok(Some(Err(why))) => {
                    failed += 1;
                    first_failure.get_or_insert(why);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if connected < SUBSCRIBERS {
            subscribers.abort();
            bail!(
                "{label}: only {connected} of {SUBSCRIBERS} subscribers got a stream within \
                 {CONNECT_LIMIT:?} ({failed} failed{})",
                first_failure.map_or(String::new(), |why| format!(", e.g. {why}"))
            );
        }
        progress(&format!(
            "{label}: {SUBSCRIBERS} subscribers connected in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(subscribers)
    }

    /// Waits until `expected` events have been delivered, or deliveries have stopped for
    /// [`DRAIN_IDLE`], at most [`DRAIN_LIMIT`].
    async fn drain(&self, label: &str, expected: u64) {
        let started = Instant::now();
        let mut last = self.delivered.load(Ordering::Relaxed);
        let mut last_change = started;
        while last < expected
            && started.elapsed() < DRAIN_LIMIT
            && last_change.elapsed() < DRAIN_IDLE
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.delivered.load(Ordering::Relaxed);
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
        if last < expected {
            progress(&format!(
                "{label}: {last} of {expected} deliveries after waiting {:.1} s; stopping",
                started.elapsed().as_secs_f64()
            ));
        }
    }

    /// Stops reading and collects what every subscriber saw.
    async fn stop(self) -> SubscriberOutcome {
        let _ = self.stop.send(true);
        let mut outcome = SubscriberOutcome::default();
        for task in self.tasks {
            match task.await {
                Ok(seen) => outcome.merge(seen),
                Err(error) => outcome
                    .tally
                    .record_error(format!("subscriber task failed: {error}")),
            }
        }
        outcome
    }

    fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `command` with `--max-subscribers 2000` first, unless `--server-arg` already sets it
/// (clap refuses an option given twice).
fn with_max_subscribers(command: &ServerCommand) -> ServerCommand {
    let mut command = command.clone();
    let already_set = command
        .extra_args
        .iter()
        .any(|arg| arg.starts_with("--max-subscribers"));
    if !already_set {
        command.extra_args.splice(
            0..0,
            ["--max-subscribers".to_owned(), MAX_SUBSCRIBERS.to_owned()],
        );
    }
    command
}

/// Raises this process's open-files limit to `needed` (the server it starts inherits it).
fn raise_open_files_limit(needed: u64) -> Result<()> {
    let reached = eventide::connections::raise_open_files_limit(needed)?;
    if reached < needed {
        bail!(
            "the stream scenario needs {needed} open files per process, the hard limit is \
             {reached}: raise it (ulimit -Hn)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# HELP eventide_stream_dropped_groups_total Groups dropped.\n\
                    # TYPE eventide_stream_dropped_groups_total counter\n\
                    eventide_stream_dropped_groups_total_other 9\n\
                    eventide_stream_dropped_groups_total 3\n";
        assert_eq!(counter_value(text, DROPPED_GROUPS_COUNTER), Some(3));
        assert_eq!(counter_value("", DROPPED_GROUPS_COUNTER), None);
    }

    #[test]
    fn max_subscribers_is_added_unless_given() {
        let plain = ServerCommand {
            binary: PathBuf::from("eventide"),
            extra_args: vec!["--read-wait".into(), "2s".into()],
        };
        assert_eq!(
            with_max_subscribers(&plain).extra_args,
            ["--max-subscribers", "2000", "--read-wait", "2s"]
        );
        let given = ServerCommand {
            binary: PathBuf::from("eventide"),
            extra_args: vec!["--max-subscribers=5000".into()],
        };
        assert_eq!(
            with_max_subscribers(&given).extra_args,
            ["--max-subscribers=5000"]
        );
    }
}
