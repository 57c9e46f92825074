//! Event metrics: counts over time windows, time series and a summary, answered from counts
//! maintained as events are indexed, never by scanning events.
//!
//! Recent counts live in memory ([`counts`]); older ranges come from the store's rollups
//! (per minute and per hour), which are written in the same transaction as the events. Both are updated only
//! with what the store has committed, so the metrics agree with the queries at every moment.

pub mod counts;

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// Windows up to this are counted to the second; longer ones by whole minutes.
pub const MAX_EXACT_WINDOW_SECONDS: u64 = 3_600;
pub const MAX_WINDOW_SECONDS: u64 = 24 * 3_600;
/// Most points (buckets x series) in one time series answer.
pub const MAX_POINTS: usize = 10_000;
const TOP: usize = 10;

/// One of [`Counts`]' ways to take counts read from the rollups.
type AddCounts = fn(&mut Counts, i64, i64, PairId, u64);

pub struct EventMetrics {
    counts: Mutex<Counts>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Nothing is counted in memory: everything is read from the store's rollups (an API
    /// node of a cluster, which does not see what the workers store).
    store_only: bool,
}

/// `GET /metrics`: counts of the events whose timestamp lies in the window ending now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "window_seconds": 600, "from": "2024-01-15T10:20:00.000Z", "to": "2024-01-15T10:30:00.123Z",
    "total": 1234, "events_per_second": 2.06,
    "by_type": {"signup": 34, "click": 1200}, "by_service": {"auth": 56}
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
    /// Events in the window by type.
    pub by_type: BTreeMap<String, u64>,
    /// Events in the window by service (events without a service are not here).
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
    /// Largest series first; `group_by=none` gives the one series `all`.
    pub series: Vec<Series>,
    /// Present and `true` when the indexer had not caught up within `--read-wait`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// `all`, or the type or service the series counts.
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
/// of the last 24 hours, and the counts of each of its hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryReport {
    /// Every event stored.
    pub total_events: u64,
    pub events_last_hour: u64,
    pub events_last_24h: u64,
    pub avg_events_per_minute_24h: f64,
    pub top_services: Vec<ServiceCount>,
    pub top_types: Vec<TypeCount>,
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
#[derive(Default)]
struct Tally {
    total: u64,
    by_type: HashMap<String, u64>,
    by_service: HashMap<String, u64>,
}

impl Tally {
    fn add(&mut self, kind: &str, service: Option<&str>, count: u64) {
        self.total += count;
        add_to(&mut self.by_type, kind, count);
        if let Some(service) = service {
            add_to(&mut self.by_service, service, count);
        }
    }

    /// The counts of `[from, to)` held in memory, if they are.
    fn from_memory(counts: &Counts, from: i64, to: i64) -> Option<Tally> {
        // Summed per pair id in a plain array first: names are looked up once per pair.
        let mut by_pair = vec![0u64; counts.pair_count()];
        if !counts.visit(from, to, |pair, count| by_pair[pair as usize] += count) {
            return None;
        }
        let mut tally = Tally::default();
        for (pair, count) in by_pair.into_iter().enumerate() {
            if count > 0 {
                let pair = pair as PairId;
                tally.add(counts.pairs.kind(pair), counts.pairs.service(pair), count);
            }
        }
        Some(tally)
    }

    fn from_rows(rows: &[RollupRow]) -> Tally {
        let mut tally = Tally::default();
        for row in rows {
            tally.add(&row.kind, row.service.as_deref(), row.count);
        }
        tally
    }
}

fn add_to(map: &mut HashMap<String, u64>, key: &str, count: u64) {
    match map.get_mut(key) {
        Some(sum) => *sum += count,
        None => {
            map.insert(key.to_owned(), count);
        }
    }
}

/// The `n` largest counts, ties by name.
fn top(map: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = map.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

impl EventMetrics {
    /// Rebuilds the in-memory counts from `store`: hours and days from the hourly rollups,
    /// minutes from the per-minute ones, the last hour per second from the events. Run
    /// before the indexer starts.
    pub async fn load(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<EventMetrics> {
        let now = clock.now_ms();
        let mut counts = Counts::new(now);
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
            for row in store.rollups(query).await? {
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
        })
    }

    /// Metrics read from the store's rollups alone, in whole minutes (windows of seconds
    /// are rounded out to minutes and report their real `from`), for a process that does
    /// not write the store itself.
    pub fn from_store(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> EventMetrics {
        let counts = Counts::holding_nothing(clock.now_ms());
        EventMetrics {
            counts: Mutex::new(counts),
            store,
            clock,
            store_only: true,
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
        let mut per_second: HashMap<(i64, &str, Option<&str>), u64> = HashMap::new();
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
    /// minutes beyond.
    pub async fn window(&self, window_seconds: u64) -> Result<WindowReport> {
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
            by_type: tally.1.by_type.into_iter().collect(),
            by_service: tally.1.by_service.into_iter().collect(),
            partial: false,
        })
    }

    /// Counts of `[from, to)`, and where they really start: from memory when it holds the
    /// range, otherwise from the store's rollups by whole minutes.
    async fn tally(&self, from: i64, to: i64) -> Result<(i64, Tally)> {
        if let Some(tally) = Tally::from_memory(&self.counts.lock().unwrap(), from, to) {
            return Ok((from, tally));
        }
        let from = floor_to(from, MINUTE_MS);
        let rows = self
            .store
            .rollups(RollupQuery {
                from_ms: from,
                to_ms: to,
                bucket_ms: floor_to(to - from + MINUTE_MS - 1, MINUTE_MS),
                kind: None,
                service: None,
            })
            .await?;
        Ok((from, Tally::from_rows(&rows)))
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
        let buckets = ((last - first) / size + 1) as usize;
        if buckets > MAX_POINTS {
            return Err(SeriesError::TooManyPoints { points: buckets });
        }
        let end = last + size;
        let key_of = |kind: &str, service: Option<&str>| -> Option<String> {
            if query.kind.as_deref().is_some_and(|wanted| wanted != kind)
                || query
                    .service
                    .as_deref()
                    .is_some_and(|wanted| Some(wanted) != service)
            {
                return None;
            }
            match query.group_by {
                GroupBy::None => Some("all".to_owned()),
                GroupBy::Type => Some(kind.to_owned()),
                GroupBy::Service => service.map(str::to_owned),
            }
        };
        let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        if query.group_by == GroupBy::None {
            series.insert("all".to_owned(), vec![0; buckets]);
        }
        let from_memory = {
            let counts = self.counts.lock().unwrap();
            // Which series each pair adds to, decided once per pair rather than per count.
            let mut series_of_pair: Vec<Option<usize>> = Vec::with_capacity(counts.pair_count());
            let mut keys: Vec<String> = Vec::new();
            let mut key_index: HashMap<String, usize> = HashMap::new();
            for pair in 0..counts.pair_count() as PairId {
                let key = key_of(counts.pairs.kind(pair), counts.pairs.service(pair));
                series_of_pair.push(key.map(|key| {
                    *key_index.entry(key).or_insert_with_key(|key| {
                        keys.push(key.clone());
                        keys.len() - 1
                    })
                }));
            }
            let mut points = vec![vec![0u64; buckets]; keys.len()];
            let held = (first..end)
                .step_by(size as usize)
                .enumerate()
                .all(|(index, bucket)| {
                    counts.visit(bucket, bucket + size, |pair, count| {
                        if let Some(series) = series_of_pair[pair as usize] {
                            points[series][index] += count;
                        }
                    })
                });
            if held {
                for (key, points) in keys.into_iter().zip(points) {
                    if points.iter().any(|count| *count > 0) {
                        let total = series.entry(key).or_insert_with(|| vec![0; buckets]);
                        for (sum, count) in total.iter_mut().zip(points) {
                            *sum += count;
                        }
                    }
                }
            }
            held
        };
        if !from_memory {
            let rows = self
                .store
                .rollups(RollupQuery {
                    from_ms: first,
                    to_ms: end,
                    bucket_ms: size,
                    kind: query.kind.clone(),
                    service: query.service.clone(),
                })
                .await?;
            for row in rows {
                if let Some(key) = key_of(&row.kind, row.service.as_deref()) {
                    let points = series.entry(key).or_insert_with(|| vec![0; buckets]);
                    points[((row.bucket_ms - first) / size) as usize] += row.count;
                }
            }
        }
        let points = series.len() * buckets;
        if points > MAX_POINTS {
            return Err(SeriesError::TooManyPoints { points });
        }
        let mut series: Vec<(String, Vec<u64>)> = series.into_iter().collect();
        // Largest series first, as a chart legend would list them.
        series.sort_by_cached_key(|(key, points)| {
            (std::cmp::Reverse(points.iter().sum::<u64>()), key.clone())
        });
        let labels: Vec<String> = (first..end)
            .step_by(size as usize)
            .map(format_rfc3339_ms)
            .collect();
        Ok(SeriesReport {
            interval: query.interval.name(),
            from: format_rfc3339_ms(first),
            to: format_rfc3339_ms(end),
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
        Ok(SummaryReport {
            total_events,
            events_last_hour: last_hour,
            events_last_24h: last_day.total,
            avg_events_per_minute_24h: last_day.total as f64 / (24.0 * 60.0),
            top_services: top(last_day.by_service, TOP)
                .into_iter()
                .map(|(service, count)| ServiceCount { service, count })
                .collect(),
            top_types: top(last_day.by_type, TOP)
                .into_iter()
                .map(|(kind, count)| TypeCount { kind, count })
                .collect(),
            by_hour,
            partial: false,
        })
    }
}
