//! The real `eventide` binary as a child process: `serve --addr 127.0.0.1:0` on a data
//! directory, its address read from the `listening on http://` line it logs, handed over
//! once `GET /health` answers 200; its output kept in memory or written to a file; SIGTERM,
//! waiting for the exit, SIGKILL.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::http::{get_request, HttpConnection};

/// Lines of output kept in memory; the oldest go first.
const MAX_LOG_LINES: usize = 5000;
/// Between two looks at the output or at `/health` while the server starts.
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// Where the server's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Read line by line into `logs` (each line tagged `[stdout]` or `[stderr]`), and echoed
    /// to this process's stderr when `echo`.
    Capture { logs: Logs, echo: bool },
    /// Straight into this file, created afresh: nothing is read from the server on the
    /// caller's cores (what a benchmark wants).
    File(PathBuf),
}

/// Output lines of a server, shared by its successive processes (kept across restarts).
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() >= MAX_LOG_LINES {
            lines.remove(0);
        }
        lines.push(line);
    }

    /// Everything kept, one line each, in order of arrival.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// How to start one server process.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub data_dir: &'a Path,
    /// After `serve --addr 127.0.0.1:0 --data-dir <data_dir>`.
    pub args: &'a [String],
    /// Variables set for the server (e.g. `EVENTIDE_BOOTSTRAP_KEY`).
    pub env: &'a [(String, String)],
    pub output: Output,
    /// How long it may take to log its address, and then again to answer `/health`.
    pub startup_limit: Duration,
}

/// A running server process; dropping it kills the process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    output: Output,
}

/// What the output readers of a captured process share with it.
#[derive(Debug, Default)]
struct Capture {
    /// The address of the first `listening on http://` line.
    listening: Mutex<Option<String>>,
    /// Output streams still being read (0 once the process closed both).
    open_streams: AtomicUsize,
}

impl ServerProcess {
    /// Starts `<binary> serve --addr 127.0.0.1:0 --data-dir <data_dir> <args>` and returns
    /// once it answers `GET /health` with 200; on failure, says why with the end of its
    /// output.
    pub async fn start(launch: Launch<'_>) -> Result<Self> {
        let mut command = Command::new(launch.binary);
        command
            .arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(launch.data_dir)
            .args(launch.args)
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &launch.output {
            Output::Capture { .. } => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Output::File(path) => {
                let log = File::create(path)
                    .with_context(|| format!("creating server log {}", path.display()))?;
                let log_for_stderr = log.try_clone().context("duplicating log file handle")?;
                command
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(log_for_stderr));
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("server exited before its pid could be read"))?;
        let capture = Arc::new(Capture::default());
        if let Output::Capture { logs, echo } = &launch.output {
            let stdout = child.stdout.take().expect("stdout piped");
            let stderr = child.stderr.take().expect("stderr piped");
            capture.open_streams.store(2, Ordering::SeqCst);
            tokio::spawn(drain(
                stderr,
                "stderr",
                logs.clone(),
                *echo,
                capture.clone(),
            ));
            tokio::spawn(drain(
                stdout,
                "stdout",
                logs.clone(),
                *echo,
                capture.clone(),
            ));
        }
        let mut server = ServerProcess {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            output: launch.output,
        };
        server.addr = server
            .wait_until_listening(&capture, launch.startup_limit)
            .await?;
        server.wait_until_healthy(launch.startup_limit).await?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill only sends a signal; the pid is our child's, not yet reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending SIGTERM to {pid}"));
        }
        Ok(())
    }

    /// Waits for the process to exit: `None` if it still runs after `limit`.
    pub async fn wait(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Ok(Some(status.context("waiting for the server to exit")?)),
            Err(_) => Ok(None),
        }
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await.context("killing the server")
    }

    /// SIGKILL without waiting.
    pub fn start_kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// The last `lines` lines of the output, for error messages.
    pub fn output_tail(&self, lines: usize) -> String {
        let text = match &self.output {
            Output::Capture { logs, .. } => logs.text(),
            Output::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        };
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        match (&self.output, tail.is_empty()) {
            (Output::File(path), true) => format!("(log {} is empty)", path.display()),
            (Output::Capture { .. }, true) => "(no output)".to_owned(),
            (_, false) => tail,
        }
    }

    /// The address the server says it listens on.
    async fn wait_until_listening(
        &mut self,
        capture: &Capture,
        limit: Duration,
    ) -> Result<SocketAddr> {
        let started = Instant::now();
        loop {
            let listening = match &self.output {
                Output::Capture { .. } => capture.listening.lock().unwrap().clone(),
                Output::File(path) => std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .find_map(|line| parse_listening(&strip_ansi(line))),
            };
            if let Some(addr) = listening {
                return addr
                    .parse()
                    .with_context(|| format!("the server said it listens on {addr:?}"));
            }
            if let Some(status) = self.child.try_wait().context("checking server process")? {
                // Let the readers take in what it wrote last.
                let finishing = Instant::now();
                while capture.open_streams.load(Ordering::SeqCst) > 0
                    && finishing.elapsed() < Duration::from_secs(5)
                {
                    tokio::time::sleep(STARTUP_POLL).await;
                }
                bail!(
                    "server exited ({status}) before printing `listening on http://`; output:\n{}",
                    self.output_tail(MAX_LOG_LINES)
                );
            }
            if started.elapsed() > limit {
                bail!(
                    "server did not print `listening on http://` within {limit:?}; output:\n{}",
                    self.output_tail(MAX_LOG_LINES)
                );
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    async fn wait_until_healthy(&mut self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        let request = get_request("/health", "");
        let mut last_problem = String::from("no answer yet");
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().context("checking server process")? {
                bail!(
                    "server exited during startup ({status}); output:\n{}",
                    self.output_tail(MAX_LOG_LINES)
                );
            }
            let attempt = async {
                let mut connection = HttpConnection::connect(self.addr).await?;
                let response = connection.send(&request).await?;
                Ok::<u16, anyhow::Error>(response.status)
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(200)) => return Ok(()),
                Ok(Ok(status)) => last_problem = format!("GET /health answered {status}"),
                Ok(Err(error)) => last_problem = format!("{error:#}"),
                Err(_) => last_problem = "GET /health timed out".to_owned(),
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
        bail!(
            "server at {} never answered /health with 200 within {limit:?} ({last_problem}); output:\n{}",
            self.addr,
            self.output_tail(MAX_LOG_LINES)
        )
    }
}

/// Reads one output stream of the server line by line until EOF, keeping the lines,
/// echoing them when asked, and noting the listening address once.
async fn drain<R: AsyncRead + Unpin>(
    stream: R,
    tag: &'static str,
    logs: Logs,
    echo: bool,
    capture: Arc<Capture>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
        if echo {
            eprintln!("[eventide {tag}] {line}");
        }
        if let Some(addr) = parse_listening(&line) {
            capture.listening.lock().unwrap().get_or_insert(addr);
        }
        logs.push(format!("[{tag}] {line}"));
    }
    capture.open_streams.fetch_sub(1, Ordering::SeqCst);
}

/// The `HOST:PORT` after `listening on http://` in a log line, if any.
pub fn parse_listening(line: &str) -> Option<String> {
    const MARK: &str = "listening on http://";
    let at = line.find(MARK)? + MARK.len();
    let token: String = line[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    let token = token.trim_end_matches(['/', '"', '\'', ',', ')']);
    (!token.is_empty()).then(|| token.to_string())
}

/// Removes ANSI escape sequences (CSI `ESC [ ... letter` and two-character escapes).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() || c == '~' {
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_text_and_json_logs() {
        assert_eq!(
            parse_listening("INFO eventide::server: listening on http://127.0.0.1:4321 role=All"),
            Some("127.0.0.1:4321".to_owned())
        );
        assert_eq!(
            parse_listening(r#"{"fields":{"message":"listening on http://127.0.0.1:80"}}"#),
            Some("127.0.0.1:80".to_owned())
        );
        assert_eq!(parse_listening("listening on https://127.0.0.1:80"), None);
        assert_eq!(
            strip_ansi("\u{1b}[2mINFO\u{1b}[0m listening"),
            "INFO listening"
        );
    }
}
