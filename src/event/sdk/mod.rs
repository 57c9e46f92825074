//! Events in the shapes existing SDKs send: Segment's (which RudderStack's SDKs speak too),
//! PostHog's and OpenTelemetry's logs. Each call (or log record) is mapped onto Eventide's
//! fields, which [`super::parse`] then validates like any event sent to `POST /events`: one
//! set of rules for every way in. Segment's and PostHog's calls are assembled from their
//! members as read ([`Assembled`]), not written out in Eventide's shape and read again.

pub mod otlp;
pub mod posthog;
pub mod segment;

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::parse::{Assembled, FieldError, Item, TimeBounds};

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
        Members::read(raw.get()).map_err(|_| not_an_object())
    }

    /// The members of the JSON object `text`, or why it is not JSON or not an object.
    pub fn read(text: &'a str) -> serde_json::Result<Members<'a>> {
        Ok(Members(serde_json::from_str::<MembersInOrder<'a>>(text)?.0))
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

/// Deserializes an object's members in document order (serde's maps would sort or hash them),
/// leaving out the `null` ones.
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
                    let value = map.next_value::<&'de RawValue>()?;
                    if value.get() != "null" {
                        members.push((key.0, value));
                    }
                }
                Ok(MembersInOrder(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A key, borrowed from the text when it has no escapes (serde's `Cow` borrows only when told
/// to: without `borrow` it always copies).
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub(super) struct BorrowedKey<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// A JSON object's text, written member by member from values that are JSON text already.
pub struct ObjectText {
    text: String,
}

impl ObjectText {
    /// An object of about `bytes` bytes: one allocation for the usual case.
    pub fn with_capacity(bytes: usize) -> ObjectText {
        ObjectText {
            text: String::with_capacity(bytes),
        }
    }

    pub fn push(&mut self, key: &str, value: &RawValue) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.text, key);
        self.text.push(':');
        self.text.push_str(value.get());
    }

    /// The object, or `None` when it has no member.
    pub fn finish(mut self) -> Option<String> {
        if self.text.is_empty() {
            return None;
        }
        self.text.push('}');
        Some(self.text)
    }
}

/// The JSON object of `members` (values as sent), or `None` when there are none.
/// `capacity`: about how long the text will be, for one allocation.
pub fn object_text<'a>(
    members: impl Iterator<Item = (&'a str, &'a RawValue)>,
    capacity: usize,
) -> Option<String> {
    let mut object = ObjectText::with_capacity(capacity);
    for (key, value) in members {
        object.push(key, value);
    }
    object.finish()
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

/// One SDK call as an [`Item`]: the event assembled from it, validated with Eventide's
/// rules, or why it could not be assembled.
pub fn item(
    index: usize,
    assembled: Result<Assembled<'_>, FieldError>,
    bounds: &TimeBounds<'_>,
) -> Item {
    let result = assembled
        .map_err(|error| vec![error])
        .and_then(|event| event.validate(bounds));
    Item { index, result }
}

/// The elements of a JSON array, unparsed.
pub fn elements<'a>(raw: &'a RawValue, what: &str) -> Result<Vec<&'a RawValue>, String> {
    serde_json::from_str(raw.get()).map_err(|_| format!("{what} must be an array of objects"))
}

/// What the mapping tests compare: an assembled event, validated at [`JANUARY_1`], as JSON.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use serde_json::{json, Value};

    /// 2026-01-01T00:00:00Z, the tests' time of receipt.
    pub const JANUARY_1: i64 = 1_767_225_600_000;

    /// The event's fields (`type`, `user_id`, `id`, `timestamp` in ms, `service`, `metadata`
    /// parsed), or the first error.
    pub fn as_json(assembled: Result<Assembled<'_>, FieldError>) -> Result<Value, FieldError> {
        let bounds = TimeBounds {
            now_ms: JANUARY_1,
            oldest_ms: 0,
            too_old: &String::new,
            sent_at_ms: None,
            max_metadata_bytes: crate::event::parse::MAX_SDK_METADATA_BYTES,
        };
        let event = item(0, assembled, &bounds)
            .result
            .map_err(|mut errors| errors.remove(0))?;
        let metadata = event
            .metadata
            .map(|text| serde_json::from_str::<Value>(&text).unwrap());
        Ok(json!({
            "type": event.kind, "user_id": event.user_id, "id": event.id,
            "timestamp": event.timestamp_ms, "service": event.service, "metadata": metadata,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_borrowed_unless_they_hold_escapes() {
        let members = Members::of(
            serde_json::from_str(r#"{"plain":1,"esc\u0061ped":2}"#).unwrap(),
            "the body",
        )
        .unwrap();
        let keys: Vec<_> = members.0.iter().map(|(key, _)| key).collect();
        assert!(matches!(keys[0], Cow::Borrowed("plain")), "{keys:?}");
        assert!(
            matches!(keys[1], Cow::Owned(key) if key == "escaped"),
            "{keys:?}"
        );
    }
}
