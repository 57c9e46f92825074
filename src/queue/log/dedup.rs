//! The in-memory set of recently accepted client ids that makes idempotency cheap: a lookup
//! here replaces a random-order index probe on the ingest path. Bounded by a window and a
//! capacity; the store's unique id index catches what has aged out of it.
//!
//! Each id is kept with a hash of its event's content ([`crate::record::content_hash`]), so
//! that a repeated id tells a retry (a duplicate) from another event under a reused id (a
//! conflict). Either way the first version stays.
//!
//! Entries are kept small, since a full set is the largest part of the server's memory after
//! SQLite's caches: the content hash is folded to 32 bits (a conflict passes for a duplicate once in
//! 2^32, and is not stored either way) and the time of acceptance is kept in whole seconds
//! (an id is held for the window and at most a second more).

use std::collections::VecDeque;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::record::UNKNOWN_CONTENT;

/// A client id's 128-bit hash as two words: a `u128` is 16-byte aligned, which would pad
/// every entry of the queue from 32 to 48 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u64; 2]);

impl Key {
    fn new(id_hash: u128) -> Key {
        Key([id_hash as u64, (id_hash >> 64) as u64])
    }

    /// The table's hash: the words are already uniform hashes, one of them is hash enough.
    fn hash(self) -> u64 {
        self.0[0]
    }
}

/// An accepted id, in the order of acceptance: 24 bytes.
struct Accepted {
    key: Key,
    /// [`fold`]ed.
    content_hash: u32,
    /// Seconds since the Unix epoch ([`seconds`]).
    received_at_s: u32,
}

/// [`UNKNOWN_CONTENT`] [`fold`]ed.
const UNKNOWN: u32 = 0;

/// `content_hash` in 32 bits: [`UNKNOWN_CONTENT`] becomes [`UNKNOWN`], any other hash not.
fn fold(content_hash: u64) -> u32 {
    if content_hash == UNKNOWN_CONTENT {
        UNKNOWN
    } else {
        (content_hash as u32).max(1)
    }
}

/// Whole seconds since the Unix epoch of `ms`, clamped to what a `u32` holds (until 2106).
fn seconds(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, u32::MAX.into()) as u32
}

/// What an event's client id is to the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen (within the window and capacity): the event is to be stored.
    New,
    /// Seen with the same content, or with content not known: a retry, not stored again.
    Duplicate,
    /// Seen with other content: not stored, the first version stays.
    Conflict,
}

/// The ids in acceptance order (for eviction by age and by capacity), and a hash table of
/// their places in it. Each place is the id's acceptance number (counted from 0, wrapping
/// at 2^32), so an entry is 24 bytes in the queue and 4 in the table (with a control byte):
/// about 36 MB for 1,000,000 ids, where a map from id to content hash beside the queue took
/// 78 MB.
pub struct RecentIds {
    order: VecDeque<Accepted>,
    table: HashTable<u32>,
    /// The acceptance number of `order`'s first entry.
    first: u32,
    capacity: usize,
    window_ms: i64,
}

impl RecentIds {
    /// A set of at most `capacity` ids (at most 2^32 - 1, some 190 GB: acceptance numbers
    /// wrap at 2^32), each kept for `window_ms`.
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        RecentIds {
            order: VecDeque::new(),
            table: HashTable::new(),
            first: 0,
            capacity: capacity.min(u32::MAX as usize),
            window_ms,
        }
    }

    /// Looks `id_hash` up, and records it as accepted at `received_at_ms` with
    /// `content_hash` if it was not there.
    pub fn insert(&mut self, id_hash: u128, content_hash: u64, received_at_ms: i64) -> Seen {
        if self.capacity == 0 {
            return Seen::New; // deduplication from memory is switched off
        }
        self.evict(received_at_ms);
        let key = Key::new(id_hash);
        let content_hash = fold(content_hash);
        // One probe of the table, whether the id is there or not.
        let entry = self.table.entry(
            key.hash(),
            |&number| at(&self.order, self.first, number).key == key,
            |&number| at(&self.order, self.first, number).key.hash(),
        );
        match entry {
            Entry::Occupied(found) => {
                let held = at(&self.order, self.first, *found.get()).content_hash;
                if held == content_hash || held == UNKNOWN {
                    Seen::Duplicate
                } else {
                    Seen::Conflict
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(self.first.wrapping_add(self.order.len() as u32));
                self.order.push_back(Accepted {
                    key,
                    content_hash,
                    received_at_s: seconds(received_at_ms),
                });
                Seen::New
            }
        }
    }

    /// Records `id_hash` as accepted at `received_at_ms` by an earlier run of the process,
    /// whose content is not known: a repeat counts as a duplicate whatever it holds.
    pub fn remember(&mut self, id_hash: u128, received_at_ms: i64) {
        self.insert(id_hash, UNKNOWN_CONTENT, received_at_ms);
    }

    /// Forgets ids recorded by a commit that then failed, so a retry is not a duplicate.
    /// Called for them newest first: each is then the newest in the order, and leaves it
    /// too (an entry left there would count towards the capacity until it aged out).
    pub fn forget(&mut self, id_hash: u128) {
        let key = Key::new(id_hash);
        let found = self.table.find_entry(key.hash(), |&number| {
            at(&self.order, self.first, number).key == key
        });
        let Ok(found) = found else { return };
        let (number, _) = found.remove();
        if number == self.first.wrapping_add(self.order.len() as u32 - 1) {
            self.order.pop_back();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn evict(&mut self, now_ms: i64) {
        // Rounded down, as acceptance times are: nothing goes before the window has passed.
        let oldest_kept = seconds(now_ms.saturating_sub(self.window_ms));
        while let Some(oldest) = self.order.front() {
            if oldest.received_at_s >= oldest_kept && self.order.len() < self.capacity {
                break;
            }
            let first = self.first;
            // Not there when `forget` removed it and could not take it off the order.
            if let Ok(found) = self.table.find_entry(oldest.key.hash(), |&n| n == first) {
                found.remove();
            }
            self.order.pop_front();
            self.first = first.wrapping_add(1);
        }
    }
}

/// The entry of acceptance number `number` in `order`, whose first entry is number `first`.
fn at(order: &VecDeque<Accepted>, first: u32, number: u32) -> &Accepted {
    &order[number.wrapping_sub(first) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts each `(id, content, at)` in turn, asserting how it is seen.
    fn assert_inserts(ids: &mut RecentIds, steps: &[(u128, u64, i64, Seen)]) {
        for (step, &(id, content, at, want)) in steps.iter().enumerate() {
            let seen = ids.insert(id, content, at);
            assert_eq!(
                seen, want,
                "step {step}: id {id}, content {content}, at {at}"
            );
        }
    }

    #[test]
    fn a_repeated_id_is_a_duplicate_or_a_conflict() {
        let mut ids = RecentIds::new(10, 1_000);
        assert_inserts(
            &mut ids,
            &[
                (1, 7, 0, Seen::New),
                (1, 7, 10, Seen::Duplicate),
                (1, 8, 10, Seen::Conflict),
                (1, 7, 10, Seen::Duplicate), // the first content stays
                (2, 8, 10, Seen::New),
            ],
        );
    }

    #[test]
    fn an_id_of_unknown_content_is_a_duplicate_whatever_comes() {
        let mut ids = RecentIds::new(10, 1_000);
        ids.remember(1, 0);
        assert_eq!(ids.insert(1, 7, 10), Seen::Duplicate);
        assert_eq!(ids.insert(1, 8, 10), Seen::Duplicate);
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten_within_a_second() {
        let mut ids = RecentIds::new(10, 60_000);
        assert_eq!(ids.insert(1, 7, 500), Seen::New);
        // Held in whole seconds: until the window has passed since the second it came in.
        assert_eq!(
            ids.insert(1, 7, 60_500),
            Seen::Duplicate,
            "within the window"
        );
        assert_eq!(
            ids.insert(1, 7, 60_999),
            Seen::Duplicate,
            "a second more at most"
        );
        assert_eq!(
            ids.insert(1, 8, 61_000),
            Seen::New,
            "outside the window it is new again"
        );
    }

    #[test]
    fn folded_content_hashes_keep_unknown_content_apart() {
        assert_eq!(fold(UNKNOWN_CONTENT), 0);
        assert_eq!(
            fold(1 << 32),
            1,
            "a hash is never taken for unknown content"
        );
        assert_eq!(fold(0xdead_beef_0000_0007), 7);
        let mut ids = RecentIds::new(10, 1_000);
        assert_eq!(ids.insert(1, 1 << 32, 0), Seen::New);
        assert_eq!(
            ids.insert(1, 2 << 32, 0),
            Seen::Duplicate,
            "the same low bits"
        );
        assert_eq!(ids.insert(1, 3, 0), Seen::Conflict);
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut ids = RecentIds::new(3, i64::MAX);
        for id in 0..10 {
            assert_eq!(ids.insert(id, 7, 0), Seen::New);
        }
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.insert(9, 7, 0), Seen::Duplicate, "the newest are kept");
        assert_eq!(ids.insert(0, 7, 0), Seen::New, "the oldest were evicted");
    }

    /// The bound `--dedup-capacity` documents: 1,000,000 ids, coming and going, in less
    /// than 37 MB (a table slot is a 4-byte number and a control byte).
    #[test]
    fn a_million_ids_take_less_than_37_mb() {
        let mut ids = RecentIds::new(1_000_000, i64::MAX);
        for n in 0..3_000_000u128 {
            ids.insert(
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                1,
                0,
            );
        }
        assert_eq!(ids.len(), 1_000_000);
        let slots = (ids.table.capacity() * 8 / 7).next_power_of_two();
        let bytes = slots * 5 + ids.order.capacity() * std::mem::size_of::<Accepted>();
        assert!(bytes < 37_000_000, "{bytes} bytes");
    }

    /// An id forgotten while newer ones follow it stays in the order until it ages out, and
    /// then takes nothing with it: not the same id accepted again since.
    #[test]
    fn an_id_forgotten_out_of_order_does_not_evict_its_retry() {
        let mut ids = RecentIds::new(3, i64::MAX);
        assert_inserts(&mut ids, &[(1, 7, 0, Seen::New), (2, 7, 0, Seen::New)]);
        ids.forget(1);
        // The order is then 1 (forgotten), 2 and 1 again: accepting 3 evicts the forgotten
        // entry, and the retry of 1 is still held.
        let retried = [
            (1, 7, 0, Seen::New),
            (3, 7, 0, Seen::New),
            (1, 7, 0, Seen::Duplicate),
        ];
        assert_inserts(&mut ids, &retried);
    }

    #[test]
    fn forgotten_ids_are_new_again_with_a_full_window() {
        let mut ids = RecentIds::new(10, 10_000);
        let at_0 = [
            (4, 7, 0, Seen::New),
            (5, 7, 0, Seen::New),
            (6, 7, 0, Seen::New),
        ];
        assert_inserts(&mut ids, &at_0);
        for id in [6, 5] {
            ids.forget(id);
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.insert(5, 7, 9_000), Seen::New);
        // The failed commit's entry (at 0) is gone from the order: the retry's, at 9_000,
        // still holds at 15_000.
        assert_eq!(ids.insert(5, 7, 15_000), Seen::Duplicate);
        assert_eq!(ids.insert(4, 7, 15_000), Seen::New, "4 aged out");
    }
}
