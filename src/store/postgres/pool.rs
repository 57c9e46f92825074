//! A small pool of PostgreSQL connections, each keeping the statements it has prepared.
//!
//! Our own rather than a pool crate: the store needs only "a connection, or wait for one", a
//! setup statement per new connection (the search path) and a statement cache, which is a few
//! lines here. A connection found closed is dropped and a new one opened in its place.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, Statement};

/// Where to connect and how to set up each new connection.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: Config,
    /// Run on each new connection (`SET search_path ...` when the store has a schema).
    pub(super) setup: Option<String>,
}

impl Target {
    /// `host:port/dbname`, for messages: never the user or the password.
    pub(super) fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let dbname = self.config.get_dbname().unwrap_or("");
        format!("{host}:{port}/{dbname}")
    }
}

/// One connection and the statements prepared on it, by SQL text.
pub(super) struct Connection {
    pub(super) client: Client,
    statements: HashMap<String, Statement>,
}

impl Connection {
    pub(super) async fn open(target: &Target) -> Result<Connection> {
        let (client, connection) = target
            .config
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", target.describe()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "a PostgreSQL connection failed");
            }
        });
        if let Some(setup) = &target.setup {
            client
                .batch_execute(setup)
                .await
                .context("setting up a PostgreSQL connection")?;
        }
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }

    /// The statement for `sql`, prepared on this connection once.
    pub(super) async fn prepare(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(sql)
            .await
            .with_context(|| format!("preparing {sql}"))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

pub(super) struct Pool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    /// One per connection that may exist: at most that many are open.
    permits: Semaphore,
}

impl Pool {
    pub(super) fn new(target: Target, size: usize) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    /// A connection, once fewer than the pool's size are in use.
    pub(super) async fn get(&self) -> Result<Pooled<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .context("the store is closed")?;
        let idle = self.idle.lock().unwrap().pop();
        let connection = match idle {
            Some(connection) if !connection.client.is_closed() => connection,
            _ => Connection::open(&self.target).await?,
        };
        Ok(Pooled {
            pool: self,
            connection: Some(connection),
            _permit: permit,
        })
    }
}

/// A connection lent by the [`Pool`], given back when dropped (unless it was closed).
pub(super) struct Pooled<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            if !connection.client.is_closed() {
                self.pool.idle.lock().unwrap().push(connection);
            }
        }
    }
}
