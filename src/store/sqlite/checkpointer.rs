//! The checkpointer: a thread with a connection of its own that copies the WAL's pages into
//! the database about once a second, so the writer thread does not.
//!
//! A checkpoint ends with a flush of the database, which waits for every page the copy
//! dirtied to reach the disk: done by the writer at a commit, as SQLite's automatic
//! checkpoint does, it held up indexing for a tenth to a fifth of the writer's time under
//! sustained load (the writer spent most of its waits there). Here the copy and the flush
//! overlap the writer's next batches. The writer keeps an automatic checkpoint at a larger
//! size as a bound on the WAL ([`WAL_BOUND_PAGES`]): a checkpoint running beside the writer
//! rarely finds nothing more to copy, and the WAL only starts over once one has copied
//! everything. That bounding checkpoint still runs every 400 MiB, but finds most pages
//! copied and flushed already: under sustained load the writer's own flushes took 57 ms in
//! 10 s (README, the seventh pass against the ceiling).

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::thread::StoreThread;

/// How often the checkpointer copies what was committed since its last pass: at the
/// sustained rate, about the 100 MiB of WAL between the automatic checkpoints this replaces,
/// so that a page rewritten by batch after batch is copied about once.
const EVERY: Duration = Duration::from_secs(1);

/// The writer's own automatic checkpoint, in pages (16 KiB): 400 MiB of WAL.
pub(super) const WAL_BOUND_PAGES: u32 = 25_600;

/// The checkpointer's thread: it stops, and is waited for, when dropped (nothing is ever
/// sent to it).
pub(super) type Checkpointer = StoreThread<()>;

/// Starts the checkpointer of the database at `path` (created and in WAL mode already).
pub(super) fn spawn(path: &Path) -> Result<Checkpointer> {
    let connection = Connection::open(path)
        .with_context(|| format!("opening a checkpointer on {}", path.display()))?;
    StoreThread::spawn("eventide-checkpointer", move |stopped| {
        let mut failing = false;
        // Ends when the sender is dropped.
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
            failing = checkpoint(&connection, failing);
        }
    })
}

/// Copies what it can without waiting for the writer or for readers (`PASSIVE`); what it
/// cannot is copied by a later pass. Returns whether it failed, logging once per stretch of
/// failures (`failing`: the previous pass failed) and again when they end.
fn checkpoint(connection: &Connection, failing: bool) -> bool {
    let result = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match &result {
        // The writer's automatic checkpoint still bounds the WAL; its commits report a
        // failing disk.
        Err(err) if !failing => tracing::warn!(error = %err, "store checkpoints failing"),
        Ok(_) if failing => tracing::info!("store checkpoints working again"),
        _ => {}
    }
    result.is_err()
}
