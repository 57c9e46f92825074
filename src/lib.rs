//! Eventide: real-time event ingestion and analytics in one binary, as one process with an
//! embedded store or as a cluster of API nodes and workers over Redis and PostgreSQL.
//!
//! # Layout
//! - [`auth`]: API keys with scopes, and the server's view of them.
//! - [`config`]: options, from flags and `EVENTIDE_*` variables; [`data_dir`]: the lock that
//!   keeps a second process off a data directory.
//! - [`event`]: the event, parsed and validated at the edge; [`record`]: its binary form in
//!   the queue (the log's frames, the Redis stream's entries).
//! - [`queue`]: the boundary between taking events and storing them, the [`queue::Queue`]
//!   trait, with the embedded durable log ([`queue::log`]) and the Redis stream
//!   ([`queue::redis`]).
//! - [`consume`]: the loop moving events from the queue into the store, over the log (the
//!   indexer) or a Redis consumer group (the worker).
//! - [`store`]: the [`store::Store`] trait, the embedded SQLite store, the PostgreSQL one and
//!   the null one.
//! - [`live`]: the live stream (`GET /stream`): events pushed to subscribers as the queue
//!   takes them, resumes replayed by the queue.
//! - [`metrics`]: event counts over windows, time series and summary, from rollups.
//! - [`telemetry`]: the service's own metrics, for Prometheus.
//! - [`health`]: a registry of named components and their failures, as `/health/*` reports.
//! - [`retention`]: the job deleting events older than `--retention`.
//! - [`alerts`]: rules on event counts and on the service's health, evaluated from the
//!   metrics' counts, notified to the log, webhooks, Slack or email without noise.
//! - [`error_code`]: every `error` code an answer can carry, with its status.
//! - [`api`]: HTTP routes, errors and rendering; [`api::dashboard`] serves the web dashboard,
//!   whose files (`dashboard/`) are compiled in. [`connections`]: accepting, limiting and
//!   timing out the connections the API is served on.
//! - [`server`]: the one place that assembles the parts for a deployment and shuts them down
//!   in order.
//! - [`client`]: the command-line client (`send`, `import`, `query`, `export`, `tail`),
//!   which speaks to a running server over HTTP like any other client.
//!
//! The `eventide` binary (`src/main.rs`, its command line in `src/cli.rs`) only parses the
//! command line and hands over to [`server::serve`], [`auth::command`] or [`client`]. The
//! load generator is a crate of its own (`bench/`, the `eventide-bench` binary), as is the
//! kit it shares with the integration tests (`testkit/`); neither is linked into the service.
//!
//! # Path of an event
//! 1. `POST /events` reads the body (refused before reading if too large, gunzipped if asked)
//!    and [`event::parse`] turns each JSON object into a validated `NewEvent`, or per-event
//!    errors, each naming its field.
//! 2. The handler gives each valid event its id (the client's or a UUIDv7), encodes it
//!    ([`record`]) and submits the batch through [`queue::Ingest`] (bounded: `429` when too
//!    much is pending) to the deployment's [`queue::Queue`]:
//!    - **one process** ([`queue::log`]): the single log writer drops repeats of recent
//!      client ids (duplicates, or conflicts when the content differs), assigns `seq`s,
//!      appends every waiting batch in one write (one fdatasync with `--durability fsync`)
//!      and answers: `202`. It refuses (`429`) while the index is too far behind.
//!    - **a cluster's API node** ([`queue::redis`]): the batch is added to the Redis stream in
//!      one pipeline; `202` once Redis holds every entry, whose id is the event's `seq`. It
//!      refuses (`429`) while the workers are too far behind, `503` while Redis is down.
//! 3. The consume loop ([`consume`]) moves the events into the [`store`]: the indexer reads
//!    the log in large batches into SQLite; in a cluster, workers read the stream as a
//!    consumer group into PostgreSQL and acknowledge each batch once committed. The same
//!    transaction adds the events to the per-minute rollups (then, in one process, the
//!    in-memory counts behind the metrics take them in). Queries in one process wait
//!    (bounded) for the indexer to reach what was acknowledged before they began; a
//!    cluster's API nodes read what the workers have stored.
//! 4. Meanwhile the queue hands what it takes to the [`live`] dispatcher (the log writer
//!    each commit; on an API node, a reader following the stream), which pushes the events
//!    to the matching `/stream` subscribers of this process; a resuming subscriber replays
//!    what it missed from the queue's side ([`live::Replay`]).

pub mod alerts;
pub mod api;
pub mod auth;
pub mod client;
pub(crate) mod clock;
pub mod config;
pub mod connections;
pub mod consume;
pub mod data_dir;
pub(crate) mod error_code;
pub mod event;
pub mod health;
pub(crate) mod live;
pub(crate) mod metrics;
pub mod queue;
pub mod record;
pub(crate) mod retention;
pub mod server;
pub mod store;
pub(crate) mod telemetry;
