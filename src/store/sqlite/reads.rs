//! The store's reads, each on one read connection in one snapshot (see `SqliteStore::read`):
//! queries and counts walk the time partitions ([`query`](super::query)), user and service
//! queries go through their indexes, metrics read the rollups.

use anyhow::Result;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::event_ids::{self, StoredId};
use super::partitions::{self, Partition};
use super::query::{
    each_partition, event_from_row, push_conditions, sql_count, walk_partitions, Through, COLUMNS,
    PLAIN,
};
use super::service_index;
use super::user_index;
use crate::event::StoredEvent;
use crate::store::partitioning::TimeRange;
use crate::store::{
    EventFilter, EventQuery, Order, Position, ReplayQuery, RollupQuery, RollupRow, HOUR_MS,
};

/// A counter of the `progress` table: `indexed_seq` or `event_count`.
pub(super) fn progress(connection: &Connection, name: &str) -> Result<u64> {
    let value: i64 = connection
        .prepare_cached("SELECT value FROM progress WHERE name = ?")?
        .query_row([name], |row| row.get(0))?;
    Ok(value as u64)
}

/// The events of `query`, in its `(ts, seq)` order: a user's through the user index, a
/// service's through the service index.
pub(super) fn query(connection: &Connection, query: &EventQuery) -> Result<Vec<StoredEvent>> {
    let after = query.after.map(|after| (after, query.order));
    let count =
        |partition: Partition, filter: &EventFilter| count_in(connection, partition, filter, after);
    let fetch = |partition: Partition, filter: &EventFilter, limit, offset| {
        if filter.user_id.is_some() {
            return user_index::query(connection, partition, filter, query, limit, offset);
        }
        let services = partition.services_table();
        let through = through(filter, &services);
        through.fetch(connection, partition, filter, query, (limit, offset))
    };
    walk_partitions(connection, query, fetch, count)
}

/// What a query with `filter` and no user reads a partition whose service-index table is
/// `services` through: that table when the filter names a service and no type, else the
/// events' own indexes. (With a type too, the events' `(type, ts)` index serves it without a
/// join, each of its events checked for the service.)
fn through<'a>(filter: &EventFilter, services: &'a str) -> Through<'a> {
    if filter.service.is_some() && filter.kind.is_none() {
        Through::Index {
            table: services,
            key: service_index::TABLES.column,
        }
    } else {
        Through::Events
    }
}

pub(super) fn count(connection: &Connection, filter: &EventFilter) -> Result<u64> {
    let mut total = 0;
    for partition in partitions::list(connection, filter.from_ms, filter.to_ms, Order::Asc)? {
        total += count_in(connection, partition, filter, None)?;
    }
    Ok(total)
}

pub(super) fn events_after_seq(
    connection: &Connection,
    query: &ReplayQuery,
) -> Result<Vec<StoredEvent>> {
    // By seq (the rowid) in each partition, then merged: seqs interleave across partitions
    // when events arrive out of time order. User ids are matched on the table, not
    // through the user index, since the walk is in seq order anyway.
    let filter = &query.filter;
    let partitions = partitions::list(connection, filter.from_ms, filter.to_ms, Order::Asc)?;
    let mut sql = format!("SELECT {COLUMNS} FROM {{events}} WHERE seq > ?");
    let mut params = vec![Value::Integer(query.after_seq as i64)];
    push_conditions(&mut sql, &mut params, filter, None, &PLAIN);
    sql.push_str(" ORDER BY seq LIMIT ?");
    params.push(sql_count(query.limit));
    let mut events = each_partition(connection, &partitions, &sql, &params, event_from_row)?;
    events.sort_unstable_by_key(|event| event.seq);
    events.truncate(query.limit);
    Ok(events)
}

pub(super) fn get(connection: &Connection, id: &str) -> Result<Option<StoredEvent>> {
    // Each partition is asked for the id in the one form it holds it in, as the writer
    // stored it.
    let text_ids = partitions::with_text_ids(connection)?;
    for partition in partitions::list(connection, None, None, Order::Desc)? {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE id = ?",
            partition.events_table()
        );
        let stored = StoredId::new(id, !text_ids.contains(&partition.range));
        let found = connection
            .prepare_cached(&sql)?
            .query_row([stored], event_from_row)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

pub(super) fn time_range(connection: &Connection) -> Result<Option<(i64, i64)>> {
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
}

pub(super) fn rollups(connection: &Connection, query: &RollupQuery) -> Result<Vec<RollupRow>> {
    let bucket = query.bucket_ms;
    // Whole hours are read from the hourly rollups: 60 times fewer rows.
    let hour_aligned = |ms: i64| ms % HOUR_MS == 0 || ms == i64::MAX;
    let (table, column) =
        if bucket % HOUR_MS == 0 && hour_aligned(query.from_ms) && hour_aligned(query.to_ms) {
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
    if let Some(kind) = &query.kind {
        sql.push_str(" AND type = ?");
        params.push(Value::Text(kind.clone()));
    }
    if let Some(service) = &query.service {
        sql.push_str(" AND has_service = 1 AND service = ?");
        params.push(Value::Text(service.clone()));
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
}

pub(super) fn counts_per_second(connection: &Connection, from_ms: i64) -> Result<Vec<RollupRow>> {
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
}

pub(super) fn recent_client_ids(
    connection: &Connection,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<(String, i64)>> {
    let partitions = partitions::list(connection, None, None, Order::Desc)?;
    let mut ids = each_partition(
        connection,
        &partitions,
        "SELECT id, received_at FROM {events}
         WHERE id_from_client = 1 AND received_at >= ?
         ORDER BY received_at DESC LIMIT ?",
        &[Value::Integer(since_ms), sql_count(limit)],
        |row| Ok((event_ids::read(row, 0)?, row.get::<_, i64>(1)?)),
    )?;
    ids.sort_unstable_by_key(|(_, received_at)| std::cmp::Reverse(*received_at));
    ids.truncate(limit);
    Ok(ids)
}

/// Every partition's range, oldest first.
pub(super) fn partition_ranges(connection: &Connection) -> Result<Vec<TimeRange>> {
    let partitions = partitions::list(connection, None, None, Order::Asc)?;
    Ok(partitions.into_iter().map(|p| p.range).collect())
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
    let services = partition.services_table();
    through(filter, &services).count(connection, partition, filter, after)
}
