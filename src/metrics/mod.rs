//! Event metrics: counts over time windows, time series and a summary, answered from counts
//! maintained as events are indexed, never by scanning events.
//!
//! Recent counts live in memory ([`counts`]); older ranges come from the store's rollups
//! (per minute and per hour), which are written in the same transaction as the events. Both are updated only
//! with what the store has committed, so the metrics agree with the queries at every moment.
//!
//! Every answer is bounded whatever the number of distinct types and services: memory keeps
//! only so many apart ([`names`]), and reports list the largest counts and add up the rest
//! under [`OTHER`], whether they come from memory or from the rollups (which keep every
//! name).

pub mod counts;
mod matching;
pub mod names;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::event::timefmt::format_rfc3339_ms;
use crate::event::StoredEvent;
use crate::store::{
    floor_to, RollupQuery, RollupRow, Store, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS,
};
use counts::{Counts, PairId};
use names::{NameId, Names};
pub use names::{NameLimits, OTHER};

/// Windows up to this are counted to the second; longer ones by whole minutes.
pub const MAX_EXACT_WINDOW_SECONDS: u64 = 3_600;
pub const MAX_WINDOW_SECONDS: u64 = 24 * 3_600;
/// Most points (buckets x series) in one time series answer.
pub const MAX_POINTS: usize = 10_000;
/// Most types and services a window report lists by name (each map besides [`OTHER`]). A
/// name is at most 100 characters of at most 6 bytes of JSON each (a control character is
/// written `\u00XX`), so an entry is at most 624 bytes with its 20-digit count, and a report
/// at most 2 x 51 entries, about 64 KB: under 100 KB whatever the names.
pub const MAX_TOP: usize = 50;
/// Services and types the summary lists.
const SUMMARY_TOP: usize = 10;

/// One of [`Counts`]' ways to take counts read from the rollups.
type AddCounts = fn(&mut Counts, i64, i64, PairId, u64);

pub struct EventMetrics {
    counts: Mutex<Counts>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Nothing is counted in memory: everything is read from the store's rollups (an API
    /// node of a cluster, which does not see what the workers store).
    store_only: bool,
    /// How many types and services reports read from the rollups keep apart, as memory
    /// does.
    limits: NameLimits,
}

/// `GET /metrics`: counts of the events whose timestamp lies in the window ending now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "window_seconds": 600, "from": "2024-01-15T10:20:00.000Z", "to": "2024-01-15T10:30:00.123Z",
    "total": 1234, "events_per_second": 2.06,
    "by_type": {"signup": 34, "click": 1200}, "by_service": {"auth": 56, "(other)": 3}
})))]
pub struct WindowReport {
    /// The window asked for, in seconds.
    pub window_seconds: u64,
    /// Where the counted window really starts (whole minutes for windows over an hour).
    #[schema(format = DateTime)]
    pub from: String,
    /// Now.
    #[schema(format = DateTime)]
    pub to: String,
    /// Events in the window.
    pub total: u64,
    /// `total` divided by `window_seconds`.
    pub events_per_second: f64,
    /// Events in the window by type: the `top` largest counts, and under `"(other)"` the
    /// sum of the rest (with the types beyond `--max-tracked-types`), present only when not
    /// 0. The counts add up to `total`.
    pub by_type: BTreeMap<String, u64>,
    /// Events in the window by service, as `by_type` (events without a service are not
    /// here).
    pub by_service: BTreeMap<String, u64>,
    /// Present and `true` when the indexer had not caught up within `--read-wait`: the
    /// counts may miss events acknowledged before the request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The bucket size of a time series (default `minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn millis(self) -> i64 {
        match self {
            Interval::Minute => MINUTE_MS,
            Interval::Hour => HOUR_MS,
            Interval::Day => DAY_MS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

/// One series per event type, per service (events without a service are left out), or
/// one series `all` (`none`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum GroupBy {
    None,
    Type,
    Service,
}

#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub interval: Interval,
    /// Both ends are included: the buckets containing them are the first and the last.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub group_by: GroupBy,
    pub kind: Option<String>,
    pub service: Option<String>,
}

/// `GET /metrics/timeseries`: event counts per bucket, zero-filled, one series per key.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "interval": "hour", "from": "2024-01-15T00:00:00.000Z", "to": "2024-01-15T02:00:00.000Z",
    "series": [{"key": "all", "points": [["2024-01-15T00:00:00.000Z", 12], ["2024-01-15T01:00:00.000Z", 0]]}]
})))]
pub struct SeriesReport {
    /// The bucket size.
    #[schema(value_type = String, examples("minute", "hour", "day"))]
    pub interval: &'static str,
    /// Start of the first bucket.
    #[schema(format = DateTime)]
    pub from: String,
    /// End of the last bucket (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    /// Largest series first (`(other)` last); `group_by=none` gives the one series `all`.
    pub series: Vec<Series>,
    /// Present and `true` when the indexer had not caught up within `--read-wait`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// `all`, or the type or service the series counts; `(other)`, the last series, sums
    /// the types or services not counted on their own (beyond `--max-tracked-types` or
    /// `--max-tracked-services`).
    pub key: String,
    /// `[bucket start, count]` for every bucket from `from` to `to`.
    pub points: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("'from' is after 'to'")]
    FromAfterTo,
    #[error("the answer would have {points} points, more than {MAX_POINTS}: ask for a shorter range, a longer interval, or filter by type or service")]
    TooManyPoints { points: usize },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// `GET /metrics/summary`: totals, the last hour and 24 hours, the top 10 services and types
/// of the last 24 hours with the sum of the others, and the counts of each of its hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryReport {
    /// Every event stored.
    pub total_events: u64,
    pub events_last_hour: u64,
    pub events_last_24h: u64,
    pub avg_events_per_minute_24h: f64,
    /// The 10 services with the most events in the last 24 hours, most first.
    pub top_services: Vec<ServiceCount>,
    /// Events of the last 24 hours of the other services.
    pub other_services: u64,
    /// The 10 types with the most events in the last 24 hours, most first.
    pub top_types: Vec<TypeCount>,
    /// Events of the last 24 hours of the other types.
    pub other_types: u64,
    /// The 24 hours up to the current one, oldest first.
    pub by_hour: Vec<HourCount>,
    /// Present and `true` when the indexer had not caught up within `--read-wait`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceCount {
    pub service: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HourCount {
    /// Start of the hour.
    #[schema(format = DateTime)]
    pub hour: String,
    pub count: u64,
}

/// Counts of a window by type and by service. Events without a service count in the total
/// and by type, not by service.
struct Tally {
    total: u64,
    by_type: HashMap<String, u64>,
    by_service: HashMap<String, u64>,
}

impl Tally {
    /// The counts of `[from, to)` held in memory, if they are.
    fn from_memory(counts: &Counts, from: i64, to: i64) -> Option<Tally> {
        // Summed per name id in plain arrays first: names are looked up once per name.
        let pairs = &counts.pairs;
        let mut total = 0;
        let mut by_type = vec![0u64; pairs.types.id_count()];
        let mut by_service = vec![0u64; pairs.services.id_count()];
        let held = counts.visit(from, to, |pair, count| {
            let (kind, service) = pairs.get(pair);
            total += count;
            by_type[kind as usize] += count;
            if let Some(service) = service {
                by_service[service as usize] += count;
            }
        });
        held.then(|| Tally {
            total,
            by_type: named(&pairs.types, by_type),
            by_service: named(&pairs.services, by_service),
        })
    }

    /// The counts of `rows`, which name every type and service: as memory would, only the
    /// `limits` largest are kept by name, the others are summed as [`OTHER`].
    fn from_rows(rows: &[RollupRow], limits: NameLimits) -> Tally {
        let mut by_type = HashMap::new();
        let mut by_service = HashMap::new();
        let mut total = 0;
        for row in rows {
            total += row.count;
            add_to(&mut by_type, &row.kind, row.count);
            if let Some(service) = &row.service {
                add_to(&mut by_service, service, row.count);
            }
        }
        Tally {
            total,
            by_type: fold(by_type, limits.types).into_iter().collect(),
            by_service: fold(by_service, limits.services).into_iter().collect(),
        }
    }
}

/// The counts that are not 0 of `counts`, indexed by id of `names`, by name.
fn named(names: &Names, counts: Vec<u64>) -> HashMap<String, u64> {
    counts
        .into_iter()
        .enumerate()
        .filter(|(_, count)| *count > 0)
        .map(|(id, count)| (names.name(id as NameId).to_owned(), count))
        .collect()
}

fn add_to(map: &mut HashMap<String, u64>, key: &str, count: u64) {
    match map.get_mut(key) {
        Some(sum) => *sum += count,
        None => {
            map.insert(key.to_owned(), count);
        }
    }
}

/// The `n` largest counts of `map` (ties by name) other than [`OTHER`]'s, and the sum of the
/// rest, [`OTHER`]'s included.
fn top_and_rest<K>(mut map: HashMap<K, u64>, n: usize) -> (Vec<(K, u64)>, u64)
where
    K: Borrow<str> + Hash + Ord,
{
    let mut rest = map.remove(OTHER).unwrap_or(0);
    let mut all: Vec<(K, u64)> = map.into_iter().collect();
    let by_count = |a: &(K, u64), b: &(K, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if all.len() > n {
        // Only the first `n` need sorting: with many names, most are left out.
        if n > 0 {
            all.select_nth_unstable_by(n - 1, by_count);
        }
        rest += all.drain(n..).map(|(_, count)| count).sum::<u64>();
    }
    all.sort_unstable_by(by_count);
    (all, rest)
}

/// `map` with only its `n` largest counts by name, and the rest under [`OTHER`] if not 0.
fn fold(map: HashMap<String, u64>, n: usize) -> BTreeMap<String, u64> {
    let (top, rest) = top_and_rest(map, n);
    let mut folded: BTreeMap<String, u64> = top.into_iter().collect();
    if rest > 0 {
        folded.insert(OTHER.to_owned(), rest);
    }
    folded
}

/// Registers the names of `rows` in `names` most frequent first, so that those are the ones
/// tracked when there are more than the limit.
fn register_most_frequent<'a>(names: &mut Names, rows: impl Iterator<Item = (&'a str, u64)>) {
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for (name, count) in rows {
        *totals.entry(name).or_default() += count;
    }
    let mut totals: Vec<(&str, u64)> = totals.into_iter().collect();
    totals.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (name, _) in totals {
        names.id(name);
    }
}

/// The series of a time series before their buckets are labelled: key, counts.
type SeriesPoints = Vec<(String, Vec<u64>)>;

/// The buckets of a time series: `count` of `size` from `first`.
struct Buckets {
    first: i64,
    size: i64,
    count: usize,
}

impl Buckets {
    fn end(&self) -> i64 {
        self.first + self.count as i64 * self.size
    }
}

/// The series of `query` that events of `kind` and `service` count in, if they pass its
/// filters.
fn series_key<'a>(query: &SeriesQuery, kind: &'a str, service: Option<&'a str>) -> Option<&'a str> {
    if query.kind.as_deref().is_some_and(|wanted| wanted != kind)
        || query
            .service
            .as_deref()
            .is_some_and(|wanted| Some(wanted) != service)
    {
        return None;
    }
    match query.group_by {
        GroupBy::None => Some("all"),
        GroupBy::Type => Some(kind),
        GroupBy::Service => service,
    }
}

/// Refuses an answer of more than [`MAX_POINTS`] points.
fn check_points(series: usize, buckets: usize) -> Result<(), SeriesError> {
    let points = series * buckets;
    if points > MAX_POINTS {
        return Err(SeriesError::TooManyPoints { points });
    }
    Ok(())
}

impl EventMetrics {
    /// Rebuilds the in-memory counts from `store`: hours and days from the hourly rollups,
    /// minutes from the per-minute ones, the last hour per second from the events. Run
    /// before the indexer starts. When the rollups name more types or services than
    /// `limits`, the most frequent are the ones tracked.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        limits: NameLimits,
    ) -> Result<EventMetrics> {
        let now = clock.now_ms();
        let mut counts = Counts::new(now, limits);
        // Hours and days from the hourly rollups, minutes from the per-minute ones.
        let levels: [(i64, i64, AddCounts); 2] = [
            (counts.hours_from(), HOUR_MS, Counts::add_hours),
            (counts.minutes_from(), MINUTE_MS, Counts::add_minutes),
        ];
        for (from_ms, bucket_ms, add) in levels {
            let query = RollupQuery {
                from_ms,
                to_ms: i64::MAX,
                bucket_ms,
                kind: None,
                service: None,
            };
            let rows = store.rollups(query).await?;
            if bucket_ms == HOUR_MS {
                // The hours cover every range held, so they name every name counted.
                let kinds = rows.iter().map(|row| (row.kind.as_str(), row.count));
                register_most_frequent(&mut counts.pairs.types, kinds);
                let services = rows
                    .iter()
                    .filter_map(|row| Some((row.service.as_deref()?, row.count)));
                register_most_frequent(&mut counts.pairs.services, services);
            }
            for row in rows {
                let pair = counts.pairs.id(&row.kind, row.service.as_deref());
                add(&mut counts, now, row.bucket_ms, pair, row.count);
            }
        }
        for row in store.counts_per_second(counts.seconds_from()).await? {
            let pair = counts.pairs.id(&row.kind, row.service.as_deref());
            counts.add_seconds(now, row.bucket_ms, pair, row.count);
        }
        counts.set_total(store.event_count().await?);
        Ok(EventMetrics {
            counts: Mutex::new(counts),
            store,
            clock,
            store_only: false,
            limits,
        })
    }

    /// Metrics read from the store's rollups alone, in whole minutes (windows of seconds
    /// are rounded out to minutes and report their real `from`), for a process that does
    /// not write the store itself. Reports are folded to `limits` as memory would be.
    pub fn from_store(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        limits: NameLimits,
    ) -> EventMetrics {
        let counts = Counts::holding_nothing(clock.now_ms(), limits);
        EventMetrics {
            counts: Mutex::new(counts),
            store,
            clock,
            store_only: true,
            limits,
        }
    }

    /// Events stored (as counted when indexed, or as the store counts them).
    pub async fn stored_events(&self) -> Result<u64> {
        if self.store_only {
            return self.store.event_count().await;
        }
        Ok(self.counts.lock().unwrap().total())
    }

    /// Counts what the indexer just stored: `events` but those in `skipped` (ids already
    /// stored). Called after the store committed them and before they are reported indexed.
    pub fn record(&self, events: &[StoredEvent], skipped: &[u64]) {
        let now = self.clock.now_ms();
        let skipped: HashSet<u64> = skipped.iter().copied().collect();
        // Counted per second first, without the lock: requests wait only for the few
        // thousand sums, not for every event of the batch.
        let mut per_second: foldhash::HashMap<(i64, &str, Option<&str>), u64> =
            foldhash::HashMap::default();
        for event in events.iter().filter(|event| !skipped.contains(&event.seq)) {
            let second = floor_to(event.timestamp_ms, SECOND_MS);
            let key = (second, event.kind.as_str(), event.service.as_deref());
            *per_second.entry(key).or_default() += 1;
        }
        let mut counts = self.counts.lock().unwrap();
        let counted = per_second
            .into_iter()
            .map(|((second, kind, service), count)| (second, counts.pairs.id(kind, service), count))
            .collect();
        counts.add_counted(now, counted);
    }

    /// Forgets what retention deleted: `events` events with timestamps before `cutoff_ms`.
    pub fn forget_before(&self, cutoff_ms: i64, events: u64) {
        self.counts.lock().unwrap().forget_before(cutoff_ms, events);
    }

    /// Counts of the `window_seconds` ending now: to the second up to an hour, by whole
    /// minutes beyond; the `top` largest by type and by service, the rest as [`OTHER`].
    pub async fn window(&self, window_seconds: u64, top: usize) -> Result<WindowReport> {
        let now = self.clock.now_ms();
        let window_ms = window_seconds as i64 * SECOND_MS;
        let (from, to) = if window_seconds <= MAX_EXACT_WINDOW_SECONDS {
            let end = floor_to(now, SECOND_MS) + SECOND_MS;
            (end - window_ms, end)
        } else {
            let end = floor_to(now, MINUTE_MS) + MINUTE_MS;
            (end - floor_to(window_ms + MINUTE_MS - 1, MINUTE_MS), end)
        };
        let tally = self.tally(from, to).await?;
        Ok(WindowReport {
            window_seconds,
            from: format_rfc3339_ms(tally.0),
            to: format_rfc3339_ms(now),
            total: tally.1.total,
            events_per_second: tally.1.total as f64 / window_seconds as f64,
            by_type: fold(tally.1.by_type, top),
            by_service: fold(tally.1.by_service, top),
            partial: false,
        })
    }

    /// Counts of `[from, to)`, and where they really start: from memory when it holds the
    /// range, otherwise from the store's rollups by whole minutes.
    async fn tally(&self, from: i64, to: i64) -> Result<(i64, Tally)> {
        if let Some(tally) = Tally::from_memory(&self.counts.lock().unwrap(), from, to) {
            return Ok((from, tally));
        }
        let (from, rows) = self.rolled_up(from, to, None, None).await?;
        Ok((from, Tally::from_rows(&rows, self.limits)))
    }

    /// The store's counts of `[from, to)` by whole minutes (from `from`'s minute, which is
    /// returned), in one bucket per type and service, of one type or service if given.
    async fn rolled_up(
        &self,
        from: i64,
        to: i64,
        kind: Option<&str>,
        service: Option<&str>,
    ) -> Result<(i64, Vec<RollupRow>)> {
        let from = floor_to(from, MINUTE_MS);
        let rows = self
            .store
            .rollups(RollupQuery {
                from_ms: from,
                to_ms: to,
                bucket_ms: floor_to(to - from + MINUTE_MS - 1, MINUTE_MS),
                kind: kind.map(str::to_owned),
                service: service.map(str::to_owned),
            })
            .await?;
        Ok((from, rows))
    }

    /// The number of events in `[from, to)` (whole seconds; whole minutes if not in memory).
    async fn total(&self, from: i64, to: i64) -> Result<u64> {
        let mut total = 0;
        if self
            .counts
            .lock()
            .unwrap()
            .visit(from, to, |_, count| total += count)
        {
            return Ok(total);
        }
        Ok(self.tally(from, to).await?.1.total)
    }

    pub async fn timeseries(&self, query: SeriesQuery) -> Result<SeriesReport, SeriesError> {
        let now = self.clock.now_ms();
        let size = query.interval.millis();
        let last = floor_to(query.to_ms.unwrap_or(now), size);
        let first = match query.from_ms {
            Some(from) => floor_to(from, size),
            None => last - 59 * size,
        };
        if first > last {
            return Err(SeriesError::FromAfterTo);
        }
        let count = ((last - first) / size + 1) as usize;
        if count > MAX_POINTS {
            return Err(SeriesError::TooManyPoints { points: count });
        }
        let buckets = Buckets { first, size, count };
        let mut series = match self.series_from_memory(&query, &buckets)? {
            Some(series) => series,
            None => {
                let rows = self
                    .store
                    .rollups(RollupQuery {
                        from_ms: first,
                        to_ms: buckets.end(),
                        bucket_ms: size,
                        kind: query.kind.clone(),
                        service: query.service.clone(),
                    })
                    .await?;
                self.series_from_rows(&query, &buckets, &rows)?
            }
        };
        // Largest series first, as a chart legend would list them, and the rest last.
        series.sort_by_cached_key(|(key, points)| {
            (
                key == OTHER,
                std::cmp::Reverse(points.iter().sum::<u64>()),
                key.clone(),
            )
        });
        let labels: Vec<String> = (first..buckets.end())
            .step_by(size as usize)
            .map(format_rfc3339_ms)
            .collect();
        Ok(SeriesReport {
            interval: query.interval.name(),
            from: format_rfc3339_ms(first),
            to: format_rfc3339_ms(buckets.end()),
            series: series
                .into_iter()
                .map(|(key, points)| Series {
                    key,
                    points: labels.iter().cloned().zip(points).collect(),
                })
                .collect(),
            partial: false,
        })
    }

    /// The series of `query` over `buckets` from memory: `None` if memory does not hold
    /// every bucket, or a filter names a type or service that memory may have counted as
    /// [`OTHER`] (only the rollups know its counts).
    fn series_from_memory(
        &self,
        query: &SeriesQuery,
        buckets: &Buckets,
    ) -> Result<Option<SeriesPoints>, SeriesError> {
        let counts = self.counts.lock().unwrap();
        let pairs = &counts.pairs;
        let folded = |names: &Names, wanted: &Option<String>| {
            wanted
                .as_deref()
                .is_some_and(|name| names.folded() && names.get(name).is_none())
        };
        if folded(&pairs.types, &query.kind) || folded(&pairs.services, &query.service) {
            return Ok(None);
        }
        // Which series each pair adds to, decided once per pair rather than per count.
        let mut keys: Vec<&str> = Vec::new();
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        let series_of_pair: Vec<Option<usize>> = (0..counts.pair_count() as PairId)
            .map(|pair| {
                let (kind, service) = pairs.get(pair);
                let service = service.map(|service| pairs.services.name(service));
                let key = series_key(query, pairs.types.name(kind), service)?;
                Some(*key_index.entry(key).or_insert_with(|| {
                    keys.push(key);
                    keys.len() - 1
                }))
            })
            .collect();
        // The series with counts in the range, found before any point is allocated.
        let mut totals = vec![0u64; keys.len()];
        let held = counts.visit(buckets.first, buckets.end(), |pair, count| {
            if let Some(key) = series_of_pair[pair as usize] {
                totals[key] += count;
            }
        });
        if !held {
            return Ok(None);
        }
        let mut shown: Vec<&str> = Vec::new();
        let row_of_key: Vec<Option<usize>> = keys
            .iter()
            .zip(&totals)
            .map(|(key, total)| {
                (*total > 0).then(|| {
                    shown.push(key);
                    shown.len() - 1
                })
            })
            .collect();
        if query.group_by == GroupBy::None && shown.is_empty() {
            shown.push("all");
        }
        check_points(shown.len(), buckets.count)?;
        let mut points = vec![vec![0u64; buckets.count]; shown.len()];
        let held = (buckets.first..buckets.end())
            .step_by(buckets.size as usize)
            .enumerate()
            .all(|(index, bucket)| {
                counts.visit(bucket, bucket + buckets.size, |pair, count| {
                    let key = series_of_pair[pair as usize];
                    if let Some(row) = key.and_then(|key| row_of_key[key]) {
                        points[row][index] += count;
                    }
                })
            });
        Ok(held.then(|| shown.into_iter().map(str::to_owned).zip(points).collect()))
    }

    /// The series of `query` over `buckets` from the rollups `rows`, which name every type
    /// and service: as in memory, the ones with the largest counts up to the limit are
    /// series of their own, the others are summed as [`OTHER`].
    fn series_from_rows(
        &self,
        query: &SeriesQuery,
        buckets: &Buckets,
        rows: &[RollupRow],
    ) -> Result<SeriesPoints, SeriesError> {
        let limit = match query.group_by {
            GroupBy::None => 1,
            GroupBy::Type => self.limits.types,
            GroupBy::Service => self.limits.services,
        };
        let mut totals: HashMap<&str, u64> = HashMap::new();
        if query.group_by == GroupBy::None {
            totals.insert("all", 0);
        }
        for row in rows {
            if let Some(key) = series_key(query, &row.kind, row.service.as_deref()) {
                *totals.entry(key).or_default() += row.count;
            }
        }
        let (kept, rest) = top_and_rest(totals, limit);
        let row_of_key: HashMap<&str, usize> = kept
            .iter()
            .enumerate()
            .map(|(row, (key, _))| (*key, row))
            .collect();
        let mut keys: Vec<String> = kept.into_iter().map(|(key, _)| key.to_owned()).collect();
        let other = (rest > 0).then(|| {
            keys.push(OTHER.to_owned());
            keys.len() - 1
        });
        check_points(keys.len(), buckets.count)?;
        let mut points = vec![vec![0u64; buckets.count]; keys.len()];
        for row in rows {
            let key = series_key(query, &row.kind, row.service.as_deref());
            let series = key.and_then(|key| row_of_key.get(key).copied().or(other));
            if let Some(series) = series {
                points[series][((row.bucket_ms - buckets.first) / buckets.size) as usize] +=
                    row.count;
            }
        }
        Ok(keys.into_iter().zip(points).collect())
    }

    pub async fn summary(&self) -> Result<SummaryReport> {
        let now = self.clock.now_ms();
        let second_end = floor_to(now, SECOND_MS) + SECOND_MS;
        let minute_end = floor_to(now, MINUTE_MS) + MINUTE_MS;
        let hour_end = floor_to(now, HOUR_MS) + HOUR_MS;
        let last_hour = self.total(second_end - HOUR_MS, second_end).await?;
        let (_, last_day) = self.tally(minute_end - DAY_MS, minute_end).await?;
        let mut by_hour = Vec::with_capacity(24);
        for hour in (hour_end - DAY_MS..hour_end).step_by(HOUR_MS as usize) {
            by_hour.push(HourCount {
                hour: format_rfc3339_ms(hour),
                count: self.total(hour, hour + HOUR_MS).await?,
            });
        }
        let total_events = self.stored_events().await?;
        let (top_services, other_services) = top_and_rest(last_day.by_service, SUMMARY_TOP);
        let (top_types, other_types) = top_and_rest(last_day.by_type, SUMMARY_TOP);
        Ok(SummaryReport {
            total_events,
            events_last_hour: last_hour,
            events_last_24h: last_day.total,
            avg_events_per_minute_24h: last_day.total as f64 / (24.0 * 60.0),
            top_services: top_services
                .into_iter()
                .map(|(service, count)| ServiceCount { service, count })
                .collect(),
            other_services,
            top_types: top_types
                .into_iter()
                .map(|(kind, count)| TypeCount { kind, count })
                .collect(),
            other_types,
            by_hour,
            partial: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::sqlite::SqliteStore;

    /// An event of `kind` (and `service`) at `timestamp_ms`; also for `matching`'s tests.
    pub(super) fn event(
        seq: u64,
        timestamp_ms: i64,
        kind: &str,
        service: Option<&str>,
    ) -> StoredEvent {
        StoredEvent {
            seq,
            id: format!("e{seq}"),
            id_from_client: false,
            kind: kind.to_owned(),
            timestamp_ms,
            received_at_ms: timestamp_ms,
            service: service.map(str::to_owned),
            user_id: None,
            message: None,
            metadata: None,
        }
    }

    /// A store holding, a few minutes ago: type `a` 5 times (service `x`), `b` 3 times
    /// (`y`), `c` twice (`z`), `d` once (no service), and `(other)`, sent as such, once.
    async fn store_with_four_types(dir: &std::path::Path) -> Arc<dyn Store> {
        let store = SqliteStore::open(&dir.join("events.db"), false).unwrap();
        let at = SystemClock.now_ms() - 3 * MINUTE_MS;
        let mut events = Vec::new();
        for (kind, service, times) in [
            ("a", Some("x"), 5),
            ("b", Some("y"), 3),
            ("c", Some("z"), 2),
            ("d", None, 1),
            (OTHER, Some("x"), 1),
        ] {
            for _ in 0..times {
                let seq = events.len() as u64 + 1;
                events.push(event(seq, at, kind, service));
            }
        }
        let last = events.len() as u64;
        store.append_batch(Arc::new(events), last).await.unwrap();
        Arc::new(store)
    }

    const TWO: NameLimits = NameLimits {
        types: 2,
        services: 2,
    };

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs
            .iter()
            .map(|(name, count)| (name.to_string(), *count))
            .collect()
    }

    #[tokio::test]
    async fn memory_and_rollups_fold_reports_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_four_types(dir.path()).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let loaded = EventMetrics::load(store.clone(), clock.clone(), TWO)
            .await
            .unwrap();
        let api_node = EventMetrics::from_store(store, clock, TWO);
        for metrics in [&loaded, &api_node] {
            // Memory tracked the two most frequent names of the rollups at start; an API
            // node reads every name and folds the same way.
            let report = metrics.window(600, MAX_TOP).await.unwrap();
            assert_eq!(report.total, 12);
            assert_eq!(report.by_type, counts(&[("a", 5), ("b", 3), (OTHER, 4)]));
            assert_eq!(report.by_service, counts(&[("x", 6), ("y", 3), (OTHER, 2)]));
            let report = metrics.window(600, 1).await.unwrap();
            assert_eq!(report.by_type, counts(&[("a", 5), (OTHER, 7)]));
            let report = metrics.window(600, 0).await.unwrap();
            assert_eq!(report.by_type, counts(&[(OTHER, 12)]));

            let summary = metrics.summary().await.unwrap();
            assert_eq!(summary.top_types.len(), 2);
            assert_eq!(
                (summary.top_types[0].kind.as_str(), summary.other_types),
                ("a", 4)
            );
            assert_eq!(summary.other_services, 2);

            let series = metrics
                .timeseries(SeriesQuery {
                    interval: Interval::Hour,
                    from_ms: None,
                    to_ms: None,
                    group_by: GroupBy::Type,
                    kind: None,
                    service: None,
                })
                .await
                .unwrap();
            let keys: Vec<&str> = series.series.iter().map(|s| s.key.as_str()).collect();
            assert_eq!(keys, ["a", "b", OTHER]);
            let sums: Vec<u64> = series
                .series
                .iter()
                .map(|s| s.points.iter().map(|(_, count)| count).sum())
                .collect();
            assert_eq!(sums, [5, 3, 4]);
        }
    }

    #[tokio::test]
    async fn a_filter_on_a_folded_name_is_answered_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_four_types(dir.path()).await;
        let metrics = EventMetrics::load(store, Arc::new(SystemClock), TWO)
            .await
            .unwrap();
        for (kind, want) in [("c", 2), ("a", 5), ("never sent", 0)] {
            let series = metrics
                .timeseries(SeriesQuery {
                    interval: Interval::Hour,
                    from_ms: None,
                    to_ms: None,
                    group_by: GroupBy::Service,
                    kind: Some(kind.to_owned()),
                    service: None,
                })
                .await
                .unwrap();
            let total: u64 = series
                .series
                .iter()
                .flat_map(|s| &s.points)
                .map(|(_, count)| count)
                .sum();
            assert_eq!(total, want, "{kind}: {series:?}");
        }
    }

    #[test]
    fn the_largest_window_report_is_under_100_kb() {
        // The longest names JSON can make of 100 characters, and the largest counts.
        let names = |prefix: char| -> HashMap<String, u64> {
            (0..1_000)
                .map(|i| {
                    let name: String = format!("{prefix}{i:03}")
                        .chars()
                        .chain(std::iter::repeat('\u{1}'))
                        .take(100)
                        .collect();
                    (name, u64::MAX / 4_000)
                })
                .collect()
        };
        let report = WindowReport {
            window_seconds: MAX_WINDOW_SECONDS,
            from: format_rfc3339_ms(0),
            to: format_rfc3339_ms(0),
            total: u64::MAX,
            events_per_second: f64::MAX,
            by_type: fold(names('t'), MAX_TOP),
            by_service: fold(names('s'), MAX_TOP),
            partial: true,
        };
        assert_eq!(report.by_type.len(), MAX_TOP + 1);
        let size = serde_json::to_string(&report).unwrap().len();
        assert!(size > 60_000 && size < 100_000, "{size} bytes");
    }
}
