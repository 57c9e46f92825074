//! Event counts held in memory: per second for the last hour, per minute for the last 25
//! hours, per hour and per day for the last 62 days, each split by (type, service). Fed with what the store has just
//! indexed, so they always agree with it; rebuilt from the store at start. Only so many
//! types and services are kept apart ([`Names`]), so every bucket holds a bounded number of
//! pairs whatever the input.
//!
//! A range is summed from the coarsest buckets that fit inside it (whole days, whole hours,
//! whole minutes, then seconds at the edges), so even a 24-hour window reads a few dozen.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::names::{NameId, NameLimits, Names};
use crate::store::{floor_to, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};

/// A (type, service) pair, numbered in the order first seen.
pub type PairId = u32;

/// The pairs, as tracked type and service ids: with at most `types` types and `services`
/// services tracked, there are at most (types + 1) x (services + 2) of them (one more for
/// "no service"), whatever the input.
pub struct Pairs {
    pub types: Names,
    pub services: Names,
    ids: HashMap<(NameId, Option<NameId>), PairId>,
    pairs: Vec<(NameId, Option<NameId>)>,
}

impl Pairs {
    pub fn new(limits: NameLimits) -> Pairs {
        Pairs {
            types: Names::new(limits.types),
            services: Names::new(limits.services),
            ids: HashMap::new(),
            pairs: Vec::new(),
        }
    }

    pub fn id(&mut self, kind: &str, service: Option<&str>) -> PairId {
        let key = (
            self.types.id(kind),
            service.map(|service| self.services.id(service)),
        );
        let next = self.pairs.len() as PairId;
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.pairs.push(key);
        }
        id
    }

    /// The type and the service (if any) of `pair`.
    pub fn get(&self, pair: PairId) -> (NameId, Option<NameId>) {
        self.pairs[pair as usize]
    }
}

/// Counts per pair, sorted by pair id: compact (12 bytes a pair) and quick to walk.
#[derive(Default)]
struct Bucket {
    pairs: Vec<PairId>,
    counts: Vec<u64>,
}

impl Bucket {
    fn add(&mut self, pair: PairId, count: u64) {
        match self.pairs.binary_search(&pair) {
            Ok(index) => self.counts[index] += count,
            Err(index) => {
                self.pairs.insert(index, pair);
                self.counts.insert(index, count);
            }
        }
    }
}

/// Buckets of one size, complete for every bucket starting at or after `complete_from`.
struct Level {
    size_ms: i64,
    /// How far back buckets are kept.
    kept_ms: i64,
    /// What `complete_from` is aligned to when old buckets are dropped.
    align_ms: i64,
    complete_from: i64,
    buckets: BTreeMap<i64, Bucket>,
}

/// Buckets this far ahead of the clock (future-dated events) are kept only up to
/// [`MAX_FUTURE_BUCKETS`] per level, so odd timestamps cannot grow memory without bound.
const NEAR_FUTURE_MS: i64 = HOUR_MS;
const MAX_FUTURE_BUCKETS: usize = 10_000;

impl Level {
    fn new(size_ms: i64, kept_ms: i64, align_ms: i64, now_ms: i64) -> Level {
        Level {
            size_ms,
            kept_ms,
            align_ms,
            complete_from: floor_to(now_ms - kept_ms, align_ms),
            buckets: BTreeMap::new(),
        }
    }

    /// Adds `count` for `pair` at `ms`; `false` if the bucket is too far ahead to be kept.
    fn add(&mut self, now_ms: i64, ms: i64, pair: PairId, count: u64) -> bool {
        let start = floor_to(ms, self.size_ms);
        if start < self.complete_from {
            return true;
        }
        let bucket = match self.buckets.get_mut(&start) {
            Some(bucket) => bucket,
            None => {
                let span = (self.kept_ms / self.size_ms) as usize + 2;
                if start > now_ms + NEAR_FUTURE_MS
                    && self.buckets.len() >= span + MAX_FUTURE_BUCKETS
                {
                    return false;
                }
                self.buckets.entry(start).or_default()
            }
        };
        bucket.add(pair, count);
        true
    }

    /// Drops the buckets that end at or before `cutoff_ms` (retention deleted their events).
    fn forget_before(&mut self, cutoff_ms: i64) {
        self.buckets = self.buckets.split_off(&(cutoff_ms - self.size_ms + 1));
    }

    fn prune(&mut self, now_ms: i64) {
        let from = floor_to(now_ms - self.kept_ms, self.align_ms);
        if from > self.complete_from {
            self.buckets = self.buckets.split_off(&from);
            self.complete_from = from;
        }
    }
}

/// The in-memory counts. Not thread-safe by itself: [`super::EventMetrics`] guards it.
pub struct Counts {
    pub pairs: Pairs,
    /// Coarsest first: days, hours, minutes, seconds.
    levels: [Level; 4],
    total: u64,
    /// Counts are complete only for buckets before this (lowered when a far-future bucket
    /// had to be dropped); ranges reaching past it are answered from the store.
    complete_until: i64,
}

/// Seconds cover the last hour and a minute more, so an hour window ending at any second
/// of the current minute is exact.
const SECONDS_KEPT_MS: i64 = HOUR_MS + MINUTE_MS;
/// Minutes cover the last 24 hours and one more, aligned to the hour.
const MINUTES_KEPT_MS: i64 = 25 * HOUR_MS;
/// Hours and days cover the last 62 days, aligned to the day: the default time series of
/// 60 hours or 60 days is read from memory.
const HOURS_KEPT_MS: i64 = 62 * DAY_MS;

impl Counts {
    pub fn new(now_ms: i64, limits: NameLimits) -> Counts {
        Counts {
            pairs: Pairs::new(limits),
            levels: [
                Level::new(DAY_MS, HOURS_KEPT_MS, DAY_MS, now_ms),
                Level::new(HOUR_MS, HOURS_KEPT_MS, DAY_MS, now_ms),
                Level::new(MINUTE_MS, MINUTES_KEPT_MS, HOUR_MS, now_ms),
                Level::new(SECOND_MS, SECONDS_KEPT_MS, SECOND_MS, now_ms),
            ],
            total: 0,
            complete_until: i64::MAX,
        }
    }

    /// Counts that hold no range: every question goes to the store.
    pub fn holding_nothing(now_ms: i64, limits: NameLimits) -> Counts {
        Counts {
            complete_until: i64::MIN,
            ..Counts::new(now_ms, limits)
        }
    }

    /// Where the per-second counts start: windows starting earlier are counted by minute.
    pub fn seconds_from(&self) -> i64 {
        self.levels[3].complete_from
    }

    /// Where the per-minute counts start.
    pub fn minutes_from(&self) -> i64 {
        self.levels[2].complete_from
    }

    /// Where the per-hour and per-day counts start.
    pub fn hours_from(&self) -> i64 {
        self.levels[1].complete_from
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// Counts `count` events of `pair` at `ms` per day and per hour (for counts read from
    /// the hourly rollups at start).
    pub fn add_hours(&mut self, now_ms: i64, ms: i64, pair: PairId, count: u64) {
        self.add_to_levels(0..2, now_ms, ms, pair, count);
    }

    /// Counts `count` events of `pair` at `ms` per minute.
    pub fn add_minutes(&mut self, now_ms: i64, ms: i64, pair: PairId, count: u64) {
        self.add_to_levels(2..3, now_ms, ms, pair, count);
    }

    /// Counts `count` events of `pair` at `ms` per second.
    pub fn add_seconds(&mut self, now_ms: i64, ms: i64, pair: PairId, count: u64) {
        self.add_to_levels(3..4, now_ms, ms, pair, count);
    }

    fn add_to_levels(
        &mut self,
        levels: Range<usize>,
        now_ms: i64,
        ms: i64,
        pair: PairId,
        count: u64,
    ) {
        for level in &mut self.levels[levels] {
            if !level.add(now_ms, ms, pair, count) {
                self.complete_until = self.complete_until.min(floor_to(ms, level.size_ms));
            }
        }
    }

    /// Counts newly stored events, given as `(timestamp, pair)`; also drops buckets that
    /// aged out.
    #[cfg(test)]
    fn add_events(&mut self, now_ms: i64, events: impl IntoIterator<Item = (i64, PairId)>) {
        let mut per_second: HashMap<(i64, PairId), u64> = HashMap::new();
        for (ms, pair) in events {
            *per_second
                .entry((floor_to(ms, SECOND_MS), pair))
                .or_default() += 1;
        }
        let counted = per_second
            .into_iter()
            .map(|((second, pair), count)| (second, pair, count))
            .collect();
        self.add_counted(now_ms, counted);
    }

    /// Counts newly stored events already counted per `(second, pair)`; also drops buckets
    /// that aged out.
    pub fn add_counted(&mut self, now_ms: i64, mut counted: Vec<(i64, PairId, u64)>) {
        // Oldest first: if far-future buckets must be dropped, the furthest go.
        counted.sort_unstable_by_key(|(second, pair, _)| (*second, *pair));
        for (second, pair, count) in counted {
            self.total += count;
            self.add_to_levels(0..4, now_ms, second, pair, count);
        }
        for level in &mut self.levels {
            level.prune(now_ms);
        }
    }

    /// Forgets what retention deleted: `events` events, and every bucket that ends at or
    /// before `cutoff_ms` (as the store forgets its rollups).
    pub fn forget_before(&mut self, cutoff_ms: i64, events: u64) {
        self.total = self.total.saturating_sub(events);
        for level in &mut self.levels {
            level.forget_before(cutoff_ms);
        }
    }

    /// Calls `visit` with every (pair, count) of the buckets that together make up
    /// `[from, to)`: whole days, hours and minutes where they fit, seconds at the edges (a
    /// pair may come several times). `false`, having visited nothing, when part of the range
    /// is not held (too old, or past a dropped far-future bucket); both ends must be whole
    /// seconds.
    pub fn visit(&self, from: i64, to: i64, mut visit: impl FnMut(PairId, u64)) -> bool {
        let mut ranges = Vec::new();
        if to > self.complete_until || !self.plan(0, from, to, &mut ranges) {
            return false;
        }
        for (index, first, end) in ranges {
            for (_, bucket) in self.levels[index].buckets.range(first..end) {
                for (pair, count) in bucket.pairs.iter().zip(&bucket.counts) {
                    visit(*pair, *count);
                }
            }
        }
        true
    }

    /// The bucket ranges, as (level, first, end), that make up `[from, to)`.
    fn plan(&self, index: usize, from: i64, to: i64, ranges: &mut Vec<(usize, i64, i64)>) -> bool {
        if from >= to {
            return true;
        }
        let level = &self.levels[index];
        let finest = index + 1 == self.levels.len();
        let size = level.size_ms;
        let (first, end) = if finest {
            (from, to)
        } else {
            (floor_to(from + size - 1, size), floor_to(to, size))
        };
        if first >= end {
            return self.plan(index + 1, from, to, ranges);
        }
        if first < level.complete_from {
            return false;
        }
        ranges.push((index, first, end));
        finest
            || (self.plan(index + 1, from, first, ranges) && self.plan(index + 1, end, to, ranges))
    }

    /// The number of pairs seen: pair ids are below it.
    pub fn pair_count(&self) -> usize {
        self.pairs.pairs.len()
    }

    /// Counts of `[from, to)` by pair; see [`visit`](Self::visit).
    #[cfg(test)]
    fn sum(&self, from: i64, to: i64) -> Option<HashMap<PairId, u64>> {
        let mut out = HashMap::new();
        self.visit(from, to, |pair, count| {
            *out.entry(pair).or_default() += count
        })
        .then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names::OTHER;

    const NOW: i64 = 1_700_000_000_000 + 12_345; // mid-minute
    const LIMITS: NameLimits = NameLimits {
        types: 1_000,
        services: 1_000,
    };

    fn counts_with(events: &[(i64, &str)]) -> Counts {
        let mut counts = Counts::new(NOW, LIMITS);
        let events: Vec<(i64, PairId)> = events
            .iter()
            .map(|(ms, kind)| (*ms, counts.pairs.id(kind, None)))
            .collect();
        counts.add_events(NOW, events);
        counts
    }

    fn total(sum: Option<HashMap<PairId, u64>>) -> Option<u64> {
        sum.map(|sum| sum.values().sum())
    }

    #[test]
    fn sums_windows_exactly_at_their_edges() {
        let second = floor_to(NOW, SECOND_MS);
        let events = [
            (second - 3_599_000, "a"), // first second of an hour window ending now
            (second - 3_600_000, "a"), // just before it
            (second - 61_000, "b"),
            (second, "c"),
            (NOW + 2 * HOUR_MS, "future"),
        ];
        let counts = counts_with(&events);
        let end = second + SECOND_MS;
        assert_eq!(total(counts.sum(end - 3_600_000, end)), Some(3));
        assert_eq!(total(counts.sum(end - 60_000, end)), Some(1));
        assert_eq!(total(counts.sum(end - 62_000, end)), Some(2));
        assert_eq!(total(counts.sum(end - 3_601_000, end)), Some(4));
        assert_eq!(total(counts.sum(end, end + 3 * HOUR_MS)), Some(1));
        assert_eq!(counts.total(), 5);
    }

    #[test]
    fn every_split_of_a_range_agrees_with_a_plain_count() {
        let base = floor_to(NOW, HOUR_MS) - 20 * HOUR_MS;
        let events: Vec<(i64, &str)> = (0..2_000)
            .map(|i| {
                (
                    base + (i * 37_123) % (21 * HOUR_MS),
                    if i % 3 == 0 { "x" } else { "y" },
                )
            })
            .collect();
        let counts = counts_with(&events);
        let bounds = [0, 1, 59, 60, 61, 3_599, 3_600, 3_601, 7_777, 36_000, 75_599];
        for &a in &bounds {
            for &b in &bounds {
                let (from, to) = (base + a * 1_000, base + b * 1_000 + HOUR_MS);
                let expected = events
                    .iter()
                    .filter(|(ms, _)| (from..to).contains(ms))
                    .count() as u64;
                if from < counts.seconds_from() && (from % MINUTE_MS != 0 || to % MINUTE_MS != 0) {
                    continue; // not held per second: the caller counts by minute there
                }
                assert_eq!(total(counts.sum(from, to)), Some(expected), "{a} {b}");
            }
        }
    }

    #[test]
    fn ranges_not_held_are_refused() {
        let counts = counts_with(&[]);
        assert_eq!(total(counts.sum(NOW - 30 * HOUR_MS, NOW)), None);
        let second = floor_to(NOW, SECOND_MS);
        assert_eq!(total(counts.sum(second - 2 * HOUR_MS, second)), None);
        let minute = floor_to(NOW, MINUTE_MS);
        assert_eq!(total(counts.sum(minute - 2 * HOUR_MS, minute)), Some(0));
    }

    #[test]
    fn far_future_buckets_are_bounded() {
        let mut counts = Counts::new(NOW, LIMITS);
        let pair = counts.pairs.id("t", Some("s"));
        let far = floor_to(NOW + 10 * 365 * 24 * HOUR_MS, HOUR_MS);
        counts.add_events(NOW, (0..30_000).map(|i| (far + i * HOUR_MS, pair)));
        assert!(counts
            .levels
            .iter()
            .all(|level| level.buckets.len() < 20_000));
        assert_eq!(total(counts.sum(far, far + 1_000)), Some(1));
        assert_eq!(total(counts.sum(far, far + 30_000 * HOUR_MS)), None);
        let second = floor_to(NOW, SECOND_MS);
        assert_eq!(total(counts.sum(second - 60_000, second)), Some(0));
    }

    #[test]
    fn pairs_tell_no_service_from_empty_service() {
        let mut pairs = Pairs::new(LIMITS);
        let none = pairs.id("t", None);
        let empty = pairs.id("t", Some(""));
        assert_ne!(none, empty);
        assert_eq!(pairs.id("t", None), none);
        assert_eq!(pairs.id("t", Some("")), empty);
        let (kind, service) = pairs.get(empty);
        assert_eq!(pairs.services.name(service.unwrap()), "");
        assert_eq!(pairs.types.name(kind), "t");
        assert_eq!(pairs.get(none).1, None);
    }

    #[test]
    fn pairs_stay_bounded_whatever_the_names() {
        let mut counts = Counts::new(
            NOW,
            NameLimits {
                types: 10,
                services: 20,
            },
        );
        let events: Vec<(i64, PairId)> = (0..50_000)
            .map(|i| {
                let service = (i % 3 > 0).then(|| format!("s{i}"));
                (
                    NOW - i,
                    counts.pairs.id(&format!("t{i}"), service.as_deref()),
                )
            })
            .collect();
        counts.add_events(NOW, events);
        assert!(counts.pair_count() <= 11 * 22, "{}", counts.pair_count());
        assert!(counts.pairs.types.folded() && counts.pairs.services.folded());
        // Every event is still counted, the folded ones under OTHER.
        assert_eq!(total(counts.sum(NOW - HOUR_MS, NOW + 1)), Some(50_000));
        let other = counts.pairs.id("a new type", Some("a new service"));
        assert_eq!(counts.pairs.get(other), (0, Some(0)));
        assert_eq!(counts.pairs.types.name(0), OTHER);
    }
}
