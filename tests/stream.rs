//! `GET /stream`: Server-Sent Events of committed events, filtered like `GET /events`,
//! resumable with `Last-Event-ID` / `?since=` (also across restarts) with no gap and no
//! duplicate, lagging out slow subscribers without slowing anyone else, limited by
//! `--max-subscribers`, and ended cleanly by shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sse::{Frame, SseBody};
use common::*;
use serde_json::{json, Value};

/// Generous: the machine running the tests may be busy.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A small SSE client
// ---------------------------------------------------------------------------------------------

struct Sse {
    body: SseBody,
}

/// A client without a total timeout: streams outlive any request timeout; reads are bounded
/// one by one instead.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

impl Sse {
    /// Opens `/stream{query}`; the error is the (status, Retry-After, body) of a refusal.
    async fn try_open(
        client: &reqwest::Client,
        base: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<Sse, (u16, Option<String>, String)> {
        let mut request = client.get(format!("{base}/stream{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = tokio::time::timeout(READ_TIMEOUT, request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer to GET /stream{query} in {READ_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET /stream{query} failed: {e:?}"));
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body = response.text().await.unwrap_or_default();
            return Err((status, retry_after, body));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
        assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
        Ok(Sse {
            body: SseBody::new(response),
        })
    }

    async fn open(api: &Api, query: &str, last_event_id: Option<u64>) -> Sse {
        Self::try_open(&stream_client(), &api.base, query, last_event_id)
            .await
            .unwrap_or_else(|(status, _, body)| {
                panic!("GET /stream{query} answered {status}: {body}")
            })
    }

    /// The next message, or `None` once the stream has ended; panics after `timeout`.
    async fn next_within(&mut self, timeout: Duration) -> Option<Frame> {
        self.body.next_within(timeout).await
    }

    async fn next(&mut self) -> Option<Frame> {
        self.next_within(READ_TIMEOUT).await
    }

    /// The next message, which must be an `event`.
    async fn next_event(&mut self) -> Frame {
        let frame = self.next().await.expect("the stream ended early");
        assert_eq!(frame.event, "event", "unexpected message {frame:?}");
        frame
    }
}

/// Reads `n` events; checks each `id:` equals its data's `seq`.
async fn read_frames(sse: &mut Sse, n: usize) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        let frame = sse.next_event().await;
        assert_eq!(
            frame.id,
            Some(ev_seq(&frame.json())),
            "id: is not the seq: {frame:?}"
        );
        frames.push(frame);
    }
    frames
}

/// Reads `n` events (see [`read_frames`]) as JSON.
async fn read_events(sse: &mut Sse, n: usize) -> Vec<Value> {
    read_frames(sse, n).await.iter().map(Frame::json).collect()
}

/// Asserts two seq lists are equal, reporting the first difference rather than thousands
/// of numbers.
#[track_caller]
fn assert_seqs(got: &[u64], want: &[u64], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let window = |v: &[u64]| v[at.saturating_sub(3)..(at + 4).min(v.len())].to_vec();
    panic!(
        "{what}: {} seqs, expected {}; first difference at index {at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(ev_id).collect()
}

/// Posts a final event matching every filter used below and checks it is the very next
/// event of each stream: nothing unexpected came before it.
async fn assert_nothing_else(api: &Api, streams: &mut [&mut Sse]) {
    let id = api
        .post_one(
            json!({"type": "signup", "service": "api", "user_id": "u1", "message": "sentinel"}),
        )
        .await;
    for sse in streams.iter_mut() {
        let next = read_events(sse, 1).await;
        assert_eq!(
            ev_id(&next[0]),
            id,
            "expected the sentinel, got {}",
            next[0]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

fn mixed(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": if i % 3 == 0 { "signup" } else { "login" },
                "service": if i % 2 == 0 { "api" } else { "web" },
                "user_id": format!("u{}", i % 4),
                "message": format!("{tag}-{i}"),
            })
        })
        .collect()
}

/// The posted events matching `(type, service, user_id)` conditions.
fn matching(
    posted: &[(String, Value)],
    kind: Option<&str>,
    service: Option<&str>,
    user: Option<&str>,
) -> Vec<String> {
    posted
        .iter()
        .filter(|(_, e)| {
            kind.is_none_or(|k| e["type"] == k)
                && service.is_none_or(|s| e["service"] == s)
                && user.is_none_or(|u| e["user_id"] == u)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_only_later_matching_events_in_order() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    api.post_all(&mixed("before", 12)).await;

    // (query, type, service, user_id)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let filters: [Case; 4] = [
        ("", None, None, None),
        ("?type=signup", Some("signup"), None, None),
        (
            "?type=signup&service=api",
            Some("signup"),
            Some("api"),
            None,
        ),
        ("?user_id=u1", None, None, Some("u1")),
    ];
    let mut streams = Vec::new();
    for (query, ..) in &filters {
        streams.push(Sse::open(&api, query, None).await);
    }

    let mut posted = Vec::new();
    for round in 0..3 {
        let events = mixed(&format!("after-{round}"), 17);
        let ids = api.post_all(&events).await;
        posted.extend(ids.into_iter().zip(events));
    }
    // Metadata is kept verbatim, line breaks included: the stream must still carry one line.
    let pretty = "{\"type\":\"signup\",\"service\":\"api\",\"user_id\":\"u1\",\"metadata\":{\n  \"plan\": \"pro\",\r\n  \"n\": [1,\n 2]\n}}";
    let resp = api.post_raw(pretty, "application/json", false).await;
    resp.expect_status(202);
    let pretty_id = resp.json()["ids"][0].as_str().unwrap().to_string();
    posted.push((
        pretty_id.clone(),
        json!({"type": "signup", "service": "api", "user_id": "u1"}),
    ));

    for ((query, kind, service, user), sse) in filters.iter().zip(streams.iter_mut()) {
        let want = matching(&posted, *kind, *service, *user);
        assert!(!want.is_empty());
        let frames = read_frames(sse, want.len()).await;
        let got: Vec<Value> = frames.iter().map(Frame::json).collect();
        assert_eq!(ids(&got), want, "stream{query}");
        for pair in got.windows(2) {
            assert!(
                ev_seq(&pair[0]) < ev_seq(&pair[1]),
                "stream{query} out of seq order"
            );
        }
        // The same JSON text as GET /events/{id}, but for line breaks (as whitespace).
        for (frame, event) in frames.iter().zip(&got) {
            let id = ev_id(event);
            let stored = api.get_event(&id).await;
            stored.expect_status(200);
            if id == pretty_id {
                assert!(stored.text.contains('\n'), "{}", stored.text);
                assert_eq!(event, &stored.json(), "stream{query}");
            } else {
                assert_eq!(frame.data, stored.text, "stream{query}");
            }
        }
    }
    let mut refs: Vec<&mut Sse> = streams.iter_mut().collect();
    assert_nothing_else(&api, &mut refs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_data_is_the_exact_text_of_get_events() {
    let server = TestServer::start_temp(&[]).await;
    let mut sse = Sse::open(&server.api(), "", None).await;
    let id = server
        .post_one(json!({"type": "t", "message": "h\u{e9}llo \"q\" <b>", "metadata": {"z": 1.50, "a": [1e3]}}))
        .await;
    let frame = sse.next_event().await;
    let stored = server.get_event(&id).await;
    stored.expect_status(200);
    assert_eq!(frame.data, stored.text);
}

/// Subscribes to type `order`, reads the first events, disconnects; events are posted while
/// it is away, the server restarts, more are posted; it resumes from the last id it saw.
async fn resume_across_restart(kill9: bool, via_query: bool) {
    let mut server = TestServer::start_temp(&[]).await;
    let order_events = |tag: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"type": if i % 2 == 0 { "order" } else { "other" }, "message": format!("{tag}-{i}")}))
            .collect()
    };
    let post = |api: Api, events: Vec<Value>| async move {
        let ids = api.post_all(&events).await;
        ids.into_iter()
            .zip(events)
            .filter(|(_, e)| e["type"] == "order")
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
    };

    let mut sse = Sse::open(&server.api(), "?type=order", None).await;
    let seen_ids = post(server.api(), order_events("seen", 10)).await;
    let seen = read_events(&mut sse, seen_ids.len()).await;
    assert_eq!(ids(&seen), seen_ids);
    let last = ev_seq(seen.last().unwrap());
    drop(sse);

    let mut missed = post(server.api(), order_events("missed-before-restart", 9)).await;
    if kill9 {
        server.kill9().await;
    } else {
        server.terminate().await;
    }
    server.restart().await;
    missed.extend(post(server.api(), order_events("missed-after-restart", 7)).await);

    let mut sse = if via_query {
        Sse::open(&server.api(), &format!("?type=order&since={last}"), None).await
    } else {
        Sse::open(&server.api(), "?type=order", Some(last)).await
    };
    let replayed = read_events(&mut sse, missed.len()).await;
    assert_eq!(
        ids(&replayed),
        missed,
        "exactly the missed events, in order"
    );
    assert!(ev_seq(&replayed[0]) > last);

    let live = post(server.api(), order_events("live", 8)).await;
    let got = read_events(&mut sse, live.len()).await;
    assert_eq!(ids(&got), live, "then the live ones, no duplicate");
    let id = server
        .post_one(json!({"type": "order", "message": "sentinel"}))
        .await;
    assert_eq!(ev_id(&read_events(&mut sse, 1).await[0]), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_across_a_sigterm_restart() {
    resume_across_restart(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_resumes_across_a_kill9_restart() {
    resume_across_restart(true, true).await;
}

/// Resuming while events keep arriving: the replay from the store and the live channel meet
/// with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_concurrent_ingest_has_no_gap_and_no_duplicate() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let batch = |round: usize, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"type": if (round + i) % 3 == 0 { "a" } else { "b" }, "message": format!("{round}-{i}")}))
            .collect()
    };
    for round in 0..3 {
        api.post_all(&batch(round, 1000)).await;
    }
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let poster = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            for round in 3..203 {
                api.post_all(&batch(round, 15)).await;
                if round == 10 {
                    let _ = started.take().unwrap().send(());
                }
            }
        })
    };
    started_rx.await.unwrap();
    let since = 1000;
    let mut all = Sse::open(&api, &format!("?since={since}"), None).await;
    let mut only_a = Sse::open(&api, "?type=a", Some(500)).await;
    poster.await.unwrap();
    let total = 3000 + 200 * 15;

    let got: Vec<u64> = read_events(&mut all, total - since)
        .await
        .iter()
        .map(ev_seq)
        .collect();
    let want: Vec<u64> = (since as u64 + 1..=total as u64).collect();
    assert_seqs(
        &got,
        &want,
        &format!("every seq after {since} exactly once, in order"),
    );

    let stored_a: Vec<u64> = api
        .walk(&[("type", "a"), ("order", "asc")], 1000)
        .await
        .iter()
        .map(ev_seq)
        .filter(|&seq| seq > 500)
        .collect();
    let got_a: Vec<u64> = read_events(&mut only_a, stored_a.len())
        .await
        .iter()
        .map(ev_seq)
        .collect();
    assert_seqs(&got_a, &stored_a, "type=a after 500");
    assert_nothing_else(&api, &mut [&mut all]).await;
}

/// Waits until a reader reporting its last seq through `progress` is within `lead` events
/// of `posted`.
async fn reader_within(
    progress: &mut tokio::sync::watch::Receiver<u64>,
    posted: usize,
    lead: usize,
) {
    let wait = progress.wait_for(|&seq| seq as usize + lead >= posted);
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the reading subscriber stopped progressing")
        .expect("the reading subscriber failed (see its panic)");
}

/// A subscriber that stops reading is told it lagged and disconnected, while ingestion and
/// another subscriber carry on; it resumes from its last id without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_lagged_out_without_slowing_others() {
    const BATCH: usize = 100;
    let server = TestServer::start_temp(&["--stream-buffer", "1000"]).await;
    let api = server.api();
    let mut stalled = Sse::open(&api, "", None).await;

    // The reader records only ids; `progress` says how far it got (and closes if it fails).
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let (progress, mut reader_progress) = tokio::sync::watch::channel(0u64);
    let mut reader = Sse::open(&api, "", None).await;
    let reader_task = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(frame) = reader.next_within(Duration::from_secs(120)).await {
                assert_eq!(frame.event, "event", "the reading subscriber got {frame:?}");
                let seq = frame.id.unwrap();
                received.lock().unwrap().push(seq);
                progress.send_replace(seq);
            }
        })
    };
    // Post until the stalled one is lagged out (socket buffers first absorb several MB),
    // then some more, which it can only get by resuming. The reading subscriber is let stay
    // within half its buffer: on a busy machine this test's own parsing may be slow, and
    // that subscriber is not the one under test.
    let filler = "x".repeat(1500);
    let mut posted = 0usize;
    let mut batches_after_lag = None;
    let mut slowest = Duration::ZERO;
    while batches_after_lag != Some(0) {
        reader_within(&mut reader_progress, posted, 500).await;
        let events: Vec<Value> = (0..BATCH)
            .map(|i| json!({"type": "load", "message": format!("{posted}-{i} {filler}")}))
            .collect();
        let started = Instant::now();
        api.post_all(&events).await;
        slowest = slowest.max(started.elapsed());
        posted += BATCH;
        batches_after_lag = match batches_after_lag {
            Some(n) => Some(n - 1),
            None if server.logs().contains("lagged out") => Some(20),
            None => None,
        };
        assert!(
            posted <= 200_000,
            "no lagged-out subscriber after {posted} events; output:\n{}",
            server.logs()
        );
    }
    assert!(
        slowest < Duration::from_secs(10),
        "a POST took {slowest:?} while a subscriber was stalled"
    );
    let last = posted as u64;
    reader_within(&mut reader_progress, posted, 0).await;
    assert_seqs(
        &received.lock().unwrap(),
        &(1..=last).collect::<Vec<_>>(),
        "the reading subscriber got every event once, in order",
    );

    // The stalled one: a prefix of the events, then `lagged` naming the last one, then the end.
    let mut got = Vec::new();
    let lagged = loop {
        let frame = stalled.next().await.expect("ended without a lagged event");
        match frame.event.as_str() {
            "event" => got.push(frame.id.unwrap()),
            "lagged" => break frame,
            other => panic!("unexpected event {other}"),
        }
    };
    assert!(!got.is_empty());
    assert_seqs(
        &got,
        &(1..=got.len() as u64).collect::<Vec<_>>(),
        "the stalled subscriber",
    );
    let last_got = *got.last().unwrap();
    assert_eq!(lagged.json(), json!({"last_seq": last_got}));
    assert!(last_got < last, "it lagged, so it cannot have everything");
    assert!(
        stalled.next().await.is_none(),
        "the stream ends after lagged"
    );
    let prometheus = api.get("/metrics/prometheus").await.text;
    assert!(
        prometheus
            .lines()
            .any(|line| line == "eventide_stream_lagged_disconnects_total 1"),
        "{prometheus}"
    );

    let mut resumed = Sse::open(&api, "", Some(last_got)).await;
    let rest: Vec<u64> = read_events(&mut resumed, (last - last_got) as usize)
        .await
        .iter()
        .map(ev_seq)
        .collect();
    assert_seqs(
        &rest,
        &(last_got + 1..=last).collect::<Vec<_>>(),
        "resumed after lagging",
    );
    let id = api
        .post_one(json!({"type": "load", "message": "after"}))
        .await;
    assert_eq!(ev_id(&read_events(&mut resumed, 1).await[0]), id);
    reader_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_beyond_the_limit_get_503() {
    let server = TestServer::start_temp(&["--max-subscribers", "2"]).await;
    let api = server.api();
    let client = stream_client();
    let first = Sse::open(&api, "?type=a", None).await;
    // One resuming (counted while it replays too).
    let mut second = Sse::open(&api, "", Some(0)).await;

    let (status, retry_after, body) = Sse::try_open(&client, &api.base, "", None)
        .await
        .err()
        .expect("a third subscriber was accepted");
    assert_eq!(status, 503, "{body}");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().is_ok()),
        "no Retry-After"
    );
    let body: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_error_body(&body);

    drop(first);
    let mut third = poll_until(Duration::from_secs(30), || {
        let (client, base) = (client.clone(), api.base.clone());
        async move { Sse::try_open(&client, &base, "?type=a", None).await.ok() }
    })
    .await
    .expect("no subscriber accepted after one disconnected");
    let id = api.post_one(json!({"type": "a"})).await;
    assert_eq!(ev_id(&read_events(&mut third, 1).await[0]), id);
    assert_eq!(ev_id(&read_events(&mut second, 1).await[0]), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_promptly() {
    let mut server = TestServer::start_temp(&[]).await;
    let api = server.api();
    api.post_all(&mixed("history", 5)).await;
    let mut live = Sse::open(&api, "?type=signup", None).await;
    let mut resumed = Sse::open(&api, "", Some(0)).await;
    let mut idle = Sse::open(&api, "?type=never", None).await;
    assert_eq!(read_events(&mut resumed, 5).await.len(), 5);
    let id = api.post_one(json!({"type": "signup"})).await;
    assert_eq!(ev_id(&read_events(&mut live, 1).await[0]), id);
    assert_eq!(ev_id(&read_events(&mut resumed, 1).await[0]), id);

    let started = Instant::now();
    server.send_sigterm();
    for sse in [&mut live, &mut resumed, &mut idle] {
        let next = sse.next_within(Duration::from_secs(10)).await;
        assert!(
            next.is_none(),
            "expected the end of the stream, got {next:?}"
        );
    }
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", server.logs());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// A client that stopped reading cannot be sent the end of its stream: shutdown cuts its
/// connection after a grace period instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_subscriber_still_exits() {
    // A buffer that never fills: the stream stays open, blocked on its socket.
    let mut server = TestServer::start_temp(&["--stream-buffer", "1000000"]).await;
    let api = server.api();
    let _stalled = Sse::open(&api, "", None).await;
    // About 30 MB, far beyond what the socket buffers of a client that does not read hold.
    let filler = "x".repeat(1500);
    for n in 0..200 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"type": "load", "message": format!("{n}-{i} {filler}")}))
            .collect();
        api.post_all(&events).await;
    }
    let started = Instant::now();
    server.send_sigterm();
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", server.logs());
    assert!(
        server.logs().contains("cutting them"),
        "the stalled connection should have been cut; output:\n{}",
        server.logs()
    );
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let server = TestServer::start_temp(&[]).await;
    assert_names_parameter(&server.get("/stream?since=abc").await, "since");
    assert_names_parameter(&server.get("/stream?since=-3").await, "since");
    // Seqs are below 2^63: larger positions are refused, not read as "from the start".
    for beyond in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        assert_names_parameter(
            &server.get(&format!("/stream?since={beyond}")).await,
            "since",
        );
        let resp = server
            .get_with("/stream", &[("Last-Event-ID", beyond)])
            .await;
        assert_eq!(resp.status, 400, "Last-Event-ID: {beyond}");
    }
    assert_names_parameter(&server.get("/stream?colour=red").await, "colour");
    assert_names_parameter(&server.get("/stream?type=a&type=b").await, "type");
    let resp = server
        .get_with("/stream", &[("Last-Event-ID", "twelve")])
        .await;
    assert_names_parameter(&resp, "Last-Event-ID");
}

/// `/stream/metrics` pushes the `/metrics` document at once and then every second, shares the
/// subscriber limit with `/stream`, shows in the self-metrics, and ends at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stream_pushes_the_window_every_second() {
    let mut server = TestServer::start_temp(&["--max-subscribers", "1"]).await;
    let api = server.api();
    let mut pushes = Sse::open(&api, "/metrics?window=10m", None).await;
    let first = pushes.next().await.expect("a first push");
    assert_eq!(first.event, "metrics", "{first:?}");
    assert_eq!(first.json()["window_seconds"], json!(600));
    assert_eq!(first.json()["total"], json!(0));

    let (status, _, body) = Sse::try_open(&stream_client(), &api.base, "", None)
        .await
        .err()
        .expect("a second subscriber was accepted beyond --max-subscribers 1");
    assert_eq!(status, 503, "{body}");
    let prometheus = api.get("/metrics/prometheus").await;
    assert!(
        prometheus
            .text
            .lines()
            .any(|line| line == "eventide_stream_subscribers 1"),
        "{}",
        prometheus.text
    );

    api.post_all(&[json!({"type": "pushed"}), json!({"type": "pushed"})])
        .await;
    let posted = Instant::now();
    let mut previous = Instant::now();
    let mut gaps = Vec::new();
    loop {
        let frame = pushes.next().await.expect("the pushes went on");
        gaps.push(previous.elapsed());
        previous = Instant::now();
        if frame.json()["by_type"]["pushed"] == json!(2) {
            assert_eq!(frame.json()["total"], json!(2));
            break;
        }
        assert!(
            posted.elapsed() < Duration::from_secs(10),
            "never counted: {frame:?}"
        );
    }
    let next = pushes.next().await.expect("a push after that");
    let gap = previous.elapsed();
    assert_eq!(next.event, "metrics");
    assert!(
        gap > Duration::from_millis(500) && gap < Duration::from_secs(5),
        "pushes {gap:?} apart (before: {gaps:?})"
    );

    server.send_sigterm();
    let end = async {
        while let Some(frame) = pushes.next_within(Duration::from_secs(10)).await {
            assert_eq!(frame.event, "metrics");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), end)
        .await
        .expect("the metrics stream did not end at shutdown");
    assert_eq!(server.wait_exit().await.code(), Some(0));
}
