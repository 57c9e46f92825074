//! The PostgreSQL store's credentials: the deployment's secrets (shared by every API node)
//! and the API keys (only their hashes), with `keys_version` in `progress` counting the
//! changes, which every node polls to pick up a revocation within a second.

use anyhow::{Context, Result};
use tokio_postgres::Row;

use super::pool::Pool;
use crate::auth::keys::KeyRecord;

/// Migration: the keys table and its change counter.
pub(super) const KEYS_TABLE: &str = "CREATE TABLE api_keys (
        id text PRIMARY KEY,
        name text NOT NULL,
        prefix text NOT NULL,
        hash bytea NOT NULL UNIQUE,
        scopes text NOT NULL,
        created_ms bigint NOT NULL,
        expires_ms bigint,
        last_used_ms bigint,
        revoked_ms bigint
    );
    INSERT INTO progress VALUES ('keys_version', 0);";

const BUMP_VERSION: &str = "UPDATE progress SET value = value + 1 WHERE name = 'keys_version'";

pub(super) async fn secret(pool: &Pool, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
    let connection = pool.get().await?;
    // Two processes starting at once both insert; the first wins and both read it.
    connection
        .client
        .execute(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &candidate],
        )
        .await?;
    let row = connection
        .client
        .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
        .await?;
    Ok(row.get(0))
}

pub(super) async fn create_key(pool: &Pool, key: &KeyRecord) -> Result<()> {
    let mut connection = pool.get().await?;
    let tx = connection.client.transaction().await?;
    tx.execute(
        "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_ms, expires_ms,
                               last_used_ms, revoked_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &key.id,
            &key.name,
            &key.prefix,
            &&key.hash[..],
            &key.scopes.to_text(),
            &key.created_ms,
            &key.expires_ms,
            &key.last_used_ms,
            &key.revoked_ms,
        ],
    )
    .await
    .context("storing the key")?;
    tx.execute(BUMP_VERSION, &[]).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_keys(pool: &Pool) -> Result<Vec<KeyRecord>> {
    let connection = pool.get().await?;
    let rows = connection
        .client
        .query(
            "SELECT id, name, prefix, hash, scopes, created_ms, expires_ms, last_used_ms,
                    revoked_ms
             FROM api_keys ORDER BY created_ms, id",
            &[],
        )
        .await?;
    rows.iter().map(key_from_row).collect()
}

fn key_from_row(row: &Row) -> Result<KeyRecord> {
    key_record_from_row!(row, try_get)
}

pub(super) async fn revoke_key(pool: &Pool, id: &str, at_ms: i64) -> Result<bool> {
    let mut connection = pool.get().await?;
    let tx = connection.client.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
            &[&at_ms, &id],
        )
        .await?;
    if changed > 0 {
        tx.execute(BUMP_VERSION, &[]).await?;
    }
    tx.commit().await?;
    Ok(changed > 0)
}

pub(super) async fn keys_version(pool: &Pool) -> Result<i64> {
    let connection = pool.get().await?;
    let row = connection
        .client
        .query_opt(
            "SELECT value FROM progress WHERE name = 'keys_version'",
            &[],
        )
        .await?;
    Ok(row.map_or(0, |row| row.get(0)))
}

pub(super) async fn record_key_uses(pool: &Pool, uses: &[(String, i64)]) -> Result<()> {
    let connection = pool.get().await?;
    for (id, at_ms) in uses {
        connection
            .client
            .execute(
                "UPDATE api_keys SET last_used_ms = greatest(coalesce(last_used_ms, 0), $1)
                 WHERE id = $2",
                &[at_ms, id],
            )
            .await?;
    }
    Ok(())
}
