//! The workers' consumer group: reading batches, acknowledging them, claiming what a dead
//! worker left pending, the backlog API nodes refuse beyond, trimming what every worker has
//! acknowledged, and deleting consumers gone for good.

use std::time::Duration;

use redis::Value;

use super::client::{is_no_group, is_no_such_key, RedisStream};
use super::reply::Entry;
use super::reply::*;
use super::{entry_id_of, seq_of_bytes, QueueError};

/// Deletes consumer ARGV[2] of group ARGV[1] on stream KEYS[1] if it has nothing pending:
/// answers what XGROUP DELCONSUMER does (its pending count, so 0), or -1 when it was kept.
const DELETE_IF_NOTHING_PENDING: &str = "\
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1";

impl RedisStream {
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

    /// Entries the group has not acknowledged yet: its `lag` (added, not yet delivered) plus
    /// its `pending` (delivered, not acknowledged), from XINFO GROUPS. When Redis cannot tell
    /// the lag (it answers nil after deletions inside the range), `entries-added -
    /// entries-read` from XINFO STREAM, or failing that XLEN (an upper bound: the stream
    /// holds at most a few seconds of acknowledged entries beyond what the group needs).
    pub async fn backlog(&self) -> Result<u64, QueueError> {
        let Some(groups) = self.info("GROUPS").await? else {
            return Ok(0);
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
}
