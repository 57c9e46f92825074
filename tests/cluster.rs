//! Scale-out with real processes: API nodes (`--role api`) and workers (`--role worker`) over
//! a Redis stream and the PostgreSQL store. Each test has a schema and a key prefix of its own
//! (or a Redis of its own), so the tests run in parallel. Outside CI, when PostgreSQL or Redis
//! cannot be reached, they say SKIPPED and pass; under `CI=true` they fail.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::postgres::TestSchema;
use common::proxy::TcpProxy;
use common::redis::{PrivateRedis, TestRedis};
use common::sse::Sse;
use common::*;
use eventide::queue::redis::{QueueKeys, RedisStream};
use serde_json::{json, Value};

/// Short, so that entries a killed worker held are claimed by another within the test.
const CLAIM_TIMEOUT: &str = "2s";
/// The longest anything a test waits for may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// Bound on one SSE read.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The processes of a test and what they share
// ---------------------------------------------------------------------------------------------

/// What the processes of one test share: the store's schema, the queue's Redis and key prefix.
struct Cluster {
    schema: TestSchema,
    redis_url: String,
    prefix: String,
    /// For the test's own checks, opened on first use (and again after a failure).
    redis: std::sync::Mutex<Option<::redis::Connection>>,
    pg: tokio::sync::OnceCell<tokio_postgres::Client>,
    /// Deletes the test's keys at the end, when on the shared Redis.
    _keys: Option<TestRedis>,
}

impl Cluster {
    /// On the shared Redis; `None` (after SKIPPED) when PostgreSQL or Redis cannot be reached.
    async fn new(label: &str) -> Option<Cluster> {
        let schema = TestSchema::new(label).await?;
        let keys = TestRedis::new(label)?;
        Some(Cluster {
            schema,
            redis_url: keys.url.clone(),
            prefix: keys.prefix.clone(),
            redis: Default::default(),
            pg: Default::default(),
            _keys: Some(keys),
        })
    }

    /// On a Redis of the test's own.
    async fn with_redis(label: &str, redis: &PrivateRedis) -> Option<Cluster> {
        Some(Cluster {
            schema: TestSchema::new(label).await?,
            redis_url: redis.url(),
            prefix: format!("test:{label}"),
            redis: Default::default(),
            pg: Default::default(),
            _keys: None,
        })
    }

    /// A process of `role` storing through `store_url` (the schema's server, or a proxy to
    /// it), with `extra` arguments.
    async fn start_with_store(&self, role: &str, store_url: &str, extra: &[&str]) -> TestServer {
        let mut args = vec![
            "--role",
            role,
            "--queue",
            &self.redis_url,
            "--queue-prefix",
            &self.prefix,
            "--store",
            store_url,
            "--postgres-schema",
            &self.schema.name,
            "--claim-timeout",
            CLAIM_TIMEOUT,
        ];
        args.extend_from_slice(extra);
        TestServer::start_temp(&args).await
    }

    async fn start(&self, role: &str) -> TestServer {
        self.start_with_store(role, &self.schema.url, &[]).await
    }

    fn keys(&self) -> QueueKeys {
        QueueKeys::with_prefix(&self.prefix)
    }

    async fn queue(&self) -> RedisStream {
        RedisStream::connect(&self.redis_url, self.keys())
            .await
            .expect("connect to the test's Redis")
    }

    /// `cmd` on the test's Redis.
    fn redis_query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> T {
        let mut conn = self.redis.lock().unwrap();
        let mut last_error = String::new();
        for _ in 0..3 {
            if conn.is_none() {
                let opened = ::redis::Client::open(self.redis_url.as_str())
                    .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(10)));
                match opened {
                    Ok(opened) => *conn = Some(opened),
                    Err(err) => {
                        last_error = format!("connecting: {err}");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                }
            }
            match cmd.query(conn.as_mut().unwrap()) {
                Ok(value) => return value,
                Err(err) => {
                    last_error = err.to_string();
                    *conn = None;
                }
            }
        }
        panic!("{cmd:?} on the test's Redis failed: {last_error}")
    }

    /// Entries delivered to each consumer and not acknowledged yet: `(consumer, count)`.
    fn pending_by_consumer(&self) -> Vec<(String, u64)> {
        let keys = self.keys();
        type Summary = (
            u64,
            Option<String>,
            Option<String>,
            Option<Vec<(String, u64)>>,
        );
        let (_, _, _, consumers): Summary =
            self.redis_query(::redis::cmd("XPENDING").arg(&keys.stream).arg(&keys.group));
        consumers.unwrap_or_default()
    }

    /// Entries in the dead-letter stream.
    fn dead_letter_count(&self) -> u64 {
        self.redis_query(::redis::cmd("XLEN").arg(&self.keys().dead_letters))
    }

    /// The store's schema, read directly: `sql` with `{schema}` standing for its quoted name.
    async fn sql(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let client = self
            .pg
            .get_or_init(|| async {
                let (client, connection) =
                    tokio_postgres::connect(&self.schema.url, tokio_postgres::NoTls)
                        .await
                        .expect("connect to PostgreSQL");
                tokio::spawn(connection);
                client
            })
            .await;
        let schema = format!("\"{}\"", self.schema.name);
        client
            .query(&sql.replace("{schema}", &schema), &[])
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Rows of the events table, and distinct ids among them.
    async fn stored(&self) -> (u64, u64) {
        let rows = self
            .sql("SELECT count(*), count(DISTINCT id) FROM {schema}.events")
            .await;
        let count = |i| rows[0].get::<_, i64>(i) as u64;
        (count(0), count(1))
    }

    async fn stored_ids(&self) -> HashSet<String> {
        self.sql("SELECT id FROM {schema}.events")
            .await
            .iter()
            .map(|row| String::from_utf8(row.get(0)).expect("UTF-8 id"))
            .collect()
    }

    /// Waits until PostgreSQL holds `want` events and the workers have acknowledged every
    /// entry; panics at once if it ever holds more (a duplicate), or after [`DEADLINE`].
    async fn wait_stored(&self, want: u64) {
        let queue = self.queue().await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (rows, ids) = self.stored().await;
            assert_eq!(rows, ids, "the same id stored twice");
            assert!(rows <= want, "{rows} events stored, only {want} sent");
            let backlog = queue.backlog().await.expect("the queue's backlog");
            if rows == want && backlog == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{rows} of {want} events stored and a backlog of {backlog} after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Event `i` of a test, with the client id `{tag}-{i}`.
fn event(tag: &str, i: usize) -> Value {
    let kind = ["click", "view", "signup"][i % 3];
    json!({
        "id": format!("{tag}-{i}"),
        "type": kind,
        "service": format!("svc-{}", i % 4),
        "user_id": format!("user-{}", i % 10),
        "metadata": {"i": i, "tag": tag},
    })
}

fn events(tag: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|i| event(tag, i)).collect()
}

/// Posts `events` as one batch; every one must be acknowledged (`202`).
async fn post_accepted(api: &Api, events: &[Value]) {
    let resp = api.post_events(&Value::Array(events.to_vec())).await;
    resp.expect_status(202);
    let body = resp.json();
    assert_eq!(body["accepted"], json!(events.len()), "answer: {body}");
    assert_eq!(body["errors"], json!([]), "answer: {body}");
}

/// For arguments built at run time where `&'static str` is wanted.
fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: sends a signal to a child process this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
}

/// SIGSTOP `pid` and wait until all its threads have stopped.
async fn freeze(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let stopped = poll_until(Duration::from_secs(10), || async move {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let all = tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                let state = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
                state.starts_with('T') || state.starts_with('t')
            })
        });
        all.then_some(())
    })
    .await;
    assert!(stopped.is_some(), "process {pid} did not stop");
}

/// `total` of `GET /events?page=1&page_size=1`, of `/metrics/summary` and of the last hour's
/// `/metrics` on `api`.
async fn totals(api: &Api) -> (u64, u64, u64) {
    let summary = api.get("/metrics/summary").await;
    summary.expect_status(200);
    let hour = api.get("/metrics?window=1h").await;
    hour.expect_status(200);
    (
        api.total(&[]).await,
        summary.json()["total_events"]
            .as_u64()
            .expect("total_events"),
        hour.json()["total"].as_u64().expect("total"),
    )
}

/// The id and metadata of `GET /events/{id}` on `api`.
async fn check_event(api: &Api, tag: &str, i: usize) {
    let id = format!("{tag}-{i}");
    let resp = api.get_event(&id).await;
    resp.expect_status(200);
    let body = resp.json();
    assert_eq!(body["id"], json!(id), "{body}");
    assert_eq!(body["metadata"], event(tag, i)["metadata"], "{body}");
    assert_event_shape(&body);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Two API nodes, two workers; one worker is SIGKILLed while it holds entries and a new one
/// started; clients retry some batches through the other node, some at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_stored_once_across_nodes_retries_and_a_killed_worker() {
    let Some(cluster) = Cluster::new("crash").await else {
        return;
    };
    const BATCH: usize = 100;
    const BATCHES: usize = 40;
    const N: usize = BATCH * BATCHES;
    let (api_a, api_b) = (cluster.start("api").await, cluster.start("api").await);
    let mut workers = vec![cluster.start("worker").await, cluster.start("worker").await];
    let nodes = [api_a.api(), api_b.api()];

    // Batch `b` goes through node `b % 2`; every fifth is sent again through the other node
    // once acknowledged, and every tenth through both nodes at once.
    let post = {
        let nodes = nodes.clone();
        move |b: usize| {
            let nodes = nodes.clone();
            async move {
                let batch = events("ev", b * BATCH..(b + 1) * BATCH);
                let (first, other) = (&nodes[b % 2], &nodes[(b + 1) % 2]);
                if b % 10 == 7 {
                    tokio::join!(post_accepted(first, &batch), post_accepted(other, &batch));
                } else {
                    post_accepted(first, &batch).await;
                    if b % 5 == 3 {
                        post_accepted(other, &batch).await;
                    }
                }
            }
        }
    };
    let post_concurrently = |batches: std::ops::Range<usize>| {
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let mine: Vec<usize> = batches.clone().filter(|b| b % 4 == task).collect();
                let post = post.clone();
                tokio::spawn(async move {
                    for b in mine {
                        post(b).await;
                    }
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await.expect("a client task failed");
            }
        }
    };

    post_concurrently(0..16).await;

    // One batch at a time, then both workers frozen: once one holds entries (delivered, not
    // acknowledged), SIGKILL it.
    let mut next = 16;
    let (dead_pid, orphaned) = loop {
        assert!(next < 30, "no worker was ever caught holding entries");
        post(next).await;
        next += 1;
        let pids: Vec<u32> = workers.iter().map(TestServer::pid).collect();
        for &pid in &pids {
            freeze(pid).await;
        }
        let pending = cluster.pending_by_consumer();
        let holding = |pid: u32| {
            pending
                .iter()
                .any(|(name, count)| name.ends_with(&format!("-{pid}")) && *count > 0)
        };
        let victim = pids.iter().position(|&pid| holding(pid));
        if let Some(victim) = victim {
            let mut dead = workers.remove(victim);
            dead.kill9().await;
            for survivor in &workers {
                signal(survivor.pid(), libc::SIGCONT);
            }
            let dead_pid = pids[victim];
            let orphaned: u64 = cluster
                .pending_by_consumer()
                .iter()
                .filter(|(name, _)| name.ends_with(&format!("-{dead_pid}")))
                .map(|(_, count)| count)
                .sum();
            break (dead_pid, orphaned);
        }
        for &pid in &pids {
            signal(pid, libc::SIGCONT);
        }
    };
    assert!(orphaned > 0, "the killed worker held no entries");
    workers.push(cluster.start("worker").await);

    post_concurrently(next..BATCHES).await;

    cluster.wait_stored(N as u64).await;
    let ids = cluster.stored_ids().await;
    let want: HashSet<String> = (0..N).map(|i| format!("ev-{i}")).collect();
    assert!(ids == want, "the stored ids are not the ids sent");
    // The killed worker's entries were claimed (XAUTOCLAIM) and acknowledged by the others.
    assert!(
        cluster
            .pending_by_consumer()
            .iter()
            .all(|(_, count)| *count == 0),
        "entries still pending: {:?}",
        cluster.pending_by_consumer()
    );
    let claims = workers
        .iter()
        .filter(|worker| worker.logs().contains("claimed entries left pending"))
        .count();
    assert!(
        claims > 0,
        "no worker claimed the {orphaned} entries worker {dead_pid} held"
    );
    assert_eq!(cluster.dead_letter_count(), 0);

    for node in &nodes {
        assert_eq!(totals(node).await, (N as u64, N as u64, N as u64));
        for i in [0, 777, 1999, 2345, N - 1] {
            check_event(node, "ev", i).await;
        }
        let dead_letters = node.get("/dead-letters").await;
        dead_letters.expect_status(200);
        assert_eq!(dead_letters.json()["dead_letters"], json!([]));
    }

    // A cursor one API node gave out is good on the other: they share the signing secret.
    let (first_page, next) = nodes[0].page(&[("limit", "500")]).await;
    let cursor = next.expect("more than one page");
    let (second_page, _) = nodes[1]
        .page(&[("limit", "500"), ("cursor", &cursor)])
        .await;
    assert_eq!(second_page.len(), 500);
    assert!(ids_differ(&first_page, &second_page));

    // Nothing of a cluster lives in a data directory: no process took one's lock.
    for process in [&api_a, &api_b].into_iter().chain(&workers) {
        let entries: Vec<_> = std::fs::read_dir(&process.data_dir).unwrap().collect();
        assert!(
            entries.is_empty(),
            "{} holds {entries:?}",
            process.data_dir.display()
        );
    }
}

fn ids_differ(a: &[Value], b: &[Value]) -> bool {
    let ids: HashSet<&Value> = a.iter().map(|event| &event["id"]).collect();
    b.iter().all(|event| !ids.contains(&event["id"]))
}

/// A subscriber of node B gets what node A ingests, in order; a resume (on either node, from
/// the stream or from the store below it) has no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_spans_nodes_and_resumes_without_gap_or_duplicate() {
    let Some(cluster) = Cluster::new("stream").await else {
        return;
    };
    let (api_a, api_b) = (cluster.start("api").await, cluster.start("api").await);
    let mut worker = cluster.start("worker").await;
    let (a, b) = (api_a.api(), api_b.api());
    let ids_of = |events: &[Value]| -> Vec<String> { events.iter().map(ev_id).collect() };
    let want = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("s-{i}")).collect()
    };
    let assert_ascending = |events: &[Value]| {
        for pair in events.windows(2) {
            assert!(ev_seq(&pair[0]) < ev_seq(&pair[1]), "{pair:?}");
        }
    };

    // Live, across nodes: 30 events through A, read on B; disconnect after 12.
    let mut on_b = Sse::open(&b, "", None).await;
    for batch in 0..3 {
        post_accepted(&a, &events("s", batch * 10..batch * 10 + 10)).await;
    }
    let first = on_b.events(12, READ_TIMEOUT).await;
    assert_eq!(ids_of(&first), want(0..12));
    assert_ascending(&first);
    let resume_from = ev_seq(&first[11]);
    drop(on_b);

    // 20 more while disconnected, then a resume on B: the rest, in order, nothing twice.
    post_accepted(&a, &events("s", 30..50)).await;
    let mut resumed = Sse::open(&b, "", Some(resume_from)).await;
    let rest = resumed.events(38, READ_TIMEOUT).await;
    assert_eq!(ids_of(&rest), want(12..50));
    assert_ascending(&[first.clone(), rest.clone()].concat());
    post_accepted(&a, &[event("s", 50)]).await;
    let sentinel = resumed.events(1, READ_TIMEOUT).await;
    assert_eq!(ids_of(&sentinel), want(50..51), "something came before it");
    drop(resumed);

    // Once the worker has stored everything and trimmed the stream, stop it: the next events
    // stay in the stream. A resume on A then reads the store below the stream's first entry
    // and the stream above it.
    cluster.wait_stored(51).await;
    let queue = cluster.queue().await;
    let trimmed = poll_until(DEADLINE, || async {
        queue
            .first_seq()
            .await
            .expect("first entry")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(trimmed.is_some(), "the stream was never trimmed");
    worker.kill9().await;
    post_accepted(&b, &events("s", 51..60)).await;
    assert_eq!(cluster.stored().await.0, 51);
    let mut across = Sse::open(&a, "", Some(resume_from)).await;
    let all = across.events(48, READ_TIMEOUT).await;
    assert_eq!(ids_of(&all), want(12..60));
    assert_ascending(&all);
    assert_eq!(
        ids_of(&rest),
        ids_of(&all[..38]),
        "the store and the stream disagree"
    );
    assert_eq!(
        all[..38]
            .iter()
            .zip(&rest)
            .filter(|(x, y)| ev_seq(x) != ev_seq(y))
            .count(),
        0,
        "positions changed once stored"
    );
    post_accepted(&b, &[event("s", 60)]).await;
    assert_eq!(
        ids_of(&across.events(1, READ_TIMEOUT).await),
        want(60..61),
        "something came before it"
    );
}

/// Redis goes away and comes back (a Redis of the test's own, without persistence): API nodes
/// answer 503, never 202, and are not ready meanwhile; afterwards they take events again
/// without a restart, and the worker stores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_nodes_answer_503_while_redis_is_down_and_recover_by_themselves() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let Some(cluster) = Cluster::with_redis("redisdown", &redis).await else {
        return;
    };
    let api = cluster.start("api").await;
    let _worker = cluster.start("worker").await;
    post_accepted(&api, &events("r", 0..50)).await;
    cluster.wait_stored(50).await;

    redis.kill();
    // Readiness notices without any POST.
    let not_ready = poll_until(DEADLINE, || async {
        let ready = api.get("/health/ready").await;
        (ready.status == 503).then_some(ready)
    })
    .await
    .expect("/health/ready never answered 503 with Redis down");
    assert!(not_ready.text.contains("queue"), "{}", not_ready.text);
    for batch in 5..10 {
        let resp = api
            .post_events(&Value::Array(events("r", batch * 10..batch * 10 + 10)))
            .await;
        resp.expect_error(503);
        assert!(resp.header("retry-after").is_some(), "no Retry-After");
    }
    api.get("/health/ready").await.expect_status(503);

    // Redis comes back empty (no persistence): the stream and the consumer group are gone;
    // the API node adds to a new stream and the worker recreates the group on it.
    redis.launch().expect("restart redis-server");
    poll_until(DEADLINE, || async {
        (api.get("/health/ready").await.status == 200).then_some(())
    })
    .await
    .expect("/health/ready never answered 200 again");
    let mut accepted = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    for batch in 10..15 {
        let batch_events = events("r", batch * 10..batch * 10 + 10);
        loop {
            let resp = api.post_events(&Value::Array(batch_events.clone())).await;
            match resp.status {
                202 => break,
                503 => assert!(Instant::now() < deadline, "still 503 after {DEADLINE:?}"),
                other => panic!("answered {other}: {}", resp.text),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        accepted.extend(batch_events.iter().map(ev_id));
    }
    cluster.wait_stored(100).await;
    let mut want: HashSet<String> = (0..50).map(|i| format!("r-{i}")).collect();
    want.extend(accepted);
    assert!(
        cluster.stored_ids().await == want,
        "stored: what was acknowledged, nothing refused"
    );
}

/// PostgreSQL goes away from the worker (a proxy between them is cut): events are still
/// acknowledged (they are in Redis), the worker acknowledges nothing and dead-letters nothing;
/// when PostgreSQL is back the backlog drains and every event is stored exactly once, also
/// after cuts in the middle of its transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_holds_the_backlog_and_nothing_acknowledged_is_lost() {
    let Some(cluster) = Cluster::new("pgdown").await else {
        return;
    };
    let config: tokio_postgres::Config = cluster.schema.url.parse().expect("PostgreSQL URL");
    let upstream = match (config.get_hosts().first(), config.get_ports().first()) {
        (Some(tokio_postgres::config::Host::Tcp(host)), port) => {
            format!("{host}:{}", port.copied().unwrap_or(5432))
        }
        _ => panic!("EVENTIDE_TEST_POSTGRES_URL must name a TCP host for this test"),
    };
    let proxy = TcpProxy::start(&upstream).await;
    let proxied_url = format!(
        "postgres://{}{}@127.0.0.1:{}/{}",
        config.get_user().unwrap_or("postgres"),
        config
            .get_password()
            .map(|pw| format!(":{}", String::from_utf8_lossy(pw)))
            .unwrap_or_default(),
        proxy.port(),
        config.get_dbname().unwrap_or("postgres"),
    );
    let api = cluster.start("api").await;
    let worker = cluster.start_with_store("worker", &proxied_url, &[]).await;
    let queue = cluster.queue().await;
    post_accepted(&api, &events("p", 0..100)).await;
    cluster.wait_stored(100).await;

    proxy.cut();
    for batch in 1..6 {
        post_accepted(&api, &events("p", batch * 100..batch * 100 + 100)).await;
    }
    poll_until(DEADLINE, || async {
        worker
            .logs()
            .contains("the store is unavailable")
            .then_some(())
    })
    .await
    .expect("the worker never noticed the outage");
    // Long enough for several retries (and a claim timeout): none may acknowledge or
    // dead-letter anything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        queue.backlog().await.unwrap(),
        500,
        "the worker acknowledged"
    );
    assert_eq!(cluster.dead_letter_count(), 0);
    assert_eq!(cluster.stored().await, (100, 100));

    // Back, but cut again and again while the backlog drains and more events come.
    proxy.resume();
    for batch in 6..11 {
        post_accepted(&api, &events("p", batch * 100..batch * 100 + 100)).await;
        // Cut at varying points of the worker's work.
        tokio::time::sleep(Duration::from_millis(37 * (batch as u64 % 4))).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.resume();
    }
    cluster.wait_stored(1100).await;
    let want: HashSet<String> = (0..1100).map(|i| format!("p-{i}")).collect();
    assert!(cluster.stored_ids().await == want, "not every event stored");
    assert_eq!(cluster.dead_letter_count(), 0);
    let (_, summary_total, _) = totals(&api).await;
    assert_eq!(summary_total, 1100, "the event count is off");
    assert!(worker.logs().contains("the store is available again"));
}

/// Keys live in PostgreSQL: a key made offline on the store works on every API node, one
/// created through a node is accepted by the other, and a revocation through one node is
/// refused by the other within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shared_and_a_revocation_reaches_every_node_within_a_second() {
    let Some(cluster) = Cluster::new("keys").await else {
        return;
    };
    let (status, stdout, stderr) = run_binary(&[
        "keys",
        "create",
        "--name",
        "admin",
        "--scope",
        "admin",
        "--json",
        "--store",
        &cluster.schema.url,
        "--postgres-schema",
        &cluster.schema.name,
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let admin_key: Value = serde_json::from_str(stdout.trim()).unwrap();
    let (a, b) = (cluster.start("api").await, cluster.start("api").await);
    let _worker = cluster.start("worker").await;
    a.get("/events").await.expect_error(401);
    let admin_a = a.with_key(admin_key["key"].as_str().unwrap());
    admin_a.get("/events").await.expect_status(200);

    let made = admin_a
        .create_key(&json!({"name": "producer", "scopes": ["ingest"]}))
        .await;
    let producer_b = b.with_key(made["key"].as_str().unwrap());
    let accepted = poll_until(Duration::from_secs(5), || {
        let producer_b = producer_b.clone();
        async move {
            let resp = producer_b.post_events(&json!({"type": "k"})).await;
            (resp.status == 202).then_some(())
        }
    })
    .await;
    assert!(
        accepted.is_some(),
        "node B never accepted the key made on node A"
    );

    admin_a.revoke_key(&made).await;
    let started = std::time::Instant::now();
    // Refused at once on the node that revoked...
    let producer_a = a.with_key(made["key"].as_str().unwrap());
    producer_a
        .post_events(&json!({"type": "k"}))
        .await
        .expect_error(401);
    // ...and within a second on the other.
    loop {
        let resp = producer_b.post_events(&json!({"type": "k"})).await;
        if resp.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "node B still took the revoked key after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Combinations that cannot work stop start-up with one clear line; passwords in URLs never
/// reach the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_combinations_are_refused_and_passwords_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap().to_owned();
    let refused = |args: Vec<&'static str>, env: Option<(&'static str, &'static str)>| {
        let dir = dir.clone();
        async move {
            let mut command = tokio::process::Command::new(BIN);
            command
                .args(["serve", "--addr", "127.0.0.1:0", "--data-dir", &dir])
                .args(&args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            if let Some((name, value)) = env {
                command.env(name, value);
            }
            let out = tokio::time::timeout(Duration::from_secs(20), command.output())
                .await
                .unwrap_or_else(|_| panic!("{args:?} still running after 20 s"))
                .expect("run eventide");
            let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
            assert!(
                matches!(out.status.code(), Some(code) if code != 0),
                "{args:?} {env:?}: exited with {}; stderr: {stderr}",
                out.status
            );
            stderr
        }
    };
    let one_line = |stderr: &str| {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "not one line: {stderr}");
    };
    let api = refused(vec!["--role", "api"], None).await;
    one_line(&api);
    assert!(api.contains("--role api needs --queue redis://"), "{api}");
    let env = refused(vec![], Some(("EVENTIDE_ROLE", "worker"))).await;
    one_line(&env);
    assert!(
        env.contains("--role worker needs --queue redis://"),
        "{env}"
    );
    let embedded = refused(vec!["--queue", "redis://127.0.0.1:6379"], None).await;
    one_line(&embedded);
    assert!(embedded.contains("needs --store postgres://"), "{embedded}");
    let typo = refused(vec!["--store", "postgress://u:secretpw@h/db"], None).await;
    one_line(&typo);
    assert!(
        typo.contains("u:***@h") && !typo.contains("secretpw"),
        "{typo}"
    );
    let unreachable = refused(
        vec![
            "--store",
            "postgres://postgres:secretpw@127.0.0.1:1/postgres",
            "--queue",
            "redis://:secretpw@127.0.0.1:1",
        ],
        None,
    )
    .await;
    assert!(!unreachable.contains("secretpw"), "{unreachable}");
    assert!(unreachable.contains("postgres:***@"), "{unreachable}");

    // `--help` shows which variables are read, not their values.
    let help = tokio::process::Command::new(BIN)
        .args(["serve", "--help"])
        .env("EVENTIDE_STORE", "postgres://u:secretpw@h/db")
        .env("EVENTIDE_QUEUE", "redis://:secretpw@h")
        .output()
        .await
        .expect("eventide serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("EVENTIDE_STORE"), "{help}");
    assert!(!help.contains("secretpw"), "{help}");

    // A cluster process whose store URL holds a password (trust authentication ignores it),
    // logging at debug, through start, ingest, queries and shutdown.
    let Some(cluster) = Cluster::new("secrets").await else {
        return;
    };
    let Some(url) = cluster
        .schema
        .url
        .strip_prefix("postgres://postgres@")
        .map(|rest| format!("postgres://postgres:secretpw@{rest}"))
    else {
        eprintln!("not checked with a password: EVENTIDE_TEST_POSTGRES_URL is not postgres://postgres@...");
        return;
    };
    let no_redis = refused(
        vec![
            "--store",
            leak(&url),
            "--postgres-schema",
            leak(&cluster.schema.name),
            "--queue",
            "redis://:secretpw@127.0.0.1:1",
        ],
        None,
    )
    .await;
    assert!(no_redis.contains("redis://:***@127.0.0.1:1"), "{no_redis}");
    assert!(!no_redis.contains("secretpw"), "{no_redis}");
    let mut all = cluster
        .start_with_store("all", &url, &["--log-level", "debug"])
        .await;
    post_accepted(&all, &events("pw", 0..20)).await;
    cluster.wait_stored(20).await;
    check_event(&all, "pw", 7).await;
    all.get("/health/detailed").await.expect_status(200);
    all.terminate().await;
    let logs = all.logs();
    assert!(
        logs.contains("postgres:***@"),
        "the store URL is not logged: {logs}"
    );
    assert!(!logs.contains("secretpw"), "the password is logged: {logs}");
}
