//! How the events tables hold ids: an id written as a UUID in its canonical form (36
//! lowercase hex digits and dashes: every server id, and the message ids the Segment and
//! PostHog SDKs send) as its 16 bytes, any other id as its text, exactly as it came.
//!
//! The unique id index is the events table's largest, and client ids (random UUIDv4s) land
//! all over it: each index batch rewrites a page of it for nearly every event. Keys of 16
//! bytes instead of 36 make the index less than half as large, so fewer pages per batch
//! (measured with 20,000,000 events stored: 21.5 µs of CPU per event with a client id
//! against 28.0 µs; alike at 5,000,000).
//!
//! Partitions created before ids were packed keep them as text (`packed_ids = 0` in the
//! `partitions` table): a partition holds each id in one form only, so that its unique
//! index still refuses a second copy.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::ToSql;
use uuid::Uuid;

/// An id as an events table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredId<'a> {
    Packed([u8; 16]),
    Text(&'a str),
}

impl<'a> StoredId<'a> {
    /// `id` as a partition holds it, to store it or to look it up: packed if the partition
    /// packs ids and `id` is a canonical UUID.
    pub fn new(id: &'a str, packed: bool) -> StoredId<'a> {
        match packed.then(|| canonical_uuid(id)).flatten() {
            Some(uuid) => StoredId::Packed(uuid.into_bytes()),
            None => StoredId::Text(id),
        }
    }
}

impl ToSql for StoredId<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            StoredId::Packed(bytes) => ValueRef::Blob(bytes),
            StoredId::Text(text) => ValueRef::Text(text.as_bytes()),
        }))
    }
}

/// The id held in column `index` of `row`, as the client or the server wrote it.
pub(super) fn read(row: &rusqlite::Row, index: usize) -> rusqlite::Result<String> {
    if let ValueRef::Blob(bytes) = row.get_ref(index)? {
        if let Ok(bytes) = <[u8; 16]>::try_from(bytes) {
            let mut text = [0; 36];
            return Ok(Uuid::from_bytes(bytes)
                .hyphenated()
                .encode_lower(&mut text)
                .to_owned());
        }
    }
    // Text, or an error naming the column and the type found.
    row.get(index)
}

/// `id` as a UUID if it is one in the canonical form, which is then exactly what reading it
/// back writes. Of 36 bytes, the parser takes only the hyphenated form (`8-4-4-4-12` hex
/// digits), so lowercase digits are all that is left to ask: no need to write it again to
/// compare, once per event stored.
fn canonical_uuid(id: &str) -> Option<Uuid> {
    if id.len() != 36 || id.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    Uuid::try_parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn round_trip(id: &str, packed: bool) -> (String, &'static str) {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .query_row(
                "SELECT ?1, typeof(?1)",
                [StoredId::new(id, packed)],
                |row| Ok((read(row, 0)?, row.get::<_, String>(1)?)),
            )
            .map(|(id, kind)| (id, if kind == "blob" { "blob" } else { "text" }))
            .unwrap()
    }

    #[test]
    fn canonical_uuids_are_packed_and_read_back_as_written() {
        for id in [
            "0190f1a2-7b3c-7d4e-8f50-123456789abc",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            assert_eq!(round_trip(id, true), (id.to_owned(), "blob"));
            assert_eq!(round_trip(id, false), (id.to_owned(), "text"), "{id}");
        }
    }

    #[test]
    fn other_ids_stay_text_exactly_as_sent() {
        for id in [
            "0190F1A2-7B3C-7D4E-8F50-123456789ABC",
            "0190f1a27b3c7d4e8f50123456789abc",
            "{0190f1a2-7b3c-7d4e-8f50-123456789abc}",
            "urn:uuid:0190f1a2-7b3c-7d4e-8f50-123456789abc",
            "0190f1a2-7b3c-7d4e-8f50-123456789abg",
            "0190f1a2_7b3c_7d4e_8f50_123456789abc",
            "0190f1a2-7b3c-7d4e-8f50123456789abc-",
            "order-17",
            "",
            "é0190f1a-7b3c-7d4e-8f50-123456789abc",
        ] {
            assert_eq!(round_trip(id, true), (id.to_owned(), "text"), "{id}");
        }
    }

    #[test]
    fn a_blob_of_another_size_is_an_error_not_an_id() {
        let connection = Connection::open_in_memory().unwrap();
        let result = connection.query_row("SELECT x'0102'", [], |row| read(row, 0));
        assert!(result.is_err());
    }
}
