//! Durability: every 202-acknowledged event survives SIGKILL (with `--durability process` and
//! `fsync`) exactly once, idempotency keys survive SIGTERM and SIGKILL restarts, reads right
//! after a restart see everything, and SIGTERM exits 0 after answering in-flight requests.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared state of the crash writers.
#[derive(Default)]
struct Ledger {
    /// Ids of events whose request got a 202.
    acked: Mutex<Vec<String>>,
    /// Batches whose request was sent but never answered with 202 (cut off by the kill).
    unanswered: Mutex<Vec<Vec<Value>>>,
    /// Ids of events whose request got a 429 (never sent again): none may be stored.
    refused: Mutex<Vec<String>>,
    acked_count: AtomicUsize,
    /// Set just before the server is killed or told to stop: from then on any answer but a
    /// 202 leaves the batch's fate unknown instead of failing the test.
    dying: AtomicBool,
}

async fn writer(api: Api, task: usize, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(task as u64 + 1000);
    let mut n = 0usize;
    for _ in 0..5000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let batch = rng.batch(1, 50, |_| {
            n += 1;
            json!({
                "id": format!("w{task}-{n}"),
                "type": "crash",
                "service": format!("w{task}"),
                "metadata": {"n": n},
            })
        });
        let size = batch.len();
        match api.try_post_events(&Value::Array(batch.clone())).await {
            Ok(resp) if resp.status == 202 => {
                let body = resp.json();
                let want_ids: Vec<Value> = batch.iter().map(|e| e["id"].clone()).collect();
                assert_eq!(body["ids"], Value::Array(want_ids), "answer: {body}");
                assert_eq!(body["accepted"], json!(size), "answer: {body}");
                assert_eq!(body["duplicates"], json!(0), "answer: {body}");
                let mut acked = ledger.acked.lock().unwrap();
                acked.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
                ledger.acked_count.fetch_add(size, Ordering::SeqCst);
            }
            Ok(resp) if resp.status == 429 && !ledger.dying.load(Ordering::SeqCst) => {
                // Legitimate backpressure: nothing of it is stored; move on after a moment.
                resp.expect_error(429);
                ledger
                    .refused
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) if ledger.dying.load(Ordering::SeqCst) => {
                ledger.unanswered.lock().unwrap().push(batch);
                return;
            }
            Ok(resp) => panic!(
                "writer {task}: unexpected status {} before the kill: {}",
                resp.status, resp.text
            ),
            Err(_) => {
                // The server died under this request: its fate is unknown.
                ledger.unanswered.lock().unwrap().push(batch);
                return;
            }
        }
    }
}

/// Runs `writers` concurrent clients against a server started with `args`, SIGKILLs it after
/// `run_for` (and at least `min_acked` acknowledged events), restarts it on the same directory
/// and checks that every acknowledged event is there exactly once; then retries the batches
/// that were cut off (as a client would) and checks those too.
async fn crash_and_verify(args: &[&str], writers: usize, run_for: Duration, min_acked: usize) {
    let mut server = TestServer::start_temp(args).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|t| tokio::spawn(writer(server.api(), t, ledger.clone(), stop.clone())))
        .collect();

    let ready = poll_until(run_for + Duration::from_secs(30), || {
        let ledger = ledger.clone();
        async move {
            (started.elapsed() >= run_for && ledger.acked_count.load(Ordering::SeqCst) >= min_acked)
                .then_some(())
        }
    })
    .await;
    assert!(
        ready.is_some(),
        "only {} events acknowledged",
        ledger.acked_count.load(Ordering::SeqCst)
    );
    ledger.dying.store(true, Ordering::SeqCst);
    server.kill9().await;
    stop.store(true, Ordering::SeqCst);
    join_within(Duration::from_secs(60), "a writer after the kill", handles).await;
    let acked: Vec<String> = ledger.acked.lock().unwrap().clone();
    let unanswered: Vec<Vec<Value>> = ledger.unanswered.lock().unwrap().clone();
    eprintln!(
        "crash test {args:?}: {} acknowledged events, {} cut-off batches, {} refused (429) events",
        acked.len(),
        unanswered.len(),
        ledger.refused.lock().unwrap().len()
    );

    server.restart().await;

    // Every acknowledged id, one by one (8 at a time).
    let chunk = acked.len().div_ceil(8).max(1);
    let checks: Vec<_> = acked
        .chunks(chunk)
        .map(|ids| {
            let api = server.api();
            let ids = ids.to_vec();
            tokio::spawn(async move {
                let mut missing = Vec::new();
                for id in ids {
                    let resp = api.get_event(&id).await;
                    if resp.status != 200 {
                        missing.push(id);
                        continue;
                    }
                    assert_eq!(resp.json()["id"], json!(id));
                }
                missing
            })
        })
        .collect();
    let mut missing = Vec::new();
    for c in checks {
        missing.extend(c.await.expect("check task panicked"));
    }
    assert_none_missing(
        &missing,
        acked.len(),
        "acknowledged events lost after SIGKILL",
    );

    // A full walk: no id twice, every acknowledged id once, nothing unknown.
    let walk = server.walk(&[], 1000).await;
    let counts = count_ids(&walk);
    let dupes: Vec<(&String, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dupes.is_empty(),
        "ids stored more than once: {:?}",
        &dupes[..dupes.len().min(10)]
    );
    for id in &acked {
        assert_eq!(counts.get(id), Some(&1), "acknowledged {id} in the walk");
    }
    let sent: HashSet<String> = acked
        .iter()
        .cloned()
        .chain(
            unanswered
                .iter()
                .flatten()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        )
        .collect();
    for id in counts.keys() {
        assert!(
            sent.contains(id),
            "stored event {id} was never sent (or got a 429)"
        );
    }
    let seqs: HashSet<u64> = walk.iter().map(ev_seq).collect();
    assert_eq!(seqs.len(), walk.len(), "seq values repeat");

    // The client retries what was cut off: each of those is then stored exactly once.
    for batch in &unanswered {
        let resp = server.post_events(&Value::Array(batch.clone())).await;
        resp.expect_status(202);
        let body = resp.json();
        let n = batch.len() as u64;
        let accepted = body["accepted"].as_u64().unwrap();
        let dups = body["duplicates"].as_u64().unwrap();
        assert_eq!(accepted + dups, n, "retry answer: {body}");
        let want_ids: Vec<Value> = batch.iter().map(|e| e["id"].clone()).collect();
        assert_eq!(body["ids"], Value::Array(want_ids), "retry answer: {body}");
    }
    let walk = server.walk(&[], 1000).await;
    let counts = count_ids(&walk);
    assert_eq!(
        walk.len(),
        sent.len(),
        "after retries: every sent event exactly once"
    );
    for id in &sent {
        assert_eq!(counts.get(id), Some(&1), "{id} after retries");
    }
    let max_seq_before = seqs.into_iter().max().unwrap_or(0);
    let id = server.post_one(json!({"type": "after"})).await;
    let seq = ev_seq(&server.get_event(&id).await.json());
    assert!(
        seq > max_seq_before,
        "seq {seq} after restart is not above {max_seq_before}"
    );
    server.terminate().await;
}

fn count_ids(events: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in events {
        *counts.entry(ev_id(e)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event() {
    crash_and_verify(&["--durability", "process"], 8, Duration::from_secs(2), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event_with_fsync() {
    crash_and_verify(&["--durability", "fsync"], 8, Duration::from_secs(1), 50).await;
}

/// Posts a batch with client ids, stops the server with `stop`, restarts, and checks that
/// reads see everything at once and that the same ids are duplicates.
async fn idempotency_across_restart(kill9: bool) {
    let mut s = TestServer::start_temp(&[]).await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("r-{i}"), "type": "restart", "message": format!("v1-{i}")}))
        .collect();
    s.post_all(&batch).await;
    let no_id = s.post_one(json!({"type": "restart-no-id"})).await;
    if kill9 {
        s.kill9().await;
    } else {
        s.terminate().await;
    }
    s.restart().await;

    // Read-your-writes right after the restart.
    let (events, _) = s.page(&[("type", "restart")]).await;
    assert_eq!(events.len(), 5, "events visible right after restart");
    s.get_event(&no_id).await.expect_status(200);

    let again: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("r-{i}"), "type": "restart", "message": format!("v2-{i}")}))
        .collect();
    let resp = s.post_events(&Value::Array(again)).await;
    resp.expect_status(202);
    let body = resp.json();
    assert_eq!(body["accepted"], json!(1), "answer: {body}");
    assert_eq!(body["duplicates"], json!(5), "answer: {body}");
    assert_eq!(
        body["ids"],
        json!(["r-0", "r-1", "r-2", "r-3", "r-4", "r-5"]),
        "answer: {body}"
    );
    assert_eq!(s.total(&[("type", "restart")]).await, 6);
    assert_eq!(s.get_event("r-2").await.json()["message"], json!("v1-2"));
    // Events without an id are not deduplicated after a restart either.
    s.post_one(json!({"type": "restart-no-id"})).await;
    assert_eq!(s.total(&[("type", "restart-no-id")]).await, 2);
}

#[tokio::test]
async fn idempotency_survives_sigterm_restart() {
    idempotency_across_restart(false).await;
}

#[tokio::test]
async fn idempotency_survives_sigkill_restart() {
    idempotency_across_restart(true).await;
}

#[tokio::test]
async fn sigterm_exits_zero_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path(), &[]).await;
    let id = s.post_one(json!({"type": "t"})).await;
    s.terminate().await;
    drop(s);
    // A brand-new server process (and client) on the same directory has the event.
    let s = TestServer::start(dir.path(), &["--durability", "fsync"]).await;
    s.get_event(&id).await.expect_status(200);
    assert_eq!(s.total(&[]).await, 1);
}

#[tokio::test]
async fn sigterm_answers_the_request_in_flight() {
    let mut s = TestServer::start_temp(&[]).await;
    let body = json!([{"id": "inflight-1", "type": "t"}, {"id": "inflight-2", "type": "t"}])
        .to_string()
        .into_bytes();
    let (first, second) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&s.addr)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A first, complete request on the same keep-alive connection proves the server has
    // accepted it: a signal racing the accept would otherwise reset it.
    let warm_up = br#"{"id": "inflight-0", "type": "t"}"#;
    let warm_up_head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        warm_up.len()
    );
    stream.write_all(warm_up_head.as_bytes()).await.unwrap();
    stream.write_all(warm_up).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("warm-up answer in time")
            .unwrap();
        assert!(n > 0, "connection closed before the warm-up answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(parse_raw_response(&answer).0, 202);

    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    // The head must be parsed before the signal, or the connection still counts as idle and
    // is closed; nothing observable says when, so allow far more than it takes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.send_sigterm();
    stream.write_all(second).await.unwrap();
    let mut raw = Vec::new();
    read_to_end_bounded(&mut stream, &mut raw).await;
    let (status, resp_body) = parse_raw_response(&raw);
    assert_eq!(
        status, 202,
        "in-flight request during SIGTERM; body: {resp_body}"
    );
    let status = s.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );

    s.restart().await;
    for id in ["inflight-0", "inflight-1", "inflight-2"] {
        s.get_event(id).await.expect_status(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_event() {
    let mut s = TestServer::start_temp(&[]).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..4)
        .map(|t| tokio::spawn(writer(s.api(), t, ledger.clone(), stop.clone())))
        .collect();
    let ready = poll_until(Duration::from_secs(30), || {
        let ledger = ledger.clone();
        async move { (ledger.acked_count.load(Ordering::SeqCst) >= 300).then_some(()) }
    })
    .await;
    assert!(ready.is_some(), "writers made no progress");
    ledger.dying.store(true, Ordering::SeqCst);
    s.terminate().await;
    stop.store(true, Ordering::SeqCst);
    join_within(Duration::from_secs(60), "a writer", handles).await;
    let acked: Vec<String> = ledger.acked.lock().unwrap().clone();
    s.restart().await;
    let counts = count_ids(&s.walk(&[], 1000).await);
    for id in &acked {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "acknowledged {id} after SIGTERM + restart"
        );
    }
}
