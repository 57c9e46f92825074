//! Retention: deleting the events before a cutoff, their ids and the rollups that aged out,
//! keeping the stored-event count right at every step.
//!
//! Whole partitions (days, months, years) before the cutoff go by dropping them (no
//! row-by-row delete, no table bloat); the one the cutoff falls in is trimmed by DELETE in
//! chunks, each its own transaction, so no step holds locks or grows the WAL for long. A pass
//! cut short (a crash, the server going away) leaves a consistent store; the next pass
//! finishes the work.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::partitions;
use super::pool::Connection;
use super::{quote_identifier, PostgresStore};
use crate::store::partitioning::TimeRange;
use crate::store::{Purged, HOUR_MS, MINUTE_MS};

/// Rows deleted per transaction when trimming events or deleting ids.
const CHUNK: i64 = 10_000;

const SUBTRACT_EVENTS: &str = "UPDATE progress SET value = value - $1 WHERE name = 'event_count'";

pub(super) async fn purge_before(store: &PostgresStore, cutoff_ms: i64) -> Result<Purged> {
    let mut connection = store.pool.get().await?;
    let started = Instant::now();
    let (dropped, ranges) = drop_partitions(&mut connection, cutoff_ms)
        .await
        .context("dropping old partitions")?;
    let drop_took = started.elapsed();
    store.forget_partitions(&ranges);
    let (trimmed, longest_trim) = trim_events(&mut connection, cutoff_ms)
        .await
        .context("deleting old events")?;
    delete_ids(&mut connection, cutoff_ms)
        .await
        .context("deleting the ids of old events")?;
    delete_rollups(&mut connection, cutoff_ms)
        .await
        .context("deleting old rollups")?;
    Ok(Purged {
        events: dropped + trimmed,
        partitions: ranges.len() as u64,
        longest_step: drop_took.max(longest_trim),
    })
}

/// Drops the partitions wholly before the cutoff; returns how many events they held and
/// their ranges.
///
/// The parent table is locked in EXCLUSIVE mode first: writers wait (so nothing enters a
/// partition between its count and its drop), readers go on until the drops themselves, which
/// take the parent in ACCESS EXCLUSIVE mode until the commit, briefly. Locking the parent
/// before any partition is the order writers and readers lock in too, so no deadlock.
async fn drop_partitions(
    connection: &mut Connection,
    cutoff_ms: i64,
) -> Result<(u64, Vec<TimeRange>)> {
    let is_old =
        |partition: &partitions::Partition| partition.to_ms.is_some_and(|to| to <= cutoff_ms);
    // A look without the lock first: most passes have no whole partition to drop.
    {
        let tx = connection.client.transaction().await?;
        if !partitions::list(&tx).await?.iter().any(is_old) {
            return Ok((0, Vec::new()));
        }
    }
    let tx = connection.client.transaction().await?;
    tx.batch_execute("LOCK TABLE ONLY events IN EXCLUSIVE MODE")
        .await?;
    let old: Vec<_> = partitions::list(&tx)
        .await?
        .into_iter()
        .filter(is_old)
        .collect();
    let mut events = 0;
    for partition in &old {
        let name = quote_identifier(&partition.name);
        let count: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
        events += count;
    }
    for partition in &old {
        let name = quote_identifier(&partition.name);
        tx.batch_execute(&format!("DROP TABLE {name}")).await?;
    }
    tx.execute(SUBTRACT_EVENTS, &[&events]).await?;
    tx.commit().await?;
    for partition in &old {
        tracing::info!(partition = partition.name, "dropped an event partition");
    }
    let ranges = old.iter().filter_map(|partition| partition.range).collect();
    Ok((events as u64, ranges))
}

/// Deletes the remaining events before the cutoff (those of the partition it falls in, all
/// of them before it when that is a month or a year, and any that arrived into a dropped
/// partition meanwhile), a chunk per transaction.
async fn trim_events(connection: &mut Connection, cutoff_ms: i64) -> Result<(u64, Duration)> {
    let delete = connection
        .prepare(
            "DELETE FROM events WHERE ts < $1 AND (ts, seq) IN (
                SELECT ts, seq FROM events WHERE ts < $1 LIMIT $2
            )",
        )
        .await?;
    let subtract = connection.prepare(SUBTRACT_EVENTS).await?;
    let mut total = 0;
    let mut longest = Duration::ZERO;
    loop {
        let started = Instant::now();
        let tx = connection.client.transaction().await?;
        let deleted = tx.execute(&delete, &[&cutoff_ms, &CHUNK]).await?;
        tx.execute(&subtract, &[&(deleted as i64)]).await?;
        tx.commit().await?;
        longest = longest.max(started.elapsed());
        total += deleted;
        if deleted < CHUNK as u64 {
            return Ok((total, longest));
        }
    }
}

/// Deletes the ids of the events before the cutoff, a chunk per statement: from now on an
/// event with one of them is new again, as the event is gone.
async fn delete_ids(connection: &mut Connection, cutoff_ms: i64) -> Result<()> {
    let delete = connection
        .prepare(
            "DELETE FROM event_ids WHERE id IN (
                SELECT id FROM event_ids WHERE ts < $1 LIMIT $2
            )",
        )
        .await?;
    while connection
        .client
        .execute(&delete, &[&cutoff_ms, &CHUNK])
        .await?
        == CHUNK as u64
    {}
    Ok(())
}

/// Deletes the rollup rows whose whole bucket ends at or before the cutoff. Rows of a bucket
/// the cutoff falls in stay whole.
async fn delete_rollups(connection: &mut Connection, cutoff_ms: i64) -> Result<()> {
    let tx = connection.client.transaction().await?;
    tx.execute(
        "DELETE FROM rollups WHERE minute <= $1",
        &[&cutoff_ms.saturating_sub(MINUTE_MS)],
    )
    .await?;
    tx.execute(
        "DELETE FROM rollups_hourly WHERE hour <= $1",
        &[&cutoff_ms.saturating_sub(HOUR_MS)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
