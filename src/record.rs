//! Binary encoding of an event in the durable log.
//!
//! A request handler encodes each event's payload once (everything but the `seq`, which only
//! the single log writer may assign); the writer frames it as
//! `[payload_len u32][crc32 u32][seq u64][payload]`, the CRC covering seq and payload, so a
//! torn or corrupted tail is detected at recovery.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::event::{NewEvent, StoredEvent};

/// Bytes before the payload in a frame: length, checksum, seq.
pub const FRAME_HEADER: usize = 4 + 4 + 8;

const ID_FROM_CLIENT: u8 = 1;
const HAS_SERVICE: u8 = 1 << 1;
const HAS_USER_ID: u8 = 1 << 2;
const HAS_MESSAGE: u8 = 1 << 3;
const HAS_METADATA: u8 = 1 << 4;

/// Appends the payload of `event` (with its assigned `id` and receipt time) to `out`.
pub fn encode_payload(out: &mut Vec<u8>, event: &NewEvent, id: &str, received_at_ms: i64) {
    let mut flags = 0;
    if event.id.is_some() {
        flags |= ID_FROM_CLIENT;
    }
    for (present, bit) in [
        (event.service.is_some(), HAS_SERVICE),
        (event.user_id.is_some(), HAS_USER_ID),
        (event.message.is_some(), HAS_MESSAGE),
        (event.metadata.is_some(), HAS_METADATA),
    ] {
        if present {
            flags |= bit;
        }
    }
    out.extend_from_slice(&event.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&received_at_ms.to_le_bytes());
    out.push(flags);
    put_str(out, id);
    put_str(out, &event.kind);
    for value in [
        &event.service,
        &event.user_id,
        &event.message,
        &event.metadata,
    ]
    .into_iter()
    .flatten()
    {
        put_str(out, value);
    }
}

/// A 64-bit hash of what the client sent of the event `encode_payload` wrote as `payload`
/// under the client id `id`: its type, service, user id, message and metadata text, and its
/// timestamp only if the client sent one (otherwise it is the time of receipt, which a retry
/// does not repeat). Never [`UNKNOWN_CONTENT`].
pub fn content_hash(payload: &[u8], id: &str, timestamp_sent: bool) -> u64 {
    // [timestamp 8][received_at 8][flags 1][id]: what follows is the client's, verbatim.
    let fields = &payload[8 + 8 + 1 + 4 + id.len()..];
    // The flags say which optional fields the rest holds, so that one field's value cannot
    // pass for another's.
    let mut seed = u64::from(payload[16]);
    if timestamp_sent {
        seed = xxh3_64_with_seed(&payload[..8], seed | 1 << 8);
    }
    match xxh3_64_with_seed(fields, seed) {
        UNKNOWN_CONTENT => 1,
        hash => hash,
    }
}

/// The content hash of an event whose content is not known (one remembered from the store).
pub const UNKNOWN_CONTENT: u64 = 0;

/// Appends a complete frame for `payload` at position `seq` to `out`.
pub fn write_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq_bytes = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq_bytes);
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// Reads the frame header at the start of `bytes`: `(payload_len, crc, seq)`.
pub fn read_header(bytes: &[u8; FRAME_HEADER]) -> (usize, u32, u64) {
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    (len, crc, seq)
}

/// Whether `crc` matches `seq` and `payload` as written by [`write_frame`].
pub fn checksum_matches(crc: u32, seq: u64, payload: &[u8]) -> bool {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize() == crc
}

/// Decodes a payload written by [`encode_payload`]; `None` if it is not well formed.
pub fn decode_payload(seq: u64, payload: &[u8]) -> Option<StoredEvent> {
    let mut reader = Reader { bytes: payload };
    let timestamp_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let received_at_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let flags = reader.take(1)?[0];
    let id = reader.string()?;
    let kind = reader.string()?;
    let mut optional = |bit: u8| -> Option<Option<String>> {
        if flags & bit != 0 {
            reader.string().map(Some)
        } else {
            Some(None)
        }
    };
    // The optional fields are read in the order they were written: the literal's order.
    Some(StoredEvent {
        seq,
        id,
        id_from_client: flags & ID_FROM_CLIENT != 0,
        kind,
        timestamp_ms,
        received_at_ms,
        service: optional(HAS_SERVICE)?,
        user_id: optional(HAS_USER_ID)?,
        message: optional(HAS_MESSAGE)?,
        metadata: optional(HAS_METADATA)?,
    })
}

/// The client id and receipt time of a payload, without decoding the rest.
pub fn client_id_of(payload: &[u8]) -> Option<(&str, i64)> {
    let mut reader = Reader { bytes: payload };
    reader.take(8)?;
    let received_at_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let flags = reader.take(1)?[0];
    let id = reader.str()?;
    (flags & ID_FROM_CLIENT != 0).then_some((id, received_at_ms))
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }
}

/// For tests: the bytes of a log holding one frame per `(seq, event)`, each event stored
/// under the id `{id_prefix}{seq}` and received at `received_at_ms`.
#[cfg(test)]
pub(crate) fn frames_of(
    events: impl IntoIterator<Item = (u64, NewEvent)>,
    id_prefix: &str,
    received_at_ms: i64,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, event) in events {
        let mut payload = Vec::new();
        encode_payload(
            &mut payload,
            &event,
            &format!("{id_prefix}{seq}"),
            received_at_ms,
        );
        write_frame(&mut out, seq, &payload);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: Option<&str>) -> NewEvent {
        NewEvent {
            id: id.map(str::to_owned),
            kind: "signup".into(),
            timestamp_ms: 1_700_000_000_123,
            timestamp_sent: true,
            service: None,
            user_id: Some("u-\u{e9}".into()),
            message: Some(String::new()),
            metadata: Some(r#"{"a":1.50}"#.into()),
        }
    }

    #[test]
    fn frames_round_trip() {
        let event = sample(Some("client-1"));
        let mut payload = Vec::new();
        encode_payload(&mut payload, &event, "client-1", 42);
        let mut frame = Vec::new();
        write_frame(&mut frame, 7, &payload);

        let (len, crc, seq) = read_header(frame[..FRAME_HEADER].try_into().unwrap());
        let body = &frame[FRAME_HEADER..];
        assert_eq!((len, seq), (payload.len(), 7));
        assert!(checksum_matches(crc, seq, body));
        let stored = decode_payload(seq, body).unwrap();
        assert_eq!(stored.id, "client-1");
        assert!(stored.id_from_client);
        assert_eq!(stored.kind, event.kind);
        assert_eq!(stored.timestamp_ms, event.timestamp_ms);
        assert_eq!(stored.received_at_ms, 42);
        assert_eq!(stored.service, None);
        assert_eq!(stored.user_id, event.user_id);
        assert_eq!(stored.message, Some(String::new()));
        assert_eq!(stored.metadata, event.metadata);
        assert_eq!(client_id_of(body), Some(("client-1", 42)));
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut payload = Vec::new();
        encode_payload(&mut payload, &sample(None), "server-id", 1);
        let mut frame = Vec::new();
        write_frame(&mut frame, 1, &payload);
        let (_, crc, seq) = read_header(frame[..FRAME_HEADER].try_into().unwrap());
        frame[FRAME_HEADER + 3] ^= 0x10;
        assert!(!checksum_matches(crc, seq, &frame[FRAME_HEADER..]));
        assert_eq!(
            client_id_of(&payload),
            None,
            "server ids are not client ids"
        );
    }

    #[test]
    fn content_hashes_cover_what_the_client_sent_and_only_that() {
        let hash = |event: &NewEvent, id: &str, received_at_ms: i64| {
            let mut payload = Vec::new();
            encode_payload(&mut payload, event, id, received_at_ms);
            content_hash(&payload, id, event.timestamp_sent)
        };
        let sent = sample(Some("c"));
        let base = hash(&sent, "c", 1);
        assert_ne!(base, UNKNOWN_CONTENT);
        // Not the receipt time, nor (being the same on a hit) the id.
        assert_eq!(hash(&sent, "c", 2), base);
        assert_eq!(hash(&sent, "another", 1), base);
        let mut unsent = sent.clone();
        unsent.timestamp_sent = false;
        let without_timestamp = hash(&unsent, "c", 1);
        assert_ne!(without_timestamp, base);
        unsent.timestamp_ms += 1;
        assert_eq!(
            hash(&unsent, "c", 1),
            without_timestamp,
            "a timestamp the client did not send is not its content"
        );
        let changed: [fn(&mut NewEvent); 7] = [
            |e| e.kind.push('!'),
            |e| e.timestamp_ms += 1,
            |e| e.service = Some(String::new()),
            |e| e.user_id = None,
            |e| e.message = None,
            |e| e.metadata = Some(r#"{"a":1.5}"#.into()),
            // The same text in another field.
            |e| (e.user_id, e.service) = (None, e.user_id.take()),
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut other = sent.clone();
            change(&mut other);
            assert_ne!(hash(&other, "c", 1), base, "change {i}");
        }
    }

    #[test]
    fn truncated_payloads_decode_to_none() {
        let mut payload = Vec::new();
        encode_payload(&mut payload, &sample(Some("x")), "x", 1);
        for cut in 0..payload.len() {
            assert!(decode_payload(1, &payload[..cut]).is_none(), "cut at {cut}");
        }
    }
}
