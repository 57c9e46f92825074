//! Redis for tests: which server ([`url`]), key names of each test's own, deleted when the test
//! ends ([`TestRedis`]), and what happens when no server answers: outside CI the test says so
//! loudly and passes without running; under `CI=true` it fails.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eventide::queue::redis::QueueKeys;

/// The server `.ci/run` provides: local, no password.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// `EVENTIDE_TEST_REDIS_URL`, or [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var("EVENTIDE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `host:port` of `url`, for messages: never the user or the password.
fn server(url: &str) -> String {
    match redis::Client::open(url) {
        Ok(client) => client.get_connection_info().addr().to_string(),
        Err(_) => "(an invalid EVENTIDE_TEST_REDIS_URL)".to_owned(),
    }
}

/// A synchronous connection (usable from `Drop`), or why not.
fn connection(url: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|err| err.to_string())?;
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|err| err.to_string())
}

/// Keys of one test (a prefix no other test uses), deleted when this is dropped, whether the
/// test passed or not.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    pub keys: QueueKeys,
}

impl TestRedis {
    /// A key prefix named after `label` on the test server; `None` (after printing SKIPPED)
    /// when the server cannot be reached, unless under CI, where that panics.
    pub fn new(label: &str) -> Option<TestRedis> {
        let url = url();
        let reachable = connection(&url).and_then(|mut conn| {
            redis::cmd("PING")
                .query::<String>(&mut conn)
                .map_err(|err| err.to_string())
        });
        if let Err(err) = reachable {
            let server = server(&url);
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("Redis not reachable at {server} under CI=true: {err}");
            }
            // Straight to stderr, not through `eprintln!`, which the test harness captures.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED: Redis not reachable at {server} ({err}); this test did not run. \
                 Start Redis or set EVENTIDE_TEST_REDIS_URL. ***\n"
            );
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "test:{label}:{}:{}",
            uuid::Uuid::now_v7().simple(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Some(TestRedis {
            url,
            keys: QueueKeys::with_prefix(&prefix),
            prefix,
        })
    }

    /// A synchronous connection for checks by hand.
    pub fn connection(&self) -> redis::Connection {
        connection(&self.url).expect("connect to the test Redis")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let deleted = connection(&self.url).and_then(|mut conn| {
            redis::cmd("DEL")
                .arg(&self.keys.stream)
                .arg(&self.keys.dead_letters)
                .query::<i64>(&mut conn)
                .map_err(|err| err.to_string())
        });
        if let Err(err) = deleted {
            eprintln!("could not delete the test keys {}:*: {err}", self.prefix);
        }
    }
}

/// A [`TcpProxy`](super::proxy::TcpProxy) in front of the test Redis that a test can cut,
/// as if Redis went down.
pub struct Proxy {
    /// The test server's URL with the proxy's address in place of the server's.
    pub url: String,
    proxy: super::proxy::TcpProxy,
}

impl Proxy {
    pub async fn start(redis: &TestRedis) -> Proxy {
        let target = server(&redis.url);
        let proxy = super::proxy::TcpProxy::start(&target).await;
        let url = if redis.url.contains(&target) {
            redis.url.replacen(&target, &proxy.addr, 1)
        } else {
            format!("redis://{}", proxy.addr)
        };
        Proxy { url, proxy }
    }

    /// Cuts (`false`) or restores (`true`) the way to Redis.
    pub fn set_up(&self, up: bool) {
        if up {
            self.proxy.resume();
        } else {
            self.proxy.cut();
        }
    }
}

/// A `redis-server` of a test's own, without persistence (`--save "" --appendonly no`), on a
/// free port: a test may kill it and start it again on the same port. Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one; `None` (after printing SKIPPED) when `redis-server` cannot be run, unless
    /// under CI, where that panics.
    pub fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        if let Err(err) = redis.launch() {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("cannot start redis-server under CI=true: {err}");
            }
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED: cannot start a private redis-server ({err}); this test did not \
                 run. Install Redis (redis-server on the PATH). ***\n"
            );
            return None;
        }
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server already running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|err| format!("redis-server: {err}"))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let pong = connection(&self.url()).and_then(|mut conn| {
                redis::cmd("PING")
                    .query::<String>(&mut conn)
                    .map_err(|err| err.to_string())
            });
            match pong {
                Ok(_) => return Ok(()),
                Err(err) if std::time::Instant::now() > deadline => {
                    self.kill();
                    return Err(format!("no answer on port {} in 20 s: {err}", self.port));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILL: gone at once, and with it (no persistence) every key.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
