//! Time partitions: the events of each UTC day (by event timestamp) live in tables of their
//! own, so retention drops a whole day with `DROP TABLE` instead of deleting its rows one by
//! one (measured: 0.56 s against 11.5 s for 1,000,000 events).
//!
//! A day `d` (days since the epoch) has `events_d{d}` (the events, with the indexes the query
//! API uses) and `user_index_d{d}` (the main level of the user index for that day). The
//! `partitions` table lists the days that have tables and how many events each holds. Since
//! the days are disjoint time ranges, walking them in order walks the events in `(ts, seq)`
//! order. Ids are unique within a day; the same client id sent again with the same timestamp
//! (a retry) always lands in the same day, so replays and retries are skipped.

use anyhow::Result;
use rusqlite::{params, Connection, Transaction};

use crate::store::{floor_to, Order, DAY_MS};

/// One day's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Partition {
    /// Days since 1970-01-01 (negative before).
    pub day: i64,
}

impl Partition {
    pub fn of(timestamp_ms: i64) -> Partition {
        Partition {
            day: floor_to(timestamp_ms, DAY_MS) / DAY_MS,
        }
    }

    pub fn start_ms(self) -> i64 {
        self.day * DAY_MS
    }

    pub fn end_ms(self) -> i64 {
        self.start_ms() + DAY_MS
    }

    fn suffix(self) -> String {
        if self.day < 0 {
            format!("dm{}", -self.day)
        } else {
            format!("d{}", self.day)
        }
    }

    pub fn events_table(self) -> String {
        format!("events_{}", self.suffix())
    }

    pub fn users_table(self) -> String {
        format!("user_index_{}", self.suffix())
    }

    /// Whether any of `[from_ms, to_ms)` falls in this day.
    pub fn overlaps(self, from_ms: Option<i64>, to_ms: Option<i64>) -> bool {
        from_ms.is_none_or(|from| from < self.end_ms())
            && to_ms.is_none_or(|to| to > self.start_ms())
    }

    /// Creates the day's tables and lists it, within `tx`.
    pub fn create(self, tx: &Transaction) -> Result<()> {
        let events = self.events_table();
        let users = self.users_table();
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
            CREATE INDEX {events}_service_ts ON {events} (service, ts);
            -- Only events carrying a client id, in (nearly) arrival order: what the dedup
            -- set is rebuilt from at start.
            CREATE INDEX {events}_client_ids ON {events} (received_at) WHERE id_from_client = 1;
            CREATE TABLE {users} (
                user_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY (user_id, ts, seq)
            ) WITHOUT ROWID;"
        ))?;
        tx.execute(
            "INSERT INTO partitions (day, events) VALUES (?, 0)",
            [self.day],
        )?;
        Ok(())
    }

    /// Drops the day's tables and its user-index entries not yet swept, within `tx`; returns
    /// how many events it held.
    pub fn drop(self, tx: &Transaction) -> Result<u64> {
        let events: i64 = tx.query_row(
            "SELECT events FROM partitions WHERE day = ?",
            [self.day],
            |row| row.get(0),
        )?;
        tx.execute_batch(&format!(
            "DROP TABLE {}; DROP TABLE {};",
            self.events_table(),
            self.users_table()
        ))?;
        tx.execute(
            "DELETE FROM user_index_recent WHERE ts >= ? AND ts < ?",
            params![self.start_ms(), self.end_ms()],
        )?;
        tx.execute("DELETE FROM partitions WHERE day = ?", [self.day])?;
        Ok(events as u64)
    }
}

/// The days that have tables, in `order`, limited to those overlapping `[from_ms, to_ms)`.
pub(super) fn list(
    connection: &Connection,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    order: Order,
) -> Result<Vec<Partition>> {
    let sql = match order {
        Order::Asc => "SELECT day FROM partitions ORDER BY day",
        Order::Desc => "SELECT day FROM partitions ORDER BY day DESC",
    };
    let mut statement = connection.prepare_cached(sql)?;
    let days = statement.query_map([], |row| row.get(0))?;
    let mut partitions = Vec::new();
    for day in days {
        let partition = Partition { day: day? };
        if partition.overlaps(from_ms, to_ms) {
            partitions.push(partition);
        }
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_split_on_utc_midnight() {
        assert_eq!(Partition::of(0).day, 0);
        assert_eq!(Partition::of(DAY_MS - 1).day, 0);
        assert_eq!(Partition::of(DAY_MS).day, 1);
        assert_eq!(Partition::of(-1).day, -1);
        assert_eq!(Partition::of(-1).events_table(), "events_dm1");
        assert_eq!(
            Partition::of(20_414 * DAY_MS).events_table(),
            "events_d20414"
        );
        let day = Partition { day: 2 };
        assert!(day.overlaps(None, None));
        assert!(day.overlaps(Some(3 * DAY_MS - 1), None));
        assert!(!day.overlaps(Some(3 * DAY_MS), None));
        assert!(!day.overlaps(None, Some(2 * DAY_MS)));
        assert!(day.overlaps(None, Some(2 * DAY_MS + 1)));
    }
}
