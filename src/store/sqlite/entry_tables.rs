//! The shape the tables of both indexes in the user index's file share: entries `(key, ts,
//! seq)` of one of the events' columns, `WITHOUT ROWID` with the entry as primary key, so
//! that a key's entries read in time order and join to the events by seq.

use anyhow::Result;
use rusqlite::{params, Connection, Statement, Transaction};

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
        let head = self.insert_head(table);
        let bind = |insert: &mut Statement, before: usize, &(key, ts, seq): &Entry| {
            insert.raw_bind_parameter(before + 1, key)?;
            insert.raw_bind_parameter(before + 2, ts)?;
            insert.raw_bind_parameter(before + 3, seq)
        };
        multi_row::execute(tx, &head, 3, entries, bind, |chunk, inserted| {
            anyhow::ensure!(
                inserted == chunk.len(),
                "{table} held {} of {} entries past the last seq its file holds",
                chunk.len() - inserted,
                chunk.len()
            );
            Ok(())
        })
    }

    /// Adds `entry` to `table`, within `tx`; `true` if it was not there already (it is when
    /// a batch is stored again).
    pub(super) fn insert(&self, tx: &Transaction, table: &str, entry: Entry) -> Result<bool> {
        let (key, ts, seq) = entry;
        let sql = format!("{} VALUES (?, ?, ?)", self.insert_head(table));
        Ok(tx.prepare_cached(&sql)?.execute(params![key, ts, seq])? > 0)
    }

    /// `INSERT OR IGNORE INTO table (...)`, without its values.
    fn insert_head(&self, table: &str) -> String {
        format!("INSERT OR IGNORE INTO {table} ({}, ts, seq)", self.column)
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
