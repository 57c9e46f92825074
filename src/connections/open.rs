//! The sockets of the connections currently open, so that shutdown can cut the ones still
//! open after a grace period, and what was refused or timed out, for the operator.
//!
//! Graceful shutdown waits for every connection to finish its response. Live streams end when
//! shutdown begins, but a client that stopped reading (its socket buffers full) never lets
//! the end of its stream be written, and would hold the process forever.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

/// Why the server closed a connection its client was holding without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A request's head (request line and headers) took longer than `--header-timeout`.
    Header,
    /// No request came within `--keep-alive-timeout` of the last answer.
    Idle,
    /// A request body arrived slower than `--min-body-rate`.
    Body,
    /// The client read nothing of an answer for `--keep-alive-timeout`.
    Write,
}

impl Timeout {
    pub const ALL: [Timeout; 4] = [
        Timeout::Header,
        Timeout::Idle,
        Timeout::Body,
        Timeout::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::Idle => "idle",
            Timeout::Body => "body",
            Timeout::Write => "write",
        }
    }
}

/// The connections open now, and counts of those refused and timed out since start.
#[derive(Default)]
pub struct OpenConnections {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<u64, RawFd>>,
    refused: AtomicU64,
    timed_out: [AtomicU64; 4],
}

/// What `/health/detailed` says of the connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionsReport {
    /// Connections open now.
    pub open: usize,
    /// `--max-connections`.
    pub max: usize,
    /// Connections refused (answered `503`) for being beyond `max`, since start.
    pub refused: u64,
    /// Connections closed because their client made no progress, since start, by cause:
    /// `header` (a request head slower than `--header-timeout`), `idle` (nothing within
    /// `--keep-alive-timeout` after an answer), `body` (a body slower than
    /// `--min-body-rate`), `write` (an answer not read for `--keep-alive-timeout`).
    pub timed_out: std::collections::BTreeMap<&'static str, u64>,
}

impl OpenConnections {
    pub fn count(&self) -> usize {
        self.sockets.lock().expect("not poisoned").len()
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(super) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn timed_out(&self, cause: Timeout) -> u64 {
        self.timed_out[cause as usize].load(Ordering::Relaxed)
    }

    pub fn count_timeout(&self, cause: Timeout) {
        self.timed_out[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self, max: usize) -> ConnectionsReport {
        ConnectionsReport {
            open: self.count(),
            max,
            refused: self.refused(),
            timed_out: Timeout::ALL
                .iter()
                .map(|&cause| (cause.name(), self.timed_out(cause)))
                .collect(),
        }
    }

    /// Registers an accepted socket; returns its id for [`remove`](Self::remove).
    pub(super) fn add(&self, fd: RawFd) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sockets.lock().expect("not poisoned").insert(id, fd);
        id
    }

    /// Unregisters a socket; called before the socket is closed (see `cut_all`).
    pub(super) fn remove(&self, id: u64) {
        self.sockets.lock().expect("not poisoned").remove(&id);
    }

    /// Shuts down (both ways) every open connection's socket: pending reads and writes fail,
    /// so their tasks end. Returns how many there were.
    pub fn cut_all(&self) -> usize {
        let sockets = self.sockets.lock().expect("not poisoned");
        for &fd in sockets.values() {
            // SAFETY: a descriptor stays in the map only while the stream that owns it is
            // alive: the stream removes it, under this lock, before closing it.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        sockets.len()
    }
}

/// Raises the soft limit on open files towards `wanted` (at most the hard limit) and returns
/// the soft limit now in force. Connections are files: a default soft limit of 1,024 would
/// make accepting fail long before `--max-connections`.
// `rlim_t` is u64 on Linux but not everywhere: the casts are for portability.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_files_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = (wanted as libc::rlim_t).min(limit.rlim_max);
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur as u64);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target as u64)
}
