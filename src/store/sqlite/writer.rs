//! The writer thread: the one connection that writes the events' database, owned by a thread
//! of its own that runs the store's writes one at a time, in order (appends, retention
//! steps, keys). An append stores a batch's events in the partitions covering them (creating
//! those missing), the rollups, the partitions' counts and the progress counters, in one
//! transaction; the user index's thread ([`user_store`](super::user_store)) stores the
//! batch's user-index entries meanwhile, and is told the partitions once they are known.

use std::collections::HashSet;
use std::sync::mpsc::Receiver;

use anyhow::Result;
use foldhash::HashMap;
use rusqlite::{params, Connection, ErrorCode, Transaction};

use super::event_inserts::EventInserts;
use super::partitions::Partition;
use super::thread::StoreThread;
use super::user_store::EventsSide;
use crate::event::StoredEvent;
use crate::store::partitioning::{Layout, TimeRange};
use crate::store::{floor_to, AppendOutcome, StoreError, HOUR_MS, MINUTE_MS};

/// Work for a writer thread that owns a `T`: appends and retention steps, one at a time, in
/// order.
pub(super) type Task<T> = Box<dyn FnOnce(&mut T) + Send>;

/// What only the events' writer thread touches.
pub(super) struct Writer {
    pub(super) connection: Connection,
    /// The partitions that have tables: what events are routed by.
    pub(super) layout: Layout,
    /// Those of them that hold ids as text (see [`event_ids`](super::event_ids)).
    pub(super) text_ids: HashSet<TimeRange>,
}

/// A writer thread, taking its tasks in order.
pub(super) type WriterThread<T> = StoreThread<Task<T>>;

/// Starts a writer thread called `name`, which owns `state` and runs the tasks sent to it.
pub(super) fn spawn<T: Send + 'static>(name: &str, mut state: T) -> Result<WriterThread<T>> {
    StoreThread::spawn(name, move |tasks: Receiver<Task<T>>| {
        for task in tasks {
            task(&mut state);
        }
    })
}

impl Writer {
    /// Stores a batch: see [`Store::append_batch`](crate::store::Store::append_batch). The
    /// user index's thread stores the batch's entries meanwhile; `users` is where the two
    /// meet, and the events are committed only once the entries are.
    pub(super) fn append(
        &mut self,
        events: &[StoredEvent],
        indexed_seq: u64,
        users: EventsSide,
    ) -> Result<AppendOutcome> {
        let mut created = Vec::new();
        let outcome = self.append_in_transaction(events, indexed_seq, users, &mut created);
        if outcome.is_err() {
            // Rolled back: the partitions it made are gone again.
            for range in created {
                self.layout.remove(range);
            }
        }
        outcome
    }

    /// [`append`](Self::append)'s transaction; the ranges of the partitions it creates go
    /// into `created`.
    fn append_in_transaction(
        &mut self,
        events: &[StoredEvent],
        indexed_seq: u64,
        users: EventsSide,
        created: &mut Vec<TimeRange>,
    ) -> Result<AppendOutcome> {
        let tx = self.connection.transaction()?;
        let ranges = route(&tx, &mut self.layout, events, created)?;
        // Routed first, so that the user index's thread sweeps this batch's entries while
        // the events are stored.
        users.routed(&self.layout);
        let mut skipped = Vec::new();
        let mut rollups = RollupBatch::default();
        let mut per_partition: HashMap<TimeRange, i64> = HashMap::default();
        {
            let mut inserts = EventInserts::new(&tx);
            let mut inserted = Vec::with_capacity(events.len());
            let mut run_start = 0;
            for run in ranges.chunk_by(|a, b| a == b) {
                // A run of events in one partition.
                let range = run[0];
                let run_events = &events[run_start..run_start + run.len()];
                let packed_ids = !self.text_ids.contains(&range);
                inserts.insert_run(Partition { range }, packed_ids, run_events, &mut inserted)?;
                run_start += run.len();
            }
            for ((event, range), inserted) in events.iter().zip(ranges).zip(inserted) {
                if !inserted {
                    // Nothing to index or count for an event skipped as an already stored id.
                    skipped.push(event.seq);
                    continue;
                }
                *per_partition.entry(range).or_default() += 1;
                rollups.add(event);
            }
            users.skipped(&skipped);
            for (table, counts) in [
                ("rollups", &rollups.minutes),
                ("rollups_hourly", &rollups.hours()),
            ] {
                let mut upsert = tx.prepare_cached(&format!(
                    "INSERT INTO {table} VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT DO UPDATE SET count = count + excluded.count"
                ))?;
                for ((bucket, kind, service), count) in counts {
                    upsert.execute(params![
                        bucket,
                        kind,
                        service.is_some(),
                        service.unwrap_or(""),
                        *count as i64
                    ])?;
                }
            }
            for (range, count) in per_partition {
                Partition { range }.count(&tx, count)?;
            }
            tx.prepare_cached("UPDATE progress SET value = value + ? WHERE name = 'event_count'")?
                .execute([(events.len() - skipped.len()) as i64])?;
            tx.prepare_cached("UPDATE progress SET value = ? WHERE name = 'indexed_seq'")?
                .execute([indexed_seq as i64])?;
        }
        // Committed after the user index's entries: a batch whose entries failed is not
        // stored, so it is stored whole when retried. (The other way round, entries without
        // their events, is harmless, and skipped when the batch is retried.)
        users.entries_stored()?;
        tx.commit()?;
        Ok(AppendOutcome { skipped })
    }
}

/// The partition of each event, within `tx`: the one covering it, or one created for it
/// (its range goes into the layout at once, routing later events, and into `created`).
fn route(
    tx: &Transaction,
    layout: &mut Layout,
    events: &[StoredEvent],
    created: &mut Vec<TimeRange>,
) -> Result<Vec<TimeRange>> {
    let mut ranges: Vec<TimeRange> = Vec::with_capacity(events.len());
    for event in events {
        let ts = event.timestamp_ms;
        let range = match ranges.last() {
            Some(last) if last.covers(ts) => *last,
            _ => match layout.covering(ts) {
                Some(range) => range,
                None => {
                    let range = layout.new_range(ts, event.received_at_ms);
                    Partition { range }.create(tx)?;
                    layout.insert(range);
                    created.push(range);
                    range
                }
            },
        };
        ranges.push(range);
    }
    Ok(ranges)
}

/// Whether a failed write is the batch's fault ([`StoreError`]). Only SQLite refusing a value
/// is: too big (`SQLITE_TOOBIG`), of the wrong type (`SQLITE_MISMATCH`), against a constraint
/// (`SQLITE_CONSTRAINT`), or one that cannot be converted for SQLite. Everything else is the
/// database's state, the same for any batch: the disk full or failing, the file read-only,
/// locked or corrupt, memory short, the writer thread gone.
pub(super) fn sort_write_error(err: anyhow::Error) -> StoreError {
    let at_fault = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<rusqlite::Error>())
        .any(|err| {
            matches!(err, rusqlite::Error::ToSqlConversionFailure(_))
                || matches!(
                    err.sqlite_error_code(),
                    Some(
                        ErrorCode::TooBig
                            | ErrorCode::ConstraintViolation
                            | ErrorCode::TypeMismatch
                    )
                )
        });
    if at_fault {
        StoreError::Rejected(err)
    } else {
        StoreError::Unavailable(err)
    }
}

type RollupCounts<'a> = HashMap<(i64, &'a str, Option<&'a str>), u64>;

/// A batch's events counted per minute x type x service, before they go into the rollups.
#[derive(Default)]
struct RollupBatch<'a> {
    minutes: RollupCounts<'a>,
}

impl<'a> RollupBatch<'a> {
    fn add(&mut self, event: &'a StoredEvent) {
        let minute = floor_to(event.timestamp_ms, MINUTE_MS);
        let key = (minute, event.kind.as_str(), event.service.as_deref());
        *self.minutes.entry(key).or_default() += 1;
    }

    fn hours(&self) -> RollupCounts<'a> {
        let mut hours = RollupCounts::default();
        for (&(minute, kind, service), count) in &self.minutes {
            *hours
                .entry((floor_to(minute, HOUR_MS), kind, service))
                .or_default() += count;
        }
        hours
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: std::os::raw::c_int) -> StoreError {
        let err = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        sort_write_error(anyhow::Error::from(err).context("storing the events"))
    }

    #[test]
    fn only_a_value_sqlite_refuses_is_the_batch_s_fault() {
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOMEM,
        ] {
            assert!(failure(code).is_unavailable(), "code {code}");
        }
        for code in [
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_MISMATCH,
        ] {
            assert!(!failure(code).is_unavailable(), "code {code}");
        }
        let stopped = anyhow::anyhow!("the store writer thread has stopped");
        assert!(sort_write_error(stopped).is_unavailable());
    }
}
