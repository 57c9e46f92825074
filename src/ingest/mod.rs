//! Ingestion: from validated events to durable, acknowledged log entries, and from the log to
//! the indexed store.
//!
//! A request handler prepares its events ([`PreparedBatch`]: ids assigned, payloads encoded)
//! and submits them; the single [`writer`] thread deduplicates client ids, assigns `seq`s and
//! appends everything that arrived meanwhile in one write (group commit), then answers each
//! submission. The [`indexer`] follows the log into the [`crate::store::Store`].

pub mod dedup;
pub mod ids;
pub mod indexer;
pub mod log;
pub mod record;
pub mod writer;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::event::NewEvent;

/// Events of one request, encoded for the log and ready for the writer.
pub struct PreparedBatch {
    received_at_ms: i64,
    payloads: Vec<u8>,
    events: Vec<PreparedEvent>,
}

struct PreparedEvent {
    payload: Range<usize>,
    /// For an event with a client id: the id's hash and the content's
    /// ([`record::content_hash`]), computed here rather than on the single writer thread.
    client: Option<(u128, u64)>,
}

impl PreparedBatch {
    pub fn new(received_at_ms: i64, capacity: usize) -> Self {
        PreparedBatch {
            received_at_ms,
            payloads: Vec::with_capacity(capacity * 256),
            events: Vec::with_capacity(capacity),
        }
    }

    /// Adds `event` under `id` (the client's, or a server id when it sent none).
    pub fn push(&mut self, event: &NewEvent, id: &str) {
        let start = self.payloads.len();
        record::encode_payload(&mut self.payloads, event, id, self.received_at_ms);
        let payload = start..self.payloads.len();
        let client = event.id.as_deref().map(|id| {
            let content = &self.payloads[payload.clone()];
            (
                ids::client_id_hash(id),
                record::content_hash(content, id, event.timestamp_sent),
            )
        });
        self.events.push(PreparedEvent { payload, client });
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Each event's encoded payload (the log's record format), in order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.events
            .iter()
            .map(|event| &self.payloads[event.payload.clone()])
    }
}

/// A durable queue shared with workers, where an API node of a cluster puts the events it
/// acknowledges instead of its own log (`--queue redis://...`).
#[async_trait::async_trait]
pub trait RemoteQueue: Send + Sync + 'static {
    /// Adds every payload; `Ok` only once the queue holds them all durably.
    async fn publish(&self, payloads: Vec<&[u8]>) -> Result<(), String>;
    /// Entries the workers have not stored yet, as last measured (cheap: no round trip).
    fn backlog(&self) -> u64;
}

/// Why a submission was not stored. Nothing of a refused submission is stored, so a retry
/// is always safe.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("too many events are waiting to be committed ({pending} of at most {max})")]
    PendingFull { pending: u64, max: u64 },
    #[error("the indexer is {backlog} events behind (at most {max}); retry shortly")]
    BacklogFull { backlog: u64, max: u64 },
    #[error("the durable log cannot be written: {0}")]
    LogUnavailable(String),
    #[error("the workers are {backlog} events behind (at most {max}); retry shortly")]
    QueueBacklogFull { backlog: u64, max: u64 },
    #[error("the queue cannot be written: {0}")]
    QueueUnavailable(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl IngestError {
    /// A short machine-readable name for the cause.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::PendingFull { .. } => "ingest_queue_full",
            IngestError::BacklogFull { .. } => "index_backlog_full",
            IngestError::LogUnavailable(_) => "log_unavailable",
            IngestError::QueueBacklogFull { .. } => "queue_backlog_full",
            IngestError::QueueUnavailable(_) => "queue_unavailable",
            IngestError::ShuttingDown => "shutting_down",
        }
    }
}

/// What a commit did not store of a submission: events whose client id was accepted before.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Repeats of an accepted event (same id, same content).
    pub duplicates: usize,
    /// Events with an accepted id but other content: the first version stays.
    pub conflicts: usize,
}

pub(crate) struct Submission {
    batch: PreparedBatch,
    reply: oneshot::Sender<Result<CommitOutcome, IngestError>>,
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

/// The handle request handlers use to submit events. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<IngestInner>,
}

struct IngestInner {
    sink: Sink,
    /// Events submitted but not yet answered: the sender is unbounded because this counter,
    /// checked before sending, is the bound (in events, not in requests).
    pending: Arc<AtomicU64>,
    max_pending: u64,
    max_backlog: u64,
    progress: Arc<Progress>,
}

/// Where submitted events go.
enum Sink {
    /// The log writer thread (the embedded queue).
    Log(mpsc::UnboundedSender<Submission>),
    /// A cluster's queue.
    Remote(Arc<dyn RemoteQueue>),
}

/// On an API node, nothing is indexed locally: queries neither wait for nor are pinned to a
/// local position, so they read up to the largest `seq` the stores take.
const REMOTE_POSITION: u64 = i64::MAX as u64;

impl Ingest {
    /// An API node's ingest: events go to `queue`, at most `max_pending` in flight, refused
    /// with 429 while the workers are `max_backlog` or more entries behind.
    pub fn remote(queue: Arc<dyn RemoteQueue>, max_pending: u64, max_backlog: u64) -> Ingest {
        Ingest {
            inner: Arc::new(IngestInner {
                sink: Sink::Remote(queue),
                pending: Arc::new(AtomicU64::new(0)),
                max_pending,
                max_backlog,
                progress: Arc::new(Progress::new(REMOTE_POSITION, REMOTE_POSITION)),
            }),
        }
    }

    /// Submits a batch and waits for its commit.
    pub async fn submit(&self, batch: PreparedBatch) -> Result<CommitOutcome, IngestError> {
        let inner = &self.inner;
        let submissions = match &inner.sink {
            Sink::Log(submissions) => submissions,
            Sink::Remote(queue) => return self.submit_remote(queue, batch).await,
        };
        let backlog = inner.progress.backlog();
        if backlog >= inner.max_backlog {
            return Err(IngestError::BacklogFull {
                backlog,
                max: inner.max_backlog,
            });
        }
        let count = batch.len() as u64;
        let pending = inner.pending.fetch_add(count, Ordering::AcqRel) + count;
        if pending > inner.max_pending {
            inner.pending.fetch_sub(count, Ordering::AcqRel);
            return Err(IngestError::PendingFull {
                pending: pending - count,
                max: inner.max_pending,
            });
        }
        let (reply, answer) = oneshot::channel();
        if submissions.send(Submission { batch, reply }).is_err() {
            inner.pending.fetch_sub(count, Ordering::AcqRel);
            return Err(IngestError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(IngestError::ShuttingDown))
    }

    async fn submit_remote(
        &self,
        queue: &Arc<dyn RemoteQueue>,
        batch: PreparedBatch,
    ) -> Result<CommitOutcome, IngestError> {
        let inner = &self.inner;
        let backlog = queue.backlog();
        if backlog >= inner.max_backlog {
            return Err(IngestError::QueueBacklogFull {
                backlog,
                max: inner.max_backlog,
            });
        }
        let count = batch.len() as u64;
        let pending = inner.pending.fetch_add(count, Ordering::AcqRel) + count;
        let published = if pending > inner.max_pending {
            Err(IngestError::PendingFull {
                pending: pending - count,
                max: inner.max_pending,
            })
        } else {
            queue
                .publish(batch.payloads().collect())
                .await
                .map_err(IngestError::QueueUnavailable)
        };
        inner.pending.fetch_sub(count, Ordering::AcqRel);
        // Duplicates are found by the workers' store (ids are unique there), not here.
        published.map(|()| CommitOutcome::default())
    }

    /// Events committed (or queued) but not yet stored: what readiness and 429s look at.
    pub fn backlog(&self) -> u64 {
        match &self.inner.sink {
            Sink::Log(_) => self.inner.progress.backlog(),
            Sink::Remote(queue) => queue.backlog(),
        }
    }

    /// Whether events go to a cluster's queue rather than this process's log.
    pub fn is_remote(&self) -> bool {
        matches!(self.inner.sink, Sink::Remote(_))
    }

    /// Events submitted and not yet answered, and the most there may be.
    pub fn pending(&self) -> (u64, u64) {
        let inner = &self.inner;
        (inner.pending.load(Ordering::Relaxed), inner.max_pending)
    }

    /// The most events that may be committed but not yet indexed.
    pub fn max_backlog(&self) -> u64 {
        self.inner.max_backlog
    }

    /// How far this process's log and index have got; `None` on an API node of a cluster,
    /// which has neither.
    pub fn progress(&self) -> Option<&Arc<Progress>> {
        match self.inner.sink {
            Sink::Log(_) => Some(&self.inner.progress),
            Sink::Remote(_) => None,
        }
    }

    /// Waits (at most `wait`) until every event acknowledged before now is indexed. Returns
    /// the seq a read may include up to, and whether that covers everything acknowledged.
    /// An API node of a cluster cannot know what the workers stored: it reads everything
    /// stored, at once (no read-your-writes).
    pub async fn read_position(&self, wait: Duration) -> (u64, bool) {
        let Some(progress) = self.progress() else {
            return (REMOTE_POSITION, true);
        };
        let committed = progress.committed();
        if progress.wait_indexed(committed, wait).await {
            (committed, true)
        } else {
            (progress.indexed(), false)
        }
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
