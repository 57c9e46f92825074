//! `eventide bench`: starts the server on a scratch data directory and loads it over
//! loopback HTTP, reporting throughput, latency and memory per scenario.
//!
//! Layout: [`gen`] pre-builds request bytes, [`http`] is the minimal keep-alive client,
//! [`sse`] the `/stream` subscriber, [`load`] drives POST load, [`scenarios`],
//! [`stream`], [`retention`] and [`backfill`] define what is measured ([`cluster`]: a cluster
//! of processes over Redis and PostgreSQL), [`server`] starts and stops the server,
//! [`stats`] computes percentiles.

mod backfill;
mod cluster;
mod gen;
mod http;
mod load;
mod retention;
mod scenarios;
mod server;
mod slow_clients;
mod sse;
mod stats;
mod stream;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use scenarios::BenchContext;
use server::{ScratchDir, ServerCommand};
use stats::LatencySummary;

/// Which scenario(s) to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One event per POST from many connections (plus null-store and client-id runs).
    Single,
    /// 1,000-event POSTs from a few connections (plus a null-store run).
    Batch,
    /// Batches at the highest rate the indexer keeps up with (at most --sustained-rate),
    /// with visibility-lag probes (plus a client-id run).
    Sustained,
    /// Preload --query-events events, then a mix of type, cursor and user queries.
    Query,
    /// Preload --metrics-events events with timestamps spread over the last 24 hours, then
    /// a mix of /metrics (60 s, 1 h, 24 h windows), /metrics/timeseries (per minute; per
    /// hour by service) and /metrics/summary.
    Metrics,
    /// 1,010 /stream subscribers (one per type of 1,000, plus 10 unfiltered) while 20,000
    /// events/s are ingested: delivery latency and completeness; then unpaced ingest with
    /// and without those subscribers.
    Stream,
    /// Single events from --connections clients alone, then beside 2,000 slow sockets
    /// (trickling a head or a body a byte every 5 s, or silent) reopened as the server
    /// closes them: both rates, and how long the server let the slow ones live.
    SlowClients,
    /// A past day of --retention-events events expires while 20,000 events/s are ingested:
    /// how long dropping it takes and whether acknowledgements wait for it.
    Retention,
    /// With --retention 0: a year of history (--backfill-events events over 365 days, in
    /// time order) imported as fast as the server takes it, with queries and /metrics
    /// meanwhile; then one POST of 10,000 events on 10,000 different days and how long until
    /// all are queryable.
    Backfill,
    /// Two API nodes and two workers over --redis-url and --postgres-url (a schema and keys
    /// of the run's own, removed afterwards): 1,000-event batches over both API nodes;
    /// acknowledged and end-to-end (stored in PostgreSQL) rates, consumer lag, CPU by part.
    Cluster,
    /// All of the above but cluster (which needs PostgreSQL and Redis), in that order.
    All,
}

/// Options of `eventide bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,

    /// Seconds per scenario run [default: single 10, batch 10, sustained 60, query 10,
    /// metrics 10, stream 20 (its unpaced runs: at most 10), cluster 20].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Print one JSON object per scenario, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Connections for the single-event scenario.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub connections: u64,

    /// Events to preload before the query scenario.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub query_events: u64,

    /// Events to preload (timestamps over the last 24 hours) before the metrics scenario.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_events: u64,

    /// Most events per second offered in the sustained scenario, which adjusts its rate
    /// below this to what the indexer keeps up with.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sustained_rate: u64,

    /// Events in the day the retention scenario drops.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_events: u64,

    /// Events in the year of history the backfill scenario imports.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub backfill_events: u64,

    /// Server binary to start with `serve` [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Extra argument appended to the server's `serve` command line (repeatable).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Run with authentication on: each server gets an API key at start and every request
    /// carries it (to compare with the same run without).
    #[arg(long)]
    pub auth: bool,

    /// Keep the scratch directory (server data and logs) instead of deleting it.
    #[arg(long)]
    pub keep_data: bool,

    /// PostgreSQL for the cluster scenario (it creates a schema of its own and drops it).
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,

    /// Redis for the cluster scenario (keys under a prefix of its own, deleted afterwards).
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

/// Runs the selected scenarios in order, printing each report as soon as it is complete.
pub async fn run(args: BenchArgs) -> Result<()> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("locating the current executable")?,
    };
    if !binary.is_file() {
        bail!("server binary {} does not exist", binary.display());
    }
    if args.auth {
        http::use_api_key(format!("evk_{}", crate::auth::keys::random_base62(22)?));
    }
    let context = BenchContext {
        server: ServerCommand {
            binary,
            extra_args: args.server_args.clone(),
        },
        scratch: ScratchDir::create(args.keep_data)?,
        keep_data: args.keep_data,
        connections: args.connections as usize,
        query_events: args.query_events,
        metrics_events: args.metrics_events,
        sustained_rate: args.sustained_rate,
        retention_events: args.retention_events,
        backfill_events: args.backfill_events,
        cluster: cluster::ClusterTargets {
            postgres_url: args.postgres_url.clone(),
            redis_url: args.redis_url.clone(),
        },
    };
    let chosen = match args.scenario {
        Scenario::All => vec![
            Scenario::Single,
            Scenario::Batch,
            Scenario::Sustained,
            Scenario::Query,
            Scenario::Metrics,
            Scenario::Stream,
            Scenario::Retention,
            Scenario::SlowClients,
            Scenario::Backfill,
        ],
        one => vec![one],
    };
    for scenario in chosen {
        let seconds = |default: u64| Duration::from_secs(args.duration.unwrap_or(default));
        let report = match scenario {
            Scenario::Single => scenarios::single(&context, seconds(10)).await?,
            Scenario::Batch => scenarios::batch(&context, seconds(10)).await?,
            Scenario::Sustained => scenarios::sustained(&context, seconds(60)).await?,
            Scenario::Query => scenarios::query(&context, seconds(10)).await?,
            Scenario::Metrics => scenarios::metrics(&context, seconds(10)).await?,
            Scenario::Stream => stream::stream(&context, seconds(20)).await?,
            Scenario::Retention => retention::retention(&context).await?,
            Scenario::SlowClients => slow_clients::slow_clients(&context, seconds(10)).await?,
            Scenario::Backfill => backfill::backfill(&context).await?,
            Scenario::Cluster => cluster::cluster(&context, seconds(20)).await?,
            Scenario::All => unreachable!("expanded above"),
        };
        report.print(args.json)?;
    }
    Ok(())
}

/// One scenario's figures, in the order they were pushed (serde_json maps would sort
/// them, and `scenario` and `events_per_sec` should come first).
#[derive(Debug, Clone)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    fn new(scenario: &str) -> Self {
        Report {
            fields: vec![("scenario".to_owned(), Value::from(scenario))],
        }
    }

    fn push(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((name.to_owned(), value.into()));
    }

    /// A rate, to one decimal.
    fn push_rate(&mut self, name: &str, per_second: f64) {
        self.push(name, round(per_second, 1));
    }

    /// A duration in milliseconds, to the microsecond; `null` when nothing was measured.
    fn push_ms(&mut self, name: &str, ms: Option<f64>) {
        self.push(name, ms.map(|ms| round(ms, 3)));
    }

    fn push_mb(&mut self, name: &str, mb: f64) {
        self.push(name, round(mb, 1));
    }

    fn push_seconds(&mut self, name: &str, elapsed: Duration) {
        self.push(name, round(elapsed.as_secs_f64(), 2));
    }

    /// `numerator / denominator` to three decimals, `null` when undefined.
    fn push_ratio(&mut self, name: &str, numerator: f64, denominator: f64) {
        let ratio = (denominator > 0.0).then(|| round(numerator / denominator, 3));
        self.push(name, ratio);
    }

    /// `<prefix>p50_ms`, `<prefix>p99_ms` and `<prefix>max_ms`.
    fn push_latency(&mut self, prefix: &str, summary: &LatencySummary) {
        self.push_ms(&format!("{prefix}p50_ms"), summary.p50_ms);
        self.push_ms(&format!("{prefix}p99_ms"), summary.p99_ms);
        self.push_ms(&format!("{prefix}max_ms"), summary.max_ms);
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            let width = self
                .fields
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0);
            for (index, (name, value)) in self.fields.iter().enumerate() {
                let shown = match value {
                    Value::Null => "-".to_owned(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                // The first field names the scenario and heads its block.
                if index == 0 {
                    println!("== {shown} ==");
                } else {
                    println!("  {name:<width$}  {shown}");
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (name, value) in &self.fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Rounds to `decimals` places so reports do not show float noise.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keeps_field_order_and_writes_null_for_missing_figures() {
        let mut report = Report::new("single");
        report.push_rate("events_per_sec", 1234.56);
        report.push_ms("p99_ms", None);
        report.push_ratio("durable_to_null_ratio", 1.0, 3.0);
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"scenario":"single","events_per_sec":1234.6,"p99_ms":null,"durable_to_null_ratio":0.333}"#
        );
    }
}
