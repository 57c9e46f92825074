//! What the service knows of its own health: a registry of named components (the log or the
//! Redis queue, the store, the indexer or the worker, retention...), each reporting its
//! failures where they happen and read by `/health/ready` and `/health/detailed` under its
//! own name. Lock-free on the write side except when a failure starts or ends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Whether a failing component makes the service not ready (a balancer should steer away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Events cannot be taken or stored while it fails.
    Required,
    /// Reported, but the service still takes events (e.g. a failed retention run).
    Informative,
}

/// One part of the service, as health reports it.
pub struct Component {
    name: &'static str,
    /// What it failing means, for readiness reasons: "the durable log cannot be written".
    failure: &'static str,
    readiness: Readiness,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// A component's state as reported.
#[derive(Debug, Clone)]
pub struct ComponentState {
    pub name: &'static str,
    pub failing: bool,
    /// The last error, kept after recovery so operators can see what happened.
    pub last_error: Option<String>,
}

impl Component {
    /// Records `error`; `true` if this starts a failure (the component was working), so the
    /// caller logs an outage once, not once per attempt.
    pub fn failed(&self, error: String) -> bool {
        *self.last_error.lock().unwrap() = Some(error);
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// `true` if this ends a failure.
    pub fn recovered(&self) -> bool {
        // A load first: the hot path (every commit) does not write a shared cache line.
        self.failing.load(Ordering::Acquire) && self.failing.swap(false, Ordering::AcqRel)
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    pub fn state(&self) -> ComponentState {
        ComponentState {
            name: self.name,
            failing: self.is_failing(),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }

    /// Why the service is not ready because of this component, if it is the reason.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.readiness != Readiness::Required || !self.is_failing() {
            return None;
        }
        let error = self.last_error.lock().unwrap().clone().unwrap_or_default();
        Some(format!("{}: {error}", self.failure))
    }
}

/// The last durable commit of the log: when, and how long it took.
#[derive(Default)]
pub struct LastCommit {
    /// Epoch ms (0: none yet).
    at_ms: AtomicI64,
    micros: AtomicU64,
}

impl LastCommit {
    pub fn record(&self, at_ms: i64, micros: u64) {
        self.at_ms.store(at_ms, Ordering::Relaxed);
        self.micros.store(micros, Ordering::Relaxed);
    }

    /// When the last commit happened (epoch ms) and how long it took (µs).
    pub fn get(&self) -> Option<(i64, u64)> {
        let at = self.at_ms.load(Ordering::Relaxed);
        (at > 0).then(|| (at, self.micros.load(Ordering::Relaxed)))
    }
}

pub struct Health {
    started: Instant,
    /// The directory this process keeps data in, if any (a cluster's processes have none).
    data_dir: Option<PathBuf>,
    components: Mutex<Vec<Arc<Component>>>,
    last_commit: Arc<LastCommit>,
}

impl Health {
    pub fn new(data_dir: Option<PathBuf>) -> Health {
        Health {
            started: Instant::now(),
            data_dir,
            components: Mutex::new(Vec::new()),
            last_commit: Arc::new(LastCommit::default()),
        }
    }

    /// Adds a component, reported under `name`; `failure` says what it failing means.
    pub fn register(
        &self,
        name: &'static str,
        failure: &'static str,
        readiness: Readiness,
    ) -> Arc<Component> {
        let component = Arc::new(Component {
            name,
            failure,
            readiness,
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        self.components.lock().unwrap().push(component.clone());
        component
    }

    /// The components, in the order they were registered.
    pub fn components(&self) -> Vec<Arc<Component>> {
        self.components.lock().unwrap().clone()
    }

    /// Why the service is not ready, by the components' own account.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        self.components
            .lock()
            .unwrap()
            .iter()
            .filter_map(|component| component.not_ready_reason())
            .collect()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Where the log records its commits (for `/health/detailed`).
    pub fn last_commit(&self) -> Arc<LastCommit> {
        self.last_commit.clone()
    }
}

/// Bytes of the files under `dir`, recursively (the data directory: a few files).
pub fn size_on_disk(dir: &std::path::Path) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_report_under_their_names_and_only_required_ones_block_readiness() {
        let health = Health::new(None);
        let log = health.register(
            "log",
            "the durable log cannot be written",
            Readiness::Required,
        );
        let retention = health.register("retention", "retention failed", Readiness::Informative);
        assert!(health.not_ready_reasons().is_empty());
        assert!(
            log.failed("disk full".into()),
            "the first failure starts an outage"
        );
        assert!(!log.failed("disk full".into()), "and the next does not");
        retention.failed("locked".into());
        assert_eq!(
            health.not_ready_reasons(),
            ["the durable log cannot be written: disk full"]
        );
        let names: Vec<_> = health.components().iter().map(|c| c.state().name).collect();
        assert_eq!(names, ["log", "retention"]);
        assert!(log.recovered());
        assert!(!log.recovered());
        assert!(health.not_ready_reasons().is_empty());
        assert_eq!(log.state().last_error.as_deref(), Some("disk full"));
    }
}
