//! Operating the service: request ids, structured logs and log levels, health checks.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn get_with_request_id(api: &Api, path: &str, id: Option<&str>) -> reqwest::Response {
    let mut request = api.client.get(api.url(path));
    if let Some(id) = id {
        request = request.header("x-request-id", id);
    }
    request.send().await.expect("request")
}

fn request_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let kept = get_with_request_id(&api, "/health", Some("client-req_42")).await;
    assert_eq!(request_id_of(&kept), "client-req_42");

    let generated = get_with_request_id(&api, "/health", None).await;
    let id = request_id_of(&generated);
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let another = request_id_of(&get_with_request_id(&api, "/health", None).await);
    assert_ne!(id, another, "each request gets its own");

    // Unusable ids are replaced, on errors too.
    for insane in ["has space", &"x".repeat(200), "quote\"d"] {
        let replaced = get_with_request_id(&api, "/nowhere", Some(insane)).await;
        assert_eq!(replaced.status(), 404);
        let id = request_id_of(&replaced);
        assert_ne!(id, insane);
        assert_eq!(id.len(), 36, "{id}");
    }
    // At the default level (info), client errors are not logged.
    assert!(
        !server.logs().contains("request refused"),
        "{}",
        server.logs()
    );
}

/// Waits until the server's stderr has a line containing `needle`.
async fn wait_for_log(server: &TestServer, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = server.logs().lines().find(|line| line.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {needle:?} in:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_no_event_payloads() {
    let server = TestServer::start_temp(&["--log-format", "json", "--log-level", "debug"]).await;
    let api = server.api();
    let resp = get_with_request_id(&api, "/events?colour=red", Some("trace-me-1")).await;
    assert_eq!(resp.status(), 400);
    let line = wait_for_log(&server, "trace-me-1").await;
    let json_part = &line[line.find('{').expect("a JSON object")..];
    let entry: Value = serde_json::from_str(json_part).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(
        entry["level"], "DEBUG",
        "client errors log at debug: {entry}"
    );
    assert_eq!(entry["span"]["id"], "trace-me-1", "{entry}");
    assert!(
        entry["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{entry}"
    );

    // Every line the server wrote is one JSON object.
    api.post_one(serde_json::json!({"type": "secret-type", "message": "secret payload"}))
        .await;
    wait_for_log(&server, "\"method\":\"POST\"").await;
    for line in server
        .logs()
        .lines()
        .filter(|line| line.starts_with("[stderr]"))
    {
        let json_part = &line[line.find('{').unwrap_or_else(|| panic!("not JSON: {line}"))..];
        serde_json::from_str::<Value>(json_part).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(
        !server.logs().contains("secret payload"),
        "event payloads never reach the logs"
    );
}

#[tokio::test]
async fn health_reports_liveness_readiness_and_details() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    assert_eq!(api.get("/health").await.json()["status"], "ok");
    let ready = api.get("/health/ready").await;
    ready.expect_status(200);
    assert_eq!(ready.json()["status"], "ready");

    let empty = api.get("/health/detailed").await.json();
    assert_eq!(empty["events"]["stored"], 0, "{empty}");
    assert_eq!(empty["events"]["oldest"], Value::Null, "{empty}");
    assert_eq!(empty["last_commit"], Value::Null, "{empty}");

    api.post_all(&[
        serde_json::json!({"type": "a", "timestamp": "2024-01-15T10:00:00Z"}),
        serde_json::json!({"type": "b", "timestamp": "2024-03-01T12:30:00.250Z"}),
    ])
    .await;
    // Wait until indexed (a query waits for it).
    assert_eq!(api.total(&[]).await, 2);
    let body = api.get("/health/detailed").await.json();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].as_u64().is_some(), "{body}");
    assert_eq!(body["store"]["status"], "ok", "{body}");
    assert!(
        body["store"]["size_on_disk_bytes"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert_eq!(body["log"]["status"], "ok", "{body}");
    assert_eq!(body["queue"]["capacity"], 100_000, "{body}");
    assert_eq!(body["queue"]["pending_events"], 0, "{body}");
    assert_eq!(body["events"]["stored"], 2, "{body}");
    assert_eq!(
        body["events"]["oldest"], "2024-01-15T10:00:00.000Z",
        "{body}"
    );
    assert_eq!(
        body["events"]["newest"], "2024-03-01T12:30:00.250Z",
        "{body}"
    );
    assert_eq!(body["events"]["committed_seq"], 2, "{body}");
    assert!(body["last_commit"]["at"].is_string(), "{body}");
    assert!(
        body["last_commit"]["latency_ms"].as_f64().unwrap() >= 0.0,
        "{body}"
    );
    assert_eq!(body["stream"]["subscribers"], 0, "{body}");
}
