//! Starting and stopping the server under test: a fresh `serve` process per scenario
//! variant on a free loopback port and its own data directory (started by the test kit),
//! plus the scratch directory that holds those data directories and the server logs.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use testkit::server::{Launch, Output, ServerProcess};

/// How long a server may take to log its address, and then to answer `GET /health` with 200.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// Lines of a server's log shown when something went wrong.
const LOG_TAIL_LINES: usize = 30;

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
    process: ServerProcess,
}

impl RunningServer {
    /// Starts `<binary> serve --addr 127.0.0.1:0 --data-dir <data_dir>` (plus `--store null`
    /// when asked), its output going to `log_path`, and waits until `GET /health` answers 200.
    pub async fn start(
        command: &ServerCommand,
        data_dir: &Path,
        log_path: &Path,
        null_store: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut args = Vec::new();
        if null_store {
            args.extend(["--store".to_owned(), "null".to_owned()]);
        }
        args.extend(command.extra_args.iter().cloned());
        // The run's key, made an admin key of the server as it starts.
        let env: Vec<(String, String)> = super::key::api_key()
            .map(|key| ("EVENTIDE_BOOTSTRAP_KEY".to_owned(), key.to_owned()))
            .into_iter()
            .collect();
        let process = ServerProcess::start(Launch {
            binary: &command.binary,
            data_dir,
            args: &args,
            env: &env,
            output: Output::File(log_path.to_owned()),
            startup_limit: STARTUP_LIMIT,
        })
        .await?;
        Ok(RunningServer { process })
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's peak resident set size (`VmHWM`) in MiB.
    pub fn peak_rss_mb(&self) -> Result<f64> {
        let status_path = format!("/proc/{}/status", self.pid());
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
        let pid = self.pid();
        if let Err(error) = self.process.sigterm() {
            eprintln!("[bench] could not send SIGTERM to server {pid} ({error:#}); killing it");
        }
        match self.process.wait(SHUTDOWN_LIMIT).await? {
            // A server without a SIGTERM handler dies of the signal; that is an ending too.
            Some(status) if status.success() || status.signal() == Some(libc::SIGTERM) => Ok(()),
            Some(status) => {
                eprintln!(
                    "[bench] server {pid} exited with {status} on SIGTERM; log tail:\n{}",
                    self.process.output_tail(LOG_TAIL_LINES)
                );
                Ok(())
            }
            None => {
                eprintln!(
                    "[bench] server {pid} still running {SHUTDOWN_LIMIT:?} after SIGTERM; killing it"
                );
                self.process.kill().await
            }
        }
    }
}

/// CPU time (user plus system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time (user plus system) used so far by the threads of process `pid` named
/// `thread_name` (compared as Linux keeps names: their first 15 bytes), in seconds; an error
/// when no thread of that name is running.
pub fn thread_cpu_seconds(pid: u32, thread_name: &str) -> Result<f64> {
    let name = thread_name.get(..15).unwrap_or(thread_name);
    let tasks = format!("/proc/{pid}/task");
    let mut total = None;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let task = task?.path();
        // A thread that ended since the listing has no files left: not one of ours.
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if comm.trim_end() == name {
            let seconds = stat_cpu_seconds(&task.join("stat").to_string_lossy())?;
            *total.get_or_insert(0.0) += seconds;
        }
    }
    total.ok_or_else(|| anyhow!("process {pid} has no thread named {thread_name:?}"))
}

/// utime plus stime of a `/proc/.../stat` file, in seconds.
fn stat_cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
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
