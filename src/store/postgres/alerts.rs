//! The PostgreSQL store's alerting records, as in the embedded store: rules added over HTTP,
//! alert states, notification logs and silences as JSON bodies by kind and name, shared by
//! every node; the history of state changes and notices (the newest 10,000 kept); and the
//! leader's lock: a session advisory lock on a connection of its own, which PostgreSQL
//! releases when that connection ends (the leader died), so another node takes over.

use anyhow::Result;

use super::pool::{Connection, Pool, Target};
use super::LockKey;
use crate::alerts::history::HISTORY_KEPT;

/// The connection that holds, or tries for, the alerting leader's lock.
#[derive(Default)]
pub(super) struct Leadership {
    /// The connection, and whether it holds the lock.
    held: tokio::sync::Mutex<Option<(Connection, bool)>>,
}

impl Leadership {
    /// Whether this process leads: still holding the lock (its connection answers), or
    /// having just taken it.
    pub(super) async fn lead(&self, target: &Target, key: LockKey) -> Result<bool> {
        let mut held = self.held.lock().await;
        if let Some((connection, leading)) = held.as_ref() {
            let alive = !connection.client.is_closed()
                && connection.client.simple_query("SELECT 1").await.is_ok();
            if !alive {
                // A lost connection lost the lock with it.
                *held = None;
            } else if *leading {
                return Ok(true);
            }
        }
        if held.is_none() {
            *held = Some((Connection::open(target).await?, false));
        }
        let (connection, leading) = held.as_mut().expect("opened above");
        let row = connection
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LockKey::ALERTS, &key.0],
            )
            .await?;
        *leading = row.get(0);
        Ok(*leading)
    }
}

/// Migration: the alerting tables.
pub(super) const ALERTS_TABLES: &str = "CREATE TABLE alert_records (
        kind text NOT NULL,
        name text NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE alert_history (
        id bigserial PRIMARY KEY,
        at_ms bigint NOT NULL,
        body text NOT NULL
    );";

pub(super) async fn records(pool: &Pool, kind: &str) -> Result<Vec<(String, String)>> {
    let connection = pool.get().await?;
    let rows = connection
        .client
        .query(
            "SELECT name, body FROM alert_records WHERE kind = $1 ORDER BY name",
            &[&kind],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub(super) async fn put(pool: &Pool, kind: &str, name: &str, body: &str) -> Result<()> {
    let connection = pool.get().await?;
    connection
        .client
        .execute(
            "INSERT INTO alert_records (kind, name, body) VALUES ($1, $2, $3)
             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
            &[&kind, &name, &body],
        )
        .await?;
    Ok(())
}

pub(super) async fn delete(pool: &Pool, kind: &str, name: &str) -> Result<bool> {
    let connection = pool.get().await?;
    let deleted = connection
        .client
        .execute(
            "DELETE FROM alert_records WHERE kind = $1 AND name = $2",
            &[&kind, &name],
        )
        .await?;
    Ok(deleted > 0)
}

pub(super) async fn add_history(pool: &Pool, entries: &[(i64, String)]) -> Result<()> {
    let mut connection = pool.get().await?;
    let tx = connection.client.transaction().await?;
    for (at_ms, body) in entries {
        tx.execute(
            "INSERT INTO alert_history (at_ms, body) VALUES ($1, $2)",
            &[at_ms, body],
        )
        .await?;
    }
    tx.execute(
        "DELETE FROM alert_history WHERE id <= (SELECT max(id) FROM alert_history) - $1",
        &[&HISTORY_KEPT],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn history(
    pool: &Pool,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<(i64, i64, String)>> {
    let connection = pool.get().await?;
    let rows = connection
        .client
        .query(
            "SELECT id, at_ms, body FROM alert_history WHERE id < $1 ORDER BY id DESC LIMIT $2",
            &[&before.unwrap_or(i64::MAX), &(limit as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}
