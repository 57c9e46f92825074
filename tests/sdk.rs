//! The SDK endpoints (Segment/RudderStack, PostHog) through the real binary, sent to by the
//! **real SDKs** from PyPI and npm (tests/sdk/send.py and send.mjs; `.ci/run` installs them
//! from tests/sdk/requirements.txt and package-lock.json), read back through `GET /events`;
//! and their HTTP edges (limits, keys, browser transports, clock skew) with plain requests.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// The SDKs the tests drive: (name, program, script's SDK argument).
const SDKS: [(&str, &str, &str); 5] = [
    ("segment-analytics-python", "python3", "segment"),
    ("rudder-sdk-python", "python3", "rudderstack"),
    ("posthog (python)", "python3", "posthog"),
    ("@segment/analytics-node", "node", "segment"),
    ("posthog-node", "node", "posthog"),
];

fn sdk_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk"))
}

/// Whether the SDKs are installed; without them the SDK tests skip, loudly, except under
/// CI=true, where they fail.
fn sdks_available() -> bool {
    let how = "pip install -r tests/sdk/requirements.txt; (cd tests/sdk && npm ci)";
    let modules = "segment.analytics, rudderstack.analytics, posthog, freezegun";
    if !python_has(modules, how) {
        return false;
    }
    let node = sdk_dir()
        .join("node_modules/@segment/analytics-node")
        .exists()
        && sdk_dir().join("node_modules/posthog-node").exists();
    if !node {
        skip_outside_ci(&format!("the JavaScript SDKs are missing: {how}"));
    }
    node
}

/// A server with `args` to send to through the SDKs; `None` without them (the test skips).
async fn server_for_sdks(args: &[&str]) -> Option<TestServer> {
    if sdks_available() {
        Some(TestServer::start_temp(args).await)
    } else {
        None
    }
}

/// Sends `events` through one SDK to `base` with `key`, the client's clock `skew_s` ahead;
/// whether the SDK reported success, and what it printed.
async fn send_with(
    sdk: (&str, &str, &str),
    base: &str,
    key: &str,
    events: &Value,
    skew_s: u32,
) -> (bool, String) {
    let (_, program, name) = sdk;
    let script = if program == "node" {
        "send.mjs"
    } else {
        "send.py"
    };
    let mut command = tokio::process::Command::new(program);
    command
        .arg(sdk_dir().join(script))
        .args([name, base, key, &events.to_string()])
        .env("CLOCK_SKEW_S", skew_s.to_string())
        .current_dir(sdk_dir());
    let what = format!("{program} {script} {name}");
    let output = output_within(&mut command, Duration::from_secs(120), &what).await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// Sends and insists the SDK reported success.
async fn send(sdk: (&str, &str, &str), base: &str, key: &str, events: &Value, skew_s: u32) {
    let (ok, printed) = send_with(sdk, base, key, events, skew_s).await;
    assert!(ok, "{} failed: {printed}", sdk.0);
}

/// The stored events of `kind`, once at least `want` are there (waiting for the indexer).
async fn events_of(api: &Api, kind: &str, want: usize) -> Vec<Value> {
    let found = poll_until(Duration::from_secs(20), || async {
        let page = api
            .get_events(&[("type", kind), ("limit", "1000")])
            .await
            .json();
        let events = page["events"].as_array().unwrap().clone();
        (events.len() >= want).then_some(events)
    })
    .await;
    found.unwrap_or_else(|| panic!("fewer than {want} events of type {kind}"))
}

/// Two events for `sdk`, with ids (a uuid: PostHog's must be one).
fn two_events(tag: &str) -> Value {
    json!([
        {"user": format!("{tag}-u1"), "event": format!("{tag}-signup"), "properties": {"plan": "pro", "n": 1},
         "id": uuid::Uuid::now_v7().to_string()},
        {"user": format!("{tag}-u2"), "event": format!("{tag}-signup"), "properties": {"plan": "free", "n": 2},
         "id": uuid::Uuid::now_v7().to_string()},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_lands_its_fields_and_a_retried_batch_is_stored_once() {
    let Some(server) = server_for_sdks(&[]).await else {
        return;
    };
    let api = server.api();
    for (i, sdk) in SDKS.iter().enumerate() {
        let tag = format!("sdk{i}");
        let events = two_events(&tag);
        send(*sdk, &api.base, "any-key", &events, 0).await;
        // The same calls again, as an SDK retrying a batch whose answer it lost.
        send(*sdk, &api.base, "any-key", &events, 0).await;
        let stored = events_of(&api, &format!("{tag}-signup"), 2).await;
        assert_eq!(stored.len(), 2, "{}: stored once each: {stored:#?}", sdk.0);
        for sent in events.as_array().unwrap() {
            let event = stored
                .iter()
                .find(|e| e["id"] == sent["id"])
                .unwrap_or_else(|| panic!("{}: no event {}", sdk.0, sent["id"]));
            assert_eq!(event["user_id"], sent["user"], "{}", sdk.0);
            let metadata = &event["metadata"];
            let is_posthog = sdk.2 == "posthog";
            // Segment keeps properties under their own key, PostHog's are the metadata.
            let properties = if is_posthog {
                metadata
            } else {
                &metadata["properties"]
            };
            assert_eq!(
                properties["plan"], sent["properties"]["plan"],
                "{}: {event}",
                sdk.0
            );
            assert_eq!(
                properties["n"], sent["properties"]["n"],
                "{}: {event}",
                sdk.0
            );
            let library = if is_posthog {
                metadata["$lib"].clone()
            } else {
                metadata["context"]["library"]["name"].clone()
            };
            assert_eq!(
                event["service"], library,
                "{}: the SDK's name is the service: {event}",
                sdk.0
            );
            assert!(
                event["service"].as_str().is_some_and(|s| !s.is_empty()),
                "{event}"
            );
            assert!(
                !event.to_string().contains("any-key"),
                "the key is never stored: {event}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_clock_an_hour_ahead_is_corrected() {
    let Some(server) = server_for_sdks(&[]).await else {
        return;
    };
    let api = server.api();
    let hour_ms = 3_600_000i64;
    for (i, sdk) in SDKS.iter().enumerate() {
        let tag = format!("skew{i}");
        send(*sdk, &api.base, "k", &two_events(&tag), 3600).await;
        for event in events_of(&api, &format!("{tag}-signup"), 2).await {
            let at = |field: &str| time_ms(event[field].as_str().unwrap());
            let stored = at("timestamp");
            let received = at("received_at");
            assert!(
                (received - stored).abs() < 10_000,
                "{}: the timestamp is the time it happened by the server's clock: {event}",
                sdk.0
            );
            let original = time_ms(event["metadata"]["original_timestamp"].as_str().unwrap());
            assert!(
                (original - stored - hour_ms).abs() < 10_000,
                "{}: the client's own timestamp is kept: {event}",
                sdk.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_sdks_retry_and_nothing_is_lost() {
    // 100 events a second: each SDK's 150 events get 429s on the way, which it retries.
    let limit = ["--ingest-rate-limit", "100", "--ingest-burst", "20"];
    let Some(server) = server_for_sdks(&limit).await else {
        return;
    };
    let api = server.api();
    for (i, sdk) in SDKS.iter().enumerate() {
        let kind = format!("limited{i}");
        let events: Vec<Value> = (0..150)
            .map(|n| {
                json!({"user": "u", "event": kind, "properties": {"n": n},
                "id": uuid::Uuid::now_v7().to_string()})
            })
            .collect();
        send(*sdk, &api.base, "k", &Value::from(events), 0).await;
        let stored = events_of(&api, &kind, 150).await;
        assert_eq!(stored.len(), 150, "{}", sdk.0);
    }
    let metrics = api.get("/metrics/prometheus").await.text;
    let limited = metrics
        .lines()
        .find(|line| line.contains("rejected") && line.contains("rate_limited"))
        .unwrap_or_else(|| panic!("no rate_limited rejections counted:\n{metrics}"));
    let count: f64 = limited.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count > 0.0, "the limit was hit: {limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_the_sdks_need_an_ingest_key() {
    if !sdks_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key_offline_secret(dir.path(), "shop-backend", &["ingest"]).await;
    let reader = create_key_offline_secret(dir.path(), "dashboards", &["read"]).await;
    let server = TestServer::start(dir.path(), &[]).await;
    let api = server.api().with_key(&reader);
    for (i, sdk) in SDKS.iter().enumerate() {
        let tag = format!("keyed{i}");
        // An unknown key: the SDK is told 401 (it says so), and nothing is stored.
        let (ok, printed) = send_with(
            *sdk,
            &api.base,
            "evk_unknown",
            &two_events(&format!("{tag}x")),
            0,
        )
        .await;
        assert!(!ok, "{}: an unknown key is refused: {printed}", sdk.0);
        // A read key is not an ingest key.
        let (ok, _) = send_with(*sdk, &api.base, &reader, &two_events(&format!("{tag}y")), 0).await;
        assert!(!ok, "{}: a read key is refused", sdk.0);
        send(*sdk, &api.base, &key, &two_events(&tag), 0).await;
        assert_eq!(events_of(&api, &format!("{tag}-signup"), 2).await.len(), 2);
    }
    for tag in ["x", "y"] {
        let resp = api
            .get_events(&[("type", &format!("keyed0{tag}-signup"))])
            .await
            .json();
        assert_eq!(resp["events"], json!([]), "refused calls are not stored");
    }
}

/// `keys create` on `dir` (offline): the secret.
async fn create_key_offline_secret(dir: &Path, name: &str, scopes: &[&str]) -> String {
    let created = create_key_offline(&dir.display().to_string(), name, scopes).await;
    created["key"].as_str().unwrap().to_owned()
}

fn time_ms(text: &str) -> i64 {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("{text}: {err}"));
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `POST path` with `body` of `content_type` and extra `headers`.
async fn post(
    api: &Api,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut request = api
        .client
        .post(api.url(path))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Resp {
        status,
        headers,
        text: resp.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_limits_and_refusals_answer_as_segment_does() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let json_type = "application/json";
    // One call over 32 KB, a batch over 500 KB: 400, as Segment answers.
    let big = json!({"userId": "u", "event": "big", "properties": {"pad": "x".repeat(33 * 1024)}});
    let resp = post(&api, "/v1/track", json_type, big.to_string(), &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(resp.text.contains("32768"), "{}", resp.text);
    let call = json!({"type": "track", "userId": "u", "event": "many", "properties": {"pad": "x".repeat(20 * 1024)}});
    let batch = json!({"batch": vec![call; 26]});
    let resp = post(&api, "/v1/batch", json_type, batch.to_string(), &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(resp.text.contains("512000"), "{}", resp.text);
    // Invalid calls beside valid ones: the valid ones are stored, each problem named.
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "ok", "messageId": "seg-ok"},
        {"type": "track", "userId": "u"},
        {"type": "click", "userId": "u"},
        {"type": "identify", "userId": true},
    ], "writeKey": "evk_not_stored"});
    let resp = post(&api, "/v1/batch", json_type, batch.to_string(), &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let answer = resp.json();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["accepted"], 1);
    let fields: Vec<(u64, &str)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [(1, "event"), (2, "type"), (3, "userId")],
        "{answer}"
    );
    let stored = api.get_event("seg-ok").await.json();
    assert_eq!(stored["type"], "ok");
    assert!(!stored.to_string().contains("evk_not_stored"), "{stored}");
    // None valid: 400 naming them; not JSON: 400; an unknown call: 404.
    let resp = post(&api, "/v1/track", json_type, r#"{"userId":"u"}"#, &[]).await;
    assert_eq!(resp.expect_error(400)["error"], "no_valid_events");
    let resp = post(&api, "/v1/batch", json_type, "{not json", &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    let resp = post(&api, "/v1/click", json_type, r#"{"userId":"u"}"#, &[]).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    // Every call has its endpoint; /v1/import is /v1/batch.
    for call in ["identify", "page", "screen", "group", "alias"] {
        let resp = post(
            &api,
            &format!("/v1/{call}"),
            json_type,
            json!({"userId": "c", "messageId": format!("call-{call}")}).to_string(),
            &[],
        )
        .await;
        assert_eq!(resp.status, 200, "{call}: {}", resp.text);
        assert_eq!(
            api.get_event(&format!("call-{call}")).await.json()["type"],
            call
        );
    }
    let batch =
        json!({"batch": [{"type": "track", "event": "imported", "messageId": "seg-import"}]});
    post(&api, "/v1/import", json_type, batch.to_string(), &[])
        .await
        .expect_status(200);
    assert_eq!(api.get_event("seg-import").await.json()["type"], "imported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_transports_only_with_keys() {
    let events = json!([{"event": "$pageview", "distinct_id": "b1", "uuid": uuid::Uuid::now_v7().to_string(), "properties": {"$current_url": "https://shop"}}]);
    let base64 = base64::engine::general_purpose::STANDARD.encode(events.to_string());
    let form = format!("data={}", url_encode(&base64));
    // Without keys, a page on any site could post these without asking: refused.
    let open = TestServer::start_temp(&[]).await;
    let api = open.api();
    for (path, content_type, body) in [
        ("/e/", "application/x-www-form-urlencoded", form.clone()),
        ("/e/", "text/plain", base64.clone()),
        ("/v1/t", "text/plain", "{}".to_owned()),
    ] {
        let resp = post(&api, path, content_type, body, &[]).await;
        assert_eq!(
            resp.expect_error(415)["error"],
            "unsupported_media_type",
            "{path} {content_type}"
        );
    }
    drop(open);
    // With keys, the key in the body lets them in.
    let dir = tempfile::tempdir().unwrap();
    let key = create_key_offline_secret(dir.path(), "website", &["ingest"]).await;
    let reader = create_key_offline_secret(dir.path(), "analyst", &["read"]).await;
    let server = TestServer::start(dir.path(), &[]).await;
    let api = server.api();
    let with_token = json!([{"event": "$pageview", "distinct_id": "b2", "properties": {"token": key, "$current_url": "https://shop"}}]);
    let encoded = base64::engine::general_purpose::STANDARD.encode(with_token.to_string());
    let resp = post(
        &api,
        "/e/?compression=base64",
        "application/x-www-form-urlencoded",
        format!("data={}", url_encode(&encoded)),
        &[],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json()["status"], 1);
    let resp = post(&api, "/i/v0/e", "text/plain", with_token.to_string(), &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    // Without the key: 401, never a silent 200.
    let resp = post(&api, "/e/", "application/x-www-form-urlencoded", form, &[]).await;
    assert_eq!(resp.expect_error(401)["error"], "unauthorized");
    let reader = api.with_key(&reader);
    let stored = events_of(&reader, "$pageview", 2).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored.iter().all(|e| !e.to_string().contains(&key)),
        "the key is never stored: {stored:?}"
    );
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_at_corrects_post_events_too() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = 3_600_000;
    // The header, for events without their own sent_at; an event's own wins.
    let body = json!([
        {"type": "skewed", "id": "by-header", "timestamp": now_ms + hour - 5_000},
        {"type": "skewed", "id": "by-field", "timestamp": now_ms + 2 * hour - 7_000, "sent_at": now_ms + 2 * hour},
        {"type": "skewed", "id": "untouched"},
    ]);
    let resp = post(
        &api,
        "/events",
        "application/json",
        body.to_string(),
        &[("sent-at", &(now_ms + hour).to_string())],
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    for (id, ago_ms) in [("by-header", 5_000), ("by-field", 7_000)] {
        let event = api.get_event(id).await.json();
        let received = time_ms(event["received_at"].as_str().unwrap());
        let stored = time_ms(event["timestamp"].as_str().unwrap());
        assert!((received - ago_ms - stored).abs() < 2_000, "{id}: {event}");
        assert!(
            event["metadata"]["original_timestamp"].is_string(),
            "{event}"
        );
    }
    let untouched = api.get_event("untouched").await.json();
    assert!(untouched["metadata"].is_null(), "{untouched}");
    let resp = post(
        &api,
        "/events",
        "application/json",
        r#"{"type":"x"}"#,
        &[("sent-at", "soon")],
    )
    .await;
    let error = resp.expect_error(400);
    assert!(
        error["message"].as_str().unwrap().contains("Sent-At"),
        "{error}"
    );
}
