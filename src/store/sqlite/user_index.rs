//! The `(user_id, ts)` index, in two levels.
//!
//! User ids arrive in random order, so as a plain index of the events table every batch
//! rewrote nearly all of its leaf pages (into the WAL, and again at checkpoint) whatever the
//! batch size: it cost more than all the other indexes together, and kept the visibility lag
//! and the indexing rate at odds. Here a batch's entries go into the small
//! `user_index_recent` table, whose pages stay few, and in the same transaction a sweep moves
//! a run of it, in key order, into the main level (a `user_index_<suffix>` table per time
//! partition): each page of the big tables is then rewritten about once per sweep cycle
//! instead of once per batch. Every entry is in exactly one of the two levels; queries read
//! both and merge.
//!
//! Its tables are in a file of their own, written by a thread of their own beside the events'
//! writer ([`user_store`](super::user_store)); readers attach that file. An entry whose event
//! is not stored (a retried id the events' writer skipped) is harmless: queries join entries
//! to events by seq, and seqs are never reused.

use anyhow::Result;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Transaction};

use super::entry_tables::{EntryTables, OwnedEntry};
use super::partitions::Partition;
use super::query::{sql_count, within, Through};
use crate::event::StoredEvent;
use crate::store::partitioning::Layout;
use crate::store::{EventFilter, EventQuery, Order, Position, DAY_MS};

/// The recent level, shared by all partitions; the main level has a table per partition.
pub(super) const RECENT: &str = "user_index_recent";

/// How much of the recent table each batch moves into the main one.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// Entries moved per entry added (1.0 keeps the recent table from growing).
    pub per_added: f64,
    /// Beyond this many recent entries, each batch also moves an eighth of the excess.
    pub recent_target: usize,
}

impl Sweep {
    pub const DEFAULT: Sweep = Sweep {
        per_added: 1.0,
        recent_target: 200_000,
    };
}

/// The index's tables: the recent level and each partition's main level.
pub(super) const TABLES: EntryTables = EntryTables {
    column: "user_id",
    prefix: "user_index",
};

/// The sweep's state, kept by the store's writer thread.
pub(super) struct Sweeper {
    tuning: Sweep,
    /// The last key moved; the next run starts after it (from the start when `None`).
    cursor: Option<OwnedEntry>,
    recent_len: usize,
}

/// What one sweep did, applied to the [`Sweeper`] once its transaction commits.
pub(super) struct Swept {
    cursor: Option<OwnedEntry>,
    added: usize,
    moved: usize,
}

impl Sweeper {
    pub(super) fn new(connection: &Connection, tuning: Sweep) -> Result<Sweeper> {
        let recent_len: i64 =
            connection.query_row("SELECT count(*) FROM user_index_recent", [], |row| {
                row.get(0)
            })?;
        Ok(Sweeper {
            tuning,
            cursor: None,
            recent_len: recent_len as usize,
        })
    }

    /// Moves the next run of recent entries into the main tables of the partitions of
    /// `layout` covering them, within `tx`, after a batch added `added` entries.
    pub(super) fn sweep(&self, tx: &Transaction, added: usize, layout: &Layout) -> Result<Swept> {
        let excess = (self.recent_len + added).saturating_sub(self.tuning.recent_target) / 8;
        let quota = (added as f64 * self.tuning.per_added) as usize + excess;
        if quota == 0 {
            return Ok(Swept {
                cursor: self.cursor.clone(),
                added,
                moved: 0,
            });
        }
        let mut after = String::new();
        let mut after_params = Vec::new();
        if let Some((user_id, ts, seq)) = &self.cursor {
            after.push_str(" AND (user_id, ts, seq) > (?, ?, ?)");
            after_params.extend([
                Value::Text(user_id.clone()),
                Value::Integer(*ts),
                Value::Integer(*seq),
            ]);
        }
        // The run ends at the quota-th key after the cursor, or at the table's end.
        let mut last_params = after_params.clone();
        last_params.push(Value::Integer(quota as i64 - 1));
        let last: Option<OwnedEntry> = tx
            .prepare_cached(&format!(
                "SELECT user_id, ts, seq FROM user_index_recent WHERE 1 = 1{after}
                 ORDER BY user_id, ts, seq LIMIT 1 OFFSET ?"
            ))?
            .query_row(params_from_iter(last_params), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let mut range = after;
        let mut range_params = after_params;
        if let Some((user_id, ts, seq)) = &last {
            range.push_str(" AND (user_id, ts, seq) <= (?, ?, ?)");
            range_params.extend([
                Value::Text(user_id.clone()),
                Value::Integer(*ts),
                Value::Integer(*seq),
            ]);
        }
        // Each entry goes to the table of the partition covering it, a statement per
        // partition in the run, and SQLite moves the rows without handing each to us.
        let move_into = |partition: Partition| -> Result<usize> {
            let mut params = range_params.clone();
            params.extend([
                Value::Integer(partition.start_ms()),
                Value::Integer(partition.end_ms()),
            ]);
            let sql = format!(
                "INSERT OR IGNORE INTO {} (user_id, ts, seq)
                 SELECT user_id, ts, seq FROM user_index_recent
                 WHERE 1 = 1{range} AND ts >= ? AND ts < ?",
                partition.users_table()
            );
            Ok(tx.prepare_cached(&sql)?.execute(params_from_iter(params))?)
        };
        // A run of `quota` entries goes first into the partition of its last entry: when
        // all of them went in, that partition holds the whole run (the usual case: recent
        // entries are of today) and the run needs no pass to list its partitions (7% of
        // this thread's instructions). Otherwise (a run over several partitions, entries the
        // main level held already, a run to the table's end) its partitions are listed and
        // each is moved into, `INSERT OR IGNORE` leaving what went in already.
        let last_partition = last.as_ref().and_then(|&(_, ts, _)| layout.covering(ts));
        let whole_run_moved = match last_partition {
            Some(range) => move_into(Partition { range })? == quota,
            None => false,
        };
        if !whole_run_moved {
            let days: Vec<i64> = tx
                .prepare_cached(&format!(
                    "SELECT DISTINCT (ts - ((ts % {DAY_MS}) + {DAY_MS}) % {DAY_MS}) / {DAY_MS}
                     FROM user_index_recent WHERE 1 = 1{range}"
                ))?
                .query_map(params_from_iter(range_params.iter()), |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut partitions: Vec<Partition> = Vec::new();
            for day in days {
                // None: retention dropped the partition after these entries were added (and
                // with it their events); the run's delete below takes them away too.
                let Some(range) = layout.covering(day * DAY_MS) else {
                    continue;
                };
                // The last entry's partition has had its move above.
                if Some(range) != last_partition
                    && !partitions.iter().any(|partition| partition.range == range)
                {
                    partitions.push(Partition { range });
                }
            }
            for partition in partitions {
                move_into(partition)?;
            }
        }
        let moved = tx
            .prepare_cached(&format!("DELETE FROM user_index_recent WHERE 1 = 1{range}"))?
            .execute(params_from_iter(range_params.iter()))?;
        // Reaching the table's end, the next run starts over from its beginning.
        Ok(Swept {
            cursor: last,
            added,
            moved,
        })
    }

    pub(super) fn committed(&mut self, swept: Swept) {
        self.cursor = swept.cursor;
        self.recent_len = (self.recent_len + swept.added).saturating_sub(swept.moved);
    }

    /// Retention deleted `count` recent entries.
    pub(super) fn removed(&mut self, count: usize) {
        self.recent_len = self.recent_len.saturating_sub(count);
    }
}

/// Deletes up to `max_rows` entries of `partition`'s main level that are older than
/// `cutoff_ms` and whose event is gone, in key order after `after`, within `tx`; returns how
/// many it deleted and the last key, where the next step starts.
///
/// This is how retention trims the main level after a trim of several steps deleted a
/// partition's events before the cutoff (their entries in the recent level went with them).
/// Deleting each trimmed event's entry instead rewrote about a page of this table per event,
/// since the events of an hour belong to users all over the key space: trimming half of a
/// 1,000,000-event year took 31 s in 2,000-row steps of up to 0.7 s. In key order each page
/// is rewritten about once per pass, at the price of reading the whole table, which a short
/// trim is better off without. Meanwhile the entries without an event are harmless: queries
/// join entries to events by seq, and seqs are never reused.
pub(super) fn trim(
    tx: &Transaction,
    partition: Partition,
    cutoff_ms: i64,
    after: Option<&OwnedEntry>,
    max_rows: usize,
) -> Result<(u64, Option<OwnedEntry>)> {
    let users = partition.users_table();
    let events = partition.events_table();
    let mut sql = format!(
        "SELECT user_id, ts, seq FROM {users} AS u WHERE ts < ?
         AND NOT EXISTS (SELECT 1 FROM {events} AS e WHERE e.seq = u.seq)"
    );
    let mut params = vec![Value::Integer(cutoff_ms)];
    if let Some((user_id, ts, seq)) = after {
        sql.push_str(" AND (user_id, ts, seq) > (?, ?, ?)");
        params.extend([
            Value::Text(user_id.clone()),
            Value::Integer(*ts),
            Value::Integer(*seq),
        ]);
    }
    sql.push_str(" ORDER BY user_id, ts, seq LIMIT ?");
    params.push(sql_count(max_rows));
    let mut doomed: Vec<OwnedEntry> = tx
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (user_id, ts, seq) in &doomed {
        TABLES.delete(tx, &users, (user_id, *ts, *seq))?;
    }
    Ok((doomed.len() as u64, doomed.pop()))
}

/// Events of one user in one partition: its two tables each give their matches already in
/// order (read off their primary key, joined to the partition's events by seq), and the two
/// runs are merged; the recent table's run is kept to the partition by narrowing `filter` to
/// it.
pub(super) fn query(
    connection: &Connection,
    partition: Partition,
    filter: &EventFilter,
    query: &EventQuery,
    limit: usize,
    offset: usize,
) -> Result<Vec<StoredEvent>> {
    let wanted = limit.saturating_add(offset);
    let filter = &within(filter, partition);
    let mut runs = Vec::with_capacity(2);
    for table in [partition.users_table().as_str(), RECENT] {
        runs.push(through(table).fetch(connection, partition, filter, query, (wanted, 0))?);
    }
    let recent = runs.pop().unwrap_or_default();
    let main = runs.pop().unwrap_or_default();
    Ok(merge(main, recent, query.order)
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect())
}

/// How many events of one user in one partition match `filter` (narrowed to it) and, when
/// given, come after a position.
pub(super) fn count(
    connection: &Connection,
    partition: Partition,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
) -> Result<u64> {
    let filter = &within(filter, partition);
    let mut total = 0;
    for table in [partition.users_table().as_str(), RECENT] {
        total += through(table).count(connection, partition, filter, after)?;
    }
    Ok(total)
}

/// Reads through the index's table `table`.
fn through(table: &str) -> Through<'_> {
    Through::Index {
        table,
        key: TABLES.column,
    }
}

/// Merges two runs that are each in `order` by `(timestamp, seq)`.
fn merge(first: Vec<StoredEvent>, second: Vec<StoredEvent>, order: Order) -> Vec<StoredEvent> {
    let key = |event: &StoredEvent| (event.timestamp_ms, event.seq);
    let mut merged = Vec::with_capacity(first.len() + second.len());
    let mut first = first.into_iter().peekable();
    let mut second = second.into_iter().peekable();
    loop {
        let take_first = match (first.peek(), second.peek()) {
            (Some(a), Some(b)) => match order {
                Order::Desc => key(a) > key(b),
                Order::Asc => key(a) < key(b),
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_first {
            first.next()
        } else {
            second.next()
        };
        merged.extend(next);
    }
    merged
}
