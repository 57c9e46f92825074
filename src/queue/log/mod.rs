//! The embedded queue of a single process: a durable log on the local disk.
//!
//! Segment files of checksummed frames ([`segments`]) are appended to by one thread
//! ([`writer`]) that takes every submission waiting when it wakes, sets aside client ids
//! accepted before ([`dedup`]), assigns `seq`s and writes them all at once (group commit).
//! The indexer (the consume loop over this log, [`crate::consume::indexer`]) follows it into
//! the store; [`Progress`] says how far each has got. A resume of the live stream replays
//! from the store, where `seq`s are committed in order.

pub mod dedup;
pub mod segments;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{
    ids, Backlog, CommitOutcome, IngestError, Positions, PreparedBatch, Queue, ReadPosition,
};
use crate::clock::Clock;
use crate::event::StoredEvent;
use crate::health::Health;
use crate::live::{Publisher, Replay};
use crate::store::{ReplayQuery, Store};
use dedup::RecentIds;
use segments::LogWriter;
use writer::{Message, Writer};

/// What the log is told at start.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log's directory (`<data dir>/log`).
    pub dir: PathBuf,
    /// Flush each group commit to the disk (`--durability fsync`).
    pub fsync: bool,
    /// How long, and how many, client ids are remembered for deduplication.
    pub dedup_window: Duration,
    pub dedup_capacity: usize,
    /// Events committed but not yet indexed beyond which publishing is refused.
    pub max_backlog: u64,
    /// Requests the server has in progress, which the writer paces its flushes by.
    pub requests_in_progress: Arc<AtomicUsize>,
}

/// How far the log and the index have got, shared by the writer, the indexer and queries.
pub struct Progress {
    committed: AtomicU64,
    committed_changed: Notify,
    indexed: watch::Sender<u64>,
}

impl Progress {
    pub fn new(committed: u64, indexed: u64) -> Self {
        Progress {
            committed: AtomicU64::new(committed),
            committed_changed: Notify::new(),
            indexed: watch::Sender::new(indexed),
        }
    }

    /// The last seq whose event is durable in the log.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The last seq whose event is visible to queries.
    pub fn indexed(&self) -> u64 {
        *self.indexed.borrow()
    }

    /// Events committed but not yet indexed. Saturating: `indexed` may move past the
    /// `committed` value read a moment earlier.
    pub fn backlog(&self) -> u64 {
        self.committed().saturating_sub(self.indexed())
    }

    pub(crate) fn set_committed(&self, seq: u64) {
        self.committed.store(seq, Ordering::Release);
        self.committed_changed.notify_one();
    }

    pub(crate) fn set_indexed(&self, seq: u64) {
        self.indexed.send_replace(seq);
    }

    /// Resolves once the writer has committed something new (used by the indexer).
    pub(crate) async fn committed_changed(&self) {
        self.committed_changed.notified().await
    }

    /// Waits until everything up to `seq` is indexed, at most `timeout`; `false` if it was not.
    pub async fn wait_indexed(&self, seq: u64, timeout: Duration) -> bool {
        let mut indexed = self.indexed.subscribe();
        let reached =
            tokio::time::timeout(timeout, indexed.wait_for(|&indexed| indexed >= seq)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// The durable log as a [`Queue`]. Its writer thread runs from [`start`](Self::start) to
/// [`close`](Self::close).
pub struct LogQueue {
    messages: mpsc::UnboundedSender<Message>,
    progress: Arc<Progress>,
    max_backlog: u64,
    dir: PathBuf,
    store: Arc<dyn Store>,
    /// The writer, until it is started.
    unstarted: Mutex<Option<Writer>>,
}

impl LogQueue {
    /// Opens the log after a start or a crash: cuts a torn tail, finds where the store's
    /// index stands, and remembers the recent client ids (from the store and from the log
    /// beyond the index) so that retries across the restart are still deduplicated.
    pub async fn open(
        config: LogConfig,
        store: Arc<dyn Store>,
        clock: &dyn Clock,
        health: &Health,
    ) -> Result<LogQueue> {
        let indexed_seq = store.indexed_seq().await?;
        let dir = config.dir.clone();
        let fsync = config.fsync;
        let (log, recovered) =
            tokio::task::spawn_blocking(move || LogWriter::open(&dir, indexed_seq, fsync))
                .await??;
        let committed_seq = recovered.next_seq - 1;
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                bytes = recovered.truncated_bytes,
                "cut a torn tail from the durable log (writes never acknowledged)"
            );
        }
        if committed_seq > indexed_seq {
            tracing::info!(
                events = committed_seq - indexed_seq,
                "indexing events logged before the last stop"
            );
        }

        let window_ms = config.dedup_window.as_millis() as i64;
        let mut dedup = RecentIds::new(config.dedup_capacity, window_ms);
        let mut remembered = store
            .recent_client_ids(clock.now_ms() - window_ms, config.dedup_capacity)
            .await
            .context("reading recent client ids")?;
        remembered.reverse(); // oldest first, so capacity evicts the oldest
        for (id, received_at) in remembered.into_iter().chain(recovered.client_ids) {
            dedup.remember(ids::client_id_hash(&id), received_at);
        }

        let progress = Arc::new(Progress::new(committed_seq, indexed_seq));
        let (messages, receiver) = mpsc::unbounded_channel();
        let writer = Writer::new(
            log,
            dedup,
            progress.clone(),
            receiver,
            health.register(
                "log",
                "the durable log cannot be written",
                crate::health::Readiness::Required,
            ),
            health.last_commit(),
            config.requests_in_progress.clone(),
        );
        Ok(LogQueue {
            messages,
            progress,
            max_backlog: config.max_backlog,
            dir: config.dir,
            store,
            unstarted: Mutex::new(Some(writer)),
        })
    }

    /// Starts the writer thread, which hands every committed group to `publisher` for the
    /// live stream.
    pub fn start(&self, publisher: Publisher) -> Result<JoinHandle<()>> {
        let writer = self
            .unstarted
            .lock()
            .expect("not poisoned")
            .take()
            .context("the log writer is already started")?;
        std::thread::Builder::new()
            .name("eventide-log-writer".into())
            .spawn(move || writer.run(publisher))
            .context("starting the log writer thread")
    }

    /// Tells the writer to commit what was submitted so far and stop; later submissions are
    /// refused as the server shutting down.
    pub fn close(&self) {
        let _ = self.messages.send(Message::Close);
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The log's directory, for the indexer that reads it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Queue for LogQueue {
    async fn publish(&self, batch: PreparedBatch) -> Result<CommitOutcome, IngestError> {
        let backlog = self.progress.backlog();
        if backlog >= self.max_backlog {
            return Err(IngestError::BacklogFull {
                backlog,
                max: self.max_backlog,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.messages
            .send(Message::Submit { batch, reply })
            .map_err(|_| IngestError::ShuttingDown)?;
        answer.await.unwrap_or(Err(IngestError::ShuttingDown))
    }

    fn backlog(&self) -> Backlog {
        Backlog {
            events: self.progress.backlog(),
            max: self.max_backlog,
            what: "the index backlog",
        }
    }

    /// Everything committed when the read begins, once indexed (read-your-writes).
    async fn read_position(&self, wait: Duration) -> ReadPosition {
        let committed = self.progress.committed();
        if self.progress.wait_indexed(committed, wait).await {
            ReadPosition {
                through: Some(committed),
                complete: true,
            }
        } else {
            ReadPosition {
                through: Some(self.progress.indexed()),
                complete: false,
            }
        }
    }

    fn positions(&self) -> Option<Positions> {
        Some(Positions {
            committed: self.progress.committed(),
            indexed: self.progress.indexed(),
        })
    }
}

/// One writer commits `seq`s in order, so the store holds every event up to what is indexed.
#[async_trait]
impl Replay for LogQueue {
    async fn events_after(&self, query: ReplayQuery) -> Result<Vec<StoredEvent>> {
        self.store.events_after_seq(query).await
    }

    async fn wait_replayable(&self, seq: u64, timeout: Duration) -> bool {
        self.progress.wait_indexed(seq, timeout).await
    }

    fn published_through(&self) -> u64 {
        self.progress.committed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_never_underflows_when_indexed_moves_first() {
        assert_eq!(Progress::new(5, 7).backlog(), 0);
        assert_eq!(Progress::new(9, 7).backlog(), 2);
    }
}
