//! `eventide keys`: creating, listing and revoking API keys offline, on the data directory
//! (taking its lock, so not while a server runs on it: use `POST /keys` then) or on a
//! cluster's PostgreSQL, so that the first admin key exists before the server is exposed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::keys::{self, CreatedKey, KeyInfo, Scope, Scopes};
use crate::clock::{Clock, SystemClock};
use crate::config::{parse_duration, redact_url};
use crate::data_dir::DataDirLock;
use crate::event::timefmt::format_rfc3339_ms;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Options of `eventide keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,

    /// The data directory of the embedded store (the server's --data-dir).
    #[arg(
        long,
        env = "EVENTIDE_DATA_DIR",
        default_value = "./eventide-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// A cluster's PostgreSQL (`postgres://...`) instead of the data directory.
    #[arg(long, env = "EVENTIDE_STORE", hide_env_values = true, global = true)]
    pub store: Option<String>,

    /// The PostgreSQL schema of the store's tables (the server's --postgres-schema).
    #[arg(long, env = "EVENTIDE_POSTGRES_SCHEMA", global = true)]
    pub postgres_schema: Option<String>,

    /// One JSON object (create) or array (list) on one line of stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Create a key; its secret is printed once and only its hash is kept.
    Create {
        /// What the key is for, e.g. the producer it is handed to.
        #[arg(long)]
        name: String,
        /// `ingest`, `read` or `admin` (implies both); repeat for several.
        #[arg(long = "scope", required = true, value_parser = Scope::parse)]
        scopes: Vec<Scope>,
        /// How long the key is valid (`90d`, `12h`...); forever when absent.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List the keys (never a secret).
    List,
    /// Revoke a key by its id.
    Revoke { id: String },
}

/// Runs `eventide keys ...`.
pub async fn run(args: KeysArgs) -> Result<()> {
    // Held until the command is done, like a server's.
    let (store, _lock) = open(&args).await?;
    let clock = SystemClock;
    let mut out = std::io::stdout().lock();
    match args.action {
        KeysAction::Create {
            name,
            scopes,
            expires,
        } => {
            let now_ms = clock.now_ms();
            let expires_ms =
                expires.map(|expires| now_ms.saturating_add(expires.as_millis() as i64));
            let made = keys::generate(name.trim(), Scopes::new(scopes), now_ms, expires_ms)?;
            store.create_key(&made.record).await?;
            if args.json {
                let created = serde_json::to_string(&CreatedKey::from(&made))?;
                writeln!(out, "{created}")?;
            } else {
                writeln!(out, "{}", made.secret)?;
                eprintln!(
                    "created key {} ({}, scopes {}): keep the line above, it is not shown again",
                    made.record.id,
                    made.record.name,
                    made.record.scopes.to_text()
                );
            }
        }
        KeysAction::List => {
            let records = store.list_keys().await?;
            if args.json {
                let list: Vec<_> = records.iter().map(KeyInfo::from).collect();
                writeln!(out, "{}", serde_json::to_string(&list)?)?;
            } else {
                writeln!(
                    out,
                    "{:<17} {:<9} {:<20} {:<16} {:<25} state",
                    "id", "prefix", "name", "scopes", "created"
                )?;
                let now_ms = clock.now_ms();
                for record in &records {
                    let state = match (record.revoked_ms, record.is_active(now_ms)) {
                        (Some(at), _) => format!("revoked {}", format_rfc3339_ms(at)),
                        (None, false) => "expired".to_owned(),
                        (None, true) => "active".to_owned(),
                    };
                    writeln!(
                        out,
                        "{:<17} {:<9} {:<20} {:<16} {:<25} {state}",
                        record.id,
                        record.prefix,
                        record.name,
                        record.scopes.to_text(),
                        format_rfc3339_ms(record.created_ms)
                    )?;
                }
            }
        }
        KeysAction::Revoke { id } => {
            if !store.revoke_key(&id, clock.now_ms()).await? {
                anyhow::bail!("no key '{id}' that is not revoked already");
            }
            if args.json {
                writeln!(out, "{}", json!({ "revoked": id }))?;
            } else {
                writeln!(out, "revoked {id}")?;
            }
        }
    }
    Ok(())
}

async fn open(args: &KeysArgs) -> Result<(Arc<dyn Store>, Option<DataDirLock>)> {
    match &args.store {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PostgresStore::connect(url, args.postgres_schema.as_deref())
                .await
                .with_context(|| format!("connecting to the store at {}", redact_url(url)))?;
            Ok((Arc::new(store), None))
        }
        Some(other) if other != "embedded" => {
            anyhow::bail!("invalid --store: must be `embedded` or a postgres:// URL")
        }
        _ => {
            let lock = DataDirLock::acquire(&args.data_dir)?;
            let path = args.data_dir.join("events.db");
            let store =
                tokio::task::spawn_blocking(move || SqliteStore::open(&path, false)).await??;
            Ok((Arc::new(store), Some(lock)))
        }
    }
}
