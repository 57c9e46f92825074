//! The embedded store's credentials: the deployment's secrets and the API keys (only their
//! hashes). Written on the store's writer thread like everything else; `keys_version` in
//! `progress` counts the changes, so the server knows when to reload its keys.

use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::auth::keys::KeyRecord;

/// Migration: the keys table and its change counter.
pub(super) const KEYS_TABLE: &str = "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER,
        last_used_ms INTEGER,
        revoked_ms INTEGER
    );
    INSERT INTO progress VALUES ('keys_version', 0);";

pub(super) fn secret(connection: &Connection, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
    connection
        .prepare_cached("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)")?
        .execute(params![name, candidate])?;
    Ok(connection
        .prepare_cached("SELECT value FROM secrets WHERE name = ?")?
        .query_row([name], |row| row.get(0))?)
}

fn bump_version(connection: &Connection) -> Result<()> {
    connection
        .prepare_cached("UPDATE progress SET value = value + 1 WHERE name = 'keys_version'")?
        .execute([])?;
    Ok(())
}

pub(super) fn create_key(connection: &Connection, key: &KeyRecord) -> Result<()> {
    let tx = connection.unchecked_transaction()?;
    tx.prepare_cached(
        "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_ms, expires_ms,
                               last_used_ms, revoked_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        key.id,
        key.name,
        key.prefix,
        &key.hash[..],
        key.scopes.to_text(),
        key.created_ms,
        key.expires_ms,
        key.last_used_ms,
        key.revoked_ms,
    ])?;
    bump_version(&tx)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn list_keys(connection: &Connection) -> Result<Vec<KeyRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, name, prefix, hash, scopes, created_ms, expires_ms, last_used_ms, revoked_ms
         FROM api_keys ORDER BY created_ms, id",
    )?;
    let rows = statement.query_map([], key_from_row)?;
    let mut keys = Vec::new();
    for row in rows {
        keys.push(row??);
    }
    Ok(keys)
}

/// Never an error for rusqlite's `query_map`: every failure is in the inner result.
fn key_from_row(row: &Row) -> rusqlite::Result<Result<KeyRecord>> {
    Ok(key_record_from_row!(row, get))
}

/// Revokes the key `id`; `false` if there is no such key not revoked already.
pub(super) fn revoke_key(connection: &Connection, id: &str, at_ms: i64) -> Result<bool> {
    let tx = connection.unchecked_transaction()?;
    let changed = tx
        .prepare_cached("UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL")?
        .execute(params![at_ms, id])?;
    if changed > 0 {
        bump_version(&tx)?;
    }
    tx.commit()?;
    Ok(changed > 0)
}

pub(super) fn keys_version(connection: &Connection) -> Result<i64> {
    Ok(connection
        .prepare_cached("SELECT value FROM progress WHERE name = 'keys_version'")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves each key's last use forward (never back), without counting it as a change.
pub(super) fn record_key_uses(connection: &Connection, uses: &[(String, i64)]) -> Result<()> {
    let tx = connection.unchecked_transaction()?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE api_keys SET last_used_ms = max(coalesce(last_used_ms, 0), ?) WHERE id = ?",
        )?;
        for (id, at_ms) in uses {
            update.execute(params![at_ms, id])?;
        }
    }
    tx.commit()?;
    Ok(())
}
