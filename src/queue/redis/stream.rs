//! Adding entries to the stream and reading them back: what API nodes publish, and what their
//! live streams and resumes read.

use std::time::Duration;

use super::client::{is_no_such_key, unexpected, RedisStream, PAYLOAD_FIELD};
use super::reply::*;
use super::{entry_id_of, seq_of_bytes, QueueError};

impl RedisStream {
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

    pub(super) async fn stream_len(&self) -> Result<u64, QueueError> {
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
}
