//! Query building shared by the reads: the conditions a filter and a page position turn
//! into, the walk over the time partitions a query touches (in its order, skipping whole
//! partitions for an offset), and events decoded from rows.

use anyhow::Result;
use rusqlite::types::Value;
use rusqlite::{Connection, Row};

use super::event_ids;
use super::partitions::{self, Partition};
use crate::event::StoredEvent;
use crate::store::{EventFilter, EventQuery, Order, Position};

/// An events table's columns, in the order [`event_from_row`] reads them.
pub(super) const COLUMNS: &str =
    "seq, id, id_from_client, type, ts, received_at, service, user_id, message, metadata";

/// A count (`LIMIT`, `OFFSET`) as an SQLite integer. Counts past `i64::MAX` (a huge `page`
/// times `page_size`) mean "more than any table holds": a plain cast would wrap them
/// negative, which SQLite reads as no offset or no limit.
pub(super) fn sql_count(count: usize) -> Value {
    Value::Integer(i64::try_from(count).unwrap_or(i64::MAX))
}

/// `ORDER BY` keyword for `order`.
pub(super) fn direction(order: Order) -> &'static str {
    match order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    }
}

pub(super) fn event_from_row(row: &Row) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.get::<_, i64>(0)? as u64,
        id: event_ids::read(row, 1)?,
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
/// table whose index serves them), with the condition on `key`, the filter's column that
/// table holds (`user_id` or `service`: an index table's), and where the other event
/// columns are.
pub(super) struct Aliases<'a> {
    pub index: &'a str,
    pub events: &'a str,
    pub key: &'a str,
}

pub(super) const PLAIN: Aliases = Aliases {
    index: "",
    events: "",
    key: "",
};

/// The events' columns, in the order [`event_from_row`] reads them, in a query that joins an
/// index table (`i`) to a partition's events (`e`).
const JOINED_COLUMNS: &str = "e.seq, e.id, e.id_from_client, e.type, e.ts, e.received_at, \
                              e.service, e.user_id, e.message, e.metadata";

/// What a partition's events are found through: the indexes of its events table, or an
/// index table of the user index's file (its name, and the events' column it is keyed by)
/// joined to the events by seq, whose primary key serves the conditions on time, position
/// and that column.
pub(super) enum Through<'a> {
    Events,
    Index { table: &'a str, key: &'a str },
}

impl Through<'_> {
    /// `SELECT {what}` from the partition's events (through this), with the filter's
    /// conditions.
    fn select(
        &self,
        partition: Partition,
        what: &str,
        filter: &EventFilter,
        after: Option<(Position, Order)>,
    ) -> (String, Vec<Value>) {
        let events = partition.events_table();
        let (mut sql, aliases) = match self {
            Through::Events => (format!("SELECT {what} FROM {events} WHERE 1 = 1"), PLAIN),
            Through::Index { table, key } => (
                format!(
                    "SELECT {what} FROM {table} AS i CROSS JOIN {events} AS e ON e.seq = i.seq
                     WHERE 1 = 1"
                ),
                Aliases {
                    index: "i.",
                    events: "e.",
                    key,
                },
            ),
        };
        let mut params = Vec::new();
        push_conditions(&mut sql, &mut params, filter, after, &aliases);
        (sql, params)
    }

    /// The events of `partition` matching `filter` (and coming after the query's position,
    /// when it continues a page), in the query's order, at most `limit` after skipping
    /// `offset`.
    pub(super) fn fetch(
        &self,
        connection: &Connection,
        partition: Partition,
        filter: &EventFilter,
        query: &EventQuery,
        (limit, offset): (usize, usize),
    ) -> Result<Vec<StoredEvent>> {
        let after = query.after.map(|after| (after, query.order));
        // The table of the time and position columns, whose index gives the order.
        let (columns, index) = match self {
            Through::Events => (COLUMNS, ""),
            Through::Index { .. } => (JOINED_COLUMNS, "i."),
        };
        let (mut sql, mut params) = self.select(partition, columns, filter, after);
        let direction = direction(query.order);
        sql.push_str(&format!(
            " ORDER BY {index}ts {direction}, {index}seq {direction} LIMIT ? OFFSET ?"
        ));
        params.push(sql_count(limit));
        params.push(sql_count(offset));
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params), event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many events of `partition` match `filter` and, when given, come after a
    /// position.
    pub(super) fn count(
        &self,
        connection: &Connection,
        partition: Partition,
        filter: &EventFilter,
        after: Option<(Position, Order)>,
    ) -> Result<u64> {
        let (sql, params) = self.select(partition, "count(*)", filter, after);
        let count: i64 = connection
            .prepare_cached(&sql)?
            .query_row(rusqlite::params_from_iter(params), |row| row.get(0))?;
        Ok(count as u64)
    }
}

/// Appends ` AND ...` for `filter` and, when paging, for "strictly after `after` in
/// `order`", with their parameters: the one place that turns a query into SQL conditions.
pub(super) fn push_conditions(
    sql: &mut String,
    params: &mut Vec<Value>,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
    aliases: &Aliases,
) {
    let Aliases { index, events, key } = aliases;
    let on = |column: &str| if column == *key { index } else { events };
    let mut condition = |text: String, value: Value| {
        sql.push_str(&text);
        params.push(value);
    };
    if let Some(user_id) = &filter.user_id {
        condition(
            format!(" AND {}user_id = ?", on("user_id")),
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
            format!(" AND {}service = ?", on("service")),
            Value::Text(service.clone()),
        );
    }
}

/// `filter` narrowed to `partition`'s range: what selects its entries of the user index's
/// recent level, which all partitions share. (A partition's own tables need no such condition,
/// and it would only give the planner a worse choice of index.)
pub(super) fn within(filter: &EventFilter, partition: Partition) -> EventFilter {
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
pub(super) fn walk_partitions(
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
pub(super) fn each_partition<T>(
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
