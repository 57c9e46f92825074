//! Segment's HTTP Tracking API (also RudderStack's): `track`, `identify`, `page`, `screen`,
//! `group` and `alias` calls, alone or in a `batch`, as Eventide events.
//!
//! `track` → `type` = the `event` name, other calls → `type` = the call; `userId`, else
//! `anonymousId` → `user_id`; `messageId` → `id`; `timestamp` and `sentAt` as for
//! `POST /events` (clock-skew corrected); `properties`, `traits`, `context`,
//! `integrations`, `anonymousId` and every other member → `metadata`, as sent, under their
//! own names; `context.library.name`, else the key's name → `service`. The write key is
//! never stored.

use std::borrow::Cow;

use serde_json::value::RawValue;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{BorrowedKey, ObjectText};
use crate::event::parse::{Assembled, FieldError, Slot};

/// Segment's limit on one call's JSON (and on each call of a batch).
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// Segment's limit on a batch request's JSON.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Segment's limit on the calls of one batch.
pub const MAX_BATCH_CALLS: usize = 2_500;

/// The calls, as their endpoints and `type`s name them.
pub const CALLS: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// What the request carried: its calls, unparsed, with what applies to all of them.
#[derive(Debug)]
pub struct Request<'a> {
    pub calls: Vec<&'a RawValue>,
    /// `writeKey` in the body (the other way is HTTP Basic's user name).
    pub write_key: Option<String>,
    /// The batch's `sentAt`, for calls without their own.
    pub sent_at: Option<&'a RawValue>,
}

/// A batch request's members: those read, the others skipped in the same pass.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    /// Its calls read in the same pass.
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(borrow, rename = "sentAt")]
    sent_at: Option<&'a RawValue>,
}

/// Reads a body: one call (`single`: the endpoint of a call) or a `batch`.
pub fn request(body: &str, single: bool) -> Result<Request<'_>, String> {
    let limit = if single {
        MAX_CALL_BYTES
    } else {
        MAX_BATCH_BYTES
    };
    if body.len() > limit {
        return Err(format!(
            "the body is larger than {limit} bytes, Segment's limit for this endpoint"
        ));
    }
    let not_json =
        |err: serde_json::Error| format!("the body cannot be read as a Segment request: {err}");
    let top: Batch<'_> = serde_json::from_str(body).map_err(not_json)?;
    let write_key = top.write_key;
    if single {
        let raw: &RawValue = serde_json::from_str(body).map_err(not_json)?;
        return Ok(Request {
            calls: vec![raw],
            write_key,
            sent_at: None,
        });
    }
    let calls = top
        .batch
        .ok_or_else(|| "batch is required: an array of calls".to_owned())?;
    if calls.len() > MAX_BATCH_CALLS {
        return Err(format!(
            "batch has {} calls; at most {MAX_BATCH_CALLS}",
            calls.len()
        ));
    }
    Ok(Request {
        calls,
        write_key,
        sent_at: top.sent_at.filter(|sent_at| sent_at.get() != "null"),
    })
}

/// One call as an Eventide event. `endpoint_call` is the call an endpoint such as
/// `/v1/track` stands for (a batch's calls say theirs in `type`); `key_name` the name of
/// the key the request came with, the service of last resort.
pub fn event<'a>(
    raw: &'a RawValue,
    endpoint_call: Option<&'static str>,
    batch_sent_at: Option<&'a RawValue>,
    key_name: Option<&'a str>,
) -> Result<Assembled<'a>, FieldError> {
    let text = raw.get();
    if text.len() > MAX_CALL_BYTES {
        return Err(FieldError::new(
            "",
            format!("the call is larger than {MAX_CALL_BYTES} bytes, Segment's limit"),
        ));
    }
    let not_an_object = || FieldError::new("", "a call must be a JSON object");
    if !text.starts_with('{') {
        return Err(not_an_object());
    }
    let mut call = serde_json::Deserializer::from_str(text)
        .deserialize_map(CallVisitor {
            capacity: text.len(),
        })
        .map_err(|_| not_an_object())?;
    let kind = match endpoint_call {
        Some(kind) => kind,
        None => {
            let kind = call
                .call_type
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .ok_or_else(|| FieldError::new("type", "is required in a batch"))?;
            CALLS
                .into_iter()
                .find(|known| *known == kind)
                .ok_or_else(|| {
                    FieldError::new("type", format!("must be one of {}", CALLS.join(", ")))
                })?
        }
    };
    let event = &mut call.event;
    if kind == "track" {
        let name = call
            .event_name
            .ok_or_else(|| FieldError::new("event", "is required for a track call"))?;
        event.value(Slot::Type, "event", name);
    } else {
        event.string(Slot::Type, "type", kind);
    }
    // Each only where the call gave none of its own.
    if let Some(anonymous_id) = call.anonymous_id {
        event.value(Slot::UserId, "anonymousId", anonymous_id);
    }
    if let Some(sent_at) = batch_sent_at {
        event.value(Slot::SentAt, "sentAt", sent_at);
    }
    if !event.is_set(Slot::Service) {
        let library = call.context.and_then(library_name);
        if let Some(service) = library.map(Cow::Owned).or(key_name.map(Cow::Borrowed)) {
            event.string(Slot::Service, "service", service);
        }
    }
    if let Some(metadata) = call.metadata.finish() {
        event.metadata("metadata", metadata);
    }
    Ok(call.event)
}

/// One call, read in a single pass: the members Eventide maps are read where they stand,
/// every other one is copied into the metadata's text as it was sent. Of a member given
/// twice, the first counts; `null` members are left out.
struct CallMembers<'a> {
    event: Assembled<'a>,
    metadata: ObjectText,
    /// What decides only once the whole call is read: the call (`type`), the name of a
    /// track call (`event`), the user when there is no `userId`, the SDK (in `context`).
    call_type: Option<&'a RawValue>,
    event_name: Option<&'a RawValue>,
    anonymous_id: Option<&'a RawValue>,
    context: Option<&'a RawValue>,
}

struct CallVisitor {
    /// The call's length: the metadata's text is at most that.
    capacity: usize,
}

impl<'de> Visitor<'de> for CallVisitor {
    type Value = CallMembers<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Segment call")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CallMembers<'de>, A::Error> {
        let mut call = CallMembers {
            event: Assembled::default(),
            metadata: ObjectText::with_capacity(self.capacity),
            call_type: None,
            event_name: None,
            anonymous_id: None,
            context: None,
        };
        while let Some(BorrowedKey(key)) = map.next_key()? {
            let event = &mut call.event;
            match key.as_ref() {
                "userId" => event.read(Slot::UserId, "userId", &mut map)?,
                "messageId" => event.read(Slot::Id, "messageId", &mut map)?,
                "timestamp" => event.read(Slot::Timestamp, "timestamp", &mut map)?,
                "sentAt" => event.read(Slot::SentAt, "sentAt", &mut map)?,
                "service" => event.read(Slot::Service, "service", &mut map)?,
                "type" => first(&mut call.call_type, map.next_value()?),
                "event" => first(&mut call.event_name, map.next_value()?),
                // The write key is a secret: never stored.
                "writeKey" => {
                    map.next_value::<IgnoredAny>()?;
                }
                name => {
                    let value: &'de RawValue = map.next_value()?;
                    if value.get() == "null" {
                        continue;
                    }
                    match name {
                        "anonymousId" => first(&mut call.anonymous_id, value),
                        "context" => first(&mut call.context, value),
                        _ => {}
                    }
                    call.metadata.push(name, value);
                }
            }
        }
        Ok(call)
    }
}

/// Keeps `value` in `slot` unless one came before or it is `null`.
fn first<'a>(slot: &mut Option<&'a RawValue>, value: &'a RawValue) {
    if slot.is_none() && value.get() != "null" {
        *slot = Some(value);
    }
}

/// `context.library.name`: the SDK that sent the call (read in one pass over `context`).
fn library_name(context: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Context {
        library: Option<Library>,
    }
    #[derive(serde::Deserialize)]
    struct Library {
        name: Option<String>,
    }
    let context: Context = serde_json::from_str(context.get()).ok()?;
    context.library?.name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::sdk::testing::{as_json, JANUARY_1};
    use serde_json::{json, Value};

    fn mapped(
        call: Value,
        endpoint: Option<&'static str>,
        key: Option<&str>,
    ) -> Result<Value, FieldError> {
        let text = call.to_string();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        as_json(event(raw, endpoint, None, key))
    }

    #[test]
    fn a_track_call_maps_as_documented() {
        let call = json!({
            "type": "track", "event": "Signed Up", "userId": "u1", "anonymousId": "a1",
            "messageId": "m-1", "timestamp": "2026-01-01T00:00:00Z", "properties": {"plan": "pro"},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "integrations": {}, "channel": "server", "writeKey": "evk_secret", "traits": null
        });
        assert_eq!(
            mapped(call, None, Some("key name")).unwrap(),
            json!({
                "type": "Signed Up", "user_id": "u1", "id": "m-1",
                "timestamp": JANUARY_1, "service": "analytics-python",
                "metadata": {
                    "anonymousId": "a1", "properties": {"plan": "pro"},
                    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                    "integrations": {}, "channel": "server"
                }
            })
        );
    }

    #[test]
    fn other_calls_are_their_own_type() {
        let page = json!({"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}});
        assert_eq!(
            mapped(page, Some("page"), Some("web")).unwrap(),
            json!({"type": "page", "user_id": "a1", "id": null, "timestamp": JANUARY_1,
                "service": "web",
                "metadata": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}})
        );
        let identify = json!({"type": "identify", "userId": 7, "traits": {"email": "a@b"}});
        assert_eq!(
            mapped(identify, None, None).unwrap(),
            json!({"type": "identify", "user_id": "7", "id": null, "timestamp": JANUARY_1,
                "service": null, "metadata": {"traits": {"email": "a@b"}}})
        );
    }

    #[test]
    fn refusals_name_segment_fields() {
        let no_event = mapped(json!({"type": "track", "userId": "u"}), None, None);
        assert_eq!(no_event.unwrap_err().field, "event");
        let bad_type = mapped(json!({"type": "click"}), None, None);
        assert_eq!(bad_type.unwrap_err().field, "type");
        let too_big = mapped(
            json!({"type": "track", "event": "x".repeat(MAX_CALL_BYTES)}),
            None,
            None,
        );
        assert!(too_big.unwrap_err().message.contains("32768"));
    }

    #[test]
    fn a_batch_carries_its_sent_at_and_write_key() {
        let body = r#"{"batch":[{"type":"track","event":"a"},{"type":"page"}],"sentAt":"2026-01-01T00:00:00Z","writeKey":"evk_1"}"#;
        let read = request(body, false).unwrap();
        assert_eq!(read.calls.len(), 2);
        assert_eq!(read.write_key.as_deref(), Some("evk_1"));
        assert_eq!(read.sent_at.unwrap().get(), r#""2026-01-01T00:00:00Z""#);
        assert!(request(r#"{"batch":{}}"#, false).is_err());
        assert!(request(r#"[1]"#, false).is_err());
        let big = format!(r#"{{"event":"{}"}}"#, "x".repeat(MAX_CALL_BYTES));
        assert!(request(&big, true).unwrap_err().contains("32768"));
    }
}
