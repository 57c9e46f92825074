//! Segment's HTTP Tracking API (also RudderStack's): `track`, `identify`, `page`, `screen`,
//! `group` and `alias` calls, alone or in a `batch`, as Eventide events.
//!
//! `track` → `type` = the `event` name, other calls → `type` = the call; `userId`, else
//! `anonymousId` → `user_id`; `messageId` → `id`; `timestamp` and `sentAt` as for
//! `POST /events` (clock-skew corrected); `properties`, `traits`, `context`,
//! `integrations`, `anonymousId` and every other member → `metadata`, as sent, under their
//! own names; `context.library.name`, else the key's name → `service`. The write key is
//! never stored.

use serde_json::value::RawValue;

use super::{Members, ObjectText};
use crate::event::parse::FieldError;

/// Segment's limit on one call's JSON (and on each call of a batch).
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// Segment's limit on a batch request's JSON.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Segment's limit on the calls of one batch.
pub const MAX_BATCH_CALLS: usize = 2_500;

/// The calls, as their endpoints and `type`s name them.
pub const CALLS: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// Errors name Segment's fields, not Eventide's.
pub const RENAMES: &[(&str, &str)] = &[
    ("type", "event"),
    ("user_id", "userId"),
    ("id", "messageId"),
];

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

/// One call as an Eventide event's text. `endpoint_call` is the call an endpoint such as
/// `/v1/track` stands for (a batch's calls say theirs in `type`); `key_name` the name of
/// the key the request came with, the service of last resort.
pub fn event(
    raw: &RawValue,
    endpoint_call: Option<&str>,
    batch_sent_at: Option<&RawValue>,
    key_name: Option<&str>,
) -> Result<String, FieldError> {
    if raw.get().len() > MAX_CALL_BYTES {
        return Err(FieldError::new(
            "",
            format!("the call is larger than {MAX_CALL_BYTES} bytes, Segment's limit"),
        ));
    }
    let call = Members::of(raw, "a call")?;
    let kind = match endpoint_call {
        Some(kind) => kind.to_owned(),
        None => match call.string("type") {
            Some(kind) if CALLS.contains(&kind.as_str()) => kind,
            Some(_) => {
                return Err(FieldError::new(
                    "type",
                    format!("must be one of {}", CALLS.join(", ")),
                ))
            }
            None => return Err(FieldError::new("type", "is required in a batch")),
        },
    };
    let mut event = ObjectText::with_capacity(raw.get().len() + 64);
    if kind == "track" {
        match call.get("event") {
            Some(name) => event.raw("type", name.get()),
            None => return Err(FieldError::new("event", "is required for a track call")),
        }
    } else {
        event.string("type", &kind);
    }
    if let Some(user) = call.get("userId").or_else(|| call.get("anonymousId")) {
        event.raw("user_id", user.get());
    }
    for (ours, theirs) in [
        ("id", "messageId"),
        ("timestamp", "timestamp"),
        ("service", "service"),
    ] {
        if let Some(value) = call.get(theirs) {
            event.raw(ours, value.get());
        }
    }
    if let Some(sent_at) = call.get("sentAt").or(batch_sent_at) {
        event.raw("sent_at", sent_at.get());
    }
    if call.get("service").is_none() {
        if let Some(service) = library_name(&call).as_deref().or(key_name) {
            event.string("service", service);
        }
    }
    event.object("metadata", |metadata| {
        for (name, value) in call.iter() {
            let mapped = matches!(
                name,
                "type" | "event" | "userId" | "messageId" | "timestamp" | "sentAt" | "service"
            );
            // The write key is a secret: never stored.
            if !mapped && name != "writeKey" {
                metadata.raw(name, value.get());
            }
        }
    });
    Ok(event.finish())
}

/// `context.library.name`: the SDK that sent the call (read in one pass over `context`).
fn library_name(call: &Members<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Context {
        library: Option<Library>,
    }
    #[derive(serde::Deserialize)]
    struct Library {
        name: Option<String>,
    }
    let context: Context = serde_json::from_str(call.get("context")?.get()).ok()?;
    context.library?.name
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn mapped(call: Value, endpoint: Option<&str>, key: Option<&str>) -> Result<Value, FieldError> {
        let text = call.to_string();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        event(raw, endpoint, None, key).map(|text| serde_json::from_str(&text).unwrap())
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
                "timestamp": "2026-01-01T00:00:00Z", "service": "analytics-python",
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
            json!({"type": "page", "user_id": "a1", "service": "web",
                "metadata": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}})
        );
        let identify = json!({"type": "identify", "userId": 7, "traits": {"email": "a@b"}});
        assert_eq!(
            mapped(identify, None, None).unwrap(),
            json!({"type": "identify", "user_id": 7, "metadata": {"traits": {"email": "a@b"}}})
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
