//! One subscriber's stream of events: the replay of stored events after a resume point, the
//! registration with the dispatcher, and then its live channel.
//!
//! A resuming subscriber goes through three phases:
//! 1. *Replaying*: not registered yet (so it cannot lag), it pages through the store from
//!    its resume point, each time after waiting for the indexer to reach what was committed,
//!    until a page comes back short: it has caught up with the recent past.
//! 2. *Bridging*: registered at `T` (the committed `seq` the dispatcher gave it), it replays
//!    the stored events up to `T`, once indexed. Meanwhile later events wait in its channel.
//! 3. *Following*: its channel, skipping what the replay already delivered.
//!
//! A subscriber without a resume point is registered at once and only follows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::dispatcher::Registered;
use super::{Filter, Live, LiveEvent, Slot, SubscribeError};
use crate::event::StoredEvent;
use crate::store::ReplayQuery;

/// Stored events read per query while replaying.
const PAGE: usize = 1000;

/// Most live events handed out at once (the HTTP layer writes them as one chunk).
const LIVE_BATCH: usize = 256;

/// How long one wait for the indexer lasts before checking again (shutdown ends it anyway).
const INDEX_WAIT: Duration = Duration::from_secs(60);

/// What [`Subscription::next`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The output holds the next events, in `seq` order (at least one).
    Events,
    /// The subscriber fell too far behind and was dropped by the dispatcher. `last_seq` is
    /// the last `seq` delivered (or its starting point): it can resume from there.
    Lagged { last_seq: u64 },
    /// The stream is over: the server is shutting down, or the store failed.
    End,
}

pub struct Subscription {
    live: Live,
    filter: Filter,
    /// The highest `seq` delivered, or the starting point before the first delivery.
    last_seq: u64,
    phase: Phase,
    _slot: Slot,
}

enum Phase {
    Replaying,
    Registering(oneshot::Receiver<Registered>),
    Bridging(Registered),
    Following(Registered),
    Ended,
}

impl Subscription {
    pub(super) async fn start(
        live: Live,
        filter: Filter,
        since: Option<u64>,
        slot: Slot,
    ) -> Result<Subscription, SubscribeError> {
        let (last_seq, phase) = match since {
            Some(since) => (since, Phase::Replaying),
            None => {
                let registered = live
                    .request_registration(filter.clone())?
                    .await
                    .map_err(|_| SubscribeError::ShuttingDown)?;
                (registered.through, Phase::Following(registered))
            }
        };
        Ok(Subscription {
            live,
            filter,
            last_seq,
            phase,
            _slot: slot,
        })
    }

    /// The highest `seq` delivered so far (or the starting point).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Waits for the next events and puts them in `out` (cleared first).
    ///
    /// Cancel-safe: dropping the future loses nothing (a store page being read is read
    /// again), so callers can race it against a heartbeat timer.
    pub async fn next(&mut self, out: &mut Vec<Arc<LiveEvent>>) -> Step {
        out.clear();
        loop {
            match &mut self.phase {
                Phase::Replaying => {
                    let target = self.live.shared.published.get();
                    if !self.replayable_through(target).await {
                        return self.end();
                    }
                    let Some(page) = self.read_page(None).await else {
                        return self.end();
                    };
                    if page.len() < PAGE {
                        self.phase = match self.live.request_registration(self.filter.clone()) {
                            Ok(answer) => Phase::Registering(answer),
                            Err(_) => Phase::Ended,
                        };
                    }
                    if self.deliver(&page, out) {
                        return Step::Events;
                    }
                }
                Phase::Registering(answer) => match answer.await {
                    Ok(registered) => self.phase = Phase::Bridging(registered),
                    Err(_) => return self.end(),
                },
                Phase::Bridging(registered) => {
                    let through = registered.through;
                    if self.last_seq < through {
                        if !self.replayable_through(through).await {
                            return self.end();
                        }
                        let Some(page) = self.read_page(Some(through)).await else {
                            return self.end();
                        };
                        if page.len() == PAGE {
                            if self.deliver(&page, out) {
                                return Step::Events;
                            }
                            continue;
                        }
                        self.follow();
                        if self.deliver(&page, out) {
                            return Step::Events;
                        }
                    } else {
                        self.follow();
                    }
                }
                Phase::Following(registered) => {
                    if registered.events.recv_many(out, LIVE_BATCH).await == 0 {
                        let lagged = registered.lagged.load(Ordering::Acquire);
                        self.phase = Phase::Ended;
                        return if lagged {
                            Step::Lagged {
                                last_seq: self.last_seq,
                            }
                        } else {
                            Step::End
                        };
                    }
                    // Registered at `T` while the replay went up to `T`: nothing is repeated,
                    // but a subscriber that resumed from beyond `T` skips up to its point.
                    let last_seq = self.last_seq;
                    out.retain(|event| event.seq > last_seq);
                    if let Some(last) = out.last() {
                        self.last_seq = last.seq;
                        return Step::Events;
                    }
                }
                Phase::Ended => return Step::End,
            }
        }
    }

    fn end(&mut self) -> Step {
        self.phase = Phase::Ended;
        Step::End
    }

    /// From bridging to following, keeping the registration.
    fn follow(&mut self) {
        if let Phase::Bridging(registered) = std::mem::replace(&mut self.phase, Phase::Ended) {
            self.phase = Phase::Following(registered);
        }
    }

    /// Renders `page` into `out` and advances; whether there was anything.
    fn deliver(&mut self, page: &[StoredEvent], out: &mut Vec<Arc<LiveEvent>>) -> bool {
        out.extend(page.iter().map(LiveEvent::render));
        match page.last() {
            Some(last) => {
                self.last_seq = last.seq;
                true
            }
            None => false,
        }
    }

    /// Waits until everything through `seq` can be replayed (the indexer has reached it);
    /// `false` if the server shuts down first.
    async fn replayable_through(&self, seq: u64) -> bool {
        let shared = &self.live.shared;
        let mut shutdown = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = super::shutting_down(&mut shutdown) => return false,
                reached = shared.replay.wait_replayable(seq, INDEX_WAIT) => {
                    if reached {
                        return true;
                    }
                }
            }
        }
    }

    /// The next stored page after `last_seq` (up to `max_seq`); `None` if the store failed,
    /// which ends the stream (the client can resume).
    async fn read_page(&self, max_seq: Option<u64>) -> Option<Vec<StoredEvent>> {
        let query = ReplayQuery {
            filter: self.filter.store_filter(max_seq),
            after_seq: self.last_seq,
            limit: PAGE,
        };
        match self.live.shared.replay.events_after(query).await {
            Ok(page) => Some(page),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), after_seq = self.last_seq, "reading stored events for a stream failed; ending it");
                None
            }
        }
    }
}
