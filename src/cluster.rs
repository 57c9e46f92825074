//! A process of a cluster (`--queue redis://...`, `--store postgres://...`).
//!
//! - An API node (`--role api`) answers `202` once the events are in the Redis stream
//!   (pipelined XADDs, all acknowledged), refuses with `429` while the workers are more than
//!   `--max-queue-backlog` entries behind and with `503` while Redis cannot be written. It
//!   answers queries and metrics from the shared store: what the workers have stored so far
//!   (read-your-writes is not promised). Its live stream follows the Redis stream itself, so
//!   an event ingested through any node reaches subscribers of every node.
//! - A worker (`--role worker`) consumes the stream into the store ([`crate::queue::worker`])
//!   and runs retention. Over HTTP it answers only `GET /health`.
//! - `--role all` is both in one process.
//!
//! # Stream positions
//! The `seq` of an event (its SSE `id`, what `Last-Event-ID` resumes from) comes from its
//! Redis entry id ([`crate::queue::seq_of`]): the order in which API nodes added events, fixed
//! before any worker stores them. Workers commit out of order (two batches, two workers), so a
//! position in the *store* would let a resume skip an event committed later with a smaller
//! `seq`; a resume reads the *stream* instead, which holds every entry not yet acknowledged,
//! and reads the store only below the stream's first entry, where everything is stored
//! (entries are trimmed only once acknowledged).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::admission::InFlight;
use crate::api::{self, AppState};
use crate::clock::{Clock, SystemClock};
use crate::config::{redact_url, Role, ServeConfig};
use crate::connections::OpenConnections;
use crate::event::StoredEvent;
use crate::health::Health;
use crate::ingest::{record, Ingest, Progress, RemoteQueue};
use crate::live::{self, Publisher, Replay};
use crate::metrics::EventMetrics;
use crate::queue::redis::RedisQueue;
use crate::queue::worker::{self, WorkerConfig};
use crate::queue::QueueKeys;
use crate::retention::Retention;
use crate::server::{cursor_key, http_policy, live_config, rate_limits};
use crate::store::{EventFilter, Store};

/// How often an API node measures the workers' backlog (what its 429s go by).
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// Entries the live stream's reader takes at once, and how long it waits for them.
const FOLLOW_BATCH: usize = 1000;
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);
/// How long shutdown waits for a worker to finish the batch in hand.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn serve(
    config: ServeConfig,
    redis_url: &str,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue = RedisQueue::connect(redis_url, QueueKeys::with_prefix(&config.queue_prefix))
        .await
        .with_context(|| format!("connecting to the queue at {}", redact_url(redis_url)))?;
    let (stop_background, background_stop) = watch::channel(false);
    let retention = Arc::new(Retention::new(config.retention, config.retention_interval));

    let worker = (config.role != Role::Api).then(|| {
        let metrics = Arc::new(EventMetrics::from_store(
            store.clone(),
            clock.clone(),
            config.tracked_names(),
        ));
        tokio::spawn(retention.clone().run(
            store.clone(),
            metrics,
            clock.clone(),
            background_stop.clone(),
        ));
        let worker_config = WorkerConfig {
            claim_timeout: config.claim_timeout,
            ..WorkerConfig::default()
        };
        tokio::spawn(worker::run(
            queue.clone(),
            store.clone(),
            worker_config,
            Arc::new(|_: &[StoredEvent], _: &_| {}),
            background_stop.clone(),
        ))
    });

    let live_position = queue
        .last_seq()
        .await
        .context("reading the queue's position")?;
    let progress = Arc::new(Progress::new(live_position, live_position));
    let (live, publisher, dispatcher) = live::start(
        live_config(&config),
        progress.clone(),
        Arc::new(QueueReplay {
            queue: queue.clone(),
            store: store.clone(),
        }),
    );

    let connections = Arc::new(OpenConnections::default());
    let app = if config.role == Role::Worker {
        axum::Router::new().route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok", "role": "worker"})) }),
        )
    } else {
        let health = Arc::new(Health::new(&config.data_dir));
        tokio::spawn(follow_stream(
            queue.with_own_blocking_connection()?,
            progress,
            publisher,
            background_stop.clone(),
        ));
        let sink = Arc::new(RedisSink {
            queue: queue.clone(),
            backlog: AtomicU64::new(0),
            probe_failed: AtomicBool::new(false),
            health: health.clone(),
        });
        tokio::spawn(measure_backlog(sink.clone(), background_stop.clone()));
        api::router(AppState {
            cursors: cursor_key(store.as_ref()).await?,
            http: http_policy(&config, &listener, &connections)?,
            rate_limits: rate_limits(&config, background_stop.clone()),
            in_flight: InFlight::new(config.max_concurrent_requests as usize),
            health,
            ingest: Ingest::remote(sink, config.max_pending_events, config.max_queue_backlog),
            metrics: Arc::new(EventMetrics::from_store(
                store.clone(),
                clock.clone(),
                config.tracked_names(),
            )),
            store,
            clock,
            read_wait: config.read_wait,
            live: live.clone(),
            retention,
            dead_letters: Some(queue.clone()),
        })
    };
    tracing::info!(
        role = ?config.role,
        store = ?config.store,
        queue = %redact_url(redis_url),
        "listening on http://{}",
        listener.local_addr()?
    );
    crate::server::serve_http(app, listener, &config, connections, live, shutdown).await?;
    let _ = dispatcher.await;
    let _ = stop_background.send(true);
    if let Some(worker) = worker {
        if tokio::time::timeout(WORKER_STOP_TIMEOUT, worker)
            .await
            .is_err()
        {
            tracing::warn!("the worker did not stop in time; its batch stays pending and another worker will claim it");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The API node's queue: publishes to Redis, reporting outages to readiness (once each).
struct RedisSink {
    queue: RedisQueue,
    /// The workers' backlog as last measured.
    backlog: AtomicU64,
    /// Whether the last backlog measurement failed.
    probe_failed: AtomicBool,
    health: Arc<Health>,
}

#[async_trait::async_trait]
impl RemoteQueue for RedisSink {
    async fn publish(&self, payloads: Vec<&[u8]>) -> Result<(), String> {
        match self.queue.publish(&payloads).await {
            Ok(_) => {
                if self.health.log_recovered() {
                    tracing::info!("the queue accepts events again");
                }
                Ok(())
            }
            Err(err) => {
                let error = err.to_string();
                if self.health.log_failed(error.clone()) {
                    tracing::error!(%error, "the queue cannot be written; answering 503 until it can");
                }
                Err(error)
            }
        }
    }

    fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }
}

async fn measure_backlog(sink: Arc<RedisSink>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {
                // Readiness follows this probe too, not only publishing: without it, Redis
                // going down unseen by any POST left the node ready, and once not ready (a
                // balancer then sends no POSTs) it stayed so after Redis came back. It ends
                // only an outage it saw itself: one that only XADDs meet (e.g. Redis out of
                // memory) ends with a successful publish. On failure the last backlog stands.
                match sink.queue.backlog().await {
                    Ok(backlog) => {
                        sink.backlog.store(backlog, Ordering::Relaxed);
                        if sink.probe_failed.swap(false, Ordering::Relaxed)
                            && sink.health.log_recovered()
                        {
                            tracing::info!("the queue answers again");
                        }
                    }
                    Err(err) => {
                        sink.probe_failed.store(true, Ordering::Relaxed);
                        let error = err.to_string();
                        if sink.health.log_failed(error.clone()) {
                            tracing::error!(%error, "the queue does not answer; answering 503 until it does");
                        }
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Follows the Redis stream and hands each batch of entries to the live dispatcher, as the
/// log writer does in a single process.
async fn follow_stream(
    queue: RedisQueue,
    progress: Arc<Progress>,
    publisher: Publisher,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = progress.committed();
    let mut frames = Vec::new();
    let mut failing = false;
    // Whether entries after `last` may have been trimmed before this reader saw them: after
    // an outage, or when it is a full batch behind.
    let mut may_have_missed = false;
    loop {
        let read = tokio::select! {
            read = queue.read_after(last, FOLLOW_BATCH, FOLLOW_BLOCK) => read,
            _ = stop.changed() => return,
        };
        match read {
            Ok(entries) => {
                if failing {
                    failing = false;
                    tracing::info!("following the queue for the live stream again");
                }
                let Some(&(newest, _)) = entries.last() else {
                    continue;
                };
                frames.clear();
                for (seq, payload) in &entries {
                    record::write_frame(&mut frames, *seq, payload);
                }
                let mut after = last;
                if std::mem::replace(&mut may_have_missed, entries.len() == FOLLOW_BATCH) {
                    // Trimming removes only entries the workers stored, oldest first: if the
                    // oldest left is past `last`, some may be gone unseen. Announcing the
                    // gap lags out the subscribers who needed them; they resume from the
                    // store.
                    if let Ok(Some(oldest)) = queue.first_seq().await {
                        after = after.max(oldest.saturating_sub(1));
                    }
                }
                last = newest;
                progress.set_committed(last);
                progress.set_indexed(last);
                publisher.publish_after(after, &frames);
            }
            Err(err) => {
                may_have_missed = true;
                if !failing {
                    failing = true;
                    tracing::warn!(error = %err, "cannot follow the queue for the live stream; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A resume's past events: from the stream, which holds every entry not yet acknowledged,
/// and from the store below the stream's first entry, where everything is stored.
struct QueueReplay {
    queue: RedisQueue,
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl Replay for QueueReplay {
    async fn events_after(
        &self,
        filter: EventFilter,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let max_seq = filter.max_seq.unwrap_or(u64::MAX);
        let first = self.queue.first_seq().await?;
        let stored_through = match first {
            Some(first) => first - 1,
            // An empty stream: every entry ever added has been stored.
            None => self.queue.last_seq().await?,
        };
        let mut events = Vec::new();
        let mut after = after_seq;
        if after < stored_through {
            let through = stored_through.min(max_seq);
            let below = EventFilter {
                max_seq: Some(through),
                ..filter.clone()
            };
            events = self.store.events_after_seq(below, after, limit).await?;
            if events.len() == limit || through == max_seq {
                return Ok(events);
            }
            after = through;
        }
        while events.len() < limit {
            let entries = self.queue.range_after(after, FOLLOW_BATCH).await?;
            if entries.is_empty() {
                break;
            }
            for (seq, payload) in entries {
                if seq > max_seq {
                    return Ok(events);
                }
                after = seq;
                let Some(event) = record::decode_payload(seq, &payload) else {
                    continue;
                };
                if matches(&filter, &event) {
                    events.push(event);
                    if events.len() == limit {
                        return Ok(events);
                    }
                }
            }
        }
        Ok(events)
    }
}

/// Whether `event` meets `filter`'s conditions on its fields (not on time or position).
fn matches(filter: &EventFilter, event: &StoredEvent) -> bool {
    filter.kind.as_ref().is_none_or(|kind| *kind == event.kind)
        && filter
            .service
            .as_ref()
            .is_none_or(|service| Some(service) == event.service.as_ref())
        && filter
            .user_id
            .as_ref()
            .is_none_or(|user| Some(user) == event.user_id.as_ref())
}
