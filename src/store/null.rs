//! The null store, for benchmarks (`--store null`): it takes every batch and keeps nothing,
//! so a run measures acknowledging events (HTTP, parsing, the durable log) without indexing
//! them. Reads find nothing; the indexed position is kept, so the indexer and readers that
//! wait for it see progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use async_trait::async_trait;

use super::partitioning::TimeRange;
use super::{
    AppendOutcome, EventFilter, EventQuery, Events, Purged, ReplayQuery, RollupQuery, RollupRow,
    Store, StoreResult,
};
use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;

#[derive(Default)]
pub struct NullStore {
    indexed_seq: AtomicU64,
    /// Secrets and keys live as long as the process: a benchmark needs neither after a
    /// restart.
    secrets: Mutex<HashMap<String, Vec<u8>>>,
    keys: Mutex<Vec<KeyRecord>>,
}

#[async_trait]
impl Store for NullStore {
    async fn append_batch(&self, _events: Events, indexed_seq: u64) -> StoreResult<AppendOutcome> {
        self.indexed_seq.fetch_max(indexed_seq, Ordering::AcqRel);
        Ok(AppendOutcome::default())
    }

    async fn indexed_seq(&self) -> Result<u64> {
        Ok(self.indexed_seq.load(Ordering::Acquire))
    }

    async fn query(&self, _query: EventQuery) -> Result<Vec<StoredEvent>> {
        Ok(Vec::new())
    }

    async fn count(&self, _filter: EventFilter) -> Result<u64> {
        Ok(0)
    }

    async fn events_after_seq(&self, _query: ReplayQuery) -> Result<Vec<StoredEvent>> {
        Ok(Vec::new())
    }

    async fn get(&self, _id: &str) -> Result<Option<StoredEvent>> {
        Ok(None)
    }

    async fn event_count(&self) -> Result<u64> {
        Ok(0)
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    async fn rollups(&self, _query: RollupQuery) -> Result<Vec<RollupRow>> {
        Ok(Vec::new())
    }

    async fn counts_per_second(&self, _from_ms: i64) -> Result<Vec<RollupRow>> {
        Ok(Vec::new())
    }

    async fn recent_client_ids(&self, _since_ms: i64, _limit: usize) -> Result<Vec<(String, i64)>> {
        Ok(Vec::new())
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let mut secrets = self.secrets.lock().unwrap();
        let secret = secrets
            .entry(name.to_owned())
            .or_insert_with(|| candidate.to_vec());
        Ok(secret.clone())
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<()> {
        self.keys.lock().unwrap().push(key.clone());
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        Ok(self.keys.lock().unwrap().clone())
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool> {
        let mut keys = self.keys.lock().unwrap();
        let found = keys
            .iter_mut()
            .find(|key| key.id == id && key.revoked_ms.is_none());
        Ok(found.map(|key| key.revoked_ms = Some(at_ms)).is_some())
    }

    /// Keys change only through this process, which reloads at once.
    async fn keys_version(&self) -> Result<i64> {
        Ok(self
            .keys
            .lock()
            .unwrap()
            .iter()
            .map(|key| 1 + i64::from(key.revoked_ms.is_some()))
            .sum())
    }

    async fn record_key_uses(&self, _uses: &[(String, i64)]) -> Result<()> {
        Ok(())
    }

    async fn partitions(&self) -> Result<Vec<TimeRange>> {
        Ok(Vec::new())
    }

    async fn purge_before(&self, _cutoff_ms: i64) -> Result<Purged> {
        Ok(Purged::default())
    }
}
