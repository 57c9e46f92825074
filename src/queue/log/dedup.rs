//! The in-memory set of recently accepted client ids that makes idempotency cheap: a lookup
//! here replaces a random-order index probe on the ingest path. Bounded by a window and a
//! capacity; the store's unique id index catches what has aged out of it.
//!
//! Each id is kept with a hash of its event's content ([`crate::record::content_hash`]), so
//! that a repeated id tells a retry (a duplicate) from another event under a reused id (a
//! conflict). Either way the first version stays.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::record::UNKNOWN_CONTENT;

/// A client id's 128-bit hash as two words: a `u128` is 16-byte aligned, which would pad
/// every entry of the table (with its 8-byte content hash) and of the queue from 24 to 32
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u64; 2]);

impl Key {
    fn new(id_hash: u128) -> Key {
        Key([id_hash as u64, (id_hash >> 64) as u64])
    }
}

impl Hash for Key {
    /// The words are already uniform hashes: one of them is hash enough.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// Takes [`Key`]'s word as it is: hashing a hash again would be wasted work.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
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

pub struct RecentIds {
    /// Client id hash → content hash.
    ids: HashMap<Key, u64, BuildHasherDefault<PassThroughHasher>>,
    /// Insertion order with receipt times, for eviction by age and by capacity.
    order: VecDeque<(i64, Key)>,
    capacity: usize,
    window_ms: i64,
}

impl RecentIds {
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        RecentIds {
            ids: HashMap::default(),
            order: VecDeque::new(),
            capacity,
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
        match self.ids.entry(key) {
            Entry::Occupied(first) => {
                let first = *first.get();
                if first == content_hash || first == UNKNOWN_CONTENT {
                    Seen::Duplicate
                } else {
                    Seen::Conflict
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(content_hash);
                self.order.push_back((received_at_ms, key));
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
    /// Called for them newest first: each is then the newest in the insertion order, and
    /// leaves it too (an entry left there would evict the id early once retried).
    pub fn forget(&mut self, id_hash: u128) {
        let key = Key::new(id_hash);
        self.ids.remove(&key);
        if self.order.back().is_some_and(|&(_, newest)| newest == key) {
            self.order.pop_back();
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn evict(&mut self, now_ms: i64) {
        let oldest_kept = now_ms.saturating_sub(self.window_ms);
        while let Some(&(received_at, key)) = self.order.front() {
            if received_at >= oldest_kept && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&key);
        }
    }
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
    fn ids_older_than_the_window_are_forgotten() {
        let mut ids = RecentIds::new(10, 1_000);
        assert_eq!(ids.insert(1, 7, 0), Seen::New);
        assert_eq!(
            ids.insert(1, 8, 1_001),
            Seen::New,
            "outside the window it is new again"
        );
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

    #[test]
    fn forgotten_ids_are_new_again_with_a_full_window() {
        let mut ids = RecentIds::new(10, 1_000);
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
        assert_eq!(ids.insert(5, 7, 900), Seen::New);
        // The failed commit's entry (at 0) is gone from the order: the retry's, at 900,
        // still holds at 1_500.
        assert_eq!(ids.insert(5, 7, 1_500), Seen::Duplicate);
        assert_eq!(ids.insert(4, 7, 1_500), Seen::New, "4 aged out");
    }
}
