//! [`RedisStream`]: the connections to the Redis server holding the stream, and the commands
//! every role shares. The commands themselves are grouped by role: adding and reading entries
//! ([`super::stream`]), the consumer group of the workers ([`super::group`]) and the dead
//! letters ([`super::dead_letters`]); replies are picked apart in [`super::reply`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, Value};

use super::{QueueError, QueueKeys};

/// How long a command on the normal connection may take before it counts as failed. Generous:
/// a publish pipeline of 10,000 entries on a loaded machine is well within it, while a stuck
/// server still turns into a `503` in seconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis stream queue; cheap to clone (the connections are shared).
#[derive(Clone)]
pub struct RedisStream {
    pub(super) keys: Arc<QueueKeys>,
    /// For new connections ([`RedisStream::with_own_blocking_connection`]).
    pub(super) client: Client,
    /// `host:port` of the server, for messages: never the URL, which may hold a password.
    pub(super) server: Arc<str>,
    /// Every non-blocking command (multiplexed, reconnects by itself).
    pub(super) conn: ConnectionManager,
    /// Blocking reads (XREAD/XREADGROUP BLOCK), which would hold up every command queued
    /// behind them on a shared connection. No response timeout of its own: each call is
    /// bounded by its block time plus [`RESPONSE_TIMEOUT`]. Clones share it, so concurrent
    /// blocking reads through one clone family wait for each other; a worker takes its own.
    pub(super) blocking: ConnectionManager,
}

impl std::fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStream")
            .field("server", &self.server)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
        // Reconnection attempts per failure; the callers retry (or answer 503) beyond that.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

impl RedisStream {
    /// Connects (fails fast with a clear error when Redis is unreachable) and creates the
    /// consumer group if missing (`XGROUP CREATE ... 0 MKSTREAM`: from the start of the
    /// stream, so entries added before any worker existed are consumed too).
    pub async fn connect(url: &str, keys: QueueKeys) -> anyhow::Result<RedisStream> {
        // The URL may hold a password: errors name only the server.
        let client = Client::open(url).map_err(|_| {
            anyhow::anyhow!("invalid Redis URL (expected redis://[user:password@]host[:port][/db])")
        })?;
        let server: Arc<str> = client.get_connection_info().addr().to_string().into();
        let conn = ConnectionManager::new_with_config(
            client.clone(),
            manager_config(Some(RESPONSE_TIMEOUT)),
        )
        .await
        .with_context(|| format!("could not connect to Redis at {server}"))?;
        let blocking =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config(None))
                .with_context(|| format!("could not connect to Redis at {server}"))?;
        let queue = RedisStream {
            keys: Arc::new(keys),
            client,
            server,
            conn,
            blocking,
        };
        queue.ensure_group().await.with_context(|| {
            format!(
                "could not create the consumer group on Redis at {}",
                queue.server
            )
        })?;
        Ok(queue)
    }

    /// The same queue with a blocking connection of its own (opened on first use), so its
    /// blocking reads wait for no one else's.
    pub fn with_own_blocking_connection(&self) -> anyhow::Result<RedisStream> {
        let blocking =
            ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config(None))?;
        Ok(RedisStream {
            blocking,
            ..self.clone()
        })
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// `host:port` of the Redis server (never the password).
    pub fn server(&self) -> &str {
        &self.server
    }

    pub(super) async fn query(&self, cmd: &Cmd) -> Result<Value, QueueError> {
        Ok(cmd.query_async::<Value>(&mut self.conn.clone()).await?)
    }

    /// XLEN of the stream `key`: 0 when it does not exist.
    pub(super) async fn len_of(&self, key: &str) -> Result<u64, QueueError> {
        let reply = self.query(redis::cmd("XLEN").arg(key)).await?;
        Ok(super::reply::int(&reply).unwrap_or(0))
    }

    /// XRANGE of the stream `key` from `start` (an id, `(id` for after it, or `-`) onwards, at
    /// most `count` entries; none when `count` is 0, without asking Redis.
    pub(super) async fn range_from(
        &self,
        key: &str,
        start: &str,
        count: usize,
    ) -> Result<Value, QueueError> {
        if count == 0 {
            return Ok(Value::Array(Vec::new()));
        }
        self.query(
            redis::cmd("XRANGE")
                .arg(key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count),
        )
        .await
    }

    /// XINFO `section` (`STREAM`, `GROUPS`) of the stream; `None` when the stream does not
    /// exist (yet, or any more after a Redis restart).
    pub(super) async fn info(&self, section: &str) -> Result<Option<Value>, QueueError> {
        match self
            .query(redis::cmd("XINFO").arg(section).arg(&self.keys.stream))
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(err) if is_no_such_key(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> Result<Vec<Value>, QueueError> {
        Ok(pipe
            .query_async::<Vec<Value>>(&mut self.conn.clone())
            .await?)
    }

    /// A blocking command on the blocking connection, bounded by `block` plus a margin.
    pub(super) async fn query_blocking(
        &self,
        cmd: &Cmd,
        block: Duration,
    ) -> Result<Value, QueueError> {
        let mut conn = self.blocking.clone();
        match tokio::time::timeout(
            block + RESPONSE_TIMEOUT,
            cmd.query_async::<Value>(&mut conn),
        )
        .await
        {
            Ok(result) => Ok(result?),
            Err(_) => Err(QueueError::Unavailable(format!(
                "no answer from Redis at {} within {:?}",
                self.server,
                block + RESPONSE_TIMEOUT
            ))),
        }
    }

    /// Quick reachability check for health (PING).
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.query(&redis::cmd("PING")).await.map(|_| ())
    }

    // -----------------------------------------------------------------------------------------
    // Consumer-group commands, for the worker loop.
    // -----------------------------------------------------------------------------------------

    /// Deletes the stream and the dead-letter stream (with the group): for tests and tools.
    pub async fn delete_all(&self) -> Result<(), QueueError> {
        self.query(
            redis::cmd("DEL")
                .arg(&self.keys.stream)
                .arg(&self.keys.dead_letters),
        )
        .await
        .map(|_| ())
    }
}

/// Whether Redis said the key does not exist (XINFO on a missing stream).
pub(super) fn is_no_such_key(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    text.contains("no such key")
}

/// Whether Redis said the consumer group does not exist.
pub(super) fn is_no_group(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    text.contains("NOGROUP")
}

/// Whether the group may be gone: Redis said so, or unblocked a read because the stream was
/// deleted (UNBLOCKED).
pub(crate) fn group_may_be_gone(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    is_no_group(err) || text.contains("UNBLOCKED")
}

pub(super) fn unexpected(what: &str, got: &dyn std::fmt::Debug) -> QueueError {
    QueueError::Unavailable(
        RedisError::from((
            ErrorKind::Parse,
            "unexpected reply",
            format!("{what}: {got:?}"),
        ))
        .to_string(),
    )
}
