//! Shared helpers for the integration tests: the real `eventide` binary ([`TestServer`],
//! started by the test kit shared with the load generator), a thin HTTP wrapper ([`Api`]), batch-answer checks, time utilities,
//! a PostgreSQL schema per test ([`postgres`]), Redis keys per test or a Redis of a test's own
//! ([`redis`]), a TCP proxy a test can cut ([`proxy`]) and a `/stream` reader ([`sse`]).
#![allow(dead_code)]

pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod sse;

use std::collections::HashSet;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use testkit::http::url_encode as encode_segment;
use testkit::server::{Launch, Logs, Output, ServerProcess};
pub use testkit::strip_ansi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Path of the server binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_eventide");

const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    /// The body parsed as JSON; panics (showing the body) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {}",
                self.status,
                truncate(&self.text, 2000)
            )
        })
    }

    /// Panics (showing the body) unless the status is `want`.
    #[track_caller]
    pub fn expect_status(&self, want: u16) -> &Self {
        assert_eq!(
            self.status,
            want,
            "unexpected status; body: {}",
            truncate(&self.text, 2000)
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Asserts the status and that the body is a JSON error object with a string `error` code
    /// and a string `message`; returns the body.
    #[track_caller]
    pub fn expect_error(&self, want: u16) -> Value {
        self.expect_status(want);
        let body = self.json();
        assert_error_body(&body);
        body
    }
}

/// Asserts that `body` has a non-empty string `error` code and a non-empty string `message`.
#[track_caller]
pub fn assert_error_body(body: &Value) {
    let code = body.get("error").and_then(Value::as_str);
    assert!(
        code.is_some_and(|c| !c.is_empty()),
        "error body lacks a string `error` code: {body}"
    );
    let msg = body.get("message").and_then(Value::as_str);
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error body lacks a string `message`: {body}"
    );
}

/// Asserts that a 400 answer to a query names `param` in its `message` or `parameter` field.
#[track_caller]
pub fn assert_names_parameter(resp: &Resp, param: &str) {
    let body = resp.expect_error(400);
    let in_param = body.get("parameter").and_then(Value::as_str) == Some(param);
    let in_msg = body
        .get("message")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains(param));
    assert!(
        in_param || in_msg,
        "400 answer does not name parameter `{param}`: {body}"
    );
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

// ---------------------------------------------------------------------------------------------
// HTTP client wrapper
// ---------------------------------------------------------------------------------------------

/// A cheap, cloneable handle for talking to one server (shares the server's `reqwest::Client`).
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    /// The same server, every request carrying `key` (`Authorization: Bearer`).
    pub fn with_key(&self, key: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        Api {
            client: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            base: self.base.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn read(resp: reqwest::Response) -> reqwest::Result<Resp> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        Ok(Resp {
            status,
            headers,
            text,
        })
    }

    /// Sends `request` and reads the whole answer.
    async fn try_send(request: reqwest::RequestBuilder) -> reqwest::Result<Resp> {
        Self::read(request.send().await?).await
    }

    /// [`try_send`](Self::try_send), panicking (naming `what`) if it fails.
    async fn send(request: reqwest::RequestBuilder, what: &str) -> Resp {
        Self::try_send(request)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
    }

    /// POST a JSON body (object, array or anything else) to /events.
    pub async fn try_post_events(&self, body: &Value) -> reqwest::Result<Resp> {
        let request = self
            .client
            .post(self.url("/events"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("serialize"));
        Self::try_send(request).await
    }

    pub async fn post_events(&self, body: &Value) -> Resp {
        self.try_post_events(body)
            .await
            .unwrap_or_else(|e| panic!("POST /events failed: {e:?}"))
    }

    /// POST raw bytes to /events with the given content type, gzip-compressing them first
    /// (and sending `Content-Encoding: gzip`) when `gzip` is set.
    pub async fn post_raw(&self, body: impl Into<Vec<u8>>, content_type: &str, gzip: bool) -> Resp {
        let request = self.raw_request("/events", body.into(), content_type, gzip);
        Self::send(request, "POST /events").await
    }

    /// A POST of raw bytes to `path` with the given content type, gzip-compressed (with
    /// `Content-Encoding: gzip`) when `gzip` is set.
    pub fn raw_request(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
        gzip: bool,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", content_type);
        if gzip {
            request
                .header("content-encoding", "gzip")
                .body(gzip_bytes(&body))
        } else {
            request.body(body)
        }
    }

    /// GET /events with the given query parameters (URL-encoded by reqwest).
    pub async fn get_events(&self, query: &[(&str, &str)]) -> Resp {
        let request = self.client.get(self.url("/events")).query(query);
        Self::send(request, "GET /events").await
    }

    /// GET /events/{id} (the id percent-encoded as one path segment).
    pub async fn try_get_event(&self, id: &str) -> reqwest::Result<Resp> {
        let path = format!("/events/{}", encode_segment(id));
        Self::try_send(self.client.get(self.url(&path))).await
    }

    pub async fn get_event(&self, id: &str) -> Resp {
        self.try_get_event(id)
            .await
            .unwrap_or_else(|e| panic!("GET /events/{id} failed: {e:?}"))
    }

    /// GET an arbitrary path (with query string already in it).
    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.get_with(path_and_query, &[]).await
    }

    /// GET with request headers of the test's choosing (`Host`, `If-None-Match`,
    /// `Last-Event-ID`, ...).
    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(reqwest::Method::GET, path_and_query, headers, None)
            .await
    }

    /// Any method, with these headers and, when given, this body: for what the other helpers
    /// do not send (a preflight, a write without a content type, a foreign `Host`).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let what = format!("{method} {path}");
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        Self::send(request, &what).await
    }

    /// POST `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        Self::send(
            self.client.post(self.url(path)).json(body),
            &format!("POST {path}"),
        )
        .await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Resp {
        Self::send(
            self.client.delete(self.url(path)),
            &format!("DELETE {path}"),
        )
        .await
    }

    /// `POST /keys` (this handle must carry an admin key); asserts `201` and returns the
    /// created key, secret included.
    pub async fn create_key(&self, body: &Value) -> Value {
        let resp = self.post_json("/keys", body).await;
        resp.expect_status(201);
        resp.json()
    }

    /// `DELETE /keys/{id}` of a key `create_key` returned; asserts `204`.
    pub async fn revoke_key(&self, key: &Value) {
        let id = key["id"].as_str().expect("a key id");
        self.delete(&format!("/keys/{id}")).await.expect_status(204);
    }

    /// Posts one valid event, asserts it was accepted, and returns its id.
    pub async fn post_one(&self, event: Value) -> String {
        let resp = self.post_events(&event).await;
        resp.expect_status(202);
        let body = resp.json();
        assert_eq!(body["accepted"], json!(1), "answer: {body}");
        assert_eq!(body["errors"], json!([]), "answer: {body}");
        body["ids"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {body}"))
            .to_string()
    }

    /// Posts a batch in which every event must be accepted; returns the ids in request order.
    pub async fn post_all(&self, events: &[Value]) -> Vec<String> {
        let resp = self.post_events(&Value::Array(events.to_vec())).await;
        resp.expect_status(202);
        let body = resp.json();
        assert_eq!(body["accepted"], json!(events.len()), "answer: {body}");
        assert_eq!(body["duplicates"], json!(0), "answer: {body}");
        assert_eq!(body["conflicts"], json!(0), "answer: {body}");
        assert_eq!(body["errors"], json!([]), "answer: {body}");
        let ids = body["ids"].as_array().expect("ids array");
        assert_eq!(ids.len(), events.len(), "answer: {body}");
        ids.iter()
            .map(|v| v.as_str().expect("string id").to_string())
            .collect()
    }

    /// Fetches one page of GET /events and returns (events, next_cursor), asserting 200.
    pub async fn page(&self, query: &[(&str, &str)]) -> (Vec<Value>, Option<String>) {
        let resp = self.get_events(query).await;
        resp.expect_status(200);
        let body = resp.json();
        let events = body["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events array in {body}"))
            .clone();
        let next = match &body["next_cursor"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => panic!("next_cursor is neither null nor a string: {other}"),
        };
        assert!(
            body.as_object().unwrap().contains_key("next_cursor"),
            "answer lacks next_cursor: {body}"
        );
        (events, next)
    }

    /// Walks `next_cursor` with the same filters until it is null; returns every event seen.
    pub async fn walk(&self, filters: &[(&str, &str)], limit: usize) -> Vec<Value> {
        let limit_s = limit.to_string();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100_000 {
            let mut q: Vec<(&str, &str)> = filters.to_vec();
            q.push(("limit", &limit_s));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let (events, next) = self.page(&q).await;
            assert!(events.len() <= limit, "page larger than limit {limit}");
            all.extend(events);
            match next {
                Some(c) => cursor = Some(c),
                None => return all,
            }
        }
        panic!("cursor walk did not end after 100000 pages");
    }

    /// Total number of stored events matching `filters`, via page/page_size.
    pub async fn total(&self, filters: &[(&str, &str)]) -> u64 {
        let mut q = filters.to_vec();
        q.push(("page", "1"));
        q.push(("page_size", "1"));
        let resp = self.get_events(&q).await;
        resp.expect_status(200);
        let body = resp.json();
        body["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("no numeric total in {body}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Outside programs
// ---------------------------------------------------------------------------------------------

/// `eventide keys create ... --json` on `dir`: the created object.
pub async fn create_key_offline(dir: &str, name: &str, scopes: &[&str]) -> Value {
    let mut args = vec![
        "keys",
        "create",
        "--name",
        name,
        "--json",
        "--data-dir",
        dir,
    ];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let (status, stdout, stderr) = run_binary(&args).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Whether python3 can import `modules` (comma-separated). Without them a test that needs
/// them skips, loudly, saying how to `install` them, except under CI=true, where it fails.
pub fn python_has(modules: &str, install: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        skip_outside_ci(&format!("python3 cannot import {modules} ({install})"));
    }
    found
}

/// Says that a test skips because `missing` (what it needs and how to install it); under
/// CI=true, where everything is installed, fails instead.
pub fn skip_outside_ci(missing: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {missing}"
    );
    eprintln!("SKIPPED: {missing}");
}

/// Runs `command` to its end, killed past `limit`: its output (stdout and stderr captured).
/// `what` names it in the panic when it does not end in time or cannot run.
pub async fn output_within(
    command: &mut Command,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let output = command.kill_on_drop(true).output();
    tokio::time::timeout(limit, output)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} did not run: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The real `eventide` binary running as a child process on an ephemeral port.
pub struct TestServer {
    api: Api,
    /// `127.0.0.1:PORT` of the current process.
    pub addr: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Variables set for the server (e.g. `EVENTIDE_BOOTSTRAP_KEY`).
    pub env: Vec<(String, String)>,
    process: Option<ServerProcess>,
    /// The output of every process of this server, restarts included.
    logs: Logs,
    _tempdir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema the server stores into, when the suite runs on PostgreSQL.
    _schema: Option<postgres::TestSchema>,
}

/// The name of this test binary when it is a suite run on the PostgreSQL store:
/// `tests/*_on_postgres.rs` are links to other suites, whose servers then get
/// `--store postgres://...` and a schema of their own.
fn suite_on_postgres() -> Option<String> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name()?.to_str().map(str::to_owned))
        .filter(|name| name.contains("_on_postgres"))
        // Without cargo's `-<hash>`.
        .map(|name| name.split('-').next().unwrap_or_default().to_owned())
}

/// A suite on PostgreSQL without a server to run on (outside CI: under `CI=true`
/// [`postgres::TestSchema::new`] has panicked instead). It must not run on SQLite in its
/// place (its twin suite does that already, and it would pass for what it did not test), and
/// the test harness cannot skip a test from inside it: so the whole test binary ends here,
/// passing, before this test or any other of it starts a server.
fn skip_suite(suite: &str) -> ! {
    use std::io::Write as _;
    // Straight to stderr, as `postgres::TestSchema::new` writes its SKIPPED: the harness
    // would keep what `eprintln!` says to itself.
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED: the whole suite {suite} (it runs on PostgreSQL, which is not \
         reachable); none of its tests ran. ***\n"
    );
    std::process::exit(0)
}

impl Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    /// Starts the server on `dir` with `extra_args` after the standard ones.
    pub async fn start(dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_inner(dir.to_path_buf(), extra_args, None).await
    }

    /// Starts the server on `dir` with variables `env` set.
    pub async fn start_with_env(dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Self::start_inner_env(dir.to_path_buf(), extra_args, None, env).await
    }

    /// Starts the server on a fresh temporary data directory owned by the returned value.
    pub async fn start_temp(extra_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Self::start_inner(dir, extra_args, Some(tmp)).await
    }

    async fn start_inner(
        dir: PathBuf,
        extra_args: &[&str],
        tempdir: Option<tempfile::TempDir>,
    ) -> Self {
        Self::start_inner_env(dir, extra_args, tempdir, Vec::new()).await
    }

    async fn start_inner_env(
        dir: PathBuf,
        extra_args: &[&str],
        tempdir: Option<tempfile::TempDir>,
        env: Vec<(String, String)>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        let mut server = TestServer {
            api: Api {
                client,
                base: String::new(),
            },
            addr: String::new(),
            data_dir: dir,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            env,
            process: None,
            logs: Logs::default(),
            _tempdir: tempdir,
            _schema: None,
        };
        let suite = suite_on_postgres();
        if let Some(suite) = suite.filter(|_| !extra_args.contains(&"--store")) {
            // A server started again on the same data directory (a restart with other
            // flags) finds its predecessor's schema, which that one still owns.
            let marker = server.data_dir.join("test-postgres-schema");
            let name = match std::fs::read_to_string(&marker) {
                Ok(name) => name,
                Err(_) => {
                    let Some(schema) = postgres::TestSchema::new("suite").await else {
                        skip_suite(&suite);
                    };
                    std::fs::create_dir_all(&server.data_dir).unwrap();
                    std::fs::write(&marker, &schema.name).unwrap();
                    let name = schema.name.clone();
                    server._schema = Some(schema);
                    name
                }
            };
            server.args.extend([
                "--store".to_owned(),
                postgres::url(),
                "--postgres-schema".to_owned(),
                name,
            ]);
        }
        server.launch().await;
        server
    }

    /// Tests check read-your-writes by what the answers contain; on a loaded CI machine the
    /// 1 s default could run out first and turn them into (correctly flagged) partial answers.
    /// So unless a test sets its own, servers wait up to 30 s for the indexer.
    fn read_wait_default(&self) -> Vec<&'static str> {
        if self.args.iter().any(|arg| arg == "--read-wait") {
            Vec::new()
        } else {
            vec!["--read-wait", "30s"]
        }
    }

    /// Many tests post events with fixed timestamps (2024, 80 days ago) that the default
    /// 30-day retention would refuse; unless a test sets its own, servers keep everything.
    fn retention_default(&self) -> Vec<&'static str> {
        if self.args.iter().any(|arg| arg == "--retention") {
            Vec::new()
        } else {
            vec!["--retention", "0"]
        }
    }

    async fn launch(&mut self) {
        assert!(self.process.is_none(), "server already running");
        let mut args: Vec<String> = self
            .read_wait_default()
            .into_iter()
            .chain(self.retention_default())
            .map(str::to_owned)
            .collect();
        args.extend(self.args.iter().cloned());
        let process = ServerProcess::start(Launch {
            binary: Path::new(BIN),
            data_dir: &self.data_dir,
            args: &args,
            env: &self.env,
            output: Output::Capture {
                logs: self.logs.clone(),
                echo: std::env::var_os("EVENTIDE_TEST_LOG").is_some(),
            },
            startup_limit: START_TIMEOUT,
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        self.addr = process.addr().to_string();
        self.api.base = format!("http://{}", self.addr);
        self.process = Some(process);
    }

    /// A cloneable handle to this server (the address of the current process).
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("server is running").pid()
    }

    /// Everything the server printed so far (stderr and stdout, interleaved by arrival).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// SIGKILL the server and reap it.
    pub async fn kill9(&mut self) {
        let mut process = self.process.take().expect("server is running");
        process.kill().await.expect("SIGKILL the server");
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let process = self.process.as_ref().expect("server is running");
        process
            .sigterm()
            .unwrap_or_else(|e| panic!("kill -TERM {} failed: {e:#}", process.pid()));
    }

    /// Waits (bounded) for the process to exit after a signal and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut process = self.process.take().expect("server is running");
        match process.wait(EXIT_TIMEOUT).await.expect("wait for server") {
            Some(status) => status,
            None => {
                process.start_kill();
                panic!(
                    "server did not exit within {EXIT_TIMEOUT:?} after SIGTERM; output:\n{}",
                    self.logs()
                );
            }
        }
    }

    /// SIGTERM the server and assert it exits with status 0.
    pub async fn terminate(&mut self) {
        self.send_sigterm();
        let status = self.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(0),
            "server exited with {status} after SIGTERM (expected 0); output:\n{}",
            self.logs()
        );
    }

    /// Starts the server again on the same data directory and flags (new port).
    pub async fn restart(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
        }
        self.logs.push("----- restart -----".into());
        self.launch().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.start_kill();
        }
    }
}

/// Runs the binary with `args` (no `serve` added) and returns (exit status, stdout, stderr);
/// the process is killed if it runs longer than 20 s.
pub async fn run_binary(args: &[&str]) -> (ExitStatus, String, String) {
    let out = output_within(
        Command::new(BIN).args(args).stdin(Stdio::null()),
        EXIT_TIMEOUT,
        &format!("`eventide {}`", args.join(" ")),
    )
    .await;
    (
        out.status,
        strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// Runs `eventide serve` on `addr` with the data directory `data_dir` and `extra` options, and
/// asserts it refuses to start (exit status 1); its stderr, to check it says why.
pub async fn serve_refused(addr: &str, data_dir: &str, extra: &[&str]) -> String {
    let mut args = vec!["serve", "--addr", addr, "--data-dir", data_dir];
    args.extend_from_slice(extra);
    let (status, _, stderr) = run_binary(&args).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

/// A server whose alerts are evaluated every second, with one `absent` rule: `name`, on
/// events of type `kind` over `window` (a type never sent fires it at once). The directory
/// holds the alerts file; keep it as long as the server.
pub async fn start_with_absent_rule(
    name: &str,
    kind: &str,
    window: &str,
) -> (TestServer, tempfile::TempDir) {
    let alerts = tempfile::tempdir().unwrap();
    let alerts_file = alerts.path().join("alerts.toml");
    std::fs::write(
        &alerts_file,
        format!(
            "[alerts]\ninterval = \"1s\"\n\n[[alerts.rules]]\nname = \"{name}\"\n\
             type = \"{kind}\"\nwindow = \"{window}\"\ncondition = \"absent\"\n"
        ),
    )
    .unwrap();
    let server = TestServer::start_temp(&["--alerts-config", alerts_file.to_str().unwrap()]).await;
    (server, alerts)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP (for requests reqwest cannot express, e.g. a body sent in two halves)
// ---------------------------------------------------------------------------------------------

/// Status code and body of a raw HTTP/1.1 response text (body undecoded).
pub fn parse_raw_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {:?}", truncate(&text, 500)));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends `head` then `body` over a fresh connection, stopping the upload early if the server
/// answers first, and returns everything the server sent (the head should ask for
/// `Connection: close`).
pub async fn raw_exchange(addr: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut resp = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    {
        let (mut rd, mut wr) = stream.split();
        for chunk in body.chunks(64 * 1024) {
            let answered = tokio::select! {
                r = rd.read(&mut buf) => {
                    if let Ok(n) = r {
                        resp.extend_from_slice(&buf[..n]);
                    }
                    true
                }
                w = wr.write_all(chunk) => w.is_err(),
            };
            if answered {
                break;
            }
        }
    }
    read_to_end_bounded(&mut stream, &mut resp).await;
    resp
}

/// Reads until EOF, an error, or 20 s.
pub async fn read_to_end_bounded(stream: &mut TcpStream, resp: &mut Vec<u8>) {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => resp.extend_from_slice(&buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batch answers
// ---------------------------------------------------------------------------------------------

/// What a test expects for one event of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    /// Accepted (and not a duplicate).
    Ok,
    /// Rejected; the error must name one of these fields (in `field`, or in `message`).
    Err(&'static [&'static str]),
    /// Rejected, for a reason whose field the spec does not fix.
    Invalid,
}

/// Checks a POST /events answer against per-event expectations: status 202 (or 400 when no
/// event is valid, with `error` and `message`), `accepted`, `duplicates` = `conflicts` = 0,
/// `ids` (null exactly for invalid events) and `errors` (at least one per invalid event, each
/// with its index and field).
/// Returns the body.
#[track_caller]
pub fn check_batch(resp: &Resp, wants: &[Want]) -> Value {
    let any_ok = wants.iter().any(|w| matches!(w, Want::Ok));
    let body = if any_ok {
        resp.expect_status(202);
        resp.json()
    } else {
        resp.expect_error(400)
    };
    let n_ok = wants.iter().filter(|w| matches!(w, Want::Ok)).count();
    assert_eq!(body["accepted"], json!(n_ok), "accepted; answer: {body}");
    assert_eq!(body["duplicates"], json!(0), "duplicates; answer: {body}");
    assert_eq!(body["conflicts"], json!(0), "conflicts; answer: {body}");
    let ids = body["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids array: {body}"));
    assert_eq!(ids.len(), wants.len(), "one id per event; answer: {body}");
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"));
    for (i, want) in wants.iter().enumerate() {
        let errs: Vec<&Value> = errors.iter().filter(|e| e["index"] == json!(i)).collect();
        match want {
            Want::Ok => {
                assert!(
                    ids[i].as_str().is_some_and(|s| !s.is_empty()),
                    "event {i} should be accepted with an id; answer: {body}"
                );
                assert!(
                    errs.is_empty(),
                    "event {i} should have no error; answer: {body}"
                );
            }
            Want::Err(_) | Want::Invalid => {
                assert!(
                    ids[i].is_null(),
                    "event {i} should have a null id; answer: {body}"
                );
                assert!(
                    !errs.is_empty(),
                    "event {i} should have an error entry; answer: {body}"
                );
                for e in &errs {
                    assert!(
                        e["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "error entry without message: {e}"
                    );
                }
                if let Want::Err(fields) = want {
                    let named = errs.iter().any(|e| {
                        let f = e["field"].as_str().unwrap_or("");
                        let m = e["message"].as_str().unwrap_or("");
                        fields.iter().any(|want| f == *want || m.contains(want))
                    });
                    assert!(
                        named,
                        "error for event {i} should name one of {fields:?}; answer: {body}"
                    );
                }
            }
        }
    }
    let valid_indexes: HashSet<usize> = (0..wants.len()).collect();
    for e in errors {
        let idx = e["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without numeric index: {e}"));
        assert!(
            valid_indexes.contains(&(idx as usize)),
            "error index {idx} out of range: {body}"
        );
        assert!(
            e["field"].is_string() || e["field"].is_null() || e.get("field").is_none(),
            "error field must be a string: {e}"
        );
    }
    body
}

/// The value of the sample `name{labels}` (labels as rendered, in order) in the Prometheus
/// exposition `text`.
pub fn prometheus_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The ids of an answer (`null` entries as `None`).
pub fn answer_ids(body: &Value) -> Vec<Option<String>> {
    body["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids array: {body}"))
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// Fields of a stored event's JSON representation.
pub const EVENT_FIELDS: &[&str] = &[
    "id",
    "type",
    "timestamp",
    "service",
    "user_id",
    "message",
    "metadata",
    "received_at",
    "seq",
];

/// Asserts the shape of a stored event: only known fields, required ones present, formats.
#[track_caller]
pub fn assert_event_shape(ev: &Value) {
    let obj = ev
        .as_object()
        .unwrap_or_else(|| panic!("event is not an object: {ev}"));
    for k in obj.keys() {
        assert!(
            EVENT_FIELDS.contains(&k.as_str()),
            "unexpected field `{k}` in {ev}"
        );
    }
    for k in ["id", "type", "timestamp", "received_at", "seq"] {
        assert!(obj.contains_key(k), "missing `{k}` in {ev}");
    }
    assert!(ev["id"].is_string(), "id not a string: {ev}");
    assert!(ev["type"].is_string(), "type not a string: {ev}");
    assert!(ev["seq"].is_u64(), "seq not an unsigned integer: {ev}");
    for k in ["timestamp", "received_at"] {
        let s = ev[k].as_str().unwrap_or_else(|| panic!("{k} not a string"));
        assert!(
            parse_ts(s).is_some(),
            "{k} `{s}` is not YYYY-MM-DDTHH:MM:SS.mmmZ"
        );
    }
    for k in ["service", "user_id", "message"] {
        if let Some(v) = obj.get(k) {
            assert!(v.is_string(), "{k} present but not a string: {ev}");
        }
    }
    if let Some(m) = obj.get("metadata") {
        assert!(m.is_object(), "metadata present but not an object: {ev}");
    }
}

pub fn ev_id(ev: &Value) -> String {
    ev["id"].as_str().expect("event id").to_string()
}

pub fn ev_seq(ev: &Value) -> u64 {
    ev["seq"].as_u64().expect("event seq")
}

pub fn ev_ts(ev: &Value) -> i64 {
    let s = ev["timestamp"].as_str().expect("event timestamp");
    parse_ts(s).unwrap_or_else(|| panic!("bad timestamp {s}"))
}

/// Asserts events are ordered by (timestamp, seq), descending or ascending.
#[track_caller]
pub fn assert_ordered(events: &[Value], desc: bool) {
    for w in events.windows(2) {
        let a = (ev_ts(&w[0]), ev_seq(&w[0]));
        let b = (ev_ts(&w[1]), ev_seq(&w[1]));
        let ok = if desc { a > b } else { a < b };
        assert!(
            ok,
            "events out of {} order: {} then {}",
            if desc { "desc" } else { "asc" },
            w[0],
            w[1]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats epoch milliseconds as the server must: `YYYY-MM-DDTHH:MM:SS.mmmZ`; written by the
/// `time` crate, independently of the service's own formatting.
pub fn fmt_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or_else(|e| panic!("{ms} ms: {e}"));
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(format).unwrap()
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SS.mmmZ` into epoch milliseconds.
pub fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ".as_bytes();
    for (c, p) in b.iter().zip(shape) {
        let ok = if *p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        if !ok {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

// ---------------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------------

pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// Serializes events as NDJSON (one compact object per line).
pub fn ndjson(events: &[Value]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

/// The raw JSON text of the value of `"key":` (first occurrence) in `text`, found by bracket
/// matching that respects strings; `None` if the key is absent.
pub fn raw_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let mut search_from = 0;
    while let Some(pos) = text[search_from..].find(&pat) {
        let after_key = search_from + pos + pat.len();
        let rest = &text[after_key..];
        let trimmed = rest.trim_start();
        if let Some(stripped) = trimmed.strip_prefix(':') {
            let value_start = after_key + (rest.len() - stripped.len());
            let v = &text[value_start..];
            let lead = v.len() - v.trim_start().len();
            let start = value_start + lead;
            return Some(&text[start..start + json_value_len(&text[start..])]);
        }
        search_from = after_key;
    }
    None
}

/// Length in bytes of the JSON value at the start of `s` (objects/arrays/strings by matching,
/// scalars up to the next `,` `}` `]` or whitespace).
fn json_value_len(s: &str) -> usize {
    let b = s.as_bytes();
    match b.first() {
        Some(b'{') | Some(b'[') => {
            let mut depth = 0i32;
            let mut in_str = false;
            let mut esc = false;
            for (i, &c) in b.iter().enumerate() {
                if in_str {
                    if esc {
                        esc = false;
                    } else if c == b'\\' {
                        esc = true;
                    } else if c == b'"' {
                        in_str = false;
                    }
                    continue;
                }
                match c {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
            }
            b.len()
        }
        Some(b'"') => {
            let mut esc = false;
            for (i, &c) in b.iter().enumerate().skip(1) {
                if esc {
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                } else if c == b'"' {
                    return i + 1;
                }
            }
            b.len()
        }
        _ => b
            .iter()
            .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())
            .unwrap_or(b.len()),
    }
}

/// Removes JSON whitespace outside strings.
pub fn strip_json_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_str = false;
    let mut esc = false;
    for c in s.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra crates.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A batch of `lo..=hi` events (how many drawn at random), each made by `event`.
    pub fn batch(
        &mut self,
        lo: u64,
        hi: u64,
        mut event: impl FnMut(&mut Rng) -> Value,
    ) -> Vec<Value> {
        let size = self.range(lo, hi);
        (0..size).map(|_| event(self)).collect()
    }
}

/// Waits until `check` holds, polling every 50 ms, for at most `limit`; panics naming `what`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for every one of `tasks` to end, each within `limit`; panics naming `what` if one
/// is still running then, or panicked.
pub async fn join_within<T>(
    limit: Duration,
    what: &str,
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) {
    for task in tasks {
        tokio::time::timeout(limit, task)
            .await
            .unwrap_or_else(|_| panic!("{what}: still running after {limit:?}"))
            .unwrap_or_else(|e| panic!("{what}: the task panicked: {e}"));
    }
}

/// Asserts that `resp` carries each header with exactly the value given.
#[track_caller]
pub fn assert_headers(resp: &Resp, want: &[(&str, &str)], what: &str) {
    for (name, value) in want {
        assert_eq!(resp.header(name).as_deref(), Some(*value), "{what}: {name}");
    }
}

/// Asserts that nothing is `missing` of the `expected` events, saying how many are and the
/// first ten.
#[track_caller]
pub fn assert_none_missing<T: std::fmt::Debug>(missing: &[T], expected: usize, what: &str) {
    assert!(
        missing.is_empty(),
        "{} of {expected} {what}, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// The string field `key` of each object in the array `list` (panics on anything else).
pub fn str_fields<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| {
            item[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key} in {item}"))
        })
        .collect()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn poll_until<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
