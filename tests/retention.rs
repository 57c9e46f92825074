//! Retention through the real server: expired events refused at ingest, deleted by the job
//! (rows trimmed in the current day, whole days dropped at start), with counts, metrics and
//! `/health/detailed` agreeing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

fn at(ts: i64, kind: &str, user: &str) -> Value {
    json!({"type": kind, "timestamp": ts, "service": "svc", "user_id": user})
}

#[tokio::test]
async fn expired_events_are_refused_at_ingest() {
    let server = TestServer::start_temp(&["--retention", "1h"]).await;
    let api = server.api();
    let now = now_ms();
    let resp = api
        .post_events(&json!([
            at(now - 2 * HOUR, "old", "u"),
            at(now, "new", "u")
        ]))
        .await;
    resp.expect_status(202);
    let body = resp.json();
    assert_eq!(body["accepted"], json!(1), "{body}");
    assert_eq!(body["ids"][0], Value::Null, "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["index"], json!(0), "{body}");
    assert_eq!(error["field"], json!("timestamp"), "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("older than the retention of 1h"),
        "{message}"
    );

    let body = api
        .post_events(&json!({"type": "old", "timestamp": now - 2 * HOUR}))
        .await
        .expect_error(400);
    assert_eq!(body["error"], json!("no_valid_events"), "{body}");
    assert_eq!(api.total(&[]).await, 1);
}

#[tokio::test]
async fn the_job_deletes_expired_events_and_keeps_the_rest() {
    let server = TestServer::start_temp(&["--retention", "3s", "--retention-interval", "1s"]).await;
    let api = server.api();
    let now = now_ms();
    // Expire within a second or two: trimmed by rows from today's partition.
    let expiring: Vec<Value> = (0..300)
        .map(|i| {
            at(
                now - 2 * SECOND,
                ["a", "b"][i % 2],
                &format!("user-{}", i % 7),
            )
        })
        .collect();
    // An hour ahead: kept.
    let kept: Vec<Value> = (0..50)
        .map(|i| at(now + HOUR, "a", &format!("user-{}", i % 7)))
        .collect();
    let expiring_ids = api.post_all(&expiring).await;
    api.post_all(&kept).await;
    assert_eq!(api.total(&[]).await, 350);

    wait_for(
        Duration::from_secs(20),
        "expired events deleted",
        || async { api.total(&[]).await == 50 },
    )
    .await;
    api.get_event(&expiring_ids[0]).await.expect_status(404);
    assert_eq!(api.total(&[("user_id", "user-3")]).await, 7);
    assert_eq!(api.total(&[("type", "b")]).await, 0);
    let events = api.walk(&[("type", "a")], 20).await;
    assert_eq!(events.len(), 50);

    // Queries see each of a run's deletions as it commits; the stored count follows when
    // the run ends (on a loaded machine, after queries already answered 50).
    let health = poll_until(Duration::from_secs(20), || async {
        let health = api.get("/health/detailed").await.json();
        (health["events"]["stored"] == json!(50)).then_some(health)
    })
    .await
    .expect("the stored count after the run: 50");
    let retention = &health["retention"];
    assert_eq!(retention["retention"], json!("3s"), "{health}");
    assert_eq!(retention["interval"], json!("1s"), "{health}");
    assert_eq!(retention["last_run"]["error"], Value::Null, "{health}");
    assert_eq!(health["events"]["stored"], json!(50), "{health}");
    let summary = api.get("/metrics/summary").await.json();
    assert_eq!(summary["total_events"], json!(50), "{summary}");
    let logs = server.logs();
    assert!(logs.contains("retention run"), "{logs}");
}

#[tokio::test]
async fn a_shorter_retention_at_start_drops_whole_days() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let mut server = TestServer::start(dir.path(), &["--retention", "0"]).await;
    let api = server.api();
    let old: Vec<Value> = (0..200)
        .map(|i| at(now - 3 * DAY - i * SECOND, "old", &format!("u{}", i % 5)))
        .collect();
    let old_ids = api.post_all(&old).await;
    let recent_ids = api.post_all(&[at(now - HOUR, "recent", "u1")]).await;
    assert_eq!(api.total(&[]).await, 201);
    server.terminate().await;

    let server = TestServer::start(dir.path(), &["--retention", "2d"]).await;
    let api = server.api();
    wait_for(Duration::from_secs(20), "the start-up run", || async {
        api.get("/health/detailed").await.json()["retention"]["last_run"] != Value::Null
    })
    .await;
    let health = api.get("/health/detailed").await.json();
    let run = &health["retention"]["last_run"];
    assert_eq!(run["events_deleted"], json!(200), "{health}");
    assert!(run["partitions_dropped"].as_u64().unwrap() >= 1, "{health}");
    assert_eq!(api.total(&[]).await, 1);
    api.get_event(&old_ids[17]).await.expect_status(404);
    api.get_event(&recent_ids[0]).await.expect_status(200);
    assert_eq!(health["events"]["stored"], json!(1), "{health}");

    // Their rollups went with them: the daily series has nothing before the cutoff.
    let series = api
        .get("/metrics/timeseries?interval=day&group_by=none")
        .await
        .json();
    let total: u64 = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|line| line["points"].as_array().unwrap())
        .map(|point| point[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "{series}");
}
