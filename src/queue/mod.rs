//! The scale-out queue between API nodes and workers: a Redis stream ([`redis::RedisQueue`])
//! that API nodes append event payloads to, and the worker loop ([`worker::run`]) that a
//! consumer group runs to move them into the store.
//!
//! # Keys
//! Everything lives under one prefix `p` (default `eventide`), so several deployments (or
//! tests) can share a Redis server:
//! - `{p}:events`: the stream. Each entry has one field, `e`, holding the binary payload of
//!   [`crate::ingest::record::encode_payload`]. The entry id is the event's `seq`
//!   ([`seq_of`]).
//! - `{p}:workers`: the consumer group of the workers on `{p}:events` (a group name, not a
//!   key). Each worker process is one consumer.
//! - `{p}:dead-letters`: a stream of entries that could not be stored: fields `e` (the
//!   payload), `original_id`, `reason`, `attempts`, `failed_at_ms`.
//!
//! # Positions
//! A stream entry id `ms-n` becomes the `u64` seq `ms << 20 | n`: ids and seqs order the
//! same way, so a stream position and a store position are one number. Redis gives ids in
//! increasing order at XADD time, so a reader resuming "after seq s" with XRANGE never skips
//! an entry that a worker commits to the store later.

pub mod redis;
pub mod worker;

pub use self::redis::RedisQueue;

/// Bits of the seq that hold the sequence number `n` of an entry id `ms-n`.
const SEQ_BITS: u32 = 20;

/// A stream entry id `ms-n` as the u64 `seq` used everywhere else: `ms << 20 | n`
/// (`n < 2^20`, `ms < 2^44`); `None` for anything else.
pub fn seq_of(entry_id: &str) -> Option<u64> {
    seq_of_bytes(entry_id.as_bytes())
}

/// [`seq_of`] on the raw bytes Redis answers with, so the worker needs no `String` per entry.
pub fn seq_of_bytes(entry_id: &[u8]) -> Option<u64> {
    let dash = entry_id.iter().position(|&b| b == b'-')?;
    let ms = parse_u64(&entry_id[..dash])?;
    let n = parse_u64(&entry_id[dash + 1..])?;
    if n >= 1 << SEQ_BITS || ms >= 1 << (64 - SEQ_BITS) {
        return None;
    }
    Some(ms << SEQ_BITS | n)
}

/// The stream entry id `ms-n` of `seq`: the inverse of [`seq_of`].
pub fn entry_id_of(seq: u64) -> String {
    format!("{}-{}", seq >> SEQ_BITS, seq & ((1 << SEQ_BITS) - 1))
}

/// Decimal digits only, no sign, no overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Key names, all derived from one prefix (default `eventide`); see the module docs.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// `{p}:events`: the stream of event payloads.
    pub stream: String,
    /// `{p}:workers`: the workers' consumer group on [`QueueKeys::stream`].
    pub group: String,
    /// `{p}:dead-letters`: entries that could not be stored.
    pub dead_letters: String,
}

impl QueueKeys {
    pub const DEFAULT_PREFIX: &'static str = "eventide";

    pub fn with_prefix(prefix: &str) -> QueueKeys {
        QueueKeys {
            stream: format!("{prefix}:events"),
            group: format!("{prefix}:workers"),
            dead_letters: format!("{prefix}:dead-letters"),
        }
    }
}

impl Default for QueueKeys {
    fn default() -> QueueKeys {
        QueueKeys::with_prefix(QueueKeys::DEFAULT_PREFIX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis cannot be reached or refused a command: callers answer 503 and retry later.
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
}

impl From<::redis::RedisError> for QueueError {
    fn from(err: ::redis::RedisError) -> QueueError {
        QueueError::Unavailable(err.to_string())
    }
}

/// An entry of the dead-letter stream, as `GET /dead-letters` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The dead-letter entry's own id.
    pub id: String,
    /// The id the entry had in the events stream.
    pub original_id: String,
    /// Why it could not be stored (the last error, or why it could not be decoded).
    pub reason: String,
    /// How many times storing it was tried (0 when it could not even be decoded).
    pub attempts: u64,
    pub failed_at_ms: i64,
    /// The event as JSON (`id`, `type`, `timestamp`, ...) when the payload decodes.
    pub event: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_and_entry_ids_round_trip() {
        for (id, seq) in [
            ("0-0", 0),
            ("0-1", 1),
            ("1-0", 1 << 20),
            ("1700000000123-7", 1_700_000_000_123 << 20 | 7),
            ("1700000000123-1048575", 1_700_000_000_123 << 20 | 1_048_575),
        ] {
            assert_eq!(seq_of(id), Some(seq), "{id}");
            assert_eq!(entry_id_of(seq), id);
        }
        // Order is kept: a later id is a larger seq.
        assert!(seq_of("5-1048575") < seq_of("6-0"));
        let ms = 1_760_000_000_000u64;
        assert_eq!(seq_of(&entry_id_of(ms << 20 | 3)), Some(ms << 20 | 3));
    }

    #[test]
    fn malformed_entry_ids_have_no_seq() {
        for id in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-a",
            "1-1048576",
            "1--1",
            "+1-1",
            "17592186044416-0",
            "99999999999999999999999-0",
        ] {
            assert_eq!(seq_of(id), None, "{id}");
        }
        assert_eq!(seq_of("17592186044415-0"), Some(u64::MAX >> 20 << 20));
    }

    #[test]
    fn keys_share_the_prefix() {
        let keys = QueueKeys::with_prefix("t1");
        assert_eq!(keys.stream, "t1:events");
        assert_eq!(keys.group, "t1:workers");
        assert_eq!(keys.dead_letters, "t1:dead-letters");
    }
}
