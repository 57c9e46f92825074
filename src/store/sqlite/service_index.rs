//! The `(service, ts)` index: a table per time partition in the user index's file, written
//! by that file's thread ([`user_store`](super::user_store)).
//!
//! As an index of the events table it was the costliest to keep (1.6-2.4 µs of the events'
//! writer's 6.5-7.3 µs per event, on the store alone), on the thread that sets the sustained
//! rate, while the user index's thread sat idle about half the time. Queries by service read
//! it as the user index is read: joined to the partition's events by seq. Services are few,
//! so a batch's entries go to the ends of a few runs of the table: one level is enough,
//! unlike the user index's random-order keys. As there, an entry whose event is not stored
//! is harmless (queries join by seq, and seqs are never reused).

use anyhow::Result;
use rusqlite::{params, params_from_iter, CachedStatement, Connection, Transaction};

use super::partitions::Partition;
use super::query::{direction, event_from_row, select_through, sql_count, JOINED_COLUMNS};
use crate::event::StoredEvent;
use crate::store::{EventFilter, EventQuery, Order, Position};

/// The filter's column the index holds.
const KEY: &str = "service";

/// An entry: service, timestamp, seq.
pub(super) type Key<'a> = (&'a str, i64, i64);

/// Creates a partition's table of the index, called `table`, unless it exists.
pub(super) fn create_table(connection: &Connection, table: &str) -> Result<()> {
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            service TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
            PRIMARY KEY (service, ts, seq)
        ) WITHOUT ROWID"
    ))?;
    Ok(())
}

/// The names of the index's tables in `connection`'s main database.
pub(super) fn tables(connection: &Connection) -> Result<Vec<String>> {
    let names = connection
        .prepare(
            "SELECT name FROM main.sqlite_schema
             WHERE type = 'table' AND name LIKE 'service\\_index\\_%' ESCAPE '\\'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// The statement that adds entries to `table`, within `tx`, for [`insert`].
pub(super) fn insert_statement<'t>(
    tx: &'t Transaction,
    table: &str,
) -> Result<CachedStatement<'t>> {
    Ok(tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {table} (service, ts, seq) VALUES (?, ?, ?)"
    ))?)
}

/// Adds the entry of `event`, if it has a service, with `insert` (an [`insert_statement`]);
/// `true` if it was not there already (it is when a batch is stored again).
pub(super) fn insert(insert: &mut CachedStatement, event: &StoredEvent) -> Result<bool> {
    let Some(service) = &event.service else {
        return Ok(false);
    };
    let inserted = insert.execute(params![service, event.timestamp_ms, event.seq as i64])?;
    Ok(inserted > 0)
}

/// Deletes the entry `key` from `table`, within `tx`.
pub(super) fn delete(tx: &Transaction, table: &str, key: Key) -> Result<()> {
    let (service, ts, seq) = key;
    tx.prepare_cached(&format!(
        "DELETE FROM {table} WHERE service = ? AND ts = ? AND seq = ?"
    ))?
    .execute(params![service, ts, seq])?;
    Ok(())
}

/// Fills `partition`'s table (in `tx`'s main database) from its events (in the database
/// attached as `events_schema`), in key order.
pub(super) fn build(tx: &Transaction, partition: Partition, events_schema: &str) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO main.{} (service, ts, seq)
             SELECT service, ts, seq FROM {events_schema}.{} WHERE service IS NOT NULL
             ORDER BY service, ts, seq",
            partition.services_table(),
            partition.events_table()
        ),
        [],
    )?;
    Ok(())
}

/// Events of one service in one partition, in the query's order: read off the index's
/// primary key, joined to the events by seq.
pub(super) fn query(
    connection: &Connection,
    partition: Partition,
    filter: &EventFilter,
    query: &EventQuery,
    limit: usize,
    offset: usize,
) -> Result<Vec<StoredEvent>> {
    let after = query.after.map(|after| (after, query.order));
    let table = partition.services_table();
    let (mut sql, mut params) =
        select_through(&table, partition, JOINED_COLUMNS, KEY, filter, after);
    let direction = direction(query.order);
    sql.push_str(&format!(
        " ORDER BY i.ts {direction}, i.seq {direction} LIMIT ? OFFSET ?"
    ));
    params.push(sql_count(limit));
    params.push(sql_count(offset));
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(params), event_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// How many events of one service in one partition match `filter` and, when given, come
/// after a position.
pub(super) fn count(
    connection: &Connection,
    partition: Partition,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
) -> Result<u64> {
    let table = partition.services_table();
    let (sql, params) = select_through(&table, partition, "count(*)", KEY, filter, after);
    let count: i64 = connection
        .prepare_cached(&sql)?
        .query_row(params_from_iter(params), |row| row.get(0))?;
    Ok(count as u64)
}
