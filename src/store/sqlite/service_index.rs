//! The `(service, ts)` index: a table per time partition in the user index's file, written
//! by that file's thread ([`user_store`](super::user_store)).
//!
//! As an index of the events table it was the costliest to keep (1.6-2.4 µs of the events'
//! writer's 6.5-7.3 µs per event, on the store alone), on the thread that sets the sustained
//! rate, while the user index's thread sat idle about half the time. Queries by service read
//! it as the user index is read: joined to the partition's events by seq
//! ([`Through`](super::query::Through)). Services are few,
//! so a batch's entries go to the ends of a few runs of the table: one level is enough,
//! unlike the user index's random-order keys. As there, an entry whose event is not stored
//! is harmless (queries join by seq, and seqs are never reused).

use super::entry_tables::EntryTables;

/// The index's tables, one per partition.
pub(super) const TABLES: EntryTables = EntryTables {
    column: "service",
    prefix: "service_index_",
};
