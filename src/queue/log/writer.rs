//! The single log writer: group commit. It takes every submission waiting when it wakes,
//! sets aside events whose client id was accepted before (duplicates and conflicts), assigns
//! `seq`s, appends all their frames in one write (and one fdatasync with `--durability
//! fsync`, at most one a millisecond while many requests are in progress), marks the
//! committed frames published, answers each submission, and then hands the frames to the live
//! stream (without ever waiting for it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::dedup::{RecentIds, Seen};
use super::segments::LogWriter;
use super::Progress;
use crate::clock::{Clock, SystemClock};
use crate::health::{Component, LastCommit};
use crate::live::Publisher;
use crate::queue::{CommitOutcome, IngestError, PreparedBatch};
use crate::record;
use crate::telemetry::CommitMetrics;

/// Upper bound of events in one group commit, so one write stays a few MiB.
const MAX_GROUP_EVENTS: usize = 20_000;

/// With fsync, under load, a group is flushed no sooner than this after the previous flush
/// began, to gather what arrives meanwhile. A flush cost about 80 µs of CPU here, whatever it
/// carried: unpaced, 256 connections made 2,000–3,000 small flushes a second, a tenth of the
/// machine's CPU.
const FLUSH_INTERVAL: Duration = Duration::from_millis(1);

/// A flush waits out [`FLUSH_INTERVAL`] only while at least this many other requests are in
/// progress, enough to keep the cores busy meanwhile. With fewer the wait idled them: at 50
/// connections (about 40 others) it cost 11% of the rate. One client never waits.
const OTHERS_IN_PROGRESS: usize = 64;

/// What the writer is sent.
pub(super) enum Message {
    /// A batch to commit, and where to answer.
    Submit {
        batch: PreparedBatch,
        reply: oneshot::Sender<Result<CommitOutcome, IngestError>>,
    },
    /// Commit what came before, then stop.
    Close,
}

type Submission = (
    PreparedBatch,
    oneshot::Sender<Result<CommitOutcome, IngestError>>,
);

pub(super) struct Writer {
    log: LogWriter,
    dedup: RecentIds,
    next_seq: u64,
    progress: Arc<Progress>,
    health: Arc<Component>,
    last_commit: Arc<LastCommit>,
    receiver: mpsc::UnboundedReceiver<Message>,
    commit_metrics: CommitMetrics,
    requests_in_progress: Arc<AtomicUsize>,
}

impl Writer {
    pub(super) fn new(
        log: LogWriter,
        dedup: RecentIds,
        progress: Arc<Progress>,
        receiver: mpsc::UnboundedReceiver<Message>,
        health: Arc<Component>,
        last_commit: Arc<LastCommit>,
        requests_in_progress: Arc<AtomicUsize>,
    ) -> Writer {
        Writer {
            log,
            dedup,
            next_seq: progress.committed() + 1,
            progress,
            health,
            last_commit,
            receiver,
            commit_metrics: CommitMetrics::new(),
            requests_in_progress,
        }
    }

    /// Commits until closed; `publisher` gets every committed group for the live stream.
    pub(super) fn run(mut self, publisher: Publisher) {
        let mut group: Vec<Submission> = Vec::new();
        let mut frames: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut closing = false;
        let mut last_flush = Instant::now();
        while !closing {
            let Some(first) = self.receiver.blocking_recv() else {
                break;
            };
            let mut events = 0;
            closing = self.take(Some(first), &mut group, &mut events);
            if !closing && events < MAX_GROUP_EVENTS {
                let wait = flush_wait(
                    self.log.flushes(),
                    self.requests_in_progress.load(Ordering::Relaxed),
                    group.len(),
                    last_flush.elapsed(),
                );
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                    let next = self.receiver.try_recv().ok();
                    closing = self.take(next, &mut group, &mut events);
                }
            }
            if !group.is_empty() {
                last_flush = Instant::now();
                self.commit(&mut group, &mut frames, &publisher);
            }
        }
        // Anything sent after the close is refused: the server is shutting down.
        self.receiver.close();
        while let Ok(Message::Submit { reply, .. }) = self.receiver.try_recv() {
            let _ = reply.send(Err(IngestError::ShuttingDown));
        }
    }

    /// Adds `message`, and the messages waiting after it, to `group` until it holds
    /// [`MAX_GROUP_EVENTS`]; returns whether one of them was the close.
    fn take(
        &mut self,
        mut message: Option<Message>,
        group: &mut Vec<Submission>,
        events: &mut usize,
    ) -> bool {
        let mut closing = false;
        while let Some(next) = message.take() {
            match next {
                Message::Submit { batch, reply } => {
                    *events += batch.len();
                    group.push((batch, reply));
                }
                Message::Close => closing = true,
            }
            if *events < MAX_GROUP_EVENTS && !closing {
                message = self.receiver.try_recv().ok();
            }
        }
        closing
    }

    /// Commits `group` in one write and answers each of its submissions.
    fn commit(&mut self, group: &mut Vec<Submission>, frames: &mut Vec<u8>, publisher: &Publisher) {
        frames.clear();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut newly_remembered: Vec<u128> = Vec::new();
        let first_seq = self.next_seq;
        for (batch, _) in group.iter() {
            let mut outcome = CommitOutcome::default();
            for event in batch.events() {
                if let Some((id_hash, content_hash)) = event.client {
                    match self
                        .dedup
                        .insert(id_hash, content_hash, batch.received_at_ms())
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
                record::write_frame(frames, self.next_seq, batch.payload(event));
                self.next_seq += 1;
            }
            outcomes.push(outcome);
        }

        let started = Instant::now();
        let appended = self.log.append(frames);
        let took = started.elapsed();
        self.commit_metrics
            .record((self.next_seq - first_seq) as usize, took);
        match appended {
            Ok(()) => {
                if self.health.recovered() {
                    tracing::info!("the durable log accepts writes again");
                }
                self.last_commit
                    .record(SystemClock.now_ms(), took.as_micros() as u64);
                self.progress.set_committed(self.next_seq - 1);
                // After `set_committed` (the live stream's no-gap argument relies on that
                // order) and before the answers: a client that subscribes once answered must
                // not be sent these events live.
                let subscribed = publisher.mark_published(frames);
                for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                // After the answers, which need not wait for a copy.
                if subscribed {
                    publisher.hand_over(first_seq - 1, frames);
                }
                if let Err(err) = self.log.roll_if_full(self.next_seq) {
                    tracing::error!(error = %err, "could not start a new log segment; will retry");
                }
            }
            Err(err) => {
                // Logged once per outage, not per request.
                if self.health.failed(err.to_string()) {
                    tracing::error!(error = %err, "appending to the durable log failed; answering 503 until it works again");
                }
                for hash in newly_remembered.iter().rev() {
                    self.dedup.forget(*hash);
                }
                self.next_seq = first_seq;
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(IngestError::LogUnavailable(err.to_string())));
                }
            }
        }
    }
}

/// How long a group of `submissions` waits for more before it is written, `since_flush`
/// after the previous flush began, with `in_progress` requests in progress (the group's
/// among them): while the log flushes and at least [`OTHERS_IN_PROGRESS`] others are in
/// progress, until [`FLUSH_INTERVAL`] after that flush; otherwise not at all.
fn flush_wait(
    flushes: bool,
    in_progress: usize,
    submissions: usize,
    since_flush: Duration,
) -> Duration {
    let others = in_progress.saturating_sub(submissions);
    if !flushes || others < OTHERS_IN_PROGRESS {
        return Duration::ZERO;
    }
    FLUSH_INTERVAL.saturating_sub(since_flush)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous flush began just now.
    const JUST_FLUSHED: Duration = Duration::ZERO;

    #[test]
    fn a_flush_waits_only_with_fsync_and_enough_others_in_progress() {
        let busy = OTHERS_IN_PROGRESS + 10;
        assert_eq!(flush_wait(true, busy, 10, JUST_FLUSHED), FLUSH_INTERVAL);
        // Without flushes there is nothing to save by waiting.
        assert_eq!(flush_wait(false, busy, 10, JUST_FLUSHED), Duration::ZERO);
        // The group's own requests are not others: one fewer than enough is none.
        assert_eq!(flush_wait(true, busy, 11, JUST_FLUSHED), Duration::ZERO);
        // One client sending request after request never waits.
        assert_eq!(flush_wait(true, 1, 1, JUST_FLUSHED), Duration::ZERO);
        assert_eq!(flush_wait(true, 0, 1, JUST_FLUSHED), Duration::ZERO);
    }

    #[test]
    fn a_flush_waits_out_the_interval_since_the_previous_one() {
        let busy = OTHERS_IN_PROGRESS + 1;
        let quarter = FLUSH_INTERVAL / 4;
        assert_eq!(flush_wait(true, busy, 1, quarter), FLUSH_INTERVAL - quarter);
        assert_eq!(flush_wait(true, busy, 1, FLUSH_INTERVAL), Duration::ZERO);
        assert_eq!(
            flush_wait(true, busy, 1, FLUSH_INTERVAL * 3),
            Duration::ZERO
        );
    }
}
