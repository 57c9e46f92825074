//! The event: what a client sends ([`parse`] turns raw JSON into a validated [`NewEvent`]),
//! and what the store keeps and returns ([`StoredEvent`]).

pub mod parse;
pub mod render;
pub mod sdk;
pub mod timefmt;

/// A validated event as a client sent it, before it is given a sequence number.
///
/// Produced only by [`parse`]; nothing downstream re-checks these fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The client's idempotency key, if it sent one.
    pub id: Option<String>,
    /// The event's `type` (a Rust keyword, hence the name).
    pub kind: String,
    /// Event time in UTC epoch milliseconds (the time of receipt when the client sent none).
    pub timestamp_ms: i64,
    /// Whether the client sent the timestamp: one it did not send differs on a retry, so it
    /// is not part of what makes a retry the same event (see [`crate::ingest::dedup`]).
    pub timestamp_sent: bool,
    pub service: Option<String>,
    pub user_id: Option<String>,
    pub message: Option<String>,
    /// The metadata object exactly as the client wrote it (JSON text).
    pub metadata: Option<String>,
}

/// An event as stored: the client's fields plus what the server assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Store-wide, strictly increasing position.
    pub seq: u64,
    /// The client's idempotency key, or a server-generated UUIDv7.
    pub id: String,
    /// Whether `id` came from the client (only those take part in deduplication).
    pub id_from_client: bool,
    pub kind: String,
    pub timestamp_ms: i64,
    pub received_at_ms: i64,
    pub service: Option<String>,
    pub user_id: Option<String>,
    pub message: Option<String>,
    pub metadata: Option<String>,
}
