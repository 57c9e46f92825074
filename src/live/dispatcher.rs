//! The dispatcher: one task that owns the registry of live subscribers, turns each committed
//! group of log frames into shared rendered events and offers them to the subscribers that
//! match, never waiting for any of them.
//!
//! Registrations and removals are commands handled by this same task between groups, so a
//! registration cannot interleave with the dispatch of a group: the `seq` a subscriber starts
//! after is decided at a point where every later group is still ahead of the dispatcher.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Filter, LiveConfig, LiveEvent, Published, Stats};
use crate::record::{self, FRAME_HEADER};

/// Events dispatched between two yields to the runtime, so that a large group (up to 20,000
/// events) does not hold a worker thread for long.
const EVENTS_PER_YIELD: usize = 1024;

pub(crate) enum Command {
    Register {
        filter: Filter,
        reply: oneshot::Sender<Registered>,
    },
    Unregister(u64),
}

/// A registered subscriber's end. Dropping it unregisters the subscriber.
pub struct Registered {
    id: u64,
    /// The committed `seq` at registration: the channel carries only events after it.
    pub through: u64,
    pub events: mpsc::Receiver<Arc<LiveEvent>>,
    /// Set (before the channel closes) when the subscriber was dropped for lagging.
    pub lagged: Arc<AtomicBool>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Without this a subscriber whose filter never matches again would stay registered.
        let _ = self.commands.send(Command::Unregister(self.id));
    }
}

struct Subscriber {
    filter: Filter,
    /// Events with a `seq` at or below this are not for this subscriber.
    through: u64,
    /// `None` once lagged or gone, until removed at the end of the group.
    sender: Option<mpsc::Sender<Arc<LiveEvent>>>,
    lagged: Arc<AtomicBool>,
}

pub(crate) struct Dispatcher {
    config: LiveConfig,
    published: Arc<Published>,
    /// Registered subscribers, read by the writer to decide whether to publish at all.
    registered: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// Subscribers filtering on a `type`, by that type: an event only visits its own.
    by_kind: HashMap<String, Vec<u64>>,
    /// Subscribers without a `type` filter: every event visits them.
    any_kind: Vec<u64>,
    /// The last `seq` of the last group dispatched (or `committed` at start).
    dispatched_through: u64,
    /// Subscribers to remove once the current group is done.
    dead: Vec<u64>,
    /// Handed to each [`Registered`], to unregister itself.
    commands: mpsc::UnboundedSender<Command>,
    /// Bytes of the groups waiting in the queue (shared with the publisher).
    queued_bytes: Arc<AtomicUsize>,
}

impl Dispatcher {
    pub(crate) fn new(
        config: LiveConfig,
        published: Arc<Published>,
        registered: Arc<AtomicUsize>,
        stats: Arc<Stats>,
        commands: mpsc::UnboundedSender<Command>,
        queued_bytes: Arc<AtomicUsize>,
    ) -> Self {
        Dispatcher {
            config,
            dispatched_through: published.get(),
            published,
            registered,
            stats,
            next_id: 0,
            subscribers: HashMap::new(),
            by_kind: HashMap::new(),
            any_kind: Vec::new(),
            dead: Vec::new(),
            commands,
            queued_bytes,
        }
    }

    /// Runs until `shutdown` turns true; then drops every subscriber's sender, which ends
    /// their streams.
    pub(crate) async fn run(
        mut self,
        mut groups: mpsc::Receiver<super::Group>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = super::shutting_down(&mut shutdown) => break,
                Some(command) = commands.recv() => self.handle(command),
                Some(group) = groups.recv() => {
                    self.queued_bytes.fetch_sub(group.frames.len(), Ordering::AcqRel);
                    self.dispatch_after(group.after, &group.frames).await
                }
                else => break,
            }
        }
        self.registered.store(0, Ordering::SeqCst);
        self.subscribers.clear();
        // Registrations still queued are answered by dropping them: their streams end.
        commands.close();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { filter, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                // Count first, then read `committed`: pairs with the fence in
                // `Publisher::mark_published`, so every group committed after `through` is
                // handed over.
                self.registered.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let through = self.published.get();
                let (sender, events) = mpsc::channel(self.config.buffer);
                let lagged = Arc::new(AtomicBool::new(false));
                match &filter.kind {
                    Some(kind) => self.by_kind.entry(kind.clone()).or_default().push(id),
                    None => self.any_kind.push(id),
                }
                self.subscribers.insert(
                    id,
                    Subscriber {
                        filter,
                        through,
                        sender: Some(sender),
                        lagged: lagged.clone(),
                    },
                );
                let registered = Registered {
                    id,
                    through,
                    events,
                    lagged,
                    commands: self.commands.clone(),
                };
                // If the requester is gone, dropping the answer unregisters it.
                let _ = reply.send(registered);
            }
            Command::Unregister(id) => self.remove(id),
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        let list = match &subscriber.filter.kind {
            Some(kind) => self.by_kind.get_mut(kind),
            None => Some(&mut self.any_kind),
        };
        if let Some(list) = list {
            list.retain(|&other| other != id);
            if list.is_empty() {
                if let Some(kind) = &subscriber.filter.kind {
                    self.by_kind.remove(kind);
                }
            }
        }
        self.registered.fetch_sub(1, Ordering::SeqCst);
    }

    /// Dispatches one committed group of consecutive `seq`s: `frames` as the writer
    /// appended them.
    #[cfg(test)]
    async fn dispatch(&mut self, frames: &[u8]) {
        let Some(first) = frames
            .get(..FRAME_HEADER)
            .map(|header| record::read_header(header.try_into().expect("header size")).2)
        else {
            return;
        };
        self.dispatch_after(first - 1, frames).await
    }

    /// Dispatches one committed group that directly follows the event at `after` (`seq`s
    /// need not be consecutive: a cluster's come from Redis entry ids).
    async fn dispatch_after(&mut self, after: u64, frames: &[u8]) {
        if frames.len() < FRAME_HEADER {
            return;
        }
        let mut lagged = 0u64;
        if after > self.dispatched_through {
            // Groups between were committed but never reached us: either nobody was
            // registered (then every subscriber registered after them) or the queue was full
            // (then those who were registered missed events and must resume from the store).
            for (id, subscriber) in &mut self.subscribers {
                if subscriber.through.max(self.dispatched_through) < after {
                    Self::lag(subscriber);
                    self.dead.push(*id);
                    lagged += 1;
                }
            }
        }

        let mut at = 0;
        let mut dispatched = 0;
        let mut last = self.dispatched_through;
        while let Some(header) = frames.get(at..at + FRAME_HEADER) {
            let (len, _, seq) = record::read_header(header.try_into().expect("header size"));
            let payload = &frames[at + FRAME_HEADER..at + FRAME_HEADER + len];
            at += FRAME_HEADER + len;
            last = seq;
            let Some(event) = record::decode_payload(seq, payload) else {
                // The writer framed it moments ago from a payload it encoded itself.
                tracing::error!(
                    seq,
                    "undecodable payload in a committed group; not streamed"
                );
                continue;
            };
            let typed = self.by_kind.get(&event.kind).map_or(&[][..], Vec::as_slice);
            let mut shared: Option<Arc<LiveEvent>> = None;
            for id in typed.iter().chain(&self.any_kind) {
                let subscriber = self.subscribers.get_mut(id).expect("indexed ids exist");
                if seq <= subscriber.through || !subscriber.filter.matches_besides_kind(&event) {
                    continue;
                }
                let Some(sender) = &subscriber.sender else {
                    continue;
                };
                let item = shared.get_or_insert_with(|| LiveEvent::render(&event));
                match sender.try_send(item.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Self::lag(subscriber);
                        lagged += 1;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => subscriber.sender = None,
                }
                if subscriber.sender.is_none() {
                    self.dead.push(*id);
                }
            }
            dispatched += 1;
            if dispatched % EVENTS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        self.dispatched_through = last;

        for id in std::mem::take(&mut self.dead) {
            self.remove(id);
        }
        if lagged > 0 {
            self.stats.lagged.fetch_add(lagged, Ordering::Relaxed);
            tracing::info!(
                subscribers = lagged,
                buffer = self.config.buffer,
                through_seq = last,
                "stream subscribers lagged out (too far behind); they can resume from their last id"
            );
        }
    }

    fn lag(subscriber: &mut Subscriber) {
        // The flag first: the stream reads it once its channel reports closed.
        subscriber.lagged.store(true, Ordering::Release);
        subscriber.sender = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;

    fn frames(events: &[(u64, &str, Option<&str>)]) -> Vec<u8> {
        let events = events.iter().map(|&(seq, kind, service)| {
            let event = NewEvent {
                id: None,
                kind: kind.into(),
                timestamp_ms: 0,
                timestamp_sent: true,
                service: service.map(str::to_owned),
                user_id: None,
                message: None,
                metadata: None,
            };
            (seq, event)
        });
        record::frames_of(events, "e", 0)
    }

    fn register(
        dispatcher: &mut Dispatcher,
        kind: Option<&str>,
        service: Option<&str>,
    ) -> Registered {
        let (reply, mut answer) = oneshot::channel();
        let filter = Filter {
            kind: kind.map(str::to_owned),
            service: service.map(str::to_owned),
            user_id: None,
        };
        dispatcher.handle(Command::Register { filter, reply });
        answer.try_recv().expect("registered at once")
    }

    fn drain(registered: &mut Registered) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(event) = registered.events.try_recv() {
            seqs.push(event.seq);
        }
        seqs
    }

    #[tokio::test]
    async fn events_reach_matching_subscribers_and_full_or_missed_ones_lag() {
        let published = Arc::new(Published::new(0));
        let registered = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Stats::default());
        let (commands, mut commands_rx) = mpsc::unbounded_channel();
        let config = LiveConfig {
            max_subscribers: 10,
            buffer: 2,
        };
        let mut dispatcher = Dispatcher::new(
            config,
            published.clone(),
            registered.clone(),
            stats.clone(),
            commands,
            Arc::new(AtomicUsize::new(0)),
        );

        let mut typed = register(&mut dispatcher, Some("a"), None);
        let mut by_service = register(&mut dispatcher, None, Some("s"));
        assert_eq!((typed.through, by_service.through), (0, 0));
        assert_eq!(registered.load(Ordering::SeqCst), 2);

        published.set(3);
        dispatcher
            .dispatch(&frames(&[
                (1, "a", Some("s")),
                (2, "b", Some("s")),
                (3, "a", None),
            ]))
            .await;
        assert_eq!(drain(&mut by_service), [1, 2]);

        // `typed` left 1 and 3 unread: its buffer of 2 is full, so 4 lags it out.
        published.set(4);
        dispatcher.dispatch(&frames(&[(4, "a", None)])).await;
        assert_eq!(drain(&mut typed), [1, 3], "what it had is still delivered");
        assert!(
            typed.events.try_recv().is_err(),
            "then its channel is closed"
        );
        assert!(typed.lagged.load(Ordering::Acquire));
        assert_eq!(stats.lagged.load(Ordering::Relaxed), 1);
        assert_eq!(registered.load(Ordering::SeqCst), 1);

        // Groups 5..=10 never reach the dispatcher (queue full): `by_service` needed them; a
        // subscriber registered after them did not.
        published.set(10);
        let mut late = register(&mut dispatcher, None, None);
        assert_eq!(late.through, 10);
        published.set(11);
        dispatcher.dispatch(&frames(&[(11, "b", Some("s"))])).await;
        assert!(by_service.lagged.load(Ordering::Acquire));
        assert_eq!(drain(&mut by_service), Vec::<u64>::new());
        assert_eq!(drain(&mut late), [11]);
        assert!(!late.lagged.load(Ordering::Acquire));
        assert_eq!(stats.lagged.load(Ordering::Relaxed), 2);

        // Registered after group 12..=13 was committed but before it was dispatched: its
        // starting point covers that group, so it gets only what follows.
        published.set(13);
        let mut mid = register(&mut dispatcher, None, None);
        assert_eq!(mid.through, 13);
        dispatcher
            .dispatch(&frames(&[(12, "x", None), (13, "x", None)]))
            .await;
        assert_eq!(drain(&mut late), [12, 13]);
        published.set(14);
        dispatcher.dispatch(&frames(&[(14, "x", None)])).await;
        assert_eq!(drain(&mut mid), [14]);
        assert_eq!(drain(&mut late), [14]);

        // A subscriber that goes away unregisters itself.
        assert_eq!(registered.load(Ordering::SeqCst), 2);
        drop(mid);
        dispatcher.handle(commands_rx.try_recv().expect("an unregistration"));
        assert_eq!(registered.load(Ordering::SeqCst), 1);
        assert_eq!(dispatcher.any_kind, [late.id]);
    }
}
