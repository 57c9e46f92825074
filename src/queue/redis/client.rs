//! [`RedisStream`]: the commands on the Redis stream between API nodes and workers: adding,
//! reading and trimming entries, and those of the consumer group the worker needs (read,
//! ack, claim, dead-letter).
//!
//! Replies are taken as raw [`Value`]s and picked apart here, so payloads and entry ids move
//! out of the reply without another copy and without a typed layer per command.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, Value};

use super::{entry_id_of, seq_of_bytes, DeadLetter, QueueError, QueueKeys};
use crate::record::decode_payload;

/// The field of a stream entry that holds the event payload.
const PAYLOAD_FIELD: &str = "e";

/// Deletes consumer ARGV[2] of group ARGV[1] on stream KEYS[1] if it has nothing pending:
/// answers what XGROUP DELCONSUMER does (its pending count, so 0), or -1 when it was kept.
const DELETE_IF_NOTHING_PENDING: &str = "\
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1";

/// How long a command on the normal connection may take before it counts as failed. Generous:
/// a publish pipeline of 10,000 entries on a loaded machine is well within it, while a stuck
/// server still turns into a `503` in seconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry read by the worker: its id as Redis spelled it (what XACK takes back), its seq
/// (`None` if the id is beyond the seq range) and its payload (`None` if it has no `e` field).
#[derive(Debug)]
pub struct Entry {
    pub id: Vec<u8>,
    pub seq: Option<u64>,
    pub payload: Option<Vec<u8>>,
    /// Deleted from the stream while pending: XREADGROUP of a pending list answers such an
    /// entry with its id and no fields. There is nothing to store.
    pub deleted: bool,
}

impl Entry {
    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

/// The Redis stream queue; cheap to clone (the connections are shared).
#[derive(Clone)]
pub struct RedisStream {
    keys: Arc<QueueKeys>,
    /// For new connections ([`RedisStream::with_own_blocking_connection`]).
    client: Client,
    /// `host:port` of the server, for messages: never the URL, which may hold a password.
    server: Arc<str>,
    /// Every non-blocking command (multiplexed, reconnects by itself).
    conn: ConnectionManager,
    /// Blocking reads (XREAD/XREADGROUP BLOCK), which would hold up every command queued
    /// behind them on a shared connection. No response timeout of its own: each call is
    /// bounded by its block time plus [`RESPONSE_TIMEOUT`]. Clones share it, so concurrent
    /// blocking reads through one clone family wait for each other; a worker takes its own.
    blocking: ConnectionManager,
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

    /// Creates the consumer group (and the stream) unless it exists. Needed again after a
    /// Redis restart without persistence, which forgets both.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let result = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<Value>(&mut self.conn.clone())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn query(&self, cmd: &Cmd) -> Result<Value, QueueError> {
        Ok(cmd.query_async::<Value>(&mut self.conn.clone()).await?)
    }

    async fn query_pipe(&self, pipe: &Pipeline) -> Result<Vec<Value>, QueueError> {
        Ok(pipe
            .query_async::<Vec<Value>>(&mut self.conn.clone())
            .await?)
    }

    /// A blocking command on the blocking connection, bounded by `block` plus a margin.
    async fn query_blocking(&self, cmd: &Cmd, block: Duration) -> Result<Value, QueueError> {
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

    /// XADD of every payload (field `e`) in ONE pipeline; `Ok(seqs, in order)` only once
    /// Redis acknowledged all. Any failure is an `Err` (some entries may have been added:
    /// retrying is safe because event ids make the stores idempotent).
    pub async fn publish(&self, payloads: &[&[u8]]) -> Result<Vec<u64>, QueueError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for payload in payloads {
            pipe.cmd("XADD")
                .arg(&self.keys.stream)
                .arg("*")
                .arg(PAYLOAD_FIELD)
                .arg(*payload);
        }
        let replies = self.query_pipe(&pipe).await?;
        if replies.len() != payloads.len() {
            return Err(unexpected("XADD pipeline", &replies.len()));
        }
        replies
            .into_iter()
            .map(|reply| {
                bytes(reply)
                    .and_then(|id| seq_of_bytes(&id))
                    .ok_or_else(|| unexpected("XADD", &"an entry id out of the seq range"))
            })
            .collect()
    }

    /// Entries the group has not acknowledged yet: its `lag` (added, not yet delivered) plus
    /// its `pending` (delivered, not acknowledged), from XINFO GROUPS. When Redis cannot tell
    /// the lag (it answers nil after deletions inside the range), `entries-added -
    /// entries-read` from XINFO STREAM, or failing that XLEN (an upper bound: the stream
    /// holds at most a few seconds of acknowledged entries beyond what the group needs).
    pub async fn backlog(&self) -> Result<u64, QueueError> {
        let groups = match self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.keys.stream))
            .await
        {
            Ok(groups) => groups,
            Err(err) if is_no_such_key(&err) => return Ok(0),
            Err(err) => return Err(err),
        };
        let group = list(groups)
            .into_iter()
            .map(pairs)
            .find(|fields| field_str(fields, "name").as_deref() == Some(self.keys.group.as_str()));
        let Some(group) = group else {
            // No group (yet, or again after a Redis restart): everything is unconsumed.
            return self.stream_len().await;
        };
        let pending = field_u64(&group, "pending").unwrap_or(0);
        if let Some(lag) = field_u64(&group, "lag") {
            return Ok(lag + pending);
        }
        if let Some(read) = field_u64(&group, "entries-read") {
            let info = self
                .query(redis::cmd("XINFO").arg("STREAM").arg(&self.keys.stream))
                .await?;
            if let Some(added) = field_u64(&pairs(info), "entries-added") {
                return Ok(added.saturating_sub(read) + pending);
            }
        }
        self.stream_len().await
    }

    async fn stream_len(&self) -> Result<u64, QueueError> {
        let len = self
            .query(redis::cmd("XLEN").arg(&self.keys.stream))
            .await?;
        Ok(int(&len).unwrap_or(0))
    }

    /// Entries strictly after `after_seq`, oldest first, at most `count`: `(seq, payload)`.
    pub async fn range_after(
        &self,
        after_seq: u64,
        count: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(&self.keys.stream)
                    .arg(format!("({}", entry_id_of(after_seq)))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(seq_payloads(entries(reply)))
    }

    /// Like [`RedisStream::range_after`] but waits up to `block` when there is nothing yet
    /// (XREAD BLOCK on the blocking connection); an empty `Vec` when nothing came.
    pub async fn read_after(
        &self,
        after_seq: u64,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        let block_ms = block.as_millis();
        if block_ms == 0 || count == 0 {
            // BLOCK 0 would wait forever.
            return self.range_after(after_seq, count).await;
        }
        let reply = self
            .query_blocking(
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(block_ms as u64)
                    .arg("STREAMS")
                    .arg(&self.keys.stream)
                    .arg(entry_id_of(after_seq)),
                block,
            )
            .await?;
        Ok(seq_payloads(stream_entries(reply)))
    }

    /// The seq of the oldest entry still in the stream, `None` if it is empty.
    pub async fn first_seq(&self) -> Result<Option<u64>, QueueError> {
        let reply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(&self.keys.stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(entries(reply).into_iter().next().and_then(|e| e.seq))
    }

    /// The seq of the last entry ever added (XINFO STREAM `last-generated-id`), 0 if none.
    pub async fn last_seq(&self) -> Result<u64, QueueError> {
        let info = match self
            .query(redis::cmd("XINFO").arg("STREAM").arg(&self.keys.stream))
            .await
        {
            Ok(info) => info,
            Err(err) if is_no_such_key(&err) => return Ok(0),
            Err(err) => return Err(err),
        };
        Ok(field_str(&pairs(info), "last-generated-id")
            .and_then(|id| super::seq_of(&id))
            .unwrap_or(0))
    }

    /// Up to `limit` raw dead-letter entries, oldest first.
    async fn oldest_dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Fields)>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply = self
            .query(
                redis::cmd("XRANGE")
                    .arg(&self.keys.dead_letters)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        Ok(raw_entries(reply))
    }

    /// Up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .oldest_dead_letters(limit)
            .await?
            .into_iter()
            .map(|(id, fields)| dead_letter(id, fields))
            .collect())
    }

    /// Re-queues up to `limit` dead letters, oldest first: XADDs their payloads to the stream
    /// again (as new entries, so they get fresh attempts) and XDELs them from the
    /// dead-letter stream, in one MULTI/EXEC. Returns how many.
    pub async fn replay_dead_letters(&self, limit: usize) -> Result<u64, QueueError> {
        let letters = self.oldest_dead_letters(limit).await?;
        if letters.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut del = redis::cmd("XDEL");
        del.arg(&self.keys.dead_letters);
        for (id, fields) in &letters {
            // A dead letter without a payload (its entry was gone) has nothing to replay.
            if let Some(payload) = field_bytes(fields, PAYLOAD_FIELD) {
                pipe.cmd("XADD")
                    .arg(&self.keys.stream)
                    .arg("*")
                    .arg(PAYLOAD_FIELD)
                    .arg(payload)
                    .ignore();
            }
            del.arg(id);
        }
        pipe.add_command(del).ignore();
        self.query_pipe(&pipe).await?;
        Ok(letters.len() as u64)
    }

    /// Quick reachability check for health (PING).
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.query(&redis::cmd("PING")).await.map(|_| ())
    }

    // -----------------------------------------------------------------------------------------
    // Consumer-group commands, for the worker loop.
    // -----------------------------------------------------------------------------------------

    /// XREADGROUP as `consumer`: with `pending`, this consumer's own delivered but unacknowledged
    /// entries (id `0`, no blocking); otherwise new entries, waiting up to `block`.
    pub async fn read_group(
        &self,
        consumer: &str,
        pending: bool,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.keys.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        let block_ms = block.as_millis().max(1) as u64;
        if !pending {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(if pending { "0" } else { ">" });
        let reply = self.query_blocking(&cmd, block).await?;
        Ok(stream_entries(reply))
    }

    /// XACK of `ids`.
    pub async fn ack<I: AsRef<[u8]>>(&self, ids: &[I]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.keys.stream).arg(&self.keys.group);
        for id in ids {
            cmd.arg(id.as_ref());
        }
        self.query(&cmd).await.map(|_| ())
    }

    /// XAUTOCLAIM for `consumer` of up to `count` entries idle for at least `min_idle`, from
    /// `start` on: `(where to continue, "0-0" once the whole pending list was scanned; the
    /// claimed entries)`. Entries deleted while pending are dropped from the pending list by
    /// Redis and not returned.
    pub async fn autoclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<(String, Vec<Entry>), QueueError> {
        let reply = self
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.keys.stream)
                    .arg(&self.keys.group)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(start)
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        let mut parts = list(reply).into_iter();
        let next = parts
            .next()
            .and_then(bytes)
            .map(|id| String::from_utf8_lossy(&id).into_owned())
            .unwrap_or_else(|| "0-0".to_owned());
        let claimed = parts.next().map(entries).unwrap_or_default();
        Ok((next, claimed))
    }

    /// Removes the consumers that have nothing pending and have not been heard from for
    /// `idle`: names of worker processes gone for good (each process has a name of its own,
    /// so they would pile up). Checked and deleted in one script per consumer, so a consumer
    /// that has just read something is never deleted (XGROUP DELCONSUMER would drop its
    /// pending entries). Returns the names deleted.
    pub async fn delete_idle_consumers(&self, idle: Duration) -> Result<Vec<String>, QueueError> {
        let reply = match self
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&self.keys.stream)
                    .arg(&self.keys.group),
            )
            .await
        {
            Ok(reply) => reply,
            Err(err) if is_no_such_key(&err) || is_no_group(&err) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let idle_ms = idle.as_millis() as u64;
        let mut deleted = Vec::new();
        for consumer in list(reply).into_iter().map(pairs) {
            // `inactive` (Redis 7.2+) counts from the last successful read; `idle` from the
            // last attempt, which is what 7.0 has.
            let quiet = field_u64(&consumer, "inactive").or_else(|| field_u64(&consumer, "idle"));
            let (Some(name), Some(0), Some(quiet)) = (
                field_str(&consumer, "name"),
                field_u64(&consumer, "pending"),
                quiet,
            ) else {
                continue;
            };
            if quiet < idle_ms {
                continue;
            }
            let removed = self
                .query(
                    redis::cmd("EVAL")
                        .arg(DELETE_IF_NOTHING_PENDING)
                        .arg(1)
                        .arg(&self.keys.stream)
                        .arg(&self.keys.group)
                        .arg(&name),
                )
                .await?;
            if int(&removed) == Some(0) {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// Moves `entry` to the dead-letter stream with why and after how many attempts, and
    /// acknowledges it, in one MULTI/EXEC: it is never both lost and acknowledged.
    pub async fn dead_letter(
        &self,
        entry: &Entry,
        reason: &str,
        attempts: u64,
        failed_at_ms: i64,
    ) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe
            .cmd("XADD")
            .arg(&self.keys.dead_letters)
            .arg("*")
            .arg("original_id")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(attempts)
            .arg("failed_at_ms")
            .arg(failed_at_ms);
        if let Some(payload) = &entry.payload {
            xadd.arg(PAYLOAD_FIELD).arg(payload.as_slice());
        }
        xadd.ignore();
        pipe.cmd("XACK")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg(&entry.id)
            .ignore();
        self.query_pipe(&pipe).await.map(|_| ())
    }

    /// The oldest entry id the group still needs: its oldest pending entry, or the entry after
    /// its last-delivered id when nothing is pending; `None` without a group. Read in one
    /// MULTI/EXEC, so no delivery can slip in between the two answers.
    pub async fn oldest_needed(&self) -> Result<Option<String>, QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XINFO").arg("GROUPS").arg(&self.keys.stream);
        pipe.cmd("XPENDING")
            .arg(&self.keys.stream)
            .arg(&self.keys.group);
        let replies = match self.query_pipe(&pipe).await {
            Ok(replies) => replies,
            Err(err) if is_no_such_key(&err) || is_no_group(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut replies = replies.into_iter();
        let groups = replies.next().unwrap_or_default();
        let group = list(groups)
            .into_iter()
            .map(pairs)
            .find(|fields| field_str(fields, "name").as_deref() == Some(self.keys.group.as_str()));
        let Some(group) = group else {
            return Ok(None);
        };
        let Some(last_delivered) =
            field_str(&group, "last-delivered-id").and_then(|id| super::seq_of(&id))
        else {
            return Ok(None);
        };
        let after_delivered = last_delivered + 1;
        let oldest_pending = replies
            .next()
            .map(list)
            .and_then(|summary| summary.into_iter().nth(1))
            .and_then(bytes)
            .and_then(|id| seq_of_bytes(&id));
        let needed = oldest_pending.map_or(after_delivered, |p| p.min(after_delivered));
        Ok(Some(entry_id_of(needed)))
    }

    /// Trims the stream below the oldest entry the group still needs (XTRIM MINID, exact):
    /// never an entry not yet acknowledged. Returns how many entries went.
    pub async fn trim(&self) -> Result<u64, QueueError> {
        let Some(min_id) = self.oldest_needed().await? else {
            return Ok(0);
        };
        let trimmed = self
            .query(
                redis::cmd("XTRIM")
                    .arg(&self.keys.stream)
                    .arg("MINID")
                    .arg(min_id),
            )
            .await?;
        Ok(int(&trimmed).unwrap_or(0))
    }

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
fn is_no_such_key(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    text.contains("no such key")
}

/// Whether Redis said the consumer group does not exist.
fn is_no_group(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    text.contains("NOGROUP")
}

/// Whether the group may be gone: Redis said so, or unblocked a read because the stream was
/// deleted (UNBLOCKED).
pub(crate) fn group_may_be_gone(err: &QueueError) -> bool {
    let QueueError::Unavailable(text) = err;
    is_no_group(err) || text.contains("UNBLOCKED")
}

fn unexpected(what: &str, got: &dyn std::fmt::Debug) -> QueueError {
    QueueError::Unavailable(
        RedisError::from((
            ErrorKind::Parse,
            "unexpected reply",
            format!("{what}: {got:?}"),
        ))
        .to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// Reply parsing. Lenient: whatever does not have the expected shape is skipped, not a panic.
// ---------------------------------------------------------------------------------------------

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// The elements of an array (or set) reply; nothing for nil and anything else.
fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// Field names and values of a reply, in order.
type Fields = Vec<(Vec<u8>, Value)>;

/// A field/value reply: a RESP3 map, or a RESP2 flat array `[k1, v1, k2, v2, ...]`.
fn pairs(value: Value) -> Fields {
    match value {
        Value::Map(map) => map
            .into_iter()
            .filter_map(|(k, v)| Some((bytes(k)?, v)))
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = bytes(k) {
                    out.push((k, v));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn field<'a>(fields: &'a [(Vec<u8>, Value)], name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v)
}

fn field_u64(fields: &[(Vec<u8>, Value)], name: &str) -> Option<u64> {
    field(fields, name).and_then(int)
}

fn field_str(fields: &[(Vec<u8>, Value)], name: &str) -> Option<String> {
    field(fields, name)
        .cloned()
        .and_then(bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn field_bytes<'a>(fields: &'a [(Vec<u8>, Value)], name: &str) -> Option<&'a [u8]> {
    match field(fields, name)? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]` as `(id, fields)`.
fn raw_entries(reply: Value) -> Vec<(Vec<u8>, Fields)> {
    list(reply)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = list(entry).into_iter();
            let id = bytes(parts.next()?)?;
            let fields = parts.next().map(pairs).unwrap_or_default();
            Some((id, fields))
        })
        .collect()
}

/// Stream entries with their payload moved out of the reply (no copy).
fn entries(reply: Value) -> Vec<Entry> {
    list(reply)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = list(entry).into_iter();
            let id = bytes(parts.next()?)?;
            let fields = parts.next().unwrap_or_default();
            let deleted = matches!(fields, Value::Nil);
            Some(Entry {
                seq: seq_of_bytes(&id),
                id,
                payload: take_payload(fields),
                deleted,
            })
        })
        .collect()
}

/// The `e` field of an entry's field list, moved out.
fn take_payload(fields: Value) -> Option<Vec<u8>> {
    let items = match fields {
        Value::Array(items) => items,
        Value::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        let is_payload = match &k {
            Value::BulkString(name) => name == PAYLOAD_FIELD.as_bytes(),
            Value::SimpleString(name) => name == PAYLOAD_FIELD,
            _ => false,
        };
        if is_payload {
            return bytes(v);
        }
    }
    None
}

/// The entries of an XREAD/XREADGROUP reply on one stream: `[[stream, entries]]` in RESP2,
/// `{stream: entries}` in RESP3, nil on timeout.
fn stream_entries(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Map(map) => map
            .into_iter()
            .next()
            .map(|(_, e)| entries(e))
            .unwrap_or_default(),
        Value::Array(streams) => streams
            .into_iter()
            .next()
            .and_then(|stream| list(stream).into_iter().nth(1))
            .map(entries)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn seq_payloads(entries: Vec<Entry>) -> Vec<(u64, Vec<u8>)> {
    entries
        .into_iter()
        .filter_map(|e| Some((e.seq?, e.payload?)))
        .collect()
}

fn dead_letter(id: Vec<u8>, fields: Fields) -> DeadLetter {
    let original_id = field_str(&fields, "original_id").unwrap_or_default();
    let event = field_bytes(&fields, PAYLOAD_FIELD)
        .and_then(|payload| decode_payload(super::seq_of(&original_id).unwrap_or(0), payload))
        .and_then(|event| {
            let view = crate::event::render::EventView::of(&event).ok()?;
            serde_json::to_value(view).ok()
        });
    DeadLetter {
        id: String::from_utf8_lossy(&id).into_owned(),
        reason: field_str(&fields, "reason").unwrap_or_default(),
        attempts: field_u64(&fields, "attempts").unwrap_or(0),
        failed_at_ms: field_str(&fields, "failed_at_ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        original_id,
        event,
    }
}
