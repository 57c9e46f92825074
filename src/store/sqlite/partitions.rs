//! Time partitions: the events of each partition's time range (an aligned UTC day, month or
//! year by event timestamp, chosen by [`crate::store::partitioning`]) live in tables of their
//! own, so retention drops a whole range with `DROP TABLE` instead of deleting its rows one
//! by one (measured: 0.56 s against 11.5 s for 1,000,000 events).
//!
//! A partition has `events_<suffix>` (the events, with the indexes the query API uses),
//! `user_index_<suffix>` (the main level of the user index for its range) and
//! `service_index_<suffix>` (its `(service, ts)` index), the last two in the user index's own
//! file ([`user_store`](super::user_store)), the suffix naming the range:
//! `d20414` (days since the epoch; `dm3` before it), `m202403`, `y2019`.
//! The `partitions` table lists them by first day and span with how many events each holds.
//! Since the ranges are disjoint, walking them in order walks the events in `(ts, seq)`
//! order. Ids are unique within a partition; the same client id sent again with the same
//! timestamp (a retry) always lands in the same partition, so replays and retries are
//! skipped.

use std::collections::HashSet;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, Transaction};

use crate::store::partitioning::{Layout, Span, TimeRange};
use crate::store::{Order, DAY_MS};

/// One partition's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Partition {
    pub range: TimeRange,
}

impl Partition {
    pub fn start_ms(self) -> i64 {
        self.range.start_ms
    }

    pub fn end_ms(self) -> i64 {
        self.range.end_ms
    }

    /// Its key in the `partitions` table: days since 1970-01-01 (negative before) of its
    /// first day.
    fn first_day(self) -> i64 {
        self.range.start_ms.div_euclid(DAY_MS)
    }

    fn suffix(self) -> String {
        let day = self.first_day();
        let date = self.range.start_date();
        match (self.range.span, date) {
            (Span::Month, Some(date)) => format!("m{:04}{:02}", date.year(), date.month() as u8),
            (Span::Year, Some(date)) => format!("y{:04}", date.year()),
            // Days are named by number, as they have been since partitions were days; a
            // month or year always has a date (events are of the years 0000 to 9999).
            _ if day < 0 => format!("dm{}", -day),
            _ => format!("d{day}"),
        }
    }

    pub fn events_table(self) -> String {
        format!("events_{}", self.suffix())
    }

    pub fn users_table(self) -> String {
        format!("user_index_{}", self.suffix())
    }

    /// Its table of the `(service, ts)` index, in the user index's file.
    pub fn services_table(self) -> String {
        format!("service_index_{}", self.suffix())
    }

    /// Whether any of `[from_ms, to_ms)` falls in this partition.
    pub fn overlaps(self, from_ms: Option<i64>, to_ms: Option<i64>) -> bool {
        self.range.overlaps(from_ms, to_ms)
    }

    /// Creates the partition's events table and lists it, within `tx`.
    pub fn create(self, tx: &Transaction) -> Result<()> {
        create_events_table(tx, &self.events_table())?;
        tx.prepare_cached(
            "INSERT INTO partitions (first_day, span, events, packed_ids) VALUES (?, ?, 0, 1)",
        )?
        .execute(params![self.first_day(), self.range.span.name()])?;
        Ok(())
    }

    /// Adds `events` (negative: takes away) to the partition's count, within `tx`.
    pub fn count(self, tx: &Transaction, events: i64) -> Result<()> {
        tx.prepare_cached("UPDATE partitions SET events = events + ? WHERE first_day = ?")?
            .execute([events, self.first_day()])?;
        Ok(())
    }

    /// Drops the partition's events table, within `tx` (its user-index entries are
    /// [`user_store`](super::user_store)'s); returns how many events it held.
    pub fn drop(self, tx: &Transaction) -> Result<u64> {
        let events: i64 = tx.query_row(
            "SELECT events FROM partitions WHERE first_day = ?",
            [self.first_day()],
            |row| row.get(0),
        )?;
        tx.execute_batch(&format!("DROP TABLE {}", self.events_table()))?;
        tx.execute(
            "DELETE FROM partitions WHERE first_day = ?",
            [self.first_day()],
        )?;
        Ok(events as u64)
    }
}

/// Creates, within `tx`, an events table called `events`, with the indexes the query API
/// uses: the one definition of the events table, for every partition and for the first
/// schema (whose tables were not yet partitions). The partition's main level of the user
/// index and its `(service, ts)` index are in the user index's own file
/// ([`user_store`](super::user_store)).
pub(super) fn create_events_table(tx: &Transaction, events: &str) -> Result<()> {
    // The rowid is the seq, so every index ends in seq and `ORDER BY ts, seq` is read
    // straight off an index.
    tx.execute_batch(&format!(
        "CREATE TABLE {events} (
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
        CREATE UNIQUE INDEX {events}_id ON {events} (id);
        CREATE INDEX {events}_ts ON {events} (ts);
        CREATE INDEX {events}_type_ts ON {events} (type, ts);
        -- Only events carrying a client id, in (nearly) arrival order: what the dedup
        -- set is rebuilt from at start.
        CREATE INDEX {events}_client_ids ON {events} (received_at) WHERE id_from_client = 1;"
    ))?;
    Ok(())
}

/// The partitions that have tables, in `order`, limited to those overlapping
/// `[from_ms, to_ms)`.
pub(super) fn list(
    connection: &Connection,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    order: Order,
) -> Result<Vec<Partition>> {
    let sql = match order {
        Order::Asc => "SELECT first_day, span FROM partitions ORDER BY first_day",
        Order::Desc => "SELECT first_day, span FROM partitions ORDER BY first_day DESC",
    };
    let mut partitions = listed(connection, sql)?;
    partitions.retain(|partition| partition.overlaps(from_ms, to_ms));
    Ok(partitions)
}

/// The partitions created before ids were packed, which hold every id as text (see
/// [`event_ids`](super::event_ids)).
pub(super) fn with_text_ids(connection: &Connection) -> Result<HashSet<TimeRange>> {
    let sql = "SELECT first_day, span FROM partitions WHERE packed_ids = 0";
    Ok(listed(connection, sql)?
        .into_iter()
        .map(|p| p.range)
        .collect())
}

/// The partitions `sql` selects (as `first_day, span`), in its order.
fn listed(connection: &Connection, sql: &str) -> Result<Vec<Partition>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut partitions = Vec::new();
    for row in rows {
        let (first_day, span): (i64, String) = row?;
        let partition = Span::from_name(&span)
            .and_then(|span| TimeRange::containing(first_day * DAY_MS, span))
            .map(|range| Partition { range })
            .with_context(|| format!("the partition list has {span:?} at day {first_day}"))?;
        partitions.push(partition);
    }
    Ok(partitions)
}

/// Every partition, as the writer routes events by.
pub(super) fn layout(connection: &Connection) -> Result<Layout> {
    let partitions = list(connection, None, None, Order::Asc)?;
    Ok(Layout::new(partitions.into_iter().map(|p| p.range)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(ms: i64, span: Span) -> Partition {
        Partition {
            range: TimeRange::containing(ms, span).unwrap(),
        }
    }

    #[test]
    fn tables_are_named_after_their_range() {
        assert_eq!(partition(0, Span::Day).first_day(), 0);
        assert_eq!(partition(DAY_MS - 1, Span::Day).first_day(), 0);
        assert_eq!(partition(DAY_MS, Span::Day).first_day(), 1);
        assert_eq!(partition(-1, Span::Day).first_day(), -1);
        assert_eq!(partition(-1, Span::Day).events_table(), "events_dm1");
        assert_eq!(
            partition(20_414 * DAY_MS, Span::Day).events_table(),
            "events_d20414"
        );
        // 2025-11-30 is day 20,422.
        let november = partition(20_422 * DAY_MS, Span::Month);
        assert_eq!(november.events_table(), "events_m202511");
        assert_eq!(november.users_table(), "user_index_m202511");
        assert_eq!(november.services_table(), "service_index_m202511");
        assert_eq!(november.first_day(), 20_393);
        assert_eq!(partition(-1, Span::Year).events_table(), "events_y1969");
        let day = partition(2 * DAY_MS, Span::Day);
        assert!(day.overlaps(None, None));
        assert!(day.overlaps(Some(3 * DAY_MS - 1), None));
        assert!(!day.overlaps(Some(3 * DAY_MS), None));
        assert!(!day.overlaps(None, Some(2 * DAY_MS)));
        assert!(day.overlaps(None, Some(2 * DAY_MS + 1)));
    }
}
