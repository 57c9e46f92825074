//! The indexer: follows the durable log into the store in large batches, off the
//! acknowledgement path, and deletes log segments once everything in them is indexed.
//!
//! After a crash it simply starts from the store's indexed position: whatever was logged but
//! not indexed is read again (the store skips ids it already has).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::log::{self, LogReader};
use super::Progress;
use crate::event::StoredEvent;
use crate::health::Health;
use crate::metrics::EventMetrics;
use crate::store::Store;
use crate::telemetry;

/// Most events per store transaction. The indexer takes whatever is committed up to this:
/// a few events at a time when traffic is light, full batches under load. Measured in the
/// sustained benchmark (lag held under a second): 10,000 -> 65k events/s, 20,000 -> 79k/s,
/// 50,000 -> 59k/s and 100 MB more peak memory.
const BATCH_EVENTS: usize = 20_000;

/// Runs until `stop` turns true; then returns after the batch in hand is stored.
pub async fn run(
    store: Arc<dyn Store>,
    metrics: Arc<EventMetrics>,
    health: Arc<Health>,
    log_dir: PathBuf,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reader = Some(LogReader::new(&log_dir, progress.indexed() + 1));
    let mut last_cleanup_seq = progress.indexed();
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let committed = progress.committed();
        if committed <= progress.indexed() {
            tokio::select! {
                _ = progress.committed_changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }

        let mut log_reader = reader
            .take()
            .expect("the reader is put back after each read");
        let read = tokio::task::spawn_blocking(move || {
            let events = log_reader.read(committed, BATCH_EVENTS);
            (log_reader, events)
        })
        .await;
        let events: Arc<Vec<StoredEvent>> = match read {
            Ok((log_reader, Ok(events))) => {
                reader = Some(log_reader);
                Arc::new(events)
            }
            Ok((log_reader, Err(err))) => {
                tracing::error!(error = format!("{err:#}"), "reading the durable log failed");
                reader = Some(log_reader);
                backoff(&mut failures, &mut stop).await;
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "the log reader task failed");
                return;
            }
        };
        let Some(last_seq) = events.last().map(|event| event.seq) else {
            continue;
        };

        // A batch in hand is retried until stored: the reader has moved past it.
        loop {
            let started = std::time::Instant::now();
            match store.append_batch(events.clone(), last_seq).await {
                Ok(outcome) => {
                    telemetry::index_batch(started.elapsed());
                    metrics.record(&events, &outcome.skipped);
                    if health.store_recovered() {
                        tracing::info!("the store accepts writes again");
                    }
                    failures = 0;
                    break;
                }
                Err(err) => {
                    let error = format!("{err:#}");
                    // Logged once per outage, not per retry.
                    if health.store_failed(error.clone()) {
                        tracing::error!(error, "indexing a batch failed; retrying");
                    }
                    backoff(&mut failures, &mut stop).await;
                    if *stop.borrow() {
                        return;
                    }
                }
            }
        }
        progress.set_indexed(last_seq);

        if last_seq - last_cleanup_seq >= 100_000 || last_seq == progress.committed() {
            last_cleanup_seq = last_seq;
            let dir = log_dir.clone();
            let cleanup =
                tokio::task::spawn_blocking(move || log::delete_indexed_segments(&dir, last_seq));
            if let Ok(Err(err)) = cleanup.await {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "deleting indexed log segments failed"
                );
            }
        }
    }
}

async fn backoff(failures: &mut u32, stop: &mut watch::Receiver<bool>) {
    *failures += 1;
    let delay = Duration::from_millis(50 << (*failures).min(6));
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}
