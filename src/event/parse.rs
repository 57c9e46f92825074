//! Turns a request body (one JSON value or NDJSON lines) into validated [`NewEvent`]s, one
//! result per event, so that a bad event is reported without failing the rest of the batch.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::timefmt;
use super::NewEvent;

pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024; // after decompression (checked by the caller)

pub const MAX_TYPE_CHARS: usize = 100;
pub const MAX_SERVICE_CHARS: usize = 100;
pub const MAX_USER_ID_CHARS: usize = 256;
pub const MAX_MESSAGE_CHARS: usize = 2_000;
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_METADATA_DEPTH: usize = 10;
/// How far ahead of the time of receipt an event may be: allows for clients' clock skew.
pub const MAX_FUTURE_MS: i64 = 24 * 60 * 60 * 1000;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why one event was refused. `field` is the key as the client wrote it (an alias such as
/// `eventType` stays so), or "" when the error is about the whole event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        FieldError::new("", message)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.field, self.message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not valid JSON (single object or array body). line/column from serde_json (1-based line).
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    /// More than MAX_EVENTS_PER_REQUEST events.
    TooManyEvents { count_at_least: usize },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed {
                line,
                column,
                reason,
            } => write!(f, "malformed JSON at line {line} column {column}: {reason}"),
            BodyError::TooManyEvents { count_at_least } => write!(
                f,
                "too many events: at least {count_at_least}, at most {MAX_EVENTS_PER_REQUEST} are allowed per request"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// One event's outcome. `index` is its position in the array, or its line number (from 0)
/// in NDJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub index: usize,
    pub result: Result<NewEvent, FieldError>,
}

/// Splits and parses a body. `now_ms`: the time of receipt (injected clock), used as the
/// default timestamp and for the future check.
///
/// The caller has already limited `body` to [`MAX_BODY_BYTES`].
pub fn parse_body(body: &[u8], format: BodyFormat, now_ms: i64) -> Result<Vec<Item>, BodyError> {
    let (body, bom_len) = match body.strip_prefix(BOM) {
        Some(rest) => (rest, BOM.len()),
        None => (body, 0),
    };
    match format {
        BodyFormat::Json => parse_json_body(body, bom_len, now_ms),
        BodyFormat::Ndjson => parse_ndjson_body(body, now_ms),
    }
}

/// Parses one JSON value's text as an event (the text is known to be syntactically valid
/// JSON; if it is not, that is reported as an invalid event).
pub fn parse_event(raw: &str, now_ms: i64) -> Result<NewEvent, FieldError> {
    parse_event_text(raw, now_ms).unwrap_or_else(|e| Err(invalid_json(&e)))
}

fn parse_json_body(body: &[u8], bom_len: usize, now_ms: i64) -> Result<Vec<Item>, BodyError> {
    // Validating up front lets serde_json take the faster `&str` path and borrow strings.
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = position_of(body, e.valid_up_to(), bom_len);
        BodyError::Malformed {
            line,
            column,
            reason: "invalid UTF-8".to_owned(),
        }
    })?;
    if first_non_whitespace(text) != Some(b'[') {
        let result = parse_event_text(text, now_ms).map_err(|e| malformed(&e, bom_len))?;
        return Ok(vec![Item { index: 0, result }]);
    }

    let mut too_many = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let elements = de
        .deserialize_seq(ElementsVisitor {
            too_many: &mut too_many,
        })
        .and_then(|elements| de.end().map(|()| elements));
    let elements = match elements {
        Ok(elements) => elements,
        Err(_) if too_many => {
            return Err(BodyError::TooManyEvents {
                count_at_least: MAX_EVENTS_PER_REQUEST + 1,
            })
        }
        Err(e) => return Err(malformed(&e, bom_len)),
    };
    Ok(elements
        .into_iter()
        .enumerate()
        .map(|(index, raw)| Item {
            index,
            result: parse_event(raw.get(), now_ms),
        })
        .collect())
}

/// Collects an array's elements unparsed, giving up as soon as there are too many so that a
/// huge array of tiny elements costs neither time nor memory.
struct ElementsVisitor<'f> {
    too_many: &'f mut bool,
}

impl<'de> Visitor<'de> for ElementsVisitor<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if elements.len() == MAX_EVENTS_PER_REQUEST {
                *self.too_many = true;
                return Err(de::Error::custom("too many events"));
            }
            elements.push(raw);
        }
        Ok(elements)
    }
}

fn parse_ndjson_body(body: &[u8], now_ms: i64) -> Result<Vec<Item>, BodyError> {
    let lines = || {
        body.split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
    };
    // Counting is a plain byte scan, far cheaper than parsing events only to refuse them.
    let count = lines().take(MAX_EVENTS_PER_REQUEST + 1).count();
    if count > MAX_EVENTS_PER_REQUEST {
        return Err(BodyError::TooManyEvents {
            count_at_least: count,
        });
    }
    let mut items = Vec::with_capacity(count);
    items.extend(lines().map(|(index, line)| Item {
        index,
        result: parse_ndjson_line(line.strip_suffix(b"\r").unwrap_or(line), now_ms),
    }));
    Ok(items)
}

fn parse_ndjson_line(line: &[u8], now_ms: i64) -> Result<NewEvent, FieldError> {
    let text = std::str::from_utf8(line).map_err(|e| {
        FieldError::whole(format!("invalid UTF-8 at column {}", e.valid_up_to() + 1))
    })?;
    parse_event(text, now_ms)
}

/// Parses one event, checking the JSON syntax in the same pass: the outer error is a syntax
/// error, the inner one an invalid event.
fn parse_event_text(
    text: &str,
    now_ms: i64,
) -> Result<Result<NewEvent, FieldError>, serde_json::Error> {
    if first_non_whitespace(text) != Some(b'{') {
        serde_json::from_str::<IgnoredAny>(text)?;
        return Ok(Err(FieldError::whole("event must be a JSON object")));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(EventVisitor)?;
    de.end()?;
    Ok(fields.into_event(now_ms))
}

fn first_non_whitespace(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn malformed(e: &serde_json::Error, bom_len: usize) -> BodyError {
    // serde_json counts columns in bytes of what it was given, which starts after the BOM.
    let column = if e.line() == 1 {
        e.column() + bom_len
    } else {
        e.column()
    };
    BodyError::Malformed {
        line: e.line(),
        column,
        reason: reason(e),
    }
}

fn invalid_json(e: &serde_json::Error) -> FieldError {
    FieldError::whole(format!("invalid JSON: {} at column {}", reason(e), e.column()))
}

/// serde_json's message without the " at line L column C" it appends.
fn reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(reason) => reason.to_owned(),
        None => full,
    }
}

/// 1-based line and byte column of `offset`, counted the way serde_json does.
fn position_of(body: &[u8], offset: usize, bom_len: usize) -> (usize, usize) {
    let before = &body[..offset];
    match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => (
            1 + before.iter().filter(|&&b| b == b'\n').count(),
            offset - nl,
        ),
        None => (1, offset + 1 + bom_len),
    }
}

// --- One event -------------------------------------------------------------------------

/// The fields of [`NewEvent`], as places a key's value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Type,
    Timestamp,
    Service,
    UserId,
    Message,
    Metadata,
    Id,
}

const SLOTS: usize = 7;

/// Every accepted top-level key with its slot; the first key of each slot is its canonical name.
const KEYS: [(&str, Slot); 13] = [
    ("type", Slot::Type),
    ("eventType", Slot::Type),
    ("event_type", Slot::Type),
    ("event", Slot::Type),
    ("timestamp", Slot::Timestamp),
    ("service", Slot::Service),
    ("source", Slot::Service),
    ("user_id", Slot::UserId),
    ("userId", Slot::UserId),
    ("message", Slot::Message),
    ("metadata", Slot::Metadata),
    ("properties", Slot::Metadata),
    ("id", Slot::Id),
];

/// A top-level key: an index into [`KEYS`], or a name no event has.
enum Key {
    Known(usize),
    Unknown(String),
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        // A `match` compiles to length-then-bytes comparisons; no allocation for known keys.
        let known = match s {
            "type" => 0,
            "eventType" => 1,
            "event_type" => 2,
            "event" => 3,
            "timestamp" => 4,
            "service" => 5,
            "source" => 6,
            "user_id" => 7,
            "userId" => 8,
            "message" => 9,
            "metadata" => 10,
            "properties" => 11,
            "id" => 12,
            _ => return Ok(Key::Unknown(s.to_owned())),
        };
        Ok(Key::Known(known))
    }
}

impl<'de> DeserializeSeed<'de> for KeyVisitor {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

/// A top-level value, reduced to what validation needs. Strings borrow from the body when
/// they contain no escapes.
#[derive(Debug)]
enum Val<'de> {
    Null,
    Str(Cow<'de, str>),
    Num(f64),
    /// A boolean, array or object where none is wanted.
    Other,
    /// Metadata: the exact text, checked later.
    Raw(&'de RawValue),
}

struct ValVisitor;

impl<'de> DeserializeSeed<'de> for ValVisitor {
    type Value = Val<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    // Numbers beyond 2^53 lose precision as f64, but every such timestamp is out of range anyway.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Val<'de>, E> {
        Ok(Val::Num(n as f64))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Val<'de>, E> {
        Ok(Val::Num(n as f64))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Val<'de>, E> {
        Ok(Val::Num(n))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }
}

/// What the top-level object held, before validation.
#[derive(Default)]
struct Fields<'de> {
    /// Per slot: the index into [`KEYS`] of the key that gave the value, and the value.
    values: [Option<(usize, Val<'de>)>; SLOTS],
    /// The first structural problem (unknown, duplicate or conflicting key), in document order.
    error: Option<FieldError>,
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    /// Reads every entry even after a problem is found, so that a syntax error later in the
    /// text still wins: the caller must be able to tell broken JSON from a bad event.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        let mut seen = 0u16;
        while let Some(key) = map.next_key_seed(KeyVisitor)? {
            if fields.error.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let k = match key {
                Key::Known(k) => k,
                Key::Unknown(name) => {
                    fields.error = Some(FieldError::new(name, "unknown field"));
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let (name, slot) = KEYS[k];
            if seen & (1 << k) != 0 {
                fields.error = Some(FieldError::new(name, "duplicate key"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            seen |= 1 << k;
            let val = if slot == Slot::Metadata {
                // Metadata is kept as the client's exact text, so take it unparsed.
                let raw: &'de RawValue = map.next_value()?;
                if raw.get() == "null" {
                    Val::Null
                } else {
                    Val::Raw(raw)
                }
            } else {
                map.next_value_seed(ValVisitor)?
            };
            let entry = &mut fields.values[slot as usize];
            match entry {
                // Two aliases of one field: refuse rather than guess, unless one is null (absent).
                Some((other, prev)) if !matches!(prev, Val::Null) => {
                    if !matches!(val, Val::Null) {
                        let message = format!("conflicts with \"{}\"", KEYS[*other].0);
                        fields.error = Some(FieldError::new(name, message));
                    }
                }
                _ => *entry = Some((k, val)),
            }
        }
        Ok(fields)
    }
}

impl<'de> Fields<'de> {
    /// The slot's key name and value, with null treated as absent.
    fn take(&mut self, slot: Slot) -> Option<(&'static str, Val<'de>)> {
        match self.values[slot as usize].take() {
            Some((_, Val::Null)) | None => None,
            Some((k, val)) => Some((KEYS[k].0, val)),
        }
    }

    fn present(&self, slot: Slot) -> bool {
        matches!(&self.values[slot as usize], Some((_, v)) if !matches!(v, Val::Null))
    }

    fn into_event(mut self, now_ms: i64) -> Result<NewEvent, FieldError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let kind = match self.take(Slot::Type) {
            Some(entry) => string(entry, 1, MAX_TYPE_CHARS)?,
            // The log shape: structured log lines carry no type of their own.
            None if self.present(Slot::Service) && self.present(Slot::Message) => "log".to_owned(),
            None => return Err(FieldError::new("type", "is required")),
        };
        let timestamp_ms = match self.take(Slot::Timestamp) {
            None => now_ms,
            Some((name, val)) => timestamp(val, now_ms).map_err(|m| FieldError::new(name, m))?,
        };
        let service = optional_string(self.take(Slot::Service), 0, MAX_SERVICE_CHARS)?;
        let user_id = optional_string(self.take(Slot::UserId), 0, MAX_USER_ID_CHARS)?;
        let message = optional_string(self.take(Slot::Message), 0, MAX_MESSAGE_CHARS)?;
        let metadata = match self.take(Slot::Metadata) {
            None => None,
            Some((name, val)) => Some(metadata(val).map_err(|m| FieldError::new(name, m))?),
        };
        let id = optional_string(self.take(Slot::Id), 1, MAX_ID_CHARS)?;
        Ok(NewEvent {
            id,
            kind,
            timestamp_ms,
            service,
            user_id,
            message,
            metadata,
        })
    }
}

fn optional_string(
    entry: Option<(&'static str, Val<'_>)>,
    min: usize,
    max: usize,
) -> Result<Option<String>, FieldError> {
    entry.map(|entry| string(entry, min, max)).transpose()
}

/// A string of `min..=max` chars (Unicode scalar values), `min` being 0 or 1.
fn string(
    (name, val): (&'static str, Val<'_>),
    min: usize,
    max: usize,
) -> Result<String, FieldError> {
    let Val::Str(s) = val else {
        return Err(FieldError::new(name, "must be a string"));
    };
    // A UTF-8 string has at most as many chars as bytes, so counting is rarely needed.
    let too_long = s.len() > max && s.chars().count() > max;
    if too_long || (min > 0 && s.is_empty()) {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min}-{max} characters")
        };
        return Err(FieldError::new(name, message));
    }
    Ok(s.into_owned())
}

fn timestamp(val: Val<'_>, now_ms: i64) -> Result<i64, String> {
    let ms = match val {
        Val::Str(s) => timefmt::parse_rfc3339_ms(&s)?,
        Val::Num(n) => timefmt::epoch_number_to_ms(n)?,
        _ => {
            return Err(
                "must be an RFC 3339 string or a number of epoch seconds or milliseconds"
                    .to_owned(),
            )
        }
    };
    if ms.saturating_sub(now_ms) > MAX_FUTURE_MS {
        return Err("is more than 24 h in the future".to_owned());
    }
    Ok(ms)
}

fn metadata(val: Val<'_>) -> Result<String, String> {
    let Val::Raw(raw) = val else {
        return Err("must be a JSON object".to_owned());
    };
    let text = raw.get();
    if !text.starts_with('{') {
        return Err("must be a JSON object".to_owned());
    }
    if text.len() > MAX_METADATA_BYTES {
        return Err(format!("must be at most {MAX_METADATA_BYTES} bytes"));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(Walker { depth: 1 }).map_err(|e| {
        if e.is_data() {
            reason(&e)
        } else {
            // Only number overflow gets here: the text already passed serde_json's scan.
            format!("invalid JSON: {}", reason(&e))
        }
    })?;
    Ok(text.to_owned())
}

/// Walks metadata to enforce the nesting limit and unique keys. `depth` is the level the
/// value would be at if it is an object or array (the metadata object itself is 1).
///
/// It stops at the first level too deep, so its own recursion stays shallow.
#[derive(Clone, Copy)]
struct Walker {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walker {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker {
    fn enter<E: de::Error>(&self) -> Result<Walker, E> {
        if self.depth > MAX_METADATA_DEPTH {
            return Err(E::custom(format!(
                "nesting deeper than {MAX_METADATA_DEPTH} levels"
            )));
        }
        Ok(Walker {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Walker {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(CowKey)? {
            if let Some(key) = keys.insert(key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A metadata key, borrowed from the body unless it had escapes.
struct CowKey;

impl<'de> DeserializeSeed<'de> for CowKey {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowKey {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// The keys of one object. Typical metadata has a handful, where a linear scan beats
/// hashing; past that a set keeps a 16 KiB object of tiny keys from going quadratic.
#[derive(Default)]
struct KeySet<'de> {
    small: Vec<Cow<'de, str>>,
    large: HashSet<Cow<'de, str>>,
}

impl<'de> KeySet<'de> {
    const SMALL: usize = 16;

    /// Adds `key`, or hands it back if it was already there.
    fn insert(&mut self, key: Cow<'de, str>) -> Option<Cow<'de, str>> {
        if self.large.is_empty() {
            if self.small.contains(&key) {
                return Some(key);
            }
            if self.small.len() < Self::SMALL {
                self.small.push(key);
                return None;
            }
            self.large.extend(self.small.drain(..));
        }
        if self.large.contains(&key) {
            return Some(key);
        }
        self.large.insert(key);
        None
    }
}

