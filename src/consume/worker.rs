//! The worker: the consume loop's source over a Redis consumer group. Each round reads a
//! batch (XREADGROUP: this consumer's own pending entries first, at start and after a
//! failure, then new ones) and decodes the payloads; once the loop has stored them, it
//! acknowledges them (XACK). A crash at any point leaves the entries pending, to be re-read
//! by this consumer or claimed by another (XAUTOCLAIM after `claim_timeout`).
//!
//! A batch the store rejects (not while it is unavailable: then the loop waits) is retried
//! once, then its events one by one: the one that keeps being rejected goes to the
//! dead-letter stream after `max_attempts`. A payload that
//! does not decode goes there at once. Every few seconds the stream is trimmed below the
//! oldest entry the group still needs, and now and then consumers gone for good are deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{sleep, Batch, Flow, Outage, Source, Stored, Storing, FIRST_BACKOFF};
use crate::clock::{Clock, SystemClock};
use crate::health::Component;
use crate::queue::redis::client::group_may_be_gone;
use crate::queue::redis::{Entry, QueueError, RedisStream};
use crate::record::decode_payload;

/// Entries moved to the dead letters by this process (a Prometheus counter).
pub const DEAD_LETTERED: &str = "eventide_queue_dead_lettered_total";
/// Entries this process claimed from consumers that left them pending.
pub const CLAIMED: &str = "eventide_queue_claimed_total";

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This consumer's name in the group: unique per process (e.g. `hostname-pid`), since two
    /// processes under one name would share a pending list.
    pub consumer: String,
    /// Entries per read (and so per store transaction).
    pub batch: usize,
    /// How long an entry may stay pending with a consumer before another claims it.
    pub claim_timeout: Duration,
    /// Attempts at storing one entry the store rejects before it is dead-lettered (attempts
    /// while the store is unavailable do not count).
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

pub struct Worker {
    stream: RedisStream,
    config: WorkerConfig,
    /// Re-read this consumer's own pending entries (id `0`) before new ones: at start (a
    /// previous run under this name may have left some) and after any failure.
    read_pending: bool,
    /// Where the XAUTOCLAIM scan of the pending list continues.
    claim_start: String,
    next_claim: Instant,
    next_trim: Instant,
    next_consumer_cleanup: Instant,
    redis: Outage,
    stop: watch::Receiver<bool>,
}

/// The entries a batch came from.
pub struct Entries {
    entries: Vec<Entry>,
    /// The entry each event of the batch came from.
    sources: Vec<usize>,
    /// Entries to acknowledge without storing: deleted from the stream while pending.
    gone: Vec<usize>,
    /// Whether the batch was already retried whole once.
    retried: bool,
}

impl Worker {
    /// A consumer of `stream`'s group; `health` hears of Redis failing.
    pub fn new(
        stream: RedisStream,
        config: WorkerConfig,
        health: Arc<Component>,
        stop: watch::Receiver<bool>,
    ) -> Worker {
        // A blocking connection of its own: blocking reads of other users of this stream
        // (e.g. a live-stream reader in the same process) would otherwise queue behind ours.
        let stream = match stream.with_own_blocking_connection() {
            Ok(own) => own,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "sharing the queue's blocking connection");
                stream
            }
        };
        tracing::info!(
            consumer = %config.consumer,
            group = %stream.keys().group,
            stream = %stream.keys().stream,
            server = %stream.server(),
            "worker started"
        );
        let now = Instant::now();
        Worker {
            stream,
            read_pending: true,
            claim_start: "0-0".to_owned(),
            next_claim: now + config.claim_timeout / 2,
            next_trim: now + TRIM_EVERY,
            next_consumer_cleanup: now,
            redis: Outage::new("Redis", Some(health)),
            config,
            stop,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// After a Redis failure: recreate the group if Redis forgot it (a restart without
    /// persistence), back off, and re-read the pending list afterwards. `false` if stopped.
    async fn redis_failed(&mut self, err: QueueError) -> bool {
        self.read_pending = true;
        if group_may_be_gone(&err) {
            if let Err(err) = self.stream.ensure_group().await {
                tracing::debug!(error = %err, "could not recreate the consumer group");
            } else {
                tracing::warn!(group = %self.stream.keys().group, "the consumer group was missing: recreated it");
                return true;
            }
        }
        let delay = self.redis.failed(&err);
        sleep(&mut self.stop, delay).await
    }

    /// One XAUTOCLAIM step: entries idle longer than `claim_timeout` become ours and are
    /// processed like new ones. A scan of the whole pending list continues step by step; once
    /// done, the next starts after `claim_timeout / 2`.
    async fn claim(&mut self) -> Result<Vec<Entry>, QueueError> {
        let (next, entries) = match self
            .stream
            .autoclaim(
                &self.config.consumer,
                self.config.claim_timeout,
                &self.claim_start,
                self.config.batch,
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(err) => {
                self.next_claim = Instant::now() + self.config.claim_timeout / 2;
                return Err(err);
            }
        };
        if next == "0-0" {
            self.next_claim = Instant::now() + self.config.claim_timeout / 2;
            self.delete_idle_consumers().await;
        }
        self.claim_start = next;
        if !entries.is_empty() {
            tracing::info!(
                consumer = %self.config.consumer,
                entries = entries.len(),
                "claimed entries left pending by another consumer"
            );
            metrics::counter!(CLAIMED).increment(entries.len() as u64);
        }
        Ok(entries)
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
        match self.stream.delete_idle_consumers(idle).await {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => tracing::info!(?deleted, "deleted consumers gone for good"),
            Err(err) => tracing::debug!(error = %err, "could not delete idle consumers"),
        }
    }

    async fn trim_now_and_then(&mut self) {
        let now = Instant::now();
        if now < self.next_trim {
            return;
        }
        self.next_trim = now + TRIM_EVERY;
        match self.stream.trim().await {
            Ok(0) => {}
            Ok(trimmed) => tracing::debug!(trimmed, "trimmed the stream"),
            Err(err) => tracing::warn!(error = %err, "could not trim the stream"),
        }
    }

    /// Decodes `entries` into a batch, dead-lettering what does not decode; `None` (all
    /// acknowledged) when nothing is left to store, or when stopped meanwhile.
    async fn batch(&mut self, entries: Vec<Entry>) -> Option<Batch<Entries>> {
        let mut events = Vec::with_capacity(entries.len());
        let mut sources = Vec::with_capacity(entries.len());
        let mut gone = Vec::new();
        let mut through = 0;
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
                        through = through.max(seq);
                        events.push(event);
                        sources.push(index);
                        continue;
                    }
                    None => "the payload does not decode as an event",
                },
            };
            if !self.dead_letter(entry, reason, 0).await {
                return None;
            }
        }
        if events.is_empty() {
            let gone: Vec<&[u8]> = gone.iter().map(|&i| entries[i].id.as_slice()).collect();
            self.ack(&gone).await;
            return None;
        }
        Some(Batch {
            events: Arc::new(events),
            through,
            token: Entries {
                entries,
                sources,
                gone,
                retried: false,
            },
        })
    }

    /// XACK; after a Redis failure the entries stay pending, for the next pending re-read
    /// (which stores them again, harmlessly, and acknowledges them). `false` if stopped.
    async fn ack(&mut self, ids: &[&[u8]]) -> bool {
        match self.stream.ack(ids).await {
            Ok(()) => {
                self.redis.recovered();
                true
            }
            Err(err) => self.redis_failed(err).await,
        }
    }

    /// Moves `entry` to the dead letters (and acknowledges it), retrying Redis failures with
    /// backoff until done; `false` if stopped first.
    async fn dead_letter(&mut self, entry: &Entry, reason: &str, attempts: u64) -> bool {
        tracing::warn!(
            entry = %entry.id_str(),
            reason,
            attempts,
            "moving an entry to the dead letters"
        );
        loop {
            match self
                .stream
                .dead_letter(entry, reason, attempts, SystemClock.now_ms())
                .await
            {
                Ok(()) => {
                    self.redis.recovered();
                    metrics::counter!(DEAD_LETTERED).increment(1);
                    return true;
                }
                Err(err) => {
                    self.read_pending = true;
                    let delay = self.redis.failed(&err);
                    if !sleep(&mut self.stop, delay).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Stores the batch's events one at a time; one the store rejects `max_attempts` times
    /// goes to the dead letters. Acknowledges what is done, also on a stop
    /// (the rest stays pending).
    async fn one_by_one(&mut self, batch: Batch<Entries>, storing: &mut Storing) -> Flow<Entries> {
        let Entries {
            entries,
            sources,
            gone,
            ..
        } = batch.token;
        let mut done: Vec<usize> = gone;
        for (event, &source) in batch.events.iter().zip(&sources) {
            let entry = &entries[source];
            let single = Arc::new(vec![event.clone()]);
            let mut attempts = 0;
            loop {
                attempts += 1;
                match storing.store(&single, event.seq).await {
                    Stored::Yes => {
                        done.push(source);
                        break;
                    }
                    Stored::Stopped => {
                        let ids: Vec<&[u8]> =
                            done.iter().map(|&i| entries[i].id.as_slice()).collect();
                        self.ack(&ids).await;
                        return Flow::Stopped;
                    }
                    Stored::Rejected(err) => {
                        let reason = format!("{err:#}");
                        if attempts >= self.config.max_attempts {
                            if !self.dead_letter(entry, &reason, attempts).await {
                                let ids: Vec<&[u8]> =
                                    done.iter().map(|&i| entries[i].id.as_slice()).collect();
                                self.ack(&ids).await;
                                return Flow::Stopped;
                            }
                            break;
                        }
                        tracing::debug!(entry = %entry.id_str(), attempts, error = %reason, "storing an entry failed");
                        if !storing.sleep(FIRST_BACKOFF * attempts as u32).await {
                            let ids: Vec<&[u8]> =
                                done.iter().map(|&i| entries[i].id.as_slice()).collect();
                            self.ack(&ids).await;
                            return Flow::Stopped;
                        }
                    }
                }
            }
        }
        let ids: Vec<&[u8]> = done.iter().map(|&i| entries[i].id.as_slice()).collect();
        if self.ack(&ids).await {
            Flow::Continue
        } else {
            Flow::Stopped
        }
    }
}

#[async_trait]
impl Source for Worker {
    type Token = Entries;

    async fn next(&mut self) -> Option<Batch<Entries>> {
        loop {
            if self.stopping() {
                return None;
            }
            let now = Instant::now();
            let entries = if now >= self.next_claim {
                self.claim().await
            } else {
                self.trim_now_and_then().await;
                let read = self
                    .stream
                    .read_group(
                        &self.config.consumer,
                        self.read_pending,
                        self.config.batch,
                        self.config.block,
                    )
                    .await;
                if let Ok(entries) = &read {
                    self.redis.recovered();
                    if entries.is_empty() {
                        // Own pending list drained (or nothing new within `block`).
                        self.read_pending = false;
                    }
                }
                read
            };
            match entries {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    if let Some(batch) = self.batch(entries).await {
                        return Some(batch);
                    }
                }
                Err(err) => {
                    if !self.redis_failed(err).await {
                        return None;
                    }
                }
            }
        }
    }

    /// A full batch of new entries: more are probably waiting.
    fn more_waiting(&self, batch: &Batch<Entries>) -> bool {
        batch.token.entries.len() >= self.config.batch && !self.read_pending
    }

    /// One read of new entries; a failure is left for the next regular read to handle.
    async fn prefetch(&mut self) -> Option<Batch<Entries>> {
        let read = self
            .stream
            .read_group(
                &self.config.consumer,
                false,
                self.config.batch,
                self.config.block,
            )
            .await;
        match read {
            Ok(entries) if !entries.is_empty() => self.batch(entries).await,
            Ok(_) => None,
            Err(err) => {
                self.read_pending = true;
                tracing::debug!(error = %err, "reading ahead failed");
                None
            }
        }
    }

    async fn stored(&mut self, batch: Batch<Entries>) -> Flow<Entries> {
        let token = &batch.token;
        let ids: Vec<&[u8]> = token
            .gone
            .iter()
            .chain(&token.sources)
            .map(|&i| token.entries[i].id.as_slice())
            .collect();
        if self.ack(&ids).await {
            Flow::Continue
        } else {
            Flow::Stopped
        }
    }

    async fn rejected(
        &mut self,
        mut batch: Batch<Entries>,
        error: anyhow::Error,
        storing: &mut Storing,
    ) -> Flow<Entries> {
        if !batch.token.retried {
            // Perhaps a passing failure the store took for the batch's fault: once more,
            // whole, before looking for the event at fault.
            batch.token.retried = true;
            tracing::debug!(error = %format!("{error:#}"), "the store rejected a batch: retrying it");
            return if storing.sleep(FIRST_BACKOFF).await {
                Flow::Retry(batch)
            } else {
                Flow::Stopped
            };
        }
        // Something in this batch: find it, event by event.
        tracing::warn!(
            error = %format!("{error:#}"),
            events = batch.events.len(),
            "the store rejected a batch: retrying its events one by one"
        );
        self.one_by_one(batch, storing).await
    }
}

/// Runs a worker on `stream`'s group into `store` until `stop` turns true; `on_stored` hears
/// of each stored batch. Failures are reported to `health`'s `worker` (Redis) and `store`
/// components.
pub async fn run(
    stream: RedisStream,
    store: Arc<dyn crate::store::Store>,
    config: WorkerConfig,
    on_stored: super::OnStored,
    health: &crate::health::Health,
    stop: watch::Receiver<bool>,
) {
    use crate::health::Readiness;
    let consumer = config.consumer.clone();
    let worker = Worker::new(
        stream,
        config,
        health.register(
            "worker",
            "the worker cannot read the queue",
            Readiness::Required,
        ),
        stop.clone(),
    );
    let storing = Storing::new(
        store,
        Some(on_stored),
        health.register(
            "store",
            "the store does not accept writes",
            Readiness::Required,
        ),
        stop,
    );
    super::run(worker, storing).await;
    tracing::info!(consumer = %consumer, "worker stopped");
}
