//! The ceiling: what HTTP and JSON alone cost on this machine. A bare axum handler parses
//! each POST's JSON and answers `202`, stores nothing; it runs as its own process, on
//! tokio's multi-threaded runtime as the server does, and the same generator loads it with
//! one event per POST at `--connections` connections. Every report then gives its rates
//! beside this one, measured in the same run, since this machine's speed drifts between
//! runs far more than between two servers measured back to back.
//!
//! The bench binary is that server too: started as `eventide-bench serve --addr ADDR ...`
//! (how the test kit starts a server), it serves the ceiling instead of measuring.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use super::gen::{ClientIds, IdSource, Rng};
use super::load::{run_post_load, PostLoad, Schedule};
use super::report::Report;
use super::scenarios::{templates, BenchContext, SINGLE_TEMPLATES};
use super::server::ServerCommand;

/// Serves the ceiling when the process was started as a server (`serve` first), until
/// SIGTERM; `None` otherwise.
pub fn serve_if_asked() -> Option<Result<()>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("serve") {
        return None;
    }
    // `--addr ADDR`; everything else the test kit passes (`--data-dir`) means nothing here.
    let addr = args
        .windows(2)
        .find(|pair| pair[0] == "--addr")
        .map_or("127.0.0.1:0", |pair| pair[1].as_str())
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    Some(runtime.block_on(serve(addr)))
}

async fn serve(addr: String) -> Result<()> {
    let app = Router::new()
        .route("/events", post(ingest))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The line the test kit waits for.
    println!(
        "ceiling server listening on http://{}",
        listener.local_addr()?
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await?;
    Ok(())
}

/// Parses the body as JSON and answers `202` with how many events it held.
async fn ingest(body: Bytes) -> impl IntoResponse {
    let json = [(header::CONTENT_TYPE, "application/json")];
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => {
            let accepted = value.as_array().map_or(1, Vec::len);
            let answer = format!(r#"{{"accepted":{accepted}}}"#);
            (StatusCode::ACCEPTED, json, answer)
        }
        Err(err) => {
            let answer = serde_json::json!({"error": "malformed_json", "message": err.to_string()});
            (StatusCode::BAD_REQUEST, json, answer.to_string())
        }
    }
}

/// The ceiling's rate in events per second: single events from `context.connections`
/// connections for `duration`, against this binary serving the ceiling.
pub async fn measure(context: &BenchContext, duration: Duration) -> Result<f64> {
    let command = ServerCommand {
        binary: std::env::current_exe().context("locating the current executable")?,
        extra_args: Vec::new(),
    };
    let bodies = templates(
        SINGLE_TEMPLATES,
        1,
        ClientIds::None,
        &mut Rng::from_clock(9),
    );
    let connections = context.connections;
    let measured = context
        .with_server("ceiling", &command, false, |server| async move {
            Ok(run_post_load(PostLoad {
                addr: server.addr,
                connections,
                templates: bodies,
                final_request: None,
                ids: Arc::new(IdSource::new(&mut Rng::from_clock(0))),
                schedule: Schedule::UntilDeadline {
                    deadline: std::time::Instant::now() + duration,
                },
                probes: None,
            })
            .await)
        })
        .await?;
    let rate = measured.value.events_per_sec();
    super::scenarios::progress(&format!(
        "ceiling: {rate:.0} events/s ({} errors)",
        measured.value.errors
    ));
    Ok(rate)
}

/// The ceiling's own report (`--scenario ceiling`).
pub fn report(rate: f64, connections: usize, duration: Duration) -> Report {
    let mut report = Report::new("ceiling");
    report.push_rate("events_per_sec", rate);
    report.push("connections", connections as u64);
    report.push_seconds("duration_s", duration);
    report
}

/// Adds the ceiling to a scenario's report: `ceiling_events_per_sec`, and for each of its
/// rates (`…events_per_sec`) the ratio `…events_per_sec_to_ceiling`.
pub fn compare(report: &mut Report, ceiling: f64) {
    let rates: Vec<(String, f64)> = report
        .figures()
        .filter(|(name, _)| name.ends_with("events_per_sec"))
        .filter_map(|(name, value)| Some((name.to_owned(), value.as_f64()?)))
        .collect();
    report.push_rate("ceiling_events_per_sec", ceiling);
    for (name, rate) in rates {
        report.push_ratio(&format!("{name}_to_ceiling"), rate, ceiling);
    }
}
