//! The embedded store: one SQLite database (`events.db`, WAL mode) under the data directory.
//!
//! One connection writes (only the indexer, in large batches); a small pool of connections
//! reads, concurrently with the writer thanks to WAL. Every call runs on tokio's blocking pool.
//! User ids have an index of their own in two levels ([`user_index`]).

mod alerts;
mod credentials;
mod partitions;
mod user_index;

use user_index::Key as UserKey;
pub use user_index::Sweep as UserIndexSweep;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::partitioning::{Layout, Span, TimeRange};
use super::{
    floor_to, AppendOutcome, EventFilter, EventQuery, Order, Position, Purged, RollupQuery,
    RollupRow, Store, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;
use partitions::Partition;

/// A schema migration: SQL, or code for what SQL alone cannot express.
enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction) -> Result<()>),
}

/// Schema migrations, applied in order at start; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[Migration] = &[
    // 1: events and the indexes the query API uses (moved into day partitions by 3).
    Migration::Sql(
        "CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        id_from_client INTEGER NOT NULL,
        type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        service TEXT,
        user_id TEXT,
        message TEXT,
        metadata TEXT
    );
    CREATE UNIQUE INDEX events_id ON events (id);
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_type_ts ON events (type, ts);
    CREATE INDEX events_service_ts ON events (service, ts);
    -- (user_id, ts) lives in user_index.rs's two tables, not as an index of this table.
    CREATE TABLE user_index (
        user_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, ts, seq)
    ) WITHOUT ROWID;
    CREATE TABLE user_index_recent (
        user_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, ts, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_client_ids ON events (received_at) WHERE id_from_client = 1;
    CREATE TABLE progress (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO progress VALUES ('indexed_seq', 0);",
    ),
    // 2: counts per minute (and per hour) x type x service, maintained in the transaction
    // that stores the events (metrics never scan events), and the number of events stored.
    // Backfilled for a store created by an earlier version. `has_service` tells "no service"
    // from "".
    Migration::Sql(
        "CREATE TABLE rollups (
        minute INTEGER NOT NULL,
        type TEXT NOT NULL,
        has_service INTEGER NOT NULL,
        service TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (minute, type, has_service, service)
    ) WITHOUT ROWID;
    CREATE TABLE rollups_hourly (
        hour INTEGER NOT NULL,
        type TEXT NOT NULL,
        has_service INTEGER NOT NULL,
        service TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (hour, type, has_service, service)
    ) WITHOUT ROWID;
    INSERT INTO rollups
        SELECT ts - ((ts % 60000) + 60000) % 60000, type, service IS NOT NULL,
               ifnull(service, ''), count(*)
        FROM events GROUP BY 1, 2, 3, 4;
    INSERT INTO rollups_hourly
        SELECT minute - ((minute % 3600000) + 3600000) % 3600000, type, has_service, service,
               sum(count)
        FROM rollups GROUP BY 1, 2, 3, 4;
    INSERT INTO progress VALUES ('event_count', (SELECT count(*) FROM events));",
    ),
    // 3: events (and the main level of the user index) split into day partitions, so that
    // retention drops whole days.
    Migration::Code(partition_existing_events),
    // 4: the deployment's secrets (the key that signs cursors), made on first use.
    Migration::Sql("CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)"),
    // 5: API keys (their hashes) and the count of changes to them.
    Migration::Sql(credentials::KEYS_TABLE),
    // 6: partitions may span a day, a month or a year (see store::partitioning): listed by
    // first day and span. The tables of the days listed so far keep their names.
    Migration::Sql(
        "CREATE TABLE partitions_by_span (
        first_day INTEGER PRIMARY KEY,
        span TEXT NOT NULL CHECK (span IN ('day', 'month', 'year')),
        events INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO partitions_by_span SELECT day, 'day', events FROM partitions;
    DROP TABLE partitions;
    ALTER TABLE partitions_by_span RENAME TO partitions;",
    ),
    // 7: alerting's records and history.
    Migration::Sql(alerts::ALERTS_TABLES),
];

/// Migration 3: moves the events of each day, and their user-index entries, into the day's
/// partition (listed as migration 4 found them: by day alone).
fn partition_existing_events(tx: &Transaction) -> Result<()> {
    tx.execute_batch(
        "CREATE TABLE partitions (day INTEGER PRIMARY KEY, events INTEGER NOT NULL) WITHOUT ROWID",
    )?;
    let days: Vec<i64> = tx
        .prepare(&format!(
            "SELECT DISTINCT (ts - ((ts % {DAY_MS}) + {DAY_MS}) % {DAY_MS}) / {DAY_MS} FROM events"
        ))?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for day in days {
        let partition = Partition {
            range: TimeRange::containing(day * DAY_MS, Span::Day).context("a day")?,
        };
        partition.create_tables(tx)?;
        let range = params![partition.start_ms(), partition.end_ms()];
        let moved = tx.execute(
            &format!(
                "INSERT INTO {} SELECT {COLUMNS} FROM events WHERE ts >= ? AND ts < ?",
                partition.events_table()
            ),
            range,
        )?;
        tx.execute(
            &format!(
                "INSERT INTO {} SELECT user_id, ts, seq FROM user_index WHERE ts >= ? AND ts < ?",
                partition.users_table()
            ),
            range,
        )?;
        tx.execute(
            "INSERT INTO partitions (day, events) VALUES (?, ?)",
            params![day, moved as i64],
        )?;
    }
    tx.execute_batch("DROP TABLE events; DROP TABLE user_index;")?;
    Ok(())
}

const COLUMNS: &str =
    "seq, id, id_from_client, type, ts, received_at, service, user_id, message, metadata";

/// Most queries running at once. Each reader connection has its own page cache, so this
/// bounds memory; more concurrent queries wait their turn. On 2 cores, 4 measured better
/// than 8: query p99 6.4 ms instead of 8.8 ms at 5,000,000 events, and 30 MB less memory.
const MAX_READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    writes: std::sync::mpsc::Sender<WriterTask>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<tokio::sync::Semaphore>,
}

/// Work for the writer thread: appends and retention steps, one at a time, in order.
type WriterTask = Box<dyn FnOnce(&mut Writer) + Send>;

/// What only the writer thread touches.
struct Writer {
    connection: Connection,
    sweeper: user_index::Sweeper,
    /// The partitions that have tables: what events are routed by.
    layout: Layout,
}

/// Statements kept prepared per connection: a few per partition.
const STATEMENT_CACHE: usize = 512;

/// Rows deleted per transaction when retention trims a partition by rows: about 25 ms of
/// the writer's time, so indexing is never held up long.
const TRIM_ROWS: usize = 2_000;

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`. With `fsync`, each
    /// indexed batch is flushed to disk before the log behind it may be deleted.
    pub fn open(path: &Path, fsync: bool) -> Result<SqliteStore> {
        Self::open_with(path, fsync, UserIndexSweep::DEFAULT)
    }

    /// [`open`](Self::open) with a chosen sweep of the user index, so tests can keep
    /// entries in both of its levels.
    #[doc(hidden)]
    pub fn open_with(path: &Path, fsync: bool, sweep: UserIndexSweep) -> Result<SqliteStore> {
        let mut connection = Connection::open(path)
            .with_context(|| format!("opening the store at {}", path.display()))?;
        // Larger pages: fewer, fuller B-tree pages per index insert (measured +22% indexing
        // throughput over 4 KiB). Only takes effect when the database is created.
        connection.pragma_update(None, "page_size", 16 * 1024)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        // KiB: 64 MiB. Less measurably slows indexing (24 MiB: -25%); more does not help.
        connection.pragma_update(None, "cache_size", -64 * 1024)?;
        // Checkpoint about every 100 MiB of WAL: the same hot index pages are rewritten by
        // batch after batch, and a checkpoint copies each page once however often it changed.
        connection.pragma_update(None, "wal_autocheckpoint", 6_400)?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut connection)?;
        let sweeper = user_index::Sweeper::new(&connection, sweep)?;
        let layout = partitions::layout(&connection)?;
        let mut writer = Writer {
            connection,
            sweeper,
            layout,
        };
        let (writes, tasks) = std::sync::mpsc::channel::<WriterTask>();
        std::thread::Builder::new()
            .name("eventide-store-writer".into())
            .spawn(move || {
                lower_thread_priority();
                for task in tasks {
                    task(&mut writer);
                }
            })
            .context("starting the store writer thread")?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writes,
            readers: Arc::new(Mutex::new(Vec::new())),
            reader_permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
        })
    }

    /// Runs `work` on the writer thread, after the work sent before it.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let task: WriterTask = Box::new(move |writer| {
            let _ = done.send(work(writer));
        });
        let stopped = || anyhow::anyhow!("the store writer thread has stopped");
        self.writes.send(task).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// [`write`](Self::write) for a retention step, also timing it.
    async fn write_step<T, F>(&self, work: F) -> Result<(T, Duration)>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        self.write(move |writer| {
            let started = Instant::now();
            Ok((work(writer)?, started.elapsed()))
        })
        .await
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

/// Indexing yields the CPU to acknowledging: when both want it, new events are made durable
/// first and indexed in the time left over. The index backlog is bounded
/// (`--max-index-backlog`), so this cannot starve indexing for long.
fn lower_thread_priority() {
    // SAFETY: plain system calls on the calling thread; on Linux a nice value is per thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if result != 0 {
        tracing::debug!("could not lower the store writer's priority");
    }
}

impl Writer {
    fn append(&mut self, events: &[StoredEvent], indexed_seq: u64) -> Result<AppendOutcome> {
        let mut created = Vec::new();
        let outcome = self.append_in_transaction(events, indexed_seq, &mut created);
        if outcome.is_err() {
            // Rolled back: the partitions it made are gone again.
            for range in created {
                self.layout.remove(range);
            }
        }
        outcome
    }

    /// [`append`](Self::append)'s transaction; the ranges of the partitions it creates go
    /// into the layout at once (later events of the batch are routed by them) and into
    /// `created`.
    fn append_in_transaction(
        &mut self,
        events: &[StoredEvent],
        indexed_seq: u64,
        created: &mut Vec<TimeRange>,
    ) -> Result<AppendOutcome> {
        let tx = self.connection.transaction()?;
        let mut user_entries = 0;
        let mut skipped = Vec::new();
        let mut rollups = RollupBatch::default();
        let mut per_partition: HashMap<TimeRange, i64> = HashMap::new();
        {
            let mut insert_user = tx.prepare_cached(user_index::INSERT_RECENT)?;
            // Batches mostly fall in one partition: its statement is kept while it holds.
            let mut current: Option<(TimeRange, rusqlite::CachedStatement)> = None;
            for event in events {
                let ts = event.timestamp_ms;
                let insert = match &mut current {
                    Some((range, insert)) if range.covers(ts) => insert,
                    _ => {
                        let range = match self.layout.covering(ts) {
                            Some(range) => range,
                            None => {
                                let range = self.layout.new_range(ts, event.received_at_ms);
                                Partition { range }.create(&tx)?;
                                self.layout.insert(range);
                                created.push(range);
                                range
                            }
                        };
                        let sql = format!(
                            "INSERT OR IGNORE INTO {} ({COLUMNS})
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            Partition { range }.events_table()
                        );
                        &mut current.insert((range, tx.prepare_cached(&sql)?)).1
                    }
                };
                let inserted = insert.execute(params![
                    event.seq as i64,
                    event.id,
                    event.id_from_client,
                    event.kind,
                    ts,
                    event.received_at_ms,
                    event.service,
                    event.user_id,
                    event.message,
                    event.metadata,
                ])?;
                if inserted == 0 {
                    // Nothing to index or count for an event skipped as an already stored id.
                    skipped.push(event.seq);
                    continue;
                }
                if let Some((range, _)) = &current {
                    *per_partition.entry(*range).or_default() += 1;
                }
                rollups.add(event);
                if let Some(user_id) = &event.user_id {
                    insert_user.execute(params![user_id, ts, event.seq as i64])?;
                    user_entries += 1;
                }
            }
            for (table, counts) in [
                ("rollups", &rollups.minutes),
                ("rollups_hourly", &rollups.hours()),
            ] {
                let mut upsert = tx.prepare_cached(&format!(
                    "INSERT INTO {table} VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT DO UPDATE SET count = count + excluded.count"
                ))?;
                for ((bucket, kind, service), count) in counts {
                    upsert.execute(params![
                        bucket,
                        kind,
                        service.is_some(),
                        service.unwrap_or(""),
                        *count as i64
                    ])?;
                }
            }
            for (range, count) in per_partition {
                Partition { range }.count(&tx, count)?;
            }
            tx.prepare_cached("UPDATE progress SET value = value + ? WHERE name = 'event_count'")?
                .execute([(events.len() - skipped.len()) as i64])?;
            tx.prepare_cached("UPDATE progress SET value = ? WHERE name = 'indexed_seq'")?
                .execute([indexed_seq as i64])?;
        }
        let swept = self.sweeper.sweep(&tx, user_entries, &self.layout)?;
        tx.commit()?;
        self.sweeper.committed(swept);
        Ok(AppendOutcome { skipped })
    }

    /// Drops a whole partition; returns how many events it held.
    fn drop_partition(&mut self, partition: Partition) -> Result<u64> {
        let tx = self.connection.transaction()?;
        let events = partition.drop(&tx)?;
        subtract_from_event_count(&tx, events)?;
        tx.commit()?;
        self.layout.remove(partition.range);
        Ok(events)
    }

    /// Deletes up to `max_rows` of the events of `partition` older than `cutoff_ms`, oldest
    /// first, with their user-index entries; returns how many it deleted.
    ///
    /// The last step of a trim (fewer than `max_rows` left: usually the only one, as each
    /// hourly run trims the hour the cutoff moved over) deletes each event's entry wherever it
    /// is. Earlier steps delete only the entries in the recent level and leave those in the
    /// partition's main level to [`trim_user_index`](Self::trim_user_index), which deletes
    /// them in key order: one by one, each rewrote about a page of that table, since the
    /// events of an hour belong to users all over its key space.
    fn trim_partition(
        &mut self,
        partition: Partition,
        cutoff_ms: i64,
        max_rows: usize,
    ) -> Result<u64> {
        let tx = self.connection.transaction()?;
        let events = partition.events_table();
        let users = partition.users_table();
        let doomed: Vec<(i64, i64, Option<String>)> = tx
            .prepare_cached(&format!(
                "SELECT seq, ts, user_id FROM {events} WHERE ts < ? ORDER BY ts LIMIT ?"
            ))?
            .query_map(params![cutoff_ms, max_rows as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let last_step = doomed.len() < max_rows;
        {
            let mut delete_event =
                tx.prepare_cached(&format!("DELETE FROM {events} WHERE seq = ?"))?;
            let mut delete_user = tx.prepare_cached(&format!(
                "DELETE FROM {users} WHERE user_id = ? AND ts = ? AND seq = ?"
            ))?;
            let mut delete_recent = tx.prepare_cached(
                "DELETE FROM user_index_recent WHERE user_id = ? AND ts = ? AND seq = ?",
            )?;
            for (seq, ts, user_id) in &doomed {
                delete_event.execute([seq])?;
                if let Some(user_id) = user_id {
                    let key = params![user_id, ts, seq];
                    if !last_step || delete_user.execute(key)? == 0 {
                        delete_recent.execute(key)?;
                    }
                }
            }
            partition.count(&tx, -(doomed.len() as i64))?;
        }
        subtract_from_event_count(&tx, doomed.len() as u64)?;
        tx.commit()?;
        Ok(doomed.len() as u64)
    }

    /// One step of deleting the entries of `partition`'s main user-index level whose events
    /// retention deleted, in key order after `after` (see [`user_index::trim`]).
    fn trim_user_index(
        &mut self,
        partition: Partition,
        cutoff_ms: i64,
        after: Option<UserKey>,
    ) -> Result<(u64, Option<UserKey>)> {
        let tx = self.connection.transaction()?;
        let trimmed = user_index::trim(&tx, partition, cutoff_ms, after.as_ref(), TRIM_ROWS)?;
        tx.commit()?;
        Ok(trimmed)
    }

    /// Deletes the oldest hour's worth of rollup rows whose whole bucket ends at or before
    /// `cutoff_ms`; returns how many it deleted (0: none are left).
    fn trim_rollups(&mut self, cutoff_ms: i64) -> Result<u64> {
        let tx = self.connection.transaction()?;
        let mut deleted = 0;
        for (table, column, size) in [
            ("rollups", "minute", MINUTE_MS),
            ("rollups_hourly", "hour", HOUR_MS),
        ] {
            let oldest: Option<i64> = tx
                .prepare_cached(&format!("SELECT min({column}) FROM {table}"))?
                .query_row([], |row| row.get(0))?;
            let Some(oldest) = oldest else { continue };
            // An hour of minutes (or a day of hours) at a time: tens of thousands of rows
            // with many types and services, a short transaction.
            let end = (cutoff_ms - size + 1).min(oldest.saturating_add(size * 60));
            deleted += tx
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE {column} >= ? AND {column} < ?"
                ))?
                .execute([oldest, end])? as u64;
        }
        tx.commit()?;
        Ok(deleted)
    }
}

fn subtract_from_event_count(tx: &Transaction, events: u64) -> Result<()> {
    tx.prepare_cached("UPDATE progress SET value = value - ? WHERE name = 'event_count'")?
        .execute([events as i64])?;
    Ok(())
}

type RollupCounts<'a> = HashMap<(i64, &'a str, Option<&'a str>), u64>;

/// A batch's events counted per minute x type x service, before they go into the rollups.
#[derive(Default)]
struct RollupBatch<'a> {
    minutes: RollupCounts<'a>,
}

impl<'a> RollupBatch<'a> {
    fn add(&mut self, event: &'a StoredEvent) {
        let minute = floor_to(event.timestamp_ms, MINUTE_MS);
        let key = (minute, event.kind.as_str(), event.service.as_deref());
        *self.minutes.entry(key).or_default() += 1;
    }

    fn hours(&self) -> RollupCounts<'a> {
        let mut hours = RollupCounts::new();
        for (&(minute, kind, service), count) in &self.minutes {
            *hours
                .entry((floor_to(minute, HOUR_MS), kind, service))
                .or_default() += count;
        }
        hours
    }
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
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the store's schema version {applied} is newer than this binary knows ({})",
        MIGRATIONS.len()
    );
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = connection.transaction()?;
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql).map_err(anyhow::Error::from),
            Migration::Code(apply) => apply(&tx),
        }
        .with_context(|| format!("applying migration {}", index + 1))?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "store schema migrated");
    }
    Ok(())
}

/// A count (`LIMIT`, `OFFSET`) as an SQLite integer. Counts past `i64::MAX` (a huge `page`
/// times `page_size`) mean "more than any table holds": a plain cast would wrap them
/// negative, which SQLite reads as no offset or no limit.
fn sql_count(count: usize) -> Value {
    Value::Integer(i64::try_from(count).unwrap_or(i64::MAX))
}

/// `ORDER BY` keyword for `order`.
fn direction(order: Order) -> &'static str {
    match order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    }
}

fn event_from_row(row: &Row) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.get::<_, i64>(0)? as u64,
        id: row.get(1)?,
        id_from_client: row.get(2)?,
        kind: row.get(3)?,
        timestamp_ms: row.get(4)?,
        received_at_ms: row.get(5)?,
        service: row.get(6)?,
        user_id: row.get(7)?,
        message: row.get(8)?,
        metadata: row.get(9)?,
    })
}

/// Table aliases for [`push_conditions`]: where the time and position conditions go (the
/// table whose index serves them) and where the other event columns are.
struct Aliases<'a> {
    index: &'a str,
    events: &'a str,
}

const PLAIN: Aliases = Aliases {
    index: "",
    events: "",
};

/// Appends ` AND ...` for `filter` and, when paging, for "strictly after `after` in
/// `order`", with their parameters: the one place that turns a query into SQL conditions.
fn push_conditions(
    sql: &mut String,
    params: &mut Vec<Value>,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
    aliases: &Aliases,
) {
    let Aliases { index, events } = aliases;
    let mut condition = |text: String, value: Value| {
        sql.push_str(&text);
        params.push(value);
    };
    if let Some(user_id) = &filter.user_id {
        condition(
            format!(" AND {index}user_id = ?"),
            Value::Text(user_id.clone()),
        );
    }
    if let Some(from) = filter.from_ms {
        condition(format!(" AND {index}ts >= ?"), Value::Integer(from));
    }
    if let Some(to) = filter.to_ms {
        condition(format!(" AND {index}ts < ?"), Value::Integer(to));
    }
    if let Some(max_seq) = filter.max_seq {
        condition(
            format!(" AND {index}seq <= ?"),
            Value::Integer(max_seq as i64),
        );
    }
    if let Some((after, order)) = after {
        // The plain `ts` bound lets SQLite range-scan the index; the second condition breaks
        // ties on seq.
        let compare = if order == Order::Desc { "<" } else { ">" };
        let ts = Value::Integer(after.timestamp_ms);
        condition(format!(" AND {index}ts {compare}= ?"), ts.clone());
        condition(format!(" AND ({index}ts {compare} ?"), ts);
        condition(
            format!(" OR {index}seq {compare} ?)"),
            Value::Integer(after.seq as i64),
        );
    }
    if let Some(kind) = &filter.kind {
        condition(format!(" AND {events}type = ?"), Value::Text(kind.clone()));
    }
    if let Some(service) = &filter.service {
        condition(
            format!(" AND {events}service = ?"),
            Value::Text(service.clone()),
        );
    }
}

/// `filter` narrowed to `partition`'s range: what selects its entries of the user index's
/// recent level, which all partitions share. (A partition's own tables need no such condition,
/// and it would only give the planner a worse choice of index.)
fn within(filter: &EventFilter, partition: Partition) -> EventFilter {
    let mut narrowed = filter.clone();
    narrowed.from_ms = Some(
        filter
            .from_ms
            .map_or(partition.start_ms(), |from| from.max(partition.start_ms())),
    );
    narrowed.to_ms = Some(
        filter
            .to_ms
            .map_or(partition.end_ms(), |to| to.min(partition.end_ms())),
    );
    narrowed
}

/// The partitions a `(ts, seq)`-ordered query can find events in, in its order: those
/// overlapping its time range and, when it continues a page, not before its position.
fn partitions_for(connection: &Connection, query: &EventQuery) -> Result<Vec<Partition>> {
    let (mut from, mut to) = (query.filter.from_ms, query.filter.to_ms);
    if let Some(after) = query.after {
        match query.order {
            Order::Desc => {
                to = Some(to.map_or(after.timestamp_ms + 1, |to| to.min(after.timestamp_ms + 1)))
            }
            Order::Asc => {
                from = Some(from.map_or(after.timestamp_ms, |from| from.max(after.timestamp_ms)))
            }
        }
    }
    partitions::list(connection, from, to, query.order)
}

/// The events of `query`, partition after partition: their ranges are disjoint and walked in the
/// query's order, so their runs concatenate in `(ts, seq)` order. `fetch` gives a partition's
/// matches at most `limit` after skipping `offset`;
/// `count` how many it has, so the offset skips whole partitions without reading them.
fn walk_partitions(
    connection: &Connection,
    query: &EventQuery,
    fetch: impl Fn(Partition, &EventFilter, usize, usize) -> Result<Vec<StoredEvent>>,
    count: impl Fn(Partition, &EventFilter) -> Result<u64>,
) -> Result<Vec<StoredEvent>> {
    let mut events = Vec::new();
    let mut skip = query.offset;
    for partition in partitions_for(connection, query)? {
        if events.len() >= query.limit {
            break;
        }
        let filter = &query.filter;
        if skip > 0 {
            let matches = count(partition, filter)? as usize;
            if matches <= skip {
                skip -= matches;
                continue;
            }
        }
        events.extend(fetch(partition, filter, query.limit - events.len(), skip)?);
        skip = 0;
    }
    Ok(events)
}

/// Runs `sql` (which names a partition's events table via `{events}`) on every partition
/// in `order` and gathers the rows.
fn each_partition<T>(
    connection: &Connection,
    partitions: &[Partition],
    sql: &str,
    params: &[Value],
    row: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut all = Vec::new();
    for partition in partitions {
        let sql = sql.replace("{events}", &partition.events_table());
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params), &row)?;
        for item in rows {
            all.push(item?);
        }
    }
    Ok(all)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_batch(
        &self,
        events: Arc<Vec<StoredEvent>>,
        indexed_seq: u64,
    ) -> Result<AppendOutcome> {
        self.write(move |writer| writer.append(&events, indexed_seq))
            .await
    }

    async fn indexed_seq(&self) -> Result<u64> {
        self.read(|connection| {
            let seq: i64 = connection.query_row(
                "SELECT value FROM progress WHERE name = 'indexed_seq'",
                [],
                |row| row.get(0),
            )?;
            Ok(seq as u64)
        })
        .await
    }

    async fn query(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        if query.filter.user_id.is_some() {
            return self
                .read(move |connection| {
                    walk_partitions(
                        connection,
                        &query,
                        |partition, filter, limit, offset| {
                            user_index::query(connection, partition, filter, &query, limit, offset)
                        },
                        |partition, filter| {
                            count_in(
                                connection,
                                partition,
                                filter,
                                query.after.map(|a| (a, query.order)),
                            )
                        },
                    )
                })
                .await;
        }
        self.read(move |connection| {
            let direction = direction(query.order);
            let fetch = |partition: Partition, filter: &EventFilter, limit, offset| {
                let mut sql = format!(
                    "SELECT {COLUMNS} FROM {} WHERE 1 = 1",
                    partition.events_table()
                );
                let mut params = Vec::new();
                let after = query.after.map(|after| (after, query.order));
                push_conditions(&mut sql, &mut params, filter, after, &PLAIN);
                sql.push_str(&format!(
                    " ORDER BY ts {direction}, seq {direction} LIMIT ? OFFSET ?"
                ));
                params.push(sql_count(limit));
                params.push(sql_count(offset));
                let mut statement = connection.prepare_cached(&sql)?;
                let rows =
                    statement.query_map(rusqlite::params_from_iter(params), event_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            };
            let count = |partition: Partition, filter: &EventFilter| {
                count_in(
                    connection,
                    partition,
                    filter,
                    query.after.map(|a| (a, query.order)),
                )
            };
            walk_partitions(connection, &query, fetch, count)
        })
        .await
    }

    async fn count(&self, filter: EventFilter) -> Result<u64> {
        self.read(move |connection| {
            let mut total = 0;
            for partition in partitions::list(connection, filter.from_ms, filter.to_ms, Order::Asc)?
            {
                total += count_in(connection, partition, &filter, None)?;
            }
            Ok(total)
        })
        .await
    }

    async fn events_after_seq(
        &self,
        filter: EventFilter,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.read(move |connection| {
            // By seq (the rowid) in each partition, then merged: seqs interleave across partitions
            // when events arrive out of time order. User ids are matched on the table, not
            // through the user index, since the walk is in seq order anyway.
            let partitions =
                partitions::list(connection, filter.from_ms, filter.to_ms, Order::Asc)?;
            let mut sql = format!("SELECT {COLUMNS} FROM {{events}} WHERE seq > ?");
            let mut params = vec![Value::Integer(after_seq as i64)];
            push_conditions(&mut sql, &mut params, &filter, None, &PLAIN);
            sql.push_str(" ORDER BY seq LIMIT ?");
            params.push(sql_count(limit));
            let mut events =
                each_partition(connection, &partitions, &sql, &params, event_from_row)?;
            events.sort_unstable_by_key(|event| event.seq);
            events.truncate(limit);
            Ok(events)
        })
        .await
    }

    async fn get(&self, id: String) -> Result<Option<StoredEvent>> {
        self.read(move |connection| {
            for partition in partitions::list(connection, None, None, Order::Desc)? {
                let sql = format!(
                    "SELECT {COLUMNS} FROM {} WHERE id = ?",
                    partition.events_table()
                );
                let found = connection
                    .prepare_cached(&sql)?
                    .query_row([&id], event_from_row)
                    .optional()?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            Ok(None)
        })
        .await
    }

    async fn event_count(&self) -> Result<u64> {
        self.read(|connection| {
            let count: i64 = connection.query_row(
                "SELECT value FROM progress WHERE name = 'event_count'",
                [],
                |row| row.get(0),
            )?;
            Ok(count as u64)
        })
        .await
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        self.read(|connection| {
            // The first partition from each end with an event (trimming can empty one);
            // each min/max is one step down the ts index.
            let mut ends = [None, None];
            for (end, order, aggregate) in [(0, Order::Asc, "min"), (1, Order::Desc, "max")] {
                for partition in partitions::list(connection, None, None, order)? {
                    let sql = format!("SELECT {aggregate}(ts) FROM {}", partition.events_table());
                    let found: Option<i64> = connection
                        .prepare_cached(&sql)?
                        .query_row([], |row| row.get(0))?;
                    if found.is_some() {
                        ends[end] = found;
                        break;
                    }
                }
            }
            Ok(ends[0].zip(ends[1]))
        })
        .await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>> {
        self.read(move |connection| {
            let bucket = query.bucket_ms;
            // Whole hours are read from the hourly rollups: 60 times fewer rows.
            let hour_aligned = |ms: i64| ms % HOUR_MS == 0 || ms == i64::MAX;
            let (table, column) = if bucket % HOUR_MS == 0
                && hour_aligned(query.from_ms)
                && hour_aligned(query.to_ms)
            {
                ("rollups_hourly", "hour")
            } else {
                ("rollups", "minute")
            };
            let mut sql = format!(
                "SELECT {column} - (({column} % {bucket}) + {bucket}) % {bucket} AS bucket, type,
                        has_service, service, sum(count)
                 FROM {table} WHERE {column} >= ? AND {column} < ?"
            );
            let mut params = vec![Value::Integer(query.from_ms), Value::Integer(query.to_ms)];
            if let Some(kind) = query.kind {
                sql.push_str(" AND type = ?");
                params.push(Value::Text(kind));
            }
            if let Some(service) = query.service {
                sql.push_str(" AND has_service = 1 AND service = ?");
                params.push(Value::Text(service));
            }
            sql.push_str(" GROUP BY 1, 2, 3, 4");
            let mut statement = connection.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
                Ok(RollupRow {
                    bucket_ms: row.get(0)?,
                    kind: row.get(1)?,
                    service: if row.get(2)? { Some(row.get(3)?) } else { None },
                    count: row.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn counts_per_second(&self, from_ms: i64) -> Result<Vec<RollupRow>> {
        self.read(move |connection| {
            // Seconds never straddle partitions (whole days): each partition's groups are whole.
            let partitions = partitions::list(connection, Some(from_ms), None, Order::Asc)?;
            each_partition(
                connection,
                &partitions,
                "SELECT ts - ((ts % 1000) + 1000) % 1000, type, service, count(*)
                 FROM {events} WHERE ts >= ? GROUP BY 1, 2, 3",
                &[Value::Integer(from_ms)],
                |row| {
                    Ok(RollupRow {
                        bucket_ms: row.get(0)?,
                        kind: row.get(1)?,
                        service: row.get(2)?,
                        count: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
        })
        .await
    }

    async fn recent_client_ids(&self, since_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        self.read(move |connection| {
            let partitions = partitions::list(connection, None, None, Order::Desc)?;
            let mut ids = each_partition(
                connection,
                &partitions,
                "SELECT id, received_at FROM {events}
                 WHERE id_from_client = 1 AND received_at >= ?
                 ORDER BY received_at DESC LIMIT ?",
                &[Value::Integer(since_ms), sql_count(limit)],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
            )?;
            ids.sort_unstable_by_key(|(_, received_at)| std::cmp::Reverse(*received_at));
            ids.truncate(limit);
            Ok(ids)
        })
        .await
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        let name = name.to_owned();
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

    async fn record_key_uses(&self, uses: Vec<(String, i64)>) -> Result<()> {
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
        self.read(|connection| {
            let partitions = partitions::list(connection, None, None, Order::Asc)?;
            Ok(partitions.into_iter().map(|p| p.range).collect())
        })
        .await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<Purged> {
        let mut purged = Purged::default();
        let doomed = self
            .read(move |connection| partitions::list(connection, None, Some(cutoff_ms), Order::Asc))
            .await?;
        // Each step is a task of its own on the writer, so index batches go in between.
        for partition in doomed {
            if partition.end_ms() <= cutoff_ms {
                let (deleted, took) = self
                    .write_step(move |writer| writer.drop_partition(partition))
                    .await?;
                purged.events += deleted;
                purged.partitions += 1;
                purged.longest_step = purged.longest_step.max(took);
                continue;
            }
            // The events before the cutoff, oldest first...
            let mut trimmed = 0;
            loop {
                let (deleted, took) = self
                    .write_step(move |writer| {
                        writer.trim_partition(partition, cutoff_ms, TRIM_ROWS)
                    })
                    .await?;
                trimmed += deleted;
                purged.longest_step = purged.longest_step.max(took);
                if deleted < TRIM_ROWS as u64 {
                    break;
                }
            }
            purged.events += trimmed;
            // ...then, after a trim of several steps, the entries their events left in the
            // main level of the user index, in key order. (Those of a pass cut short stay
            // until a later trim of several steps or the partition's drop: harmless, and few
            // unless that pass had a lot to trim.)
            if trimmed < TRIM_ROWS as u64 {
                continue;
            }
            let mut after = None;
            loop {
                let from = after.take();
                let ((deleted, last), took) = self
                    .write_step(move |writer| writer.trim_user_index(partition, cutoff_ms, from))
                    .await?;
                purged.longest_step = purged.longest_step.max(took);
                if deleted < TRIM_ROWS as u64 {
                    break;
                }
                after = last;
            }
        }
        loop {
            let (deleted, took) = self
                .write_step(move |writer| writer.trim_rollups(cutoff_ms))
                .await?;
            purged.longest_step = purged.longest_step.max(took);
            if deleted == 0 {
                break;
            }
        }
        Ok(purged)
    }
}

/// How many events of `partition` match `filter` (already narrowed to it) and, when given,
/// come after a position.
fn count_in(
    connection: &Connection,
    partition: Partition,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
) -> Result<u64> {
    if filter.user_id.is_some() {
        return user_index::count(connection, partition, filter, after);
    }
    let mut sql = format!(
        "SELECT count(*) FROM {} WHERE 1 = 1",
        partition.events_table()
    );
    let mut params = Vec::new();
    push_conditions(&mut sql, &mut params, filter, after, &PLAIN);
    let count: i64 = connection
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(params), |row| row.get(0))?;
    Ok(count as u64)
}
