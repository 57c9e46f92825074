//! Starting and stopping the server under test: a fresh `serve` process per scenario
//! variant on a free loopback port and its own data directory, plus the scratch directory
//! that holds those data directories and the server logs.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

use super::http::{get_request, HttpConnection};

/// How long a server may take to answer `GET /health` with 200.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// Signal number of SIGTERM on Linux.
const SIGTERM: i32 = 15;
/// How long a server may take to exit after SIGTERM before it is killed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);

/// A directory under the system temp dir, removed on drop unless kept.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    pub fn create(keep: bool) -> Result<Self> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.subsec_nanos());
            let path = base.join(format!(
                "eventide-bench-{}-{nanos:09}-{attempt}",
                std::process::id()
            ));
            // create_dir fails if the path exists, so the directory is ours alone.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path, keep }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => {
                    return Err(error).with_context(|| format!("creating {}", path.display()))
                }
            }
        }
        bail!(
            "could not create a scratch directory under {}",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "[bench] kept data and server logs in {}",
                self.path.display()
            );
        } else if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("[bench] could not remove {}: {error}", self.path.display());
        }
    }
}

/// How to launch the server binary.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    pub binary: PathBuf,
    /// Appended after the standard `serve` arguments.
    pub extra_args: Vec<String>,
}

impl ServerCommand {
    /// The same command with `args` appended.
    pub fn with_args(&self, args: &[&str]) -> ServerCommand {
        let mut command = self.clone();
        command
            .extra_args
            .extend(args.iter().map(|arg| arg.to_string()));
        command
    }
}

/// A running `serve` process. Dropping it without [`stop`](Self::stop) kills it, so an
/// error in a scenario never leaves a server behind.
#[derive(Debug)]
pub struct RunningServer {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl RunningServer {
    /// Starts `<binary> serve --addr 127.0.0.1:<free port> --data-dir <data_dir>` (plus
    /// `--store null` when asked) and waits until `GET /health` answers 200.
    pub async fn start(
        command: &ServerCommand,
        data_dir: &Path,
        log_path: &Path,
        null_store: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let addr = free_loopback_addr()?;
        let log = File::create(log_path)
            .with_context(|| format!("creating server log {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("duplicating log file handle")?;

        let mut process = Command::new(&command.binary);
        process
            .arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir);
        if null_store {
            process.args(["--store", "null"]);
        }
        if let Some(key) = super::http::api_key() {
            // The run's key, made an admin key of the server as it starts.
            process.env("EVENTIDE_BOOTSTRAP_KEY", key);
        }
        process
            .args(&command.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .kill_on_drop(true);
        let child = process
            .spawn()
            .with_context(|| format!("starting {}", command.binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("server exited before its pid could be read"))?;
        let mut server = RunningServer {
            child,
            pid,
            addr,
            log_path: log_path.to_owned(),
        };
        server.wait_until_healthy().await?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait_until_healthy(&mut self) -> Result<()> {
        let started = Instant::now();
        let request = get_request("/health");
        let mut last_problem = String::from("no answer yet");
        while started.elapsed() < STARTUP_LIMIT {
            if let Some(status) = self.child.try_wait().context("checking server process")? {
                bail!(
                    "server exited during startup ({status}); log tail:\n{}",
                    self.log_tail()
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "server at {} not healthy after {STARTUP_LIMIT:?} ({last_problem}); log tail:\n{}",
            self.addr,
            self.log_tail()
        )
    }

    /// The server's peak resident set size (`VmHWM`) in MiB.
    pub fn peak_rss_mb(&self) -> Result<f64> {
        let status_path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&status_path)
            .with_context(|| format!("reading {status_path}"))?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM line in {status_path}"))?;
        Ok(kib / 1024.0)
    }

    /// Sends SIGTERM and waits for a graceful exit; kills the server if it takes too long.
    pub async fn stop(mut self) -> Result<()> {
        // tokio can only send SIGKILL; `kill` is the dependency-free way to send SIGTERM.
        let signalled = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        if !matches!(signalled, Ok(status) if status.success()) {
            eprintln!(
                "[bench] could not send SIGTERM to server {}; killing it",
                self.pid
            );
        }
        match tokio::time::timeout(SHUTDOWN_LIMIT, self.child.wait()).await {
            // A server without a SIGTERM handler dies of the signal; that is an ending too.
            Ok(Ok(status)) if status.success() || status.signal() == Some(SIGTERM) => Ok(()),
            Ok(Ok(status)) => {
                eprintln!(
                    "[bench] server {} exited with {status} on SIGTERM; log tail:\n{}",
                    self.pid,
                    self.log_tail()
                );
                Ok(())
            }
            Ok(Err(error)) => Err(error).context("waiting for the server to exit"),
            Err(_) => {
                eprintln!(
                    "[bench] server {} still running {SHUTDOWN_LIMIT:?} after SIGTERM; killing it",
                    self.pid
                );
                self.child.kill().await.context("killing the server")
            }
        }
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        if tail.is_empty() {
            format!("(log {} is empty)", self.log_path.display())
        } else {
            tail
        }
    }
}

/// CPU time (user plus system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
    // The command name (field 2) may contain spaces; the fields after it do not. utime and
    // stime are fields 14 and 15, so the 12th and 13th after the name.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected format of {stat_path}"))?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut ticks = || -> Result<f64> {
        fields
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .map(|ticks| ticks as f64)
            .ok_or_else(|| anyhow!("no CPU times in {stat_path}"))
    };
    let (user, system) = (ticks()?, ticks()?);
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok((user + system) / ticks_per_second as f64)
}

/// A loopback address with a port nobody was using a moment ago. The port is released
/// before the server binds it; another process could take it in between, which is
/// unlikely enough for a benchmark and would show up as a clear startup error.
fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading the free port")
}
