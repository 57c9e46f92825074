//! The in-memory set of recently accepted client ids that makes idempotency cheap: a lookup
//! here replaces a random-order index probe on the ingest path. Bounded by a window and a
//! capacity; the store's unique id index catches what has aged out of it.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are already uniform 128-bit hashes, so hashing them again would be wasted work.
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
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

pub struct RecentIds {
    ids: HashSet<u128, BuildHasherDefault<PassThroughHasher>>,
    /// Insertion order with receipt times, for eviction by age and by capacity.
    order: VecDeque<(i64, u128)>,
    capacity: usize,
    window_ms: i64,
}

impl RecentIds {
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        RecentIds {
            ids: HashSet::default(),
            order: VecDeque::new(),
            capacity,
            window_ms,
        }
    }

    /// Records `id_hash` as accepted at `received_at_ms`; `false` if it was already there
    /// (a duplicate).
    pub fn insert(&mut self, id_hash: u128, received_at_ms: i64) -> bool {
        if self.capacity == 0 {
            return true; // deduplication from memory is switched off
        }
        self.evict(received_at_ms);
        if !self.ids.insert(id_hash) {
            return false;
        }
        self.order.push_back((received_at_ms, id_hash));
        true
    }

    /// Forgets ids recorded by a commit that then failed, so a retry is not a duplicate.
    pub fn remove(&mut self, id_hash: u128) {
        self.ids.remove(&id_hash);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn evict(&mut self, now_ms: i64) {
        let oldest_kept = now_ms.saturating_sub(self.window_ms);
        while let Some(&(received_at, hash)) = self.order.front() {
            if received_at >= oldest_kept && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_a_duplicate() {
        let mut ids = RecentIds::new(10, 1_000);
        assert!(ids.insert(1, 0));
        assert!(!ids.insert(1, 10));
        assert!(ids.insert(2, 10));
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten() {
        let mut ids = RecentIds::new(10, 1_000);
        assert!(ids.insert(1, 0));
        assert!(ids.insert(1, 1_001), "outside the window it is new again");
    }

    #[test]
    fn capacity_bounds_memory() {
        let mut ids = RecentIds::new(3, i64::MAX);
        for id in 0..10 {
            assert!(ids.insert(id, 0));
        }
        assert_eq!(ids.len(), 3);
        assert!(!ids.insert(9, 0), "the newest are kept");
        assert!(ids.insert(0, 0), "the oldest were evicted");
    }

    #[test]
    fn removed_ids_are_accepted_again() {
        let mut ids = RecentIds::new(10, 1_000);
        assert!(ids.insert(5, 0));
        ids.remove(5);
        assert!(ids.insert(5, 0));
    }
}
