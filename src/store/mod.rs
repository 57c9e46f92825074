//! The indexed store: where events become queryable. One trait, [`Store`], with the embedded
//! SQLite implementation ([`sqlite`]); the HTTP layer knows nothing of SQL.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::StoredEvent;

/// Which events a query is about. All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub service: Option<String>,
    pub user_id: Option<String>,
    /// Inclusive lower bound on the event timestamp (epoch ms).
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on the event timestamp (epoch ms).
    pub to_ms: Option<i64>,
    /// Only events with `seq` at or below this: the snapshot a cursor walk is pinned to.
    pub max_seq: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Newest timestamp first, ties by `seq` descending.
    Desc,
    /// Oldest first, ties by `seq` ascending.
    Asc,
}

/// A position in the `(timestamp, seq)` order: a page continues strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub timestamp_ms: i64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct EventQuery {
    pub filter: EventFilter,
    pub order: Order,
    pub after: Option<Position>,
    pub limit: usize,
    pub offset: usize,
}

/// The boundary between the service and where events are indexed and queried.
///
/// Writes come only from the indexer, in `seq` order; `append_batch` is idempotent on the
/// event id (an id already stored is skipped), so replaying the log after a crash is safe.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `events` and records `indexed_seq` as the new indexed position, atomically.
    async fn append_batch(
        &self,
        events: Arc<Vec<StoredEvent>>,
        indexed_seq: u64,
    ) -> anyhow::Result<()>;

    /// The highest seq recorded by `append_batch` (0 for an empty store).
    async fn indexed_seq(&self) -> anyhow::Result<u64>;

    async fn query(&self, query: EventQuery) -> anyhow::Result<Vec<StoredEvent>>;

    async fn count(&self, filter: EventFilter) -> anyhow::Result<u64>;

    /// Events with `seq` above `after_seq` matching `filter`, in `seq` order, at most
    /// `limit`: what a resuming stream subscriber replays.
    async fn events_after_seq(
        &self,
        filter: EventFilter,
        after_seq: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredEvent>>;

    async fn get(&self, id: String) -> anyhow::Result<Option<StoredEvent>>;

    /// Client ids received at or after `since_ms`, newest first, at most `limit`: what the
    /// deduplication set is rebuilt from at start.
    async fn recent_client_ids(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, i64)>>;
}
