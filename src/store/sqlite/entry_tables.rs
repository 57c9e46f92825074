//! The shape the tables of both indexes in the user index's file share: entries `(key, ts,
//! seq)` of one of the events' columns, `WITHOUT ROWID` with the entry as primary key, so
//! that a key's entries read in time order and join to the events by seq.

use anyhow::Result;
use rusqlite::{params, Connection, Transaction};

use super::multi_row;

/// The tables of one index: [`user_index`](super::user_index)'s or
/// [`service_index`](super::service_index)'s.
pub(super) struct EntryTables {
    /// The events' column the entries are keyed by.
    pub column: &'static str,
    /// What the tables' names start with.
    pub prefix: &'static str,
}

/// An entry: key, timestamp, seq.
pub(super) type Entry<'a> = (&'a str, i64, i64);

/// An [`Entry`] that owns its key.
pub(super) type OwnedEntry = (String, i64, i64);

impl EntryTables {
    /// Creates a table called `table`, unless it exists.
    pub(super) fn create(&self, connection: &Connection, table: &str) -> Result<()> {
        let column = self.column;
        connection.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                {column} TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
                PRIMARY KEY ({column}, ts, seq)
            ) WITHOUT ROWID"
        ))?;
        Ok(())
    }

    /// The names of the tables in `connection`'s main database.
    pub(super) fn names(&self, connection: &Connection) -> Result<Vec<String>> {
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        let names = connection
            .prepare(
                "SELECT name FROM main.sqlite_schema
                 WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
            )?
            .query_map([pattern], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    /// Adds to `table` the entries of the events in `events` (a partition's table), in key
    /// order, within `tx`.
    pub(super) fn fill(&self, tx: &Transaction, table: &str, events: &str) -> Result<()> {
        let column = self.column;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO {table} ({column}, ts, seq)
                 SELECT {column}, ts, seq FROM {events} WHERE {column} IS NOT NULL
                 ORDER BY {column}, ts, seq"
            ),
            [],
        )?;
        Ok(())
    }

    /// Adds `entries` to `table`, within `tx`, many per statement ([`multi_row`]): entries
    /// of events past the last seq the file holds, which no table of it can hold yet (the
    /// seq is recorded in the transaction that adds its entries, and batches come in seq
    /// order). A statement that inserted fewer than its rows means that did not hold: an
    /// error, rather than entries counted wrong.
    pub(super) fn insert_new(
        &self,
        tx: &Transaction,
        table: &str,
        entries: &[Entry],
    ) -> Result<()> {
        let column = self.column;
        for chunk in multi_row::chunks(entries) {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO {table} ({column}, ts, seq) VALUES {}",
                multi_row::values(3, chunk.len())
            ))?;
            for (row, (key, ts, seq)) in chunk.iter().enumerate() {
                insert.raw_bind_parameter(row * 3 + 1, key)?;
                insert.raw_bind_parameter(row * 3 + 2, ts)?;
                insert.raw_bind_parameter(row * 3 + 3, seq)?;
            }
            let inserted = insert.raw_execute()?;
            anyhow::ensure!(
                inserted == chunk.len(),
                "{table} held {} of {} entries past the last seq its file holds",
                chunk.len() - inserted,
                chunk.len()
            );
        }
        Ok(())
    }

    /// Deletes `entry` from `table`, within `tx`; returns how many went (0 or 1).
    pub(super) fn delete(&self, tx: &Transaction, table: &str, entry: Entry) -> Result<usize> {
        let (key, ts, seq) = entry;
        let deleted = tx
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE {} = ? AND ts = ? AND seq = ?",
                self.column
            ))?
            .execute(params![key, ts, seq])?;
        Ok(deleted)
    }
}
