//! The single log writer: group commit. It takes every submission waiting when it wakes,
//! sets aside events whose client id was accepted before (duplicates and conflicts), assigns
//! `seq`s, appends all their frames in one write (and one fdatasync with `--durability
//! fsync`), then answers each submission and hands the committed frames to the live stream
//! (without ever waiting for it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

use super::dedup::{RecentIds, Seen};
use super::log::LogWriter;
use super::{record, CommitOutcome, Ingest, IngestError, IngestInner, Progress, Submission};
use crate::clock::{Clock, SystemClock};
use crate::health::Health;
use crate::live::Publisher;
use crate::telemetry::CommitMetrics;

/// Upper bound of events in one group commit, so one write stays a few MiB.
const MAX_GROUP_EVENTS: usize = 20_000;

pub struct WriterConfig {
    pub max_pending: u64,
    pub max_backlog: u64,
}

/// Starts the writer thread. `log` is `None` for the benchmark's null store, which
/// acknowledges without writing. `publisher`, if any, receives every committed group for the
/// live stream. The thread ends once every [`Ingest`] handle is dropped and what they
/// submitted is committed.
pub fn start(
    log: Option<LogWriter>,
    dedup: RecentIds,
    progress: Arc<Progress>,
    config: WriterConfig,
    publisher: Option<Publisher>,
    health: Arc<Health>,
) -> (Ingest, JoinHandle<()>) {
    let (submissions, receiver) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        log,
        dedup,
        next_seq: progress.committed() + 1,
        progress: progress.clone(),
        pending: pending.clone(),
        health,
        receiver,
        commit_metrics: CommitMetrics::new(),
        publisher,
    };
    let thread = std::thread::Builder::new()
        .name("eventide-log-writer".into())
        .spawn(move || writer.run())
        .expect("spawning the log writer thread");
    let ingest = Ingest {
        inner: Arc::new(IngestInner {
            sink: super::Sink::Log(submissions),
            pending,
            max_pending: config.max_pending,
            max_backlog: config.max_backlog,
            progress,
        }),
    };
    (ingest, thread)
}

struct Writer {
    log: Option<LogWriter>,
    dedup: RecentIds,
    next_seq: u64,
    progress: Arc<Progress>,
    pending: Arc<AtomicU64>,
    health: Arc<Health>,
    receiver: mpsc::UnboundedReceiver<Submission>,
    commit_metrics: CommitMetrics,
    publisher: Option<Publisher>,
}

impl Writer {
    fn run(mut self) {
        let mut group: Vec<Submission> = Vec::new();
        let mut frames: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut outcomes: Vec<CommitOutcome> = Vec::new();
        let mut newly_remembered: Vec<u128> = Vec::new();
        while let Some(first) = self.receiver.blocking_recv() {
            let mut events = first.batch.len();
            group.push(first);
            while events < MAX_GROUP_EVENTS {
                let Ok(next) = self.receiver.try_recv() else {
                    break;
                };
                events += next.batch.len();
                group.push(next);
            }

            frames.clear();
            newly_remembered.clear();
            let first_seq = self.next_seq;
            for submission in &group {
                let batch = &submission.batch;
                let mut outcome = CommitOutcome::default();
                for event in &batch.events {
                    if let Some((id_hash, content_hash)) = event.client {
                        match self
                            .dedup
                            .insert(id_hash, content_hash, batch.received_at_ms)
                        {
                            Seen::New => newly_remembered.push(id_hash),
                            Seen::Duplicate => {
                                outcome.duplicates += 1;
                                continue;
                            }
                            Seen::Conflict => {
                                outcome.conflicts += 1;
                                continue;
                            }
                        }
                    }
                    let payload = &batch.payloads[event.payload.clone()];
                    record::write_frame(&mut frames, self.next_seq, payload);
                    self.next_seq += 1;
                }
                outcomes.push(outcome);
            }

            let started = Instant::now();
            let appended = match &mut self.log {
                Some(log) => log.append(&frames),
                None => Ok(()),
            };
            let took = started.elapsed();
            self.commit_metrics
                .record((self.next_seq - first_seq) as usize, took);
            // Before answering, so a client that retries at once sees the room it frees.
            self.pending.fetch_sub(events as u64, Ordering::AcqRel);
            match appended {
                Ok(()) => {
                    if self.health.log_recovered() {
                        tracing::info!("the durable log accepts writes again");
                    }
                    self.health
                        .committed(SystemClock.now_ms(), took.as_micros() as u64);
                    let last_seq = self.next_seq - 1;
                    if self.log.is_none() {
                        // Nothing to index: the null store is "indexed" as soon as committed.
                        self.progress.set_indexed(last_seq);
                    }
                    self.progress.set_committed(last_seq);
                    for (submission, outcome) in group.drain(..).zip(outcomes.drain(..)) {
                        let _ = submission.reply.send(Ok(outcome));
                    }
                    // After `set_committed` (the live stream's no-gap argument relies on that
                    // order) and after the answers, which need not wait for a copy.
                    if let Some(publisher) = &self.publisher {
                        publisher.publish(&frames);
                    }
                    if let Some(log) = &mut self.log {
                        if let Err(err) = log.roll_if_full(self.next_seq) {
                            tracing::error!(error = %err, "could not start a new log segment; will retry");
                        }
                    }
                }
                Err(err) => {
                    // Logged once per outage, not per request.
                    if self.health.log_failed(err.to_string()) {
                        tracing::error!(error = %err, "appending to the durable log failed; answering 503 until it works again");
                    }
                    for hash in newly_remembered.iter().rev() {
                        self.dedup.forget(*hash);
                    }
                    self.next_seq = first_seq;
                    outcomes.clear();
                    for submission in group.drain(..) {
                        let _ = submission
                            .reply
                            .send(Err(IngestError::LogUnavailable(err.to_string())));
                    }
                }
            }
        }
    }
}
