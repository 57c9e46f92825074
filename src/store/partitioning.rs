//! Which time range a partition of events covers, the rule both stores follow: an aligned UTC
//! day, month or year, chosen when an event needs a partition and none covers its timestamp.
//!
//! Day partitions keep retention of recent data a cheap `DROP`, but one per day makes a
//! backfill of history expensive: 10,000 events on 10,000 different days made 20,015 SQLite
//! tables (145 s of indexing, 2.3 GB) and would make as many PostgreSQL partitions, each
//! with its indexes and its locks in every query. So an event whose day has no partition gets:
//!
//! - a **day** if it is recent: from [`RECENT_DAYS`] before the day it was received on.
//!   That covers the default 30-day retention with a margin, so under it every event lands
//!   in a day partition, as before;
//! - otherwise the coarsest aligned **year**, then **month**, that contains it, overlaps no
//!   partition and ends before the recent days (so recent data is always in days), falling
//!   back to the day.
//!
//! An event always goes to the partition that already covers it, so a retried client id with
//! the same timestamp lands where the first one did. "Recent" is judged from the event's own
//! `received_at`, not the clock of the moment it is indexed: the choice depends only on the
//! events and the partitions that exist, and replaying the log after a crash makes the same
//! ones. A backfill thus makes at most one partition per past year, eleven months, a day for
//! each of the recent days and one for each earlier day of the month they start in (that
//! month does not end before them, so it cannot be a month). 10,000 days of history ending
//! on 6 December 2026 make 73 (27 years, 10 months, 36 days); ending on 8 December, 75: the
//! recent days then start on 3 November, and November's first two days get days too.
//!
//! What coarse partitions cost retention: a partition is dropped only once it is wholly past
//! the cutoff, and the one the cutoff falls in is trimmed by rows. With hourly runs a day
//! partition is mostly trimmed by rows too (each run deletes the hour the cutoff moved over),
//! so steady retention costs the same; what differs is a cutoff that jumps (a shorter
//! retention set at a restart, a long downtime): every event of a coarse partition before the
//! cutoff is then deleted by rows, in the same short steps, instead of with its day's table.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

use super::{floor_to, DAY_MS};

/// Events received less than this many days (counted from the start of the day they were
/// received on) after their timestamp get day partitions.
pub const RECENT_DAYS: i64 = 35;

/// How much time a partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Span {
    Day,
    Month,
    Year,
}

impl Span {
    pub fn name(self) -> &'static str {
        match self {
            Span::Day => "day",
            Span::Month => "month",
            Span::Year => "year",
        }
    }

    pub fn from_name(name: &str) -> Option<Span> {
        [Span::Day, Span::Month, Span::Year]
            .into_iter()
            .find(|span| span.name() == name)
    }
}

/// A partition's time range, `[start_ms, end_ms)`: one UTC day, month or year, aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
    pub span: Span,
}

/// Days from 4713 BC (the Julian day count `time` uses) to 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

impl TimeRange {
    /// The `span` containing `ms`. Always `Some` for a day; a month or year needs a calendar
    /// date, which `time` has for the years -9999 to 9999 (events are 0000 to 9999).
    pub fn containing(ms: i64, span: Span) -> Option<TimeRange> {
        let start_day = floor_to(ms, DAY_MS) / DAY_MS;
        let (start_day, days) = match span {
            Span::Day => (start_day, 1),
            Span::Month | Span::Year => {
                let date = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1_000))
                    .ok()?
                    .date();
                let year = date.year();
                let first = match span {
                    Span::Month => Date::from_calendar_date(year, date.month(), 1).ok()?,
                    _ => Date::from_ordinal_date(year, 1).ok()?,
                };
                let days = match span {
                    Span::Month => u16::from(date.month().length(year)),
                    _ => time::util::days_in_year(year),
                };
                (
                    i64::from(first.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY,
                    i64::from(days),
                )
            }
        };
        Some(TimeRange {
            start_ms: start_day * DAY_MS,
            end_ms: (start_day + days) * DAY_MS,
            span,
        })
    }

    /// The aligned day, month or year with exactly these bounds, if there is one: what a
    /// partition listed by its bounds alone (PostgreSQL's) covers.
    pub fn from_bounds(start_ms: i64, end_ms: i64) -> Option<TimeRange> {
        [Span::Day, Span::Month, Span::Year]
            .into_iter()
            .filter_map(|span| TimeRange::containing(start_ms, span))
            .find(|range| range.start_ms == start_ms && range.end_ms == end_ms)
    }

    pub fn covers(self, ms: i64) -> bool {
        self.start_ms <= ms && ms < self.end_ms
    }

    /// Whether any of `[from_ms, to_ms)` falls in this range (an unbounded side: `None`).
    pub fn overlaps(self, from_ms: Option<i64>, to_ms: Option<i64>) -> bool {
        from_ms.is_none_or(|from| from < self.end_ms) && to_ms.is_none_or(|to| to > self.start_ms)
    }

    /// The UTC date the range starts on, for naming its tables.
    pub fn start_date(self) -> Option<Date> {
        Date::from_julian_day(i32::try_from(self.start_ms / DAY_MS + UNIX_EPOCH_JULIAN_DAY).ok()?)
            .ok()
    }
}

/// The partitions that exist, by start: what an event is routed by and a new partition's
/// range is chosen against.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    ranges: BTreeMap<i64, TimeRange>,
}

impl Layout {
    pub fn new(ranges: impl IntoIterator<Item = TimeRange>) -> Layout {
        Layout {
            ranges: ranges
                .into_iter()
                .map(|range| (range.start_ms, range))
                .collect(),
        }
    }

    /// The partition covering `ms`, if any.
    pub fn covering(&self, ms: i64) -> Option<TimeRange> {
        let (_, range) = self.ranges.range(..=ms).next_back()?;
        range.covers(ms).then_some(*range)
    }

    /// The range of the partition to create for an event at `ms` received at
    /// `received_at_ms`, which no partition covers (see the module's documentation for the
    /// rule).
    pub fn new_range(&self, ms: i64, received_at_ms: i64) -> TimeRange {
        debug_assert!(self.covering(ms).is_none(), "{ms} has a partition");
        let recent_from = floor_to(received_at_ms, DAY_MS) - RECENT_DAYS * DAY_MS;
        if ms < recent_from {
            let coarse = [Span::Year, Span::Month]
                .into_iter()
                .filter_map(|span| TimeRange::containing(ms, span))
                .find(|range| range.end_ms <= recent_from && !self.overlaps_any(*range));
            if let Some(range) = coarse {
                return range;
            }
        }
        // Never overlaps: every range is whole days, and none covers this one.
        TimeRange::containing(ms, Span::Day).expect("a day is always a range")
    }

    fn overlaps_any(&self, range: TimeRange) -> bool {
        // The ranges are disjoint: of those starting before `range` ends, only the last can
        // reach into it.
        self.ranges
            .range(..range.end_ms)
            .next_back()
            .is_some_and(|(_, last)| last.end_ms > range.start_ms)
    }

    /// Every range, in order.
    pub fn ranges(&self) -> impl Iterator<Item = TimeRange> + '_ {
        self.ranges.values().copied()
    }

    pub fn insert(&mut self, range: TimeRange) {
        self.ranges.insert(range.start_ms, range);
    }

    pub fn remove(&mut self, range: TimeRange) {
        self.ranges.remove(&range.start_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T10:00:00Z: received "now" in these tests.
    const NOW: i64 = 1_796_551_200_000;

    fn ms(text: &str) -> i64 {
        let parsed =
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        (parsed.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Where an event goes: the partition covering it, or a new one.
    fn route(layout: &Layout, ms: i64, received_at_ms: i64) -> TimeRange {
        layout
            .covering(ms)
            .unwrap_or_else(|| layout.new_range(ms, received_at_ms))
    }

    fn range(start: &str, end: &str, span: Span) -> TimeRange {
        TimeRange {
            start_ms: ms(start),
            end_ms: ms(end),
            span,
        }
    }

    #[test]
    fn ranges_are_aligned_utc_days_months_and_years() {
        let at = ms("2024-02-29T23:59:59.999Z");
        let day = range("2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z", Span::Day);
        let month = range("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", Span::Month);
        let year = range("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", Span::Year);
        assert_eq!(TimeRange::containing(at, Span::Day), Some(day));
        assert_eq!(TimeRange::containing(at, Span::Month), Some(month));
        assert_eq!(TimeRange::containing(at, Span::Year), Some(year));
        assert_eq!(
            TimeRange::containing(day.end_ms, Span::Month).unwrap().span,
            Span::Month
        );
        // Before 1970, and at the ends of the years events may have.
        let before = range("1969-12-01T00:00:00Z", "1970-01-01T00:00:00Z", Span::Month);
        assert_eq!(TimeRange::containing(-1, Span::Month), Some(before));
        assert_eq!(
            TimeRange::containing(-1, Span::Day).unwrap().start_ms,
            -DAY_MS
        );
        let first = TimeRange::containing(ms("0000-01-01T00:00:00Z"), Span::Year).unwrap();
        assert_eq!(
            first.start_date(),
            Date::from_calendar_date(0, time::Month::January, 1).ok()
        );
        let last = TimeRange::containing(ms("9999-12-31T23:59:59.999Z"), Span::Year).unwrap();
        assert_eq!(last.end_ms - last.start_ms, 365 * DAY_MS);
        assert_eq!(
            month.start_date(),
            Date::from_calendar_date(2024, time::Month::February, 1).ok()
        );
        for range in [day, month, year, before, first, last] {
            assert_eq!(
                TimeRange::from_bounds(range.start_ms, range.end_ms),
                Some(range)
            );
        }
        assert_eq!(
            TimeRange::from_bounds(day.start_ms, day.start_ms + 2 * DAY_MS),
            None
        );
        assert_eq!(TimeRange::from_bounds(day.start_ms + 1, day.end_ms), None);
    }

    #[test]
    fn recent_events_get_days_and_old_ones_the_coarsest_free_range() {
        let layout = Layout::default();
        // Within 35 days of the day received on (and ahead of it): days.
        for at in [
            "2026-12-06T09:00:00Z",
            "2026-11-01T00:00:00Z",
            "2026-12-07T05:00:00Z",
        ] {
            assert_eq!(route(&layout, ms(at), NOW).span, Span::Day, "{at}");
        }
        // A past year that ends before the recent days: the year.
        assert_eq!(
            route(&layout, ms("2019-03-05T12:00:00Z"), NOW),
            range("2019-01-01T00:00:00Z", "2020-01-01T00:00:00Z", Span::Year)
        );
        // This year reaches into the recent days: a month, if it ends before them.
        assert_eq!(
            route(&layout, ms("2026-10-31T23:59:59.999Z"), NOW),
            range("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z", Span::Month)
        );
        // Received on a later day, the same event is less recent.
        let later = NOW + 40 * DAY_MS;
        assert_eq!(
            route(&layout, ms("2026-11-20T00:00:00Z"), later).span,
            Span::Month
        );
        let month_reaching_recent = NOW + 20 * DAY_MS; // recent from 2026-11-21
        assert_eq!(
            route(&layout, ms("2026-11-20T00:00:00Z"), month_reaching_recent),
            range("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", Span::Day)
        );
    }

    #[test]
    fn existing_partitions_come_first_and_are_never_overlapped() {
        let live_day = range("2019-06-10T00:00:00Z", "2019-06-11T00:00:00Z", Span::Day);
        let mut layout = Layout::new([live_day]);
        // The day's own events go to it; others in its month get days, in its year months.
        assert_eq!(route(&layout, ms("2019-06-10T08:00:00Z"), NOW), live_day);
        assert_eq!(
            route(&layout, ms("2019-06-11T08:00:00Z"), NOW).span,
            Span::Day
        );
        let march = route(&layout, ms("2019-03-05T12:00:00Z"), NOW);
        assert_eq!(
            march,
            range("2019-03-01T00:00:00Z", "2019-04-01T00:00:00Z", Span::Month)
        );
        layout.insert(march);
        assert_eq!(route(&layout, ms("2019-03-31T23:00:00Z"), NOW), march);
        // A coarse partition takes everything it covers, however it is received.
        let year = range("2018-01-01T00:00:00Z", "2019-01-01T00:00:00Z", Span::Year);
        layout.insert(year);
        assert_eq!(route(&layout, ms("2018-12-31T23:59:59.999Z"), 0), year);
        assert_eq!(layout.covering(year.end_ms), None);
        assert_eq!(layout.covering(year.start_ms - 1), None);
        layout.remove(year);
        assert_eq!(layout.covering(year.start_ms), None);
    }

    #[test]
    fn ten_thousand_days_of_history_make_a_bounded_number_of_partitions() {
        let mut layout = Layout::default();
        let today = floor_to(NOW, DAY_MS);
        // In time order and newest first alike.
        for days in [
            (0..10_000).rev().collect::<Vec<i64>>(),
            (0..10_000).collect(),
        ] {
            layout = Layout::default();
            for back in days {
                let at = today - back * DAY_MS + 12 * 3_600_000;
                let range = route(&layout, at, NOW);
                assert!(range.covers(at));
                if layout.covering(at).is_none() {
                    layout.insert(range);
                }
            }
            let count = |span| layout.ranges.values().filter(|r| r.span == span).count();
            assert_eq!(
                (count(Span::Year), count(Span::Month), count(Span::Day)),
                (27, 10, 36),
                "1999 to 2025, January to October 2026, 2026-11-01 to today"
            );
        }
        let ranges: Vec<&TimeRange> = layout.ranges.values().collect();
        for pair in ranges.windows(2) {
            assert!(pair[0].end_ms <= pair[1].start_ms, "disjoint: {pair:?}");
        }
        assert_eq!(ranges.len(), 73);
    }

    #[test]
    fn spans_have_names() {
        for span in [Span::Day, Span::Month, Span::Year] {
            assert_eq!(Span::from_name(span.name()), Some(span));
        }
        assert_eq!(Span::from_name("week"), None);
    }
}
