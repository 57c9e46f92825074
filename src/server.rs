//! Assembles the service: opens the store and the log (recovering after a crash), starts the
//! log writer and the indexer, serves HTTP until `shutdown` resolves, then drains in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::admission::InFlight;
use crate::api::cursor::CursorKey;
use crate::api::guard::AllowedHosts;
use crate::api::rate_limit::{Limiter, RateLimits};
use crate::api::{self, AppState, HttpPolicy};
use crate::clock::{Clock, SystemClock};
use crate::config::{redact_url, Durability, QueueTarget, ServeConfig, StoreTarget};
use crate::connections::{self, raise_open_files_limit, Limits, OpenConnections, Timeouts};
use crate::data_dir::DataDirLock;
use crate::health::Health;
use crate::ingest::dedup::RecentIds;
use crate::ingest::log::LogWriter;
use crate::ingest::{ids, indexer, writer, Progress};
use crate::live::{self, LiveConfig};
use crate::metrics::EventMetrics;
use crate::retention::Retention;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::telemetry;

/// How long shutdown waits for the indexer to finish the batch in hand.
const INDEXER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for open connections to finish their responses before cutting
/// them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the service on `listener` until `shutdown` resolves: then it stops accepting,
/// answers the requests in flight (their events committed), and returns.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    telemetry::install();
    // Held until this function returns, i.e. for as long as anything writes the directory.
    let _lock = if config.writes_data_dir() {
        Some(DataDirLock::acquire(&config.data_dir)?)
    } else {
        None
    };
    let store = open_store(&config).await?;
    match &config.queue {
        QueueTarget::Embedded => serve_local(config, store, listener, shutdown).await,
        QueueTarget::Redis(url) => {
            let url = url.clone();
            crate::cluster::serve(config, &url, store, listener, shutdown).await
        }
    }
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
    })
}

/// One process doing everything, through its own durable log (the embedded queue).
async fn serve_local(
    config: ServeConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fsync = config.durability == Durability::Fsync;
    let indexed_seq = store.indexed_seq().await?;
    let log_dir = config.data_dir.join("log");
    let (log, recovered) =
        tokio::task::spawn_blocking(move || LogWriter::open(&log_dir, indexed_seq, fsync))
            .await??;
    let committed_seq = recovered.next_seq - 1;
    if recovered.truncated_bytes > 0 {
        tracing::warn!(
            bytes = recovered.truncated_bytes,
            "cut a torn tail from the durable log (writes never acknowledged)"
        );
    }
    if committed_seq > indexed_seq {
        tracing::info!(
            events = committed_seq - indexed_seq,
            "indexing events logged before the last stop"
        );
    }

    let window_ms = config.dedup_window.as_millis() as i64;
    let mut dedup = RecentIds::new(config.dedup_capacity, window_ms);
    let since_ms = clock.now_ms() - window_ms;
    let mut remembered = store
        .recent_client_ids(since_ms, config.dedup_capacity)
        .await
        .context("reading recent client ids")?;
    remembered.reverse(); // oldest first, so capacity evicts the oldest
    for (id, received_at) in remembered.into_iter().chain(recovered.client_ids) {
        dedup.remember(ids::client_id_hash(&id), received_at);
    }

    let metrics = Arc::new(
        EventMetrics::load(store.clone(), clock.clone(), config.tracked_names())
            .await
            .context("rebuilding the event counts")?,
    );
    let progress = Arc::new(Progress::new(committed_seq, indexed_seq));
    let (live, publisher, dispatcher) = live::start(
        live_config(&config),
        progress.clone(),
        Arc::new(live::FromStore(store.clone())),
    );
    let log = (!config.null_store).then_some(log);
    let health = Arc::new(Health::new(&config.data_dir));
    let (ingest, writer_thread) = writer::start(
        log,
        dedup,
        progress.clone(),
        writer::WriterConfig {
            max_pending: config.max_pending_events,
            max_backlog: config.max_index_backlog,
        },
        Some(publisher),
        health.clone(),
    );
    // Tells the background tasks (indexer, metrics upkeep) to finish.
    let (stop_background, background_stop) = watch::channel(false);
    let indexer = (!config.null_store).then(|| {
        tokio::spawn(indexer::run(
            store.clone(),
            metrics.clone(),
            health.clone(),
            config.data_dir.join("log"),
            progress.clone(),
            background_stop.clone(),
        ))
    });

    tokio::spawn(telemetry::run_upkeep(background_stop.clone()));
    let rate_limits = rate_limits(&config, background_stop.clone());
    let retention = Arc::new(Retention::new(config.retention, config.retention_interval));
    if !config.null_store {
        tokio::spawn(retention.clone().run(
            store.clone(),
            metrics.clone(),
            clock.clone(),
            background_stop.clone(),
        ));
    }
    let connections = Arc::new(OpenConnections::default());
    let state = AppState {
        cursors: cursor_key(store.as_ref()).await?,
        http: http_policy(&config, &listener, &connections)?,
        retention,
        dead_letters: None,
        rate_limits,
        in_flight: InFlight::new(config.max_concurrent_requests as usize),
        health,
        ingest,
        store,
        metrics,
        clock,
        read_wait: config.read_wait,
        live: live.clone(),
    };
    let app = api::router(state);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        "listening on http://{}",
        listener.local_addr()?
    );
    serve_http(app, listener, &config, connections, live, shutdown).await?;
    // It stopped when the shutdown began; this only collects it.
    let _ = dispatcher.await;

    // Every handler has answered and dropped its handle: the writer drains and ends.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the log writer panicked"))?;
    let _ = stop_background.send(true);
    let indexer_stopped = match indexer {
        Some(indexer) => tokio::time::timeout(INDEXER_STOP_TIMEOUT, indexer)
            .await
            .is_ok(),
        None => true,
    };
    if !indexer_stopped {
        tracing::warn!("the indexer did not stop in time; the log will be indexed at next start");
    }
    tracing::info!(
        committed = progress.committed(),
        indexed = progress.indexed(),
        "stopped"
    );
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: streams are ended and
/// connections still open after [`SHUTDOWN_GRACE`] are cut.
pub(crate) async fn serve_http(
    app: axum::Router,
    listener: TcpListener,
    config: &ServeConfig,
    connections: Arc<OpenConnections>,
    live: live::Live,
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
    connections::serve(app, listener, limits, connections, shutdown, move || {
        live.shutdown()
    })
    .await;
    Ok(())
}

/// The key that signs paging cursors: the deployment's secret, made on first start and kept
/// in the store, so every API node of a cluster (and the next start) accepts the cursors of
/// every other.
pub(crate) async fn cursor_key(store: &dyn Store) -> Result<Arc<CursorKey>> {
    let mut candidate = vec![0u8; 32];
    getrandom::fill(&mut candidate).context("no random numbers from the operating system")?;
    let secret = store
        .secret("cursor", candidate)
        .await
        .context("reading the deployment's secret")?;
    Ok(Arc::new(CursorKey::new(&secret)))
}

/// How requests are taken, from `--min-body-rate`, `--allowed-hosts` and the address.
pub(crate) fn http_policy(
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
    }))
}

/// What `--max-subscribers` and `--stream-buffer` ask of the live stream.
pub(crate) fn live_config(config: &ServeConfig) -> LiveConfig {
    LiveConfig {
        max_subscribers: config.max_subscribers,
        buffer: usize::try_from(config.stream_buffer).unwrap_or(usize::MAX),
    }
}

/// The rate limits `--ingest-rate-limit`, `--ingest-burst` and `--query-rate-limit` ask for,
/// with the task that forgets idle clients until `stop` changes.
pub(crate) fn rate_limits(config: &ServeConfig, stop: watch::Receiver<bool>) -> Arc<RateLimits> {
    let rate_limits = Arc::new(RateLimits {
        ingest: Limiter::new(config.ingest_rate_limit, config.ingest_burst),
        query: Limiter::new(config.query_rate_limit, 0),
    });
    tokio::spawn(RateLimits::run_cleanup(rate_limits.clone(), stop));
    rate_limits
}
