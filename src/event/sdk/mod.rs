//! Events in the shapes existing SDKs send: Segment's (which RudderStack's SDKs speak too),
//! PostHog's and OpenTelemetry's logs. Each call (or log record) is rewritten as an event in
//! Eventide's own shape, whose text [`super::parse`] then validates like any event sent to
//! `POST /events`: one set of rules for every way in.

pub mod otlp;
pub mod posthog;
pub mod segment;

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::parse::{parse_event, FieldError, Item, TimeBounds};

/// A JSON object's members in the order sent, unparsed, `null` ones left out (an SDK's
/// `"anonymousId": null` means there is none).
pub struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `raw`, or why it is not an object.
    pub fn of(raw: &'a RawValue, what: &str) -> Result<Members<'a>, FieldError> {
        let not_an_object = || FieldError::new("", format!("{what} must be a JSON object"));
        if !raw.get().starts_with('{') {
            return Err(not_an_object());
        }
        let map: Vec<(Cow<'a, str>, &'a RawValue)> =
            serde_json::from_str::<MembersInOrder<'a>>(raw.get())
                .map_err(|_| not_an_object())?
                .0;
        Ok(Members(
            map.into_iter()
                .filter(|(_, value)| value.get() != "null")
                .collect(),
        ))
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// The member `key` if it is a string.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.0.iter().map(|(name, value)| (name.as_ref(), *value))
    }
}

/// Deserializes an object's members in document order (serde's maps would sort or hash them).
struct MembersInOrder<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for MembersInOrder<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MembersInOrder<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(8);
                // Keys borrowed from the text unless they hold escapes: no allocation each.
                while let Some(key) = map.next_key::<BorrowedKey<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(MembersInOrder(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A key, borrowed from the text when it has no escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(key.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// A JSON object's text, written member by member (objects inside it into the same text).
pub struct ObjectText {
    text: String,
    /// Where the object being written begins in `text`.
    start: usize,
}

impl ObjectText {
    /// An object of about `bytes` bytes: one allocation for the usual case.
    pub fn with_capacity(bytes: usize) -> ObjectText {
        ObjectText {
            text: String::with_capacity(bytes),
            start: 0,
        }
    }

    fn member(&mut self, key: &str) {
        let first = self.text.len() == self.start;
        self.text.push(if first { '{' } else { ',' });
        push_json_string(&mut self.text, key);
        self.text.push(':');
    }

    /// Adds a member whose value is JSON text already.
    pub fn raw(&mut self, key: &str, value: &str) {
        self.member(key);
        self.text.push_str(value);
    }

    /// Adds a member whose value is a string.
    pub fn string(&mut self, key: &str, value: &str) {
        self.member(key);
        push_json_string(&mut self.text, value);
    }

    /// Adds a member whose value is the object `fill` writes, unless it writes nothing.
    pub fn object(&mut self, key: &str, fill: impl FnOnce(&mut ObjectText)) {
        let before = self.text.len();
        self.member(key);
        let mut inner = ObjectText {
            start: self.text.len(),
            text: std::mem::take(&mut self.text),
        };
        fill(&mut inner);
        let empty = inner.text.len() == inner.start;
        self.text = inner.text;
        if empty {
            self.text.truncate(before);
        } else {
            self.text.push('}');
        }
    }

    pub fn finish(mut self) -> String {
        if self.text.len() == self.start {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

/// Appends `value` as a JSON string: as it is when nothing in it needs escaping, the
/// common case.
fn push_json_string(out: &mut String, value: &str) {
    let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).expect("a string always serializes"));
    }
}

/// One SDK call as an [`Item`]: `mapped` (the call in Eventide's shape, or why it could
/// not be) validated with Eventide's rules, each error naming the field as the SDK calls
/// it (`renames`: Eventide's name, the SDK's).
pub fn item(
    index: usize,
    mapped: Result<String, FieldError>,
    bounds: &TimeBounds<'_>,
    renames: &[(&str, &str)],
) -> Item {
    let result = mapped.map_err(|error| vec![error]).and_then(|text| {
        parse_event(&text, bounds).map_err(|errors| {
            errors
                .into_iter()
                .map(|mut error| {
                    if let Some((_, theirs)) = renames.iter().find(|(ours, _)| *ours == error.field)
                    {
                        error.field = (*theirs).to_owned();
                    }
                    error
                })
                .collect()
        })
    });
    Item { index, result }
}

/// The elements of a JSON array, unparsed.
pub fn elements<'a>(raw: &'a RawValue, what: &str) -> Result<Vec<&'a RawValue>, String> {
    serde_json::from_str(raw.get()).map_err(|_| format!("{what} must be an array of objects"))
}
