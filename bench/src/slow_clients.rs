//! The `slow-clients` scenario: single-event ingestion from well-behaved clients, alone and
//! then while 2,000 hostile sockets are held open (a third trickling a request head a byte
//! every 5 s, a third a 1 MB body a byte every 5 s, a third sending nothing), each reopened as
//! soon as the server closes it. Reports both rates and their ratio, how long the server let
//! a slow socket live, and the server's own count of connections it timed out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gen::{ClientIds, IdSource, Rng};
use super::load::{run_post_load, LoadOutcome, PostLoad, Schedule};
use super::report::Report;
use super::scenarios::{fetch_body, progress, templates, warn_errors, BenchContext};
use super::stats::LatencySummary;

/// Hostile sockets held open at once.
const SLOW_SOCKETS: usize = 2_000;
/// How often a trickling socket sends its next byte.
const TRICKLE_EVERY: Duration = Duration::from_secs(5);
/// How long the slow sockets are given to open (and the first ones to be timed out) before
/// the measured load starts.
const SETTLE: Duration = Duration::from_secs(12);

#[derive(Clone, Copy)]
enum Kind {
    /// A request head, a byte at a time, never finished.
    Head,
    /// A complete head announcing a 1 MB body, then the body a byte at a time.
    Body,
    /// Connects and sends nothing.
    Silent,
}

/// What the hostile side saw.
#[derive(Default)]
struct Hostile {
    /// Sockets the server closed.
    closed: AtomicU64,
    /// How long each closed socket lived, in milliseconds.
    lifetimes_ms: Mutex<Vec<u32>>,
    /// Connections that could not be opened (e.g. refused).
    failed_connects: AtomicU64,
}

pub async fn slow_clients(context: &BenchContext, duration: Duration) -> Result<Report> {
    let needed = (SLOW_SOCKETS + context.connections + 256) as u64;
    eventide::connections::raise_open_files_limit(needed).context("raising the open-file limit")?;
    let mut rng = Rng::from_clock(5);
    let requests = templates(64, 1, ClientIds::None, &mut rng);
    let connections = context.connections;
    let hostile = Arc::new(Hostile::default());
    let measured = context
        .with_server("slow-clients", &context.server, false, |server| {
            let addr = server.addr;
            let hostile = hostile.clone();
            async move {
                let load = |label: &'static str| {
                    let requests = requests.clone();
                    async move {
                        let outcome = run_post_load(PostLoad {
                            addr,
                            connections,
                            templates: requests,
                            final_request: None,
                            ids: Arc::new(IdSource::new(&mut Rng::from_clock(0))),
                            schedule: Schedule::UntilDeadline {
                                deadline: Instant::now() + duration,
                            },
                            probes: None,
                        })
                        .await;
                        progress(&format!(
                            "slow-clients {label}: {:.0} events/s",
                            outcome.events_per_sec()
                        ));
                        warn_errors(label, &outcome);
                        outcome
                    }
                };
                let alone = load("alone").await;
                let stop = Arc::new(AtomicBool::new(false));
                let holders: Vec<_> = (0..SLOW_SOCKETS)
                    .map(|i| {
                        let kind = match i % 3 {
                            0 => Kind::Head,
                            1 => Kind::Body,
                            _ => Kind::Silent,
                        };
                        tokio::spawn(hold(addr, kind, hostile.clone(), stop.clone()))
                    })
                    .collect();
                progress(&format!(
                    "slow-clients: {SLOW_SOCKETS} slow sockets opening; measuring in {SETTLE:?}"
                ));
                tokio::time::sleep(SETTLE).await;
                let beside = load("beside 2,000 slow sockets").await;
                stop.store(true, Ordering::Relaxed);
                for holder in holders {
                    holder.abort();
                }
                let health = fetch_body(addr, "/health/detailed").await?;
                let health: Value = serde_json::from_slice(&health)?;
                Ok((alone, beside, health["connections"].clone()))
            }
        })
        .await?;
    let (mut alone, mut beside, connections_report) = measured.value;
    let mut report = Report::new("slow-clients");
    report.push_rate("events_per_sec", beside.events_per_sec());
    report.push_rate("alone_events_per_sec", alone.events_per_sec());
    report.push_ratio(
        "with_to_without_ratio",
        beside.events_per_sec(),
        alone.events_per_sec(),
    );
    push_latency(&mut report, "", &mut beside);
    push_latency(&mut report, "alone_", &mut alone);
    report.push("slow_sockets", SLOW_SOCKETS as u64);
    report.push(
        "slow_sockets_closed_by_server",
        hostile.closed.load(Ordering::Relaxed),
    );
    let mut lifetimes = std::mem::take(&mut *hostile.lifetimes_ms.lock().unwrap());
    lifetimes.sort_unstable();
    let at = |q: f64| {
        lifetimes
            .get(((lifetimes.len() as f64 * q) as usize).min(lifetimes.len().saturating_sub(1)))
            .map(|&ms| ms as f64 / 1000.0)
    };
    report.push("slow_socket_lifetime_p50_s", at(0.5));
    report.push(
        "slow_socket_lifetime_max_s",
        lifetimes.last().map(|&ms| ms as f64 / 1000.0),
    );
    report.push(
        "failed_connects",
        hostile.failed_connects.load(Ordering::Relaxed),
    );
    report.push("server_connections", connections_report);
    report.push("errors", alone.errors + beside.errors);
    report.push("connections", connections as u64);
    report.push_seconds("duration_s", duration);
    report.push_mb("server_peak_rss_mb", measured.peak_rss_mb);
    Ok(report)
}

fn push_latency(report: &mut Report, prefix: &str, outcome: &mut LoadOutcome) {
    let latency = LatencySummary::from_micros(&mut outcome.latencies_us);
    report.push_ms(&format!("{prefix}p50_ms"), latency.p50_ms);
    report.push_ms(&format!("{prefix}p99_ms"), latency.p99_ms);
}

/// Keeps one hostile socket of `kind` open, opening another as soon as the server closes
/// it, until `stop`.
async fn hold(addr: SocketAddr, kind: Kind, hostile: Arc<Hostile>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            hostile.failed_connects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let opened = Instant::now();
        let preamble: &[u8] = match kind {
            Kind::Head | Kind::Silent => b"",
            Kind::Body => {
                b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            }
        };
        let trickle: &[u8] = match kind {
            Kind::Head => b"GET /events?type=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
            Kind::Body => b"[                                                   ",
            Kind::Silent => b"",
        };
        if stream.write_all(preamble).await.is_err() {
            continue;
        }
        let (mut reader, mut writer) = stream.into_split();
        let feed = async {
            for &byte in trickle.iter().cycle() {
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(TRICKLE_EVERY).await;
            }
            std::future::pending::<()>().await
        };
        let closed = async {
            let mut sink = [0u8; 1024];
            while let Ok(n) = reader.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            () = closed => {}
            () = feed => {}
        }
        hostile.closed.fetch_add(1, Ordering::Relaxed);
        hostile
            .lifetimes_ms
            .lock()
            .unwrap()
            .push(opened.elapsed().as_millis() as u32);
    }
}
