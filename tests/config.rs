//! Command-line configuration: invalid values exit non-zero with one stderr line naming the
//! option; valid values (including the boundaries) start a server that answers /health.

mod common;

use common::*;
use serde_json::json;

/// Runs `serve` with `extra` on a fresh directory and asserts the configuration is refused
/// with a non-zero exit status and exactly one non-empty stderr line naming `option`.
async fn assert_refused(extra: &[&str], option: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["serve", "--data-dir", &dir_s];
    if !extra.contains(&"--addr") {
        args.extend_from_slice(&["--addr", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    let (status, _stdout, stderr) = run_binary(&args).await;
    assert!(
        matches!(status.code(), Some(c) if c != 0),
        "{extra:?}: expected a non-zero exit code, got {status}; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{extra:?}: expected one stderr line, got:\n{stderr}"
    );
    assert!(
        lines[0].contains(option),
        "{extra:?}: stderr line does not name {option}: {}",
        lines[0]
    );
}

#[tokio::test]
async fn bogus_durability_is_refused() {
    assert_refused(&["--durability", "bogus"], "--durability").await;
}

#[tokio::test]
async fn max_pending_events_below_10000_is_refused() {
    assert_refused(&["--max-pending-events", "5"], "--max-pending-events").await;
    assert_refused(&["--max-pending-events", "9999"], "--max-pending-events").await;
    assert_refused(&["--max-pending-events", "lots"], "--max-pending-events").await;
}

#[tokio::test]
async fn other_invalid_values_are_refused() {
    assert_refused(&["--max-index-backlog", "abc"], "--max-index-backlog").await;
    assert_refused(&["--dedup-window", "forever"], "--dedup-window").await;
    assert_refused(&["--read-wait", "soon"], "--read-wait").await;
    assert_refused(&["--addr", "not-an-address"], "--addr").await;
    assert_refused(&["--max-tracked-types", "2000000"], "--max-tracked-types").await;
    assert_refused(
        &["--max-tracked-services", "many"],
        "--max-tracked-services",
    )
    .await;
}

#[tokio::test]
async fn valid_flags_at_their_boundaries_start() {
    let s = TestServer::start_temp(&[
        "--durability",
        "fsync",
        "--max-pending-events",
        "10000",
        "--max-index-backlog",
        "5000",
        "--dedup-window",
        "24h",
        "--read-wait",
        "1s",
    ])
    .await;
    let resp = s.get("/health").await;
    resp.expect_status(200);
    assert_eq!(resp.json(), json!({"status": "ok"}));
    let id = s.post_one(json!({"type": "cfg"})).await;
    s.get_event(&id).await.expect_status(200);
}

#[tokio::test]
async fn process_durability_is_accepted() {
    let mut s = TestServer::start_temp(&["--durability", "process"]).await;
    s.post_one(json!({"type": "cfg"})).await;
    s.terminate().await;
}
