//! The events table's partitions: one per UTC day, named after it (`events_20240115`), made
//! by the writer when a batch brings a day that has none, and listed for retention.

use anyhow::{Context, Result};
use tokio_postgres::{Client, Transaction};

use super::{quote_identifier, LockKey};
use crate::store::{floor_to, DAY_MS};

/// The start of the UTC day `ms` falls in: what a partition is known by.
pub(super) fn day_of(ms: i64) -> i64 {
    floor_to(ms, DAY_MS)
}

/// The partition's name for the day starting at `day_ms`.
pub(super) fn name(day_ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(day_ms.div_euclid(1_000))
        .ok()
        .map(|time| time.date())
        .filter(|date| (0..=9999).contains(&date.year()));
    match date {
        Some(date) => format!(
            "events_{:04}{:02}{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        // Not for timestamps that events can have (years 0000 to 9999).
        None => format!("events_d{}", day_ms / DAY_MS).replace('-', "m"),
    }
}

/// Creates the partitions of the days starting at `days` that do not exist yet, in a
/// transaction of their own (it locks the parent table, briefly) holding an advisory lock,
/// so that two writers making the same day take turns instead of failing.
pub(super) async fn create(client: &mut Client, key: LockKey, days: &[i64]) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LockKey::PARTITIONS, &key.0],
    )
    .await?;
    for &day in days {
        let to = day
            .checked_add(DAY_MS)
            .map_or_else(|| "MAXVALUE".to_owned(), |to| to.to_string());
        let name = name(day);
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({day}) TO ({to})",
            quote_identifier(&name)
        ))
        .await
        .with_context(|| format!("creating the partition {name}"))?;
    }
    tx.commit().await?;
    Ok(())
}

/// A partition of the events table and its bounds, `[from_ms, to_ms)`; `None` for an
/// unbounded side.
pub(super) struct Partition {
    pub(super) name: String,
    pub(super) from_ms: Option<i64>,
    pub(super) to_ms: Option<i64>,
}

/// Every partition of the events table, oldest first.
pub(super) async fn list(tx: &Transaction<'_>) -> Result<Vec<Partition>> {
    // The bounds as PostgreSQL prints them: FOR VALUES FROM ('1705276800000') TO (...).
    let rows = tx
        .query(
            r"SELECT c.relname::text, b[1]::bigint, b[2]::bigint
              FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
              LEFT JOIN LATERAL regexp_match(
                  pg_get_expr(c.relpartbound, c.oid),
                  'FROM \(''(-?\d+)''\) TO \(''(-?\d+)''\)'
              ) AS b ON true
              WHERE i.inhparent = 'events'::regclass
              ORDER BY 2",
            &[],
        )
        .await
        .context("listing the event partitions")?;
    Ok(rows
        .iter()
        .map(|row| Partition {
            name: row.get(0),
            from_ms: row.get(1),
            to_ms: row.get(2),
        })
        .collect())
}
