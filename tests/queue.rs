//! The Redis Streams queue and the worker loop, against a real Redis (keys of each test's own,
//! see `common::redis`) and real stores: SQLite files, and PostgreSQL (a schema per test).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::postgres::TestSchema;
use common::redis::{Proxy, TestRedis};
use common::{join_within, wait_for};
use eventide::auth::keys::KeyRecord;
use eventide::consume::worker::{self, WorkerConfig};
use eventide::event::{NewEvent, StoredEvent};
use eventide::queue::redis::{entry_id_of, seq_of, RedisStream};
use eventide::record::encode_payload;
use eventide::store::partitioning::TimeRange;
use eventide::store::postgres::PostgresStore;
use eventide::store::sqlite::SqliteStore;
use eventide::store::{
    AppendOutcome, EventFilter, EventQuery, Events, Purged, ReplayQuery, RollupQuery, RollupRow,
    Store, StoreError, StoreResult,
};
use tokio::sync::watch;

const NOW_MS: i64 = 1_760_000_000_000;

fn new_event(i: u64) -> NewEvent {
    NewEvent {
        id: Some(format!("client-{i}")),
        kind: ["click", "view", "signup"][(i % 3) as usize].to_owned(),
        timestamp_ms: NOW_MS + i as i64,
        timestamp_sent: true,
        service: Some(format!("svc-{}", i % 4)),
        user_id: Some(format!("user-{}", i % 10)),
        message: (i % 2 == 0).then(|| format!("message {i}")),
        metadata: Some(format!(r#"{{"n":{i}}}"#)),
    }
}

/// Payloads of events `range` (ids `client-{i}`).
fn payloads(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|i| {
            let event = new_event(i);
            let mut out = Vec::new();
            encode_payload(&mut out, &event, event.id.as_deref().unwrap(), NOW_MS);
            out
        })
        .collect()
}

async fn publish(queue: &RedisStream, payloads: &[Vec<u8>]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for chunk in payloads.chunks(1000) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        seqs.extend(queue.publish(&refs).await.expect("publish"));
    }
    seqs
}

async fn connect(redis: &TestRedis) -> RedisStream {
    RedisStream::connect(&redis.url, redis.keys.clone())
        .await
        .expect("connect to Redis")
}

fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.path().join("index.db"), false).expect("open SQLite"))
}

/// What `on_stored` saw, over every call.
#[derive(Default)]
struct Seen {
    stored: AtomicU64,
    skipped: AtomicU64,
    ids: Mutex<Vec<String>>,
}

/// A running worker: stop it with [`Running::stop`].
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Seen>,
}

impl Running {
    async fn stop(self) -> Arc<Seen> {
        self.stop.send(true).unwrap();
        join_within(Duration::from_secs(20), "the worker", [self.task]).await;
        self.seen
    }
}

fn config(consumer: &str) -> WorkerConfig {
    WorkerConfig {
        consumer: consumer.to_owned(),
        batch: 500,
        claim_timeout: Duration::from_secs(30),
        max_attempts: 3,
        block: Duration::from_millis(200),
    }
}

/// The worker's logs on stderr when `EVENTIDE_TEST_LOG` is set (once per test binary).
fn init_logs() {
    if std::env::var_os("EVENTIDE_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("eventide=debug")
            .with_test_writer()
            .try_init();
    }
}

fn start_worker(queue: &RedisStream, store: Arc<dyn Store>, config: WorkerConfig) -> Running {
    init_logs();
    let seen = Arc::new(Seen::default());
    let on_stored = {
        let seen = seen.clone();
        Arc::new(move |events: &[StoredEvent], outcome: &AppendOutcome| {
            let skipped: HashSet<u64> = outcome.skipped.iter().copied().collect();
            let mut ids = seen.ids.lock().unwrap();
            for event in events {
                if skipped.contains(&event.seq) {
                    seen.skipped.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.stored.fetch_add(1, Ordering::Relaxed);
                    ids.push(event.id.clone());
                }
            }
        })
    };
    let (stop, stop_rx) = watch::channel(false);
    let queue = queue.clone();
    let task = tokio::spawn(async move {
        let health = eventide::health::Health::new(None);
        worker::run(queue, store, config, on_stored, &health, stop_rx).await
    });
    Running { stop, task, seen }
}

async fn drained(queue: &RedisStream, store: &Arc<dyn Store>, count: u64) -> bool {
    queue.backlog().await.unwrap() == 0 && store.event_count().await.unwrap() == count
}

/// What most tests here start from: Redis keys of the test's own, the queue on them, and a
/// store in a directory of its own for the workers to fill.
struct Setup {
    redis: TestRedis,
    queue: RedisStream,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// With a SQLite store; `None` when there is no Redis to test against (the test is
    /// skipped).
    async fn new(name: &str) -> Option<Setup> {
        let redis = TestRedis::new(name)?;
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir);
        let queue = connect(&redis).await;
        Some(Setup {
            redis,
            queue,
            store,
            _dir: dir,
        })
    }

    /// [`Setup::new`], the store wrapped in a [`FlakyStore`] the test makes fail on demand.
    async fn flaky(name: &str) -> Option<(Setup, Arc<FlakyStore>)> {
        let mut setup = Setup::new(name).await?;
        let flaky = FlakyStore::new(setup.store.clone());
        setup.store = flaky.clone();
        Some((setup, flaky))
    }

    /// Publishes `sent` and starts a worker (`w`, default settings) on them: their seqs, and
    /// the worker.
    async fn publish_to_worker(&self, sent: &[Vec<u8>]) -> (Vec<u64>, Running) {
        let seqs = publish(&self.queue, sent).await;
        (seqs, self.start_worker(config("w")))
    }

    /// [`Setup::publish_to_worker`], then waits (at most 20 s, naming `what`) until the store
    /// holds `stored` events and the backlog is empty.
    async fn work_through(&self, sent: &[Vec<u8>], stored: u64, what: &str) -> (Vec<u64>, Running) {
        let (seqs, running) = self.publish_to_worker(sent).await;
        self.wait_drained(Duration::from_secs(20), what, stored)
            .await;
        (seqs, running)
    }

    fn start_worker(&self, config: WorkerConfig) -> Running {
        start_worker(&self.queue, self.store.clone(), config)
    }

    /// Waits (at most `limit`, naming `what`) until the store holds `count` events and the
    /// backlog is empty.
    async fn wait_drained(&self, limit: Duration, what: &str, count: u64) {
        wait_for(limit, what, || drained(&self.queue, &self.store, count)).await;
    }
}

fn xlen(redis: &TestRedis, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap()
}

/// XREADGROUP by hand as `consumer`: entries delivered to it, never acknowledged. Returns
/// their ids.
fn read_by_hand(redis: &TestRedis, consumer: &str, count: usize) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&redis.keys.group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(&redis.keys.stream)
        .arg(">")
        .query(&mut redis.connection())
        .unwrap();
    let redis::Value::Array(streams) = reply else {
        panic!("unexpected XREADGROUP reply {reply:?}")
    };
    let redis::Value::Array(stream) = &streams[0] else {
        panic!("unexpected stream {streams:?}")
    };
    let redis::Value::Array(entries) = &stream[1] else {
        panic!("unexpected entries {stream:?}")
    };
    entries
        .iter()
        .map(|entry| {
            let redis::Value::Array(parts) = entry else {
                panic!("unexpected entry {entry:?}")
            };
            let redis::Value::BulkString(id) = &parts[0] else {
                panic!("unexpected id {parts:?}")
            };
            String::from_utf8(id.clone()).unwrap()
        })
        .collect()
}

fn ack_by_hand(redis: &TestRedis, ids: &[String]) {
    let _: u64 = redis::cmd("XACK")
        .arg(&redis.keys.stream)
        .arg(&redis.keys.group)
        .arg(ids)
        .query(&mut redis.connection())
        .unwrap();
}

#[test]
fn seqs_round_trip_through_entry_ids() {
    for seq in [0, 1, (1 << 20) - 1, 1 << 20, 1_760_000_000_000 << 20 | 12] {
        assert_eq!(seq_of(&entry_id_of(seq)), Some(seq));
    }
    assert_eq!(
        entry_id_of(1_760_000_000_000 << 20 | 12),
        "1760000000000-12"
    );
    assert_eq!(seq_of("1-1048576"), None);
}

#[tokio::test]
async fn connecting_to_no_server_fails_fast_without_the_password() {
    let keys = eventide::queue::redis::QueueKeys::with_prefix("nowhere");
    let started = Instant::now();
    let err = RedisStream::connect("redis://user:s3cret-pw@127.0.0.1:1", keys)
        .await
        .expect_err("nothing listens on port 1");
    let text = format!("{err:#}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!text.contains("s3cret-pw"), "the password leaks: {text}");
    assert!(text.contains("127.0.0.1:1"), "the server is named: {text}");
}

#[tokio::test]
async fn published_entries_are_read_back_in_order() {
    let Some(redis) = TestRedis::new("publish") else {
        return;
    };
    let queue = connect(&redis).await;
    assert_eq!(queue.first_seq().await.unwrap(), None);
    assert_eq!(queue.last_seq().await.unwrap(), 0);
    assert_eq!(queue.backlog().await.unwrap(), 0);
    assert!(queue.range_after(0, 10).await.unwrap().is_empty());

    let sent = payloads(0..5);
    let seqs = publish(&queue, &sent).await;
    assert_eq!(seqs.len(), 5);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let all = queue.range_after(0, 10).await.unwrap();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs);
    assert_eq!(all.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), sent);
    let middle = queue.range_after(seqs[1], 2).await.unwrap();
    assert_eq!(
        middle.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        seqs[2..4]
    );
    assert!(queue.range_after(seqs[4], 10).await.unwrap().is_empty());

    assert_eq!(queue.first_seq().await.unwrap(), Some(seqs[0]));
    assert_eq!(queue.last_seq().await.unwrap(), seqs[4]);
    assert_eq!(queue.backlog().await.unwrap(), 5, "nothing consumed yet");

    // Blocking read: nothing after the last entry within the block time...
    let started = Instant::now();
    let none = queue
        .read_after(seqs[4], 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    // ...entries already there come at once...
    let some = queue
        .read_after(seqs[2], 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(some.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs[3..]);
    // ...and one published while waiting wakes the reader.
    let reader = {
        let queue = queue.clone();
        let after = seqs[4];
        tokio::spawn(async move { queue.read_after(after, 10, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = publish(&queue, &payloads(5..6)).await;
    let started = Instant::now();
    let woke = reader.await.unwrap().unwrap();
    assert_eq!(woke.iter().map(|(s, _)| *s).collect::<Vec<_>>(), late);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(queue.last_seq().await.unwrap(), late[0]);
    queue.ping().await.unwrap();

    // A deletion inside the unread range makes Redis answer a nil lag: still counted.
    assert_eq!(queue.backlog().await.unwrap(), 6);
    let _: u64 = redis::cmd("XDEL")
        .arg(&redis.keys.stream)
        .arg(entry_id_of(seqs[2]))
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(queue.backlog().await.unwrap(), 5);
}

#[tokio::test]
async fn a_worker_stores_and_acknowledges_each_event_once() {
    let Some(setup) = Setup::new("worker").await else {
        return;
    };
    let Setup { queue, store, .. } = &setup;
    const N: u64 = 3000;
    let sent = payloads(0..N);
    let seqs = publish(queue, &sent).await;
    assert_eq!(queue.backlog().await.unwrap(), N);

    let running = setup.start_worker(config("w1"));
    setup
        .wait_drained(Duration::from_secs(30), "the backlog to drain", N)
        .await;
    // Stored with the stream positions as seqs.
    let first = store.get("client-0").await.unwrap().unwrap();
    assert_eq!(first.seq, seqs[0]);
    assert_eq!(first.metadata.as_deref(), Some(r#"{"n":0}"#));
    assert_eq!(store.indexed_seq().await.unwrap(), *seqs.last().unwrap());

    // The same ids again (a client retrying through another API node): nothing new.
    publish(queue, &sent[..500]).await;
    wait_for(Duration::from_secs(30), "the retries to drain", || async {
        queue.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(store.event_count().await.unwrap(), N);
    // Everything acknowledged: the worker's periodic trim (every 5 s) empties the stream.
    wait_for(
        Duration::from_secs(15),
        "the stream to be trimmed",
        || async { queue.first_seq().await.unwrap().is_none() },
    )
    .await;
    let seen = running.stop().await;
    assert_eq!(seen.stored.load(Ordering::Relaxed), N);
    assert_eq!(seen.skipped.load(Ordering::Relaxed), 500);
    let count = store.count(EventFilter::default()).await.unwrap();
    assert_eq!(count, N);
}

#[tokio::test]
async fn two_workers_in_the_group_store_each_event_once() {
    let Some(setup) = Setup::new("two-workers").await else {
        return;
    };
    let Setup { queue, .. } = &setup;
    const N: u64 = 4000;
    let small_batches = |name: &str| WorkerConfig {
        batch: 100,
        ..config(name)
    };
    let a = setup.start_worker(small_batches("a"));
    let b = setup.start_worker(small_batches("b"));
    publish(queue, &payloads(0..N)).await;
    setup
        .wait_drained(Duration::from_secs(30), "the backlog to drain", N)
        .await;
    let (a, b) = (a.stop().await, b.stop().await);
    let mut ids: Vec<String> = a.ids.lock().unwrap().clone();
    ids.extend(b.ids.lock().unwrap().iter().cloned());
    assert_eq!(
        ids.len() as u64,
        N,
        "each event stored by exactly one worker"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len() as u64, N);
    assert_eq!(
        a.skipped.load(Ordering::Relaxed) + b.skipped.load(Ordering::Relaxed),
        0,
        "no entry delivered twice"
    );
}

#[tokio::test]
async fn entries_left_pending_by_a_dead_consumer_are_claimed() {
    let Some(setup) = Setup::new("claim").await else {
        return;
    };
    let Setup { redis, queue, .. } = &setup;
    publish(queue, &payloads(0..30)).await;
    // A consumer reads 20 and dies before acknowledging.
    let taken = read_by_hand(redis, "dead-consumer", 20);
    assert_eq!(taken.len(), 20);
    assert_eq!(queue.backlog().await.unwrap(), 30);

    let running = setup.start_worker(WorkerConfig {
        claim_timeout: Duration::from_millis(600),
        batch: 7,
        ..config("survivor")
    });
    setup
        .wait_drained(
            Duration::from_secs(20),
            "the claimed entries to be stored",
            30,
        )
        .await;
    // The dead consumer, with nothing pending any more and quiet for ten claim timeouts, is
    // deleted from the group; the live one stays.
    wait_for(
        Duration::from_secs(20),
        "the dead consumer to go",
        || async { consumers(redis) == ["survivor"] },
    )
    .await;
    let seen = running.stop().await;
    assert_eq!(seen.stored.load(Ordering::Relaxed), 30);
}

/// Names of the group's consumers.
fn consumers(redis: &TestRedis) -> Vec<String> {
    let reply: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&redis.keys.stream)
        .arg(&redis.keys.group)
        .query(&mut redis.connection())
        .unwrap();
    reply
        .iter()
        .map(|c| match &c["name"] {
            redis::Value::BulkString(name) => String::from_utf8(name.clone()).unwrap(),
            other => panic!("unexpected name {other:?}"),
        })
        .collect()
}

/// A store that fails on demand: entirely (`down`: every call, like a server that is gone),
/// every write (`read_only`), or only batches holding the event id `poison` (like a row the database refuses).
struct FlakyStore {
    inner: Arc<dyn Store>,
    down: AtomicBool,
    /// Reads work, every write fails (a full disk, a read-only replica).
    read_only: AtomicBool,
    poison: Mutex<Option<String>>,
    append_calls: AtomicU64,
}

impl FlakyStore {
    fn new(inner: Arc<dyn Store>) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner,
            down: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
            poison: Mutex::new(None),
            append_calls: AtomicU64::new(0),
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            anyhow::bail!("connection refused (the test store is down)");
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn append_batch(&self, events: Events, indexed_seq: u64) -> StoreResult<AppendOutcome> {
        self.append_calls.fetch_add(1, Ordering::SeqCst);
        self.check().map_err(StoreError::Unavailable)?;
        if self.read_only.load(Ordering::SeqCst) {
            let full = anyhow::anyhow!("could not extend file: No space left on device");
            return Err(StoreError::Unavailable(full));
        }
        let poison = self.poison.lock().unwrap().clone();
        if let Some(poison) = poison {
            if events.iter().any(|e| e.id == poison) {
                let refused =
                    anyhow::anyhow!("value too long for type character varying (event {poison})");
                return Err(StoreError::Rejected(refused));
            }
        }
        self.inner.append_batch(events, indexed_seq).await
    }
    async fn indexed_seq(&self) -> anyhow::Result<u64> {
        self.check()?;
        self.inner.indexed_seq().await
    }
    async fn query(&self, query: EventQuery) -> anyhow::Result<Vec<StoredEvent>> {
        self.check()?;
        self.inner.query(query).await
    }
    async fn count(&self, filter: EventFilter) -> anyhow::Result<u64> {
        self.check()?;
        self.inner.count(filter).await
    }
    async fn events_after_seq(&self, query: ReplayQuery) -> anyhow::Result<Vec<StoredEvent>> {
        self.check()?;
        self.inner.events_after_seq(query).await
    }
    async fn get(&self, id: &str) -> anyhow::Result<Option<StoredEvent>> {
        self.check()?;
        self.inner.get(id).await
    }
    async fn event_count(&self) -> anyhow::Result<u64> {
        self.check()?;
        self.inner.event_count().await
    }
    async fn time_range(&self) -> anyhow::Result<Option<(i64, i64)>> {
        self.check()?;
        self.inner.time_range().await
    }
    async fn rollups(&self, query: RollupQuery) -> anyhow::Result<Vec<RollupRow>> {
        self.check()?;
        self.inner.rollups(query).await
    }
    async fn counts_per_second(&self, from_ms: i64) -> anyhow::Result<Vec<RollupRow>> {
        self.check()?;
        self.inner.counts_per_second(from_ms).await
    }
    async fn recent_client_ids(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, i64)>> {
        self.check()?;
        self.inner.recent_client_ids(since_ms, limit).await
    }
    async fn secret(&self, name: &str, candidate: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.check()?;
        self.inner.secret(name, candidate).await
    }
    async fn create_key(&self, key: &KeyRecord) -> anyhow::Result<()> {
        self.check()?;
        self.inner.create_key(key).await
    }
    async fn list_keys(&self) -> anyhow::Result<Vec<KeyRecord>> {
        self.check()?;
        self.inner.list_keys().await
    }
    async fn revoke_key(&self, id: &str, at_ms: i64) -> anyhow::Result<bool> {
        self.check()?;
        self.inner.revoke_key(id, at_ms).await
    }
    async fn keys_version(&self) -> anyhow::Result<i64> {
        self.check()?;
        self.inner.keys_version().await
    }
    async fn record_key_uses(&self, uses: &[(String, i64)]) -> anyhow::Result<()> {
        self.check()?;
        self.inner.record_key_uses(uses).await
    }
    async fn purge_before(&self, cutoff_ms: i64) -> anyhow::Result<Purged> {
        self.check()?;
        self.inner.purge_before(cutoff_ms).await
    }
    async fn partitions(&self) -> anyhow::Result<Vec<TimeRange>> {
        self.check()?;
        self.inner.partitions().await
    }
}

#[tokio::test]
async fn garbage_goes_to_the_dead_letters_and_can_be_replayed() {
    let Some(setup) = Setup::new("garbage").await else {
        return;
    };
    let Setup { queue, store, .. } = &setup;
    let mut sent = payloads(0..10);
    sent.insert(4, b"not an event".to_vec());
    let (seqs, running) = setup
        .work_through(&sent, 10, "the good events to be stored")
        .await;
    let letters = queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original_id, entry_id_of(seqs[4]));
    assert!(letters[0].reason.contains("decode"), "{letters:?}");
    assert_eq!(letters[0].event, None);
    assert!(letters[0].failed_at_ms > NOW_MS);
    // Serializes as the API lists it.
    let json = serde_json::to_value(&letters[0]).unwrap();
    assert_eq!(json["original_id"], entry_id_of(seqs[4]));

    // Replay: out of the dead letters, into the stream under a new id; garbage comes back.
    assert_eq!(queue.replay_dead_letters(10).await.unwrap(), 1);
    let last = queue.last_seq().await.unwrap();
    assert!(last > *seqs.last().unwrap());
    wait_for(
        Duration::from_secs(20),
        "the replayed entry to fail again",
        || async {
            let letters = queue.dead_letters(10).await.unwrap();
            letters.len() == 1 && letters[0].original_id == entry_id_of(last)
        },
    )
    .await;
    assert_eq!(queue.replay_dead_letters(0).await.unwrap(), 0);
    running.stop().await;
    assert_eq!(store.event_count().await.unwrap(), 10);
}

#[tokio::test]
async fn an_event_the_store_refuses_is_dead_lettered_after_max_attempts_then_replayed() {
    let Some((setup, flaky)) = Setup::flaky("poison").await else {
        return;
    };
    *flaky.poison.lock().unwrap() = Some("client-3".to_owned());
    let Setup { queue, store, .. } = &setup;
    let (seqs, running) = setup
        .work_through(&payloads(0..8), 7, "the other events to be stored")
        .await;
    let letters = queue.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.original_id, entry_id_of(seqs[3]));
    assert_eq!(letter.attempts, 3, "max_attempts");
    assert!(letter.reason.contains("value too long"), "{letter:?}");
    let event = letter.event.as_ref().expect("the event decodes");
    assert_eq!(event["id"], "client-3");
    assert_eq!(event["type"], "click");
    assert_eq!(event["metadata"]["n"], 3);

    // Fixed (say, a wider column): a replay stores it.
    *flaky.poison.lock().unwrap() = None;
    assert_eq!(queue.replay_dead_letters(10).await.unwrap(), 1);
    assert!(queue.dead_letters(10).await.unwrap().is_empty());
    setup
        .wait_drained(
            Duration::from_secs(20),
            "the replayed event to be stored",
            8,
        )
        .await;
    running.stop().await;
    assert!(store.get("client-3").await.unwrap().is_some());
}

/// Runs a worker over `count` events against a store failing by `flag` (one of the
/// [`FlakyStore`] switches) for 1.5 s, in which nothing may be acknowledged or dead-lettered;
/// then clears the flag, and everything must drain, still without dead letters. The store's
/// append calls during the failure, and what the worker saw; `None` without Redis.
async fn check_outage(
    name: &str,
    flag: fn(&FlakyStore) -> &AtomicBool,
    count: u64,
) -> Option<(u64, Arc<Seen>)> {
    let (setup, flaky) = Setup::flaky(name).await?;
    flag(&flaky).store(true, Ordering::SeqCst);
    let queue = &setup.queue;
    let (_, running) = setup.publish_to_worker(&payloads(0..count)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = flaky.append_calls.load(Ordering::SeqCst);
    assert!(
        queue.dead_letters(10).await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    assert_eq!(
        queue.backlog().await.unwrap(),
        count,
        "nothing acknowledged"
    );

    flag(&flaky).store(false, Ordering::SeqCst);
    setup
        .wait_drained(Duration::from_secs(20), "the backlog to drain", count)
        .await;
    assert!(queue.dead_letters(10).await.unwrap().is_empty());
    Some((calls, running.stop().await))
}

#[tokio::test]
async fn a_store_outage_holds_the_acks_and_drains_when_it_ends() {
    let Some((calls, seen)) = check_outage("outage", |store| &store.down, 50).await else {
        return;
    };
    // Retried with backoff (100, 200, 400, 800 ms: a handful of calls, not a busy loop).
    assert!((2..=8).contains(&calls), "{calls} attempts in 1.5 s");
    assert_eq!(seen.stored.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn trimming_keeps_every_unacknowledged_entry() {
    let Some(redis) = TestRedis::new("trim") else {
        return;
    };
    let queue = connect(&redis).await;
    let seqs = publish(&queue, &payloads(0..10)).await;
    // Nothing delivered: nothing can go.
    assert_eq!(queue.trim().await.unwrap(), 0);
    assert_eq!(xlen(&redis, &redis.keys.stream), 10);

    // Five delivered, three of them acknowledged: the two oldest are still pending.
    let taken = read_by_hand(&redis, "c", 5);
    ack_by_hand(&redis, &taken[2..]);
    assert_eq!(queue.trim().await.unwrap(), 0);
    assert_eq!(queue.first_seq().await.unwrap(), Some(seqs[0]));

    // The oldest acknowledged: it goes, the second (pending) stays.
    ack_by_hand(&redis, &taken[..1]);
    assert_eq!(queue.trim().await.unwrap(), 1);
    assert_eq!(queue.first_seq().await.unwrap(), Some(seqs[1]));

    // All five acknowledged: they go, the five never delivered stay.
    ack_by_hand(&redis, &taken[1..2]);
    assert_eq!(queue.trim().await.unwrap(), 4);
    assert_eq!(xlen(&redis, &redis.keys.stream), 5);
    assert_eq!(queue.first_seq().await.unwrap(), Some(seqs[5]));

    // Delivered but pending: they stay.
    let rest = read_by_hand(&redis, "c", 10);
    assert_eq!(rest.len(), 5);
    assert_eq!(queue.trim().await.unwrap(), 0);
    assert_eq!(queue.backlog().await.unwrap(), 5);
    // Nor is a consumer holding pending entries ever deleted, however quiet.
    let none = queue.delete_idle_consumers(Duration::ZERO).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    ack_by_hand(&redis, &rest);
    assert_eq!(queue.trim().await.unwrap(), 5);
    let deleted = queue.delete_idle_consumers(Duration::ZERO).await.unwrap();
    assert_eq!(deleted, ["c"]);
    assert_eq!(queue.first_seq().await.unwrap(), None);
    assert_eq!(queue.backlog().await.unwrap(), 0);
    // The stream keeps its last id: new entries still come after the old ones.
    let next = publish(&queue, &payloads(10..11)).await;
    assert!(next[0] > seqs[9]);
}

#[tokio::test]
async fn a_worker_moves_events_into_postgres() {
    let Some(redis) = TestRedis::new("postgres") else {
        return;
    };
    let Some(schema) = TestSchema::new("queue_worker").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&schema.url, Some(&schema.name))
            .await
            .expect("connect to PostgreSQL"),
    );
    let queue = connect(&redis).await;
    let n: u64 = std::env::var("EVENTIDE_TEST_QUEUE_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let sent = payloads(0..n);
    let started = Instant::now();
    publish(&queue, &sent).await;
    eprintln!(
        "publish, pipelines of 1000: {n} events in {:.2?}: {:.0} events/s",
        started.elapsed(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let running = start_worker(
        &queue,
        store.clone(),
        WorkerConfig {
            batch: 1000,
            ..config("pg")
        },
    );
    wait_for(Duration::from_secs(120), "the backlog to drain", || {
        drained(&queue, &store, n)
    })
    .await;
    let elapsed = started.elapsed();
    running.stop().await;
    eprintln!(
        "worker into PostgreSQL: {n} events in {elapsed:.2?}: {:.0} events/s",
        n as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(store.count(EventFilter::default()).await.unwrap(), n);
    // An empty batch at the current position changes nothing.
    let seq = store.indexed_seq().await.unwrap();
    store.append_batch(Arc::new(Vec::new()), seq).await.unwrap();
    assert_eq!(store.indexed_seq().await.unwrap(), seq);
    assert_eq!(store.event_count().await.unwrap(), n);
}

#[tokio::test]
async fn a_worker_recreates_the_group_when_redis_forgets_it() {
    let Some(setup) = Setup::new("forgotten").await else {
        return;
    };
    let Setup { redis, queue, .. } = &setup;
    let (_, running) = setup
        .work_through(&payloads(0..10), 10, "the first events")
        .await;
    // What a restart of a Redis without persistence leaves: no stream, no group.
    let _: u64 = redis::cmd("DEL")
        .arg(&redis.keys.stream)
        .query(&mut redis.connection())
        .unwrap();
    publish(queue, &payloads(10..20)).await;
    setup
        .wait_drained(Duration::from_secs(20), "the events published after", 20)
        .await;
    running.stop().await;
}

#[tokio::test]
async fn when_redis_is_unreachable_publish_fails_and_everything_recovers_by_itself() {
    let Some(redis) = TestRedis::new("redis-down") else {
        return;
    };
    let proxy = Proxy::start(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    // The worker and an API node's queue reach Redis through the proxy; `direct` does not.
    let queue = RedisStream::connect(&proxy.url, redis.keys.clone())
        .await
        .unwrap();
    let direct = connect(&redis).await;
    let running = start_worker(&queue, store.clone(), config("w"));
    publish(&queue, &payloads(0..100)).await;
    wait_for(Duration::from_secs(20), "the first events", || {
        drained(&direct, &store, 100)
    })
    .await;

    proxy.set_up(false);
    let started = Instant::now();
    let refs: Vec<Vec<u8>> = payloads(100..110);
    let refs: Vec<&[u8]> = refs.iter().map(Vec::as_slice).collect();
    let err = queue
        .publish(&refs)
        .await
        .expect_err("Redis is unreachable");
    assert!(matches!(
        err,
        eventide::queue::redis::QueueError::Unavailable(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(queue.backlog().await.is_err());
    assert!(queue.ping().await.is_err());
    // Meanwhile other API nodes keep publishing.
    publish(&direct, &payloads(100..200)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.event_count().await.unwrap(), 100);

    proxy.set_up(true);
    wait_for(Duration::from_secs(30), "the worker to catch up", || {
        drained(&direct, &store, 200)
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "the queue to answer again",
        || async { queue.ping().await.is_ok() },
    )
    .await;
    publish(&queue, &payloads(200..210)).await;
    wait_for(Duration::from_secs(20), "the last events", || {
        drained(&direct, &store, 210)
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_store_that_reads_but_cannot_write_is_an_outage_not_bad_entries() {
    check_outage("read-only", |store| &store.read_only, 20).await;
}
