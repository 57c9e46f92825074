//! Adding entries to the stream and reading them back: what API nodes publish, and what their
//! live streams and resumes read.

use std::time::Duration;

use super::client::{unexpected, RedisStream};
use super::reply::PAYLOAD_FIELD;
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
        self.len_of(&self.keys.stream).await
    }

    /// Entries strictly after `after_seq`, oldest first, at most `count`: `(seq, payload)`.
    pub async fn range_after(
        &self,
        after_seq: u64,
        count: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        let after = format!("({}", entry_id_of(after_seq));
        let reply = self.range_from(&self.keys.stream, &after, count).await?;
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
        let reply = self.range_from(&self.keys.stream, "-", 1).await?;
        Ok(entries(reply).into_iter().next().and_then(|e| e.seq))
    }

    /// The seq of the last entry ever added (XINFO STREAM `last-generated-id`), 0 if none.
    pub async fn last_seq(&self) -> Result<u64, QueueError> {
        let Some(info) = self.info("STREAM").await? else {
            return Ok(0);
        };
        Ok(field_str(&pairs(info), "last-generated-id")
            .and_then(|id| super::seq_of(&id))
            .unwrap_or(0))
    }
}
