//! Picking Redis replies apart: entries, fields and payloads moved out of the raw [`Value`]s
//! without another copy and without a typed layer per command. Lenient: whatever does not
//! have the expected shape is skipped, not a panic.

use redis::Value;

use super::seq_of_bytes;

/// The field of a stream entry that holds the event payload.
pub(super) const PAYLOAD_FIELD: &str = "e";

/// One entry read by the worker: its id as Redis spelled it (what XACK takes back), its seq
/// (`None` if the id is beyond the seq range) and its payload (`None` if it has no `e` field).
#[derive(Debug)]
pub struct Entry {
    pub id: Vec<u8>,
    pub seq: Option<u64>,
    pub payload: Option<Vec<u8>>,
    /// Deleted from the stream while pending: XREADGROUP of a pending list answers such an
    /// entry with its id and no fields. There is nothing to store.
    pub deleted: bool,
}

impl Entry {
    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

pub(super) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// The elements of an array (or set) reply; nothing for nil and anything else.
pub(super) fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// Field names and values of a reply, in order.
pub(super) type Fields = Vec<(Vec<u8>, Value)>;

/// A field/value reply: a RESP3 map, or a RESP2 flat array `[k1, v1, k2, v2, ...]`.
pub(super) fn pairs(value: Value) -> Fields {
    match value {
        Value::Map(map) => map
            .into_iter()
            .filter_map(|(k, v)| Some((bytes(k)?, v)))
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = bytes(k) {
                    out.push((k, v));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

pub(super) fn field<'a>(fields: &'a [(Vec<u8>, Value)], name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v)
}

pub(super) fn field_u64(fields: &[(Vec<u8>, Value)], name: &str) -> Option<u64> {
    field(fields, name).and_then(int)
}

pub(super) fn field_str(fields: &[(Vec<u8>, Value)], name: &str) -> Option<String> {
    field(fields, name)
        .cloned()
        .and_then(bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub(super) fn field_bytes<'a>(fields: &'a [(Vec<u8>, Value)], name: &str) -> Option<&'a [u8]> {
    match field(fields, name)? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]` as `(id, fields)`.
pub(super) fn raw_entries(reply: Value) -> Vec<(Vec<u8>, Fields)> {
    list(reply)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = list(entry).into_iter();
            let id = bytes(parts.next()?)?;
            let fields = parts.next().map(pairs).unwrap_or_default();
            Some((id, fields))
        })
        .collect()
}

/// Stream entries with their payload moved out of the reply (no copy).
pub(super) fn entries(reply: Value) -> Vec<Entry> {
    list(reply)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = list(entry).into_iter();
            let id = bytes(parts.next()?)?;
            let fields = parts.next().unwrap_or_default();
            let deleted = matches!(fields, Value::Nil);
            Some(Entry {
                seq: seq_of_bytes(&id),
                id,
                payload: take_payload(fields),
                deleted,
            })
        })
        .collect()
}

/// The `e` field of an entry's field list, moved out.
pub(super) fn take_payload(fields: Value) -> Option<Vec<u8>> {
    let items = match fields {
        Value::Array(items) => items,
        Value::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        let is_payload = match &k {
            Value::BulkString(name) => name == PAYLOAD_FIELD.as_bytes(),
            Value::SimpleString(name) => name == PAYLOAD_FIELD,
            _ => false,
        };
        if is_payload {
            return bytes(v);
        }
    }
    None
}

/// The entries of an XREAD/XREADGROUP reply on one stream: `[[stream, entries]]` in RESP2,
/// `{stream: entries}` in RESP3, nil on timeout.
pub(super) fn stream_entries(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Map(map) => map
            .into_iter()
            .next()
            .map(|(_, e)| entries(e))
            .unwrap_or_default(),
        Value::Array(streams) => streams
            .into_iter()
            .next()
            .and_then(|stream| list(stream).into_iter().nth(1))
            .map(entries)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

pub(super) fn seq_payloads(entries: Vec<Entry>) -> Vec<(u64, Vec<u8>)> {
    entries
        .into_iter()
        .filter_map(|e| Some((e.seq?, e.payload?)))
        .collect()
}
