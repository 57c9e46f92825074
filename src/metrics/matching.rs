//! Counts of the events of one type and/or service over a window ending now: what alert
//! rules compare. From memory when it holds the window and counts the names exactly (alert
//! rules make their names tracked whatever `--max-tracked-types`), otherwise from the
//! store's rollups, which keep every name (by whole minutes).

use std::time::Duration;

use anyhow::Result;

use super::counts::Counts;
use super::{EventMetrics, MAX_EXACT_WINDOW_SECONDS};
use crate::store::{floor_to, MINUTE_MS, SECOND_MS};

/// What a name filter asks of memory.
#[derive(Clone, Copy)]
enum Wanted {
    Any,
    Id(u32),
    /// A name memory never saw, while it saw every name: no event has it.
    Never,
}

impl EventMetrics {
    /// Makes `kind` and `service` counted on their own whatever the limits, so that the
    /// rules filtering on them are answered exactly from memory.
    pub fn track_exactly(&self, kind: Option<&str>, service: Option<&str>) {
        let now = self.clock.now_ms();
        let mut counts = self.counts.lock().unwrap();
        if let Some(kind) = kind {
            counts.pairs.types.force(kind, now);
        }
        if let Some(service) = service {
            counts.pairs.services.force(service, now);
        }
    }

    /// Events with timestamps in the `window` ending now (to the second up to an hour, by
    /// whole minutes beyond) of type `kind` and service `service` when given.
    pub async fn count_matching(
        &self,
        window: Duration,
        kind: Option<&str>,
        service: Option<&str>,
    ) -> Result<u64> {
        let now = self.clock.now_ms();
        let window_ms = (window.as_secs() as i64).max(1) * SECOND_MS;
        let (from, to) = if window.as_secs() <= MAX_EXACT_WINDOW_SECONDS {
            let end = floor_to(now, SECOND_MS) + SECOND_MS;
            (end - window_ms, end)
        } else {
            let end = floor_to(now, MINUTE_MS) + MINUTE_MS;
            (end - floor_to(window_ms + MINUTE_MS - 1, MINUTE_MS), end)
        };
        if !self.store_only {
            let counts = self.counts.lock().unwrap();
            if let Some(count) = from_memory(&counts, from, to, kind, service) {
                return Ok(count);
            }
        }
        let (_, rows) = self.rolled_up(from, to, kind, service).await?;
        Ok(rows.iter().map(|row| row.count).sum())
    }
}

/// The count from memory, if it holds `[from, to)` and counts the names exactly there.
fn from_memory(
    counts: &Counts,
    from: i64,
    to: i64,
    kind: Option<&str>,
    service: Option<&str>,
) -> Option<u64> {
    let wanted = |names: &super::names::Names, name: Option<&str>| match name {
        None => Some(Wanted::Any),
        Some(name) => match names.get(name) {
            // A name counted exactly only from some time on: not before it.
            Some(id) if names.exact_from(id).is_some_and(|since| since > from) => None,
            Some(id) => Some(Wanted::Id(id)),
            None if names.folded() => None,
            None => Some(Wanted::Never),
        },
    };
    let kind = wanted(&counts.pairs.types, kind)?;
    let service = wanted(&counts.pairs.services, service)?;
    let mut total = 0;
    let held = counts.visit(from, to, |pair, count| {
        let (pair_kind, pair_service) = counts.pairs.get(pair);
        let kind_ok = match kind {
            Wanted::Any => true,
            Wanted::Id(id) => id == pair_kind,
            Wanted::Never => false,
        };
        let service_ok = match service {
            Wanted::Any => true,
            Wanted::Id(id) => Some(id) == pair_service,
            Wanted::Never => false,
        };
        if kind_ok && service_ok {
            total += count;
        }
    });
    held.then_some(total)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::metrics::tests::event;
    use crate::metrics::NameLimits;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// Asserts `count_matching` over the last minute for each `(type, service, count)`.
    async fn assert_last_minute(
        metrics: &EventMetrics,
        want: &[(Option<&str>, Option<&str>, u64)],
    ) {
        for &(kind, service, count) in want {
            let window = Duration::from_secs(60);
            let got = metrics.count_matching(window, kind, service).await.unwrap();
            assert_eq!(got, count, "type {kind:?}, service {service:?}");
        }
    }

    #[tokio::test]
    async fn names_beyond_the_cap_are_counted_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("events.db"), false).unwrap();
        let now = SystemClock.now_ms();
        let first = vec![
            event(1, now - 500, "a", Some("x")),
            event(2, now - 500, "b", None),
            event(3, now - 500, "c", Some("y")),
        ];
        store.append_batch(Arc::new(first), 3).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let limits = NameLimits {
            types: 1,
            services: 1,
        };
        let metrics = EventMetrics::load(store.clone(), Arc::new(SystemClock), limits)
            .await
            .unwrap();
        // Folded in memory: answered from the rollups.
        let folded = [
            (Some("c"), None, 1),
            (None, Some("y"), 1),
            (Some("a"), None, 1),
        ];
        assert_last_minute(&metrics, &folded).await;
        metrics.track_exactly(Some("c"), None);
        let later = vec![event(4, now, "c", None), event(5, now, "c", None)];
        store
            .append_batch(Arc::new(later.clone()), 5)
            .await
            .unwrap();
        metrics.record(&later, &[]);
        let tracked = [
            (Some("c"), None, 3),
            (Some("never"), None, 0),
            (None, None, 5),
        ];
        assert_last_minute(&metrics, &tracked).await;
        // A window that starts after the name was tracked is answered from memory alone.
        let counts = metrics.counts.lock().unwrap();
        let from = floor_to(now, SECOND_MS) + 2 * SECOND_MS;
        assert_eq!(
            from_memory(&counts, from, from + SECOND_MS, Some("c"), None),
            Some(0)
        );
        assert_eq!(
            from_memory(&counts, from - 60_000, from, Some("c"), None),
            None
        );
    }
}
