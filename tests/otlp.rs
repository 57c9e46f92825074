//! OpenTelemetry logs (`POST /v1/logs`) through the real server: OpenTelemetry's own Python
//! SDK and OTLP/HTTP exporter (tests/sdk/otlp_logs.py) send through their public API, and
//! the events are read back with `GET /events`; OTLP's JSON and protobuf bodies sent here,
//! gzip, partial success, keys, and a `429` the exporter retries without losing a record.

mod common;

use std::time::Duration;

use common::*;
use eventide::event::sdk::otlp::{self, Encoding};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use serde_json::{json, Value};

/// The Python driver of OpenTelemetry's SDK.
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/otlp_logs.py");

/// Whether OpenTelemetry's Python SDK and exporter are installed; the tests that need them
/// skip, loudly, without them (fail under CI=true).
fn python_sdk_available() -> bool {
    python_has(
        "opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
        "pip install -r tests/sdk/requirements.txt",
    )
}

/// A server whose keys are required, with a key for ingesting and one for reading back.
struct Keyed {
    server: TestServer,
    ingest_key: String,
    reader: Api,
}

async fn keyed_server(extra_args: &[&str]) -> Keyed {
    let server = TestServer::start_temp(extra_args).await;
    // Anyone on loopback makes the first key; from then on keys are required.
    let admin = server
        .api()
        .create_key(&json!({"name": "admin", "scopes": ["admin"]}))
        .await;
    let admin = server.with_key(admin["key"].as_str().unwrap());
    let key = |made: Value| made["key"].as_str().unwrap().to_owned();
    let ingest_key = key(admin
        .create_key(&json!({"name": "otel", "scopes": ["ingest"]}))
        .await);
    let reader = server.with_key(&key(admin
        .create_key(&json!({"name": "reader", "scopes": ["read"]}))
        .await));
    Keyed {
        server,
        ingest_key,
        reader,
    }
}

/// Runs the driver with the exporter configured as the README says; its JSON line, or
/// a panic with its output when it failed.
async fn run_driver(server: &TestServer, key: &str, service: &str, args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(DRIVER)
        .args(args)
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", server.url("/v1/logs"))
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            format!("Authorization=Bearer%20{key}"),
        )
        .env("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip")
        // Room for the retries of a rate-limited export (Retry-After of a second or two).
        .env("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "60")
        .env("OTEL_SERVICE_NAME", service);
    let output = output_within(&mut command, Duration::from_secs(120), "the driver").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the driver failed ({}):\n{stdout}\n{stderr}\nserver:\n{}",
        output.status,
        server.logs()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"))
}

/// The events of `service`, once there are `count` of them.
async fn events_of(reader: &Api, service: &str, count: usize) -> Vec<Value> {
    let found = poll_until(Duration::from_secs(20), || async {
        let events = reader.walk(&[("service", service)], 1_000).await;
        (events.len() >= count).then_some(events)
    })
    .await;
    found.unwrap_or_else(|| panic!("{count} events of {service} never came"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdks_logs_land_where_the_mapping_says() {
    if !python_sdk_available() {
        return;
    }
    let keyed = keyed_server(&[]).await;
    let said = run_driver(
        &keyed.server,
        &keyed.ingest_key,
        "checkout-svc",
        &["mapping"],
    )
    .await;
    let events = events_of(&keyed.reader, "checkout-svc", 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let log = events
        .iter()
        .find(|event| event["type"] == "log")
        .unwrap_or_else(|| panic!("no log among {events:?}"));
    assert_eq!(log["service"], "checkout-svc");
    assert_eq!(log["message"], "payment slow");
    let metadata = &log["metadata"];
    assert_eq!(metadata["severity_number"], 13, "{metadata}");
    assert_eq!(metadata["severity_text"], "WARN", "{metadata}");
    assert_eq!(metadata["attributes"]["order.id"], "o-42", "{metadata}");
    assert_eq!(metadata["attributes"]["attempt"], 3, "{metadata}");
    assert_eq!(metadata["trace_id"], said["trace_id"], "{metadata}");
    assert_eq!(metadata["span_id"], said["span_id"], "{metadata}");
    assert_eq!(metadata["resource"]["service.name"], "checkout-svc");
    assert_eq!(metadata["resource"]["deployment.environment"], "test");
    assert_eq!(metadata["resource"]["telemetry.sdk.language"], "python");
    assert_eq!(
        metadata["scope"]["name"], "eventide.otlp.test",
        "{metadata}"
    );

    let event = events
        .iter()
        .find(|event| event["type"] == "checkout.completed")
        .unwrap_or_else(|| panic!("no event among {events:?}"));
    let timestamp_ms = said["timestamp_ns"].as_i64().unwrap() / 1_000_000;
    assert_eq!(ev_ts(event), timestamp_ms, "{event}");
    // A structured body: its JSON text.
    let body: Value = serde_json::from_str(event["message"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"order": "o-42", "items": 2}));
    let metadata = &event["metadata"];
    assert_eq!(metadata["severity_number"], 9, "{metadata}");
    assert_eq!(metadata["severity_text"], "INFO", "{metadata}");
    assert_eq!(metadata["attributes"], json!({"currency": "EUR"}));
    assert_eq!(
        metadata["scope"],
        json!({"name": "eventide.otlp.events", "version": "1.2.3"})
    );
    assert!(metadata.get("trace_id").is_none(), "{metadata}");
}

/// A request of OTLP's JSON: one resource of `service`, `records` as given.
fn json_request(service: &str, records: Value) -> Value {
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"scope": {"name": "hand-made"}, "logRecords": records}]
    }]})
}

fn nanos(ms: i64) -> String {
    (i128::from(ms) * 1_000_000).to_string()
}

/// `POST /v1/logs`: the status, the answer's content type and its bytes.
async fn post_logs(
    api: &Api,
    content_type: &str,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, String, Vec<u8>) {
    let request = api.raw_request("/v1/logs", body, content_type, gzip);
    let resp = request.send().await.expect("POST /v1/logs");
    let status = resp.status().as_u16();
    let answered = resp
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, answered, resp.bytes().await.unwrap().to_vec())
}

/// `POST /v1/logs` of `request` (written in OTLP's JSON) in protobuf: the status, the
/// answer's content type and the answer.
async fn post_protobuf(
    api: &Api,
    request: Value,
    gzip: bool,
) -> (u16, String, ExportLogsServiceResponse) {
    let body = otlp::request(request.to_string().as_bytes(), Encoding::Json)
        .unwrap()
        .encode_to_vec();
    let (status, content_type, answer) = post_logs(api, "application/x-protobuf", body, gzip).await;
    let answer = ExportLogsServiceResponse::decode(&answer[..])
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&answer)));
    (status, content_type, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_bodies_are_answered_in_kind_with_partial_success() {
    let keyed = keyed_server(&[]).await;
    let api = keyed.server.with_key(&keyed.ingest_key);
    let now = now_ms();
    let long_name = "e".repeat(200);
    let records = json!([
        // As OTLP's JSON has them: 64-bit integers as strings or numbers, upper-case hex.
        {"timeUnixNano": nanos(now - 1_000), "severityNumber": 17, "severityText": "ERROR",
         "body": {"stringValue": "card declined"}, "eventName": "payment.failed",
         "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
         "attributes": [{"key": "retries", "value": {"intValue": 2}},
                        {"key": "big", "value": {"intValue": "9007199254740993"}},
                        // An empty list as Go's protojson (the Collector) writes it.
                        {"key": "tags", "value": {"arrayValue": {}}}]},
        {"timeUnixNano": nanos(now + 3 * 24 * 3_600_000), "body": {"stringValue": "from the future"}},
        {"observedTimeUnixNano": nanos(now), "eventName": long_name},
    ]);
    let body = json_request("json-svc", records).to_string().into_bytes();
    let (status, content_type, answer) = post_logs(&api, "application/json", body, true).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "{answer}"
    );
    let partial = &answer["partialSuccess"];
    let rejected = &partial["rejectedLogRecords"];
    assert!(*rejected == json!(2) || *rejected == json!("2"), "{answer}");
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("log record 1: time_unix_nano is more than 24 h in the future"),
        "{message}"
    );
    assert!(message.contains("log record 2: event_name "), "{message}");
    let events = events_of(&keyed.reader, "json-svc", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        (&event["type"], &event["message"]),
        (&json!("payment.failed"), &json!("card declined"))
    );
    assert_eq!(ev_ts(event), now - 1_000);
    assert_eq!(
        event["metadata"]["trace_id"],
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(
        event["metadata"]["attributes"],
        json!({"retries": 2, "big": 9_007_199_254_740_993_i64, "tags": []})
    );

    // Every record invalid: bad data, 400, which exporters do not retry.
    let future = json!([{"timeUnixNano": nanos(now + 3 * 24 * 3_600_000)}]);
    let body = json_request("json-svc", future).to_string().into_bytes();
    let (status, _, answer) = post_logs(&api, "application/json", body, false).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!((status, &answer["error"]), (400, &json!("no_valid_events")));
    // No records: a success.
    let (status, _, answer) = post_logs(&api, "application/json", b"{}".to_vec(), false).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let (status, _, _) = post_logs(&api, "application/json", b"[1]".to_vec(), false).await;
    assert_eq!(status, 400);

    // Protobuf, the exporters' default: the answer in protobuf too.
    let records = json!([
        {"timeUnixNano": nanos(now), "body": {"stringValue": "in protobuf"}},
        {"timeUnixNano": nanos(now + 3 * 24 * 3_600_000)},
    ]);
    let (status, content_type, answer) =
        post_protobuf(&api, json_request("proto-svc", records), true).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-protobuf")
    );
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1);
    let events = events_of(&keyed.reader, "proto-svc", 1).await;
    assert_eq!(events[0]["message"], "in protobuf");
    // All valid: no partial success.
    let records = json!([{"body": {"stringValue": "fine"}}]);
    let (status, _, answer) = post_protobuf(&api, json_request("proto-svc", records), false).await;
    assert_eq!(
        (status, answer),
        (200, ExportLogsServiceResponse::default())
    );
    let (status, _, _) = post_logs(&api, "text/plain", b"{}".to_vec(), false).await;
    assert_eq!(status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_is_stored_once() {
    let keyed = keyed_server(&[]).await;
    let api = keyed.server.with_key(&keyed.ingest_key);
    let now = now_ms();
    // Alike but for the time each was observed: two log lines.
    let records = json!([
        {"observedTimeUnixNano": nanos(now - 2), "body": {"stringValue": "retry me"}},
        {"observedTimeUnixNano": nanos(now - 1), "body": {"stringValue": "retry me"}},
    ]);
    let request = json_request("resent-svc", records);
    let (status, _, answer) = post_protobuf(&api, request.clone(), false).await;
    assert_eq!(
        (status, answer),
        (200, ExportLogsServiceResponse::default())
    );
    // The exporter lost the answer and sends the same records again, here as JSON.
    let body = request.to_string().into_bytes();
    let (status, _, answer) = post_logs(&api, "application/json", body, false).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer, json!({}), "a duplicate is no rejected record");
    events_of(&keyed.reader, "resent-svc", 2).await;
    // Read again: everything acknowledged before it is indexed by then.
    let events = keyed.reader.walk(&[("service", "resent-svc")], 1_000).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| id.starts_with("otlp-")), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_key_otlp_is_refused() {
    let keyed = keyed_server(&[]).await;
    let body = json_request("nobody", json!([{"body": {"stringValue": "x"}}]))
        .to_string()
        .into_bytes();
    let anonymous = keyed.server.api();
    let (status, _, _) = post_logs(&anonymous, "application/json", body.clone(), false).await;
    assert_eq!(status, 401);
    let (status, _, _) = post_logs(&keyed.reader, "application/json", body.clone(), false).await;
    assert_eq!(status, 403);
    let unknown = anonymous.with_key("evk_0000000000000000000000");
    let (status, _, _) = post_logs(&unknown, "application/x-protobuf", vec![0xff], false).await;
    assert_eq!(status, 401, "the key is checked before the body");
    assert_eq!(keyed.reader.total(&[("service", "nobody")]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_by_the_exporter_and_no_record_is_lost() {
    if !python_sdk_available() {
        return;
    }
    // 10 records at once, then 5 a second: batches of 10 wait for their turn.
    let keyed = keyed_server(&["--ingest-rate-limit", "5", "--ingest-burst", "10"]).await;
    let said = run_driver(
        &keyed.server,
        &keyed.ingest_key,
        "busy-svc",
        &["many", "40"],
    )
    .await;
    assert_eq!(said["exported"], 40, "{said}");
    let events = events_of(&keyed.reader, "busy-svc", 40).await;
    let mut messages: Vec<&str> = events
        .iter()
        .map(|event| event["message"].as_str().unwrap())
        .collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), 40, "each record once: {messages:?}");
    let text = keyed.reader.get("/metrics/prometheus").await.text;
    let limited = prometheus_sample(
        &text,
        r#"eventide_events_rejected_total{reason="rate_limited"}"#,
    );
    assert!(
        limited.is_some_and(|count| count > 0.0),
        "the exporter was never limited:\n{text}"
    );
}
