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
    for component in ["log", "indexer", "store", "retention"] {
        assert_eq!(
            body["components"][component]["status"], "ok",
            "{component}: {body}"
        );
    }
    assert!(
        body["data"]["size_on_disk_bytes"].as_u64().unwrap() > 0,
        "{body}"
    );
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

fn events(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| serde_json::json!({"type": "t", "message": format!("{i}")}))
            .collect(),
    )
}

#[track_caller]
fn assert_rate_limited(resp: &Resp, burst: u64) {
    let body = resp.expect_error(429);
    assert_eq!(body["error"], "rate_limited", "{body}");
    let retry_after: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(resp.header("ratelimit-limit"), Some(burst.to_string()));
    assert_eq!(resp.header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(
        resp.header("ratelimit-reset"),
        Some(retry_after.to_string())
    );
}

#[tokio::test]
async fn ingest_rate_limit_counts_events_and_admits_big_batches_when_full() {
    let server =
        TestServer::start_temp(&["--ingest-rate-limit", "10", "--ingest-burst", "20"]).await;
    let api = server.api();
    api.post_events(&events(20)).await.expect_status(202);
    let refused = api.post_events(&events(1)).await;
    assert_rate_limited(&refused, 20);
    assert_eq!(
        api.total(&[]).await,
        20,
        "nothing of a refused request is stored"
    );

    // Larger than the burst: admitted once the bucket is full again (2 s at 10/s), and it
    // empties the bucket.
    let started = std::time::Instant::now();
    loop {
        let resp = api.post_events(&events(50)).await;
        if resp.status == 202 {
            break;
        }
        assert_rate_limited(&resp, 20);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never admitted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "admitted before the bucket refilled"
    );
    assert_rate_limited(&api.post_events(&events(1)).await, 20);
    // Reads are not limited by the ingest limit.
    api.get_events(&[]).await.expect_status(200);

    let detailed = api.get("/health/detailed").await.json();
    let ingest = &detailed["rate_limits"]["ingest"];
    assert_eq!(ingest["per_second"], 10, "{detailed}");
    assert!(
        ingest["rejected_requests"].as_u64().unwrap() >= 2,
        "{detailed}"
    );
    assert_eq!(detailed["rate_limits"]["query"], Value::Null, "{detailed}");
    let prometheus = api.get("/metrics/prometheus").await.text;
    assert!(
        prometheus.contains("eventide_rate_limited_requests_total{limit=\"ingest\"}"),
        "{prometheus}"
    );
}

#[tokio::test]
async fn query_rate_limit_applies_to_reads_only() {
    let server = TestServer::start_temp(&["--query-rate-limit", "5"]).await;
    let api = server.api();
    let mut admitted = 0;
    let mut refused = None;
    for _ in 0..20 {
        let resp = api.get("/metrics").await;
        if resp.status == 200 {
            admitted += 1;
        } else {
            refused = Some(resp);
            break;
        }
    }
    let refused = refused.expect("never limited");
    assert_rate_limited(&refused, 5);
    assert!(
        (5..=7).contains(&admitted),
        "{admitted} reads admitted at 5/s"
    );
    assert_rate_limited(&api.get_events(&[]).await, 5);
    // Writes, health and self-metrics are not queries.
    api.post_one(serde_json::json!({"type": "t"})).await;
    api.get("/health/ready").await.expect_status(200);
    api.get("/metrics/prometheus").await.expect_status(200);
}

fn addr_of(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_owned()
}

const GET_HEALTH: &str = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn connections_beyond_the_cap_get_a_fast_503() {
    let server = TestServer::start_temp(&["--max-connections", "4"]).await;
    let addr = addr_of(&server.api());
    // Idle connections up to the cap (the test client may hold one more already).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let refused = poll_until(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            let (status, body) = parse_raw_response(&raw_exchange(&addr, GET_HEALTH, b"").await);
            (status == 503).then_some(body)
        }
    })
    .await
    .expect("no 503 beyond --max-connections");
    let body: Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(body["error"], "too_many_connections");

    drop(held);
    let admitted = poll_until(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            let (status, _) = parse_raw_response(&raw_exchange(&addr, GET_HEALTH, b"").await);
            (status == 200).then_some(())
        }
    })
    .await;
    assert!(
        admitted.is_some(),
        "room freed by closed connections is reused"
    );
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_get_a_fast_503() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_temp(&["--max-concurrent-requests", "1"]).await;
    let api = server.api();
    // A request whose body is still coming holds the only slot. On a loaded machine a poll
    // can take the slot before the slow request's head is read, and the slow request is the
    // one refused: then it is sent again.
    let head = "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                Content-Type: application/json\r\nContent-Length: 15\r\n\r\n";
    let start_slow = || async {
        let mut slow = tokio::net::TcpStream::connect(addr_of(&api)).await.unwrap();
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(b"{\"type\":").await.unwrap();
        slow
    };
    let mut slow = start_slow().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let resp = api.get("/metrics").await;
        if resp.status == 503 {
            break Some(resp);
        }
        let mut answered = [0u8; 1];
        if slow.try_read(&mut answered).is_ok() {
            slow = start_slow().await;
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    .expect("no 503 beyond --max-concurrent-requests");
    assert_eq!(refused.expect_error(503)["error"], "overloaded");
    assert!(refused.header("retry-after").is_some());
    api.get("/health/ready").await.expect_status(200);

    slow.write_all(b"\"slow\"}").await.unwrap();
    let mut answer = Vec::new();
    read_to_end_bounded(&mut slow, &mut answer).await;
    assert_eq!(
        parse_raw_response(&answer).0,
        202,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    api.get("/health").await.expect_status(200);
}
