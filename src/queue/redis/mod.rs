//! The queue of a cluster: a Redis stream that API nodes add event payloads to and workers
//! consume as a group into the shared store ([`crate::consume::worker`]).
//!
//! [`RedisQueue`] is its ingest side: publishing (`202` once Redis holds every entry), the
//! workers' backlog (measured every 500 ms, what `429`s go by), following the stream for the
//! live stream of this node, and replaying it for resumes. [`RedisStream`] ([`client`]) holds
//! the Redis commands themselves.
//!
//! # Keys
//! Everything lives under one prefix `p` (default `eventide`), so several deployments (or
//! tests) can share a Redis server:
//! - `{p}:events`: the stream. Each entry has one field, `e`, holding the binary payload of
//!   [`crate::record::encode_payload`]. The entry id is the event's `seq` ([`seq_of`]).
//! - `{p}:workers`: the consumer group of the workers on `{p}:events` (a group name, not a
//!   key). Each worker process is one consumer.
//! - `{p}:dead-letters`: a stream of entries that could not be stored: fields `e` (the
//!   payload), `original_id`, `reason`, `attempts`, `failed_at_ms`.
//!
//! # Positions
//! A stream entry id `ms-n` becomes the `u64` seq `ms << 20 | n`: ids and seqs order the
//! same way, so a stream position and a store position are one number. Redis gives ids in
//! increasing order at XADD time, so a reader resuming "after seq s" with XRANGE never skips
//! an entry that a worker commits to the store later. Workers commit out of order (two
//! batches, two workers), so a position in the *store* would let a resume skip an event
//! committed later with a smaller `seq`: a resume reads the *stream* instead, which holds
//! every entry not yet acknowledged, and reads the store only below the stream's first
//! entry, where everything is stored (entries are trimmed only once acknowledged).

pub mod client;
mod dead_letters;
mod group;
mod reply;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use tokio::sync::watch;

pub use self::client::RedisStream;
pub use self::reply::Entry;
use super::{Backlog, CommitOutcome, IngestError, Positions, PreparedBatch, Queue, ReadPosition};
use crate::event::StoredEvent;
use crate::health::Component;
use crate::live::{Publisher, Replay};
use crate::record;
use crate::store::{EventFilter, ReplayQuery, Store};

/// How often an API node measures the workers' backlog (what its 429s go by).
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// Entries the live stream's reader takes at once, and how long it waits for them.
const FOLLOW_BATCH: usize = 1000;
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);

/// The Redis stream as a [`Queue`]: what an API node publishes to.
pub struct RedisQueue {
    stream: RedisStream,
    store: Arc<dyn Store>,
    max_backlog: u64,
    /// The workers' backlog as last measured.
    backlog: AtomicU64,
    /// Whether the last backlog measurement failed.
    probe_failed: AtomicBool,
    health: Arc<Component>,
    /// The stream's last entry when this node started: where its live stream begins.
    started_at: u64,
}

impl RedisQueue {
    /// `stream`'s ingest side, refusing with `429` from `max_backlog` entries the workers
    /// have not stored; resumes read from it and from `store` below it.
    pub async fn new(
        stream: RedisStream,
        store: Arc<dyn Store>,
        max_backlog: u64,
        health: Arc<Component>,
    ) -> Result<RedisQueue> {
        let started_at = stream.last_seq().await?;
        Ok(RedisQueue {
            stream,
            store,
            max_backlog,
            backlog: AtomicU64::new(0),
            probe_failed: AtomicBool::new(false),
            health,
            started_at,
        })
    }

    /// Starts the tasks that measure the backlog and follow the stream into `publisher`
    /// (this node's live stream), until `stop` changes.
    pub fn start(
        self: &Arc<Self>,
        publisher: Publisher,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        tokio::spawn(self.clone().measure_backlog(stop.clone()));
        tokio::spawn(follow_stream(
            self.stream.with_own_blocking_connection()?,
            self.started_at,
            publisher,
            stop,
        ));
        Ok(())
    }

    async fn measure_backlog(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(BACKLOG_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    // Readiness follows this probe too, not only publishing: without it,
                    // Redis going down unseen by any POST left the node ready, and once not
                    // ready (a balancer then sends no POSTs) it stayed so after Redis came
                    // back until a POST succeeded. It ends only an outage it saw itself: one
                    // that only XADDs meet (e.g. Redis out of memory) ends with a successful
                    // publish. On failure the last backlog stands.
                    match self.stream.backlog().await {
                        Ok(backlog) => {
                            self.backlog.store(backlog, Ordering::Relaxed);
                            if self.probe_failed.swap(false, Ordering::Relaxed)
                                && self.health.recovered()
                            {
                                tracing::info!("the queue answers again");
                            }
                        }
                        Err(err) => {
                            self.probe_failed.store(true, Ordering::Relaxed);
                            let error = err.to_string();
                            if self.health.failed(error.clone()) {
                                tracing::error!(%error, "the queue does not answer; answering 503 until it does");
                            }
                        }
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

#[async_trait]
impl Queue for RedisQueue {
    /// Every entry added (one pipeline of XADDs), or a `503`. Duplicates are found by the
    /// workers' store (ids are unique there), not here: none are reported.
    async fn publish(&self, batch: PreparedBatch) -> Result<CommitOutcome, IngestError> {
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog >= self.max_backlog {
            return Err(IngestError::QueueBacklogFull {
                backlog,
                max: self.max_backlog,
            });
        }
        let payloads: Vec<&[u8]> = batch.payloads().collect();
        match self.stream.publish(&payloads).await {
            Ok(_) => {
                if self.health.recovered() {
                    tracing::info!("the queue accepts events again");
                }
                Ok(CommitOutcome::default())
            }
            Err(err) => {
                let error = err.to_string();
                if self.health.failed(error.clone()) {
                    tracing::error!(%error, "the queue cannot be written; answering 503 until it can");
                }
                Err(IngestError::QueueUnavailable(error))
            }
        }
    }

    fn backlog(&self) -> Backlog {
        Backlog {
            events: self.backlog.load(Ordering::Relaxed),
            max: self.max_backlog,
            what: "the queue's backlog (events the workers have not stored)",
        }
    }

    /// No read-your-writes: what the workers have stored, at once.
    async fn read_position(&self, _wait: Duration) -> ReadPosition {
        ReadPosition {
            through: None,
            complete: true,
        }
    }

    fn positions(&self) -> Option<Positions> {
        None
    }
}

/// A resume's past events: from the stream, which holds every entry not yet acknowledged,
/// and from the store below the stream's first entry, where everything is stored.
#[async_trait]
impl Replay for RedisQueue {
    async fn events_after(&self, query: ReplayQuery) -> Result<Vec<StoredEvent>> {
        let ReplayQuery {
            filter,
            after_seq,
            limit,
        } = query;
        let max_seq = filter.max_seq.unwrap_or(u64::MAX);
        let stored_through = match self.stream.first_seq().await? {
            Some(first) => first - 1,
            // An empty stream: every entry ever added has been stored.
            None => self.stream.last_seq().await?,
        };
        let mut events = Vec::new();
        let mut after = after_seq;
        if after < stored_through {
            let through = stored_through.min(max_seq);
            let below = ReplayQuery {
                filter: EventFilter {
                    max_seq: Some(through),
                    ..filter.clone()
                },
                after_seq: after,
                limit,
            };
            events = self.store.events_after_seq(below).await?;
            if events.len() == limit || through == max_seq {
                return Ok(events);
            }
            after = through;
        }
        while events.len() < limit {
            let entries = self.stream.range_after(after, FOLLOW_BATCH).await?;
            if entries.is_empty() {
                break;
            }
            for (seq, payload) in entries {
                if seq > max_seq {
                    return Ok(events);
                }
                after = seq;
                let Some(event) = record::decode_payload(seq, &payload) else {
                    continue;
                };
                if filter.matches_fields(&event) {
                    events.push(event);
                    if events.len() == limit {
                        return Ok(events);
                    }
                }
            }
        }
        Ok(events)
    }

    /// The stream holds every entry from the moment it is published.
    async fn wait_replayable(&self, _seq: u64, _timeout: Duration) -> bool {
        true
    }

    fn published_through(&self) -> u64 {
        self.started_at
    }
}

/// Follows the Redis stream from `after` and hands each batch of entries to the live
/// dispatcher, as the log writer does in a single process.
async fn follow_stream(
    stream: RedisStream,
    mut last: u64,
    publisher: Publisher,
    mut stop: watch::Receiver<bool>,
) {
    let mut frames = Vec::new();
    let mut failing = false;
    // Whether entries after `last` may have been trimmed before this reader saw them: after
    // an outage, or when it is a full batch behind.
    let mut may_have_missed = false;
    loop {
        let read = tokio::select! {
            read = stream.read_after(last, FOLLOW_BATCH, FOLLOW_BLOCK) => read,
            _ = stop.changed() => return,
        };
        match read {
            Ok(entries) => {
                if failing {
                    failing = false;
                    tracing::info!("following the queue for the live stream again");
                }
                let Some(&(newest, _)) = entries.last() else {
                    continue;
                };
                frames.clear();
                for (seq, payload) in &entries {
                    record::write_frame(&mut frames, *seq, payload);
                }
                let mut after = last;
                if std::mem::replace(&mut may_have_missed, entries.len() == FOLLOW_BATCH) {
                    // Trimming removes only entries the workers stored, oldest first: if the
                    // oldest left is past `last`, some may be gone unseen. Announcing the
                    // gap lags out the subscribers who needed them; they resume from the
                    // store.
                    if let Ok(Some(oldest)) = stream.first_seq().await {
                        after = after.max(oldest.saturating_sub(1));
                    }
                }
                last = newest;
                if publisher.mark_published(&frames) {
                    publisher.hand_over(after, &frames);
                }
            }
            Err(err) => {
                may_have_missed = true;
                if !failing {
                    failing = true;
                    tracing::warn!(error = %err, "cannot follow the queue for the live stream; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Bits of the seq that hold the sequence number `n` of an entry id `ms-n`.
const SEQ_BITS: u32 = 20;

/// A stream entry id `ms-n` as the u64 `seq` used everywhere else: `ms << 20 | n`
/// (`n < 2^20`, `ms < 2^44`); `None` for anything else.
pub fn seq_of(entry_id: &str) -> Option<u64> {
    seq_of_bytes(entry_id.as_bytes())
}

/// [`seq_of`] on the raw bytes Redis answers with, so the worker needs no `String` per entry.
pub fn seq_of_bytes(entry_id: &[u8]) -> Option<u64> {
    let dash = entry_id.iter().position(|&b| b == b'-')?;
    let ms = parse_u64(&entry_id[..dash])?;
    let n = parse_u64(&entry_id[dash + 1..])?;
    if n >= 1 << SEQ_BITS || ms >= 1 << (64 - SEQ_BITS) {
        return None;
    }
    Some(ms << SEQ_BITS | n)
}

/// The stream entry id `ms-n` of `seq`: the inverse of [`seq_of`].
pub fn entry_id_of(seq: u64) -> String {
    format!("{}-{}", seq >> SEQ_BITS, seq & ((1 << SEQ_BITS) - 1))
}

/// Decimal digits only, no sign, no overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Key names, all derived from one prefix (default `eventide`); see the module docs.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// `{p}:events`: the stream of event payloads.
    pub stream: String,
    /// `{p}:workers`: the workers' consumer group on [`QueueKeys::stream`].
    pub group: String,
    /// `{p}:dead-letters`: entries that could not be stored.
    pub dead_letters: String,
}

impl QueueKeys {
    pub const DEFAULT_PREFIX: &'static str = "eventide";

    pub fn with_prefix(prefix: &str) -> QueueKeys {
        QueueKeys {
            stream: format!("{prefix}:events"),
            group: format!("{prefix}:workers"),
            dead_letters: format!("{prefix}:dead-letters"),
        }
    }
}

impl Default for QueueKeys {
    fn default() -> QueueKeys {
        QueueKeys::with_prefix(QueueKeys::DEFAULT_PREFIX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis cannot be reached or refused a command: callers answer 503 and retry later.
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
}

impl From<::redis::RedisError> for QueueError {
    fn from(err: ::redis::RedisError) -> QueueError {
        QueueError::Unavailable(err.to_string())
    }
}

/// An entry of the dead-letter stream, as `GET /dead-letters` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead-letter entry's own id.
    pub id: String,
    /// The id the entry had in the events stream.
    pub original_id: String,
    /// Why it could not be stored (the last error, or why it could not be decoded).
    pub reason: String,
    /// How many times storing it was tried (0 when it could not even be decoded).
    pub attempts: u64,
    /// When it was given up on, in epoch milliseconds.
    pub failed_at_ms: i64,
    /// The event as queries return it, when the payload decodes.
    #[schema(value_type = Option<crate::event::render::EventView>)]
    pub event: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_and_entry_ids_round_trip() {
        for (id, seq) in [
            ("0-0", 0),
            ("0-1", 1),
            ("1-0", 1 << 20),
            ("1700000000123-7", 1_700_000_000_123 << 20 | 7),
            ("1700000000123-1048575", 1_700_000_000_123 << 20 | 1_048_575),
        ] {
            assert_eq!(seq_of(id), Some(seq), "{id}");
            assert_eq!(entry_id_of(seq), id);
        }
        // Order is kept: a later id is a larger seq.
        assert!(seq_of("5-1048575") < seq_of("6-0"));
        let ms = 1_760_000_000_000u64;
        assert_eq!(seq_of(&entry_id_of(ms << 20 | 3)), Some(ms << 20 | 3));
    }

    #[test]
    fn malformed_entry_ids_have_no_seq() {
        for id in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-a",
            "1-1048576",
            "1--1",
            "+1-1",
            "17592186044416-0",
            "99999999999999999999999-0",
        ] {
            assert_eq!(seq_of(id), None, "{id}");
        }
        assert_eq!(seq_of("17592186044415-0"), Some(u64::MAX >> 20 << 20));
    }

    #[test]
    fn keys_share_the_prefix() {
        let keys = QueueKeys::with_prefix("t1");
        assert_eq!(keys.stream, "t1:events");
        assert_eq!(keys.group, "t1:workers");
        assert_eq!(keys.dead_letters, "t1:dead-letters");
    }
}
