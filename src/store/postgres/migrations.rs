//! The PostgreSQL schema and its migrations: applied in order when a store connects, each
//! recorded in `schema_migrations`, all in one transaction that first takes an advisory lock,
//! so processes starting at once take turns and the second finds the work done.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{quote_identifier, LockKey};

/// Schema migrations, applied in order; `schema_migrations` records which ran.
const MIGRATIONS: &[&str] = &[
    // 1: events, partitioned by ranges of the timestamp (partitions are made by the writer as
    // events need them, and retention drops whole ones), with the indexes the query API reads:
    // every one ends in (ts, seq), the order of a page. Strings sent by clients are `bytea`: they
    // may hold NUL, which `text` cannot, and are kept exactly (`convert_from(type, 'UTF8')` shows
    // them). The metadata is JSON text exactly as sent (never `jsonb`, which reorders keys).
    //
    // A partitioned table cannot have a unique index on `id` alone, so the ids of the stored
    // events have a table of their own: an event is stored only if its id was new there, in
    // the same transaction, and the id is deleted with the event by retention.
    //
    // Rollups: counts per minute (and per hour) x type x service, maintained in the
    // transaction that stores the events; `has_service` tells "no service" from "".
    "CREATE TABLE events (
        seq bigint NOT NULL,
        id bytea NOT NULL,
        id_from_client boolean NOT NULL,
        type bytea NOT NULL,
        ts bigint NOT NULL,
        received_at bigint NOT NULL,
        service bytea,
        user_id bytea,
        message bytea,
        metadata text,
        PRIMARY KEY (ts, seq)
    ) PARTITION BY RANGE (ts);
    CREATE INDEX events_type ON events (type, ts, seq);
    CREATE INDEX events_service ON events (service, ts, seq);
    CREATE INDEX events_user_id ON events (user_id, ts, seq);
    CREATE INDEX events_seq ON events (seq);
    CREATE INDEX events_id ON events (id);
    -- Only events carrying a client id: what the dedup set is rebuilt from at start.
    CREATE INDEX events_client_ids ON events (received_at) WHERE id_from_client;

    CREATE TABLE event_ids (id bytea PRIMARY KEY, ts bigint NOT NULL);
    CREATE INDEX event_ids_ts ON event_ids (ts);

    CREATE TABLE rollups (
        minute bigint NOT NULL,
        type bytea NOT NULL,
        has_service boolean NOT NULL,
        service bytea NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (minute, type, has_service, service)
    );
    CREATE TABLE rollups_hourly (
        hour bigint NOT NULL,
        type bytea NOT NULL,
        has_service boolean NOT NULL,
        service bytea NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (hour, type, has_service, service)
    );

    CREATE TABLE progress (name text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO progress VALUES ('indexed_seq', 0), ('event_count', 0);",
    // 2: the deployment's secrets (the key that signs cursors, shared by every API node),
    // made on first use.
    "CREATE TABLE secrets (name text PRIMARY KEY, value bytea NOT NULL);",
    // 3: API keys (their hashes) and the count of changes to them.
    super::credentials::KEYS_TABLE,
    // 4: alerting's records and history.
    super::alerts::ALERTS_TABLES,
];

/// Creates `schema` if given and missing (the connection's search path already names it),
/// then applies the migrations not yet recorded.
pub(super) async fn migrate(client: &mut Client, schema: Option<&str>, key: LockKey) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LockKey::MIGRATIONS, &key.0],
    )
    .await
    .context("waiting for the migration lock")?;
    if let Some(schema) = schema {
        // Looked up first: CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even
        // when the schema exists, which a role given a ready schema may not have.
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote_identifier(schema)))
                .await
                .with_context(|| format!("creating the schema {schema}"))?;
        }
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let applied = applied as usize;
    anyhow::ensure!(
        applied <= MIGRATIONS.len(),
        "the store's schema version {applied} is newer than this binary knows ({})",
        MIGRATIONS.len()
    );
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = index as i32 + 1;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL store schema migrated");
    }
    tx.commit().await.context("committing the migrations")?;
    Ok(())
}
