//! Retention: deleting the events before a cutoff and the rollups that aged out, keeping the
//! stored-event count right at every step.
//!
//! Whole partitions before the cutoff go by dropping their tables; the one the cutoff falls
//! in is trimmed by rows, then its main user-index level in key order. Each step is a short
//! transaction and a task of its own on a writer thread (the events', or the user index's
//! for its entries), so index batches go in between.

use anyhow::Result;
use rusqlite::{params, Transaction};

use super::entry_tables::OwnedEntry;
use super::partitions::{self, Partition};
use super::writer::Writer;
use super::SqliteStore;
use crate::store::{Order, Purged, HOUR_MS, MINUTE_MS};

/// Rows deleted per transaction when retention trims a partition by rows: about 25 ms of
/// the writer's time, so indexing is never held up long.
const TRIM_ROWS: usize = 2_000;

/// One step of trimming a partition by rows.
struct Trimmed {
    events: u64,
    /// The user-index entries of the events deleted.
    entries: Vec<OwnedEntry>,
    /// Their service-index entries.
    services: Vec<OwnedEntry>,
}

/// See [`Store::purge_before`](crate::store::Store::purge_before).
pub(super) async fn purge_before(store: &SqliteStore, cutoff_ms: i64) -> Result<Purged> {
    let mut purged = Purged::default();
    let doomed = store
        .read(move |connection| partitions::list(connection, None, Some(cutoff_ms), Order::Asc))
        .await?;
    // Each step is a task of its own on the writer, so index batches go in between.
    for partition in doomed {
        if partition.end_ms() <= cutoff_ms {
            let (deleted, took) = store
                .write_step(move |writer| writer.drop_partition(partition))
                .await?;
            let ((), users_took) = store
                .write_users_step(move |users| users.drop_partition(partition.range))
                .await?;
            purged.events += deleted;
            purged.partitions += 1;
            purged.longest_step = purged.longest_step.max(took).max(users_took);
            continue;
        }
        // The events before the cutoff, oldest first, then their user-index entries...
        let mut trimmed = 0;
        loop {
            let (doomed, took) = store
                .write_step(move |writer| writer.trim_partition(partition, cutoff_ms, TRIM_ROWS))
                .await?;
            let deleted = doomed.events;
            // Fewer than a step's rows: the trim's last step.
            let last_step = deleted < TRIM_ROWS as u64;
            let ((), users_took) = store
                .write_users_step(move |users| {
                    users.delete_entries(partition, &doomed.entries, &doomed.services, last_step)
                })
                .await?;
            trimmed += deleted;
            purged.longest_step = purged.longest_step.max(took).max(users_took);
            if last_step {
                break;
            }
        }
        purged.events += trimmed;
        // ...then, after a trim of several steps, the entries their events left in the
        // main level of the user index, in key order. (Those of a pass cut short stay
        // until a later trim of several steps or the partition's drop: harmless, and few
        // unless that pass had a lot to trim.)
        if trimmed < TRIM_ROWS as u64 {
            continue;
        }
        let mut after = None;
        loop {
            let from = after.take();
            let ((deleted, last), took) = store
                .write_users_step(move |users| users.trim(partition, cutoff_ms, from, TRIM_ROWS))
                .await?;
            purged.longest_step = purged.longest_step.max(took);
            if deleted < TRIM_ROWS as u64 {
                break;
            }
            after = last;
        }
    }
    loop {
        let (deleted, took) = store
            .write_step(move |writer| writer.trim_rollups(cutoff_ms))
            .await?;
        purged.longest_step = purged.longest_step.max(took);
        if deleted == 0 {
            break;
        }
    }
    Ok(purged)
}

impl Writer {
    /// Drops a whole partition; returns how many events it held.
    fn drop_partition(&mut self, partition: Partition) -> Result<u64> {
        let tx = self.connection.transaction()?;
        let events = partition.drop(&tx)?;
        subtract_from_event_count(&tx, events)?;
        tx.commit()?;
        self.layout.remove(partition.range);
        self.text_ids.remove(&partition.range);
        Ok(events)
    }

    /// Deletes up to `max_rows` of the events of `partition` older than `cutoff_ms`, oldest
    /// first; says which user-index entries they had, for the user index's writer.
    ///
    /// The last step of a trim (fewer than `max_rows` left: usually the only one, as each
    /// hourly run trims the hour the cutoff moved over) has each event's entry deleted
    /// wherever it is. Earlier steps have only the entries in the recent level deleted and
    /// leave those in the partition's main level to [`trim`](super::user_index::trim), which
    /// deletes them in key order: one by one, each rewrote about a page of that table, since
    /// the events of an hour belong to users all over its key space.
    fn trim_partition(
        &mut self,
        partition: Partition,
        cutoff_ms: i64,
        max_rows: usize,
    ) -> Result<Trimmed> {
        let tx = self.connection.transaction()?;
        let events = partition.events_table();
        let doomed: Vec<(i64, i64, Option<String>, Option<String>)> = tx
            .prepare_cached(&format!(
                "SELECT seq, ts, user_id, service FROM {events} WHERE ts < ? ORDER BY ts LIMIT ?"
            ))?
            .query_map(params![cutoff_ms, max_rows as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        {
            let mut delete_event =
                tx.prepare_cached(&format!("DELETE FROM {events} WHERE seq = ?"))?;
            for (seq, ..) in &doomed {
                delete_event.execute([seq])?;
            }
            partition.count(&tx, -(doomed.len() as i64))?;
        }
        subtract_from_event_count(&tx, doomed.len() as u64)?;
        tx.commit()?;
        let mut trimmed = Trimmed {
            events: doomed.len() as u64,
            entries: Vec::new(),
            services: Vec::new(),
        };
        for (seq, ts, user_id, service) in doomed {
            trimmed
                .entries
                .extend(user_id.map(|user_id| (user_id, ts, seq)));
            trimmed
                .services
                .extend(service.map(|service| (service, ts, seq)));
        }
        Ok(trimmed)
    }

    /// Deletes the oldest hour's worth of rollup rows whose whole bucket ends at or before
    /// `cutoff_ms`; returns how many it deleted (0: none are left).
    fn trim_rollups(&mut self, cutoff_ms: i64) -> Result<u64> {
        let tx = self.connection.transaction()?;
        let mut deleted = 0;
        for (table, column, size) in [
            ("rollups", "minute", MINUTE_MS),
            ("rollups_hourly", "hour", HOUR_MS),
        ] {
            let oldest: Option<i64> = tx
                .prepare_cached(&format!("SELECT min({column}) FROM {table}"))?
                .query_row([], |row| row.get(0))?;
            let Some(oldest) = oldest else { continue };
            // An hour of minutes (or a day of hours) at a time: tens of thousands of rows
            // with many types and services, a short transaction.
            let end = (cutoff_ms - size + 1).min(oldest.saturating_add(size * 60));
            deleted += tx
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE {column} >= ? AND {column} < ?"
                ))?
                .execute([oldest, end])? as u64;
        }
        tx.commit()?;
        Ok(deleted)
    }
}

fn subtract_from_event_count(tx: &Transaction, events: u64) -> Result<()> {
    tx.prepare_cached("UPDATE progress SET value = value - ? WHERE name = 'event_count'")?
        .execute([events as i64])?;
    Ok(())
}
