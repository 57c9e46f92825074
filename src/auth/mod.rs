//! Authentication: API keys with scopes ([`keys`]), and [`Keys`], the server's view of them:
//! an in-memory table looked up on every request (a SHA-256 and a hash-map lookup, no store
//! round trip), reloaded at once when this server creates or revokes a key and within half a
//! second when another server sharing the store does (it polls the store's `keys_version`).
//! When keys were last used is written back lazily, every few seconds, never per request.

pub mod command;
pub mod keys;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::Store;
use keys::{KeyRecord, NewKey, Scope, Scopes};

/// How often the store is asked whether keys changed elsewhere (revocation reaches every
/// node within this).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often last uses are written back.
const LAST_USED_EVERY: Duration = Duration::from_secs(10);
/// A source's failed authentications are logged at most this often.
const LOG_FAILURES_EVERY: Duration = Duration::from_secs(60);

/// When a key is required (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Always.
    Required,
    /// Never: anyone who reaches the port may do anything.
    Off,
    /// As soon as any key exists (the default on a loopback address: the quick start works
    /// without a key, and creating the first one turns authentication on).
    WhenKeysExist,
}

/// Who a request authenticated as.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    /// The key's name (e.g. a producer's), for attribution.
    pub name: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    Missing,
    #[error("the key is not known")]
    Unknown,
    #[error("the key was revoked")]
    Revoked,
    #[error("the key has expired")]
    Expired,
    #[error("the key lacks the `{needed}` scope this needs")]
    Forbidden { needed: Scope },
}

impl AuthError {
    /// The reason as counted in `/metrics/prometheus`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Unknown => "unknown",
            AuthError::Revoked => "revoked",
            AuthError::Expired => "expired",
            AuthError::Forbidden { .. } => "forbidden",
        }
    }
}

struct Entry {
    record: KeyRecord,
    /// When it was last used here (epoch ms; 0: not since the last write-back).
    used_at: AtomicI64,
}

type Table = HashMap<[u8; 32], Arc<Entry>>;

pub struct Keys {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mode: AuthMode,
    table: ArcSwap<Table>,
    /// The store's `keys_version` the table was loaded at.
    version: AtomicI64,
    /// Whether an active key exists (what [`AuthMode::WhenKeysExist`] goes by).
    any_active: AtomicBool,
    /// When each source's failures were last logged.
    failures_logged: Mutex<HashMap<IpAddr, Instant>>,
}

impl Keys {
    /// Loads the keys of `store`.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        mode: AuthMode,
    ) -> Result<Arc<Keys>> {
        let keys = Arc::new(Keys {
            store,
            clock,
            mode,
            table: ArcSwap::from_pointee(HashMap::new()),
            version: AtomicI64::new(-1),
            any_active: AtomicBool::new(false),
            failures_logged: Mutex::new(HashMap::new()),
        });
        keys.reload().await.context("loading the API keys")?;
        Ok(keys)
    }

    /// Whether requests need a key now.
    pub fn required(&self) -> bool {
        match self.mode {
            AuthMode::Required => true,
            AuthMode::Off => false,
            AuthMode::WhenKeysExist => self.any_active.load(Ordering::Acquire),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether any key could be used now (not revoked, not expired).
    pub fn has_active_keys(&self) -> bool {
        self.any_active.load(Ordering::Acquire)
    }

    /// Checks `presented` (the key a request carried, if any) for `needed`: `Ok(None)` when
    /// no key is required and none was given.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        needed: Scope,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(presented) = presented else {
            return if self.required() {
                Err(AuthError::Missing)
            } else {
                Ok(None)
            };
        };
        if !self.required() {
            // Without authentication any key goes: nothing to check it against.
            return Ok(None);
        }
        let table = self.table.load();
        let entry = table
            .get(&keys::hash(presented))
            .ok_or(AuthError::Unknown)?;
        let record = &entry.record;
        let now_ms = self.clock.now_ms();
        if record.revoked_ms.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_ms.is_some_and(|expires| now_ms >= expires) {
            return Err(AuthError::Expired);
        }
        if !record.scopes.allow(needed) {
            return Err(AuthError::Forbidden { needed });
        }
        entry.used_at.store(now_ms, Ordering::Relaxed);
        Ok(Some(Principal {
            key_id: record.id.clone(),
            name: record.name.clone(),
        }))
    }

    /// Whether `source`'s failure should be logged now (once a minute per source).
    pub fn log_failure_now(&self, source: IpAddr) -> bool {
        let mut logged = self.failures_logged.lock().unwrap();
        let now = Instant::now();
        if logged.len() > 10_000 {
            // Bounded whatever the number of sources: forget the quiet ones.
            logged.retain(|_, at| now.duration_since(*at) < LOG_FAILURES_EVERY);
        }
        match logged.get(&source) {
            Some(at) if now.duration_since(*at) < LOG_FAILURES_EVERY => false,
            _ => {
                logged.insert(source, now);
                true
            }
        }
    }

    /// Reads every key from the store again.
    pub async fn reload(&self) -> Result<()> {
        let version = self.store.keys_version().await?;
        let records = self.store.list_keys().await?;
        let now_ms = self.clock.now_ms();
        let previous = self.table.load();
        let mut table = Table::with_capacity(records.len());
        let mut any_active = false;
        for record in records {
            any_active |= record.is_active(now_ms);
            // Uses not written back yet survive the reload.
            let used_at = previous
                .get(&record.hash)
                .map_or(0, |entry| entry.used_at.load(Ordering::Relaxed));
            table.insert(
                record.hash,
                Arc::new(Entry {
                    record,
                    used_at: AtomicI64::new(used_at),
                }),
            );
        }
        self.table.store(Arc::new(table));
        self.any_active.store(any_active, Ordering::Release);
        self.version.store(version, Ordering::Release);
        Ok(())
    }

    /// Creates a key, stored hashed; the secret is in the answer only.
    pub async fn create(
        &self,
        name: &str,
        scopes: Scopes,
        expires_ms: Option<i64>,
    ) -> Result<NewKey> {
        let made = keys::generate(name, scopes, self.clock.now_ms(), expires_ms)?;
        self.store.create_key(&made.record).await?;
        tracing::info!(key = %made.record.id, name = %made.record.name, scopes = %made.record.scopes.to_text(), "API key created");
        self.reload().await?;
        Ok(made)
    }

    /// Revokes the key `id`: refused from the next request on. `false` if no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool> {
        let revoked = self.store.revoke_key(id, self.clock.now_ms()).await?;
        if revoked {
            tracing::info!(key = %id, "API key revoked");
        }
        self.reload().await?;
        Ok(revoked)
    }

    /// Every key (never a secret), as stored, with its last use as this server knows it.
    pub async fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut records = self.store.list_keys().await?;
        let table = self.table.load();
        for record in &mut records {
            let used_here = table
                .get(&record.hash)
                .map_or(0, |entry| entry.used_at.load(Ordering::Relaxed));
            if used_here > 0 {
                record.last_used_ms = Some(record.last_used_ms.unwrap_or(0).max(used_here));
            }
        }
        Ok(records)
    }

    /// Until `stop`: reloads when another server changed the keys, and writes last uses
    /// back now and then.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(POLL_EVERY);
        let mut write_back = tokio::time::interval(LAST_USED_EVERY);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    match self.store.keys_version().await {
                        Ok(version) if version != self.version.load(Ordering::Acquire) => {
                            if let Err(err) = self.reload().await {
                                tracing::warn!(error = format!("{err:#}"), "reloading the API keys failed");
                            }
                        }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = format!("{err:#}"), "checking the API keys for changes failed"),
                    }
                }
                _ = write_back.tick() => self.write_back_uses().await,
                _ = stop.changed() => {
                    self.write_back_uses().await;
                    return;
                }
            }
        }
    }

    async fn write_back_uses(&self) {
        let table = self.table.load();
        let uses: Vec<(String, i64)> = table
            .values()
            .filter_map(|entry| {
                let at = entry.used_at.swap(0, Ordering::Relaxed);
                (at > 0).then(|| (entry.record.id.clone(), at))
            })
            .collect();
        if uses.is_empty() {
            return;
        }
        if let Err(err) = self.store.record_key_uses(&uses).await {
            tracing::debug!(
                error = format!("{err:#}"),
                "recording when keys were last used failed"
            );
            // Keep them for the next try.
            for (id, at) in uses {
                if let Some(entry) = table.values().find(|entry| entry.record.id == id) {
                    entry.used_at.fetch_max(at, Ordering::Relaxed);
                }
            }
        }
    }
}
