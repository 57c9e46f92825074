//! Events in the shapes existing SDKs send: Segment's (which RudderStack's SDKs speak too),
//! PostHog's and OpenTelemetry's logs. Each call (or log record) is rewritten as an event in
//! Eventide's own shape, whose text [`super::parse`] then validates like any event sent to
//! `POST /events`: one set of rules for every way in.

pub mod otlp;
pub mod posthog;
pub mod segment;

use serde_json::value::RawValue;

use super::parse::{parse_event, FieldError, Item, TimeBounds};

/// A JSON object's members in the order sent, unparsed, `null` ones left out (an SDK's
/// `"anonymousId": null` means there is none).
pub struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `raw`, or why it is not an object.
    pub fn of(raw: &'a RawValue, what: &str) -> Result<Members<'a>, FieldError> {
        let not_an_object = || FieldError::new("", format!("{what} must be a JSON object"));
        if !raw.get().starts_with('{') {
            return Err(not_an_object());
        }
        let map: Vec<(String, &'a RawValue)> =
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
        self.0.iter().map(|(name, value)| (name.as_str(), *value))
    }
}

/// Deserializes an object's members in document order (serde's maps would sort or hash them).
struct MembersInOrder<'a>(Vec<(String, &'a RawValue)>);

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
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(MembersInOrder(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A JSON object's text, written member by member.
#[derive(Default)]
pub struct ObjectText(String);

impl ObjectText {
    /// Adds a member whose value is JSON text already.
    pub fn raw(&mut self, key: &str, value: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&json_string(key));
        self.0.push(':');
        self.0.push_str(value);
    }

    /// Adds a member whose value is a string.
    pub fn string(&mut self, key: &str, value: &str) {
        self.raw(key, &json_string(value));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes")
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
