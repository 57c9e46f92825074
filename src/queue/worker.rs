//! The worker loop: one consumer of the group, moving batches from the Redis stream into the
//! store.
//!
//! Each round reads a batch (XREADGROUP), decodes the payloads, stores them with
//! `append_batch` (one transaction, rollups included), tells `on_stored`, then acknowledges
//! (XACK). Nothing is acknowledged before the store has it, so a crash at any point leaves the
//! entries pending, to be re-read by this consumer or claimed by another (XAUTOCLAIM after
//! `claim_timeout`); storing them twice is harmless, the store skips ids it already has.
//!
//! When the store fails, the worker tells an outage (the store does not answer a read, or
//! cannot commit an empty batch either: wait with backoff and retry the batch, forever,
//! counting nothing) from a bad entry (the store works: retry the batch once, then its events
//! one by one, and send the one that keeps failing to the dead-letter stream after
//! `max_attempts`). A payload that does not decode
//! goes there at once. Every few seconds the stream is trimmed below the oldest entry the group
//! still needs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::redis::{group_may_be_gone, Entry, RedisQueue};
use super::QueueError;
use crate::clock::{Clock, SystemClock};
use crate::event::StoredEvent;
use crate::ingest::record::decode_payload;
use crate::store::{AppendOutcome, Store};

/// Entries moved to the dead letters by this process (a Prometheus counter).
pub const DEAD_LETTERED: &str = "eventide_queue_dead_lettered_total";
/// Entries this process claimed from consumers that left them pending.
pub const CLAIMED: &str = "eventide_queue_claimed_total";

/// Called with each stored batch and what the store skipped as already stored.
pub type OnStored = Arc<dyn Fn(&[StoredEvent], &AppendOutcome) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This consumer's name in the group: unique per process (e.g. `hostname-pid`), since two
    /// processes under one name would share a pending list.
    pub consumer: String,
    /// Entries per read (and so per store transaction).
    pub batch: usize,
    /// How long an entry may stay pending with a consumer before another claims it.
    pub claim_timeout: Duration,
    /// Attempts at storing one entry, while the store otherwise works, before it is
    /// dead-lettered.
    pub max_attempts: u64,
    /// How long one read waits for new entries; also how soon a stop is noticed when idle.
    pub block: Duration,
}

impl WorkerConfig {
    pub const DEFAULT_BATCH: usize = 1000;
    pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_ATTEMPTS: u64 = 5;
    pub const DEFAULT_BLOCK: Duration = Duration::from_secs(1);

    /// The defaults, under `consumer`.
    pub fn new(consumer: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            consumer: consumer.into(),
            batch: Self::DEFAULT_BATCH,
            claim_timeout: Self::DEFAULT_CLAIM_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            block: Self::DEFAULT_BLOCK,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig::new(default_consumer_name())
    }
}

/// `hostname-pid`: unique per process on a network of hosts with distinct names.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// How often the stream is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// A consumer with nothing pending, quiet for this many claim timeouts, is deleted from the
/// group (a live one reads every `block`, and would be recreated by its next read anyway).
const CONSUMER_IDLE_CLAIM_TIMEOUTS: u32 = 10;
/// Backoff after a failure: from the first to the last, doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the store may take to answer the outage probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop` changes to true, and returns only then (errors are logged and retried).
/// A batch being stored when the stop comes is finished first (or left pending, unacknowledged,
/// if the store is failing).
pub async fn run(
    queue: RedisQueue,
    store: Arc<dyn Store>,
    config: WorkerConfig,
    on_stored: OnStored,
    stop: watch::Receiver<bool>,
) {
    // A blocking connection of its own: blocking reads of other users of this queue (e.g. a
    // live-stream reader in the same process) would otherwise queue behind ours.
    let queue = match queue.with_own_blocking_connection() {
        Ok(own) => own,
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "sharing the queue's blocking connection");
            queue
        }
    };
    tracing::info!(
        consumer = %config.consumer,
        group = %queue.keys().group,
        stream = %queue.keys().stream,
        server = %queue.server(),
        "worker started"
    );
    let now = Instant::now();
    let mut worker = Worker {
        queue,
        store,
        on_stored,
        read_pending: true,
        claim_start: "0-0".to_owned(),
        next_claim: now + config.claim_timeout / 2,
        next_trim: now + TRIM_EVERY,
        next_consumer_cleanup: now,
        redis: Outage::new("Redis"),
        store_outage: Outage::new("the store"),
        config,
        stop,
    };
    worker.run().await;
    tracing::info!(consumer = %worker.config.consumer, "worker stopped");
}

struct Worker {
    queue: RedisQueue,
    store: Arc<dyn Store>,
    config: WorkerConfig,
    on_stored: OnStored,
    stop: watch::Receiver<bool>,
    /// Re-read this consumer's own pending entries (id `0`) before new ones: at start (a
    /// previous run under this name may have left some) and after any failure.
    read_pending: bool,
    /// Where the XAUTOCLAIM scan of the pending list continues.
    claim_start: String,
    next_claim: Instant,
    next_trim: Instant,
    next_consumer_cleanup: Instant,
    redis: Outage,
    store_outage: Outage,
}

/// Whether to go on after a step.
enum Flow {
    Continue,
    Stopped,
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(&mut self) {
        // A batch read while the previous one was being stored.
        let mut prefetched: Option<Vec<Entry>> = None;
        // On a stop, a prefetched batch is still stored (unless the store is down).
        while !self.stopping() || prefetched.is_some() {
            let now = Instant::now();
            if now >= self.next_claim && prefetched.is_none() {
                if let Flow::Stopped = self.claim().await {
                    return;
                }
                continue;
            }
            if now >= self.next_trim {
                self.next_trim = now + TRIM_EVERY;
                match self.queue.trim().await {
                    Ok(0) => {}
                    Ok(trimmed) => tracing::debug!(trimmed, "trimmed the stream"),
                    Err(err) => tracing::warn!(error = %err, "could not trim the stream"),
                }
            }
            let entries = match prefetched.take() {
                Some(entries) => entries,
                None => match self.read(self.read_pending).await {
                    Ok(entries) => entries,
                    Err(err) => {
                        if let Flow::Stopped = self.redis_failed(err).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            if entries.is_empty() {
                // Own pending list drained (or nothing new within `block`).
                self.read_pending = false;
                continue;
            }
            if entries.len() < self.config.batch || self.read_pending || self.stopping() {
                if let Flow::Stopped = self.process(entries).await {
                    return;
                }
                continue;
            }
            // A full batch: more is probably waiting. Read the next batch while this one is
            // stored, so the store (the slow part) is kept busy.
            let queue = self.queue.clone();
            let consumer = self.config.consumer.clone();
            let (batch, block) = (self.config.batch, self.config.block);
            let (flow, next) = tokio::join!(
                self.process(entries),
                queue.read_group(&consumer, false, batch, block)
            );
            match next {
                Ok(next) if next.is_empty() => {}
                Ok(next) => prefetched = Some(next),
                Err(err) => {
                    if let Flow::Continue = flow {
                        if let Flow::Stopped = self.redis_failed(err).await {
                            return;
                        }
                    }
                }
            }
            if let Flow::Stopped = flow {
                return;
            }
        }
    }

    /// XREADGROUP of a batch: this consumer's own pending entries, or new ones.
    async fn read(&mut self, pending: bool) -> Result<Vec<Entry>, QueueError> {
        let read = self
            .queue
            .read_group(
                &self.config.consumer,
                pending,
                self.config.batch,
                self.config.block,
            )
            .await;
        if read.is_ok() {
            self.redis.recovered();
        }
        read
    }

    /// After a Redis failure: recreate the group if Redis forgot it (a restart without
    /// persistence), back off, and re-read the pending list afterwards.
    async fn redis_failed(&mut self, err: QueueError) -> Flow {
        self.read_pending = true;
        if group_may_be_gone(&err) {
            if let Err(err) = self.queue.ensure_group().await {
                tracing::debug!(error = %err, "could not recreate the consumer group");
            } else {
                tracing::warn!(group = %self.queue.keys().group, "the consumer group was missing: recreated it");
                return Flow::Continue;
            }
        }
        let delay = self.redis.failed(&err);
        self.sleep(delay).await
    }

    /// Sleeps `delay`, or less if a stop comes.
    async fn sleep(&mut self, delay: Duration) -> Flow {
        if self.stopping() {
            return Flow::Stopped;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => Flow::Continue,
            _ = self.stop.changed() => Flow::Stopped,
        }
    }

    /// One XAUTOCLAIM step: entries idle longer than `claim_timeout` become ours and are
    /// processed like new ones. A scan of the whole pending list continues step by step; once
    /// done, the next starts after `claim_timeout / 2`.
    async fn claim(&mut self) -> Flow {
        let claimed = self
            .queue
            .autoclaim(
                &self.config.consumer,
                self.config.claim_timeout,
                &self.claim_start,
                self.config.batch,
            )
            .await;
        let (next, entries) = match claimed {
            Ok(claimed) => claimed,
            Err(err) => {
                self.next_claim = Instant::now() + self.config.claim_timeout / 2;
                return self.redis_failed(err).await;
            }
        };
        if next == "0-0" {
            self.next_claim = Instant::now() + self.config.claim_timeout / 2;
            self.delete_idle_consumers().await;
        }
        self.claim_start = next;
        if entries.is_empty() {
            return Flow::Continue;
        }
        tracing::info!(
            consumer = %self.config.consumer,
            entries = entries.len(),
            "claimed entries left pending by another consumer"
        );
        metrics::counter!(CLAIMED).increment(entries.len() as u64);
        self.process(entries).await
    }

    /// Now and then (every [`CONSUMER_IDLE_CLAIM_TIMEOUTS`] claim timeouts), deletes the
    /// consumers quiet for that long with nothing pending: workers gone for good.
    async fn delete_idle_consumers(&mut self) {
        let now = Instant::now();
        let idle = self.config.claim_timeout * CONSUMER_IDLE_CLAIM_TIMEOUTS;
        if now < self.next_consumer_cleanup {
            return;
        }
        self.next_consumer_cleanup = now + idle;
        match self.queue.delete_idle_consumers(idle).await {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => tracing::info!(?deleted, "deleted consumers gone for good"),
            Err(err) => tracing::debug!(error = %err, "could not delete idle consumers"),
        }
    }

    /// Stores a batch of entries and acknowledges them; dead-letters what cannot be stored.
    /// Returns once every entry is acknowledged (or left pending for a re-read after a Redis
    /// failure), or on a stop while the store is down.
    async fn process(&mut self, entries: Vec<Entry>) -> Flow {
        let mut events = Vec::with_capacity(entries.len());
        // Which entry each event came from.
        let mut sources = Vec::with_capacity(entries.len());
        // Entries acknowledged without storing: deleted from the stream while pending.
        let mut gone = Vec::new();
        let mut max_seq = 0;
        for (index, entry) in entries.iter().enumerate() {
            if entry.deleted {
                gone.push(index);
                continue;
            }
            let reason = match (entry.seq, &entry.payload) {
                (None, _) => "the entry id is beyond the range of seqs",
                (Some(_), None) => "the entry has no `e` field (no event payload)",
                (Some(seq), Some(payload)) => match decode_payload(seq, payload) {
                    Some(event) => {
                        max_seq = max_seq.max(seq);
                        events.push(event);
                        sources.push(index);
                        continue;
                    }
                    None => "the payload does not decode as an event",
                },
            };
            if let Flow::Stopped = self.dead_letter(entry, reason, 0).await {
                return Flow::Stopped;
            }
        }
        let events = Arc::new(events);
        let mut acks: Vec<&[u8]> = gone.iter().map(|&i| entries[i].id.as_slice()).collect();
        if !events.is_empty() {
            let mut retried = false;
            loop {
                let started = Instant::now();
                match self.store.append_batch(events.clone(), max_seq).await {
                    Ok(outcome) => {
                        crate::telemetry::index_batch(started.elapsed());
                        self.store_outage.recovered();
                        (self.on_stored)(&events, &outcome);
                        acks.extend(sources.iter().map(|&i| entries[i].id.as_slice()));
                        break;
                    }
                    Err(err) => {
                        if self.store_works().await {
                            if !retried {
                                // Perhaps a passing conflict: once more, whole.
                                retried = true;
                                tracing::debug!(error = %format!("{err:#}"), "storing a batch failed: retrying it");
                                if let Flow::Stopped = self.sleep(FIRST_BACKOFF).await {
                                    return Flow::Stopped;
                                }
                                continue;
                            }
                            // Something in this batch: find it, event by event.
                            tracing::warn!(
                                error = %format!("{err:#}"),
                                events = events.len(),
                                "storing a batch failed while the store works: retrying its events one by one"
                            );
                            return self
                                .process_one_by_one(&entries, &events, &sources, acks)
                                .await;
                        }
                        let delay = self.store_outage.failed(&format!("{err:#}"));
                        if let Flow::Stopped = self.sleep(delay).await {
                            // Unacknowledged: re-read or claimed after the restart.
                            return Flow::Stopped;
                        }
                    }
                }
            }
        }
        self.ack(&acks).await
    }

    /// XACK, after a Redis failure leaving the entries pending for the next pending re-read
    /// (which stores them again, harmlessly, and acknowledges them).
    async fn ack(&mut self, ids: &[&[u8]]) -> Flow {
        match self.queue.ack(ids).await {
            Ok(()) => {
                self.redis.recovered();
                Flow::Continue
            }
            Err(err) => self.redis_failed(err).await,
        }
    }

    /// Whether the store still works: it answers a read (`indexed_seq`) and commits an empty
    /// batch (a write transaction that changes nothing but the indexed position, set to what
    /// it already is). If not, a failed write is an outage (the server is gone, or its disk is
    /// full or read-only) and no entry is to blame.
    async fn store_works(&self) -> bool {
        let probe = async {
            let seq = self.store.indexed_seq().await?;
            self.store.append_batch(Arc::new(Vec::new()), seq).await
        };
        matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(_)))
    }

    /// Stores `events` one at a time; one that fails `max_attempts` times while the store
    /// answers goes to the dead letters.
    async fn process_one_by_one(
        &mut self,
        entries: &[Entry],
        events: &[StoredEvent],
        sources: &[usize],
        mut acks: Vec<&[u8]>,
    ) -> Flow {
        for (event, &source) in events.iter().zip(sources) {
            let entry = &entries[source];
            let mut attempts = 0;
            loop {
                attempts += 1;
                let single = Arc::new(vec![event.clone()]);
                match self.store.append_batch(single.clone(), event.seq).await {
                    Ok(outcome) => {
                        self.store_outage.recovered();
                        (self.on_stored)(&single, &outcome);
                        acks.push(&entry.id);
                        break;
                    }
                    Err(err) => {
                        let reason = format!("{err:#}");
                        if !self.store_works().await {
                            // The store went down meanwhile: not this entry's fault.
                            attempts -= 1;
                            let delay = self.store_outage.failed(&reason);
                            if let Flow::Stopped = self.sleep(delay).await {
                                // Acknowledge what is stored; the rest stays pending.
                                let _ = self.ack(&acks).await;
                                return Flow::Stopped;
                            }
                            continue;
                        }
                        if attempts >= self.config.max_attempts {
                            if let Flow::Stopped = self.dead_letter(entry, &reason, attempts).await
                            {
                                let _ = self.ack(&acks).await;
                                return Flow::Stopped;
                            }
                            break;
                        }
                        tracing::debug!(entry = %entry.id_str(), attempts, error = %reason, "storing an entry failed");
                        let delay = FIRST_BACKOFF * attempts as u32;
                        if let Flow::Stopped = self.sleep(delay).await {
                            let _ = self.ack(&acks).await;
                            return Flow::Stopped;
                        }
                    }
                }
            }
        }
        self.ack(&acks).await
    }

    /// Moves `entry` to the dead letters (and acknowledges it), retrying Redis failures with
    /// backoff until done or stopped.
    async fn dead_letter(&mut self, entry: &Entry, reason: &str, attempts: u64) -> Flow {
        tracing::warn!(
            entry = %entry.id_str(),
            reason,
            attempts,
            "moving an entry to the dead letters"
        );
        loop {
            match self
                .queue
                .dead_letter(entry, reason, attempts, SystemClock.now_ms())
                .await
            {
                Ok(()) => {
                    self.redis.recovered();
                    metrics::counter!(DEAD_LETTERED).increment(1);
                    return Flow::Continue;
                }
                Err(err) => {
                    self.read_pending = true;
                    let delay = self.redis.failed(&err);
                    if let Flow::Stopped = self.sleep(delay).await {
                        return Flow::Stopped;
                    }
                }
            }
        }
    }
}

/// One dependency's failures, with the backoff to wait before each retry. Logged once per
/// outage: an error when a failure persists past one retry (a single failure that the next
/// attempt gets past, such as a connection found dead and replaced, is no outage), an info
/// line when it ends.
struct Outage {
    what: &'static str,
    /// When the current run of failures began, and whether it was logged as an outage.
    since: Option<(Instant, bool)>,
    delay: Duration,
}

impl Outage {
    fn new(what: &'static str) -> Outage {
        Outage {
            what,
            since: None,
            delay: FIRST_BACKOFF,
        }
    }

    /// Records a failure; returns how long to wait before retrying.
    fn failed(&mut self, err: &dyn std::fmt::Display) -> Duration {
        match &mut self.since {
            None => {
                self.since = Some((Instant::now(), false));
                self.delay = FIRST_BACKOFF;
                tracing::debug!(error = %err, "{} failed: retrying", self.what);
            }
            Some((_, logged @ false)) => {
                *logged = true;
                tracing::error!(
                    error = %err,
                    "{} is unavailable: retrying with backoff, acknowledging nothing meanwhile",
                    self.what
                );
            }
            Some((_, true)) => {}
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        delay
    }

    fn recovered(&mut self) {
        if let Some((since, logged)) = self.since.take() {
            self.delay = FIRST_BACKOFF;
            if logged {
                tracing::info!(after = ?since.elapsed(), "{} is available again", self.what);
            }
        }
    }
}
