//! One request's events on their way into the queue: given their ids, encoded in the
//! [`crate::record`] format by the request handler (off the single writer thread), with the
//! hashes deduplication compares.

use std::ops::Range;

use super::ids;
use crate::event::NewEvent;
use crate::record;

/// Events of one request, encoded and ready to publish.
pub struct PreparedBatch {
    received_at_ms: i64,
    payloads: Vec<u8>,
    events: Vec<PreparedEvent>,
}

pub(crate) struct PreparedEvent {
    payload: Range<usize>,
    /// For an event with a client id: the id's hash and the content's
    /// ([`record::content_hash`]).
    pub(crate) client: Option<(u128, u64)>,
}

/// What publishing set aside of a batch: events whose client id was accepted before.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Repeats of an accepted event (same id, same content).
    pub duplicates: usize,
    /// Events with an accepted id but other content: the first version stays.
    pub conflicts: usize,
}

impl PreparedBatch {
    pub fn new(received_at_ms: i64, capacity: usize) -> Self {
        PreparedBatch {
            received_at_ms,
            payloads: Vec::with_capacity(capacity * 256),
            events: Vec::with_capacity(capacity),
        }
    }

    /// Adds `event` under `id` (the client's, or a server id when it sent none).
    pub fn push(&mut self, event: &NewEvent, id: &str) {
        let start = self.payloads.len();
        record::encode_payload(&mut self.payloads, event, id, self.received_at_ms);
        let payload = start..self.payloads.len();
        let client = event.id.as_deref().map(|id| {
            let content = &self.payloads[payload.clone()];
            (
                ids::client_id_hash(id),
                record::content_hash(content, id, event.timestamp_sent),
            )
        });
        self.events.push(PreparedEvent { payload, client });
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn received_at_ms(&self) -> i64 {
        self.received_at_ms
    }

    /// Each event's encoded payload, in order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.events.iter().map(|event| self.payload(event))
    }

    pub(crate) fn events(&self) -> &[PreparedEvent] {
        &self.events
    }

    pub(crate) fn payload(&self, event: &PreparedEvent) -> &[u8] {
        &self.payloads[event.payload.clone()]
    }
}
