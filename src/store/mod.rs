//! The indexed store: where events become queryable. One trait, [`Store`], with the embedded
//! SQLite implementation ([`sqlite`]), the scale-out PostgreSQL one ([`postgres`]) and one
//! that keeps nothing, for benchmarks ([`null`]); the HTTP layer knows nothing of SQL.

/// A [`KeyRecord`] from a row of `api_keys` selected as `id, name, prefix, hash, scopes,
/// created_ms, expires_ms, last_used_ms, revoked_ms`, as an `anyhow::Result`; `$get` is the
/// driver's method reading a column by index (`get` for rusqlite, `try_get` for
/// tokio-postgres). A macro because the two drivers' row types share no trait; defined before
/// the backends so that both can use it.
macro_rules! key_record_from_row {
    ($row:expr, $get:ident) => {
        (|| -> anyhow::Result<$crate::auth::keys::KeyRecord> {
            let hash: Vec<u8> = $row.$get(3)?;
            let scopes: String = $row.$get(4)?;
            Ok($crate::auth::keys::KeyRecord {
                id: $row.$get(0)?,
                name: $row.$get(1)?,
                prefix: $row.$get(2)?,
                hash: hash
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("a key hash is not 32 bytes"))?,
                scopes: $crate::auth::keys::Scopes::from_text(&scopes)
                    .map_err(anyhow::Error::msg)?,
                created_ms: $row.$get(5)?,
                expires_ms: $row.$get(6)?,
                last_used_ms: $row.$get(7)?,
                revoked_ms: $row.$get(8)?,
            })
        })()
    };
}

pub mod null;
pub mod partitioning;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;
use partitioning::TimeRange;

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

impl EventFilter {
    /// Whether `event` meets the conditions on its fields (not those on time or position).
    pub fn matches_fields(&self, event: &StoredEvent) -> bool {
        self.kind.as_ref().is_none_or(|kind| *kind == event.kind)
            && self
                .service
                .as_ref()
                .is_none_or(|service| Some(service) == event.service.as_ref())
            && self
                .user_id
                .as_ref()
                .is_none_or(|user| Some(user) == event.user_id.as_ref())
    }
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

impl Position {
    /// The position of `event`.
    pub fn of(event: &StoredEvent) -> Position {
        Position {
            timestamp_ms: event.timestamp_ms,
            seq: event.seq,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventQuery {
    pub filter: EventFilter,
    pub order: Order,
    pub after: Option<Position>,
    pub limit: usize,
    pub offset: usize,
}

/// What a resuming stream subscriber replays: events with `seq` above `after_seq` matching
/// `filter` (up to its `max_seq`), in `seq` order, at most `limit`.
#[derive(Debug, Clone)]
pub struct ReplayQuery {
    pub filter: EventFilter,
    pub after_seq: u64,
    pub limit: usize,
}

/// What `append_batch` did beyond storing: the events it skipped as already stored ids, so
/// whoever counts what was stored can leave them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub skipped: Vec<u64>,
}

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The start of the `size`-long bucket (aligned on the epoch, so on UTC boundaries for
/// seconds to days) that `ms` falls in; also right for times before 1970.
pub fn floor_to(ms: i64, size: i64) -> i64 {
    ms - ms.rem_euclid(size)
}

/// Event counts from the rollups, summed into `bucket_ms`-long buckets (a whole number of
/// minutes) per type and service, for minutes in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub kind: Option<String>,
    pub service: Option<String>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Events deleted, whether by dropping whole partitions or trimming rows.
    pub events: u64,
    /// Whole time partitions dropped.
    pub partitions: u64,
    /// The longest single step (one drop, one chunk of rows): how long indexing had to
    /// wait for retention at most.
    pub longest_step: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub bucket_ms: i64,
    pub kind: String,
    pub service: Option<String>,
    pub count: u64,
}

/// Why a write failed, sorted for the consume loop: wait and store the same batch again, or
/// set the batch aside. Each store sorts its own errors (by SQLSTATE, by SQLite result code);
/// when in doubt a failure is [`Unavailable`](StoreError::Unavailable), since retrying loses
/// nothing while setting events aside would.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot write now, whatever the batch: the connection is lost, refused or
    /// timed out, the disk is full, an I/O error, the server is shutting down or read-only,
    /// a conflict with another writer. Retry the same batch later.
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// The store works but will never take this batch as it is: it refuses a value in it
    /// (too large, not valid for its column). Retrying the same events changes nothing;
    /// whoever can set events aside (the worker's dead letters) should.
    #[error(transparent)]
    Rejected(anyhow::Error),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What a write answers: see [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// A batch's events, shared rather than borrowed: SQLite's writer thread holds them while
/// the caller waits, without copying them.
pub type Events = Arc<Vec<StoredEvent>>;

/// The boundary between the service and where events are indexed and queried.
///
/// Who writes: in one process the indexer alone, batch after batch in `seq` order, into
/// SQLite; in a cluster every worker at once into PostgreSQL, each its own batches, which
/// commit in no particular order between workers. So a store takes concurrent
/// `append_batch` calls, each atomic (all of the batch, its rollups and its position, or
/// nothing), and idempotent on the event id: an id already stored, by any batch or writer, is
/// skipped, so a batch read again after a crash or claimed from another worker is harmless.
/// The indexed position is the highest `seq` a batch recorded: with one writer in order,
/// every event up to it is stored; with several, lower ones may still be in another
/// worker's batch.
///
/// Only the write returns a typed error ([`StoreError`]): the consume loop waits out an
/// unavailable store, and hands a rejected batch to its source (the worker sets what keeps
/// being rejected aside; the indexer, which cannot, retries). Every other failure means the
/// same to its caller (the answer is a 503, the step is tried again later): `anyhow`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `events`, adds them to the rollups and records `indexed_seq` as the new
    /// indexed position, atomically.
    async fn append_batch(&self, events: Events, indexed_seq: u64) -> StoreResult<AppendOutcome>;

    /// The highest seq recorded by `append_batch` (0 for an empty store).
    async fn indexed_seq(&self) -> anyhow::Result<u64>;

    /// Makes every batch appended so far survive a power loss, when the store was opened to
    /// promise that: called before the only other copy of those events (the embedded
    /// queue's log segments) is deleted. Stores whose commits are durable already have
    /// nothing to do.
    async fn make_durable(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn query(&self, query: EventQuery) -> anyhow::Result<Vec<StoredEvent>>;

    async fn count(&self, filter: EventFilter) -> anyhow::Result<u64>;

    /// What a resuming stream subscriber replays from the store.
    async fn events_after_seq(&self, query: ReplayQuery) -> anyhow::Result<Vec<StoredEvent>>;

    async fn get(&self, id: &str) -> anyhow::Result<Option<StoredEvent>>;

    /// How many events are stored, maintained as they are written (no scan).
    async fn event_count(&self) -> anyhow::Result<u64>;

    /// The oldest and newest event timestamps stored (`None` when empty), from the index.
    async fn time_range(&self) -> anyhow::Result<Option<(i64, i64)>>;

    /// Counts from the per-minute rollups.
    async fn rollups(&self, query: RollupQuery) -> anyhow::Result<Vec<RollupRow>>;

    /// Counts per second x type x service of the events with timestamps from `from_ms` on,
    /// computed from the events themselves: what the in-memory per-second counts are rebuilt
    /// from at start (an hour's worth, read once).
    async fn counts_per_second(&self, from_ms: i64) -> anyhow::Result<Vec<RollupRow>>;

    /// Client ids received at or after `since_ms`, newest first, at most `limit`: what the
    /// deduplication set is rebuilt from at start.
    async fn recent_client_ids(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, i64)>>;

    /// The deployment's secret called `name`: `candidate` (random bytes) the first time it
    /// is asked for, the bytes first stored ever after, for every process sharing the store.
    async fn secret(&self, name: &str, candidate: &[u8]) -> anyhow::Result<Vec<u8>>;

    /// Stores a new API key (its hash and details, never the secret).
    async fn create_key(&self, key: &KeyRecord) -> anyhow::Result<()>;

    /// Every key, revoked and expired ones included, oldest first.
    async fn list_keys(&self) -> anyhow::Result<Vec<KeyRecord>>;

    /// Revokes the key `id` at `at_ms`; `false` if no such key is left to revoke.
    async fn revoke_key(&self, id: &str, at_ms: i64) -> anyhow::Result<bool>;

    /// A number that changes whenever a key is created or revoked, by any process sharing
    /// the store: what each server polls to reload its keys.
    async fn keys_version(&self) -> anyhow::Result<i64>;

    /// Records when keys were last used (moving each forward only); not a change of the keys.
    async fn record_key_uses(&self, uses: &[(String, i64)]) -> anyhow::Result<()>;

    /// Deletes every event whose timestamp is before `cutoff_ms`, the minute and hour rollup
    /// rows whose whole bucket ends at or before it, and keeps `event_count` right. Done in
    /// short steps, so indexing goes on in between.
    async fn purge_before(&self, cutoff_ms: i64) -> anyhow::Result<Purged>;

    /// Every event matching `filter`, in `(timestamp, seq)` order, sent into `pages` at most
    /// `page` at a time (the channel's bound is what memory holds); an error is sent last.
    /// Ends when all are sent or `pages` is closed (the reader went away).
    ///
    /// By default a keyset walk of [`query`](Self::query): consistent where every event up
    /// to `filter.max_seq` is stored before the export begins and nothing else changes
    /// under it (the embedded store, whose one writer stores in `seq` order). PostgreSQL
    /// reads every page in one `REPEATABLE READ READ ONLY` transaction: one snapshot, whatever
    /// other workers commit or retention deletes meanwhile.
    async fn export(
        &self,
        filter: EventFilter,
        page: usize,
        pages: tokio::sync::mpsc::Sender<anyhow::Result<Vec<StoredEvent>>>,
    ) {
        let mut after = None;
        loop {
            let events = self
                .query(EventQuery {
                    filter: filter.clone(),
                    order: Order::Asc,
                    after,
                    limit: page,
                    offset: 0,
                })
                .await;
            let last = match &events {
                Ok(events) if events.len() == page => events.last().map(Position::of),
                _ => None,
            };
            if pages.send(events).await.is_err() || last.is_none() {
                return;
            }
            after = last;
        }
    }

    /// The time partitions events are kept in, oldest first (see [`partitioning`]): what
    /// `/health/detailed` counts, so a backfill's layout can be seen.
    async fn partitions(&self) -> anyhow::Result<Vec<TimeRange>>;

    /// Alerting's records of `kind` (rules added over HTTP, alert states, notification logs,
    /// silences): (name, JSON body) by name. The null store keeps none.
    async fn alert_records(&self, _kind: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Creates or replaces the record `kind`/`name`.
    async fn put_alert_record(&self, _kind: &str, _name: &str, _body: &str) -> anyhow::Result<()> {
        Ok(())
    }

    /// Deletes the record `kind`/`name`; `false` if there was none.
    async fn delete_alert_record(&self, _kind: &str, _name: &str) -> anyhow::Result<bool> {
        Ok(false)
    }

    /// Adds entries (at, JSON body) to the alerts' history, which keeps the newest 10,000.
    async fn add_alert_history(&self, _entries: Vec<(i64, String)>) -> anyhow::Result<()> {
        Ok(())
    }

    /// History entries (id, at, JSON body) with ids below `before`, newest first.
    async fn alert_history(
        &self,
        _before: Option<i64>,
        _limit: usize,
    ) -> anyhow::Result<Vec<(i64, i64, String)>> {
        Ok(Vec::new())
    }

    /// Whether this process leads alerting (evaluates and notifies), taking the lead if no
    /// one holds it; checked at every evaluation. One process per data directory: the
    /// embedded store always leads.
    async fn lead_alerts(&self) -> anyhow::Result<bool> {
        Ok(true)
    }
}
