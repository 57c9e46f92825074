//! The backfill scenario: history imported into a server with `--retention 0`, as the first
//! thing someone migrating from another system does. Two parts, each on a fresh server:
//!
//! - **a year**: `--backfill-events` events (10,000,000) with timestamps over the 365 days
//!   before the start, sent in time order (as exported files are replayed) in 1,000-event
//!   batches from 8 connections as fast as the server takes them (`429`s are retried): the
//!   import rate, acknowledged and queryable, while a newest-page query and a `/metrics` are
//!   requested every 250 ms;
//! - **10,000 days**: one POST of 10,000 events, each on a different day (the 27 years back
//!   from today, shuffled): how long after its `202` all are queryable, and how long each
//!   `GET /events` polled meanwhile (every 100 ms) takes.
//!
//! Both report the partitions the store made (`/health/detailed`; a server without that
//! report, such as an older binary run with `--server-bin`, shows none) and its size on disk.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use eventide::store::DAY_MS;
use serde_json::{json, Value};
use testkit::http::HttpConnection;

use super::gen::{ClientIds, EventShape, Rng};
use super::load::{rate, LoadOutcome, REQUEST_TIMEOUT};
use super::report::Report;
use super::scenarios::{
    fetch_body, partial_count, post_in_batches, progress, timed_get, wait_until_indexed,
    warn_errors, Answer, BenchContext, Get, PRELOAD_LIMIT,
};
use super::stats::LatencySummary;

/// Days of history in the year import.
const YEAR_DAYS: i64 = 365;
/// How often the reads during the import are made.
const READ_EVERY: Duration = Duration::from_millis(250);
/// The reads during the import: the newest page of a type, and the last minute's metrics.
const QUERY_PATH: &str = "/events?type=type-03&limit=50";
const METRICS_PATH: &str = "/metrics";
/// Events (and different days) in the one POST of the second part.
const DAYS: i64 = 10_000;
/// How often `GET /events` is polled after that POST.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long that POST's events may take to become queryable before the run gives up: the
/// binary with only day partitions took 145 s.
const DAYS_LIMIT: Duration = Duration::from_secs(900);

pub async fn backfill(context: &BenchContext) -> Result<Report> {
    let keep_all = context.server.with_args(&["--retention", "0"]);
    let events = context.backfill_events;
    let year = context
        .with_server("backfill-year", &keep_all, false, |server| {
            import_year(server.addr, events)
        })
        .await?;
    let days = context
        .with_server("backfill-days", &keep_all, false, |server| {
            post_days(server.addr)
        })
        .await?;

    let mut report = Report::new("backfill");
    let mut import = year.value;
    report.push_rate(
        "events_per_sec",
        rate(import.load.acknowledged_events, import.queryable_after),
    );
    report.push_rate("acknowledged_events_per_sec", import.load.events_per_sec());
    report.push("events", import.load.acknowledged_events);
    report.push("days", YEAR_DAYS as u64);
    report.push("order", "time");
    report.push_seconds("acknowledged_s", import.load.elapsed);
    report.push_seconds("queryable_s", import.queryable_after);
    report.push("rejected_429", import.load.rejected_429);
    let reads = &mut import.reads;
    report.push_latency("query_", &LatencySummary::from_micros(&mut reads.query_us));
    report.push("query_partial", reads.query_partial);
    report.push_latency(
        "metrics_",
        &LatencySummary::from_micros(&mut reads.metrics_us),
    );
    report.push("metrics_partial", reads.metrics_partial);
    import.layout.push_figures(&mut report, "");
    report.push_mb("server_peak_rss_mb", year.peak_rss_mb);

    let mut days_run = days.value;
    report.push("days_events", DAYS as u64);
    report.push("days_body_bytes", days_run.body_bytes as u64);
    report.push_ms("days_post_ms", Some(days_run.post.as_secs_f64() * 1e3));
    report.push_seconds("days_queryable_s", days_run.queryable_after);
    let gets = LatencySummary::from_micros(&mut days_run.gets_us);
    report.push_latency("days_get_", &gets);
    report.push("days_gets", gets.count as u64);
    report.push("days_partial", days_run.partial);
    days_run.layout.push_figures(&mut report, "days_");
    report.push_mb("days_server_peak_rss_mb", days.peak_rss_mb);
    report.push(
        "errors",
        import.load.errors + import.reads.tally.errors + days_run.errors,
    );
    Ok(report)
}

/// What the year import measured.
struct YearImport {
    load: LoadOutcome,
    /// From the start of the import until every acknowledged event was queryable.
    queryable_after: Duration,
    reads: Reads,
    layout: Layout,
}

async fn import_year(addr: SocketAddr, events: u64) -> Result<YearImport> {
    let label = "backfill-year";
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let shape = EventShape {
        timestamp_spread_ms: (YEAR_DAYS * DAY_MS) as u64,
        in_order_over_events: events,
        anchor_ms: started_ms,
        ..EventShape::default()
    };
    progress(&format!(
        "{label}: importing {events} events over {YEAR_DAYS} days, in time order"
    ));
    let stop_reads = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_meanwhile(addr, Arc::clone(&stop_reads)));
    let started = Instant::now();
    let give_up_at = started + PRELOAD_LIMIT;
    let load = post_in_batches(addr, label, events, shape, ClientIds::None, give_up_at).await;
    warn_errors(label, &load);
    let waited = wait_until_indexed(addr, label, load.acknowledged_events).await;
    let queryable_after = started.elapsed();
    stop_reads.store(true, Ordering::Relaxed);
    let reads = reader.await.context("the reads during the import")?;
    waited?;
    progress(&format!(
        "{label}: all queryable {:.1} s after the start ({:.0} events/s)",
        queryable_after.as_secs_f64(),
        rate(load.acknowledged_events, queryable_after)
    ));
    warn_errors(&format!("{label} reads"), &reads.tally);
    Ok(YearImport {
        load,
        queryable_after,
        reads,
        layout: Layout::fetch(addr).await?,
    })
}

/// Latencies of the reads made during the import.
#[derive(Debug, Default)]
struct Reads {
    query_us: Vec<u32>,
    metrics_us: Vec<u32>,
    /// Answers that said `"partial": true`: the indexer was behind by more than the read
    /// wait, so they answered with what was indexed.
    query_partial: u64,
    metrics_partial: u64,
    tally: LoadOutcome,
}

/// A newest-page query and a `/metrics`, one after the other every [`READ_EVERY`], until
/// `stop`.
async fn read_meanwhile(addr: SocketAddr, stop: Arc<AtomicBool>) -> Reads {
    let mut reads = Reads::default();
    let mut connection = None;
    let gets = [Get::new(QUERY_PATH), Get::new(METRICS_PATH)];
    while !stop.load(Ordering::Relaxed) {
        let next = Instant::now() + READ_EVERY;
        for (index, get) in gets.iter().enumerate() {
            let far = Instant::now() + REQUEST_TIMEOUT;
            match timed_get(&mut connection, addr, get, &mut reads.tally, far).await {
                Answer::Ok(latency, response) => {
                    let partial = partial_count(&response);
                    if index == 0 {
                        reads.query_us.push(latency);
                        reads.query_partial += partial;
                    } else {
                        reads.metrics_us.push(latency);
                        reads.metrics_partial += partial;
                    }
                }
                Answer::Retry | Answer::Refused => {}
                Answer::Broken => connection = None,
            }
        }
        tokio::time::sleep_until(next.into()).await;
    }
    reads
}

/// What the one POST of 10,000 days measured.
struct DaysRun {
    body_bytes: usize,
    /// The POST's own latency, to its `202`.
    post: Duration,
    /// From the `202` until a poll found all its events.
    queryable_after: Duration,
    /// Latency of each `GET /events` polled meanwhile.
    gets_us: Vec<u32>,
    partial: u64,
    errors: u64,
    layout: Layout,
}

async fn post_days(addr: SocketAddr) -> Result<DaysRun> {
    let label = "backfill-days";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let today = now - now.rem_euclid(DAY_MS);
    let mut rng = Rng::from_clock(60);
    let mut days: Vec<i64> = (0..DAYS).collect();
    for index in (1..days.len()).rev() {
        days.swap(index, rng.below(index as u64 + 1) as usize);
    }
    let events: Vec<Value> = days
        .iter()
        .map(|&back| {
            let in_day = rng.below(DAY_MS as u64) as i64;
            json!({
                "type": format!("type-{:02}", rng.below(20)),
                // Anywhere in its day, but not ahead of now today.
                "timestamp": today - back * DAY_MS + in_day.min(now - today),
                "user_id": format!("user-{:06}", rng.below(100_000)),
            })
        })
        .collect();
    let body = serde_json::to_vec(&events)?;
    let mut request = format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    progress(&format!(
        "{label}: one POST of {DAYS} events on {DAYS} different days ({} KB)",
        body.len() / 1000
    ));

    let mut connection = HttpConnection::connect(addr).await?;
    let sent = Instant::now();
    let response = tokio::time::timeout(REQUEST_TIMEOUT, connection.send(&request))
        .await
        .map_err(|_| anyhow!("POST /events: no answer within {REQUEST_TIMEOUT:?}"))??;
    if response.status != 202 {
        bail!(
            "POST /events answered {}: {}",
            response.status,
            response.body_excerpt()
        );
    }
    let acknowledged = Instant::now();
    let post = acknowledged - sent;

    // Alternately the stored total (a count over every partition) and a type's newest page.
    let paths = [
        "/events?page=1&page_size=1",
        "/events?type=type-07&limit=50",
    ];
    let gets = paths.map(Get::new);
    let mut tally = LoadOutcome::default();
    let mut gets_us = Vec::new();
    let mut partial = 0;
    let mut reader = None;
    let mut last_progress = acknowledged;
    let mut total = 0;
    let queryable_after = loop {
        for get in &gets {
            let far = Instant::now() + REQUEST_TIMEOUT;
            match timed_get(&mut reader, addr, get, &mut tally, far).await {
                Answer::Ok(latency, response) => {
                    gets_us.push(latency);
                    partial += partial_count(&response);
                    if let Ok(page) = serde_json::from_slice::<Value>(response.body) {
                        total = page["total"].as_u64().unwrap_or(total);
                    }
                }
                Answer::Retry | Answer::Refused => {}
                Answer::Broken => reader = None,
            }
        }
        if total >= DAYS as u64 {
            break acknowledged.elapsed();
        }
        if acknowledged.elapsed() > DAYS_LIMIT {
            bail!("only {total} of {DAYS} events queryable {DAYS_LIMIT:?} after the 202");
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            progress(&format!("{label}: {total} of {DAYS} queryable so far"));
            last_progress = Instant::now();
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    progress(&format!(
        "{label}: all queryable {:.2} s after the 202 ({} GETs meanwhile, the slowest {:.0} ms)",
        queryable_after.as_secs_f64(),
        gets_us.len(),
        gets_us.iter().max().copied().unwrap_or(0) as f64 / 1e3
    ));
    warn_errors(label, &tally);
    Ok(DaysRun {
        body_bytes: body.len(),
        post,
        queryable_after,
        gets_us,
        partial,
        errors: tally.errors,
        layout: Layout::fetch(addr).await?,
    })
}

/// The store's partitions and size, as `/health/detailed` reports them.
struct Layout {
    partitions: Value,
    size_bytes: Option<u64>,
}

impl Layout {
    async fn fetch(addr: SocketAddr) -> Result<Layout> {
        let body = fetch_body(addr, "/health/detailed").await?;
        let health: Value = serde_json::from_slice(&body).context("/health/detailed")?;
        Ok(Layout {
            partitions: health["store"]["partitions"].clone(),
            size_bytes: health["store"]["size_on_disk_bytes"].as_u64(),
        })
    }

    fn push_figures(&self, report: &mut Report, prefix: &str) {
        for span in ["total", "day", "month", "year"] {
            report.push(
                &format!("{prefix}partitions_{span}"),
                self.partitions[span].clone(),
            );
        }
        report.push(
            &format!("{prefix}store_size_mb"),
            self.size_bytes.map(|bytes| (bytes / 1_000_000) as f64),
        );
    }
}
