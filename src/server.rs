//! Assembles the service, the one place that does, for every deployment: it picks the store
//! (SQLite, PostgreSQL or none), the queue (the embedded log or a Redis stream) and what this
//! process does with them (`--role`), starts the parts in order (the live stream fed by the
//! queue, the consume loop, retention, the API), serves HTTP until `shutdown` resolves, then
//! stops them in order so that everything acknowledged is committed.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::config::AlertsConfig;
use crate::alerts::health::Signals;
use crate::alerts::Alerts;
use crate::api;
use crate::api::admission::InFlight;
use crate::api::cors::CorsOrigins;
use crate::api::cursor::CursorKey;
use crate::api::guard::AllowedHosts;
use crate::api::rate_limit::{Limiter, RateLimits};
use crate::api::state::{AppState, HttpPolicy, Services};
use crate::auth::keys::{self, Scope, Scopes};
use crate::auth::{AuthMode, Keys};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    redact_url, AuthSetting, Durability, QueueTarget, Secret, ServeConfig, StoreTarget,
};
use crate::connections::{self, raise_open_files_limit, Limits, OpenConnections, Timeouts};
use crate::consume::indexer::Indexer;
use crate::consume::worker::{self, WorkerConfig};
use crate::consume::{self, OnStored, Storing};
use crate::data_dir::DataDirLock;
use crate::event::StoredEvent;
use crate::health::{Health, Readiness};
use crate::live::{self, Live, LiveConfig, Replay};
use crate::metrics::EventMetrics;
use crate::queue::log::{LogConfig, LogQueue};
use crate::queue::redis::{QueueKeys, RedisQueue, RedisStream};
use crate::queue::{Ingest, Queue};
use crate::retention::Retention;
use crate::store::null::NullStore;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{AppendOutcome, Store};
use crate::telemetry;

/// How long shutdown waits for the consume loop to finish the batch in hand.
const CONSUMER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long shutdown waits for open connections to finish their responses before cutting
/// them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the service on `listener` until `shutdown` resolves: then it stops accepting,
/// answers the requests in flight (their events committed), stores what it can and returns.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    let alerts_config = alerts_config(&config)?;
    // Before anything is opened: unusable key files stop start-up at once.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(connections::tls_acceptor(cert, key)?),
        _ => None,
    };
    telemetry::install();
    // Held until this function returns, i.e. for as long as anything writes the directory.
    let _lock = if config.writes_data_dir() {
        Some(DataDirLock::acquire(&config.data_dir)?)
    } else {
        None
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let health = Arc::new(Health::new(
        config.writes_data_dir().then(|| config.data_dir.clone()),
    ));
    let store = open_store(&config).await?;
    let (stop_background, background_stop) = watch::channel(false);
    let retention = Arc::new(Retention::new(config.retention, config.retention_interval));

    let shared = Shared {
        store: store.clone(),
        clock: clock.clone(),
        health: health.clone(),
        retention: retention.clone(),
        stop: background_stop.clone(),
        requests_in_progress: Arc::new(AtomicUsize::new(0)),
    };
    let assembled = match &config.queue {
        QueueTarget::Embedded => embedded(&config, &shared).await?,
        QueueTarget::Redis(url) => cluster(&config, url, &shared).await?,
    };
    let Assembled {
        queue,
        metrics,
        live,
        consumer,
        writer,
        dead_letters,
        close_queue,
    } = assembled;

    let connections = Arc::new(OpenConnections::default());
    let keys = if config.serves_api() {
        let keys = open_keys(&config, &store, &clock).await?;
        tokio::spawn(keys.clone().run(background_stop.clone()));
        Some(keys)
    } else {
        None
    };
    let app = match (&queue, &live, keys) {
        (Some(queue), Some((live, _)), Some(keys)) => {
            let ingest = Ingest::new(queue.clone(), config.max_pending_events);
            let signals = Signals::new(health.clone(), Some(ingest.clone()), dead_letters.clone());
            let alerts = Alerts::start(
                alerts_config,
                store.clone(),
                metrics.clone(),
                clock.clone(),
                signals,
                matches!(config.store, StoreTarget::Postgres(_)),
                background_stop.clone(),
            )
            .await
            .context("starting the alerts")?;
            api::router(AppState::new(Services {
                keys,
                cursors: cursor_key(store.as_ref()).await?,
                http: http_policy(&config, &listener, &connections)?,
                rate_limits: rate_limits(&config, background_stop.clone()),
                in_flight: InFlight::new(
                    config.max_concurrent_requests as usize,
                    shared.requests_in_progress.clone(),
                ),
                health: health.clone(),
                ingest,
                store: store.clone(),
                metrics,
                clock,
                read_wait: config.read_wait,
                export_wait: config.export_wait,
                live: live.clone(),
                retention,
                dead_letters,
                alerts,
            }))
        }
        // A worker answers only liveness over HTTP.
        _ => axum::Router::new().route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok", "role": "worker"})) }),
        ),
    };
    tokio::spawn(telemetry::run_upkeep(background_stop.clone()));
    tracing::info!(
        role = ?config.role,
        store = ?config.store,
        queue = ?config.queue,
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        "listening on {}://{}",
        if config.tls_cert.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    let live_handle = live.as_ref().map(|(live, _)| live.clone());
    serve_http(
        app,
        listener,
        &config,
        connections,
        tls,
        live_handle,
        shutdown,
    )
    .await?;

    // Every answer is written: the live stream ended as shutdown began.
    if let Some((_, dispatcher)) = live {
        let _ = dispatcher.await;
    }
    // The log writer commits what it was given, then stops.
    if let Some(close) = close_queue {
        close();
    }
    if let Some(writer) = writer {
        tokio::task::spawn_blocking(move || writer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the log writer panicked"))?;
    }
    let _ = stop_background.send(true);
    if let Some(consumer) = consumer {
        if tokio::time::timeout(CONSUMER_STOP_TIMEOUT, consumer)
            .await
            .is_err()
        {
            tracing::warn!("the consume loop did not stop in time: what it held is stored at next start (the log) or by another worker (Redis)");
        }
    }
    match queue.as_ref().and_then(|queue| queue.positions()) {
        Some(positions) => tracing::info!(
            committed = positions.committed,
            indexed = positions.indexed,
            "stopped"
        ),
        None => tracing::info!("stopped"),
    }
    Ok(())
}

/// What both deployment modes build on, made before either is assembled.
struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    retention: Arc<Retention>,
    /// Tells background tasks to stop.
    stop: watch::Receiver<bool>,
    /// Requests admitted and not yet answered, counted by the API's admission; the log
    /// writer paces its flushes by it.
    requests_in_progress: Arc<AtomicUsize>,
}

/// The parts a deployment mode put together.
struct Assembled {
    /// What the API publishes to (`None` for a worker).
    queue: Option<Arc<dyn Queue>>,
    metrics: Arc<EventMetrics>,
    /// The live stream and its dispatcher task (`None` for a worker).
    live: Option<(Live, JoinHandle<()>)>,
    /// The consume loop's task (`None` for an API node).
    consumer: Option<JoinHandle<()>>,
    /// The log writer's thread (the embedded queue).
    writer: Option<ThreadHandle<()>>,
    /// A cluster's dead letters, for the API.
    dead_letters: Option<RedisStream>,
    /// Closes the queue once no request can publish any more.
    close_queue: Option<Box<dyn FnOnce() + Send>>,
}

/// One process doing everything through its own durable log: the log writer feeds the live
/// stream, the indexer (the consume loop over the log) fills the store and the in-memory
/// counts behind the metrics.
async fn embedded(config: &ServeConfig, shared: &Shared) -> Result<Assembled> {
    let queue = Arc::new(
        LogQueue::open(
            LogConfig {
                dir: config.data_dir.join("log"),
                fsync: config.durability == Durability::Fsync,
                dedup_window: config.dedup_window,
                dedup_capacity: config.dedup_capacity,
                max_backlog: config.max_index_backlog,
                requests_in_progress: shared.requests_in_progress.clone(),
            },
            shared.store.clone(),
            shared.clock.as_ref(),
            &shared.health,
        )
        .await?,
    );
    let metrics = Arc::new(
        EventMetrics::load(
            shared.store.clone(),
            shared.clock.clone(),
            config.tracked_names(),
        )
        .await
        .context("rebuilding the event counts")?,
    );
    let (live, publisher, dispatcher) =
        live::start(live_config(config), queue.clone() as Arc<dyn Replay>);
    let writer = queue.start(publisher)?;

    let recording = metrics.clone();
    let on_stored: OnStored = Arc::new(move |events: &[StoredEvent], outcome: &AppendOutcome| {
        recording.record(events, &outcome.skipped)
    });
    let indexer = Indexer::new(
        &queue,
        shared.store.clone(),
        shared.health.register(
            "indexer",
            "the indexer cannot read the durable log",
            Readiness::Required,
        ),
        shared.stop.clone(),
    );
    let storing = Storing::new(
        shared.store.clone(),
        Some(on_stored),
        shared.health.register(
            "store",
            "the store does not accept writes",
            Readiness::Required,
        ),
        shared.stop.clone(),
    );
    let consumer = tokio::spawn(consume::run(indexer, storing));
    shared.spawn_retention(&metrics);
    let closing = queue.clone();
    Ok(Assembled {
        queue: Some(queue),
        metrics,
        live: Some((live, dispatcher)),
        consumer: Some(consumer),
        writer: Some(writer),
        dead_letters: None,
        close_queue: Some(Box::new(move || closing.close())),
    })
}

/// A process of a cluster over a Redis stream and PostgreSQL: an API node publishes to the
/// stream and follows it for its live stream; a worker consumes it as one of the group into
/// the store and runs retention; `--role all` does both.
async fn cluster(config: &ServeConfig, redis_url: &str, shared: &Shared) -> Result<Assembled> {
    let stream = RedisStream::connect(redis_url, QueueKeys::with_prefix(&config.queue_prefix))
        .await
        .with_context(|| format!("connecting to the queue at {}", redact_url(redis_url)))?;
    // Metrics are read from the store's rollups: this process sees only part of what the
    // workers store.
    let metrics = Arc::new(EventMetrics::from_store(
        shared.store.clone(),
        shared.clock.clone(),
        config.tracked_names(),
    ));
    let consumer = config.consumes().then(|| {
        shared.spawn_retention(&metrics);
        let worker_config = WorkerConfig {
            claim_timeout: config.claim_timeout,
            ..WorkerConfig::default()
        };
        let (stream, store, health, stop) = (
            stream.clone(),
            shared.store.clone(),
            shared.health.clone(),
            shared.stop.clone(),
        );
        tokio::spawn(async move {
            worker::run(
                stream,
                store,
                worker_config,
                Arc::new(|_, _| {}),
                &health,
                stop,
            )
            .await
        })
    });
    if !config.serves_api() {
        return Ok(Assembled {
            queue: None,
            metrics,
            live: None,
            consumer,
            writer: None,
            dead_letters: None,
            close_queue: None,
        });
    }
    let queue = Arc::new(
        RedisQueue::new(
            stream.clone(),
            shared.store.clone(),
            config.max_queue_backlog,
            shared
                .health
                .register("queue", "the queue cannot be written", Readiness::Required),
        )
        .await
        .context("reading the queue's position")?,
    );
    let (live, publisher, dispatcher) =
        live::start(live_config(config), queue.clone() as Arc<dyn Replay>);
    queue.start(publisher, shared.stop.clone())?;
    Ok(Assembled {
        queue: Some(queue),
        metrics,
        live: Some((live, dispatcher)),
        consumer,
        writer: None,
        dead_letters: Some(stream),
        close_queue: None,
    })
}

impl Shared {
    /// Starts the retention job (a no-op when events are kept forever).
    fn spawn_retention(&self, metrics: &Arc<EventMetrics>) {
        let component = self.health.register(
            "retention",
            "the last retention run failed",
            Readiness::Informative,
        );
        tokio::spawn(self.retention.clone().run(
            self.store.clone(),
            metrics.clone(),
            self.clock.clone(),
            component,
            self.stop.clone(),
        ));
    }
}

/// The API keys and when they are required (`--auth`), with the bootstrap key created if
/// given. Beyond loopback, a server without any key and without `--auth off` refuses to
/// start: it would be open to anyone who reaches it.
async fn open_keys(
    config: &ServeConfig,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> Result<Arc<Keys>> {
    let loopback = config.addr.ip().is_loopback();
    let mode = match config.auth {
        Some(AuthSetting::Required) => AuthMode::Required,
        Some(AuthSetting::Off) => AuthMode::Off,
        None if loopback => AuthMode::WhenKeysExist,
        None => AuthMode::Required,
    };
    let bootstrap = match (&config.bootstrap_key_file, &config.bootstrap_key) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file)
                .map(|text| text.trim().to_owned())
                .with_context(|| {
                    format!(
                        "invalid --bootstrap-key-file: cannot read {}",
                        file.display()
                    )
                })?,
        ),
        (None, Some(Secret(key))) => Some(key.trim().to_owned()),
        (None, None) => None,
    };
    if let Some(secret) = bootstrap {
        keys::check_format(&secret)
            .map_err(|reason| anyhow::anyhow!("invalid bootstrap key: {reason}"))?;
        let hash = keys::hash(&secret);
        let existing = store.list_keys().await.context("reading the API keys")?;
        if !existing.iter().any(|key| key.hash == hash) {
            let record = keys::record_for(
                &secret,
                format!("key_{}", keys::random_base62(12)?),
                "bootstrap",
                Scopes::new([Scope::Admin]),
                clock.now_ms(),
                None,
            );
            store
                .create_key(&record)
                .await
                .context("creating the bootstrap key")?;
            tracing::info!(key = %record.id, "created the bootstrap key (admin)");
        }
    }
    let keys = Keys::load(store.clone(), clock.clone(), mode).await?;
    if !loopback && mode == AuthMode::Required && !keys.has_active_keys() {
        anyhow::bail!(
            "listening on {} (beyond loopback) needs API keys, and there is none yet: create an \
             admin key first (`eventide keys create --name admin --scope admin`, with the same \
             --data-dir or --store), or give one in EVENTIDE_BOOTSTRAP_KEY or \
             --bootstrap-key-file; or start with --auth off to serve without authentication",
            config.addr
        );
    }
    if mode == AuthMode::Off && !loopback {
        tracing::warn!(addr = %config.addr, "authentication is off (--auth off) on an address beyond loopback: anyone who reaches it can read and write every event");
    }
    Ok(keys)
}

/// The alerts file `--alerts-config` names, checked (every error, with its line, stops the
/// start); without one, the service's own health rules to the log.
fn alerts_config(config: &ServeConfig) -> Result<AlertsConfig> {
    let Some(path) = &config.alerts_config else {
        return Ok(AlertsConfig::default());
    };
    crate::alerts::config::load(path).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "invalid --alerts-config {}: {}",
            path.display(),
            errors.join("; ")
        )
    })
}

/// Opens the store `--store` names, creating and migrating it if needed.
async fn open_store(config: &ServeConfig) -> Result<Arc<dyn Store>> {
    let fsync = config.durability == Durability::Fsync;
    Ok(match &config.store {
        StoreTarget::Embedded => {
            let db_path = config.data_dir.join("events.db");
            Arc::new(
                tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, fsync)).await??,
            )
        }
        StoreTarget::Postgres(url) => Arc::new(
            PostgresStore::connect(url, config.postgres_schema.as_deref())
                .await
                .with_context(|| format!("connecting to the store at {}", redact_url(url)))?,
        ),
        StoreTarget::Null => Arc::new(NullStore::default()),
    })
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: streams are ended and
/// connections still open after [`SHUTDOWN_GRACE`] are cut.
async fn serve_http(
    app: axum::Router,
    listener: TcpListener,
    config: &ServeConfig,
    connections: Arc<OpenConnections>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    live: Option<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Room for the connections plus the store, the log and the subscribers' bookkeeping.
    let wanted_files = config.max_connections + 256;
    match raise_open_files_limit(wanted_files) {
        Ok(reached) if reached < wanted_files => tracing::warn!(
            open_files = reached,
            max_connections = config.max_connections,
            "the open-file limit is below --max-connections: connections beyond it will fail to be accepted"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not read or raise the open-file limit"),
    }
    let limits = Limits {
        max_connections: config.max_connections as usize,
        timeouts: Timeouts {
            header: config.header_timeout,
            keep_alive: config.keep_alive_timeout,
        },
        grace: SHUTDOWN_GRACE,
    };
    // Graceful shutdown waits for every answer to finish, and a stream's never would: so
    // when it begins, the live streams are ended too.
    connections::serve(
        app,
        listener,
        limits,
        connections,
        tls,
        shutdown,
        move || {
            if let Some(live) = live {
                live.shutdown();
            }
        },
    )
    .await;
    Ok(())
}

/// The key that signs paging cursors: the deployment's secret, made on first start and kept
/// in the store, so every API node of a cluster (and the next start) accepts the cursors of
/// every other.
async fn cursor_key(store: &dyn Store) -> Result<Arc<CursorKey>> {
    let mut candidate = vec![0u8; 32];
    getrandom::fill(&mut candidate).context("no random numbers from the operating system")?;
    let secret = store
        .secret("cursor", &candidate)
        .await
        .context("reading the deployment's secret")?;
    Ok(Arc::new(CursorKey::new(&secret)))
}

/// How requests are taken, from `--min-body-rate`, `--allowed-hosts` and the address.
fn http_policy(
    config: &ServeConfig,
    listener: &TcpListener,
    connections: &Arc<OpenConnections>,
) -> Result<Arc<HttpPolicy>> {
    let listening = listener.local_addr()?;
    Ok(Arc::new(HttpPolicy {
        connections: connections.clone(),
        max_connections: config.max_connections as usize,
        min_body_rate: config.min_body_rate,
        hosts: Some(Arc::new(AllowedHosts::new(
            listening,
            &config.allowed_hosts,
        ))),
        cors: (!config.cors_origins.is_empty())
            .then(|| Arc::new(CorsOrigins::new(&config.cors_origins))),
    }))
}

/// What `--max-subscribers` and `--stream-buffer` ask of the live stream.
fn live_config(config: &ServeConfig) -> LiveConfig {
    LiveConfig {
        max_subscribers: config.max_subscribers,
        buffer: usize::try_from(config.stream_buffer).unwrap_or(usize::MAX),
    }
}

/// The rate limits `--ingest-rate-limit`, `--ingest-burst` and `--query-rate-limit` ask for,
/// with the task that forgets idle clients until `stop` changes.
fn rate_limits(config: &ServeConfig, stop: watch::Receiver<bool>) -> Arc<RateLimits> {
    let rate_limits = Arc::new(RateLimits {
        ingest: Limiter::new(config.ingest_rate_limit, config.ingest_burst),
        query: Limiter::new(config.query_rate_limit, 0),
    });
    tokio::spawn(RateLimits::run_cleanup(rate_limits.clone(), stop));
    rate_limits
}
