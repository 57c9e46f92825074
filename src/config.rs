//! Command-line and environment configuration: every option has a default in code, can be
//! set by an `EVENTIDE_*` variable, and is overridden by its flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::event::timefmt::{number_with_unit, UnitError};
use crate::metrics::NameLimits;

/// Where logs go (stderr) and how they look.
#[derive(Args, Debug, Clone)]
pub struct LogConfig {
    /// `text` for people, `json` (one object per line) for log collectors.
    #[arg(long, global = true, env = "EVENTIDE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Lowest level logged: error, warn, info, debug or trace. `RUST_LOG`, when set, takes
    /// precedence (and allows per-module levels such as `eventide=debug,hyper=info`).
    #[arg(long, global = true, env = "EVENTIDE_LOG_LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a `202` promises about the events it acknowledges.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the operating system before the answer: survives a crash or `kill -9` of
    /// the process, not a power loss.
    Process,
    /// Also flushed to the disk (fdatasync) before the answer: survives a power loss.
    Fsync,
}

#[derive(Args, Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "EVENTIDE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Directory for the durable log and the indexed store (created if missing).
    #[arg(long, env = "EVENTIDE_DATA_DIR", default_value = "./eventide-data")]
    pub data_dir: PathBuf,

    /// When an acknowledged event is safe: `fsync` (survives a power loss: one disk flush
    /// per group commit) or `process` (survives kill -9, not a power loss).
    #[arg(long, env = "EVENTIDE_DURABILITY", value_enum, default_value_t = Durability::Fsync)]
    pub durability: Durability,

    /// Events that may wait in memory for their commit; beyond it ingestion answers 429.
    /// At least 10000 (one request's worth).
    #[arg(long, env = "EVENTIDE_MAX_PENDING_EVENTS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(10_000..))]
    pub max_pending_events: u64,

    /// Events committed to the log but not yet indexed (they wait on disk); beyond it
    /// ingestion answers 429 until the indexer catches up.
    #[arg(long, env = "EVENTIDE_MAX_INDEX_BACKLOG", default_value_t = 5_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_index_backlog: u64,

    /// How long a client `id` is remembered for deduplication (e.g. 24h, 90m).
    #[arg(long, env = "EVENTIDE_DEDUP_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub dedup_window: Duration,

    /// At most this many recent client ids are held in memory for deduplication, each with
    /// a hash of its event to tell a conflict from a duplicate (about 37 bytes each: 36 MB
    /// for 1,000,000); older duplicates are still stored only once.
    #[arg(long, env = "EVENTIDE_DEDUP_CAPACITY", default_value_t = 1_000_000)]
    pub dedup_capacity: usize,

    /// Events whose timestamp is older than this are deleted, and refused at ingest
    /// (e.g. 90d, 12h, 30s); `0` keeps events forever.
    #[arg(long, env = "EVENTIDE_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,

    /// How often the retention job runs (it also runs at start).
    #[arg(long, env = "EVENTIDE_RETENTION_INTERVAL", default_value = "1h",
          value_parser = parse_positive_duration)]
    pub retention_interval: Duration,

    /// How long a query waits for the indexer to reach events acknowledged before it began;
    /// past it the answer says `"partial": true`.
    #[arg(long, env = "EVENTIDE_READ_WAIT", default_value = "1s", value_parser = parse_duration)]
    pub read_wait: Duration,

    /// How long `GET /events/export` waits for the indexer to reach every event acknowledged
    /// before it began; past it the export is refused with `503` and `Retry-After`.
    #[arg(long, env = "EVENTIDE_EXPORT_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub export_wait: Duration,

    /// Most `/stream` and `/stream/metrics` subscribers at once; beyond it they get 503.
    #[arg(long, env = "EVENTIDE_MAX_SUBSCRIBERS", default_value_t = 1_000)]
    pub max_subscribers: usize,

    /// Events a stream subscriber may fall behind before it is told `lagged` and
    /// disconnected (it can resume from where it was).
    #[arg(long, env = "EVENTIDE_STREAM_BUFFER", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_buffer: u64,

    /// Event types the metrics count on their own (memory holds counts per type and
    /// service); events of any further type count together as "(other)", so memory stays
    /// bounded whatever types are sent. Reports from the store are folded to it too.
    #[arg(long, env = "EVENTIDE_MAX_TRACKED_TYPES", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(..=1_000_000))]
    pub max_tracked_types: u64,

    /// Services the metrics count on their own; events of any further service count
    /// together as "(other)", as for --max-tracked-types.
    #[arg(long, env = "EVENTIDE_MAX_TRACKED_SERVICES", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(..=1_000_000))]
    pub max_tracked_services: u64,

    /// Events per second each client (IP address) may send; 0: no limit. Beyond it
    /// ingestion answers 429 with Retry-After and RateLimit-* headers.
    #[arg(long, env = "EVENTIDE_INGEST_RATE_LIMIT", default_value_t = 0)]
    pub ingest_rate_limit: u32,

    /// Events a client may send at once above its rate (the bucket size); 0: one second's
    /// worth. A request of more events than this is admitted when the bucket is full.
    #[arg(long, env = "EVENTIDE_INGEST_BURST", default_value_t = 0)]
    pub ingest_burst: u32,

    /// Read requests (events and metrics) per second each client may make; 0: no limit.
    #[arg(long, env = "EVENTIDE_QUERY_RATE_LIMIT", default_value_t = 0)]
    pub query_rate_limit: u32,

    /// Requests in progress at most; beyond, new ones get 503 at once (streams count only
    /// while they start; `--max-subscribers` caps them).
    #[arg(long, env = "EVENTIDE_MAX_CONCURRENT_REQUESTS", default_value_t = 4_096,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,

    /// Open connections at most; beyond, a new connection is answered 503 and closed. Keep
    /// it below the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "EVENTIDE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// How long a client may take to send a request's line and headers, from its first byte
    /// (from connecting, for a connection's first request); past it, `408` and the connection
    /// is closed.
    #[arg(long, env = "EVENTIDE_HEADER_TIMEOUT", default_value = "10s",
          value_parser = parse_positive_duration)]
    pub header_timeout: Duration,

    /// How long an idle keep-alive connection is kept open waiting for its next request
    /// (also how long an answer may wait for its client to read any of it).
    #[arg(long, env = "EVENTIDE_KEEP_ALIVE_TIMEOUT", default_value = "60s",
          value_parser = parse_positive_duration)]
    pub keep_alive_timeout: Duration,

    /// Slowest request body accepted, in bytes per second, measured over each 10 s: a body
    /// sent slower gets `408` and its connection is closed; 0: no minimum.
    #[arg(long, env = "EVENTIDE_MIN_BODY_RATE", default_value_t = 1024)]
    pub min_body_rate: u64,

    /// Host names (or `host:port`) besides the listening address, `localhost` and loopback
    /// addresses that requests may name in `Host` (comma-separated): a defence against DNS
    /// rebinding, for a server reached through a proxy or a DNS name.
    #[arg(long, env = "EVENTIDE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Origins (`https://app.example.com`, comma-separated) whose pages may call the API
    /// from a browser (CORS); none by default.
    #[arg(long, env = "EVENTIDE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// When requests need an API key: `required`, or `off` (anyone who reaches the port may
    /// do anything). Default: required when listening beyond loopback, and on loopback as
    /// soon as a key exists.
    #[arg(long, env = "EVENTIDE_AUTH", value_enum)]
    pub auth: Option<AuthSetting>,

    /// A file holding an API key (`evk_...`) to create with the admin scope at start if it
    /// does not exist yet (stored hashed): how a container gets its first key. The variable
    /// EVENTIDE_BOOTSTRAP_KEY may hold the key itself instead.
    #[arg(long, env = "EVENTIDE_BOOTSTRAP_KEY_FILE")]
    pub bootstrap_key_file: Option<PathBuf>,

    /// EVENTIDE_BOOTSTRAP_KEY: a variable only, so the key never shows in a command line.
    #[arg(skip = std::env::var("EVENTIDE_BOOTSTRAP_KEY").ok().filter(|key| !key.is_empty()).map(Secret))]
    pub bootstrap_key: Option<Secret>,

    /// A TOML file of alert rules and channels (README, Alerts); `eventide alerts check FILE`
    /// validates one. Without it, only the service's own health rules run, to the log.
    #[arg(long, env = "EVENTIDE_ALERTS_CONFIG")]
    pub alerts_config: Option<PathBuf>,

    /// A PEM file with the certificate chain to serve HTTPS with (with --tls-key).
    #[arg(long, env = "EVENTIDE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM file with the private key of --tls-cert.
    #[arg(long, env = "EVENTIDE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where events are stored: `embedded` (SQLite under --data-dir), a `postgres://` URL, or
    /// `null` (keep nothing: for benchmarks of acknowledging alone).
    #[arg(long, env = "EVENTIDE_STORE", default_value = "embedded", hide_env_values = true,
          value_parser = Redacting(parse_store))]
    pub store: StoreTarget,

    /// PostgreSQL schema for the store's tables (created if missing); default `public`.
    #[arg(long, env = "EVENTIDE_POSTGRES_SCHEMA")]
    pub postgres_schema: Option<String>,

    /// The queue between ingestion and storage: `embedded` (in process, through the durable
    /// log under --data-dir) or a `redis://` URL (a Redis stream that API nodes add to and
    /// workers consume).
    #[arg(long, env = "EVENTIDE_QUEUE", default_value = "embedded", hide_env_values = true,
          value_parser = Redacting(parse_queue))]
    pub queue: QueueTarget,

    /// What this process does: `all`, `api` (HTTP: ingest into the queue, read from the
    /// store) or `worker` (consume the queue, write the store).
    #[arg(long, env = "EVENTIDE_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// With a Redis queue: events not yet stored by the workers beyond which API nodes
    /// answer 429.
    #[arg(long, env = "EVENTIDE_MAX_QUEUE_BACKLOG", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue_backlog: u64,

    /// With a Redis queue: how long an entry a worker took may stay unacknowledged before
    /// another worker claims it (the first one died).
    #[arg(long, env = "EVENTIDE_CLAIM_TIMEOUT", default_value = "30s",
          value_parser = parse_positive_duration)]
    pub claim_timeout: Duration,

    /// With a Redis queue: prefix of its keys (stream, consumer group, dead letters), so that
    /// several deployments can share one Redis.
    #[arg(long, env = "EVENTIDE_QUEUE_PREFIX", default_value = "eventide")]
    pub queue_prefix: String,
}

/// Where events are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreTarget {
    Embedded,
    Postgres(String),
    /// Keeps nothing (benchmarks).
    Null,
}

/// The queue between ingestion and storage.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueTarget {
    Embedded,
    Redis(String),
}

/// A secret given in the configuration: shown as `***` wherever the configuration is printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `--auth`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthSetting {
    Required,
    Off,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    All,
    Api,
    Worker,
}

// Written by hand: the URLs may hold passwords, which must never reach a log.
impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreTarget::Embedded => f.write_str("embedded"),
            StoreTarget::Postgres(url) => f.write_str(&redact_url(url)),
            StoreTarget::Null => f.write_str("null"),
        }
    }
}

impl std::fmt::Debug for QueueTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueTarget::Embedded => f.write_str("embedded"),
            QueueTarget::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` with any password replaced by `***`: `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials
                .split_once(':')
                .map_or(credentials, |(user, _)| user);
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// A value parser for options that take URLs: clap's own errors (and `--help`, hence
/// `hide_env_values` on those options) would repeat the value as given, password included;
/// this one shows it through [`redact_url`].
#[derive(Clone)]
struct Redacting<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Redacting<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.0)(&text).map_err(|reason| {
            let option = arg.map_or_else(String::new, |arg| format!(" for '{arg}'"));
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{}'{option}: {reason}\n", redact_url(&text)),
            )
            .with_cmd(cmd)
        })
    }
}

fn parse_store(text: &str) -> Result<StoreTarget, String> {
    match text {
        "embedded" => Ok(StoreTarget::Embedded),
        "null" => Ok(StoreTarget::Null),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreTarget::Postgres(url.to_owned()))
        }
        _ => Err("must be `embedded`, a postgres:// URL or `null`".to_owned()),
    }
}

fn parse_queue(text: &str) -> Result<QueueTarget, String> {
    match text {
        "embedded" => Ok(QueueTarget::Embedded),
        url if url.starts_with("redis://") => Ok(QueueTarget::Redis(url.to_owned())),
        _ => Err("must be `embedded` or a redis:// URL".to_owned()),
    }
}

impl ServeConfig {
    /// Whether this process writes `--data-dir` (the embedded store or the embedded queue's
    /// log), and so must hold its lock. A cluster's API nodes and workers keep nothing there.
    pub fn writes_data_dir(&self) -> bool {
        self.store == StoreTarget::Embedded || self.queue == QueueTarget::Embedded
    }

    /// Whether this process answers the API (an API node, or a process doing everything).
    pub fn serves_api(&self) -> bool {
        self.role != Role::Worker
    }

    /// Whether this process stores what the queue holds (a worker, or a process doing
    /// everything).
    pub fn consumes(&self) -> bool {
        self.role != Role::Api
    }

    /// How many types and services the metrics keep apart.
    pub fn tracked_names(&self) -> NameLimits {
        NameLimits {
            types: self.max_tracked_types as usize,
            services: self.max_tracked_services as usize,
        }
    }

    /// Refuses combinations that cannot work, saying why.
    pub fn check(&self) -> Result<(), String> {
        let redis = matches!(self.queue, QueueTarget::Redis(_));
        if self.role != Role::All && !redis {
            return Err(format!(
                "--role {} needs --queue redis://...: with the embedded (in-process) queue, \
                 API nodes and workers cannot reach each other",
                if self.role == Role::Api {
                    "api"
                } else {
                    "worker"
                }
            ));
        }
        if redis && !matches!(self.store, StoreTarget::Postgres(_)) {
            return Err(
                "--queue redis://... needs --store postgres://...: API nodes and \
                        workers must share the store, and the embedded one is local to a \
                        process"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// A duration that must not be zero.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("must be more than 0".to_owned()),
        duration => Ok(duration),
    }
}

/// Writes a duration in the largest unit that divides it: `30d`, `12h`, `90s`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0".to_owned();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses durations such as `500ms`, `30s`, `10m`, `12h`, `90d`; a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let millis_per_unit = [
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    match number_with_unit(text, &millis_per_unit) {
        Ok(millis) => Ok(Duration::from_millis(millis)),
        Err(UnitError::NoUnit) => Err(format!("'{text}' needs a unit: ms, s, m, h or d")),
        Err(UnitError::NotANumber) => Err(format!("'{text}' is not a duration like 30s, 10m, 24h")),
        Err(UnitError::Unknown(unit)) => Err(format!(
            "unknown unit '{unit}' in '{text}': use ms, s, m, h or d"
        )),
        Err(UnitError::TooLarge) => Err(format!("'{text}' is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    /// The binary's command line (`src/cli.rs`), as far as these tests parse it: the library
    /// cannot name the binary's types.
    #[derive(Parser, Debug)]
    #[command(name = "eventide")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        Serve(Box<ServeConfig>),
        /// Stands for the binary's other subcommands, which these tests do not parse.
        Other,
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_format_in_their_largest_unit() {
        for text in ["30d", "12h", "90m", "30s", "1500ms", "0"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/events"),
            "postgres://app:***@db:5432/events"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x?password=a"),
            "postgres://postgres@127.0.0.1/x?password=a"
        );
        let target = parse_store("postgres://u:secret@h/db").unwrap();
        assert!(!format!("{target:?}").contains("secret"));
        // A mistyped URL is refused without repeating its password.
        let err = Cli::try_parse_from(["eventide", "serve", "--store", "postgress://u:secret@h/d"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--store") && err.contains("u:***@h"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = Cli::try_parse_from(["eventide", "serve", "--queue", "rediss://:secret@h"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--queue") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        let config = |args: &[&str]| {
            let mut all = vec!["eventide", "serve"];
            all.extend_from_slice(args);
            let Command::Serve(config) = Cli::try_parse_from(all).unwrap().command else {
                panic!("not serve")
            };
            config.check()
        };
        assert!(config(&[]).is_ok());
        assert!(config(&["--store", "postgres://p@h/d"]).is_ok());
        let api = config(&["--role", "api"]).unwrap_err();
        assert!(api.contains("--queue redis://"), "{api}");
        assert!(config(&["--role", "worker", "--store", "postgres://p@h/d"]).is_err());
        let redis = config(&["--queue", "redis://h"]).unwrap_err();
        assert!(redis.contains("--store postgres://"), "{redis}");
        assert!(config(&[
            "--role",
            "api",
            "--queue",
            "redis://h",
            "--store",
            "postgres://h/d"
        ])
        .is_ok());
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for unknown in ["30", "5y", "", "h"] {
            assert!(parse_duration(unknown).is_err(), "{unknown:?}");
        }
    }

    #[test]
    fn every_option_has_a_working_default() {
        let cli = Cli::try_parse_from(["eventide", "serve"]).unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.durability, Durability::Fsync);
        assert_eq!(config.max_pending_events, 100_000);
        assert_eq!(
            config.tracked_names(),
            NameLimits {
                types: 1_000,
                services: 1_000
            }
        );
    }

    #[test]
    fn tracked_names_are_bounded() {
        let Command::Serve(config) = Cli::try_parse_from([
            "eventide",
            "serve",
            "--max-tracked-types",
            "0",
            "--max-tracked-services",
            "1000000",
        ])
        .unwrap()
        .command
        else {
            panic!("not serve")
        };
        assert_eq!(
            (config.max_tracked_types, config.max_tracked_services),
            (0, 1_000_000)
        );
        for option in ["--max-tracked-types", "--max-tracked-services"] {
            let err = Cli::try_parse_from(["eventide", "serve", option, "1000001"]).unwrap_err();
            assert!(err.to_string().contains(option), "{err}");
        }
    }

    #[test]
    fn too_small_a_pending_bound_is_refused() {
        let err =
            Cli::try_parse_from(["eventide", "serve", "--max-pending-events", "5"]).unwrap_err();
        assert!(err.to_string().contains("--max-pending-events"), "{err}");
    }
}
