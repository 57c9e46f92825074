//! Eventide: real-time event ingestion and analytics in one binary.
//!
//! # Layout
//! - [`config`]: options, from flags and `EVENTIDE_*` variables; [`data_dir`]: the lock that
//!   keeps a second process off a data directory.
//! - [`event`]: the event, parsed and validated at the edge.
//! - [`ingest`]: the durable log, its group-commit writer, deduplication and the indexer.
//! - [`store`]: the `Store` trait, the embedded SQLite store and the PostgreSQL one.
//! - [`metrics`]: event counts over windows, time series and summary, from rollups.
//! - [`telemetry`]: the service's own metrics, for Prometheus.
//! - [`live`]: the live stream (`GET /stream`): committed events pushed to subscribers.
//! - [`health`]: failures and last commit, as `/health/*` reports them.
//! - [`retention`]: the job deleting events older than `--retention`.
//! - [`queue`]: the Redis Streams queue of a cluster and the worker that consumes it;
//!   [`cluster`] runs a process of a cluster (`--role api|worker|all`).
//! - [`error_code`]: every `error` code an answer can carry, with its status.
//! - [`api`]: HTTP routes, errors and rendering; [`api::dashboard`] serves the web dashboard,
//!   whose files (`dashboard/`) are compiled in.
//! - [`server`]: puts the parts together and shuts them down in order ([`connections`]:
//!   cutting the connections that would hold shutdown forever).
//! - [`bench`]: `eventide bench`, the load generator.
//!
//! # Path of an event
//! 1. `POST /events` reads the body (gunzipping it if asked) and [`event::parse`] turns each
//!    JSON object into a validated `NewEvent`, or per-event errors, each naming its field.
//! 2. The handler gives each valid event its id (the client's or a UUIDv7), encodes it for the
//!    log and submits the batch to the single log writer, which refuses it (`429`) if too
//!    much is pending or the indexer is too far behind.
//! 3. The writer drops repeats of recent client ids (duplicates, or conflicts when the
//!    content differs), assigns `seq`s, appends every waiting batch in one write (one
//!    fdatasync with `--durability fsync`) and answers: `202`.
//! 4. The indexer reads the log in large batches into the SQLite store's indexed table;
//!    queries wait (bounded) for it to reach what was acknowledged before they began. The
//!    same transaction adds the events to the per-minute rollups; then the in-memory counts
//!    behind the metrics endpoints take them in.
//! 5. Meanwhile the writer hands each committed group to the [`live`] dispatcher, which
//!    pushes the events to the matching `/stream` subscribers.

pub mod api;
pub mod bench;
pub mod clock;
pub mod config;
pub mod connections;
pub mod consume;
pub mod data_dir;
pub mod error_code;
pub mod event;
pub mod health;
pub mod live;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;
