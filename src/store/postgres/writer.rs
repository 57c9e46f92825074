//! The writer: stores a batch in one transaction, on a connection of its own. The batch's
//! ids are claimed in `event_ids` first (those already there are skipped), then the new
//! events, the rollups and the progress counters go in, sent together in one round trip.
//! Partitions missing for the batch are made first.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::partitions;
use super::pool::Connection;
use super::query::to_i64;
use super::PostgresStore;
use crate::event::StoredEvent;
use crate::store::partitioning::Layout;
use crate::store::{floor_to, AppendOutcome, StoreError, DAY_MS, HOUR_MS, MINUTE_MS};

/// Records the batch's ids that are new and returns them: the events to store.
const CLAIM_IDS: &str = "INSERT INTO event_ids (id, ts)
    SELECT * FROM unnest($1::bytea[], $2::bigint[])
    ON CONFLICT DO NOTHING RETURNING id";

const INSERT_EVENTS: &str = "INSERT INTO events (seq, id, id_from_client, type, ts,
    received_at, service, user_id, message, metadata)
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::boolean[], $4::bytea[], $5::bigint[],
        $6::bigint[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[])";

const UPSERT_MINUTES: &str = "INSERT INTO rollups (minute, type, has_service, service, count)
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::boolean[], $4::bytea[], $5::bigint[])
    ON CONFLICT (minute, type, has_service, service)
    DO UPDATE SET count = rollups.count + excluded.count";

const UPSERT_HOURS: &str = "INSERT INTO rollups_hourly (hour, type, has_service, service, count)
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::boolean[], $4::bytea[], $5::bigint[])
    ON CONFLICT (hour, type, has_service, service)
    DO UPDATE SET count = rollups_hourly.count + excluded.count";

/// Adds the events stored to the count and moves the indexed position forward (never back:
/// with several writers, batches may commit out of order).
const UPDATE_PROGRESS: &str = "UPDATE progress
    SET value = CASE name WHEN 'event_count' THEN value + $1 ELSE greatest(value, $2) END
    WHERE name IN ('event_count', 'indexed_seq')";

impl PostgresStore {
    /// Stores a batch: see [`Store::append_batch`](crate::store::Store::append_batch). On
    /// a connection of its own, one batch at a time; a new one when the last was lost.
    pub(super) async fn append(
        &self,
        events: &[StoredEvent],
        indexed_seq: u64,
    ) -> Result<AppendOutcome, StoreError> {
        let mut writer = self.writer.lock().await;
        let connection = match writer.take() {
            Some(connection) if !connection.client.is_closed() => connection,
            _ => Connection::open(&self.target)
                .await
                .map_err(StoreError::Unavailable)?,
        };
        let connection = writer.insert(connection);
        match self.write(connection, events, indexed_seq).await {
            Err(err) if is_missing_partition(&err) => {
                *self.partitions.lock().unwrap() = Layout::default();
                self.write(connection, events, indexed_seq).await
            }
            result => result,
        }
        .map_err(sort_write_error)
    }

    /// [`append`](Self::append)'s transaction, on the writer's connection.
    async fn write(
        &self,
        connection: &mut Connection,
        events: &[StoredEvent],
        indexed_seq: u64,
    ) -> Result<AppendOutcome> {
        self.ensure_partitions(connection, events).await?;
        let claim = connection.prepare(CLAIM_IDS).await?;
        let insert = connection.prepare(INSERT_EVENTS).await?;
        let minutes = connection.prepare(UPSERT_MINUTES).await?;
        let hours = connection.prepare(UPSERT_HOURS).await?;
        let progress = connection.prepare(UPDATE_PROGRESS).await?;

        // Each id once (its first event's timestamp), in id order: concurrent writers lock
        // the ids they share in the same order.
        let mut first_ts: BTreeMap<&[u8], i64> = BTreeMap::new();
        for event in events {
            first_ts
                .entry(event.id.as_bytes())
                .or_insert(event.timestamp_ms);
        }
        let ids: Vec<&[u8]> = first_ts.keys().copied().collect();
        let timestamps: Vec<i64> = first_ts.values().copied().collect();

        let tx = connection.client.transaction().await?;
        let claimed = tx
            .query(&claim, &[&ids, &timestamps])
            .await
            .context("recording the event ids")?;
        let mut new_ids: HashSet<Vec<u8>> = claimed.iter().map(|row| row.get(0)).collect();
        let mut stored = Vec::with_capacity(new_ids.len());
        let mut skipped = Vec::new();
        for event in events {
            // Only the first event with a new id: later ones in the batch are duplicates too.
            if new_ids.remove(event.id.as_bytes()) {
                stored.push(event);
            } else {
                skipped.push(event.seq);
            }
        }
        let stored_count = stored.len() as i64;
        let indexed_seq = to_i64(indexed_seq);
        let progress_params: [&(dyn ToSql + Sync); 2] = [&stored_count, &indexed_seq];
        if stored.is_empty() {
            tx.execute(&progress, &progress_params).await
        } else {
            let columns = EventColumns::new(&stored);
            let minute_rows = RollupRows::minutes(&stored);
            let minutes_columns = minute_rows.columns();
            let hours_columns = minute_rows.hours().columns();
            let (event_params, minute_params, hour_params) = (
                columns.params(),
                minutes_columns.params(),
                hours_columns.params(),
            );
            // Sent together (pipelined) and answered in order: one round trip for all. All
            // are awaited and the first error in statement order kept: after it the others
            // fail only because the transaction is aborted.
            let results = tokio::join!(
                tx.execute(&insert, &event_params),
                tx.execute(&minutes, &minute_params),
                tx.execute(&hours, &hour_params),
                tx.execute(&progress, &progress_params),
            );
            results.0.and(results.1).and(results.2).and(results.3)
        }
        .context("storing the events and their rollups")?;
        tx.commit().await.context("committing a batch")?;
        Ok(AppendOutcome { skipped })
    }

    /// Creates partitions for the batch's events that none known to exist covers.
    async fn ensure_partitions(
        &self,
        connection: &mut Connection,
        events: &[StoredEvent],
    ) -> Result<()> {
        let uncovered: Vec<(i64, i64)> = {
            let known = self.partitions.lock().unwrap();
            // One event per day is enough: partitions are whole days.
            let mut by_day = BTreeMap::new();
            for event in events {
                let ts = event.timestamp_ms;
                if known.covering(ts).is_none() {
                    by_day
                        .entry(floor_to(ts, DAY_MS))
                        .or_insert((ts, event.received_at_ms));
                }
            }
            by_day.into_values().collect()
        };
        if uncovered.is_empty() {
            return Ok(());
        }
        let layout = partitions::create(&mut connection.client, self.lock_key, &uncovered).await?;
        *self.partitions.lock().unwrap() = layout;
        Ok(())
    }
}

/// Whether `err` is PostgreSQL finding no partition for a row: the partition was dropped by
/// another process's retention after this one saw it.
fn is_missing_partition(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|err| err.code() == Some(&SqlState::CHECK_VIOLATION))
}

/// Whether a failed write is the batch's fault ([`StoreError`]). Only what the server reports
/// against the values sent is: SQLSTATE classes 22 (data exception: a value invalid for its
/// type), 23 (integrity constraint violation) and 54 (program limit exceeded: a value too
/// large for an index). Everything else is the store's state, the same for any batch: no
/// SQLSTATE (the connection lost, refused or timed out), or the server shutting down (57),
/// out of disk or memory (53), read-only (25), a deadlock or serialization failure (40).
fn sort_write_error(err: anyhow::Error) -> StoreError {
    let class = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .find_map(|err| err.code())
        .map(|state| state.code().get(..2).unwrap_or_default());
    match class {
        Some("22" | "23" | "54") => StoreError::Rejected(err),
        _ => StoreError::Unavailable(err),
    }
}

/// A batch's events as one array per column, for `INSERT ... SELECT * FROM unnest(...)`.
struct EventColumns<'a> {
    seq: Vec<i64>,
    id: Vec<&'a [u8]>,
    id_from_client: Vec<bool>,
    kind: Vec<&'a [u8]>,
    ts: Vec<i64>,
    received_at: Vec<i64>,
    service: Vec<Option<&'a [u8]>>,
    user_id: Vec<Option<&'a [u8]>>,
    message: Vec<Option<&'a [u8]>>,
    metadata: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    fn new(events: &[&'a StoredEvent]) -> EventColumns<'a> {
        let bytes = |value: &'a Option<String>| value.as_deref().map(str::as_bytes);
        EventColumns {
            seq: events.iter().map(|e| to_i64(e.seq)).collect(),
            id: events.iter().map(|e| e.id.as_bytes()).collect(),
            id_from_client: events.iter().map(|e| e.id_from_client).collect(),
            kind: events.iter().map(|e| e.kind.as_bytes()).collect(),
            ts: events.iter().map(|e| e.timestamp_ms).collect(),
            received_at: events.iter().map(|e| e.received_at_ms).collect(),
            service: events.iter().map(|e| bytes(&e.service)).collect(),
            user_id: events.iter().map(|e| bytes(&e.user_id)).collect(),
            message: events.iter().map(|e| bytes(&e.message)).collect(),
            metadata: events.iter().map(|e| e.metadata.as_deref()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.seq,
            &self.id,
            &self.id_from_client,
            &self.kind,
            &self.ts,
            &self.received_at,
            &self.service,
            &self.user_id,
            &self.message,
            &self.metadata,
        ]
    }
}

/// A batch's events counted per bucket x type x service, in key order (the order rows are
/// locked in), as one array per column of the rollup tables.
#[derive(Default)]
struct RollupRows<'a> {
    counts: BTreeMap<RollupKey<'a>, i64>,
}

/// Bucket start, type, service.
type RollupKey<'a> = (i64, &'a [u8], Option<&'a [u8]>);

impl<'a> RollupRows<'a> {
    fn minutes(events: &[&'a StoredEvent]) -> RollupRows<'a> {
        let mut rows = RollupRows::default();
        for event in events {
            let key = (
                floor_to(event.timestamp_ms, MINUTE_MS),
                event.kind.as_bytes(),
                event.service.as_deref().map(str::as_bytes),
            );
            *rows.counts.entry(key).or_default() += 1;
        }
        rows
    }

    fn hours(&self) -> RollupRows<'a> {
        let mut rows = RollupRows::default();
        for (&(minute, kind, service), count) in &self.counts {
            *rows
                .counts
                .entry((floor_to(minute, HOUR_MS), kind, service))
                .or_default() += count;
        }
        rows
    }

    fn columns(&self) -> RollupColumns<'a> {
        let keys = self.counts.keys();
        RollupColumns {
            bucket: keys.clone().map(|key| key.0).collect(),
            kind: keys.clone().map(|key| key.1).collect(),
            has_service: keys.clone().map(|key| key.2.is_some()).collect(),
            service: keys.map(|key| key.2.unwrap_or_default()).collect(),
            count: self.counts.values().copied().collect(),
        }
    }
}

struct RollupColumns<'a> {
    bucket: Vec<i64>,
    kind: Vec<&'a [u8]>,
    has_service: Vec<bool>,
    service: Vec<&'a [u8]>,
    count: Vec<i64>,
}

impl RollupColumns<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.bucket,
            &self.kind,
            &self.has_service,
            &self.service,
            &self.count,
        ]
    }
}
