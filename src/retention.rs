//! Retention: events older than `--retention` (by their timestamp) are deleted by a
//! background job, once at start and then every `--retention-interval`, and refused at
//! ingest. The store does the deleting in short steps (whole days dropped, the boundary day
//! trimmed by rows); the in-memory metrics forget the same buckets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::config::format_duration;
use crate::event::timefmt::format_rfc3339_ms;
use crate::health::Component;
use crate::metrics::EventMetrics;
use crate::store::{Purged, Store};

/// The retention settings and what the last run did.
pub struct Retention {
    /// `None`: events are kept forever.
    keep: Option<Duration>,
    interval: Duration,
    last_run: Mutex<Option<Run>>,
}

/// One run of the job.
#[derive(Debug, Clone)]
pub struct Run {
    pub started_at_ms: i64,
    pub took: Duration,
    /// Events with timestamps before this were deleted.
    pub cutoff_ms: i64,
    pub purged: Purged,
    pub error: Option<String>,
}

impl Retention {
    /// `keep` of zero keeps events forever.
    pub fn new(keep: Duration, interval: Duration) -> Retention {
        Retention {
            keep: (!keep.is_zero()).then_some(keep),
            interval,
            last_run: Mutex::new(None),
        }
    }

    /// The oldest event timestamp kept at `now_ms`, if events expire at all.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        let keep = self.keep?;
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        Some(now_ms.saturating_sub(keep_ms))
    }

    /// Why an event older than `cutoff_ms` (from [`cutoff_ms`](Self::cutoff_ms)) is refused.
    pub fn refusal(&self, cutoff_ms: i64) -> String {
        format!(
            "is older than the retention of {} (events before {} are deleted)",
            format_duration(self.keep.unwrap_or_default()),
            format_rfc3339_ms(cutoff_ms)
        )
    }

    /// Deletes what is older than the retention now; remembers and returns what it did.
    pub async fn run_once(
        &self,
        store: &dyn Store,
        metrics: &EventMetrics,
        clock: &dyn Clock,
    ) -> Option<Run> {
        let started_at_ms = clock.now_ms();
        let cutoff_ms = self.cutoff_ms(started_at_ms)?;
        let started = Instant::now();
        let (purged, error) = match store.purge_before(cutoff_ms).await {
            Ok(purged) => (purged, None),
            Err(err) => (Purged::default(), Some(format!("{err:#}"))),
        };
        // Even after a failure part way, what the store did delete is already gone, and the
        // next run catches up; the counts are rebuilt exactly only at the next start.
        metrics.forget_before(cutoff_ms, purged.events);
        let run = Run {
            started_at_ms,
            took: started.elapsed(),
            cutoff_ms,
            purged,
            error,
        };
        match &run.error {
            None => tracing::info!(
                events = run.purged.events,
                partitions = run.purged.partitions,
                longest_step_ms = run.purged.longest_step.as_millis() as u64,
                took_ms = run.took.as_millis() as u64,
                cutoff = %format_rfc3339_ms(cutoff_ms),
                "retention run"
            ),
            Some(error) => tracing::error!(%error, "retention run failed"),
        }
        *self.last_run.lock().unwrap() = Some(run.clone());
        Some(run)
    }

    /// Runs the job now and then every interval until `stop` changes.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        metrics: Arc<EventMetrics>,
        clock: Arc<dyn Clock>,
        health: Arc<Component>,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.keep.is_none() {
            return;
        }
        // The first tick is immediate: a run at start.
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let run = self.run_once(store.as_ref(), &metrics, clock.as_ref()).await;
                    match run.and_then(|run| run.error) {
                        Some(error) => {
                            health.failed(error);
                        }
                        None => {
                            health.recovered();
                        }
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// The settings and the last run, for `/health/detailed`.
    pub fn report(&self) -> RetentionReport {
        let last_run = self.last_run.lock().unwrap().clone().map(|run| RunReport {
            at: format_rfc3339_ms(run.started_at_ms),
            took_ms: run.took.as_secs_f64() * 1000.0,
            cutoff: format_rfc3339_ms(run.cutoff_ms),
            events_deleted: run.purged.events,
            partitions_dropped: run.purged.partitions,
            longest_step_ms: run.purged.longest_step.as_secs_f64() * 1000.0,
            error: run.error,
        });
        RetentionReport {
            retention: self.keep.map_or("0".to_owned(), format_duration),
            keeps_forever: self.keep.is_none(),
            interval: format_duration(self.interval),
            last_run,
        }
    }
}

/// What `/health/detailed` says of retention.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionReport {
    /// `--retention`, e.g. `30d`; `0` keeps events forever.
    pub retention: String,
    pub keeps_forever: bool,
    /// `--retention-interval`: how often the job runs.
    pub interval: String,
    /// `null` until the job first ran.
    #[schema(required = true)]
    pub last_run: Option<RunReport>,
}

/// What the job's last run did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunReport {
    /// When it started.
    #[schema(format = DateTime)]
    pub at: String,
    pub took_ms: f64,
    /// Events with timestamps before this were deleted.
    #[schema(format = DateTime)]
    pub cutoff: String,
    pub events_deleted: u64,
    pub partitions_dropped: u64,
    /// The longest single step: how long indexing had to wait for retention at most.
    pub longest_step_ms: f64,
    /// Why the run failed, part way or at once; `null` when it succeeded.
    #[schema(required = true)]
    pub error: Option<String>,
}
