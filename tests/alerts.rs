//! Alerts through the real server and real receivers: an HTTP server in the test takes the
//! webhook and Slack notices, a real SMTP server process (Python's aiosmtpd) the emails.
//! Evaluated every second, so each test takes a few seconds: a threshold fires once and
//! resolves once; an absence fires when a heartbeat stops and resolves when it returns;
//! `for` suppresses a blip; flapping within `keep_firing_for` gives one notice;
//! `repeat_interval` repeats; a silence suppresses; a receiver that is down gets the notice
//! once it is back; a restart while firing neither repeats the notice nor misses the
//! resolve; `eventide alerts check` validates files; alerts sharing the `group_by` labels go
//! out in one notice; email goes over STARTTLS or implicit TLS to a server whose
//! self-signed certificate the channel's `ca_file` trusts; the service's own rules on a
//! failed retention run and on dead letters reach a webhook.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// What the test's HTTP receiver was sent: path, headers, body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>);

impl Received {
    /// The JSON bodies sent to `path`, in order.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, _)| at == path)
            .map(|(_, _, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

    /// The `status` of each webhook notice sent to `path` (`-` for a Slack message).
    fn statuses(&self, path: &str) -> Vec<String> {
        self.bodies(path)
            .iter()
            .map(|body| body["status"].as_str().unwrap_or("-").to_owned())
            .collect()
    }

    /// Waits (up to 20 s) until `path` got `count` notices; their statuses.
    async fn wait_for(&self, path: &str, count: usize) -> Vec<String> {
        poll_until(Duration::from_secs(20), || async {
            (self.bodies(path).len() >= count).then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{path}: {count} notices expected, got {:?}",
                self.statuses(path)
            )
        });
        self.statuses(path)
    }
}

async fn receive(
    State(received): State<Received>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    received
        .0
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), headers, body));
    StatusCode::OK
}

/// Starts the receiver on `listener`.
fn serve_receiver(listener: tokio::net::TcpListener) -> Received {
    let received = Received::default();
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    received
}

async fn receiver() -> (Received, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (serve_receiver(listener), addr)
}

/// The alerts file's name in a test's directory.
const ALERTS_FILE: &str = "alerts.toml";

/// Writes an alerts file: evaluated every second, links to a public URL, with a webhook
/// channel `hook` to `receiver` (notices at once, the resolve a second after) and `extra`.
fn alerts_file(dir: &Path, receiver: SocketAddr, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[alerts]
interval = "1s"
public_url = "https://eventide.example"

[[alerts.channels]]
name = "hook"
kind = "webhook"
url = "http://{receiver}/hook?token=SECRET-TOKEN"
secret = "s3cret"
group_wait = "0s"
group_interval = "1s"
max_backoff = "1s"
{extra}
"#
    );
    let path = dir.join(ALERTS_FILE);
    std::fs::write(&path, text).unwrap();
    path
}

/// `rules` as `[[alerts.rules]]` tables, each written as the JSON `POST /alerts/rules` takes.
fn rules(rules: &[Value]) -> String {
    toml_tables("alerts.rules", rules)
}

/// `channels` as `[[alerts.channels]]` tables, each given as a JSON object.
fn channels(channels: &[Value]) -> String {
    toml_tables("alerts.channels", channels)
}

/// `tables` as TOML's array-of-tables entries `[[header]]`, a `key = value` line per field.
fn toml_tables(header: &str, tables: &[Value]) -> String {
    tables
        .iter()
        .map(|table| {
            let fields: String = table
                .as_object()
                .expect("a table is a JSON object")
                .iter()
                .map(|(key, value)| format!("{key} = {}\n", toml_value(value)))
                .collect();
            format!("\n[[{header}]]\n{fields}")
        })
        .collect()
}

/// A JSON value in TOML, whose strings, numbers and booleans are written as JSON writes them;
/// an object becomes an inline table.
fn toml_value(value: &Value) -> String {
    let join = |items: Vec<String>| items.join(", ");
    match value {
        Value::Array(items) => format!("[{}]", join(items.iter().map(toml_value).collect())),
        Value::Object(fields) => {
            let fields = fields
                .iter()
                .map(|(key, value)| format!("{key} = {}", toml_value(value)))
                .collect();
            format!("{{ {} }}", join(fields))
        }
        scalar => scalar.to_string(),
    }
}

async fn start(dir: &tempfile::TempDir, file: &Path) -> TestServer {
    TestServer::start(
        &dir.path().join("data"),
        &["--alerts-config", file.to_str().unwrap()],
    )
    .await
}

/// Asserts that `eventide alerts check` finds the alerts file in `dir` valid; what it printed.
async fn assert_alerts_check_passes(dir: &Path) -> String {
    let file = dir.join(ALERTS_FILE);
    let (status, stdout, stderr) = run_binary(&["alerts", "check", file.to_str().unwrap()]).await;
    assert!(status.success(), "{stderr}");
    stdout
}

/// Writes `text` to `bad.toml` in `dir` and asserts that `eventide alerts check` refuses it
/// (exit status 1): the file and the error.
async fn assert_alerts_check_refuses(dir: &Path, text: &str) -> (PathBuf, String) {
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let (status, _, stderr) = run_binary(&["alerts", "check", bad.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    (bad, stderr)
}

/// Starts a server in `dir` on its alerts file (`alerts_file`) with `extra`, made from the
/// address of a new receiver: the receiver and the server.
async fn start_with(
    dir: &tempfile::TempDir,
    extra: impl FnOnce(SocketAddr) -> String,
) -> (Received, TestServer) {
    let (received, addr) = receiver().await;
    let file = alerts_file(dir.path(), addr, &extra(addr));
    (received, start(dir, &file).await)
}

async fn post_events(server: &TestServer, kind: &str, count: usize) {
    let events: Vec<Value> = (0..count).map(|_| json!({ "type": kind })).collect();
    server.post_events(&json!(events)).await.expect_status(202);
}

/// The alert of `rule` as `GET /alerts` shows it.
async fn alert(server: &TestServer, rule: &str) -> Value {
    let alerts = server.get("/alerts").await.json();
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["rule"] == rule)
        .cloned()
        .unwrap_or_else(|| panic!("no alert {rule}: {alerts}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_fires_once_and_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let spike = json!({"name": "errors-spike", "type": "error", "window": "3s",
                       "condition": "above", "threshold": 3, "channels": ["hook", "team"],
                       "annotations": {"summary": "too many errors"}});
    let (received, server) = start_with(&dir, |addr| {
        let team = json!({"name": "team", "kind": "slack", "url": format!("http://{addr}/slack"),
                          "group_wait": "0s", "group_interval": "1s"});
        channels(&[team]) + &rules(&[spike])
    })
    .await;
    post_events(&server, "error", 5).await;
    assert_eq!(received.wait_for("/hook", 1).await, ["firing"]);
    let firing = &received.bodies("/hook")[0];
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["receiver"], "hook");
    assert_eq!(firing["groupKey"], "{}:{alertname=\"errors-spike\"}");
    let alert = &firing["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "errors-spike");
    assert_eq!(alert["labels"]["type"], "error");
    assert_eq!(alert["annotations"]["summary"], "too many errors");
    assert_eq!(alert["value"], 5.0);
    assert_eq!(alert["threshold"], 3);
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);
    assert!(parse_ts(alert["startsAt"].as_str().unwrap()).is_some());
    // Signed with the shared secret.
    let (_, headers, body) = received
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(path, _, _)| path == "/hook")
        .cloned()
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-eventide-signature"].to_str().unwrap(),
        format!("sha256={want}")
    );
    let slack = received.wait_for("/slack", 1).await;
    assert_eq!(slack.len(), 1);
    let text = received.bodies("/slack")[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("[FIRING] errors-spike") && text.contains("above 3"),
        "{text}"
    );
    assert!(text.contains("https://eventide.example"), "{text}");

    // The window passes: resolved, once.
    assert_eq!(received.wait_for("/hook", 2).await, ["firing", "resolved"]);
    let resolved = &received.bodies("/hook")[1]["alerts"][0];
    assert_ne!(resolved["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(resolved["startsAt"], alert["startsAt"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.statuses("/hook"), ["firing", "resolved"]);
    assert_eq!(received.bodies("/slack").len(), 2);

    // The history tells it newest first; Prometheus counts it.
    let history = server.get("/alerts/history?limit=100").await.json();
    let events: Vec<(String, Option<String>)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["rule"] == "errors-spike")
        .map(|entry| {
            (
                entry["event"].as_str().unwrap().to_owned(),
                entry["channel"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(events.first().unwrap().0, "notified", "{history}");
    assert_eq!(events.last().unwrap().0, "firing", "{history}");
    assert!(events.iter().any(|(event, _)| event == "resolved"));
    let metrics = server.get("/metrics/prometheus").await.text;
    let sent = prometheus_sample(
        &metrics,
        "eventide_alert_notifications_total{channel=\"hook\",outcome=\"sent\"}",
    );
    assert_eq!(sent, Some(2.0), "{metrics}");
    assert!(metrics.contains("eventide_alerts{state=\"inactive\"}"));
    // No secret anywhere.
    let rules = server.get("/alerts/rules").await.text;
    for shown in [rules, server.get("/alerts").await.text, server.logs()] {
        assert!(!shown.contains("SECRET-TOKEN") && !shown.contains("s3cret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absence_fires_when_a_heartbeat_stops_and_resolves_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let heartbeat_lost = json!({"name": "heartbeat-lost", "type": "heartbeat", "window": "2s",
                                "condition": "absent", "for": "2s", "channels": ["hook"]});
    let (received, server) = start_with(&dir, |_| rules(&[heartbeat_lost])).await;
    let beat = |server: &TestServer| {
        let api = server.api();
        async move { api.post_one(json!({"type": "heartbeat"})).await }
    };
    for _ in 0..8 {
        beat(&server).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(received.statuses("/hook").is_empty(), "beating: no notice");
    // The heartbeat stops: 2 s of window, then 2 s of `for`.
    assert_eq!(received.wait_for("/hook", 1).await, ["firing"]);
    assert_eq!(alert(&server, "heartbeat-lost").await["state"], "firing");
    beat(&server).await;
    assert_eq!(received.wait_for("/hook", 2).await, ["firing", "resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_suppresses_a_short_blip_and_keep_firing_for_rides_out_flapping() {
    let dir = tempfile::tempdir().unwrap();
    let blip = json!({"name": "blip", "type": "blip", "window": "3s", "condition": "above",
                      "threshold": 2, "for": "6s", "channels": ["hook"]});
    let flapping = json!({"name": "flapping", "type": "flap", "window": "2s", "condition": "above",
                          "threshold": 0, "keep_firing_for": "4s", "channels": ["hook"]});
    let (received, server) = start_with(&dir, |_| rules(&[blip, flapping])).await;
    post_events(&server, "blip", 5).await;
    // Flapping: events every 2.5 s, the 2 s window empty in between.
    for _ in 0..4 {
        post_events(&server, "flap", 1).await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
    received.wait_for("/hook", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut by_rule: Vec<(String, String)> = received
        .bodies("/hook")
        .iter()
        .map(|body| {
            (
                body["alerts"][0]["labels"]["alertname"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                body["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_rule.sort();
    assert_eq!(
        by_rule,
        [
            ("flapping".to_owned(), "firing".to_owned()),
            ("flapping".to_owned(), "resolved".to_owned())
        ],
        "one firing and one resolve for the flapping, nothing for the blip"
    );
    let history = server.get("/alerts/history?limit=1000").await.json();
    let blip: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["rule"] == "blip")
        .map(|entry| entry["event"].as_str().unwrap())
        .collect();
    assert_eq!(blip, ["cleared", "pending"], "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_interval_repeats_and_a_silence_suppresses() {
    let dir = tempfile::tempdir().unwrap();
    let never_seen = json!({"name": "never-seen", "type": "never-sent", "window": "1s",
                            "condition": "absent", "repeat_interval": "2s", "channels": ["hook"]});
    let silenced = json!({"name": "silenced", "type": "never-sent-either", "window": "1s",
                          "condition": "absent", "group_wait": "3s", "labels": {"team": "checkout"},
                          "channels": ["hook"]});
    let (received, server) = start_with(&dir, |_| rules(&[never_seen, silenced])).await;
    let silence = json!({"matchers": [{"name": "team", "value": "checkout"}], "duration": "1h",
                         "comment": "known"});
    server
        .api()
        .post_json("/alerts/silences", &silence)
        .await
        .expect_status(201);
    received.wait_for("/hook", 3).await;
    let statuses: Vec<String> = received
        .bodies("/hook")
        .iter()
        .map(|body| {
            format!(
                "{} {}",
                body["alerts"][0]["labels"]["alertname"].as_str().unwrap(),
                body["status"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        statuses.iter().all(|status| status == "never-seen firing"),
        "{statuses:?}"
    );
    let silenced = alert(&server, "silenced").await;
    assert_eq!(
        (&silenced["state"], &silenced["silenced"]),
        (&json!("firing"), &json!(true))
    );
    let silences = server.get("/alerts/silences").await.json();
    assert_eq!(silences["silences"][0]["active"], true, "{silences}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_puts_alerts_sharing_a_label_in_one_notice() {
    let dir = tempfile::tempdir().unwrap();
    // Two rules alike but for their names and types.
    let stopped = |name: &str, event_type: &str| {
        json!({"name": name, "type": event_type, "window": "1s", "condition": "absent",
               "labels": {"team": "checkout"}, "channels": ["hook", "by-team"]})
    };
    let team_rules = [
        stopped("checkout-stopped", "never-sent-checkout"),
        stopped("payments-stopped", "never-sent-payment"),
    ];
    let (received, server) = start_with(&dir, |addr| {
        let by_team = json!({"name": "by-team", "kind": "webhook",
                             "url": format!("http://{addr}/by-team"), "group_by": ["team"],
                             "group_wait": "1s", "group_interval": "1s"});
        channels(&[by_team]) + &rules(&team_rules)
    })
    .await;
    assert_alerts_check_passes(dir.path()).await;
    // By default (alertname), one notice per rule.
    received.wait_for("/hook", 2).await;
    // Grouped by team: both alerts in one notice.
    received.wait_for("/by-team", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hook = received.bodies("/hook");
    let mut keys: Vec<&str> = hook
        .iter()
        .map(|body| {
            assert_eq!(body["alerts"].as_array().unwrap().len(), 1, "{body}");
            body["groupKey"].as_str().unwrap()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "{}:{alertname=\"checkout-stopped\"}",
            "{}:{alertname=\"payments-stopped\"}"
        ]
    );
    let grouped = received.bodies("/by-team");
    assert_eq!(grouped.len(), 1, "one notice for the group: {grouped:?}");
    let notice = &grouped[0];
    assert_eq!(notice["groupKey"], "{}:{team=\"checkout\"}");
    assert_eq!(notice["groupLabels"], json!({"team": "checkout"}));
    assert_eq!(notice["commonLabels"]["team"], "checkout");
    assert!(
        notice["commonLabels"].get("alertname").is_none(),
        "{notice}"
    );
    let names: Vec<&str> = notice["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["checkout-stopped", "payments-stopped"]);
    let history = server.get("/alerts/history?limit=100").await.json();
    let notified = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"] == "notified" && entry["channel"] == "by-team")
        .count();
    assert_eq!(notified, 2, "one entry per alert notified: {history}");

    // A group_by that names no label is refused, with its line.
    let (_, stderr) = assert_alerts_check_refuses(
        dir.path(),
        "[alerts]\n\n[[alerts.channels]]\nname = \"x\"\nkind = \"log\"\n\
         group_by = [\"team name\"]\n",
    )
    .await;
    assert!(
        stderr.contains("line 6") && stderr.contains("group_by"),
        "{stderr}"
    );
}

/// Whether, within 10 s, Prometheus counts at least `count` failed attempts of `channel`.
async fn failed_attempts(server: &TestServer, channel: &str, count: f64) -> bool {
    let sample =
        format!("eventide_alert_notifications_total{{channel=\"{channel}\",outcome=\"failed\"}}");
    poll_until(Duration::from_secs(10), || async {
        let metrics = server.get("/metrics/prometheus").await.text;
        prometheus_sample(&metrics, &sample).filter(|failed| *failed >= count)
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_notice_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on yet.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let file = alerts_file(
        dir.path(),
        addr,
        &rules(&[
            json!({"name": "nothing", "type": "never-sent", "window": "1s",
                         "condition": "absent", "channels": ["hook"]}),
        ]),
    );
    let server = start(&dir, &file).await;
    assert!(
        failed_attempts(&server, "hook", 2.0).await,
        "failed attempts are counted"
    );
    // The service's own rule says so in the log, without the URL's secret.
    poll_until(Duration::from_secs(10), || async {
        server
            .logs()
            .contains("eventide-channel-failing")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no channel-failing alert in the log:\n{}", server.logs()));
    assert!(!server.logs().contains("SECRET-TOKEN"));

    let received = serve_receiver(tokio::net::TcpListener::bind(addr).await.unwrap());
    assert_eq!(received.wait_for("/hook", 1).await, ["firing"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.statuses("/hook"), ["firing"], "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_firing_neither_repeats_the_notice_nor_misses_the_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let burst = json!({"name": "burst", "type": "burst", "window": "5s", "condition": "above",
                       "threshold": 0, "channels": ["hook"]});
    let (received, mut server) = start_with(&dir, |_| rules(&[burst])).await;
    post_events(&server, "burst", 3).await;
    assert_eq!(received.wait_for("/hook", 1).await, ["firing"]);
    // Let the delivery be recorded, then kill -9 and start again while it still fires.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    assert_eq!(received.wait_for("/hook", 2).await, ["firing", "resolved"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.statuses("/hook"), ["firing", "resolved"]);
    // And again after the resolve: nothing more is sent.
    server.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.statuses("/hook"), ["firing", "resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_added_over_http_persist_and_file_rules_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_received, mut server) = start_with(&dir, |_| {
        rules(&[json!({"name": "from-file", "window": "1m", "condition": "absent"})])
    })
    .await;
    let api = server.api();
    let rule = json!({"name": "from-api", "type": "signup", "window": "10m",
                      "condition": "below", "threshold": 5, "channels": ["hook"]});
    api.post_json("/alerts/rules", &rule)
        .await
        .expect_status(201);
    api.post_json("/alerts/rules", &rule)
        .await
        .expect_status(409);
    let bad = json!({"name": "x", "window": "10m", "condition": "above", "channels": ["nope"]});
    api.post_json("/alerts/rules", &bad)
        .await
        .expect_status(400);
    let from_file = json!({"name": "from-file", "window": "1m", "condition": "absent"});
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let resp = api
            .request(
                method,
                "/alerts/rules/from-file",
                &[("content-type", "application/json")],
                Some(&from_file.to_string()),
            )
            .await;
        resp.expect_status(409);
        let body = resp.json();
        assert_eq!(body["error"], "rule_read_only", "{body}");
        assert!(body["message"].as_str().unwrap().contains("alerts file"));
    }
    server.restart().await;
    let rule = server.get("/alerts/rules/from-api").await;
    rule.expect_status(200);
    assert_eq!(rule.json()["origin"], "api");
    assert_eq!(rule.json()["rule"]["threshold"], 5);
    server
        .api()
        .delete("/alerts/rules/from-api")
        .await
        .expect_status(204);
    server
        .get("/alerts/rules/from-api")
        .await
        .expect_status(404);
}

#[tokio::test]
async fn alerts_check_validates_files_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    alerts_file(dir.path(), "127.0.0.1:9".parse().unwrap(), "");
    let stdout = assert_alerts_check_passes(dir.path()).await;
    assert!(stdout.contains("valid"), "{stdout}");
    let (bad, stderr) = assert_alerts_check_refuses(
        dir.path(),
        "[alerts]\ninterval = \"1s\"\n\n[[alerts.rules]]\nname = \"x\"\nwindow = \"10q\"\n\
         condition = \"absent\"\n",
    )
    .await;
    assert!(
        stderr.contains("line 6") && stderr.contains("window"),
        "{stderr}"
    );
    // The server refuses to start with it, saying the same.
    let (status, _, stderr) = run_binary(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--alerts-config",
        bad.to_str().unwrap(),
    ])
    .await;
    assert!(!status.success());
    assert!(stderr.contains("line 6"), "{stderr}");
}

/// Whether Python's aiosmtpd is installed; without it the email tests skip (see `python_has`).
fn aiosmtpd_available() -> bool {
    python_has("aiosmtpd", "pip install aiosmtpd")
}

/// A real SMTP server (aiosmtpd) on a free port of 127.0.0.1, keeping what it receives in a
/// maildir `dir/name`; `tls` adds its TLS arguments. Killed when dropped.
async fn smtp_server(
    dir: &Path,
    name: &str,
    tls: &[&str],
) -> (tokio::process::Child, u16, PathBuf) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mailbox = dir.join(name);
    let smtp = tokio::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(tls)
        .arg("-c")
        .arg("aiosmtpd.handlers.Mailbox")
        .arg(&mailbox)
        // Its log (a refused handshake is a traceback) beside the maildir.
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    poll_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .expect("aiosmtpd listens");
    (smtp, port, mailbox)
}

/// The first message `mailbox` receives, waiting up to 20 s.
async fn first_message(mailbox: &Path) -> Option<String> {
    poll_until(Duration::from_secs(20), || async {
        let entries = std::fs::read_dir(mailbox.join("new")).ok()?;
        let path = entries.flatten().next()?.path();
        std::fs::read_to_string(path).ok()
    })
    .await
}

/// An email channel `name` to the SMTP server on `host:port`, with the `tls` settings.
fn email_channel(name: &str, host: &str, port: u16, tls: &[(&str, &str)]) -> Value {
    let mut channel = json!({"name": name, "kind": "email", "smtp_host": host, "smtp_port": port,
                             "from": "Eventide <alerts@eventide.test>",
                             "to": ["oncall@example.test"], "group_wait": "0s",
                             "group_interval": "1s", "max_backoff": "1s"});
    for (key, value) in tls {
        channel[*key] = json!(value);
    }
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_smtp, port, mailbox) = smtp_server(dir.path(), "mailbox", &[]).await;
    let mail = email_channel("mail", "127.0.0.1", port, &[("tls", "none")]);
    let mail_me = json!({"name": "mail-me", "type": "never-sent", "window": "1s",
                         "condition": "absent", "channels": ["mail"]});
    let _started = start_with(&dir, |_| channels(&[mail]) + &rules(&[mail_me])).await;
    let message = first_message(&mailbox)
        .await
        .expect("a message in the mailbox");
    assert!(message.contains("Subject: [FIRING] mail-me"), "{message}");
    assert!(message.contains("oncall@example.test"), "{message}");
}

/// STARTTLS and implicit TLS to SMTP servers with a self-signed certificate, trusted through
/// the channel's `ca_file`; without it, the same server is refused (and nothing is sent in
/// clear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_implicit_tls_trusts_the_ca_file() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a test certificate");
    let (cert, key) = (dir.path().join("smtp.pem"), dir.path().join("smtp.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // aiosmtpd requires STARTTLS before MAIL by default.
    let (_starttls, starttls_port, starttls_box) = smtp_server(
        dir.path(),
        "starttls",
        &["--tlscert", cert, "--tlskey", key],
    )
    .await;
    let (_smtps, smtps_port, smtps_box) = smtp_server(
        dir.path(),
        "smtps",
        &["--smtpscert", cert, "--smtpskey", key],
    )
    .await;
    // The certificate's name is localhost.
    let mail = [
        (
            "starttls",
            starttls_port,
            [("tls", "starttls"), ("ca_file", cert)].as_slice(),
        ),
        ("smtps", smtps_port, &[("tls", "tls"), ("ca_file", cert)]),
        ("untrusted", starttls_port, &[("tls", "starttls")]),
    ]
    .map(|(name, port, tls)| email_channel(name, "localhost", port, tls));
    let mail_me = json!({"name": "mail-me-securely", "type": "never-sent", "window": "1s",
                         "condition": "absent", "channels": ["starttls", "smtps", "untrusted"]});
    let (_received, server) = start_with(&dir, |_| channels(&mail) + &rules(&[mail_me])).await;
    assert_alerts_check_passes(dir.path()).await;
    for mailbox in [&starttls_box, &smtps_box] {
        let message = first_message(mailbox)
            .await
            .unwrap_or_else(|| panic!("no message in {}:\n{}", mailbox.display(), server.logs()));
        assert!(
            message.contains("Subject: [FIRING] mail-me-securely"),
            "{message}"
        );
    }
    // Without the certificate trusted, the channel fails, saying why.
    assert!(
        failed_attempts(&server, "untrusted", 1.0).await,
        "an untrusted certificate is refused"
    );
    let health = server.get("/health/detailed").await.text;
    assert!(
        server.logs().contains("certificate") || health.contains("certificate"),
        "the failure says why: {health}\n{}",
        server.logs()
    );
    let received = std::fs::read_dir(starttls_box.join("new")).unwrap().count();
    assert_eq!(received, 1, "only the trusted channel's message arrived");

    // A ca_file that cannot be read, or with tls = "none", is refused by alerts check.
    for (tls, want) in [
        (
            [("tls", "tls"), ("ca_file", "/nonexistent.pem")],
            "cannot read",
        ),
        ([("tls", "none"), ("ca_file", cert)], "ca_file"),
    ] {
        let channel = email_channel("m", "localhost", 25, &tls);
        let text = format!("[alerts]\n{}", channels(&[channel]));
        let (_, stderr) = assert_alerts_check_refuses(dir.path(), &text).await;
        assert!(stderr.contains(want), "{stderr}");
    }
}

/// The notices of the rule `rule` sent to `path`: their statuses.
fn statuses_of(received: &Received, path: &str, rule: &str) -> Vec<String> {
    received
        .bodies(path)
        .iter()
        .filter(|body| body["groupLabels"]["alertname"] == rule)
        .map(|body| body["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (up to 20 s) until `rule` was notified `count` times to `path`.
async fn wait_for_rule(received: &Received, path: &str, rule: &str, count: usize) -> Vec<String> {
    poll_until(Duration::from_secs(20), || async {
        (statuses_of(received, path, rule).len() >= count).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{rule}: {count} notices expected, got {:?}",
            statuses_of(received, path, rule)
        )
    });
    statuses_of(received, path, rule)
}

/// What an alerts file adds to route the service's own rules to the webhook `hook`.
const HEALTH_TO_HOOK: &str = "\n[alerts.health]\nchannels = [\"hook\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_retention_run_is_notified_and_resolved_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (received, addr) = receiver().await;
    let file = alerts_file(dir.path(), addr, HEALTH_TO_HOOK);
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--alerts-config",
            file.to_str().unwrap(),
            "--retention",
            "3s",
            "--retention-interval",
            "1s",
        ],
    )
    .await;
    const RULE: &str = "eventide-retention-failed";
    // Events stored now, for retention to delete in 3 s.
    post_events(&server, "expiring", 3).await;
    poll_until(Duration::from_secs(10), || async {
        let page = server.get("/events?type=expiring").await.json();
        (page["events"].as_array().map_or(0, Vec::len) == 3).then_some(())
    })
    .await
    .expect("the events are stored");
    // Another process holds the database's write lock longer than the store waits for it
    // (5 s): the retention runs meanwhile fail to delete them.
    let db = rusqlite::Connection::open(dir.path().join("data").join("events.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    poll_until(Duration::from_secs(20), || async {
        (!statuses_of(&received, "/hook", RULE).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no notice of {RULE}:\n{}", server.logs()));
    let firing = statuses_of(&received, "/hook", RULE);
    assert_eq!(firing, ["firing"]);
    let notice = received
        .bodies("/hook")
        .into_iter()
        .find(|body| body["groupLabels"]["alertname"] == RULE)
        .unwrap();
    assert_eq!(notice["alerts"][0]["labels"]["severity"], "critical");
    assert_eq!(
        notice["alerts"][0]["annotations"]["summary"],
        "the last retention run failed"
    );
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    assert_eq!(
        wait_for_rule(&received, "/hook", RULE, 2).await,
        ["firing", "resolved"]
    );
    assert!(
        server.logs().contains("retention run failed"),
        "{}",
        server.logs()
    );
}

/// "Not ready for 30 s": a node whose Redis is cut off is not ready; 30 s later the health
/// rule fires, and it resolves once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_ready_for_30_s_is_notified_and_resolved() {
    let Some(cluster) = Cluster::new("alerts_ready", HEALTH_TO_HOOK).await else {
        return;
    };
    let received = &cluster.received;
    let proxy = common::redis::Proxy::start(&cluster.redis).await;
    let mut args = cluster.args();
    args[1] = &proxy.url;
    let server = TestServer::start_temp(&args).await;
    const RULE: &str = "eventide-not-ready";
    server.get("/health/ready").await.expect_status(200);
    proxy.set_up(false);
    let cut_at = std::time::Instant::now();
    poll_until(Duration::from_secs(30), || async {
        (server.get("/health/ready").await.status == 503).then_some(())
    })
    .await
    .expect("not ready with Redis cut off");
    let firing = poll_until(Duration::from_secs(60), || async {
        (!statuses_of(received, "/hook", RULE).is_empty()).then_some(cut_at.elapsed())
    })
    .await
    .unwrap_or_else(|| panic!("no notice of {RULE}:\n{}", server.logs()));
    assert!(
        firing >= Duration::from_secs(30),
        "fired only after 30 s not ready: {firing:?}"
    );
    assert_eq!(statuses_of(received, "/hook", RULE), ["firing"]);
    proxy.set_up(true);
    assert_eq!(
        wait_for_rule(received, "/hook", RULE, 2).await,
        ["firing", "resolved"]
    );
}

/// A PostgreSQL schema and Redis keys of a test's own, for the nodes of a cluster, with a
/// directory of its own for their alerts file, whose `hook` channel goes to `received`.
struct Cluster {
    schema: common::postgres::TestSchema,
    redis: common::redis::TestRedis,
    received: Received,
    file: PathBuf,
    /// Holds the alerts file until the test ends.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// With `extra` in the alerts file; `None` (the test skipped) without PostgreSQL or Redis,
    /// except under CI=true.
    async fn new(label: &str, extra: &str) -> Option<Cluster> {
        let schema = common::postgres::TestSchema::new(label).await?;
        let redis = common::redis::TestRedis::new(label)?;
        let dir = tempfile::tempdir().unwrap();
        let (received, addr) = receiver().await;
        let file = alerts_file(dir.path(), addr, extra);
        Some(Cluster {
            schema,
            redis,
            received,
            file,
            _dir: dir,
        })
    }

    /// The arguments of a node on them, with the alerts file.
    fn args(&self) -> [&str; 10] {
        [
            "--queue",
            &self.redis.url,
            "--queue-prefix",
            &self.redis.prefix,
            "--store",
            &self.schema.url,
            "--postgres-schema",
            &self.schema.name,
            "--alerts-config",
            self.file.to_str().unwrap(),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_added_are_notified() {
    let Some(cluster) = Cluster::new("alerts_dead", HEALTH_TO_HOOK).await else {
        return;
    };
    let received = &cluster.received;
    let server = TestServer::start_temp(&cluster.args()).await;
    const RULE: &str = "eventide-dead-letters";
    // The rule counts dead letters added between evaluations: after the first one.
    poll_until(Duration::from_secs(10), || async {
        alert(&server, RULE).await["evaluated_at"]
            .is_string()
            .then_some(())
    })
    .await
    .expect("the health rules are evaluated");
    assert!(statuses_of(received, "/hook", RULE).is_empty());
    // An entry without an event payload, as a broken producer might write it: the worker
    // sets it aside as a dead letter.
    let _: String = ::redis::cmd("XADD")
        .arg(&cluster.redis.keys.stream)
        .arg("*")
        .arg("junk")
        .arg("not an event")
        .query(&mut cluster.redis.connection())
        .unwrap();
    assert_eq!(
        wait_for_rule(received, "/hook", RULE, 2).await,
        ["firing", "resolved"]
    );
    let firing = received
        .bodies("/hook")
        .into_iter()
        .find(|body| body["groupLabels"]["alertname"] == RULE)
        .unwrap();
    assert_eq!(firing["alerts"][0]["value"], 1.0, "{firing}");
    let dead_letters = server.get("/dead-letters").await.json();
    assert_eq!(
        dead_letters["dead_letters"].as_array().unwrap().len(),
        1,
        "{dead_letters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_leader_notifies_and_another_takes_over_without_repeating() {
    let cluster_quiet = json!({"name": "cluster-quiet", "type": "cluster-beat", "window": "1s",
                               "condition": "absent", "channels": ["hook"]});
    let Some(cluster) = Cluster::new("alerts", &rules(&[cluster_quiet])).await else {
        return;
    };
    let received = &cluster.received;
    let args = cluster.args();
    let mut a = TestServer::start_temp(&args).await;
    let mut b = TestServer::start_temp(&args).await;
    assert_eq!(received.wait_for("/hook", 1).await, ["firing"]);
    const LEADS: &str = "now leads alerting";
    let (leader, follower): (&mut TestServer, &TestServer) = if a.logs().contains(LEADS) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert!(leader.logs().contains(LEADS), "{}", leader.logs());
    assert!(
        !follower.logs().contains(LEADS),
        "one leader: {}",
        follower.logs()
    );
    // A follower shows the leader's state.
    poll_until(Duration::from_secs(10), || async {
        (alert(follower, "cluster-quiet").await["state"] == "firing").then_some(())
    })
    .await
    .expect("the follower shows the alert firing");

    leader.kill9().await;
    let killed = std::time::Instant::now();
    poll_until(Duration::from_secs(10), || async {
        follower.logs().contains(LEADS).then_some(())
    })
    .await
    .expect("the follower takes the lead");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took over after {took:?}: within two intervals"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received.statuses("/hook"),
        ["firing"],
        "no repeat across the failover"
    );
    // The new leader announces the end of what the old one announced.
    follower.post_one(json!({"type": "cluster-beat"})).await;
    assert_eq!(received.wait_for("/hook", 2).await, ["firing", "resolved"]);
}
