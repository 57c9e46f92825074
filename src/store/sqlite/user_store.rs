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

use super::partitions::{self, Partition};
use super::user_index::{self, Key, Sweep, Sweeper};
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
    user_index::create_table(&tx, "main.user_index_recent")?;
    drop_stale_tables(&tx, &layout)?;
    for range in layout.ranges() {
        create_main_table(&tx, range)?;
    }
    if !built {
        build_from_events(&tx, &layout)?;
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
fn in_main_level(
    tx: &Transaction,
    layout: &Layout,
    (user_id, ts, seq): (&str, i64, i64),
) -> Result<bool> {
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
fn delete_entry(tx: &Transaction, main: Option<Partition>, key: (&str, i64, i64)) -> Result<usize> {
    let recent = user_index::delete(tx, user_index::RECENT, key)?;
    if let (0, Some(partition)) = (recent, main) {
        user_index::delete(tx, &format!("main.{}", partition.users_table()), key)?;
    }
    Ok(recent)
}

/// Drops, within `tx`, the main-level tables of partitions that are gone: retention dropped
/// them from the events' database, and the process stopped before it dropped their entries.
fn drop_stale_tables(tx: &Transaction, layout: &Layout) -> Result<()> {
    let current: HashSet<String> = layout
        .ranges()
        .map(|range| Partition { range }.users_table())
        .collect();
    let stale = user_index::tables(tx)?
        .into_iter()
        .filter(|table| table != user_index::RECENT && !current.contains(table));
    for table in stale {
        tx.execute_batch(&format!("DROP TABLE main.{table}"))?;
    }
    Ok(())
}

fn create_main_table(tx: &Transaction, range: TimeRange) -> Result<()> {
    user_index::create_table(tx, &format!("main.{}", Partition { range }.users_table()))
}

/// Fills the main level from the events of every partition, in key order, in place of
/// whatever either level held, and records the events' position as the last seq held,
/// within `tx`.
fn build_from_events(tx: &Transaction, layout: &Layout) -> Result<()> {
    tx.execute("DELETE FROM main.user_index_recent", [])?;
    for range in layout.ranges() {
        let partition = Partition { range };
        tx.execute(&format!("DELETE FROM main.{}", partition.users_table()), [])?;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO main.{} (user_id, ts, seq)
                 SELECT user_id, ts, seq FROM {EVENTS_SCHEMA}.{} WHERE user_id IS NOT NULL
                 ORDER BY user_id, ts, seq",
                partition.users_table(),
                partition.events_table()
            ),
            [],
        )?;
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
            let mut insert = tx.prepare_cached(user_index::INSERT_RECENT)?;
            for event in events {
                let Some(user_id) = &event.user_id else {
                    continue;
                };
                let key = (user_id.as_str(), event.timestamp_ms, event.seq as i64);
                // At or before the last seq held: replayed after a crash, or retried after
                // the events failed. An entry swept into the main level already must not
                // go into the recent one too.
                if event.seq <= held && in_main_level(&tx, &self.layout, key)? {
                    continue;
                }
                if insert.execute(params![user_id, event.timestamp_ms, event.seq as i64])? > 0 {
                    added_seqs.push(event.seq);
                }
            }
        }
        let added = added_seqs.len();
        let gone = || anyhow!("the events' writer failed to store the batch");
        let layout = handoff.layout.recv().map_err(|_| gone())?;
        for range in layout.ranges() {
            if self.layout.covering(range.start_ms) != Some(range) {
                create_main_table(&tx, range)?;
            }
        }
        let swept = self.sweeper.sweep(&tx, added, &layout)?;
        // Events not stored as their ids were: the entries this batch added for them go.
        // (A replayed event is skipped too, but its entry was there before.)
        let skipped = handoff.skipped.recv().map_err(|_| gone())?;
        let mut removed = 0;
        if !skipped.is_empty() {
            let skipped: HashSet<u64> = skipped.into_iter().collect();
            let added: HashSet<u64> = added_seqs.into_iter().collect();
            let unstored =
                |event: &&StoredEvent| skipped.contains(&event.seq) && added.contains(&event.seq);
            for event in events.iter().filter(unstored) {
                if let Some(user_id) = &event.user_id {
                    let main = layout
                        .covering(event.timestamp_ms)
                        .map(|range| Partition { range });
                    removed +=
                        delete_entry(&tx, main, (user_id, event.timestamp_ms, event.seq as i64))?;
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

    /// Drops the main level of a partition retention dropped, and its recent entries.
    pub(super) fn drop_partition(&mut self, range: TimeRange) -> Result<()> {
        let tx = self.connection.transaction()?;
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS main.{}",
            Partition { range }.users_table()
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

    /// Deletes the entries of events retention deleted from `partition`: wherever each is
    /// when `anywhere` (a trim's last step), else in the recent level only (the main level's
    /// are deleted in key order afterwards, by [`trim`](Self::trim); see
    /// [`retention`](super::retention)).
    pub(super) fn delete_entries(
        &mut self,
        partition: Partition,
        entries: &[Key],
        anywhere: bool,
    ) -> Result<()> {
        let tx = self.connection.transaction()?;
        let main = anywhere.then_some(partition);
        let mut removed = 0;
        for (user_id, ts, seq) in entries {
            removed += delete_entry(&tx, main, (user_id, *ts, *seq))?;
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
        after: Option<Key>,
        max_rows: usize,
    ) -> Result<(u64, Option<Key>)> {
        let tx = self.connection.transaction()?;
        let trimmed = user_index::trim(&tx, partition, cutoff_ms, after.as_ref(), max_rows)?;
        tx.commit()?;
        Ok(trimmed)
    }
}
