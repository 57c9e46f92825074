//! The embedded store's alerting records: rules added over HTTP, each rule's alert state,
//! each channel's notification log and the silences, as JSON bodies by kind and name; and
//! the history of state changes and notices (the newest 10,000 kept).

use anyhow::Result;
use rusqlite::{params, Connection};

use crate::alerts::history::HISTORY_KEPT;

/// Migration: the alerting tables.
pub(super) const ALERTS_TABLES: &str = "CREATE TABLE alert_records (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );";

pub(super) fn records(connection: &Connection, kind: &str) -> Result<Vec<(String, String)>> {
    let mut statement = connection
        .prepare_cached("SELECT name, body FROM alert_records WHERE kind = ? ORDER BY name")?;
    let rows = statement.query_map([kind], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn put(connection: &Connection, kind: &str, name: &str, body: &str) -> Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO alert_records (kind, name, body) VALUES (?, ?, ?)
             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
        )?
        .execute(params![kind, name, body])?;
    Ok(())
}

pub(super) fn delete(connection: &Connection, kind: &str, name: &str) -> Result<bool> {
    Ok(connection
        .prepare_cached("DELETE FROM alert_records WHERE kind = ? AND name = ?")?
        .execute(params![kind, name])?
        > 0)
}

pub(super) fn add_history(connection: &Connection, entries: &[(i64, String)]) -> Result<()> {
    let tx = connection.unchecked_transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO alert_history (at_ms, body) VALUES (?, ?)")?;
        for (at_ms, body) in entries {
            insert.execute(params![at_ms, body])?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM alert_history WHERE id <= (SELECT max(id) FROM alert_history) - ?",
    )?
    .execute([HISTORY_KEPT])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn history(
    connection: &Connection,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<(i64, i64, String)>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, at_ms, body FROM alert_history WHERE id < ? ORDER BY id DESC LIMIT ?",
    )?;
    let rows = statement.query_map(params![before.unwrap_or(i64::MAX), limit as i64], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
