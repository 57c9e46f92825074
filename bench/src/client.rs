//! The client scenario: `eventide import` of an NDJSON.gz file of `--client-events` events
//! (no ids: the client derives them) into a fresh server, then `eventide export` of all of
//! them as NDJSON, with the server's resident memory sampled during the export.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::report::Report;
use super::scenarios::{wait_until_indexed, BenchContext};
use super::server::RunningServer;

/// Types, services and users the generated events cycle through.
const TYPES: [&str; 5] = ["click", "view", "signup", "login", "purchase"];

pub async fn client(context: &BenchContext) -> Result<Report> {
    let label = "client";
    let events = context.client_events;
    let scratch = context.scratch.path();
    let file = scratch.join("client-events.ndjson.gz");
    let written = write_events(&file, events)?;

    let data_dir = scratch.join(label);
    let log_path = scratch.join(format!("{label}.log"));
    let server = RunningServer::start(&context.server, &data_dir, &log_path, false).await?;
    let url = format!("http://{}", server.addr());

    let started = Instant::now();
    let import = run_client(
        &context.server.binary,
        &url,
        &["import", file.to_str().context("a UTF-8 path")?],
    )
    .await?;
    let acknowledged = started.elapsed();
    let summary = import.lines().last().unwrap_or("").to_owned();
    if !summary.starts_with(&format!("imported {events}, duplicates 0, rejected 0")) {
        bail!("the import did not store every event: {summary}");
    }
    wait_until_indexed(server.addr(), label, events).await?;
    let queryable = started.elapsed();

    let rss_before = rss_mb(server.pid())?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pid = server.pid();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(mb) = rss_mb(pid) {
                    peak = peak.max(mb);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let output = scratch.join("client-export.ndjson");
    let started = Instant::now();
    run_client(
        &context.server.binary,
        &url,
        &[
            "export",
            "--output",
            output.to_str().context("a UTF-8 path")?,
        ],
    )
    .await?;
    let exported_in = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let rss_peak = sampler.await?;
    let lines = count_lines(&output)?;
    if lines != events {
        bail!("the export has {lines} events, not {events}");
    }
    let _ = std::fs::remove_file(&output);
    server.stop().await?;

    let mut report = Report::new(label);
    report.push("events", events);
    report.push_mb("file_mb", written as f64 / (1024.0 * 1024.0));
    report.push_rate(
        "import_acknowledged_events_per_sec",
        events as f64 / acknowledged.as_secs_f64(),
    );
    report.push_rate(
        "import_queryable_events_per_sec",
        events as f64 / queryable.as_secs_f64(),
    );
    report.push_rate(
        "export_events_per_sec",
        events as f64 / exported_in.as_secs_f64(),
    );
    report.push_mb("export_rss_before_mb", rss_before);
    report.push_mb("export_rss_growth_mb", (rss_peak - rss_before).max(0.0));
    Ok(report)
}

/// Runs `<binary> <args> --url <url>` and returns its stdout; fails on a non-zero exit.
async fn run_client(binary: &Path, url: &str, args: &[&str]) -> Result<String> {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(args)
        .args(["--url", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = super::key::api_key() {
        command.env("EVENTIDE_API_KEY", key);
    }
    let output = command.output().await.context("running the client")?;
    if !output.status.success() {
        bail!(
            "`eventide {}` exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `count` typical events (about 230 bytes each) without ids, timestamps over the last hour,
/// gzip-compressed; returns the file's size.
fn write_events(path: &Path, count: u64) -> Result<u64> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let first_ms = now_ms - 3_600_000;
    let step = (3_000_000 / count.max(1)).max(1);
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::fast(),
    );
    for i in 0..count {
        writeln!(
            out,
            r#"{{"type":"{}","timestamp":{},"service":"svc-{}","user_id":"u-{}","message":"request handled in {} ms","metadata":{{"path":"/api/v1/items/{}","status":200,"region":"eu-west-1"}}}}"#,
            TYPES[(i % 5) as usize],
            first_ms + i * step,
            i % 20,
            i % 5_000,
            i % 300,
            i % 1_000,
        )?;
    }
    out.finish()?.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn count_lines(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// The resident set size (`VmRSS`) of process `pid`, in MiB.
fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")?;
    Ok(kib / 1024.0)
}
