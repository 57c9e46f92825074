//! The scale-out store: PostgreSQL, shared by every process of a cluster.
//!
//! Events go into a table partitioned by time (UTC days, and months or years for old data:
//! [`partitions`]), their ids into a table of their own that makes storing exactly-once, and
//! the rollups and progress counters are updated in the same transaction. The schema is
//! created and migrated on connect ([`migrations`]); retention drops whole partitions
//! ([`retention`]). One connection writes (only
//! the indexer, one batch at a time); a small pool ([`pool`]) serves the reads. Several
//! processes may write at once: each batch's ids and rollup rows are locked in key order, so
//! two of them wait for each other rather than deadlock.

mod alerts;
mod credentials;
mod migrations;
mod partitions;
mod pool;
mod retention;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Row};

use super::partitioning::{Layout, TimeRange};
use super::{
    floor_to, AppendOutcome, EventFilter, EventQuery, Order, Position, Purged, RollupQuery,
    RollupRow, Store, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;
use pool::{Connection, Pool, Target};

/// Connections serving reads (and retention), besides the writer's. Each is a server process;
/// on 2 cores more concurrent queries only queue on the CPU (as for SQLite's readers).
const MAX_READERS: usize = 4;

const COLUMNS: &str =
    "seq, id, id_from_client, type, ts, received_at, service, user_id, message, metadata";

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

/// Advisory lock keys: what is locked, and whose (the schema name's hash), so stores in
/// different schemas of one database never wait for each other.
#[derive(Debug, Clone, Copy)]
struct LockKey(i32);

impl LockKey {
    /// "EVMG": applying migrations.
    const MIGRATIONS: i32 = 0x4556_4d47;
    /// "EVPT": creating partitions.
    const PARTITIONS: i32 = 0x4556_5054;
    /// "EVAL": leading alerting (held for as long as the leader's connection lives).
    const ALERTS: i32 = 0x4556_414c;

    fn for_schema(schema: Option<&str>) -> LockKey {
        LockKey(crc32fast::hash(schema.unwrap_or("").as_bytes()) as i32)
    }
}

/// `name` quoted as an SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub struct PostgresStore {
    pool: Pool,
    /// The writer's connection (`None` until opened again after it closed). The mutex also
    /// keeps one batch at a time.
    writer: tokio::sync::Mutex<Option<Connection>>,
    target: Target,
    lock_key: LockKey,
    /// Partitions known to exist, so the writer asks only about events none of them covers.
    partitions: Mutex<Layout>,
    /// The connection holding (or trying for) the alerting leader's lock.
    alerts_leader: alerts::Leadership,
}

impl PostgresStore {
    /// Connects to the server at `url` (a `postgres://` URL or `key=value` settings), then
    /// creates or migrates the schema. With `schema`, the store lives in that schema (created
    /// if missing; every connection's search path): tests give each of theirs its own.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<PostgresStore> {
        let mut config: Config = url
            .parse()
            .context("the PostgreSQL connection string is not valid")?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("eventide");
        }
        let target = Target {
            config,
            setup: schema.map(|schema| format!("SET search_path TO {}", quote_identifier(schema))),
        };
        let lock_key = LockKey::for_schema(schema);
        let mut writer = Connection::open(&target).await?;
        migrations::migrate(&mut writer.client, schema, lock_key)
            .await
            .context("migrating the PostgreSQL schema")?;
        Ok(PostgresStore {
            pool: Pool::new(target.clone(), MAX_READERS),
            writer: tokio::sync::Mutex::new(Some(writer)),
            target,
            lock_key,
            partitions: Mutex::new(Layout::default()),
            alerts_leader: alerts::Leadership::default(),
        })
    }

    /// Stores a batch on the writer's connection: see [`Store::append_batch`].
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

    /// Forgets partitions retention dropped.
    fn forget_partitions(&self, dropped: &[TimeRange]) {
        let mut known = self.partitions.lock().unwrap();
        for range in dropped {
            known.remove(*range);
        }
    }

    async fn read_events(&self, sql: Sql) -> Result<Vec<StoredEvent>> {
        let rows = self.read(&sql).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Runs `sql` on a pooled connection.
    async fn read(&self, sql: &Sql) -> Result<Vec<Row>> {
        let mut connection = self.pool.get().await?;
        let statement = connection.prepare(&sql.text).await?;
        Ok(connection.client.query(&statement, &sql.params()).await?)
    }

    async fn read_progress(&self, name: &str) -> Result<u64> {
        let mut sql = Sql::new("SELECT value FROM progress WHERE name = ");
        let name = sql.param(name.to_owned());
        sql.push(&name);
        let rows = self.read(&sql).await?;
        let row = rows.first().context("the progress table has no such row")?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// Whether `err` is PostgreSQL finding no partition for a row: the partition was dropped by
/// another process's retention after this one saw it.
fn is_missing_partition(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|err| err.code() == Some(&SqlState::CHECK_VIOLATION))
}

/// A count or seq as a PostgreSQL bigint: past `i64::MAX` means "more than any table holds".
fn to_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

type Param = Box<dyn ToSql + Send + Sync>;

/// A statement being built and its parameters, numbered as they are added.
struct Sql {
    text: String,
    values: Vec<Param>,
}

impl Sql {
    fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Adds a parameter; returns its placeholder (`$n`).
    fn param(&mut self, value: impl ToSql + Send + Sync + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Appends ` AND ...` for `filter` and, when paging, for "strictly after `after` in
/// `order`": the one place that turns a query into SQL conditions.
fn push_conditions(sql: &mut Sql, filter: &EventFilter, after: Option<(Position, Order)>) {
    for (column, value) in [
        ("type", &filter.kind),
        ("service", &filter.service),
        ("user_id", &filter.user_id),
    ] {
        if let Some(value) = value {
            let value = sql.param(value.as_bytes().to_vec());
            sql.push(&format!(" AND {column} = {value}"));
        }
    }
    if let Some(from) = filter.from_ms {
        let from = sql.param(from);
        sql.push(&format!(" AND ts >= {from}"));
    }
    if let Some(to) = filter.to_ms {
        let to = sql.param(to);
        sql.push(&format!(" AND ts < {to}"));
    }
    if let Some(max_seq) = filter.max_seq {
        let max_seq = sql.param(to_i64(max_seq));
        sql.push(&format!(" AND seq <= {max_seq}"));
    }
    if let Some((after, order)) = after {
        // The plain `ts` bound skips the partitions before the position; the row comparison
        // is read off the indexes, which all end in (ts, seq).
        let compare = if order == Order::Desc { "<" } else { ">" };
        let ts = sql.param(after.timestamp_ms);
        let seq = sql.param(to_i64(after.seq));
        sql.push(&format!(
            " AND ts {compare}= {ts} AND (ts, seq) {compare} ({ts}, {seq})"
        ));
    }
}

/// `ORDER BY` keyword for `order`.
fn direction(order: Order) -> &'static str {
    match order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    }
}

/// A string stored as bytes (see the schema): UTF-8, since only strings are stored.
fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).context("a string in the store is not UTF-8")
}

fn optional_text(bytes: Option<Vec<u8>>) -> Result<Option<String>> {
    bytes.map(text).transpose()
}

fn event_from_row(row: &Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.try_get::<_, i64>(0)? as u64,
        id: text(row.try_get(1)?)?,
        id_from_client: row.try_get(2)?,
        kind: text(row.try_get(3)?)?,
        timestamp_ms: row.try_get(4)?,
        received_at_ms: row.try_get(5)?,
        service: optional_text(row.try_get(6)?)?,
        user_id: optional_text(row.try_get(7)?)?,
        message: optional_text(row.try_get(8)?)?,
        metadata: row.try_get(9)?,
    })
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

fn rollup_row(row: &Row) -> Result<RollupRow> {
    let has_service: bool = row.try_get(2)?;
    Ok(RollupRow {
        bucket_ms: row.try_get(0)?,
        kind: text(row.try_get(1)?)?,
        service: if has_service {
            Some(text(row.try_get(3)?)?)
        } else {
            None
        },
        count: row.try_get::<_, i64>(4)? as u64,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn append_batch(
        &self,
        events: Arc<Vec<StoredEvent>>,
        indexed_seq: u64,
    ) -> Result<AppendOutcome> {
        let mut writer = self.writer.lock().await;
        let connection = match writer.take() {
            Some(connection) if !connection.client.is_closed() => connection,
            _ => Connection::open(&self.target).await?,
        };
        let connection = writer.insert(connection);
        match self.write(connection, &events, indexed_seq).await {
            Err(err) if is_missing_partition(&err) => {
                *self.partitions.lock().unwrap() = Layout::default();
                self.write(connection, &events, indexed_seq).await
            }
            result => result,
        }
    }

    async fn indexed_seq(&self) -> Result<u64> {
        self.read_progress("indexed_seq").await
    }

    async fn query(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE true"));
        let after = query.after.map(|after| (after, query.order));
        push_conditions(&mut sql, &query.filter, after);
        let direction = direction(query.order);
        let limit = sql.param(to_i64(query.limit));
        let offset = sql.param(to_i64(query.offset));
        sql.push(&format!(
            " ORDER BY ts {direction}, seq {direction} LIMIT {limit} OFFSET {offset}"
        ));
        self.read_events(sql).await
    }

    async fn count(&self, filter: EventFilter) -> Result<u64> {
        let mut sql = Sql::new("SELECT count(*) FROM events WHERE true");
        push_conditions(&mut sql, &filter, None);
        let rows = self.read(&sql).await?;
        Ok(rows[0].try_get::<_, i64>(0)? as u64)
    }

    async fn events_after_seq(
        &self,
        filter: EventFilter,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE seq > "));
        let after_seq = sql.param(to_i64(after_seq));
        sql.push(&after_seq);
        push_conditions(&mut sql, &filter, None);
        let limit = sql.param(to_i64(limit));
        sql.push(&format!(" ORDER BY seq LIMIT {limit}"));
        self.read_events(sql).await
    }

    async fn get(&self, id: String) -> Result<Option<StoredEvent>> {
        // The id's timestamp, from the ids table, names the one partition to look in.
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE id = "));
        let id = sql.param(id.into_bytes());
        sql.push(&format!(
            "{id} AND ts = (SELECT ts FROM event_ids WHERE id = {id})"
        ));
        Ok(self.read_events(sql).await?.into_iter().next())
    }

    async fn event_count(&self) -> Result<u64> {
        self.read_progress("event_count").await
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        let sql = Sql::new("SELECT min(ts), max(ts) FROM events");
        let rows = self.read(&sql).await?;
        let min: Option<i64> = rows[0].try_get(0)?;
        let max: Option<i64> = rows[0].try_get(1)?;
        Ok(min.zip(max))
    }

    async fn rollups(&self, query: RollupQuery) -> Result<Vec<RollupRow>> {
        // Whole hours are read from the hourly rollups: 60 times fewer rows.
        let hour_aligned = |ms: i64| ms % HOUR_MS == 0 || ms == i64::MAX;
        let (table, column) = if query.bucket_ms % HOUR_MS == 0
            && hour_aligned(query.from_ms)
            && hour_aligned(query.to_ms)
        {
            ("rollups_hourly", "hour")
        } else {
            ("rollups", "minute")
        };
        let mut sql = Sql::new("");
        let bucket = sql.param(query.bucket_ms);
        let from = sql.param(query.from_ms);
        let to = sql.param(query.to_ms);
        sql.push(&format!(
            "SELECT {column} - (({column} % {bucket}) + {bucket}) % {bucket}, type, has_service,
                    service, sum(count)::bigint
             FROM {table} WHERE {column} >= {from} AND {column} < {to}"
        ));
        if let Some(kind) = query.kind {
            let kind = sql.param(kind.into_bytes());
            sql.push(&format!(" AND type = {kind}"));
        }
        if let Some(service) = query.service {
            let service = sql.param(service.into_bytes());
            sql.push(&format!(" AND has_service AND service = {service}"));
        }
        sql.push(" GROUP BY 1, 2, 3, 4");
        self.read(&sql).await?.iter().map(rollup_row).collect()
    }

    async fn counts_per_second(&self, from_ms: i64) -> Result<Vec<RollupRow>> {
        let mut sql = Sql::new("");
        let from = sql.param(from_ms);
        sql.push(&format!(
            "SELECT ts - ((ts % 1000) + 1000) % 1000, type, service IS NOT NULL,
                    coalesce(service, ''::bytea), count(*)
             FROM events WHERE ts >= {from} GROUP BY 1, 2, 3, 4"
        ));
        self.read(&sql).await?.iter().map(rollup_row).collect()
    }

    async fn recent_client_ids(&self, since_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        let mut sql = Sql::new("");
        let since = sql.param(since_ms);
        let limit = sql.param(to_i64(limit));
        sql.push(&format!(
            "SELECT id, received_at FROM events
             WHERE id_from_client AND received_at >= {since}
             ORDER BY received_at DESC LIMIT {limit}"
        ));
        self.read(&sql)
            .await?
            .iter()
            .map(|row| Ok((text(row.try_get(0)?)?, row.try_get(1)?)))
            .collect()
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>> {
        credentials::secret(&self.pool, name, &candidate).await
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<()> {
        credentials::create_key(&self.pool, key).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        credentials::list_keys(&self.pool).await
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool> {
        credentials::revoke_key(&self.pool, id, at_ms).await
    }

    async fn keys_version(&self) -> Result<i64> {
        credentials::keys_version(&self.pool).await
    }

    async fn record_key_uses(&self, uses: Vec<(String, i64)>) -> Result<()> {
        credentials::record_key_uses(&self.pool, &uses).await
    }

    async fn alert_records(&self, kind: &str) -> Result<Vec<(String, String)>> {
        alerts::records(&self.pool, kind).await
    }

    async fn put_alert_record(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        alerts::put(&self.pool, kind, name, body).await
    }

    async fn delete_alert_record(&self, kind: &str, name: &str) -> Result<bool> {
        alerts::delete(&self.pool, kind, name).await
    }

    async fn add_alert_history(&self, entries: Vec<(i64, String)>) -> Result<()> {
        alerts::add_history(&self.pool, &entries).await
    }

    async fn alert_history(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, i64, String)>> {
        alerts::history(&self.pool, before, limit).await
    }

    async fn lead_alerts(&self) -> Result<bool> {
        self.alerts_leader.lead(&self.target, self.lock_key).await
    }

    async fn purge_before(&self, cutoff_ms: i64) -> Result<Purged> {
        retention::purge_before(self, cutoff_ms).await
    }

    async fn partitions(&self) -> Result<Vec<TimeRange>> {
        let connection = self.pool.get().await?;
        let listed = partitions::list(&connection.client).await?;
        Ok(listed.into_iter().filter_map(|p| p.range).collect())
    }
}
