//! PostgreSQL for tests: which server ([`url`]), a schema of each test's own, dropped when the
//! test ends ([`TestSchema`]), and what happens when no server answers: outside CI the test
//! says so loudly and passes without running; under `CI=true` it fails.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

/// The server `.ci/run` provides: local, trust authentication for `postgres`.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `EVENTIDE_TEST_POSTGRES_URL`, or [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var("EVENTIDE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `host:port` of `url`, for messages: never the user or the password.
fn server(url: &str) -> String {
    let Ok(config) = url.parse::<Config>() else {
        return "(an invalid EVENTIDE_TEST_POSTGRES_URL)".to_owned();
    };
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects to `url` and runs `sql` (a batch of statements).
async fn execute(url: &str, sql: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|err| chain(&err))?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|err| chain(&err))
}

/// `err` and its causes, `: `-separated.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A schema name no other test uses, in this run or a leftover of an earlier one.
fn unique_name(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let label: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    format!(
        "test_{label}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A schema for one test (the store creates it), dropped with everything in it when this is
/// dropped, whether the test passed or not.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// A schema named after `label` in the test server; `None` (after printing SKIPPED) when
    /// the server cannot be reached, unless under CI, where that panics.
    pub async fn new(label: &str) -> Option<TestSchema> {
        let url = url();
        if let Err(err) = execute(&url, "SELECT 1").await {
            let server = server(&url);
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("PostgreSQL not reachable at {server} under CI=true: {err}");
            }
            // Straight to stderr, not through `eprintln!`, which the test harness captures
            // (and shows only for failing tests).
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED: PostgreSQL not reachable at {server} ({err}); this test did not \
                 run. Start PostgreSQL or set EVENTIDE_TEST_POSTGRES_URL. ***\n"
            );
            return None;
        }
        Some(TestSchema {
            url,
            name: unique_name(label),
        })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // A runtime of its own on a thread of its own: this may run inside the test's runtime,
        // or while a failed test unwinds. The lock timeout keeps a connection left inside a
        // transaction by a failed test from hanging the drop.
        let url = self.url.clone();
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name.replace('"', "\"\"")
        );
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?
                .block_on(execute(&url, &sql))
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test schema {}: {err}", self.name);
        }
    }
}
