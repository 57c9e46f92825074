//! The SQLite schema and its migrations: applied in order when the store opens, in a
//! transaction each, `PRAGMA user_version` recording how many ran. The tables of events
//! themselves are defined once, in [`partitions`](super::partitions), for the first
//! migration as for every partition made since.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, Transaction};

use super::partitions::{self, Partition};
use super::query::COLUMNS;
use super::user_index;
use crate::store::partitioning::{Span, TimeRange};
use crate::store::DAY_MS;

/// A schema migration: SQL, or code for what SQL alone cannot express.
enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction) -> Result<()>),
}

/// Schema migrations, applied in order at start; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[Migration] = &[
    // 1: events and the indexes the query API uses (moved into day partitions by 3), the
    // user index and the progress counters.
    Migration::Code(create_first_tables),
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
    Migration::Sql(super::credentials::KEYS_TABLE),
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
    Migration::Sql(super::alerts::ALERTS_TABLES),
    // 8: partitions created from now on hold ids that are canonical UUIDs as 16 bytes
    // (see event_ids); those listed so far keep them as text.
    Migration::Sql(
        "ALTER TABLE partitions ADD COLUMN packed_ids INTEGER NOT NULL DEFAULT 0 \
         CHECK (packed_ids IN (0, 1))",
    ),
    // 9: the user index moves to a file of its own, written by a thread of its own (see
    // user_store), which builds it again from the events when it finds itself new.
    Migration::Code(drop_user_index),
    // 10: the `(service, ts)` index moves to the user index's file (see service_index), which
    // builds a partition's table from its events when it finds it missing.
    Migration::Code(drop_service_index),
];

/// Migration 1: the events table and the main level of the user index, as a partition's
/// (under the names they had before partitions), the recent level of the user index and the
/// progress counters.
fn create_first_tables(tx: &Transaction) -> Result<()> {
    partitions::create_events_table(tx, "events")?;
    user_index::TABLES.create(tx, "user_index")?;
    user_index::TABLES.create(tx, "user_index_recent")?;
    tx.execute_batch(
        "CREATE TABLE progress (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO progress VALUES ('indexed_seq', 0);",
    )?;
    Ok(())
}

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
        partitions::create_events_table(tx, &partition.events_table())?;
        user_index::TABLES.create(tx, &partition.users_table())?;
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

/// Migration 9: drops the user index's tables, rebuilt in their own file.
fn drop_user_index(tx: &Transaction) -> Result<()> {
    for table in user_index::TABLES.names(tx)? {
        tx.execute_batch(&format!("DROP TABLE {table}"))?;
    }
    Ok(())
}

/// Migration 10: drops each partition's `(service, ts)` index, kept in the user index's file
/// since.
fn drop_service_index(tx: &Transaction) -> Result<()> {
    for range in partitions::layout(tx)?.ranges() {
        let events = Partition { range }.events_table();
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {events}_service_ts"))?;
    }
    Ok(())
}

/// Applies the migrations not yet applied.
pub(super) fn migrate(connection: &mut Connection) -> Result<()> {
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
