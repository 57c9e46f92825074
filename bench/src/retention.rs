//! The retention scenario: two past days of `--retention-events` events each (and a
//! boundary run at the start of the next day) are loaded with retention off; the server is
//! restarted with a retention that has both days expired and the boundary run expiring
//! over the next seconds, while a steady ingest load measures whether dropping and
//! trimming hold up acknowledgements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use eventide::store::{floor_to, DAY_MS};
use serde_json::Value;

use super::gen::{ClientIds, EventShape, IdSource, Rng};
use super::load::{run_post_load, Pace, PostLoad, Schedule};
use super::report::Report;
use super::scenarios::{
    fetch_body, preload, progress, templates, wait_until_indexed, warn_errors, BenchContext,
};
use super::server::RunningServer;
use super::stats::LatencySummary;

/// Whole days dropped at the restart.
const DAYS: i64 = 2;
/// Events at the start of the day after the expiring ones, trimmed row by row as the cutoff
/// sweeps over them.
const BOUNDARY_EVENTS: u64 = 50_000;
const BOUNDARY_SPREAD: Duration = Duration::from_secs(30);
/// Where the cutoff is in the boundary run when the server restarts.
const BOUNDARY_EXPIRED: Duration = Duration::from_secs(10);
/// The ingest load during the run: 100-event batches at 200 requests/s, long enough for
/// the cutoff to sweep the rest of the boundary run.
const LOAD_BATCH: usize = 100;
const LOAD_REQUESTS_PER_SEC: f64 = 200.0;
const LOAD_DURATION: Duration = Duration::from_secs(25);
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// One retention run as `/health/detailed` reported it.
#[derive(Debug, Clone, PartialEq)]
struct RunSeen {
    at: String,
    took_ms: f64,
    longest_step_ms: f64,
    events_deleted: u64,
    partitions_dropped: u64,
}

pub async fn retention(context: &BenchContext) -> Result<Report> {
    let label = "retention";
    let data_dir = context.scratch.path().join(label);
    // The expiring days end two days back, so nothing the run ingests is near them.
    let days_end = floor_to(epoch_ms(), DAY_MS) - 2 * DAY_MS;
    let per_day = context.retention_events;

    // Load with retention off, so the past days are accepted.
    let keep_all = context.server.with_args(&["--retention", "0"]);
    let log_path = context.scratch.path().join(format!("{label}-load.log"));
    let server = RunningServer::start(&keep_all, &data_dir, &log_path, false).await?;
    let mut day_events = 0;
    for day in (0..DAYS).rev() {
        let day_shape = EventShape {
            timestamp_spread_ms: DAY_MS as u64 - 1,
            in_order_over_events: per_day,
            anchor_ms: (days_end - day * DAY_MS - 1) as u64,
            ..EventShape::default()
        };
        day_events += preload(server.addr(), label, per_day, day_shape)
            .await?
            .load
            .acknowledged_events;
    }
    let boundary = EventShape {
        timestamp_spread_ms: BOUNDARY_SPREAD.as_millis() as u64,
        anchor_ms: (days_end + BOUNDARY_SPREAD.as_millis() as i64) as u64,
        ..EventShape::default()
    };
    preload(server.addr(), label, BOUNDARY_EVENTS, boundary).await?;
    wait_until_indexed(server.addr(), label, day_events + BOUNDARY_EVENTS).await?;
    server.stop().await?;

    // Restart with both days expired and the cutoff BOUNDARY_EXPIRED into the boundary run,
    // moving on with the clock; checked every second.
    let keep_ms = epoch_ms() - days_end - BOUNDARY_EXPIRED.as_millis() as i64;
    let expiring = context.server.with_args(&[
        "--retention",
        &format!("{keep_ms}ms"),
        "--retention-interval",
        "1s",
    ]);
    let log_path = context.scratch.path().join(format!("{label}.log"));
    let server = RunningServer::start(&expiring, &data_dir, &log_path, false).await?;
    let addr = server.addr();
    let deadline = Instant::now() + LOAD_DURATION;
    progress(&format!(
        "{label}: restarted with {DAYS} days expired; ingesting {} events/s for {} s",
        LOAD_REQUESTS_PER_SEC as usize * LOAD_BATCH,
        LOAD_DURATION.as_secs()
    ));
    let watcher = tokio::spawn(watch_runs(addr, deadline));
    let mut rng = Rng::from_clock(40);
    let load = run_post_load(PostLoad {
        addr,
        connections: 8,
        templates: templates(4, LOAD_BATCH, ClientIds::None, &mut rng),
        final_request: None,
        ids: Arc::new(IdSource::new(&mut rng)),
        schedule: Schedule::Paced {
            pace: Pace::new(Instant::now(), LOAD_REQUESTS_PER_SEC),
            deadline,
        },
        probes: None,
    })
    .await;
    let runs = watcher.await.context("health watcher")??;
    let peak_rss_mb = server.peak_rss_mb()?;
    server.stop().await?;
    if !context.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    warn_errors(label, &load);

    let drop_run = runs.iter().find(|run| run.partitions_dropped > 0);
    let deleted: u64 = runs.iter().map(|run| run.events_deleted).sum();
    let trim_runs: Vec<&RunSeen> = runs
        .iter()
        .filter(|run| run.partitions_dropped == 0 && run.events_deleted > 0)
        .collect();
    let longest_step = runs
        .iter()
        .map(|run| run.longest_step_ms)
        .fold(0.0, f64::max);
    progress(&format!(
        "{label}: {deleted} events deleted in {} runs; the first took {}",
        runs.len(),
        drop_run.map_or("(not seen)".to_owned(), |run| format!(
            "{:.0} ms",
            run.took_ms
        ))
    ));

    let mut latencies = load.latencies_us.clone();
    let ingest = LatencySummary::from_micros(&mut latencies);
    let mut report = Report::new("retention");
    report.push("expired_days", DAYS as u64);
    report.push("expired_day_events", day_events);
    report.push_ms("days_drop_ms", drop_run.map(|run| run.took_ms));
    report.push(
        "first_run_events",
        drop_run.map_or(0, |run| run.events_deleted),
    );
    report.push(
        "first_run_partitions",
        drop_run.map_or(0, |run| run.partitions_dropped),
    );
    report.push_ms("longest_step_ms", Some(longest_step));
    report.push("boundary_events", BOUNDARY_EVENTS);
    report.push("boundary_trim_runs", trim_runs.len() as u64);
    report.push("events_deleted", deleted);
    report.push_latency("ingest_", &ingest);
    report.push_rate("ingest_events_per_sec", load.events_per_sec());
    report.push("ingest_errors", load.errors);
    report.push("rejected_429", load.rejected_429);
    report.push_mb("server_peak_rss_mb", peak_rss_mb);
    Ok(report)
}

/// Polls `/health/detailed` until `deadline`, collecting each retention run once.
async fn watch_runs(addr: SocketAddr, deadline: Instant) -> Result<Vec<RunSeen>> {
    let mut runs: Vec<RunSeen> = Vec::new();
    while Instant::now() < deadline {
        let body = fetch_body(addr, "/health/detailed").await?;
        let health: Value = serde_json::from_slice(&body).context("/health/detailed")?;
        let run = &health["retention"]["last_run"];
        if let Some(at) = run["at"].as_str() {
            let seen = RunSeen {
                at: at.to_owned(),
                took_ms: run["took_ms"].as_f64().unwrap_or(0.0),
                longest_step_ms: run["longest_step_ms"].as_f64().unwrap_or(0.0),
                events_deleted: run["events_deleted"].as_u64().unwrap_or(0),
                partitions_dropped: run["partitions_dropped"].as_u64().unwrap_or(0),
            };
            if runs.last().is_none_or(|last| last.at != seen.at) {
                runs.push(seen);
            }
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
    Ok(runs)
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
