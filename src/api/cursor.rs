//! The paging cursor of `GET /events`: where a walk stands, signed with the deployment's
//! secret (HMAC-SHA256) so that a client cannot forge one (a made-up snapshot or position),
//! and every API node sharing the store accepts the cursors of every other.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{EventFilter, Order, Position};

/// Bytes of the signature kept in a cursor: 128 bits, out of reach of guessing.
const TAG_BYTES: usize = 16;
/// Bytes of the cursor's fields: timestamp, seq, snapshot and filter fingerprint.
const FIELD_BYTES: usize = 32;

/// Where a cursor walk stands: the last event returned and the snapshot (highest seq) the
/// walk is pinned to, so events arriving during the walk neither appear nor shift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub position: Position,
    /// `None` when reads are not pinned to a position (a cluster's API node): the walk then
    /// sees what is stored when each page is read.
    pub snapshot_seq: Option<u64>,
    /// Fingerprint of the filters and order the walk began with.
    fingerprint: u64,
}

impl Cursor {
    pub fn new(
        position: Position,
        snapshot_seq: Option<u64>,
        filter: &EventFilter,
        order: Order,
    ) -> Self {
        Cursor {
            position,
            snapshot_seq,
            fingerprint: fingerprint(filter, order),
        }
    }

    /// Whether the walk began with these filters and this order.
    pub fn belongs_to(&self, filter: &EventFilter, order: Order) -> bool {
        self.fingerprint == fingerprint(filter, order)
    }

    fn fields(&self) -> [u8; FIELD_BYTES] {
        let mut bytes = [0; FIELD_BYTES];
        bytes[0..8].copy_from_slice(&self.position.timestamp_ms.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.position.seq.to_be_bytes());
        // No seq reaches u64::MAX (seqs are below 2^63): it stands for "not pinned".
        bytes[16..24].copy_from_slice(&self.snapshot_seq.unwrap_or(u64::MAX).to_be_bytes());
        bytes[24..32].copy_from_slice(&self.fingerprint.to_be_bytes());
        bytes
    }
}

/// Why a cursor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not the shape of a cursor at all (cut short, altered characters).
    Malformed,
    /// Shaped like a cursor, but not signed with this deployment's secret.
    Forged,
}

/// Signs and checks cursors with the deployment's secret.
pub struct CursorKey {
    mac: Hmac<Sha256>,
}

impl CursorKey {
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }

    fn tag(&self, fields: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(fields);
        let full = mac.finalize().into_bytes();
        full[..TAG_BYTES]
            .try_into()
            .expect("SHA-256 gives 32 bytes")
    }

    /// The cursor as lower-case hex: its fields, then their signature.
    pub fn encode(&self, cursor: &Cursor) -> String {
        let fields = cursor.fields();
        let mut text = String::with_capacity(2 * (FIELD_BYTES + TAG_BYTES));
        for byte in fields.iter().chain(self.tag(&fields).iter()) {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }

    pub fn decode(&self, text: &str) -> Result<Cursor, CursorError> {
        if text.len() != 2 * (FIELD_BYTES + TAG_BYTES) || !text.is_ascii() {
            return Err(CursorError::Malformed);
        }
        let bytes: Vec<u8> = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| CursorError::Malformed)?;
        let (fields, tag) = bytes.split_at(FIELD_BYTES);
        let mut mac = self.mac.clone();
        mac.update(fields);
        // Constant time: how much of a guess was right must not show in the timing.
        mac.verify_truncated_left(tag)
            .map_err(|_| CursorError::Forged)?;
        let word = |i: usize| u64::from_be_bytes(fields[i * 8..i * 8 + 8].try_into().unwrap());
        Ok(Cursor {
            position: Position {
                timestamp_ms: word(0) as i64,
                seq: word(1),
            },
            snapshot_seq: Some(word(2)).filter(|&seq| seq != u64::MAX),
            fingerprint: word(3),
        })
    }
}

/// FNV-1a over the filters: stable across restarts and processes (unlike std's keyed
/// hashers), so a cursor stays valid on another node and after a restart.
fn fingerprint(filter: &EventFilter, order: Order) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes.iter().chain([0xff].iter()) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for text in [&filter.kind, &filter.service, &filter.user_id] {
        feed(text.as_deref().map_or(b"\x00none", str::as_bytes));
    }
    for bound in [filter.from_ms, filter.to_ms] {
        feed(&bound.map_or([0xfe; 9], |b| {
            let mut bytes = [0; 9];
            bytes[..8].copy_from_slice(&b.to_le_bytes());
            bytes
        }));
    }
    feed(if order == Order::Desc {
        b"desc"
    } else {
        b"asc"
    });
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        let filter = EventFilter {
            kind: Some("signup".into()),
            ..Default::default()
        };
        let position = Position {
            timestamp_ms: -1_700_000_000_000,
            seq: 42,
        };
        Cursor::new(position, Some(99), &filter, Order::Desc)
    }

    #[test]
    fn cursors_round_trip_under_their_key_only() {
        let key = CursorKey::new(b"one deployment");
        let text = key.encode(&cursor());
        assert_eq!(text.len(), 96);
        assert_eq!(key.decode(&text), Ok(cursor()));
        let other = CursorKey::new(b"another deployment");
        assert_eq!(other.decode(&text), Err(CursorError::Forged));
    }

    #[test]
    fn altered_cursors_are_refused_as_forged_or_malformed() {
        let key = CursorKey::new(b"one deployment");
        let text = key.encode(&cursor());
        // A later snapshot, made up: the fields change, the signature does not follow.
        let mut forged = text.clone().into_bytes();
        forged[47] = if forged[47] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            key.decode(std::str::from_utf8(&forged).unwrap()),
            Err(CursorError::Forged)
        );
        assert_eq!(key.decode(&text[..95]), Err(CursorError::Malformed));
        assert_eq!(
            key.decode(&format!("{}zz", &text[..94])),
            Err(CursorError::Malformed)
        );
        assert_eq!(key.decode(""), Err(CursorError::Malformed));
    }
}
