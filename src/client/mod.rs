//! The command-line client (`eventide send|import|query|export|tail`): talks to a running
//! server over HTTP, as `curl` would, with the key sent as a bearer token.
//!
//! Exit codes: 0 success, 1 the server refused some of the input (invalid events, bad
//! parameters), 2 a usage, connection or authentication problem. Errors are one line on
//! stderr; results go to stdout.
//!
//! - [`send`]: one event or a few, from the argument, the flags or stdin.
//! - [`import`]: files of events in batches, concurrently, idempotently (ids derived from the
//!   file's content and line), with progress and a rejects file.
//! - [`query`]: `GET /events`, a page or a whole cursor walk, as a table, JSON, NDJSON or CSV.
//! - [`export`]: `GET /events/export` into a file.
//! - [`tail`]: `GET /stream`, one line per event, resuming after drops ([`sse`]).

pub mod export;
pub mod import;
pub mod query;
pub mod send;
pub mod sse;
pub mod tail;

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the server is, and the key to show it.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The server's base URL.
    #[arg(long, env = "EVENTIDE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// An API key, sent as `Authorization: Bearer` (needed once the server has keys).
    #[arg(long, env = "EVENTIDE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// How often `import` and `export` print a progress line on stderr when it is not a
/// terminal (on a terminal: a progress bar).
#[derive(Args, Debug, Clone)]
pub struct ProgressArgs {
    /// The time between two progress lines when stderr is not a terminal (hidden: for tests
    /// and impatient scripts).
    #[arg(
        long = "progress-every",
        env = "EVENTIDE_PROGRESS_EVERY",
        default_value = "5s",
        value_parser = crate::config::parse_duration,
        hide = true
    )]
    pub every: Duration,
}

/// The client's commands, each with its connection options.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Send one event, or a few (an argument, flags, or JSON/NDJSON on stdin).
    Send(send::SendArgs),
    /// Import files of events (NDJSON, JSON or CSV, maybe gzip), idempotently.
    Import(import::ImportArgs),
    /// Query stored events (a page, or every one with --all).
    Query(query::QueryArgs),
    /// Export stored events into a file, from one snapshot (NDJSON or CSV).
    Export(export::ExportArgs),
    /// Follow events live, resuming after drops without gap or repeat.
    Tail(tail::TailArgs),
}

/// Why a command failed, which decides its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The server refused some of the input (exit 1).
    #[error("{0}")]
    Refused(String),
    /// A usage, connection or authentication problem (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
}

pub type Outcome = Result<(), Failure>;

/// Runs a client command.
pub async fn run(command: ClientCommand) -> Outcome {
    match command {
        ClientCommand::Send(args) => send::run(args).await,
        ClientCommand::Import(args) => import::run(args).await,
        ClientCommand::Query(args) => query::run(args).await,
        ClientCommand::Export(args) => export::run(args).await,
        ClientCommand::Tail(args) => tail::run(args).await,
    }
}

/// An HTTP client for one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, Failure> {
        let base = connection.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::Usage(format!(
                "--url must start with http:// or https://, not '{base}'"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("eventide-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Failure::Usage(format!("cannot make an HTTP client: {err}")))?;
        Ok(Client {
            http,
            base,
            key: connection.api_key.clone().filter(|key| !key.is_empty()),
        })
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_key(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_key(self.http.post(format!("{}{path}", self.base)))
    }

    fn with_key(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request`; a failure to reach the server is a usage failure naming the URL.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        request.send().await.map_err(|err| self.unreachable(&err))
    }

    pub fn unreachable(&self, err: &reqwest::Error) -> Failure {
        Failure::Usage(format!(
            "cannot reach the server at {}: {}",
            self.base,
            error_chain(err)
        ))
    }
}

/// An error and its causes on one line (reqwest's own message hides the cause).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The failure for an answer that is not a success: its JSON `error` and `message` (or its
/// text), as [`Failure::Refused`] for refusals of the input (400, 413, 415, 422) and
/// [`Failure::Usage`] otherwise (keys, server trouble).
pub async fn refusal(response: reqwest::Response) -> Failure {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = describe_error(status.as_u16(), &text);
    match status.as_u16() {
        400 | 413 | 415 | 422 => Failure::Refused(message),
        _ => Failure::Usage(message),
    }
}

/// `status error: message` from an error answer's JSON, or its first line.
pub fn describe_error(status: u16, text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(body) if body["error"].is_string() => format!(
            "server answered {status} {}: {}",
            body["error"].as_str().unwrap_or(""),
            body["message"].as_str().unwrap_or("")
        ),
        _ => format!(
            "server answered {status}: {}",
            text.lines().next().unwrap_or("").trim()
        ),
    }
}

/// The seconds of a `Retry-After` header (at least 1, at most 60; 1 when absent).
pub fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 60))
}

/// The filters shared by `query`, `export` and `tail`.
#[derive(Args, Debug, Clone, Default)]
pub struct Filters {
    /// Only events of this type.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Only events of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only events of this user.
    #[arg(long)]
    pub user_id: Option<String>,
}

impl Filters {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("type", &self.kind),
            ("service", &self.service),
            ("user_id", &self.user_id),
        ] {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        pairs
    }
}

/// `--from` and `--to`: RFC 3339, epoch seconds or milliseconds, or relative to now
/// (`-1h`, `-30m`, `-7d`, `-2w`, `-10s`), as the server's RFC 3339.
pub fn parse_time(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(relative) = text.strip_prefix('-') {
        let split = relative
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("'{text}': a relative time needs a unit (s, m, h, d, w)"))?;
        let (number, unit) = relative.split_at(split);
        let number: i64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a relative time such as -1h or -7d"))?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(format!("'{text}': unknown unit '{unit}' (s, m, h, d, w)")),
        };
        let now = time::OffsetDateTime::now_utc();
        let at = now - time::Duration::seconds(number.saturating_mul(seconds));
        return at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|err| err.to_string());
    }
    if text.parse::<f64>().is_ok()
        || time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
    {
        return Ok(text.to_owned());
    }
    Err(format!(
        "'{text}' is not a time: give RFC 3339 (2024-01-15T00:00:00Z), epoch seconds, or relative (-1h, -7d)"
    ))
}

/// The time range shared by `query` and `export`.
#[derive(Args, Debug, Clone, Default)]
pub struct TimeRange {
    /// Events at or after this time: RFC 3339, epoch seconds, or relative (-1h, -7d).
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Events before this time (same forms as --from).
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub to: Option<String>,
}

impl TimeRange {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(from) = &self.from {
            pairs.push(("from", from.clone()));
        }
        if let Some(to) = &self.to {
            pairs.push(("to", to.clone()));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_or_relative() {
        assert_eq!(
            parse_time("2024-01-15T00:00:00Z").unwrap(),
            "2024-01-15T00:00:00Z"
        );
        assert_eq!(parse_time("1705363200").unwrap(), "1705363200");
        let hour_ago = parse_time("-1h").unwrap();
        let parsed =
            time::OffsetDateTime::parse(&hour_ago, &time::format_description::well_known::Rfc3339)
                .unwrap();
        let age = time::OffsetDateTime::now_utc() - parsed;
        assert!((3_590..3_610).contains(&age.whole_seconds()), "{hour_ago}");
        assert!(parse_time("-7d").is_ok());
        assert!(parse_time("-7y").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn error_answers_are_described_on_one_line() {
        assert_eq!(
            describe_error(
                400,
                r#"{"error":"invalid_parameter","message":"bad 'from'"}"#
            ),
            "server answered 400 invalid_parameter: bad 'from'"
        );
        assert_eq!(
            describe_error(502, "Bad gateway\nmore"),
            "server answered 502: Bad gateway"
        );
    }
}
