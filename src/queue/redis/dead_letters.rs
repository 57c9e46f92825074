//! The dead letters: entries that could not be stored, listed and replayed over HTTP.

use super::client::RedisStream;
use super::reply::*;
use super::reply::{Entry, PAYLOAD_FIELD};
use super::DeadLetter;
use super::QueueError;
use crate::record::decode_payload;

impl RedisStream {
    /// Up to `limit` raw dead-letter entries, oldest first.
    async fn oldest_dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Fields)>, QueueError> {
        let reply = self.range_from(&self.keys.dead_letters, "-", limit).await?;
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

    /// How many dead letters there are (XLEN): what the health alert watches grow.
    pub async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        self.len_of(&self.keys.dead_letters).await
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
