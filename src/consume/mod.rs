//! The consume loop: moves events from the queue into the store, the same loop for both
//! modes. A [`Source`] gives batches (the [`indexer`] reads the embedded log, the
//! [`worker`] a Redis consumer group); the loop stores each one ([`Storing`]: retried with
//! backoff for as long as the store is unavailable, logged once per outage, reported to
//! health; a batch the store rejects goes back to the source, which decides what to do with
//! it), tells the source it is stored (which then acknowledges it), and reads the next batch
//! while storing this one when more is waiting. The store's error says which it is
//! ([`StoreError`]).
//!
//! Nothing is acknowledged before the store has it, so a crash at any point leaves the batch
//! to be read again; storing it twice is harmless, the store skips ids it already has.

pub mod indexer;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::event::StoredEvent;
use crate::health::Component;
use crate::store::{AppendOutcome, Store, StoreError};
use crate::telemetry;

/// Backoff after a failure: from the first to the last, doubling.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Events to store, in `seq` order, and what the source needs to acknowledge them.
pub struct Batch<T> {
    pub events: Arc<Vec<StoredEvent>>,
    /// The position the store records once it has the batch.
    pub through: u64,
    pub token: T,
}

/// What to do after a step.
pub enum Flow<T> {
    Continue,
    /// Store this batch again (after the source waited as it saw fit).
    Retry(Batch<T>),
    Stopped,
}

/// Where batches come from.
#[async_trait]
pub trait Source: Send {
    /// What the source keeps with a batch to acknowledge it.
    type Token: Send + Sync;

    /// The next batch, waiting for one; `None` once stopping.
    async fn next(&mut self) -> Option<Batch<Self::Token>>;

    /// Whether another batch is probably waiting already: the loop then reads it
    /// ([`prefetch`](Self::prefetch)) while the store takes this one, keeping the store (the
    /// slow part) busy.
    fn more_waiting(&self, batch: &Batch<Self::Token>) -> bool;

    /// One attempt at the next batch, without waiting for one to come.
    async fn prefetch(&mut self) -> Option<Batch<Self::Token>>;

    /// The store has `batch`: acknowledge it.
    async fn stored(&mut self, batch: Batch<Self::Token>) -> Flow<Self::Token>;

    /// The store rejected `batch` ([`StoreError::Rejected`]): something in the batch is at
    /// fault, not the store. The source decides: store its events one by one and set aside
    /// what keeps failing, or retry.
    async fn rejected(
        &mut self,
        batch: Batch<Self::Token>,
        error: anyhow::Error,
        storing: &mut Storing,
    ) -> Flow<Self::Token>;
}

/// Runs until the source ends (when `stop` turns true), storing everything it gave.
pub async fn run<S: Source>(mut source: S, mut storing: Storing) {
    let mut next = source.next().await;
    while let Some(batch) = next.take() {
        let prefetch = !storing.stopping() && source.more_waiting(&batch);
        let (stored, prefetched) = if prefetch {
            tokio::join!(
                storing.store(&batch.events, batch.through),
                source.prefetch()
            )
        } else {
            (storing.store(&batch.events, batch.through).await, None)
        };
        let mut flow = match stored {
            Stored::Yes => source.stored(batch).await,
            Stored::Rejected(error) => source.rejected(batch, error, &mut storing).await,
            // Unacknowledged: read again after the restart.
            Stored::Stopped => return,
        };
        while let Flow::Retry(batch) = flow {
            flow = match storing.store(&batch.events, batch.through).await {
                Stored::Yes => source.stored(batch).await,
                Stored::Rejected(error) => source.rejected(batch, error, &mut storing).await,
                Stored::Stopped => return,
            };
        }
        if let Flow::Stopped = flow {
            return;
        }
        next = match prefetched {
            // A batch read while stopping is still stored.
            Some(prefetched) => Some(prefetched),
            None if storing.stopping() => None,
            None => source.next().await,
        };
    }
}

/// Called with each stored batch and what the store skipped as already stored (to count
/// events in memory, before the batch is reported stored).
pub type OnStored = Arc<dyn Fn(&[StoredEvent], &AppendOutcome) + Send + Sync>;

/// The store's side of the loop: writes, the outage they may meet, and what is told of it.
pub struct Storing {
    store: Arc<dyn Store>,
    on_stored: Option<OnStored>,
    outage: Outage,
    stop: watch::Receiver<bool>,
}

/// How storing a batch went.
pub enum Stored {
    Yes,
    /// Rejected by the store: the batch is at fault, not the store.
    Rejected(anyhow::Error),
    /// Stopped while waiting for the store to come back.
    Stopped,
}

impl Storing {
    pub fn new(
        store: Arc<dyn Store>,
        on_stored: Option<OnStored>,
        health: Arc<Component>,
        stop: watch::Receiver<bool>,
    ) -> Storing {
        Storing {
            store,
            on_stored,
            outage: Outage::new("the store", Some(health)),
            stop,
        }
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Stores `events` (recording `through`), retrying for as long as the store is
    /// unavailable.
    pub async fn store(&mut self, events: &Arc<Vec<StoredEvent>>, through: u64) -> Stored {
        loop {
            let started = Instant::now();
            match self.store.append_batch(events.clone(), through).await {
                Ok(outcome) => {
                    telemetry::index_batch(started.elapsed());
                    self.outage.recovered();
                    if let Some(on_stored) = &self.on_stored {
                        on_stored(events, &outcome);
                    }
                    return Stored::Yes;
                }
                Err(StoreError::Rejected(err)) => return Stored::Rejected(err),
                Err(StoreError::Unavailable(err)) => {
                    let delay = self.outage.failed(&format!("{err:#}"));
                    if !sleep(&mut self.stop, delay).await {
                        return Stored::Stopped;
                    }
                }
            }
        }
    }

    /// Waits `delay`; `false` if a stop came first.
    pub async fn sleep(&mut self, delay: Duration) -> bool {
        sleep(&mut self.stop, delay).await
    }
}

/// Sleeps `delay`, or less if `stop` turns true; `false` then.
pub async fn sleep(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
    }
}

/// One dependency's failures, with the backoff to wait before each retry. Logged once per
/// outage: an error when a failure persists past one retry (a single failure that the next
/// attempt gets past, such as a connection found dead and replaced, is no outage), an info
/// line when it ends; reported to health as it starts and ends.
pub struct Outage {
    what: &'static str,
    health: Option<Arc<Component>>,
    /// When the current run of failures began, and whether it was logged as an outage.
    since: Option<(Instant, bool)>,
    delay: Duration,
}

impl Outage {
    pub fn new(what: &'static str, health: Option<Arc<Component>>) -> Outage {
        Outage {
            what,
            health,
            since: None,
            delay: FIRST_BACKOFF,
        }
    }

    /// Records a failure; returns how long to wait before retrying.
    pub fn failed(&mut self, err: &dyn std::fmt::Display) -> Duration {
        if let Some(health) = &self.health {
            health.failed(err.to_string());
        }
        match &mut self.since {
            None => {
                self.since = Some((Instant::now(), false));
                self.delay = FIRST_BACKOFF;
                tracing::debug!(error = %err, "{} failed: retrying", self.what);
            }
            Some((_, logged @ false)) => {
                *logged = true;
                tracing::error!(
                    error = %err,
                    "{} is unavailable: retrying with backoff, acknowledging nothing meanwhile",
                    self.what
                );
            }
            Some((_, true)) => {}
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        delay
    }

    pub fn recovered(&mut self) {
        if let Some(health) = &self.health {
            health.recovered();
        }
        if let Some((since, logged)) = self.since.take() {
            self.delay = FIRST_BACKOFF;
            if logged {
                tracing::info!(after = ?since.elapsed(), "{} is available again", self.what);
            }
        }
    }
}
