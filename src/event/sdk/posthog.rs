//! PostHog's capture API: one event, an array of events or a `batch`, as Eventide events.
//!
//! `event` → `type`; `distinct_id` (also in `properties`, or `$distinct_id`) → `user_id`;
//! `uuid` → `id`; `timestamp` and `sent_at` as for `POST /events` (clock-skew corrected);
//! `properties` → `metadata` as sent, `$`-prefixed ones included, with the event's other
//! members (`$set`, `library`...) beside them; `properties.$lib`, else the key's name →
//! `service`. The project key (`api_key`, `token`) is never stored.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{elements, object_text, Members};
use crate::event::parse::{Assembled, FieldError, Slot};

/// Where PostHog's SDKs put the project key.
const KEY_NAMES: [&str; 2] = ["api_key", "token"];

/// What the request carried: its events, unparsed, with what applies to all of them.
#[derive(Debug)]
pub struct Request<'a> {
    pub events: Vec<&'a RawValue>,
    /// The key given in the body: at the top, or in the (first) event or its properties.
    pub key: Option<String>,
    /// The request's `sent_at`, for events without their own.
    pub sent_at: Option<&'a RawValue>,
}

/// Reads a body (JSON text, already decoded from its transport).
pub fn request(body: &str) -> Result<Request<'_>, String> {
    let not_json = |err: serde_json::Error| format!("the body is not JSON: {err}");
    // An array or a batch is read in one pass over the body; a single event in two (below).
    if body.trim_start().starts_with('[') {
        let events: Vec<&RawValue> = serde_json::from_str(body).map_err(not_json)?;
        let key = events.first().and_then(|first| key_in(first));
        return Ok(Request {
            events,
            key,
            sent_at: None,
        });
    }
    let top = Members::read(body).map_err(not_json)?;
    let sent_at = top.get("sent_at");
    let key = KEY_NAMES.iter().find_map(|name| top.string(name));
    let events = match top.get("batch") {
        Some(batch) => elements(batch, "batch")?,
        // One event: the body itself, read again to borrow it as a value (serde_json cannot
        // hand out the text it has just checked as one).
        None => vec![serde_json::from_str(body).map_err(not_json)?],
    };
    let key = key.or_else(|| events.first().and_then(|first| key_in(first)));
    Ok(Request {
        events,
        key,
        sent_at,
    })
}

/// The key an event carries, itself or in its properties (where posthog-js puts it).
fn key_in(event: &RawValue) -> Option<String> {
    let event = Members::of(event, "an event").ok()?;
    KEY_NAMES
        .iter()
        .find_map(|name| event.string(name))
        .or_else(|| {
            let properties = Members::of(event.get("properties")?, "properties").ok()?;
            properties.string("token")
        })
}

/// One event as an Eventide event; `key_name` is the name of the key the request came
/// with, the service of last resort.
pub fn event<'a>(
    raw: &'a RawValue,
    request_sent_at: Option<&'a RawValue>,
    key_name: Option<&'a str>,
) -> Result<Assembled<'a>, FieldError> {
    let event = Members::of(raw, "an event")?;
    let properties = match event.get("properties") {
        Some(properties) => Some(
            Members::of(properties, "properties")
                .map_err(|_| FieldError::new("properties", "must be a JSON object"))?,
        ),
        None => None,
    };
    let property = |name: &str| properties.as_ref().and_then(|p| p.get(name));
    let mut out = Assembled::default();
    let name = event
        .get("event")
        .ok_or_else(|| FieldError::new("event", "is required"))?;
    out.value(Slot::Type, "event", name);
    let fields = [
        (Slot::UserId, "distinct_id", event.get("distinct_id")),
        (Slot::UserId, "distinct_id", property("distinct_id")),
        (Slot::UserId, "$distinct_id", property("$distinct_id")),
        (Slot::Id, "uuid", event.get("uuid")),
        (Slot::Timestamp, "timestamp", event.get("timestamp")),
        (Slot::SentAt, "sent_at", event.get("sent_at")),
        (Slot::SentAt, "sent_at", request_sent_at),
    ];
    for (slot, name, value) in fields {
        if let Some(value) = value {
            out.value(slot, name, value);
        }
    }
    let library = properties.as_ref().and_then(|p| p.string("$lib"));
    if let Some(service) = library.map(Cow::Owned).or(key_name.map(Cow::Borrowed)) {
        out.string(Slot::Service, "service", service);
    }
    // The properties, then the event's other members not among them.
    let kept = properties
        .iter()
        .flat_map(Members::iter)
        // The project key is an Eventide key here: a secret, never stored.
        .filter(|(name, _)| *name != "token");
    let others = event.iter().filter(|(name, _)| {
        let mapped = matches!(
            *name,
            "event" | "distinct_id" | "uuid" | "timestamp" | "sent_at" | "properties"
        );
        !mapped
            && !KEY_NAMES.contains(name)
            && properties.as_ref().is_none_or(|p| p.get(name).is_none())
    });
    if let Some(text) = object_text(kept.chain(others), raw.get().len()) {
        out.metadata("properties", text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sdk::testing::{as_json, JANUARY_1};
    use serde_json::{json, Value};

    fn mapped(event_json: Value, key: Option<&str>) -> Result<Value, FieldError> {
        let text = event_json.to_string();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        as_json(event(raw, None, key))
    }

    #[test]
    fn an_event_maps_as_documented() {
        let captured = json!({
            "event": "$pageview", "distinct_id": "d1", "uuid": "0190-1",
            "timestamp": "2026-01-01T00:00:00Z",
            "properties": {"$current_url": "https://x", "$lib": "posthog-python", "token": "evk_secret"},
            "$set": {"plan": "pro"}, "api_key": "evk_secret"
        });
        assert_eq!(
            mapped(captured, Some("k")).unwrap(),
            json!({
                "type": "$pageview", "user_id": "d1", "id": "0190-1",
                "timestamp": JANUARY_1, "service": "posthog-python",
                "metadata": {"$current_url": "https://x", "$lib": "posthog-python", "$set": {"plan": "pro"}}
            })
        );
        // posthog-js puts the distinct id among the properties.
        let browser = json!({"event": "click", "properties": {"distinct_id": "d2"}});
        assert_eq!(
            mapped(browser, Some("web")).unwrap(),
            json!({"type": "click", "user_id": "d2", "id": null, "timestamp": JANUARY_1,
                "service": "web", "metadata": {"distinct_id": "d2"}})
        );
        assert_eq!(
            mapped(json!({"distinct_id": "d"}), None).unwrap_err().field,
            "event"
        );
    }

    #[test]
    fn bodies_come_in_three_shapes_with_the_key_anywhere() {
        let batch = r#"{"api_key":"evk_1","batch":[{"event":"a"},{"event":"b"}],"sent_at":"2026-01-01T00:00:00Z"}"#;
        let read = request(batch).unwrap();
        assert_eq!((read.events.len(), read.key.as_deref()), (2, Some("evk_1")));
        assert!(read.sent_at.is_some());
        let array = request(r#"[{"event":"a","properties":{"token":"evk_2"}}]"#).unwrap();
        assert_eq!(array.key.as_deref(), Some("evk_2"));
        let single = request(r#"{"event":"a","token":"evk_3"}"#).unwrap();
        assert_eq!(
            (single.events.len(), single.key.as_deref()),
            (1, Some("evk_3"))
        );
        assert!(request("1").is_err());
    }
}
