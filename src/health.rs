//! What the service knows of its own health, written where things happen (the log writer,
//! the indexer) and read by `/health/ready` and `/health/detailed`. Lock-free on the write
//! side except when a failure starts or ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Health {
    started: Instant,
    data_dir: PathBuf,
    log: Failure,
    store: Failure,
    /// Epoch ms of the last successful group commit (0: none yet).
    last_commit_at_ms: AtomicI64,
    last_commit_micros: AtomicU64,
}

/// Whether a part is failing, and the last error it reported.
#[derive(Default)]
struct Failure {
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Failure {
    /// Records `error`; `true` if this starts a failure (the part was working).
    fn failed(&self, error: String) -> bool {
        *self.last_error.lock().unwrap() = Some(error);
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// `true` if this ends a failure.
    fn recovered(&self) -> bool {
        // A load first: the hot path (every commit) does not write a shared cache line.
        self.failing.load(Ordering::Acquire) && self.failing.swap(false, Ordering::AcqRel)
    }

    fn state(&self) -> PartState {
        PartState {
            failing: self.failing.load(Ordering::Acquire),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

/// A part's state as reported.
#[derive(Debug, Clone)]
pub struct PartState {
    pub failing: bool,
    /// The last error, kept after recovery so operators can see what happened.
    pub last_error: Option<String>,
}

impl Health {
    pub fn new(data_dir: &Path) -> Health {
        Health {
            started: Instant::now(),
            data_dir: data_dir.to_owned(),
            log: Failure::default(),
            store: Failure::default(),
            last_commit_at_ms: AtomicI64::new(0),
            last_commit_micros: AtomicU64::new(0),
        }
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Records a failure to append to the log; `true` if it starts an outage.
    pub fn log_failed(&self, error: String) -> bool {
        self.log.failed(error)
    }

    /// Records a successful append; `true` if it ends an outage.
    pub fn log_recovered(&self) -> bool {
        self.log.recovered()
    }

    /// Records a failure to index a batch; `true` if it starts an outage.
    pub fn store_failed(&self, error: String) -> bool {
        self.store.failed(error)
    }

    /// Records a stored batch; `true` if it ends an outage.
    pub fn store_recovered(&self) -> bool {
        self.store.recovered()
    }

    pub fn log_state(&self) -> PartState {
        self.log.state()
    }

    pub fn store_state(&self) -> PartState {
        self.store.state()
    }

    pub fn committed(&self, at_ms: i64, micros: u64) {
        self.last_commit_at_ms.store(at_ms, Ordering::Relaxed);
        self.last_commit_micros.store(micros, Ordering::Relaxed);
    }

    /// When the last group commit happened (epoch ms) and how long it took (µs).
    pub fn last_commit(&self) -> Option<(i64, u64)> {
        let at = self.last_commit_at_ms.load(Ordering::Relaxed);
        (at > 0).then(|| (at, self.last_commit_micros.load(Ordering::Relaxed)))
    }
}

/// Bytes of the files under `dir`, recursively (the data directory: a few files).
pub fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_on_disk(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
