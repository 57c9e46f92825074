//! The user index's own database file (`events.users.db` beside `events.db`) and the thread
//! that writes it, beside the events' writer.
//!
//! SQLite lets one connection write a database file at a time, so with every table in one
//! file the store indexed on one thread while the other core was partly idle. The user index
//! ([`user_index`]) was about a third of that thread's work (measured under sustained load:
//! the writer's CPU per event 7.9-8.4 µs with it, 5.2-6.2 µs without it), and needs nothing
//! of the events' tables to be written, so it has a file and a thread of its own. For each
//! batch the two threads work at once, meeting at a [`handoff`]:
//!
//! - the events' writer routes the batch to its partitions (creating those missing) and sends
//!   the partitions; it stores the events, then sends the seqs it skipped as ids already
//!   stored; last, it waits for the user index to commit, and commits;
//! - meanwhile the user index adds the batch's entries to its recent level, and once it has
//!   the partitions (new ones get their main-level tables) sweeps a run into the main level;
//!   it deletes the entries of the skipped events, and commits.
//!
//! A batch whose entries failed is thus never stored without them. Entries whose events then
//! failed are harmless (queries join entries to events by seq) and not added twice when the
//! batch is stored again: the file records the last seq it holds, and an entry at or before
//! it is looked up in the main level before it goes into the recent one.
//!
//! The store has indexed a seq once both files hold it; on open, the log is replayed from the
//! smaller of the two. A store from before this file existed, or one whose file was lost,
//! gets the index built again from its events on open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, Transaction};

use super::entry_tables::{Entry, OwnedEntry};
use super::partitions::{self, Partition};
use super::service_index;
use super::user_index::{self, Sweep, Sweeper};
use crate::event::StoredEvent;
use crate::store::partitioning::{Layout, TimeRange};

/// The user index's file for the store at `events_path`: `events.db` -> `events.users.db`.
pub(super) fn path(events_path: &Path) -> PathBuf {
    events_path.with_extension("users.db")
}

/// The name the events' database is attached under, on the user index's connection.
const EVENTS_SCHEMA: &str = "store";

/// What only the user index's thread touches.
pub(super) struct UserWriter {
    connection: Connection,
    sweeper: Sweeper,
    /// The partitions as the events' writer last routed a batch: where swept entries go.
    layout: Layout,
}

/// One batch's meeting point, on the events' writer's side.
pub(super) struct EventsSide {
    layout: SyncSender<Layout>,
    skipped: SyncSender<Vec<u64>>,
    stored: Receiver<Result<()>>,
}

/// One batch's meeting point, on the user index's side.
pub(super) struct UsersSide {
    layout: Receiver<Layout>,
    skipped: Receiver<Vec<u64>>,
    stored: SyncSender<Result<()>>,
}

/// A meeting point for one batch's two writes.
pub(super) fn handoff() -> (EventsSide, UsersSide) {
    let (layout_sender, layout) = sync_channel(1);
    let (skipped_sender, skipped) = sync_channel(1);
    let (stored_sender, stored) = sync_channel(1);
    (
        EventsSide {
            layout: layout_sender,
            skipped: skipped_sender,
            stored,
        },
        UsersSide {
            layout,
            skipped,
            stored: stored_sender,
        },
    )
}

impl EventsSide {
    /// Tells the user index the partitions, once the batch's events are routed.
    pub(super) fn routed(&self, layout: &Layout) {
        // Gone: the user index's write failed already, as `entries_stored` will say.
        let _ = self.layout.send(layout.clone());
    }

    /// Tells the user index which events were not stored (ids stored already), once the
    /// others are: their entries go.
    pub(super) fn skipped(&self, seqs: &[u64]) {
        let _ = self.skipped.send(seqs.to_vec());
    }

    /// Waits for the user index to commit the batch's entries.
    pub(super) fn entries_stored(self) -> Result<()> {
        match self.stored.recv() {
            Ok(outcome) => outcome.context("storing the batch's user-index entries"),
            Err(_) => Err(anyhow!("the user index's writer thread has stopped")),
        }
    }
}

/// Opens (creating, or building again from the events, if needed) the user index's file of
/// the store at `events_path`, whose migrations have run.
pub(super) fn open(events_path: &Path, sweep: Sweep) -> Result<UserWriter> {
    let users_path = path(events_path);
    // A smaller cache than the events': what it rereads is the recent level (a few MB),
    // while each page of the main level is swept about once in a while. With 32 MiB the
    // server's peak RSS under sustained load was 235-286 MB, with 8 MiB 188-231 MB, at the
    // same rates.
    let mut connection = super::open_writer_connection(&users_path, 8)
        .with_context(|| format!("opening the user index at {}", users_path.display()))?;
    // The events' tables: the partitions, a build from the events, retention's trim of
    // entries whose events are gone.
    connection.execute(
        &format!("ATTACH DATABASE ? AS {EVENTS_SCHEMA}"),
        [events_path.to_string_lossy()],
    )?;
    let tx = connection.transaction()?;
    let layout = partitions::layout(&tx)?;
    let built = tx
        .query_row(
            "SELECT 1 FROM main.sqlite_schema WHERE name = 'users_progress'",
            [],
            |_| Ok(()),
        )
        .is_ok();
    user_index::TABLES.create(&tx, "main.user_index_recent")?;
    drop_stale_tables(&tx, &layout)?;
    // A partition without its table of the service index: the file is from before that
    // index moved here (or the table was lost).
    let mut services_missing = Vec::new();
    for range in layout.ranges() {
        if !has_table(&tx, &Partition { range }.services_table())? {
            services_missing.push(range);
        }
        create_main_tables(&tx, range)?;
    }
    if !built {
        build_from_events(&tx, &layout)?;
    } else {
        for range in services_missing {
            let partition = Partition { range };
            service_index::TABLES.fill(
                &tx,
                &format!("main.{}", partition.services_table()),
                &format!("{EVENTS_SCHEMA}.{}", partition.events_table()),
            )?;
        }
    }
    tx.commit()?;
    let sweeper = Sweeper::new(&connection, sweep)?;
    Ok(UserWriter {
        connection,
        sweeper,
        layout,
    })
}

/// Whether the main level holds an entry, within `tx`.
fn in_main_level(tx: &Transaction, layout: &Layout, (user_id, ts, seq): Entry) -> Result<bool> {
    let Some(range) = layout.covering(ts) else {
        return Ok(false);
    };
    let found = tx
        .prepare_cached(&format!(
            "SELECT 1 FROM main.{} WHERE user_id = ? AND ts = ? AND seq = ?",
            Partition { range }.users_table()
        ))?
        .exists(params![user_id, ts, seq])?;
    Ok(found)
}

/// Deletes an entry from the recent level or, when it is not there and `main` is given,
/// from that partition's main level, within `tx`; returns how many recent entries went.
fn delete_entry(tx: &Transaction, main: Option<Partition>, key: Entry) -> Result<usize> {
    let recent = user_index::TABLES.delete(tx, user_index::RECENT, key)?;
    if let (0, Some(partition)) = (recent, main) {
        user_index::TABLES.delete(tx, &format!("main.{}", partition.users_table()), key)?;
    }
    Ok(recent)
}

/// Whether `tx`'s main database has a table called `name`.
fn has_table(tx: &Transaction, name: &str) -> Result<bool> {
    let found = tx
        .prepare_cached("SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?")?
        .exists([name])?;
    Ok(found)
}

/// Drops, within `tx`, the tables of partitions that are gone (main level of the user index,
/// service index): retention dropped them from the events' database, and the process
/// stopped before it dropped their entries.
fn drop_stale_tables(tx: &Transaction, layout: &Layout) -> Result<()> {
    let current: HashSet<String> = layout
        .ranges()
        .flat_map(|range| {
            let partition = Partition { range };
            [partition.users_table(), partition.services_table()]
        })
        .collect();
    let mut tables = user_index::TABLES.names(tx)?;
    tables.extend(service_index::TABLES.names(tx)?);
    let stale = tables
        .into_iter()
        .filter(|table| table != user_index::RECENT && !current.contains(table));
    for table in stale {
        tx.execute_batch(&format!("DROP TABLE main.{table}"))?;
    }
    Ok(())
}

/// Creates, within `tx`, a partition's tables in this file (unless they exist): its main
/// level of the user index and its table of the service index.
fn create_main_tables(tx: &Transaction, range: TimeRange) -> Result<()> {
    let partition = Partition { range };
    user_index::TABLES.create(tx, &format!("main.{}", partition.users_table()))?;
    service_index::TABLES.create(tx, &format!("main.{}", partition.services_table()))
}

/// Fills the main level of the user index and the service index from the events of every
/// partition, in key order, in place of whatever they held, and records the events'
/// position as the last seq held, within `tx`.
fn build_from_events(tx: &Transaction, layout: &Layout) -> Result<()> {
    tx.execute("DELETE FROM main.user_index_recent", [])?;
    for range in layout.ranges() {
        let partition = Partition { range };
        let events = format!("{EVENTS_SCHEMA}.{}", partition.events_table());
        for (index, table) in [
            (&user_index::TABLES, partition.users_table()),
            (&service_index::TABLES, partition.services_table()),
        ] {
            let table = format!("main.{table}");
            tx.execute(&format!("DELETE FROM {table}"), [])?;
            index.fill(tx, &table, &events)?;
        }
    }
    tx.execute_batch(&format!(
        "CREATE TABLE main.users_progress (
            only INTEGER PRIMARY KEY CHECK (only = 0),
            indexed_seq INTEGER NOT NULL
        );
        INSERT INTO main.users_progress
            SELECT 0, value FROM {EVENTS_SCHEMA}.progress WHERE name = 'indexed_seq';"
    ))?;
    Ok(())
}

/// Adds, within `tx`, the service-index entries of `events` (each in the table of the
/// partition of `layout` covering it); returns the seqs whose entries were not there already.
/// Those of events past `held` (the last seq the file holds) are new: they go in many per
/// statement, a partition's run at a time.
fn add_service_entries(
    tx: &Transaction,
    layout: &Layout,
    events: &[StoredEvent],
    held: u64,
) -> Result<Vec<u64>> {
    let mut added = Vec::new();
    let mut new_entries: Vec<(TimeRange, Entry)> = Vec::new();
    // The partition of the event before.
    let mut last_range: Option<TimeRange> = None;
    for event in events {
        let Some(service) = &event.service else {
            continue;
        };
        let range = match last_range {
            Some(range) if range.covers(event.timestamp_ms) => range,
            _ => layout
                .covering(event.timestamp_ms)
                .ok_or_else(|| anyhow!("no partition covers the event of seq {}", event.seq))?,
        };
        last_range = Some(range);
        let entry = (service.as_str(), event.timestamp_ms, event.seq as i64);
        if event.seq > held {
            new_entries.push((range, entry));
        } else if service_index::TABLES.insert(tx, &services_table(range), entry)? {
            added.push(event.seq);
        }
    }
    for run in new_entries.chunk_by(|(a, _), (b, _)| a == b) {
        let entries: Vec<Entry> = run.iter().map(|&(_, entry)| entry).collect();
        service_index::TABLES.insert_new(tx, &services_table(run[0].0), &entries)?;
        added.extend(entries.iter().map(|&(_, _, seq)| seq as u64));
    }
    Ok(added)
}

/// The service index's table of the partition of `range`, as this file's connection names it.
fn services_table(range: TimeRange) -> String {
    format!("main.{}", Partition { range }.services_table())
}

/// The last seq whose entry the file holds (every seq up to it is indexed here).
pub(super) fn held_seq(connection: &Connection) -> Result<u64> {
    let seq: i64 = connection.query_row("SELECT indexed_seq FROM users_progress", [], |row| {
        row.get(0)
    })?;
    Ok(seq as u64)
}

impl UserWriter {
    /// Stores the user-index entries of a batch the events' writer is storing at the same
    /// time (see the module's documentation); tells it the outcome through `handoff`.
    pub(super) fn append(&mut self, events: &[StoredEvent], indexed_seq: u64, handoff: UsersSide) {
        let outcome = self.append_in_transaction(events, indexed_seq, &handoff);
        // Gone: the events' write failed already, which is what the store reports.
        let _ = handoff.stored.send(outcome);
    }

    fn append_in_transaction(
        &mut self,
        events: &[StoredEvent],
        indexed_seq: u64,
        handoff: &UsersSide,
    ) -> Result<()> {
        let tx = self.connection.transaction()?;
        let held = held_seq(&tx)?;
        // The seqs whose entries this batch added.
        let mut added_seqs = Vec::new();
        {
            // Entries of events past the last seq held, in neither level yet: added many
            // per statement once the others are in.
            let mut new_entries = Vec::with_capacity(events.len());
            for event in events {
                let Some(user_id) = &event.user_id else {
                    continue;
                };
                let key = (user_id.as_str(), event.timestamp_ms, event.seq as i64);
                if event.seq > held {
                    new_entries.push(key);
                    continue;
                }
                // At or before the last seq held: replayed after a crash, or retried after
                // the events failed. An entry swept into the main level already must not
                // go into the recent one too.
                if in_main_level(&tx, &self.layout, key)? {
                    continue;
                }
                if user_index::TABLES.insert(&tx, user_index::RECENT, key)? {
                    added_seqs.push(event.seq);
                }
            }
            user_index::TABLES.insert_new(&tx, user_index::RECENT, &new_entries)?;
            added_seqs.extend(new_entries.iter().map(|&(_, _, seq)| seq as u64));
        }
        let added = added_seqs.len();
        let gone = || anyhow!("the events' writer failed to store the batch");
        let layout = handoff.layout.recv().map_err(|_| gone())?;
        for range in layout.ranges() {
            if self.layout.covering(range.start_ms) != Some(range) {
                create_main_tables(&tx, range)?;
            }
        }
        let added_services = add_service_entries(&tx, &layout, events, held)?;
        let swept = self.sweeper.sweep(&tx, added, &layout)?;
        // Events not stored as their ids were: the entries this batch added for them go.
        // (A replayed event is skipped too, but its entries were there before.)
        let skipped = handoff.skipped.recv().map_err(|_| gone())?;
        let mut removed = 0;
        if !skipped.is_empty() {
            let skipped: HashSet<u64> = skipped.into_iter().collect();
            let added: HashSet<u64> = added_seqs.into_iter().collect();
            let added_services: HashSet<u64> = added_services.into_iter().collect();
            for event in events.iter().filter(|event| skipped.contains(&event.seq)) {
                let partition = layout
                    .covering(event.timestamp_ms)
                    .map(|range| Partition { range });
                if let (Some(user_id), true) = (&event.user_id, added.contains(&event.seq)) {
                    let key = (user_id.as_str(), event.timestamp_ms, event.seq as i64);
                    removed += delete_entry(&tx, partition, key)?;
                }
                if let (Some(service), Some(partition), true) = (
                    &event.service,
                    partition,
                    added_services.contains(&event.seq),
                ) {
                    let key = (service.as_str(), event.timestamp_ms, event.seq as i64);
                    let table = format!("main.{}", partition.services_table());
                    service_index::TABLES.delete(&tx, &table, key)?;
                }
            }
        }
        tx.prepare_cached("UPDATE users_progress SET indexed_seq = max(indexed_seq, ?)")?
            .execute([indexed_seq as i64])?;
        tx.commit()?;
        self.sweeper.committed(swept);
        self.sweeper.removed(removed);
        self.layout = layout;
        Ok(())
    }

    /// Drops the tables of a partition retention dropped, and its recent entries.
    pub(super) fn drop_partition(&mut self, range: TimeRange) -> Result<()> {
        let tx = self.connection.transaction()?;
        let partition = Partition { range };
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS main.{}; DROP TABLE IF EXISTS main.{};",
            partition.users_table(),
            partition.services_table()
        ))?;
        let removed = tx.execute(
            "DELETE FROM user_index_recent WHERE ts >= ? AND ts < ?",
            params![range.start_ms, range.end_ms],
        )?;
        tx.commit()?;
        self.sweeper.removed(removed);
        self.layout.remove(range);
        Ok(())
    }

    /// Deletes the entries of events retention deleted from `partition`: from the service
    /// index, and from the user index wherever each is when `anywhere` (a trim's last step),
    /// else in the recent level only (the main level's are deleted in key order afterwards,
    /// by [`trim`](Self::trim); see [`retention`](super::retention)). A service's entries
    /// are in time order, so those of the oldest events are a few pages at the start of
    /// each service's run.
    pub(super) fn delete_entries(
        &mut self,
        partition: Partition,
        entries: &[OwnedEntry],
        services: &[OwnedEntry],
        anywhere: bool,
    ) -> Result<()> {
        let tx = self.connection.transaction()?;
        let main = anywhere.then_some(partition);
        let mut removed = 0;
        for (user_id, ts, seq) in entries {
            removed += delete_entry(&tx, main, (user_id, *ts, *seq))?;
        }
        let services_table = format!("main.{}", partition.services_table());
        for (service, ts, seq) in services {
            service_index::TABLES.delete(&tx, &services_table, (service, *ts, *seq))?;
        }
        tx.commit()?;
        self.sweeper.removed(removed);
        Ok(())
    }

    /// One step of deleting the entries of `partition`'s main level whose events retention
    /// deleted (see [`user_index::trim`]).
    pub(super) fn trim(
        &mut self,
        partition: Partition,
        cutoff_ms: i64,
        after: Option<OwnedEntry>,
        max_rows: usize,
    ) -> Result<(u64, Option<OwnedEntry>)> {
        let tx = self.connection.transaction()?;
        let trimmed = user_index::trim(&tx, partition, cutoff_ms, after.as_ref(), max_rows)?;
        tx.commit()?;
        Ok(trimmed)
    }
}
