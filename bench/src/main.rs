//! `eventide-bench`: starts the `eventide` server on a scratch data directory and loads it
//! over loopback HTTP, reporting throughput, latency and memory per scenario.
//!
//! Layout: [`gen`] pre-builds request bytes, [`load`] drives POST load over the test kit's
//! keep-alive client ([`testkit::http`]), [`subscriber`] reads `/stream` as many
//! subscribers at once, [`scenarios`], [`stream`], [`retention`] and [`backfill`] define
//! what is measured ([`cluster`]: a cluster of processes over Redis and PostgreSQL;
//! [`client`]: the command-line client's import and export; [`ceiling`]: the bare HTTP
//! and JSON rate every report is compared with; [`contention`]: a process burning a core),
//! [`server`] starts and stops the server, [`key`] holds the run's API key, [`stats`]
//! computes percentiles and [`report`] prints the figures.

mod backfill;
mod ceiling;
mod client;
mod cluster;
mod contention;
mod gen;
mod key;
mod load;
mod report;
mod retention;
mod scenarios;
mod server;
mod slow_clients;
mod stats;
mod stream;
mod subscriber;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use scenarios::{BenchContext, ClusterTargets};
use server::{ScratchDir, ServerCommand};

/// The server's allocator, so the load generator's own costs stay what they were when it
/// ran inside the `eventide` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Started by the sustained scenario to keep a core busy (`--contended`).
    if contention::burn_if_asked() {
        return ExitCode::SUCCESS;
    }
    // Started by a scenario as the ceiling's server, not to measure.
    if let Some(served) = ceiling::serve_if_asked() {
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = BenchArgs::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which scenario(s) to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Only the ceiling (measured first in every run): a bare axum handler that parses the
    /// JSON and answers 202, one event per POST from --connections connections.
    Ceiling,
    /// One event per POST from many connections (plus null-store and client-id runs).
    Single,
    /// 1,000-event POSTs from a few connections (plus a null-store run).
    Batch,
    /// 100-event batches with client ids, as SDKs send them: to `POST /events`, then the
    /// same events as Segment `track` calls to `/v1/batch`.
    Sdk,
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
    /// `eventide import` of an NDJSON.gz file of --client-events events into a fresh
    /// server (acknowledged and queryable rates), then `eventide export` of them all (rate,
    /// and the server's memory growth meanwhile).
    Client,
    /// Two API nodes and two workers over --redis-url and --postgres-url (a schema and keys
    /// of the run's own, removed afterwards): 1,000-event batches over both API nodes;
    /// acknowledged and end-to-end (stored in PostgreSQL) rates, consumer lag, CPU by part.
    Cluster,
    /// All of the above but cluster (which needs PostgreSQL and Redis), in that order.
    All,
}

/// Options of `eventide-bench`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "eventide-bench",
    version,
    about = "Start an Eventide server on a temporary directory and measure it over loopback HTTP"
)]
struct BenchArgs {
    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,

    /// Seconds per scenario run [default: single 10, batch 10, sustained 60, query 10,
    /// metrics 10, stream 20 (its unpaced runs: at most 10), cluster 20].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    duration: Option<u64>,

    /// Print one JSON object per scenario, one per line, instead of a table.
    #[arg(long)]
    json: bool,

    /// Connections for the single-event scenario.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    connections: u64,

    /// Events to preload before the query scenario.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    query_events: u64,

    /// Events to preload (timestamps over the last 24 hours) before the metrics scenario.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    metrics_events: u64,

    /// Most events per second offered in the sustained scenario, which adjusts its rate
    /// below this to what the indexer keeps up with. (At 200,000, the default until the
    /// server sustained more, the controller settled at the bound with a core partly idle.)
    #[arg(long, default_value_t = 400_000, value_parser = clap::value_parser!(u64).range(1..))]
    sustained_rate: u64,

    /// Events in the day the retention scenario drops.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    retention_events: u64,

    /// Events in the year of history the backfill scenario imports.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    backfill_events: u64,

    /// Events the client scenario imports and exports.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    client_events: u64,

    /// Server binary to start with `serve` [default: `eventide` beside this executable, as
    /// `cargo build` leaves it].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// Extra argument appended to the server's `serve` command line (repeatable).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// The sustained scenario also runs once more (server ids) with a second process
    /// keeping one core busy, and reports that run's figures as `contended_*`.
    #[arg(long)]
    contended: bool,

    /// Run with authentication on: each server gets an API key at start and every request
    /// carries it (to compare with the same run without).
    #[arg(long)]
    auth: bool,

    /// Keep the scratch directory (server data and logs) instead of deleting it.
    #[arg(long)]
    keep_data: bool,

    /// PostgreSQL for the cluster scenario (it creates a schema of its own and drops it).
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,

    /// Redis for the cluster scenario (keys under a prefix of its own, deleted afterwards).
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// Runs the selected scenarios in order, printing each report as soon as it is complete.
async fn run(args: BenchArgs) -> Result<()> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => default_server_bin()?,
    };
    if !binary.is_file() {
        bail!(
            "server binary {} does not exist (build it with `cargo build --release`, or pass --server-bin)",
            binary.display()
        );
    }
    if args.auth {
        key::use_api_key(format!("evk_{}", eventide::auth::keys::random_base62(22)?));
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
        client_events: args.client_events,
        contended: args.contended,
        cluster: ClusterTargets {
            postgres_url: args.postgres_url.clone(),
            redis_url: args.redis_url.clone(),
        },
    };
    let chosen = match args.scenario {
        Scenario::All => vec![
            Scenario::Single,
            Scenario::Batch,
            Scenario::Sdk,
            Scenario::Sustained,
            Scenario::Query,
            Scenario::Metrics,
            Scenario::Stream,
            Scenario::Retention,
            Scenario::SlowClients,
            Scenario::Backfill,
            Scenario::Client,
        ],
        one => vec![one],
    };
    let seconds = |default: u64| Duration::from_secs(args.duration.unwrap_or(default));
    // Measured once, first, in the same run as the figures it is compared with.
    let ceiling_duration = seconds(10);
    let ceiling_rate = ceiling::measure(&context, ceiling_duration).await?;
    for scenario in chosen {
        let mut report = match scenario {
            Scenario::Ceiling => {
                ceiling::report(ceiling_rate, context.connections, ceiling_duration)
            }
            Scenario::Single => scenarios::single(&context, seconds(10)).await?,
            Scenario::Batch => scenarios::batch(&context, seconds(10)).await?,
            Scenario::Sdk => scenarios::sdk(&context, seconds(10)).await?,
            Scenario::Sustained => scenarios::sustained(&context, seconds(60)).await?,
            Scenario::Query => scenarios::query(&context, seconds(10)).await?,
            Scenario::Metrics => scenarios::metrics(&context, seconds(10)).await?,
            Scenario::Stream => stream::stream(&context, seconds(20)).await?,
            Scenario::Retention => retention::retention(&context).await?,
            Scenario::SlowClients => slow_clients::slow_clients(&context, seconds(10)).await?,
            Scenario::Backfill => backfill::backfill(&context).await?,
            Scenario::Client => client::client(&context).await?,
            Scenario::Cluster => cluster::cluster(&context, seconds(20)).await?,
            Scenario::All => unreachable!("expanded above"),
        };
        if scenario != Scenario::Ceiling {
            ceiling::compare(&mut report, ceiling_rate);
        }
        report.print(args.json)?;
    }
    Ok(())
}

/// `eventide` in the directory of this executable: `cargo build` puts both binaries of the
/// workspace in the same target directory.
fn default_server_bin() -> Result<PathBuf> {
    let bench = std::env::current_exe().context("locating the current executable")?;
    Ok(bench.with_file_name(format!("eventide{}", std::env::consts::EXE_SUFFIX)))
}
