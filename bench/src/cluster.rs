//! The cluster scenario: two API nodes and two workers of this binary on this machine, over
//! the Redis at `--redis-url` and the PostgreSQL at `--postgres-url` (a schema and a key
//! prefix of the run's own, removed afterwards). Batched load spread over both API nodes for
//! the duration; it reports how fast events are acknowledged (`202`: in the Redis stream),
//! how fast they become visible in PostgreSQL (the stored count over time, until everything
//! acknowledged is stored), the consumer lag (the queue's backlog, sampled every 500 ms), and
//! where the CPU went (each process kind, Redis, the PostgreSQL backends, the load generator
//! and everything else on the machine), with the PostgreSQL backends' wait events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use eventide::queue::redis::{QueueKeys, RedisStream};
use tokio::sync::watch;
use tokio_postgres::NoTls;

use super::gen::{ClientIds, IdSource, RequestTemplate, Rng};
use super::load::{rate, run_post_load, LoadOutcome, Pace, PostLoad, Schedule};
use super::report::Report;
use super::scenarios::{progress, templates, warn_errors, BenchContext, BATCH_TEMPLATES};
use super::server::{cpu_seconds, RunningServer, ServerCommand};
use super::stats::{micros, percentile, LatencySummary};

const BATCH_SIZE: usize = 1000;
/// Load connections to each API node.
const CONNECTIONS_PER_NODE: usize = 2;
const API_NODES: usize = 2;
const WORKERS: usize = 2;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long the workers may take to store what was acknowledged once the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// API nodes answer 429 beyond this backlog: enough for ~10 s of storing at the target rate,
/// so the load runs closed-loop (acknowledging no faster than the workers keep up, give or
/// take that much) instead of piling up hundreds of megabytes in Redis.
const MAX_QUEUE_BACKLOG: u64 = 200_000;
/// The second load's rate (events/s over all API nodes): the target end-to-end rate, to see
/// the lag at a rate the cluster sustains rather than at the backlog bound.
const PACED_RATE: f64 = 20_000.0;

/// What one load phase measured.
struct Phase {
    load: LoadOutcome,
    load_elapsed: Duration,
    /// Events stored before the phase (the store's count).
    stored_before: u64,
    /// Of the phase's events, how many were stored when the load stopped, and in the end.
    stored_at_load_end: u64,
    stored: u64,
    /// From the end of the load until everything acknowledged was stored.
    drain: Duration,
    /// From the start of the load until everything acknowledged was stored.
    end_to_end: Duration,
    samples: Vec<Sample>,
    waits: BTreeMap<String, u64>,
    cpu_before: Cpu,
    cpu_after: Cpu,
}

impl Phase {
    /// The backlog during the load (p50, max), the drain time and the visibility lag.
    fn push_lag(&self, report: &mut Report, prefix: &str) {
        let mut backlogs: Vec<u32> = self
            .samples
            .iter()
            .filter(|sample| sample.at <= self.load_elapsed)
            .map(|sample| u32::try_from(sample.backlog).unwrap_or(u32::MAX))
            .collect();
        backlogs.sort_unstable();
        report.push(
            &format!("{prefix}backlog_p50_events"),
            percentile(&backlogs, 50.0),
        );
        report.push(
            &format!("{prefix}backlog_max_events"),
            backlogs.last().copied(),
        );
        report.push_seconds(&format!("{prefix}drain_after_load_s"), self.drain);
        let mut lags = visibility_lags(&self.samples, self.stored_before, self.load_elapsed);
        report.push_latency(
            &format!("{prefix}visibility_lag_"),
            &LatencySummary::from_micros(&mut lags),
        );
    }
}

/// One sample of the run: when, events stored in PostgreSQL, entries in the queue not yet
/// acknowledged by the workers.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    stored: u64,
    backlog: u64,
}

pub async fn cluster(context: &BenchContext, duration: Duration) -> Result<Report> {
    let targets = &context.cluster;
    let unique = format!(
        "{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() % 1_000_000_000_000)
    );
    let schema = format!("bench_cluster_{unique}");
    let prefix = format!("bench-cluster-{unique}");
    let application = format!("eventide-bench-{unique}");
    let (pg, connection) = tokio_postgres::connect(&targets.postgres_url, NoTls)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {} (--postgres-url)",
                eventide::config::redact_url(&targets.postgres_url)
            )
        })?;
    tokio::spawn(connection);
    let queue = RedisStream::connect(&targets.redis_url, QueueKeys::with_prefix(&prefix))
        .await
        .context("connecting to Redis (--redis-url)")?;
    let run = Run {
        context,
        pg: &pg,
        queue: &queue,
        schema: &schema,
        prefix: &prefix,
        application: &application,
    };
    let result = run.measure(duration).await;
    // Removed whatever happened: the schema (with every event) and the keys. Before any
    // output, which panics when stderr is a closed pipe.
    if let Err(error) = pg
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        ))
        .await
    {
        eprintln!("[bench] could not drop the schema {schema}: {error}");
    }
    if let Err(error) = queue.delete_all().await {
        eprintln!("[bench] could not delete the keys {prefix}:*: {error}");
    }
    progress("cluster: removed the schema and the Redis keys");
    result
}

struct Run<'a> {
    context: &'a BenchContext,
    pg: &'a tokio_postgres::Client,
    queue: &'a RedisStream,
    schema: &'a str,
    prefix: &'a str,
    application: &'a str,
}

impl Run<'_> {
    /// `--store` for the processes: the URL with the run's `application_name`, by which its
    /// backends are found in `pg_stat_activity`.
    fn store_url(&self) -> String {
        let url = &self.context.cluster.postgres_url;
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={}", self.application)
    }

    fn command(&self, role: &str) -> ServerCommand {
        let mut command = self.context.server.clone();
        let store_url = self.store_url();
        command.extra_args.extend(
            [
                "--role",
                role,
                "--store",
                &store_url,
                "--postgres-schema",
                self.schema,
                "--queue",
                &self.context.cluster.redis_url,
                "--queue-prefix",
                self.prefix,
                "--max-queue-backlog",
                &MAX_QUEUE_BACKLOG.to_string(),
            ]
            .map(str::to_owned),
        );
        command
    }

    async fn start(&self, role: &str, index: usize) -> Result<RunningServer> {
        let label = format!("cluster-{role}-{index}");
        let scratch = self.context.scratch.path();
        RunningServer::start(
            &self.command(role),
            &scratch.join(&label),
            &scratch.join(format!("{label}.log")),
            false,
        )
        .await
        .with_context(|| format!("starting {label}"))
    }

    async fn measure(&self, duration: Duration) -> Result<Report> {
        // The first process creates the schema; the others find it.
        let mut apis = vec![self.start("api", 0).await?];
        for index in 1..API_NODES {
            apis.push(self.start("api", index).await?);
        }
        let mut workers = Vec::new();
        for index in 0..WORKERS {
            workers.push(self.start("worker", index).await?);
        }
        progress(&format!(
            "cluster: {API_NODES} API nodes ({}) and {WORKERS} workers up; loading for {} s",
            apis.iter()
                .map(|api| api.addr().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            duration.as_secs()
        ));
        let result = self.load_and_drain(&apis, &workers, duration).await;
        let api_rss = peak_rss(&apis);
        let worker_rss = peak_rss(&workers);
        for server in apis.into_iter().chain(workers) {
            server.stop().await?;
        }
        let mut report = result?;
        report.push_mb("api_peak_rss_mb", api_rss?);
        report.push_mb("worker_peak_rss_mb", worker_rss?);
        Ok(report)
    }

    async fn load_and_drain(
        &self,
        apis: &[RunningServer],
        workers: &[RunningServer],
        duration: Duration,
    ) -> Result<Report> {
        let mut rng = Rng::from_clock(50);
        let batches = templates(BATCH_TEMPLATES, BATCH_SIZE, ClientIds::None, &mut rng);
        let mut unpaced = self
            .phase("cluster", apis, workers, &batches, duration, None)
            .await?;
        let paced = self
            .phase(
                "cluster-paced",
                apis,
                workers,
                &batches,
                duration,
                Some(PACED_RATE),
            )
            .await?;

        let mut report = Report::new("cluster");
        let load = &mut unpaced.load;
        report.push_rate("events_per_sec", load.events_per_sec());
        report.push_rate(
            "end_to_end_events_per_sec",
            rate(unpaced.stored, unpaced.end_to_end),
        );
        report.push_rate(
            "stored_during_load_per_sec",
            rate(unpaced.stored_at_load_end, unpaced.load_elapsed),
        );
        let mut latencies = std::mem::take(&mut load.latencies_us);
        report.push_latency("", &LatencySummary::from_micros(&mut latencies));
        report.push("acknowledged_events", load.acknowledged_events);
        report.push("rejected_429", load.rejected_429);
        report.push("unavailable_503", load.unavailable_503);
        report.push("errors", load.errors + paced.load.errors);
        report.push("stored_events", unpaced.stored);
        unpaced.push_lag(&mut report, "");
        let seconds = unpaced.load_elapsed.as_secs_f64();
        let (before, after) = (unpaced.cpu_before, unpaced.cpu_after);
        for (name, before, after) in [
            ("api_cores", before.api, after.api),
            ("worker_cores", before.workers, after.workers),
            ("redis_cores", before.redis, after.redis),
            ("postgres_cores", before.postgres, after.postgres),
            ("load_generator_cores", before.bench, after.bench),
        ] {
            report.push(name, super::report::round((after - before) / seconds, 2));
        }
        let ours = after.ours() - before.ours();
        let busy = after.machine_busy - before.machine_busy;
        report.push(
            "other_processes_cores",
            super::report::round((busy - ours).max(0.0) / seconds, 2),
        );
        report.push("machine_cores", after.machine_cores);
        report.push("postgres_waits", describe_waits(&unpaced.waits));

        report.push_rate("paced_offered_per_sec", PACED_RATE);
        report.push_rate("paced_events_per_sec", paced.load.events_per_sec());
        report.push_rate(
            "paced_end_to_end_events_per_sec",
            rate(paced.stored, paced.end_to_end),
        );
        paced.push_lag(&mut report, "paced_");
        report.push("paced_rejected_429", paced.load.rejected_429);
        report.push("paced_unavailable_503", paced.load.unavailable_503);
        let seconds = paced.load_elapsed.as_secs_f64();
        report.push(
            "paced_postgres_cores",
            super::report::round(
                (paced.cpu_after.postgres - paced.cpu_before.postgres) / seconds,
                2,
            ),
        );
        report.push(
            "paced_machine_busy_cores",
            super::report::round(
                (paced.cpu_after.machine_busy - paced.cpu_before.machine_busy) / seconds,
                2,
            ),
        );

        report.push("batch_size", BATCH_SIZE as u64);
        report.push("connections", (CONNECTIONS_PER_NODE * apis.len()) as u64);
        report.push("api_nodes", apis.len() as u64);
        report.push("workers", workers.len() as u64);
        report.push("max_queue_backlog", MAX_QUEUE_BACKLOG);
        report.push_seconds("duration_s", duration);
        Ok(report)
    }

    /// One load over every API node for `duration`, back to back (`rate` `None`) or at
    /// `rate` events/s in all, then the wait until everything acknowledged is stored.
    async fn phase(
        &self,
        label: &str,
        apis: &[RunningServer],
        workers: &[RunningServer],
        batches: &[RequestTemplate],
        duration: Duration,
        rate: Option<f64>,
    ) -> Result<Phase> {
        let stored_before = self.stored().await?;
        let cpu_before = self.cpu(apis, workers).await?;
        let started = Instant::now();
        let (stop_sampling, sampling_stop) = watch::channel(false);
        let sampler = {
            let (pg, queue) = (self.sampling_connection().await?, self.queue.clone());
            let (schema, application) = (self.schema.to_owned(), self.application.to_owned());
            tokio::spawn(sample(
                pg,
                queue,
                schema,
                application,
                started,
                sampling_stop,
            ))
        };

        let deadline = started + duration;
        let loads = apis.iter().map(|api| {
            let schedule = match rate {
                None => Schedule::UntilDeadline { deadline },
                Some(rate) => Schedule::Paced {
                    pace: Pace::new(started, rate / apis.len() as f64 / BATCH_SIZE as f64),
                    deadline,
                },
            };
            run_post_load(PostLoad {
                addr: api.addr(),
                connections: CONNECTIONS_PER_NODE,
                templates: batches.to_vec(),
                final_request: None,
                ids: Arc::new(IdSource::new(&mut Rng::from_clock(51))),
                schedule,
                probes: None,
            })
        });
        let mut load = LoadOutcome::default();
        for outcome in futures_util::future::join_all(loads).await {
            load.merge(outcome);
        }
        let load_elapsed = started.elapsed();
        load.elapsed = load_elapsed;
        let cpu_after = self.cpu(apis, workers).await?;
        let stored_at_load_end = self.stored().await? - stored_before;
        progress(&format!(
            "{label}: {} events acknowledged in {:.1} s ({:.0}/s), {} stored by then; draining",
            load.acknowledged_events,
            load_elapsed.as_secs_f64(),
            load.events_per_sec(),
            stored_at_load_end
        ));
        warn_errors(label, &load);

        // Until everything acknowledged is stored and the queue is empty.
        let drain_started = Instant::now();
        let mut last_progress = drain_started;
        let stored = loop {
            let stored = self.stored().await? - stored_before;
            let backlog = self.queue.backlog().await?;
            if stored >= load.acknowledged_events && backlog == 0 {
                break stored;
            }
            if drain_started.elapsed() > DRAIN_LIMIT {
                bail!(
                    "only {stored} of {} acknowledged events stored {DRAIN_LIMIT:?} after the load",
                    load.acknowledged_events
                );
            }
            if last_progress.elapsed() >= Duration::from_secs(5) {
                progress(&format!(
                    "{label}: {stored} stored, backlog {backlog}; draining"
                ));
                last_progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let drain = drain_started.elapsed();
        let end_to_end = started.elapsed();
        let _ = stop_sampling.send(true);
        let (samples, waits) = sampler.await.context("the sampler")??;
        if stored != load.acknowledged_events {
            // More: an event stored twice (must not happen; the bench sends no retries).
            eprintln!(
                "[bench] WARNING: {label}: {stored} events stored for {} acknowledged",
                load.acknowledged_events
            );
        }
        progress(&format!(
            "{label}: all {stored} stored {:.1} s after the load",
            drain.as_secs_f64()
        ));
        Ok(Phase {
            load,
            load_elapsed,
            stored_before,
            stored_at_load_end,
            stored,
            drain,
            end_to_end,
            samples,
            waits,
            cpu_before,
            cpu_after,
        })
    }

    /// Events stored, as the store counts them (its progress row: no scan).
    async fn stored(&self) -> Result<u64> {
        stored_count(self.pg, self.schema).await
    }

    async fn sampling_connection(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.context.cluster.postgres_url, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// CPU seconds used so far by each part of the run, and by the whole machine.
    async fn cpu(&self, apis: &[RunningServer], workers: &[RunningServer]) -> Result<Cpu> {
        let sum = |servers: &[RunningServer]| -> Result<f64> {
            servers.iter().map(|server| cpu_seconds(server.pid())).sum()
        };
        let backends = self
            .pg
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&self.application],
            )
            .await?;
        // Backends of other machines cannot be read: they count as nothing.
        let postgres = backends
            .iter()
            .filter_map(|row| cpu_seconds(row.get::<_, i32>(0) as u32).ok())
            .sum();
        let (machine_busy, machine_cores) = machine_cpu()?;
        Ok(Cpu {
            api: sum(apis)?,
            workers: sum(workers)?,
            redis: redis_cpu(&self.context.cluster.redis_url)
                .await
                .unwrap_or(0.0),
            postgres,
            bench: cpu_seconds(std::process::id())?,
            machine_busy,
            machine_cores,
        })
    }
}

async fn stored_count(pg: &tokio_postgres::Client, schema: &str) -> Result<u64> {
    let row = pg
        .query_one(
            &format!("SELECT value FROM \"{schema}\".progress WHERE name = 'event_count'"),
            &[],
        )
        .await
        .context("reading the stored count")?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn peak_rss(servers: &[RunningServer]) -> Result<f64> {
    servers
        .iter()
        .map(RunningServer::peak_rss_mb)
        .try_fold(0.0, |max, rss| Ok(f64::max(max, rss?)))
}

/// CPU seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    api: f64,
    workers: f64,
    redis: f64,
    postgres: f64,
    bench: f64,
    /// Every process of the machine (from /proc/stat).
    machine_busy: f64,
    machine_cores: u64,
}

impl Cpu {
    fn ours(&self) -> f64 {
        self.api + self.workers + self.redis + self.postgres + self.bench
    }
}

/// Busy CPU seconds of the whole machine since boot, and its number of cores.
fn machine_cpu() -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let total = stat
        .lines()
        .next()
        .filter(|line| line.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let ticks: Vec<f64> = total
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .map(|(_, ticks)| ticks)
        .sum();
    let cores = stat
        .lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .count() as u64;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok((busy / per_second as f64, cores))
}

/// CPU seconds Redis has used (`INFO cpu`), wherever it runs.
async fn redis_cpu(url: &str) -> Result<f64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut connection)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum())
}

/// Samples the stored count and the backlog every [`SAMPLE_EVERY`] until `stop`, and the
/// run's PostgreSQL backends' wait events (`state/wait_event_type:wait_event`) with them.
async fn sample(
    pg: tokio_postgres::Client,
    queue: RedisStream,
    schema: String,
    application: String,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Result<(Vec<Sample>, BTreeMap<String, u64>)> {
    let mut samples = Vec::new();
    let mut waits = BTreeMap::new();
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        let at = started.elapsed();
        let (stored, backlog) = tokio::join!(stored_count(&pg, &schema), queue.backlog());
        samples.push(Sample {
            at,
            stored: stored?,
            backlog: backlog?,
        });
        let rows = pg
            .query(
                "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU')
                 FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .await?;
        for row in rows {
            let state: Option<String> = row.get(0);
            let wait: String = row.get(1);
            let key = match state.as_deref() {
                Some("active") => format!("active/{wait}"),
                Some("idle in transaction") => "idle in transaction".to_owned(),
                // Idle: waiting for its client (a worker reading Redis, an API node's reader).
                _ => continue,
            };
            *waits.entry(key).or_insert(0) += 1;
        }
    }
    Ok((samples, waits))
}

/// For each sample during the load: how long until the stored count reached what was in the
/// pipeline then (stored + backlog, i.e. everything acknowledged by then), in microseconds.
/// Between two samples the stored count is taken to grow evenly.
fn visibility_lags(samples: &[Sample], stored_before: u64, load_elapsed: Duration) -> Vec<u32> {
    let mut lags = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        if sample.at > load_elapsed {
            break;
        }
        let target = sample.stored + sample.backlog;
        if target <= stored_before {
            continue;
        }
        if sample.backlog == 0 {
            lags.push(0);
            continue;
        }
        let later = &samples[index..];
        let Some(reached) = later.iter().position(|later| later.stored >= target) else {
            continue;
        };
        let (before, after) = (&later[reached - 1], &later[reached]);
        let share = (target - before.stored) as f64 / (after.stored - before.stored) as f64;
        let at = before.at + (after.at - before.at).mul_f64(share);
        lags.push(micros(at - sample.at));
    }
    lags
}

/// `active/CPU 45%, active/LWLock:WALWrite 20%, ...`: the share of sampled busy backends in
/// each state, the largest first.
fn describe_waits(waits: &BTreeMap<String, u64>) -> String {
    let total: u64 = waits.values().sum();
    if total == 0 {
        return "no busy backend sampled".to_owned();
    }
    let mut shares: Vec<(&String, &u64)> = waits.iter().collect();
    shares.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    shares
        .iter()
        .take(6)
        .map(|(name, count)| format!("{name} {:.0}%", **count as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_lag_is_the_time_until_the_stored_count_catches_up() {
        let at = |ms| Duration::from_millis(ms);
        // (at ms, stored, backlog)
        let samples_of = |rows: &[(u64, u64, u64)]| -> Vec<Sample> {
            rows.iter()
                .map(|&(ms, stored, backlog)| Sample {
                    at: at(ms),
                    stored,
                    backlog,
                })
                .collect()
        };
        let samples = samples_of(&[
            (0, 0, 0),
            (500, 0, 1000),
            (1000, 500, 1500),
            (1500, 1000, 1000),
            (2000, 2000, 0),
        ]);
        // At 500 ms, 1,000 were in the pipeline: stored by 1,500 ms. At 1,000 ms, 2,000: by
        // 2,000 ms. At 1,500 ms also 2,000: by 2,000 ms. Nothing pending at 0.
        assert_eq!(
            visibility_lags(&samples, 0, at(1500)),
            vec![1_000_000, 1_000_000, 500_000]
        );
        // Between samples, the count is taken to grow evenly: 1,250 half-way from 500 ms to
        // 1,500 ms.
        let samples = samples_of(&[(0, 1000, 250), (500, 1000, 0), (1500, 1500, 0)]);
        assert_eq!(
            visibility_lags(&samples, 0, at(1500)),
            vec![1_000_000, 0, 0]
        );
    }

    #[test]
    fn waits_are_shares_of_the_busy_samples() {
        let waits = BTreeMap::from([
            ("active/CPU".to_owned(), 3),
            ("active/LWLock:WALWrite".to_owned(), 1),
        ]);
        assert_eq!(
            describe_waits(&waits),
            "active/CPU 75%, active/LWLock:WALWrite 25%"
        );
    }
}
