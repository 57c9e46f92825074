//! The indexer: the consume loop's source over the embedded durable log. It reads what the
//! writer has committed, in large batches off the acknowledgement path, reports each batch
//! indexed once stored, and deletes log segments once everything in them is indexed.
//!
//! After a crash it simply starts from the store's indexed position: whatever was logged but
//! not indexed is read again (the store skips ids it already has).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{sleep, Batch, Flow, Outage, Source, Storing};
use crate::event::StoredEvent;
use crate::health::Component;
use crate::queue::log::segments::{self, LogReader};
use crate::queue::log::{LogQueue, Progress};
use crate::store::Store;

/// Most events per store transaction. The indexer takes whatever is committed up to this:
/// a few events at a time when traffic is light, full batches under load. Measured in the
/// sustained benchmark (lag held under a second): 10,000 -> 65k events/s, 20,000 -> 79k/s,
/// 50,000 -> 59k/s and 100 MB more peak memory.
const BATCH_EVENTS: usize = 20_000;

/// A batch short of [`BATCH_EVENTS`] is read no sooner than this after the last read. Each
/// store transaction has costs that do not depend on its size (pages rewritten, rollup rows
/// updated: up to one per type and service in it); under a steady stream of single events
/// the indexer otherwise took a few hundred events at a time, spending most of its time on
/// them. Adds at most this to the visibility lag.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(100);

/// Segments are looked at for deletion after this many events indexed (or when caught up),
/// by a task beside the loop ([`clean_up_on_request`]).
const CLEANUP_EVERY: u64 = 100_000;

pub struct Indexer {
    /// `None` only while a read runs on the blocking pool.
    reader: Option<LogReader>,
    progress: Arc<Progress>,
    /// The last seq read from the log (ahead of the index while a batch is being stored).
    read_through: u64,
    last_cleanup_seq: u64,
    /// Asks the cleanup task for the segments indexed through a seq to be deleted.
    cleanup: watch::Sender<u64>,
    /// When the log was last read (`None`: not yet): see [`MIN_READ_INTERVAL`].
    last_read: Option<Instant>,
    outage: Outage,
    stop: watch::Receiver<bool>,
}

impl Indexer {
    /// Reads `queue`'s log from where the store's index stands; `store` is made durable
    /// before the log segments it indexed are deleted; `health` hears of the log being
    /// unreadable.
    pub fn new(
        queue: &LogQueue,
        store: Arc<dyn Store>,
        health: Arc<Component>,
        stop: watch::Receiver<bool>,
    ) -> Indexer {
        let progress = queue.progress().clone();
        let (cleanup, requests) = watch::channel(progress.indexed());
        tokio::spawn(clean_up_on_request(queue.dir().to_owned(), store, requests));
        Indexer {
            reader: Some(LogReader::new(queue.dir(), progress.indexed() + 1)),
            read_through: progress.indexed(),
            last_cleanup_seq: progress.indexed(),
            cleanup,
            last_read: None,
            progress,
            outage: Outage::new("reading the durable log", Some(health)),
            stop,
        }
    }

    /// Until when to let events gather before reading: see [`gathering_deadline`].
    fn gathering_until(&self, committed: u64) -> Option<Instant> {
        gathering_deadline(
            self.last_read,
            committed - self.read_through,
            Instant::now(),
        )
    }
}

/// Deletes the log segments of `dir` indexed through the latest seq asked for, each time one
/// is asked for, until the indexer is gone. Beside the consume loop rather than in it: the
/// store's flush before the deletion took up to a few hundred milliseconds, during which no
/// batch was stored (the sustained rate was 6% higher without that wait). Requests made
/// while a deletion runs are taken together: the next one starts from the latest.
async fn clean_up_on_request(
    dir: PathBuf,
    store: Arc<dyn Store>,
    mut requests: watch::Receiver<u64>,
) {
    while requests.changed().await.is_ok() {
        let through = *requests.borrow_and_update();
        if let Err(err) = delete_indexed_segments(dir.clone(), &*store, through).await {
            tracing::warn!(
                error = format!("{err:#}"),
                "deleting indexed log segments failed"
            );
        }
    }
}

/// Deletes the log segments of `dir` whose every event is indexed (through `through`), once
/// `store` has made them durable: the segment may be their only copy that survives a power
/// loss.
async fn delete_indexed_segments(
    dir: PathBuf,
    store: &dyn Store,
    through: u64,
) -> anyhow::Result<()> {
    let listed = dir.clone();
    let indexed =
        tokio::task::spawn_blocking(move || segments::indexed_segments(&listed, through)).await??;
    if indexed.is_empty() {
        return Ok(());
    }
    store.make_durable().await?;
    tokio::task::spawn_blocking(move || segments::delete_segments(&dir, &indexed)).await?
}

/// Until when to let events gather before the next read, with `waiting` events committed
/// beyond the last one read: while less than a full batch waits and [`MIN_READ_INTERVAL`]
/// has not passed since the last read, at `last_read`.
fn gathering_deadline(last_read: Option<Instant>, waiting: u64, now: Instant) -> Option<Instant> {
    let due = last_read? + MIN_READ_INTERVAL;
    (waiting < BATCH_EVENTS as u64 && due > now).then_some(due)
}

#[async_trait]
impl Source for Indexer {
    type Token = ();

    async fn next(&mut self) -> Option<Batch<()>> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let committed = self.progress.committed();
            if committed <= self.read_through {
                tokio::select! {
                    _ = self.progress.committed_changed() => {}
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            if let Some(due) = self.gathering_until(committed) {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            self.last_read = Some(Instant::now());
            let mut reader = self
                .reader
                .take()
                .expect("the reader is put back after each read");
            let read = tokio::task::spawn_blocking(move || {
                let events = reader.read(committed, BATCH_EVENTS);
                (reader, events)
            })
            .await;
            let events: Vec<StoredEvent> = match read {
                Ok((reader, Ok(events))) => {
                    self.reader = Some(reader);
                    self.outage.recovered();
                    events
                }
                Ok((reader, Err(err))) => {
                    self.reader = Some(reader);
                    let delay = self.outage.failed(&format!("{err:#}"));
                    if !sleep(&mut self.stop, delay).await {
                        return None;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::error!(error = %err, "the log reader task failed");
                    return None;
                }
            };
            let Some(through) = events.last().map(|event| event.seq) else {
                continue;
            };
            self.read_through = through;
            return Some(Batch {
                events: Arc::new(events),
                through,
                token: (),
            });
        }
    }

    /// More is committed beyond this batch.
    fn more_waiting(&self, batch: &Batch<()>) -> bool {
        self.progress.committed() > batch.through
    }

    async fn prefetch(&mut self) -> Option<Batch<()>> {
        let committed = self.progress.committed();
        if committed <= self.read_through || self.gathering_until(committed).is_some() {
            return None;
        }
        self.next().await
    }

    async fn stored(&mut self, batch: Batch<()>) -> Flow<()> {
        let through = batch.through;
        self.progress.set_indexed(through);
        if through - self.last_cleanup_seq >= CLEANUP_EVERY || through == self.progress.committed()
        {
            self.last_cleanup_seq = through;
            self.cleanup.send_replace(through);
        }
        Flow::Continue
    }

    /// Events in the log were valid when acknowledged and cannot be set aside: a batch the
    /// store rejects is retried (with backoff) until the store takes it.
    async fn rejected(
        &mut self,
        batch: Batch<()>,
        error: anyhow::Error,
        storing: &mut Storing,
    ) -> Flow<()> {
        let delay = self
            .outage
            .failed(&format!("the store rejected a batch: {error:#}"));
        if storing.sleep(delay).await {
            Flow::Retry(batch)
        } else {
            Flow::Stopped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::null::NullStore;

    fn segment_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn indexed_segments_are_deleted_beside_the_loop_until_the_indexer_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let name = |first_seq: u64| format!("{first_seq:020}.log");
        for first_seq in [1, 101, 201] {
            std::fs::write(dir.path().join(name(first_seq)), b"").unwrap();
        }
        let (requests, received) = watch::channel(0);
        let task = tokio::spawn(clean_up_on_request(
            dir.path().to_owned(),
            Arc::new(NullStore::default()),
            received,
        ));
        // Indexed through 150: the first segment (1-100) is whole, the second is not.
        requests.send_replace(150);
        let deadline = Instant::now() + Duration::from_secs(10);
        while segment_files(dir.path()) != [name(101), name(201)] {
            assert!(Instant::now() < deadline, "{:?}", segment_files(dir.path()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The segment being written (the last) stays, whatever is indexed.
        requests.send_replace(1_000);
        drop(requests);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends with the indexer")
            .unwrap();
        assert_eq!(segment_files(dir.path()), [name(201)]);
    }

    #[test]
    fn a_part_batch_gathers_until_the_interval_has_passed() {
        let read = Instant::now();
        assert_eq!(gathering_deadline(None, 1, read), None, "never read yet");
        let soon = read + MIN_READ_INTERVAL / 2;
        assert_eq!(
            gathering_deadline(Some(read), 1, soon),
            Some(read + MIN_READ_INTERVAL)
        );
        assert_eq!(
            gathering_deadline(Some(read), BATCH_EVENTS as u64 - 1, soon),
            Some(read + MIN_READ_INTERVAL)
        );
        // A full batch is read at once, and anything once the interval has passed.
        assert_eq!(
            gathering_deadline(Some(read), BATCH_EVENTS as u64, soon),
            None
        );
        assert_eq!(
            gathering_deadline(Some(read), 1, read + MIN_READ_INTERVAL),
            None
        );
    }
}
