//! The scale-out store: PostgreSQL, shared by every process of a cluster.
//!
//! Events go into a table partitioned by time (UTC days, and months or years for old data:
//! [`partitions`]), their ids into a table of their own that makes storing exactly-once, and
//! the rollups and progress counters are updated in the same transaction. The schema is
//! created and migrated on connect ([`migrations`]); retention drops whole partitions
//! ([`retention`]). In each process one connection writes ([`writer`]: the worker's, one
//! batch at a time); a small pool ([`pool`]) serves the reads ([`query`] builds them).
//! Several processes write at once: each batch's ids and rollup rows are locked in key
//! order, so two of them wait for each other rather than deadlock.

mod alerts;
mod credentials;
mod export;
mod migrations;
mod partitions;
mod pool;
mod query;
mod retention;
mod writer;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use tokio_postgres::{Config, Row};

use super::partitioning::{Layout, TimeRange};
use super::{
    AppendOutcome, EventFilter, EventQuery, Events, Purged, ReplayQuery, RollupQuery, RollupRow,
    Store, StoreResult, HOUR_MS,
};
use crate::auth::keys::KeyRecord;
use crate::event::StoredEvent;
use pool::{Connection, Pool, Target};
use query::{direction, event_from_row, push_conditions, rollup_row, text, to_i64, Sql, COLUMNS};

/// Connections serving reads (and retention), besides the writer's. Each is a server process;
/// on 2 cores more concurrent queries only queue on the CPU (as for SQLite's readers).
const MAX_READERS: usize = 4;

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

/// The statement of `query`: a page of events in `(ts, seq)` order.
fn query_sql(query: &EventQuery) -> Sql {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE true"));
    let after = query.after.map(|after| (after, query.order));
    push_conditions(&mut sql, &query.filter, after);
    let direction = direction(query.order);
    let limit = sql.param(to_i64(query.limit));
    let offset = sql.param(to_i64(query.offset));
    sql.push(&format!(
        " ORDER BY ts {direction}, seq {direction} LIMIT {limit} OFFSET {offset}"
    ));
    sql
}

#[async_trait]
impl Store for PostgresStore {
    async fn append_batch(&self, events: Events, indexed_seq: u64) -> StoreResult<AppendOutcome> {
        self.append(&events, indexed_seq).await
    }

    async fn indexed_seq(&self) -> Result<u64> {
        self.read_progress("indexed_seq").await
    }

    async fn query(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        self.read_events(query_sql(&query)).await
    }

    async fn export(
        &self,
        filter: EventFilter,
        page: usize,
        pages: tokio::sync::mpsc::Sender<Result<Vec<StoredEvent>>>,
    ) {
        export::export(&self.pool, filter, page, pages).await
    }

    async fn count(&self, filter: EventFilter) -> Result<u64> {
        let mut sql = Sql::new("SELECT count(*) FROM events WHERE true");
        push_conditions(&mut sql, &filter, None);
        let rows = self.read(&sql).await?;
        Ok(rows[0].try_get::<_, i64>(0)? as u64)
    }

    async fn events_after_seq(&self, query: ReplayQuery) -> Result<Vec<StoredEvent>> {
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE seq > "));
        let after_seq = sql.param(to_i64(query.after_seq));
        sql.push(&after_seq);
        push_conditions(&mut sql, &query.filter, None);
        let limit = sql.param(to_i64(query.limit));
        sql.push(&format!(" ORDER BY seq LIMIT {limit}"));
        self.read_events(sql).await
    }

    async fn get(&self, id: &str) -> Result<Option<StoredEvent>> {
        // The id's timestamp, from the ids table, names the one partition to look in.
        let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM events WHERE id = "));
        let id = sql.param(id.as_bytes().to_vec());
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

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        credentials::secret(&self.pool, name, candidate).await
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

    async fn record_key_uses(&self, uses: &[(String, i64)]) -> Result<()> {
        credentials::record_key_uses(&self.pool, uses).await
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
