//! The embedded store: one SQLite database (`events.db`, WAL mode) under the data directory.
//!
//! One connection writes (only the indexer, in large batches); a small pool of connections
//! reads, concurrently with the writer thanks to WAL. Every call runs on tokio's blocking pool.
//! User ids have an index of their own in two levels ([`user_index`]).

mod user_index;

pub use user_index::Sweep as UserIndexSweep;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    floor_to, AppendOutcome, EventFilter, EventQuery, Order, Position, RollupQuery, RollupRow,
    Store, HOUR_MS, MINUTE_MS,
};
use crate::event::StoredEvent;

/// Schema migrations, applied in order at start; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: events and the indexes the query API uses. The rowid is the seq, so every index
    // ends in seq and `ORDER BY ts, seq` is read straight off an index.
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
    -- Only events carrying a client id, in (nearly) arrival order: what the dedup set is
    -- rebuilt from at start. Cheap to maintain: entries arrive at its end.
    CREATE INDEX events_client_ids ON events (received_at) WHERE id_from_client = 1;
    CREATE TABLE progress (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO progress VALUES ('indexed_seq', 0);",
    // 2: counts per minute (and per hour) x type x service, maintained in the transaction
    // that stores the events (metrics never scan events), and the number of events stored.
    // Backfilled for a store created by an earlier version. `has_service` tells "no service"
    // from "".
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
];

const COLUMNS: &str =
    "seq, id, id_from_client, type, ts, received_at, service, user_id, message, metadata";

/// Most queries running at once. Each reader connection has its own page cache, so this
/// bounds memory; more concurrent queries wait their turn. On 2 cores, 4 measured better
/// than 8: query p99 6.4 ms instead of 8.8 ms at 5,000,000 events, and 30 MB less memory.
const MAX_READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    writes: std::sync::mpsc::Sender<WriteJob>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<tokio::sync::Semaphore>,
}

/// A batch for the writer thread, and where to send the outcome.
struct WriteJob {
    events: Arc<Vec<StoredEvent>>,
    indexed_seq: u64,
    done: tokio::sync::oneshot::Sender<Result<AppendOutcome>>,
}

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
        let mut writer = Connection::open(path)
            .with_context(|| format!("opening the store at {}", path.display()))?;
        // Larger pages: fewer, fuller B-tree pages per index insert (measured +22% indexing
        // throughput over 4 KiB). Only takes effect when the database is created.
        writer.pragma_update(None, "page_size", 16 * 1024)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
        // KiB: 64 MiB. Less measurably slows indexing (24 MiB: -25%); more does not help.
        writer.pragma_update(None, "cache_size", -64 * 1024)?;
        // Checkpoint about every 100 MiB of WAL: the same hot index pages are rewritten by
        // batch after batch, and a checkpoint copies each page once however often it changed.
        writer.pragma_update(None, "wal_autocheckpoint", 6_400)?;
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&mut writer)?;
        let mut sweeper = user_index::Sweeper::new(&writer, sweep)?;
        let (writes, jobs) = std::sync::mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("eventide-store-writer".into())
            .spawn(move || {
                lower_thread_priority();
                for job in jobs {
                    let result =
                        insert_batch(&mut writer, &mut sweeper, &job.events, job.indexed_seq);
                    let _ = job.done.send(result);
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

    /// Runs `work` on a pooled read connection on the blocking pool.
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
            let result = work(&connection);
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

fn insert_batch(
    connection: &mut Connection,
    sweeper: &mut user_index::Sweeper,
    events: &[StoredEvent],
    indexed_seq: u64,
) -> Result<AppendOutcome> {
    let tx = connection.transaction()?;
    let mut user_entries = 0;
    let mut skipped = Vec::new();
    let mut rollups = RollupBatch::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (seq, id, id_from_client, type, ts, received_at,
             service, user_id, message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        let mut insert_user = tx.prepare_cached(user_index::INSERT_RECENT)?;
        for event in events {
            let inserted = insert.execute(params![
                event.seq as i64,
                event.id,
                event.id_from_client,
                event.kind,
                event.timestamp_ms,
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
            rollups.add(event);
            if let Some(user_id) = &event.user_id {
                insert_user.execute(params![user_id, event.timestamp_ms, event.seq as i64])?;
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
        tx.prepare_cached("UPDATE progress SET value = value + ? WHERE name = 'event_count'")?
            .execute([(events.len() - skipped.len()) as i64])?;
        tx.prepare_cached("UPDATE progress SET value = ? WHERE name = 'indexed_seq'")?
            .execute([indexed_seq as i64])?;
    }
    let swept = sweeper.sweep(&tx, user_entries)?;
    tx.commit()?;
    sweeper.committed(swept);
    Ok(AppendOutcome { skipped })
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
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the store's schema version {applied} is newer than this binary knows ({})",
        MIGRATIONS.len()
    );
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)
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

#[async_trait]
impl Store for SqliteStore {
    async fn append_batch(
        &self,
        events: Arc<Vec<StoredEvent>>,
        indexed_seq: u64,
    ) -> Result<AppendOutcome> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            events,
            indexed_seq,
            done,
        };
        self.writes
            .send(job)
            .map_err(|_| anyhow::anyhow!("the store writer thread has stopped"))?;
        outcome
            .await
            .map_err(|_| anyhow::anyhow!("the store writer thread has stopped"))?
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
                .read(move |connection| user_index::query(connection, &query))
                .await;
        }
        self.read(move |connection| {
            let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1 = 1");
            let mut params = Vec::new();
            let after = query.after.map(|after| (after, query.order));
            push_conditions(&mut sql, &mut params, &query.filter, after, &PLAIN);
            let direction = direction(query.order);
            sql.push_str(&format!(
                " ORDER BY ts {direction}, seq {direction} LIMIT ? OFFSET ?"
            ));
            params.push(sql_count(query.limit));
            params.push(sql_count(query.offset));
            let mut statement = connection.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn count(&self, filter: EventFilter) -> Result<u64> {
        if filter.user_id.is_some() {
            return self
                .read(move |connection| user_index::count(connection, &filter))
                .await;
        }
        self.read(move |connection| {
            let mut sql = "SELECT count(*) FROM events WHERE 1 = 1".to_owned();
            let mut params = Vec::new();
            push_conditions(&mut sql, &mut params, &filter, None, &PLAIN);
            let count: i64 = connection
                .prepare_cached(&sql)?
                .query_row(rusqlite::params_from_iter(params), |row| row.get(0))?;
            Ok(count as u64)
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
            // By seq (the rowid): user ids are matched on the table, not through the user
            // index, since the walk is in seq order anyway.
            let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?");
            let mut params = vec![Value::Integer(after_seq as i64)];
            push_conditions(&mut sql, &mut params, &filter, None, &PLAIN);
            sql.push_str(" ORDER BY seq LIMIT ?");
            params.push(Value::Integer(limit as i64));
            let mut statement = connection.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get(&self, id: String) -> Result<Option<StoredEvent>> {
        self.read(move |connection| {
            let sql = format!("SELECT {COLUMNS} FROM events WHERE id = ?");
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([id], event_from_row)
                .optional()?)
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
            // Two subqueries: each min/max alone is one step down the ts index.
            let range: (Option<i64>, Option<i64>) = connection.query_row(
                "SELECT (SELECT min(ts) FROM events), (SELECT max(ts) FROM events)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            Ok(range.0.zip(range.1))
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
            let mut statement = connection.prepare(
                "SELECT ts - ((ts % 1000) + 1000) % 1000, type, service, count(*)
                 FROM events WHERE ts >= ? GROUP BY 1, 2, 3",
            )?;
            let rows = statement.query_map([from_ms], |row| {
                Ok(RollupRow {
                    bucket_ms: row.get(0)?,
                    kind: row.get(1)?,
                    service: row.get(2)?,
                    count: row.get::<_, i64>(3)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn recent_client_ids(&self, since_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        self.read(move |connection| {
            let mut statement = connection.prepare(
                "SELECT id, received_at FROM events
                 WHERE id_from_client = 1 AND received_at >= ?
                 ORDER BY received_at DESC LIMIT ?",
            )?;
            let ids = statement
                .query_map(params![since_ms, limit as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    /// A placeholder so this branch compiles: SQLite's retention is being written on main,
    /// whose version replaces this one at the merge.
    async fn purge_before(&self, _cutoff_ms: i64) -> Result<super::Purged> {
        anyhow::bail!("retention is not implemented for the SQLite store yet")
    }
}
