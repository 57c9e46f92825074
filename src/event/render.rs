//! Writes stored events as JSON by hand: metadata is already JSON text and goes out verbatim,
//! and skipping an intermediate value keeps query answers cheap.

use crate::event::timefmt::format_rfc3339_ms;
use crate::event::StoredEvent;

pub fn write_event(out: &mut Vec<u8>, event: &StoredEvent) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &event.id);
    out.extend_from_slice(b",\"type\":");
    write_str(out, &event.kind);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(format_rfc3339_ms(event.timestamp_ms).as_bytes());
    out.push(b'"');
    for (name, value) in [
        ("service", &event.service),
        ("user_id", &event.user_id),
        ("message", &event.message),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(format!(",\"{name}\":").as_bytes());
            write_str(out, value);
        }
    }
    if let Some(metadata) = &event.metadata {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
    }
    out.extend_from_slice(b",\"received_at\":\"");
    out.extend_from_slice(format_rfc3339_ms(event.received_at_ms).as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(event.seq.to_string().as_bytes());
    out.push(b'}');
}

/// `[event, event, ...]`
pub fn write_events(out: &mut Vec<u8>, events: &[StoredEvent]) {
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(out, event);
    }
    out.push(b']');
}

pub fn write_str(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_as_valid_json_with_metadata_verbatim() {
        let event = StoredEvent {
            seq: 3,
            id: "a\"b".into(),
            id_from_client: true,
            kind: "<img src=x>".into(),
            timestamp_ms: 0,
            received_at_ms: 1_000,
            service: None,
            user_id: Some("u".into()),
            message: None,
            metadata: Some(r#"{"z":1.50,"a":[1e3]}"#.into()),
        };
        let mut out = Vec::new();
        write_event(&mut out, &event);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""metadata":{"z":1.50,"a":[1e3]}"#),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["id"], "a\"b");
        assert_eq!(value["type"], "<img src=x>");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["received_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(value["seq"], 3);
        assert!(value.get("service").is_none(), "absent fields are omitted");
    }
}
