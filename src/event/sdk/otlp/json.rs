//! OTLP's JSON encoding of an `ExportLogsServiceRequest`, read into the protobuf messages of
//! `opentelemetry-proto`, so that one mapping serves both encodings.
//!
//! Why not that crate's own serde support (`with-serde`): it refuses what protobuf's JSON
//! mapping allows and real senders write, and a refusal loses the whole request: an empty
//! `arrayValue` or `kvlistValue` written as `{}` (Go's protojson leaves empty lists out, as
//! the OpenTelemetry Collector does), an attribute whose empty `key` is left out, `null` for
//! a field at its default, `"NaN"` or `"Infinity"` for a double, and 32-bit numbers as
//! strings. Here, as the mapping says: every field may be absent or `null`, every number may
//! be a number or a string; ids are hex (any case), bytes base64; unknown fields are ignored.

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1 as collector;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::resource::v1 as resource;
use serde::de::{DeserializeOwned, Error};
use serde::{Deserialize, Deserializer};

/// Reads an `ExportLogsServiceRequest` written in OTLP's JSON.
pub fn request(raw: &[u8]) -> Result<collector::ExportLogsServiceRequest, serde_json::Error> {
    serde_json::from_slice::<Request>(raw).map(Into::into)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Request {
    #[serde(deserialize_with = "or_default")]
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceLogs {
    #[serde(deserialize_with = "or_default")]
    resource: Option<Resource>,
    #[serde(deserialize_with = "or_default")]
    scope_logs: Vec<ScopeLogs>,
    #[serde(deserialize_with = "or_default")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Resource {
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "number")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeLogs {
    #[serde(deserialize_with = "or_default")]
    scope: Option<Scope>,
    #[serde(deserialize_with = "or_default")]
    log_records: Vec<LogRecord>,
    #[serde(deserialize_with = "or_default")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Scope {
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "or_default")]
    version: String,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "number")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LogRecord {
    #[serde(deserialize_with = "number")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "number")]
    observed_time_unix_nano: u64,
    #[serde(deserialize_with = "number")]
    severity_number: i32,
    #[serde(deserialize_with = "or_default")]
    severity_text: String,
    #[serde(deserialize_with = "or_default")]
    body: Option<AnyValue>,
    #[serde(deserialize_with = "or_default")]
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "number")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "number")]
    flags: u32,
    #[serde(deserialize_with = "hex")]
    trace_id: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    span_id: Vec<u8>,
    #[serde(deserialize_with = "or_default")]
    event_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValue {
    #[serde(deserialize_with = "or_default")]
    key: String,
    #[serde(deserialize_with = "or_default")]
    value: Option<AnyValue>,
}

/// A oneof: the first of its members present is the value; none, an empty value.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    #[serde(deserialize_with = "optional_number")]
    int_value: Option<i64>,
    #[serde(deserialize_with = "double")]
    double_value: Option<f64>,
    array_value: Option<Values<AnyValue>>,
    kvlist_value: Option<Values<KeyValue>>,
    #[serde(deserialize_with = "base64")]
    bytes_value: Option<Vec<u8>>,
}

/// `ArrayValue` and `KeyValueList`: `{}` when empty.
#[derive(Deserialize)]
#[serde(default, bound = "T: DeserializeOwned")]
struct Values<T> {
    #[serde(deserialize_with = "or_default")]
    values: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values { values: Vec::new() }
    }
}

/// `null` is the default, as for a field left out.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A number written as a number or as a string (`null`: 0).
fn number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<i64> + TryFrom<u64> + Default,
{
    Ok(optional_number(d)?.unwrap_or_default())
}

fn optional_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<i64> + TryFrom<u64>,
{
    let out_of_range = || D::Error::custom("an integer out of range");
    match Option::<NumberOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrText::Number(number)) => match (number.as_u64(), number.as_i64()) {
            (Some(n), _) => T::try_from(n).map(Some).map_err(|_| out_of_range()),
            (_, Some(n)) => T::try_from(n).map(Some).map_err(|_| out_of_range()),
            _ => Err(D::Error::custom(format!("{number} is not an integer"))),
        },
        Some(NumberOrText::Text(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("\"{text}\" is not an integer"))),
    }
}

/// A double: a number, or a string (a number's text, `NaN`, `Infinity`, `-Infinity`).
fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<NumberOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrText::Number(number)) => Ok(number.as_f64()),
        Some(NumberOrText::Text(text)) => match text.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => text
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("\"{text}\" is not a number"))),
        },
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(serde_json::Number),
    Text(String),
}

/// Trace and span ids: hex, in either case.
fn hex<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text: String = or_default(d)?;
    let digit = |c: u8| (c as char).to_digit(16);
    if text.len() % 2 != 0 {
        return Err(D::Error::custom(
            "an id must be an even number of hex digits",
        ));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => Ok((high * 16 + low) as u8),
            _ => Err(D::Error::custom(format!("\"{text}\" is not hex"))),
        })
        .collect()
}

/// Bytes: base64, standard or URL-safe, as protobuf's JSON mapping accepts.
fn base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    STANDARD
        .decode(&text)
        .or_else(|_| URL_SAFE.decode(&text))
        .map(Some)
        .map_err(|_| D::Error::custom("bytesValue is not base64"))
}

// Into the protobuf messages.

fn all<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}

impl From<Request> for collector::ExportLogsServiceRequest {
    fn from(request: Request) -> Self {
        Self {
            resource_logs: all(request.resource_logs),
        }
    }
}

impl From<ResourceLogs> for logs::ResourceLogs {
    fn from(from: ResourceLogs) -> Self {
        Self {
            resource: from.resource.map(|resource| resource::Resource {
                attributes: all(resource.attributes),
                dropped_attributes_count: resource.dropped_attributes_count,
                ..Default::default()
            }),
            scope_logs: all(from.scope_logs),
            schema_url: from.schema_url,
        }
    }
}

impl From<ScopeLogs> for logs::ScopeLogs {
    fn from(from: ScopeLogs) -> Self {
        Self {
            scope: from.scope.map(|scope| common::InstrumentationScope {
                name: scope.name,
                version: scope.version,
                attributes: all(scope.attributes),
                dropped_attributes_count: scope.dropped_attributes_count,
            }),
            log_records: all(from.log_records),
            schema_url: from.schema_url,
        }
    }
}

impl From<LogRecord> for logs::LogRecord {
    fn from(from: LogRecord) -> Self {
        Self {
            time_unix_nano: from.time_unix_nano,
            observed_time_unix_nano: from.observed_time_unix_nano,
            severity_number: from.severity_number,
            severity_text: from.severity_text,
            body: from.body.map(Into::into),
            attributes: all(from.attributes),
            dropped_attributes_count: from.dropped_attributes_count,
            flags: from.flags,
            trace_id: from.trace_id,
            span_id: from.span_id,
            event_name: from.event_name,
        }
    }
}

impl From<KeyValue> for common::KeyValue {
    fn from(from: KeyValue) -> Self {
        Self {
            key: from.key,
            value: from.value.map(Into::into),
            ..Default::default()
        }
    }
}

impl From<AnyValue> for common::AnyValue {
    fn from(from: AnyValue) -> Self {
        use common::any_value::Value;
        let value = if let Some(text) = from.string_value {
            Some(Value::StringValue(text))
        } else if let Some(flag) = from.bool_value {
            Some(Value::BoolValue(flag))
        } else if let Some(number) = from.int_value {
            Some(Value::IntValue(number))
        } else if let Some(number) = from.double_value {
            Some(Value::DoubleValue(number))
        } else if let Some(array) = from.array_value {
            Some(Value::ArrayValue(common::ArrayValue {
                values: all(array.values),
            }))
        } else if let Some(list) = from.kvlist_value {
            Some(Value::KvlistValue(common::KeyValueList {
                values: all(list.values),
            }))
        } else {
            from.bytes_value.map(Value::BytesValue)
        };
        Self { value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::any_value::Value;

    fn first_record(records: &str) -> logs::LogRecord {
        let body =
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#);
        let mut request = request(body.as_bytes()).unwrap_or_else(|err| panic!("{body}: {err}"));
        request
            .resource_logs
            .remove(0)
            .scope_logs
            .remove(0)
            .log_records
            .remove(0)
    }

    fn attribute(value: &str) -> Option<Value> {
        let record = first_record(&format!(
            r#"{{"attributes":[{{"key":"a","value":{value}}}]}}"#
        ));
        record.attributes[0].value.clone()?.value
    }

    #[test]
    fn what_protobufs_json_mapping_allows_is_read() {
        let empty_array = common::ArrayValue { values: vec![] };
        assert_eq!(
            attribute(r#"{"arrayValue":{}}"#),
            Some(Value::ArrayValue(empty_array))
        );
        let empty_list = common::KeyValueList { values: vec![] };
        assert_eq!(
            attribute(r#"{"kvlistValue":{}}"#),
            Some(Value::KvlistValue(empty_list))
        );
        assert_eq!(attribute("{}"), None);
        assert_eq!(attribute(r#"{"intValue":"-7"}"#), Some(Value::IntValue(-7)));
        assert_eq!(attribute(r#"{"intValue":7}"#), Some(Value::IntValue(7)));
        assert_eq!(
            attribute(r#"{"doubleValue":"1.5"}"#),
            Some(Value::DoubleValue(1.5))
        );
        assert_eq!(
            attribute(r#"{"doubleValue":"-Infinity"}"#),
            Some(Value::DoubleValue(f64::NEG_INFINITY))
        );
        assert!(
            matches!(attribute(r#"{"doubleValue":"NaN"}"#), Some(Value::DoubleValue(n)) if n.is_nan())
        );
        assert_eq!(
            attribute(r#"{"bytesValue":"aGk="}"#),
            Some(Value::BytesValue(b"hi".to_vec()))
        );
        let keyless = first_record(r#"{"attributes":[{"value":{"stringValue":"x"}}]}"#);
        assert_eq!(keyless.attributes[0].key, "");
        let record = first_record(
            r#"{"severityNumber":"9","flags":"1","timeUnixNano":1700000000000000000,
                "observedTimeUnixNano":null,"attributes":null,"body":null,"eventName":null,
                "traceId":"5B8EFFF798038103d269b633813fc60c","somethingNew":{"a":1}}"#,
        );
        assert_eq!((record.severity_number, record.flags), (9, 1));
        assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(record.observed_time_unix_nano, 0);
        assert!(record.attributes.is_empty() && record.body.is_none());
        assert_eq!(record.trace_id[..2], [0x5b, 0x8e]);
    }

    #[test]
    fn what_is_not_otlp_is_refused() {
        for body in [
            "not json",
            r#"{"resourceLogs":1}"#,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}"#,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"high"}]}]}]}"#,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"flags":-1}]}]}]}"#,
        ] {
            assert!(request(body.as_bytes()).is_err(), "{body}");
        }
    }
}
