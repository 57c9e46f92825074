//! The HTTP edge against hostile or careless clients: slow and idle connections, connections
//! beyond the limit, request heads and bodies over the limits, requests that are not HTTP,
//! cross-site writes and foreign `Host`s, and the headers every answer carries.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `stream` until it is closed (or 30 s): what the server sent, and how long
/// until it closed.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for 30 s"),
        }
    }
    (received, started.elapsed())
}

/// The status and JSON body of a raw answer; panics unless the body is a JSON error.
#[track_caller]
fn json_error(raw: &[u8]) -> (u16, Value) {
    let (status, body) = parse_raw_response(raw);
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "not a JSON answer: {text}"
    );
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_error_body(&body);
    (status, body)
}

async fn prometheus_value(api: &Api, metric: &str) -> f64 {
    let text = api.get("/metrics/prometheus").await.text;
    text.lines()
        .find(|line| line.starts_with(metric))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_slow_request_head_gets_408_and_a_silent_socket_is_closed() {
    let server = TestServer::start_temp(&["--header-timeout", "1s"]).await;
    // Part of a head, then nothing.
    let mut slow = TcpStream::connect(&server.addr).await.unwrap();
    slow.write_all(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow")
        .await
        .unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(&server.addr).await.unwrap();

    let (raw, took) = read_until_closed(&mut slow).await;
    let (status, body) = json_error(&raw);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], json!("request_timeout"));
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    let (raw, took) = read_until_closed(&mut silent).await;
    assert!(raw.is_empty(), "a silent client is owed nothing: {raw:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");

    let health = server.get("/health/detailed").await.json();
    assert!(
        health["connections"]["timed_out"]["header"].as_u64() >= Some(2),
        "{health}"
    );
    let counted = prometheus_value(
        &server.api(),
        "eventide_connections_timed_out_total{cause=\"header\"}",
    )
    .await;
    assert!(counted >= 2.0, "{counted}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let server = TestServer::start_temp(&["--keep-alive-timeout", "2s"]).await;
    let mut idle = TcpStream::connect(&server.addr).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    // Requests every second keep it open beyond the timeout.
    for _ in 0..4 {
        idle.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Then it idles: closed about 2 s after the last answer, with nothing sent.
    let (raw, took) = read_until_closed(&mut idle).await;
    assert!(raw.is_empty(), "{raw:?}");
    assert!(
        took < Duration::from_secs(6),
        "an idle connection stayed {took:?}"
    );
    let health = server.get("/health/detailed").await.json();
    assert!(
        health["connections"]["timed_out"]["idle"].as_u64() >= Some(1),
        "{health}"
    );
}

#[tokio::test]
async fn a_body_trickling_below_the_minimum_rate_gets_408() {
    let server = TestServer::start_temp(&["--min-body-rate", "100"]).await;
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000000\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte a second: 10 bytes in the first 10 s window, less than 100 bytes/s x 10 s.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    trickle.abort();
    let took = started.elapsed();
    let (status, body) = json_error(&raw);
    assert_eq!(status, 408, "{body}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "cut after {took:?}"
    );
    let health = server.get("/health/detailed").await.json();
    assert_eq!(
        health["connections"]["timed_out"]["body"],
        json!(1),
        "{health}"
    );
    // A body at a decent rate is fine, even in pieces.
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let event = br#"{"type":"steady"}"#;
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        event.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in event.chunks(6) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (raw, _) = read_until_closed(&mut stream).await;
    assert_eq!(parse_raw_response(&raw).0, 202);
}

#[tokio::test]
async fn connections_beyond_the_limit_read_a_503_and_are_counted() {
    let server = TestServer::start_temp(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(&server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Each refused client sends its request at once, as clients do: it must still read the
    // answer rather than a reset.
    for _ in 0..20 {
        let mut refused = TcpStream::connect(&server.addr).await.unwrap();
        let request = format!(
            "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 15\r\n\r\n{{\"type\":\"late\"}}",
            server.addr
        );
        let _ = refused.write_all(request.as_bytes()).await;
        let (raw, _) = read_until_closed(&mut refused).await;
        let (status, body) = json_error(&raw);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], json!("too_many_connections"));
        assert!(String::from_utf8_lossy(&raw)
            .to_ascii_lowercase()
            .contains("retry-after: 1"));
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = server.get("/health/detailed").await.json();
    // The test client's own pooled connection (from start-up) may have taken one of the 5,
    // leaving one of `held` refused too.
    let refused = health["connections"]["refused"].as_u64().unwrap();
    assert!((20..=21).contains(&refused), "{health}");
    assert_eq!(health["connections"]["max"], json!(5), "{health}");
    let counted = prometheus_value(&server.api(), "eventide_connections_refused_total").await;
    assert_eq!(counted, refused as f64);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_byte_is_read() {
    let server = TestServer::start_temp(&[]).await;
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 104857600\r\nExpect: 100-continue\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "no 100 Continue first: {text}"
    );
    assert_eq!(server.total(&[]).await, 0);
}

#[tokio::test]
async fn every_error_of_the_http_layer_is_json() {
    let server = TestServer::start_temp(&[]).await;
    let exchange = |request: Vec<u8>| {
        let addr = server.addr.clone();
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(&request).await.unwrap();
            read_until_closed(&mut stream).await.0
        }
    };
    // Not HTTP at all.
    let (status, _) = json_error(&exchange(b"HELLO THERE\r\n\r\n".to_vec()).await);
    assert_eq!(status, 400);
    // A header line without a colon.
    let (status, _) = json_error(
        &exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n".to_vec()).await,
    );
    assert_eq!(status, 400);
    // 70 KB of headers: over the 64 KiB limit.
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, body) = json_error(&exchange(big.into_bytes()).await);
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"], json!("headers_too_large"));
    // Just under it is served.
    let fits = server
        .get_with("/health", &[("x-big", &"a".repeat(60_000))])
        .await;
    assert_eq!(fits.status, 200);
    // A path that does not decode.
    let resp = server.get("/events/%ff").await;
    let body = resp.expect_error(400);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/json"),
        "{body}"
    );
}

#[tokio::test]
async fn writes_without_a_json_content_type_are_refused_so_no_page_can_post_cross_site() {
    let server = TestServer::start_temp(&[]).await;
    // What `navigator.sendBeacon` or a `no-cors` fetch can send without a preflight.
    let no_type = server
        .request(Method::POST, "/events", &[], Some(r#"{"type":"csrf"}"#))
        .await;
    assert_eq!(no_type.status, 415);
    for simple in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        server
            .post_raw(r#"{"type":"csrf"}"#, simple, false)
            .await
            .expect_error(415);
    }
    assert_eq!(server.total(&[]).await, 0);
    check_batch(
        &server
            .post_raw(r#"{"type":"ok"}"#, "application/json; charset=utf-8", false)
            .await,
        &[Want::Ok],
    );
}

#[tokio::test]
async fn only_this_servers_hosts_are_served_without_authentication() {
    let server = TestServer::start_temp(&["--allowed-hosts", "events.internal"]).await;
    let with_host = |host: &'static str| {
        let api = server.api();
        async move { api.get_with("/events", &[("host", host)]).await }
    };
    let resp = with_host("attacker.example").await;
    assert_eq!(resp.status, 403, "{}", resp.text);
    let body = resp.json();
    assert_eq!(body["error"], json!("host_not_allowed"));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("--allowed-hosts"));
    assert_eq!(with_host("attacker.example:8080").await.status, 403);
    for allowed in [
        "localhost",
        "localhost:8080",
        "127.0.0.1",
        "[::1]:1234",
        "events.internal",
        "events.internal:443",
    ] {
        assert_eq!(with_host(allowed).await.status, 200, "{allowed}");
    }
    // Writes too.
    let resp = server
        .request(
            Method::POST,
            "/events",
            &[
                ("host", "rebound.attacker.example"),
                ("content-type", "application/json"),
            ],
            Some(r#"{"type":"rebind"}"#),
        )
        .await;
    assert_eq!(resp.status, 403);
    assert_eq!(server.total(&[]).await, 0);
}

#[tokio::test]
async fn answers_carry_nosniff_no_store_and_the_docs_a_policy() {
    let server = TestServer::start_temp(&[]).await;
    server.post_one(json!({"type": "h"})).await;
    for path in ["/events", "/metrics", "/health/detailed", "/no-such-route"] {
        assert_headers(
            &server.get(path).await,
            &[
                ("x-content-type-options", "nosniff"),
                ("cache-control", "no-store"),
            ],
            path,
        );
    }
    let docs = server.get("/docs/").await;
    docs.expect_status(200);
    let policy = docs
        .header("content-security-policy")
        .expect("a CSP on /docs/");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(
        docs.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let script = server.get("/docs/swagger-initializer.js").await;
    assert!(script.header("content-security-policy").is_some());
}

#[tokio::test]
async fn listed_origins_get_cors_and_others_none() {
    let server = TestServer::start_temp(&["--cors-origins", "https://app.example.com"]).await;
    let preflight = |api: Api, origin: &'static str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ];
        async move {
            api.request(Method::OPTIONS, "/events", &headers, None)
                .await
        }
    };
    let granted = preflight(server.api(), "https://app.example.com").await;
    assert_eq!(granted.status, 204);
    assert_eq!(
        granted.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(granted
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let allowed_headers = granted.header("access-control-allow-headers").unwrap();
    assert!(allowed_headers.contains("Authorization") && allowed_headers.contains("Content-Type"));
    let refused = preflight(server.api(), "https://evil.example.com").await;
    assert_eq!(refused.status, 403);
    assert!(refused.header("access-control-allow-origin").is_none());

    // The actual request from the listed origin is marked; one from elsewhere is not.
    let post = |origin: &'static str| {
        let headers = [("origin", origin), ("content-type", "application/json")];
        let api = server.api();
        async move {
            let body = Some(r#"{"type":"from-a-page"}"#);
            api.request(Method::POST, "/events", &headers, body).await
        }
    };
    let answer = post("https://app.example.com").await;
    assert_eq!(answer.status, 202);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(answer.header("vary").unwrap().contains("Origin"));
    let other = post("https://evil.example.com").await;
    assert!(other.header("access-control-allow-origin").is_none());

    // Without --cors-origins, nobody is granted anything.
    let plain = TestServer::start_temp(&[]).await;
    let resp = preflight(plain.api(), "https://app.example.com").await;
    assert!(resp.header("access-control-allow-origin").is_none());
}
