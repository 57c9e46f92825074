//! The live event stream behind `GET /stream`: events are pushed to subscribers once they are
//! durably committed, in `seq` order, and a subscriber that resumes from a `seq` first replays
//! what it missed from the store, with neither a gap nor a duplicate at the seam.
//!
//! # Parts
//! - [`Publisher`]: held by whatever feeds the stream, the queue (the log writer thread, or
//!   a cluster node's reader of the Redis stream). After each group it takes, it records the
//!   position published through and, only while someone is registered, hands a copy of the
//!   group's frames to the dispatcher over a bounded queue with `try_send`: the queue never
//!   waits for subscribers. A group that does not fit is dropped; the dispatcher notices the
//!   hole in the `seq`s.
//! - [`Replay`]: where a resuming subscriber's past events come from, implemented by each
//!   queue (the store behind the log; the Redis stream and the store below it).
//! - The dispatcher ([`dispatcher`]), one task: decodes each group, renders each event's JSON
//!   once (only if some subscriber wants it) and offers it with `try_send` to the bounded
//!   channel of each matching subscriber, found through an index by `type`, so the cost of
//!   an event does not grow with the number of subscribers it does not match. A subscriber
//!   whose channel is full is told it lagged and dropped: it never slows anyone else.
//! - [`Subscription`] ([`subscription`]): one subscriber's view, replaying stored events
//!   (resume) and then following its live channel.
//! - [`Live`]: the handle request handlers use (subscriber slots, subscribing, shutdown).
//!
//! # Why nothing is lost or repeated
//! The publisher sets the published position *then* reads the number of registered
//! subscribers; a registration increments that number *then* reads the position (= `T`),
//! both with SeqCst fences in between. So every group published after `T` is handed over (or
//! dropped, which the dispatcher detects), and the dispatcher, which performs registrations
//! itself between groups, gives the new subscriber exactly the events with `seq > T`. A
//! resuming subscriber replays up to `T` (waiting until it can be replayed) before following
//! its channel, and skips live events it already replayed.

pub mod dispatcher;
pub mod subscription;

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::event::StoredEvent;
use crate::record;
use crate::store::{EventFilter, ReplayQuery};
use dispatcher::{Command, Registered};
pub use subscription::{Step, Subscription};

/// Group commits that may wait for the dispatcher, in number and in bytes of frames. Beyond
/// either the writer drops groups (and the subscribers that needed them are lagged out)
/// rather than wait. Counted in bytes too because groups range from one event (single-event
/// POSTs, thousands of groups a second) to 20,000: a burst of small groups must not overflow
/// a queue sized for large ones, nor large ones take unbounded memory.
const GROUP_QUEUE: usize = 65_536;
const GROUP_QUEUE_BYTES: usize = 64 << 20;

/// Counters for self-metrics, updated without locks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open stream subscribers (holding a slot), including those still replaying history.
    pub subscribers: AtomicUsize,
    /// Subscribers disconnected because they fell `--stream-buffer` events behind.
    pub lagged: AtomicU64,
    /// Commit groups the writer could not hand to the dispatcher (its queue was full).
    pub dropped_groups: AtomicU64,
}

/// One committed event as delivered to subscribers: its JSON is rendered once and shared.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: u64,
    /// What `GET /events` renders for this event, on one line (see [`LiveEvent::render`]).
    pub json: Box<[u8]>,
}

impl LiveEvent {
    /// Renders `event` as `GET /events` does, except that line breaks become spaces: a stream
    /// carries one event per line. The only raw line breaks possible are whitespace between
    /// tokens of metadata kept verbatim (in strings they are escaped), so the JSON value is
    /// the same.
    pub fn render(event: &StoredEvent) -> Arc<LiveEvent> {
        let mut json = Vec::with_capacity(256);
        crate::event::render::write_event(&mut json, event);
        for byte in &mut json {
            if matches!(*byte, b'\n' | b'\r') {
                *byte = b' ';
            }
        }
        Arc::new(LiveEvent {
            seq: event.seq,
            json: json.into_boxed_slice(),
        })
    }
}

/// What a subscriber wants: exact matches, all of them must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: Option<String>,
    pub service: Option<String>,
    pub user_id: Option<String>,
}

impl Filter {
    /// Whether `event` matches the conditions other than `type`, which the dispatcher's
    /// index has already applied.
    fn matches_besides_kind(&self, event: &StoredEvent) -> bool {
        fn holds(wanted: &Option<String>, actual: &Option<String>) -> bool {
            wanted.is_none() || wanted == actual
        }
        holds(&self.service, &event.service) && holds(&self.user_id, &event.user_id)
    }

    /// The same conditions as a store query, limited to `seq <= max_seq`.
    fn store_filter(&self, max_seq: Option<u64>) -> EventFilter {
        EventFilter {
            kind: self.kind.clone(),
            service: self.service.clone(),
            user_id: self.user_id.clone(),
            max_seq,
            ..EventFilter::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LiveConfig {
    /// Most subscribers at once (`--max-subscribers`).
    pub max_subscribers: usize,
    /// Events one subscriber may have waiting before it is lagged out (`--stream-buffer`).
    pub buffer: usize,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{max} stream subscribers are already connected; retry later")]
    TooManySubscribers { max: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Where a resuming subscriber's past events come from (see [`ReplayQuery`]). A page
/// shorter than the query's `limit` means nothing more matches up to its filter's `max_seq`
/// (or up to what was published when asked).
#[async_trait::async_trait]
pub trait Replay: Send + Sync + 'static {
    async fn events_after(&self, query: ReplayQuery) -> anyhow::Result<Vec<StoredEvent>>;

    /// Waits (at most `timeout`) until every event published through `seq` can be
    /// replayed; `false` if it could not be in time.
    async fn wait_replayable(&self, seq: u64, timeout: Duration) -> bool;

    /// The position the queue has published through when the stream starts.
    fn published_through(&self) -> u64;
}

/// How far the queue has published: what a new subscriber is registered after.
#[derive(Debug, Default)]
pub struct Published(AtomicU64);

impl Published {
    pub fn new(seq: u64) -> Published {
        Published(AtomicU64::new(seq))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
}

/// A committed group on its way to the dispatcher: `frames` follow the event at `after`.
pub(crate) struct Group {
    after: u64,
    frames: Vec<u8>,
}

/// The queue's end: hands published groups to the dispatcher without ever waiting.
pub struct Publisher {
    published: Arc<Published>,
    registered: Arc<AtomicUsize>,
    groups: mpsc::Sender<Group>,
    /// Bytes of the groups in the queue; the dispatcher subtracts what it takes.
    queued_bytes: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl Publisher {
    /// Records committed `frames` as published: a subscriber registering from now on starts
    /// after them. The log writer calls this before it acknowledges them, so that a client
    /// that subscribes once it has its answer is not sent them live. Returns whether someone
    /// is registered, who then needs them [handed over](Self::hand_over).
    pub fn mark_published(&self, frames: &[u8]) -> bool {
        if let Some(last) = last_seq(frames) {
            self.published.set(last);
        }
        // Pairs with the fence in the dispatcher's registration (see the module doc): either
        // it sees our position, or we see its registration.
        fence(Ordering::SeqCst);
        !frames.is_empty() && self.registered.load(Ordering::SeqCst) > 0
    }

    /// Hands frames [marked published](Self::mark_published) to the dispatcher without
    /// waiting (a group that does not fit in its queue is dropped). `after` is the `seq` of
    /// the event just before them, so that a dropped group can be told from a gap in the
    /// numbering (a cluster's `seq`s, from Redis entry ids, have gaps).
    pub fn hand_over(&self, after: u64, frames: &[u8]) {
        let queued = self.queued_bytes.fetch_add(frames.len(), Ordering::AcqRel);
        let refused = if queued + frames.len() > GROUP_QUEUE_BYTES {
            true
        } else {
            matches!(
                self.groups.try_send(Group {
                    after,
                    frames: frames.to_vec(),
                }),
                Err(mpsc::error::TrySendError::Full(_))
            )
        };
        if refused {
            self.queued_bytes.fetch_sub(frames.len(), Ordering::AcqRel);
            self.stats.dropped_groups.fetch_add(1, Ordering::Relaxed);
        }
        // Closed: the dispatcher stopped at shutdown; nobody is listening any more.
    }
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    shared: Arc<Shared>,
}

struct Shared {
    config: LiveConfig,
    stats: Arc<Stats>,
    published: Arc<Published>,
    replay: Arc<dyn Replay>,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: watch::Sender<bool>,
}

/// Starts the dispatcher task. The [`Publisher`] goes to the queue, which `replay` reads.
pub fn start(config: LiveConfig, replay: Arc<dyn Replay>) -> (Live, Publisher, JoinHandle<()>) {
    // A channel's capacity has a ceiling (tokio's semaphore); far above any useful buffer.
    let config = LiveConfig {
        buffer: config.buffer.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ..config
    };
    let stats = Arc::new(Stats::default());
    let published = Arc::new(Published::new(replay.published_through()));
    let registered = Arc::new(AtomicUsize::new(0));
    let (groups_tx, groups_rx) = mpsc::channel(GROUP_QUEUE);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(
        dispatcher::Dispatcher::new(
            config,
            published.clone(),
            registered.clone(),
            stats.clone(),
            commands_tx.clone(),
            queued_bytes.clone(),
        )
        .run(groups_rx, commands_rx, shutdown_rx),
    );
    let live = Live {
        shared: Arc::new(Shared {
            config,
            stats: stats.clone(),
            published: published.clone(),
            replay,
            commands: commands_tx,
            shutdown,
        }),
    };
    let publisher = Publisher {
        published,
        registered,
        groups: groups_tx,
        queued_bytes,
        stats,
    };
    (live, publisher, task)
}

impl Live {
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// Ends every stream (their bodies finish) and refuses new ones: called when the server
    /// begins its graceful shutdown, which would otherwise wait for them forever.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has begun: for other long-lived streams to end with these.
    pub async fn until_shutdown(&self) {
        shutting_down(&mut self.shared.shutdown.subscribe()).await
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Takes one of the `--max-subscribers` slots, released when the [`Slot`] is dropped;
    /// none once shutdown has begun. Public so that other long-lived streams can share the
    /// same limit.
    pub fn try_acquire_slot(&self) -> Result<Slot, SubscribeError> {
        if self.is_shutting_down() {
            return Err(SubscribeError::ShuttingDown);
        }
        let max = self.shared.config.max_subscribers;
        let subscribers = &self.shared.stats.subscribers;
        let mut current = subscribers.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return Err(SubscribeError::TooManySubscribers { max });
            }
            match subscribers.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Slot {
                        stats: self.shared.stats.clone(),
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Subscribes to events matching `filter`. With `since`, every stored matching event
    /// with a greater `seq` comes first; without it only events committed from now on (the
    /// subscriber is registered before this returns).
    pub async fn subscribe(
        &self,
        filter: Filter,
        since: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let slot = self.try_acquire_slot()?;
        Subscription::start(self.clone(), filter, since, slot).await
    }

    /// Asks the dispatcher to register `filter`; the answer carries the subscriber's channel
    /// and the committed `seq` it starts after.
    fn request_registration(
        &self,
        filter: Filter,
    ) -> Result<oneshot::Receiver<Registered>, SubscribeError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Register { filter, reply })
            .map_err(|_| SubscribeError::ShuttingDown)?;
        Ok(answer)
    }
}

/// The `seq` of the last frame in `frames`, if any.
fn last_seq(frames: &[u8]) -> Option<u64> {
    let mut at = 0;
    let mut last = None;
    while let Some(header) = frames.get(at..at + record::FRAME_HEADER) {
        let (len, _, seq) = record::read_header(header.try_into().expect("header size"));
        last = Some(seq);
        at += record::FRAME_HEADER + len;
    }
    last
}

/// Resolves once `shutdown` is true (or its sender is gone), holding no borrow of the value
/// afterwards (a `watch::Ref` would make the caller's future `!Send`).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// One of the `--max-subscribers` slots, held for as long as a stream is open.
pub struct Slot {
    stats: Arc<Stats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}
