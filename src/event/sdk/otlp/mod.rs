//! OpenTelemetry logs (OTLP): the log records of an `ExportLogsServiceRequest`, in the
//! maintained protobuf messages (`opentelemetry-proto`, decoded by prost, or read from OTLP's
//! JSON by [`json`]), each as an Eventide event.
//!
//! `service` = the resource's `service.name`; `type` = the record's `event_name` (or its
//! `event.name` attribute), else `log`; `message` = the body, a string as it is, any other
//! value as JSON text, cut to [`MAX_MESSAGE_CHARS`] with the whole body then kept in
//! `metadata.body`; `timestamp` = `time_unix_nano`, else `observed_time_unix_nano` (0 is
//! absent), to the millisecond; `metadata` = `severity_number`, `severity_text`,
//! `attributes`, `resource` (the resource's attributes), `scope` (`name`, `version`,
//! `attributes`), `trace_id` and `span_id` in hex, each only when present; `id` = `otlp-`
//! and a hash of the record with its resource and scope (see [`record_id`]).

mod json;

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value};

use crate::event::parse::{parse_event, EventResult, TimeBounds, MAX_MESSAGE_CHARS};
use crate::event::timefmt;

/// Errors name OTLP's fields, not Eventide's.
const RENAMES: &[(&str, &str)] = &[
    ("type", "event_name"),
    ("service", "service.name"),
    ("message", "body"),
    ("timestamp", "time_unix_nano"),
];

/// One record's event text (from [`events`]), validated with Eventide's rules, each error
/// naming the field as OTLP calls it.
pub fn validate(text: &str, bounds: &TimeBounds<'_>) -> EventResult {
    parse_event(text, bounds).map_err(|errors| {
        errors
            .into_iter()
            .map(|mut error| {
                if let Some((_, theirs)) = RENAMES.iter().find(|(ours, _)| *ours == error.field) {
                    error.field = (*theirs).to_owned();
                }
                error
            })
            .collect()
    })
}

/// The type of a record that names no event.
const LOG_TYPE: &str = "log";

/// The two encodings of OTLP/HTTP; the answer is in the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`, what the SDKs' exporters send by default.
    Protobuf,
    /// `application/json`: OTLP's JSON (camelCase, hex ids, 64-bit integers as strings).
    Json,
}

/// Reads a body (already gunzipped).
pub fn request(raw: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(raw)
            .map_err(|err| format!("the body is not an OTLP ExportLogsServiceRequest: {err}")),
        Encoding::Json => json::request(raw)
            .map_err(|err| format!("the body is not an OTLP/JSON ExportLogsServiceRequest: {err}")),
    }
}

/// Every log record of `request`, in order, as an Eventide event's text.
pub fn events(request: &ExportLogsServiceRequest) -> Vec<String> {
    let mut events = Vec::new();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs.resource.as_ref();
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref();
            for record in &scope_logs.log_records {
                events.push(event(resource, scope, record));
            }
        }
    }
    events
}

/// One record, from `resource` by `scope`, as an Eventide event's text.
fn event(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    record: &LogRecord,
) -> String {
    let resource_attributes = resource.map_or(&[][..], |resource| &resource.attributes[..]);
    let mut out = Map::new();
    let kind = Some(record.event_name.as_str())
        .filter(|name| !name.is_empty())
        .or_else(|| string_attribute(&record.attributes, "event.name"))
        .unwrap_or(LOG_TYPE);
    out.insert("type".to_owned(), kind.into());
    out.insert("id".to_owned(), record_id(resource, scope, record).into());
    // Proto3 cannot tell an empty string from none.
    if let Some(service) =
        string_attribute(resource_attributes, "service.name").filter(|name| !name.is_empty())
    {
        out.insert("service".to_owned(), service.into());
    }
    let time_nanos = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|nanos| *nanos != 0);
    if let Some(nanos) = time_nanos {
        // u64 nanoseconds end in 2554: in range for i64 milliseconds.
        let ms = (nanos / 1_000_000) as i64;
        out.insert(
            "timestamp".to_owned(),
            timefmt::format_rfc3339_ms(ms).into(),
        );
    }
    let mut metadata = Map::new();
    if let Some(body) = record.body.as_ref() {
        let (message, cut) = message(body);
        out.insert("message".to_owned(), message.into());
        if cut {
            metadata.insert("body".to_owned(), json(body));
        }
    }
    if record.severity_number != 0 {
        metadata.insert("severity_number".to_owned(), record.severity_number.into());
    }
    if !record.severity_text.is_empty() {
        metadata.insert(
            "severity_text".to_owned(),
            record.severity_text.clone().into(),
        );
    }
    if !record.attributes.is_empty() {
        metadata.insert("attributes".to_owned(), attributes(&record.attributes));
    }
    if !resource_attributes.is_empty() {
        metadata.insert("resource".to_owned(), attributes(resource_attributes));
    }
    if let Some(scope) = scope {
        let mut described = Map::new();
        if !scope.name.is_empty() {
            described.insert("name".to_owned(), scope.name.clone().into());
        }
        if !scope.version.is_empty() {
            described.insert("version".to_owned(), scope.version.clone().into());
        }
        if !scope.attributes.is_empty() {
            described.insert("attributes".to_owned(), attributes(&scope.attributes));
        }
        if !described.is_empty() {
            metadata.insert("scope".to_owned(), described.into());
        }
    }
    // OTLP: an id of all zeroes, or of another length, is none.
    for (name, id, length) in [
        ("trace_id", &record.trace_id, 16),
        ("span_id", &record.span_id, 8),
    ] {
        if id.len() == length && id.iter().any(|byte| *byte != 0) {
            metadata.insert(name.to_owned(), hex(id).into());
        }
    }
    if !metadata.is_empty() {
        out.insert("metadata".to_owned(), metadata.into());
    }
    Value::Object(out).to_string()
}

/// A record's id, made from everything it holds: OTLP records carry no id, and an
/// exporter that lost an answer sends the same records again, which must be stored once.
/// Two records alike in every field (body, attributes, both timestamps to the nanosecond,
/// resource and scope) are taken as one; the SDKs stamp `observed_time_unix_nano` at each
/// emit, so distinct log lines differ there at least. The same record hashes alike whether
/// it came as protobuf or as JSON: both are hashed in protobuf.
pub fn record_id(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    record: &LogRecord,
) -> String {
    let parts = [
        record.encode_to_vec(),
        resource.map(Message::encode_to_vec).unwrap_or_default(),
        scope.map(Message::encode_to_vec).unwrap_or_default(),
    ];
    let mut bytes = Vec::with_capacity(parts.iter().map(|part| part.len() + 10).sum());
    // Each after its length, so that no two different triples make the same bytes.
    for part in parts {
        prost::encoding::encode_varint(part.len() as u64, &mut bytes);
        bytes.extend_from_slice(&part);
    }
    format!("otlp-{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// The body as text, and whether it had to be cut to fit in a message: then its last
/// character is `…`.
fn message(body: &AnyValue) -> (String, bool) {
    let text = match &body.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        _ => json(body).to_string(),
    };
    if text.len() <= MAX_MESSAGE_CHARS || text.chars().count() <= MAX_MESSAGE_CHARS {
        return (text, false);
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    (cut, true)
}

/// The value of the attribute `key` when it is a string.
fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(value) => Some(value.as_str()),
                _ => None,
            },
        )
}

/// Attributes as a JSON object (a repeated key: the last one).
fn attributes(attributes: &[KeyValue]) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|attribute| {
                let value = attribute.value.as_ref().map_or(Value::Null, json);
                (attribute.key.clone(), value)
            })
            .collect(),
    )
}

/// A value as plain JSON: bytes in base64, as OTLP's JSON has them; a non-finite double as
/// its name, which JSON has no number for.
fn json(value: &AnyValue) -> Value {
    use any_value::Value as Kind;
    match &value.value {
        None => Value::Null,
        Some(Kind::StringValue(text)) => text.clone().into(),
        Some(Kind::BoolValue(flag)) => (*flag).into(),
        Some(Kind::IntValue(number)) => (*number).into(),
        Some(Kind::DoubleValue(number)) => serde_json::Number::from_f64(*number)
            .map_or_else(|| number.to_string().into(), Value::Number),
        Some(Kind::ArrayValue(array)) => array.values.iter().map(json).collect(),
        Some(Kind::KvlistValue(list)) => attributes(&list.values),
        Some(Kind::BytesValue(bytes)) => base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into(),
        // An index into a dictionary that only OTLP's profiles have.
        Some(Kind::StringValueStrindex(_)) => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The events of `request`, without their ids (content hashes, checked apart).
    fn mapped(request: &ExportLogsServiceRequest) -> Vec<Value> {
        events(request)
            .into_iter()
            .map(|text| {
                let mut event: Value = serde_json::from_str(&text).unwrap();
                let id = event.as_object_mut().unwrap().remove("id").unwrap();
                assert!(id.as_str().unwrap().starts_with("otlp-"), "{id}");
                event
            })
            .collect()
    }

    #[test]
    fn a_record_is_named_by_everything_it_holds() {
        let id = |record: Value, service: &str| {
            let body = json!({"resourceLogs": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": service}}]},
                "scopeLogs": [{"logRecords": [record]}]}]});
            let request = request(body.to_string().as_bytes(), Encoding::Json).unwrap();
            let resource_logs = &request.resource_logs[0];
            let scope_logs = &resource_logs.scope_logs[0];
            record_id(
                resource_logs.resource.as_ref(),
                scope_logs.scope.as_ref(),
                &scope_logs.log_records[0],
            )
        };
        let line = json!({"observedTimeUnixNano": "1000", "body": {"stringValue": "x"}});
        let first = id(line.clone(), "a");
        assert_eq!(first.len(), "otlp-".len() + 32, "{first}");
        assert_eq!(id(line.clone(), "a"), first, "the same record, the same id");
        assert_ne!(id(line, "b"), first, "another resource");
        let later = json!({"observedTimeUnixNano": "1001", "body": {"stringValue": "x"}});
        assert_ne!(id(later, "a"), first, "observed a nanosecond later");
    }

    /// The example of OTLP's specification (opentelemetry-proto's `examples/logs.json`):
    /// upper-case hex ids, a 64-bit integer as a string, every kind of value.
    const SPEC_EXAMPLE: &str = r#"{"resourceLogs":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"my.service"}}]},
      "scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[
          {"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
        "logRecords":[{"timeUnixNano":"1544712660300000000",
          "observedTimeUnixNano":"1544712660300000000","severityNumber":10,
          "severityText":"Information","traceId":"5B8EFFF798038103D269B633813FC60C",
          "spanId":"EEE19B7EC3C1B174","body":{"stringValue":"Example log record"},
          "attributes":[
            {"key":"string.attribute","value":{"stringValue":"some string"}},
            {"key":"boolean.attribute","value":{"boolValue":true}},
            {"key":"int.attribute","value":{"intValue":"10"}},
            {"key":"double.attribute","value":{"doubleValue":637.704}},
            {"key":"array.attribute","value":{"arrayValue":{"values":[
              {"stringValue":"many"},{"stringValue":"values"}]}}},
            {"key":"map.attribute","value":{"kvlistValue":{"values":[
              {"key":"some.map.key","value":{"stringValue":"some value"}}]}}}]}]}]}]}"#;

    #[test]
    fn the_specifications_json_example_maps_as_documented() {
        let request = request(SPEC_EXAMPLE.as_bytes(), Encoding::Json).unwrap();
        assert_eq!(
            mapped(&request),
            vec![json!({
                "type": "log", "service": "my.service", "message": "Example log record",
                "timestamp": "2018-12-13T14:51:00.300Z",
                "metadata": {
                    "severity_number": 10, "severity_text": "Information",
                    "attributes": {
                        "string.attribute": "some string", "boolean.attribute": true,
                        "int.attribute": 10, "double.attribute": 637.704,
                        "array.attribute": ["many", "values"],
                        "map.attribute": {"some.map.key": "some value"}
                    },
                    "resource": {"service.name": "my.service"},
                    "scope": {"name": "my.library", "version": "1.0.0",
                        "attributes": {"my.scope.attribute": "some scope attribute"}},
                    "trace_id": "5b8efff798038103d269b633813fc60c",
                    "span_id": "eee19b7ec3c1b174"
                }
            })]
        );
        // The same request in protobuf reads the same.
        let protobuf = request.encode_to_vec();
        assert_eq!(
            super::request(&protobuf, Encoding::Protobuf).unwrap(),
            request
        );
    }

    fn one_record(record: Value) -> Value {
        let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]});
        let request = request(body.to_string().as_bytes(), Encoding::Json).unwrap();
        mapped(&request).remove(0)
    }

    #[test]
    fn a_record_names_its_event_and_falls_back_on_the_observed_time() {
        let by_field = one_record(
            json!({"eventName": "checkout", "observedTimeUnixNano": 1_000_000_000_000_000_000u64,
            "attributes": [{"key": "event.name", "value": {"stringValue": "ignored"}}]}),
        );
        assert_eq!(by_field["type"], "checkout");
        assert_eq!(by_field["timestamp"], "2001-09-09T01:46:40.000Z");
        let by_attribute = one_record(json!({"timeUnixNano": "0",
            "attributes": [{"key": "event.name", "value": {"stringValue": "signup"}}]}));
        assert_eq!(by_attribute["type"], "signup");
        assert!(by_attribute.get("timestamp").is_none(), "{by_attribute}");
        assert!(by_attribute.get("service").is_none(), "{by_attribute}");
        // All-zero ids are none.
        let zero = one_record(json!({"traceId": "00000000000000000000000000000000", "spanId": ""}));
        assert_eq!(zero, json!({"type": "log"}));
    }

    #[test]
    fn a_structured_body_is_json_text_and_a_long_one_is_kept_whole_in_metadata() {
        let structured = one_record(json!({"body": {"kvlistValue": {"values": [
            {"key": "a", "value": {"intValue": 1}}]}}}));
        assert_eq!(structured["message"], r#"{"a":1}"#);
        assert!(structured.get("metadata").is_none(), "{structured}");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 1);
        let cut = one_record(json!({"body": {"stringValue": long}}));
        let message = cut["message"].as_str().unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(message.ends_with('…'));
        assert_eq!(cut["metadata"]["body"], long.as_str());
        let exact = "x".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(
            one_record(json!({"body": {"stringValue": exact}}))["message"],
            exact.as_str()
        );
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_refused_and_one_without_records_has_no_events() {
        assert!(request(&[0xff, 0xff, 0xff], Encoding::Protobuf).is_err());
        let empty = request(b"", Encoding::Protobuf).unwrap();
        assert!(events(&empty).is_empty());
    }
}
