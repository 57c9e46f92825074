//! The embedded store: SQLite databases (WAL mode) under the data directory: `events.db`,
//! and `events.users.db` for the user index.
//!
//! One connection writes the events' database, on a thread of its own ([`writer`]): only the
//! indexer, in large batches, and retention's short steps ([`retention`]) in between. The
//! user index has a file and a writer thread of its own, which stores each batch's entries
//! while the events' writer stores the events ([`user_store`]). Another thread copies each
//! WAL into its database ([`checkpointer`]). A small pool of connections reads ([`reads`],
//! built by [`query`]), concurrently with the writers thanks to WAL, on tokio's blocking
//! pool, with the user index's file attached. Events live in time partitions
//! ([`partitions`]); user ids have an index of their own in two levels ([`user_index`]),
//! and services one in the user index's file ([`service_index`]).
//! The events' schema is created and migrated on open ([`migrations`]).

mod alerts;
mod checkpointer;
mod credentials;
mod entry_tables;
mod event_ids;
mod event_inserts;
mod migrations;
mod multi_row;
mod partitions;
mod query;
mod reads;
mod retention;
mod service_index;
mod thread;
mod user_index;
mod user_store;
mod writer;

pub use user_index::Sweep as UserIndexSweep;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use rusqlite::Connection;

use super::partitioning::TimeRange;
use super::{
    AppendOutcome, EventFilter, EventQuery, Events, Purged, ReplayQuery, RollupQuery, RollupRow,
    Store, StoreResult,
};
use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;
use user_store::UserWriter;
use writer::{Task, Writer, WriterThread};

/// Most queries running at once. Each reader connection has its own page cache, so this
/// bounds memory; more concurrent queries wait their turn. On 2 cores, 4 measured better
/// than 8: query p99 6.4 ms instead of 8.8 ms at 5,000,000 events, and 30 MB less memory.
const MAX_READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    /// Whether [`Store::make_durable`] flushes the database's files (`--durability fsync`).
    fsync: bool,
    writes: WriterThread<Writer>,
    /// The user index's writer thread.
    user_writes: WriterThread<UserWriter>,
    _checkpointers: [checkpointer::Checkpointer; 2],
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<tokio::sync::Semaphore>,
}

/// Flushes the database and its WAL to the device: every committed transaction is in one of
/// them (a checkpoint flushes the database before the WAL is written over).
fn flush_files(path: &Path) -> Result<()> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for file in [PathBuf::from(wal), path.to_owned()] {
        match std::fs::File::open(&file) {
            Ok(opened) => opened
                .sync_all()
                .with_context(|| format!("flushing {}", file.display()))?,
            // No WAL: everything is in the database.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("opening {}", file.display())),
        }
    }
    Ok(())
}

/// Statements kept prepared per connection: a few per partition.
const STATEMENT_CACHE: usize = 512;

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`. With `fsync`, the
    /// indexed batches are flushed to disk before the log behind them may be deleted
    /// ([`Store::make_durable`]).
    pub fn open(path: &Path, fsync: bool) -> Result<SqliteStore> {
        Self::open_with(path, fsync, UserIndexSweep::DEFAULT)
    }

    /// [`open`](Self::open) with a chosen sweep of the user index, so tests can keep
    /// entries in both of its levels.
    #[doc(hidden)]
    pub fn open_with(path: &Path, fsync: bool, sweep: UserIndexSweep) -> Result<SqliteStore> {
        // 40 MiB of cache. The cache fills with pages written once (appended rows, the
        // newest end of each index) and only pays with client ids, whose unique index takes
        // inserts all over it. Against 64 MiB, sustained with client ids made -4% in 20 s
        // runs and -8% in 60 s runs (the index outgrows either cache), and the peak RSS fell
        // from 243-253 to 213-218 MB, reliably under the bound of 250; server ids, queries at
        // 5,000,000 and a backfill ran as fast (README, fourteenth pass). 24 MiB: -25%.
        let mut connection = open_writer_connection(path, 40)
            .with_context(|| format!("opening the store at {}", path.display()))?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        migrations::migrate(&mut connection)?;
        let layout = partitions::layout(&connection)?;
        let text_ids = partitions::with_text_ids(&connection)?;
        let user_writer = user_store::open(path, sweep)?;
        let checkpointers = [
            checkpointer::spawn(path)?,
            checkpointer::spawn(&user_store::path(path))?,
        ];
        let writes = writer::spawn(
            "eventide-store-writer",
            Writer {
                connection,
                layout,
                text_ids,
            },
        )?;
        let user_writes = writer::spawn("eventide-users-writer", user_writer)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            fsync,
            writes,
            user_writes,
            _checkpointers: checkpointers,
            readers: Arc::new(Mutex::new(Vec::new())),
            reader_permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
        })
    }

    /// The user index's file of the store at `path` (see [`user_store`]).
    pub fn user_index_path(path: &Path) -> PathBuf {
        user_store::path(path)
    }

    /// Runs `work` on the events' writer thread, after the work sent before it.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        run_on(&self.writes, "store writer", work).await
    }

    /// Runs `work` on the user index's writer thread, after the work sent before it.
    async fn write_users<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut UserWriter) -> Result<T> + Send + 'static,
    {
        run_on(&self.user_writes, "user index writer", work).await
    }

    /// [`write`](Self::write) for a retention step, also timing it.
    async fn write_step<T, F>(&self, work: F) -> Result<(T, Duration)>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        self.write(timed(work)).await
    }

    /// [`write_users`](Self::write_users) for a retention step, also timing it.
    async fn write_users_step<T, F>(&self, work: F) -> Result<(T, Duration)>
    where
        T: Send + 'static,
        F: FnOnce(&mut UserWriter) -> Result<T> + Send + 'static,
    {
        self.write_users(timed(work)).await
    }

    /// Runs `work` on a pooled read connection on the blocking pool, in one read
    /// transaction: it sees one snapshot, partitions included, even while retention drops
    /// some.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .context("the store is closed")?;
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap().pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => open_reader(&path)?,
            };
            let result = connection
                .unchecked_transaction()
                .map_err(anyhow::Error::from)
                .and_then(|snapshot| {
                    let result = work(&snapshot)?;
                    snapshot.commit()?;
                    Ok(result)
                });
            // At most MAX_READERS connections exist: one per permit.
            readers.lock().unwrap().push(connection);
            drop(permit);
            result
        })
        .await
        .context("store reader task")?
    }
}

/// `work`, also timing it.
fn timed<S, T>(
    work: impl FnOnce(&mut S) -> Result<T>,
) -> impl FnOnce(&mut S) -> Result<(T, Duration)> {
    move |state| {
        let started = Instant::now();
        Ok((work(state)?, started.elapsed()))
    }
}

/// Opens the writing connection of a database of the store (created if missing), with a
/// page cache of `cache_mib`.
fn open_writer_connection(path: &Path, cache_mib: i64) -> Result<Connection> {
    let connection = Connection::open(path)?;
    // Larger pages: fewer, fuller B-tree pages per index insert (measured +22% indexing
    // throughput over 4 KiB). Only takes effect when the database is created.
    connection.pragma_update(None, "page_size", 16 * 1024)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: a commit is written to the WAL, not flushed; it survives a crash of the
    // process, and a power loss once the WAL is flushed (at a checkpoint, or by
    // `make_durable` before the log behind it is deleted). FULL, a flush per index
    // transaction, cost a fifth of the sustained rate.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // Negative: in KiB.
    connection.pragma_update(None, "cache_size", -cache_mib * 1024)?;
    // Checkpoints are the checkpointer's; the writer's only bound the WAL.
    connection.pragma_update(None, "wal_autocheckpoint", checkpointer::WAL_BOUND_PAGES)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// Runs `work` on the writer thread that takes `tasks`, after the work sent before it.
async fn run_on<S, T, F>(tasks: &WriterThread<S>, name: &str, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut S) -> Result<T> + Send + 'static,
{
    let (done, outcome) = tokio::sync::oneshot::channel();
    let task: Task<S> = Box::new(move |state| {
        let _ = done.send(work(state));
    });
    let stopped = || anyhow::anyhow!("the {name} thread has stopped");
    tasks.send(task).map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

fn open_reader(path: &Path) -> Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening a reader on {}", path.display()))?;
    connection.pragma_update(None, "cache_size", -4 * 1024)?; // KiB: 4 MiB
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The user index's tables, found by name as the events' are.
    connection.execute(
        "ATTACH DATABASE ? AS users",
        [user_store::path(path).to_string_lossy()],
    )?;
    Ok(connection)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_batch(&self, events: Events, indexed_seq: u64) -> StoreResult<AppendOutcome> {
        // Both writers at once; the events' one answers for both (see user_store).
        let (events_side, users_side) = user_store::handoff();
        let entries = events.clone();
        let task: Task<UserWriter> =
            Box::new(move |users| users.append(&entries, indexed_seq, users_side));
        // Not sent: the thread has stopped, and the events' writer will say so.
        let _ = self.user_writes.send(task);
        self.write(move |writer| writer.append(&events, indexed_seq, events_side))
            .await
            .map_err(writer::sort_write_error)
    }

    async fn indexed_seq(&self) -> Result<u64> {
        self.read(|connection| {
            let events = reads::progress(connection, "indexed_seq")?;
            Ok(events.min(user_store::held_seq(connection)?))
        })
        .await
    }

    async fn make_durable(&self) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let path = self.path.clone();
        // Not on the writer threads, which would wait for the disk instead of indexing: each
        // batch appended so far is written to the WALs, or copied into the databases by
        // checkpoints that flushed them before the WALs started over, so flushing the files
        // from here covers them.
        tokio::task::spawn_blocking(move || {
            flush_files(&path)?;
            flush_files(&user_store::path(&path))
        })
        .await
        .context("store flush task")?
    }

    async fn query(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        self.read(move |connection| reads::query(connection, &query))
            .await
    }

    async fn count(&self, filter: EventFilter) -> Result<u64> {
        self.read(move |connection| reads::count(connection, &filter))
            .await
    }

    async fn events_after_seq(&self, query: ReplayQuery) -> Result<Vec<StoredEvent>> {
        self.read(move |connection| reads::events_after_seq(connection, &query))
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>> {
        let id = id.to_owned();
        self.read(move |connection| reads::get(connection, &id))
            .await
    }

    async fn event_count(&self) -> Result<u64> {
        self.read(|connection| reads::progress(connection, "event_count"))
            .await
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        self.read(reads::time_range).await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>> {
        self.read(move |connection| reads::rollups(connection, &query))
            .await
    }

    async fn counts_per_second(&self, from_ms: i64) -> Result<Vec<RollupRow>> {
        self.read(move |connection| reads::counts_per_second(connection, from_ms))
            .await
    }

    async fn recent_client_ids(&self, since_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        self.read(move |connection| reads::recent_client_ids(connection, since_ms, limit))
            .await
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let (name, candidate) = (name.to_owned(), candidate.to_vec());
        self.write(move |writer| credentials::secret(&writer.connection, &name, &candidate))
            .await
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.write(move |writer| credentials::create_key(&writer.connection, &key))
            .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(credentials::list_keys).await
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |writer| credentials::revoke_key(&writer.connection, &id, at_ms))
            .await
    }

    async fn keys_version(&self) -> Result<i64> {
        self.read(credentials::keys_version).await
    }

    async fn record_key_uses(&self, uses: &[(String, i64)]) -> Result<()> {
        let uses = uses.to_vec();
        self.write(move |writer| credentials::record_key_uses(&writer.connection, &uses))
            .await
    }

    async fn alert_records(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let kind = kind.to_owned();
        self.read(move |connection| alerts::records(connection, &kind))
            .await
    }

    async fn put_alert_record(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        let (kind, name, body) = (kind.to_owned(), name.to_owned(), body.to_owned());
        self.write(move |writer| alerts::put(&writer.connection, &kind, &name, &body))
            .await
    }

    async fn delete_alert_record(&self, kind: &str, name: &str) -> Result<bool> {
        let (kind, name) = (kind.to_owned(), name.to_owned());
        self.write(move |writer| alerts::delete(&writer.connection, &kind, &name))
            .await
    }

    async fn add_alert_history(&self, entries: Vec<(i64, String)>) -> Result<()> {
        self.write(move |writer| alerts::add_history(&writer.connection, &entries))
            .await
    }

    async fn alert_history(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, i64, String)>> {
        self.read(move |connection| alerts::history(connection, before, limit))
            .await
    }

    async fn partitions(&self) -> Result<Vec<TimeRange>> {
        self.read(reads::partition_ranges).await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<Purged> {
        retention::purge_before(self, cutoff_ms).await
    }
}

#[cfg(test)]
mod tests {
    /// `.cargo/config.toml`'s flags reached the SQLite this binary holds: built without them,
    /// every connection's page cache shares one lock, which the store's threads contend for.
    #[test]
    fn sqlite_is_built_without_its_process_wide_locks() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let options: Vec<String> = connection
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options
                .iter()
                .any(|option| option == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }
}
