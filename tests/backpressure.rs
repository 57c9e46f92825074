//! Backpressure: over `--max-index-backlog` (or `--max-pending-events`) POST /events answers
//! 429 with Retry-After and stores nothing of that request; the backlog then drains.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn big_batch(tag: &str) -> Value {
    Value::Array(
        (0..10_000)
            .map(|i| json!({"type": tag, "message": format!("{i}")}))
            .collect(),
    )
}

#[track_caller]
fn assert_retry_after(resp: &Resp) {
    let ra = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After; body: {}", resp.text));
    assert!(
        ra.trim().parse::<u64>().is_ok(),
        "Retry-After is not a number of seconds: {ra:?}"
    );
    resp.expect_error(429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_backlog_over_limit_is_429_and_stores_nothing() {
    // Batch after batch must be acknowledged faster than they are indexed; a flush per batch
    // (`fsync`, the default) gave the indexer time to keep up between them in CI.
    let s =
        TestServer::start_temp(&["--max-index-backlog", "1000", "--durability", "process"]).await;
    let mut accepted: Vec<String> = Vec::new();
    let mut refused: Option<String> = None;
    for n in 0..40 {
        let tag = format!("bp-{n}");
        let resp = s.post_events(&big_batch(&tag)).await;
        match resp.status {
            202 => {
                assert_eq!(
                    resp.json()["accepted"],
                    json!(10_000),
                    "answer: {}",
                    resp.text
                );
                accepted.push(tag);
            }
            429 => {
                assert_retry_after(&resp);
                refused = Some(tag);
                break;
            }
            other => panic!("unexpected status {other}: {}", truncate(&resp.text, 500)),
        }
    }
    let refused = refused.unwrap_or_else(|| {
        panic!(
            "no 429 after {} accepted batches of 10,000 events with --max-index-backlog 1000",
            accepted.len()
        )
    });

    let want = accepted.len() as u64 * 10_000;
    let settled = poll_until(Duration::from_secs(60), || {
        let api = s.api();
        async move { (api.total(&[]).await == want).then_some(()) }
    })
    .await;
    assert_eq!(
        s.total(&[]).await,
        want,
        "stored events must equal the sum of accepted counts (settled: {})",
        settled.is_some()
    );
    assert_eq!(
        s.total(&[("type", &refused)]).await,
        0,
        "events of the 429 request stored"
    );
    for tag in &accepted {
        assert_eq!(s.total(&[("type", tag)]).await, 10_000, "{tag}");
    }

    // Once the backlog drains, writes are accepted again.
    let ok = poll_until(Duration::from_secs(60), || {
        let api = s.api();
        async move {
            let resp = api
                .post_events(&json!({"type": "after", "id": "after-1"}))
                .await;
            match resp.status {
                202 => Some(()),
                429 => None,
                other => panic!("unexpected status {other}: {}", resp.text),
            }
        }
    })
    .await;
    assert!(ok.is_some(), "still 429 after 60 s");
    s.get_event("after-1").await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_limit_never_stores_part_of_a_refused_request() {
    let s = TestServer::start_temp(&["--max-pending-events", "10000"]).await;
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let api = s.api();
            tokio::spawn(async move {
                let tag = format!("pend-{n}");
                let resp = api.post_events(&big_batch(&tag)).await;
                (tag, resp)
            })
        })
        .collect();
    let mut want = 0u64;
    let mut results = Vec::new();
    for t in tasks {
        let (tag, resp) = t.await.expect("task panicked");
        match resp.status {
            202 => {
                assert_eq!(resp.json()["accepted"], json!(10_000));
                want += 10_000;
                results.push((tag, 10_000u64));
            }
            429 => {
                assert_retry_after(&resp);
                results.push((tag, 0));
            }
            other => panic!("unexpected status {other}: {}", truncate(&resp.text, 500)),
        }
    }
    assert_eq!(s.total(&[]).await, want);
    for (tag, n) in results {
        assert_eq!(s.total(&[("type", &tag)]).await, n, "{tag}");
    }
}
