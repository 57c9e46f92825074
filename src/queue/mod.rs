//! The queue between taking events over HTTP and storing them: the one boundary both
//! deployment modes share.
//!
//! A request handler prepares its events ([`PreparedBatch`]: ids assigned, payloads encoded
//! in the [`crate::record`] format) and submits them through [`Ingest`], which bounds what is
//! pending and publishes them to the [`Queue`]: the embedded durable log of a single process
//! ([`log`]) or a cluster's Redis stream ([`redis`]). `Ok` means durable: the `202`. From
//! there the consume loop ([`crate::consume`]) moves them into the store. Each queue also
//! feeds the live stream ([`crate::live::Publisher`]) with what it takes, and replays what a
//! resuming subscriber missed ([`crate::live::Replay`]).

pub mod batch;
pub mod ids;
pub mod log;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use batch::{CommitOutcome, PreparedBatch};

/// The ingest side of the queue.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds the events of `batch`, all or none; `Ok` once they are durable (as the
    /// deployment defines it: in the log, or in Redis), with what was set aside as already
    /// accepted. Refused (nothing added) while the backlog is at its bound.
    async fn publish(&self, batch: PreparedBatch) -> Result<CommitOutcome, IngestError>;

    /// Events published but not stored yet, as last known (no round trip).
    fn backlog(&self) -> Backlog;

    /// The `seq` a read may include, after waiting at most `wait` for the store to reach
    /// everything published before the call.
    async fn read_position(&self, wait: Duration) -> ReadPosition;

    /// How far the log and the store have got, where this process knows (its own log).
    fn positions(&self) -> Option<Positions>;
}

/// Events published but not yet stored, and the bound beyond which publishing is refused.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub events: u64,
    pub max: u64,
    /// What these events wait for, for reports: "the index backlog".
    pub what: &'static str,
}

/// What a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    /// The highest `seq` the read includes; `None`: everything stored (a cluster's API node
    /// cannot know what the workers are about to store, so it does not wait for them).
    pub through: Option<u64>,
    /// Whether that covers every event published before the read began.
    pub complete: bool,
}

/// The log's positions: what is durable, and what of it the store has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    pub committed: u64,
    pub indexed: u64,
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

/// The handle request handlers submit through: the queue, with a bound on the events
/// submitted and not answered yet. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue: Arc<dyn Queue>,
    /// Events submitted but not yet answered, in events rather than requests.
    pending: Arc<AtomicU64>,
    max_pending: u64,
}

impl Ingest {
    pub fn new(queue: Arc<dyn Queue>, max_pending: u64) -> Ingest {
        Ingest {
            queue,
            pending: Arc::new(AtomicU64::new(0)),
            max_pending,
        }
    }

    /// Submits a batch and waits until it is durable (or refused).
    pub async fn submit(&self, batch: PreparedBatch) -> Result<CommitOutcome, IngestError> {
        let count = batch.len() as u64;
        let pending = self.pending.fetch_add(count, Ordering::AcqRel) + count;
        let published = if pending > self.max_pending {
            Err(IngestError::PendingFull {
                pending: pending - count,
                max: self.max_pending,
            })
        } else {
            self.queue.publish(batch).await
        };
        self.pending.fetch_sub(count, Ordering::AcqRel);
        published
    }

    /// Events submitted and not yet answered, and the most there may be.
    pub fn pending(&self) -> (u64, u64) {
        (self.pending.load(Ordering::Relaxed), self.max_pending)
    }

    pub fn backlog(&self) -> Backlog {
        self.queue.backlog()
    }

    pub async fn read_position(&self, wait: Duration) -> ReadPosition {
        self.queue.read_position(wait).await
    }

    pub fn positions(&self) -> Option<Positions> {
        self.queue.positions()
    }
}
