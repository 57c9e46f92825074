//! Event metrics through the real server: windows (with late, future-dated and edge events),
//! zero-filled time series for each interval (from memory and from the store's rollups),
//! the summary, rebuilding after restarts, parameter errors, and bounded answers and memory
//! whatever the number of distinct types and services (folded as `(other)`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sse::Sse;
use common::*;
use eventide::event::timefmt::{format_rfc3339_ms, parse_rfc3339_ms};
use serde_json::{json, Value};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn floor(ms: i64, size: i64) -> i64 {
    ms - ms.rem_euclid(size)
}

/// An event as posted and as the test remembers it.
#[derive(Clone)]
struct Sent {
    ts: i64,
    kind: &'static str,
    service: Option<&'static str>,
}

fn sent(ts: i64, kind: &'static str, service: Option<&'static str>) -> Sent {
    Sent { ts, kind, service }
}

async fn post(api: &Api, events: &[Sent]) {
    let body: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut value = json!({"type": event.kind, "timestamp": format_rfc3339_ms(event.ts)});
            if let Some(service) = event.service {
                value["service"] = json!(service);
            }
            value
        })
        .collect();
    api.post_all(&body).await;
}

fn time_field(body: &Value, name: &str) -> i64 {
    parse_rfc3339_ms(
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {body}")),
    )
    .unwrap()
}

/// What `/metrics` should say for `events` given the window the answer reports: events from
/// its `from` up to the end of the second (or minute) holding its `to`.
fn expected_window(events: &[Sent], from: i64, end: i64) -> Value {
    let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_service: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for event in events.iter().filter(|e| (from..end).contains(&e.ts)) {
        total += 1;
        *by_type.entry(event.kind).or_default() += 1;
        if let Some(service) = event.service {
            *by_service.entry(service).or_default() += 1;
        }
    }
    json!({"total": total, "by_type": by_type, "by_service": by_service})
}

async fn window(api: &Api, window: &str) -> Value {
    let resp = api.get(&format!("/metrics?window={window}")).await;
    resp.expect_status(200);
    resp.json()
}

#[track_caller]
fn check_window(body: &Value, events: &[Sent], seconds: i64, granularity: i64) {
    let from = time_field(body, "from");
    let to = time_field(body, "to");
    let end = floor(to, granularity) + granularity;
    assert_eq!(from % granularity, 0, "{body}");
    assert!(
        end - from >= seconds * SECOND,
        "the window covers at least what was asked: {body}"
    );
    assert!(end - from < seconds * SECOND + granularity, "{body}");
    let expected = expected_window(events, from, end);
    let got = json!({"total": body["total"], "by_type": body["by_type"], "by_service": body["by_service"]});
    assert_eq!(got, expected, "answer: {body}");
    assert_eq!(body["window_seconds"], json!(seconds));
    let rate = body["events_per_second"].as_f64().unwrap();
    assert!((rate - body["total"].as_f64().unwrap() / seconds as f64).abs() < 1e-9);
}

#[tokio::test]
async fn windows_count_exactly_with_late_future_and_edge_events() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let now = now_ms();
    let mut events = Vec::new();
    // Every 100 ms across both edges of a 60 s window, so whichever second the answer starts
    // at, events fall on both sides of it (and exactly on it).
    for i in 0..60 {
        events.push(sent(now - 63 * SECOND + i * 100, "edge", Some("web")));
    }
    events.push(sent(now - 10 * SECOND, "click", Some("web")));
    events.push(sent(now - 20 * SECOND, "click", None));
    events.push(sent(now - 30 * SECOND, "view", Some("api")));
    events.push(sent(now - 30 * MINUTE, "late", Some("batch"))); // in 1h, not in 60s
    events.push(sent(now - 3 * HOUR, "later", Some("batch"))); // only in windows of hours
    events.push(sent(now - 30 * HOUR, "ancient", Some("batch"))); // in no window
    events.push(sent(now + HOUR, "future", Some("web"))); // not yet in any window
    post(&api, &events).await;

    let body = window(&api, "60s").await;
    check_window(&body, &events, 60, SECOND);
    assert!(body["by_type"]["edge"].as_u64().unwrap() > 0, "{body}");
    assert!(body["by_type"].get("late").is_none(), "{body}");

    let default = api.get("/metrics").await;
    check_window(&default.json(), &events, 60, SECOND);
    check_window(&window(&api, "1h").await, &events, 3_600, SECOND);
    check_window(&window(&api, "90m").await, &events, 5_400, MINUTE);
    check_window(&window(&api, "24h").await, &events, 86_400, MINUTE);
    let day = window(&api, "24h").await;
    assert_eq!(day["by_type"]["later"], json!(1), "{day}");
    assert!(day["by_type"].get("ancient").is_none(), "{day}");
    assert!(day["by_type"].get("future").is_none(), "{day}");
}

#[tokio::test]
async fn metrics_survive_restarts_and_crashes() {
    let mut server = TestServer::start_temp(&[]).await;
    let now = now_ms();
    let events = vec![
        sent(now - 5 * SECOND, "a", Some("x")),
        sent(now - 40 * MINUTE, "b", Some("y")),
        sent(now - 5 * HOUR, "c", None),
        sent(now + 30 * MINUTE, "d", Some("x")),
    ];
    post(&server.api(), &events).await;
    let before = server.api().get("/metrics/summary").await.json();
    assert_eq!(before["total_events"], json!(4), "{before}");

    server.terminate().await;
    server.restart().await;
    check_window(&window(&server.api(), "1h").await, &events, 3_600, SECOND);
    check_window(&window(&server.api(), "10h").await, &events, 36_000, MINUTE);

    // Killed right after acknowledging: the events are indexed (and counted) at restart.
    let more = vec![sent(now - 2 * SECOND, "e", Some("x"))];
    post(&server.api(), &more).await;
    server.kill9().await;
    server.restart().await;
    let all: Vec<Sent> = events.iter().chain(&more).cloned().collect();
    check_window(&window(&server.api(), "1h").await, &all, 3_600, SECOND);
    let summary = server.api().get("/metrics/summary").await.json();
    assert_eq!(summary["total_events"], json!(5), "{summary}");
}

async fn timeseries(api: &Api, query: &str) -> Value {
    let resp = api.get(&format!("/metrics/timeseries?{query}")).await;
    resp.expect_status(200);
    resp.json()
}

/// The series of a time series answer as key -> [(bucket start ms, count)].
fn series_of(body: &Value) -> BTreeMap<String, Vec<(i64, u64)>> {
    body["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {body}"))
        .iter()
        .map(|series| {
            let points = series["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|point| {
                    (
                        parse_rfc3339_ms(point[0].as_str().unwrap()).unwrap(),
                        point[1].as_u64().unwrap(),
                    )
                })
                .collect();
            (series["key"].as_str().unwrap().to_owned(), points)
        })
        .collect()
}

/// Expected points: every bucket of `size` from `first` to `last` inclusive, zero-filled.
fn expected_points(events: &[&Sent], first: i64, last: i64, size: i64) -> Vec<(i64, u64)> {
    (0..=(last - first) / size)
        .map(|i| {
            let bucket = first + i * size;
            let count = events
                .iter()
                .filter(|e| floor(e.ts, size) == bucket)
                .count() as u64;
            (bucket, count)
        })
        .collect()
}

#[tokio::test]
async fn time_series_are_zero_filled_for_each_interval() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let now = now_ms();
    let this_minute = floor(now, MINUTE);
    let events = vec![
        sent(this_minute - 3 * MINUTE + 1, "a", Some("x")),
        sent(this_minute - 3 * MINUTE + 59_999, "a", Some("y")),
        sent(this_minute - MINUTE, "b", Some("x")),
        sent(this_minute - 2 * HOUR, "a", None),
        sent(this_minute - 3 * DAY, "b", Some("y")), // only in the store's rollups
        sent(this_minute - 3 * DAY - HOUR, "a", Some("x")),
        sent(this_minute - 80 * DAY, "b", Some("x")), // older than memory holds
        sent(this_minute - 80 * DAY + 90 * SECOND, "a", Some("x")),
    ];
    post(&api, &events).await;
    let all: Vec<&Sent> = events.iter().collect();

    // Default: the last 60 minutes, one series "all".
    let body = timeseries(&api, "").await;
    assert_eq!(body["interval"], json!("minute"));
    let series = series_of(&body);
    assert_eq!(series.keys().collect::<Vec<_>>(), ["all"]);
    let last = floor(time_field(&body, "to") - 1, MINUTE);
    assert_eq!(
        series["all"],
        expected_points(&all, last - 59 * MINUTE, last, MINUTE)
    );
    assert!(
        series["all"].iter().filter(|(_, count)| *count > 0).count() == 2,
        "{body}"
    );

    // Each interval over an explicit range, grouped by type.
    for (interval, size, span) in [
        ("minute", MINUTE, 10 * MINUTE),
        ("hour", HOUR, 5 * DAY),
        ("day", DAY, 10 * DAY),
    ] {
        // Minutes that far back: a 10-minute range around the old events.
        let to_ms = if span > 20 * DAY && size == MINUTE {
            now - span + 10 * MINUTE
        } else {
            now
        };
        let from = format_rfc3339_ms(now - span);
        let to = format_rfc3339_ms(to_ms);
        let query = format!("interval={interval}&group_by=type&from={from}&to={to}");
        let body = timeseries(&api, &query.replace('+', "%2B")).await;
        let series = series_of(&body);
        let (first, last) = (floor(now - span, size), floor(to_ms, size));
        for kind in ["a", "b"] {
            let of_kind: Vec<&Sent> = events.iter().filter(|e| e.kind == kind).collect();
            let expected = expected_points(&of_kind, first, last, size);
            if expected.iter().all(|(_, count)| *count == 0) {
                assert!(!series.contains_key(kind), "{interval}: {body}");
            } else {
                assert_eq!(series[kind], expected, "{interval} {kind}: {body}");
            }
        }
    }

    // Filters, and grouping by service (events without one are in no service's series).
    let from = format_rfc3339_ms(now - 4 * DAY);
    let body = timeseries(
        &api,
        &format!("interval=day&group_by=service&type=a&from={from}"),
    )
    .await;
    let series = series_of(&body);
    assert_eq!(series.keys().collect::<Vec<_>>(), ["x", "y"], "{body}");
    let a_x: Vec<&Sent> = events
        .iter()
        .filter(|e| e.kind == "a" && e.service == Some("x"))
        .collect();
    // The range ends when the server answered (a day or an hour may have begun since `now`).
    let last = floor(time_field(&body, "to") - 1, DAY);
    assert_eq!(
        series["x"],
        expected_points(&a_x, floor(now - 4 * DAY, DAY), last, DAY)
    );
    let body = timeseries(&api, "interval=hour&service=y").await;
    let y: Vec<&Sent> = events.iter().filter(|e| e.service == Some("y")).collect();
    let last = floor(time_field(&body, "to") - 1, HOUR);
    assert_eq!(
        series_of(&body)["all"],
        expected_points(&y, last - 59 * HOUR, last, HOUR)
    );
}

#[tokio::test]
async fn time_series_refuse_too_many_points_and_bad_parameters() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let resp = api
        .get("/metrics/timeseries?interval=minute&from=2020-01-01T00:00:00Z")
        .await;
    let body = resp.expect_error(400);
    assert!(
        body["message"].as_str().unwrap().contains("10000"),
        "{body}"
    );
    for (query, parameter) in [
        ("interval=week", "interval"),
        ("group_by=user", "group_by"),
        ("from=yesterday", "from"),
        ("from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
        ("colour=red", "colour"),
    ] {
        let resp = api.get(&format!("/metrics/timeseries?{query}")).await;
        resp.expect_error(400);
        assert_names_parameter(&resp, parameter);
    }
    for window in ["0s", "25h", "1500ms", "soon", "-5s"] {
        let resp = api.get(&format!("/metrics?window={window}")).await;
        resp.expect_error(400);
        assert_names_parameter(&resp, "window");
    }
    let resp = api.get("/metrics/summary?x=1").await;
    resp.expect_error(400);
    assert_names_parameter(&resp, "x");
}

#[tokio::test]
async fn summary_counts_the_last_day() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let now = now_ms();
    const SERVICES: [&str; 12] = [
        "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
    ];
    // Services s0 (12 events), s1 (11) ... s11 (1): a clear top 10.
    let mut events: Vec<Sent> = SERVICES
        .iter()
        .enumerate()
        .flat_map(|(i, service)| (i..12).map(move |_| sent(now - 10 * MINUTE, "t", Some(service))))
        .collect();
    events.push(sent(now - 5 * HOUR, "old", None));
    events.push(sent(now - 2 * DAY, "older", Some("s0")));
    post(&api, &events).await;

    let body = api.get("/metrics/summary").await.json();
    assert_eq!(body["total_events"], json!(80), "{body}");
    assert_eq!(body["events_last_hour"], json!(78), "{body}");
    assert_eq!(body["events_last_24h"], json!(79), "{body}");
    let average = body["avg_events_per_minute_24h"].as_f64().unwrap();
    assert!((average - 79.0 / 1440.0).abs() < 1e-9, "{body}");
    let services = body["top_services"].as_array().unwrap();
    assert_eq!(services.len(), 10, "{body}");
    assert_eq!(services[0], json!({"service": "s0", "count": 12}));
    assert_eq!(services[9], json!({"service": "s9", "count": 3}));
    assert_eq!(
        body["top_types"],
        json!([{"type": "t", "count": 78}, {"type": "old", "count": 1}])
    );
    let hours = body["by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    let this_hour = floor(now, HOUR);
    for (i, hour) in hours.iter().enumerate() {
        let start = this_hour - (23 - i as i64) * HOUR;
        assert_eq!(
            parse_rfc3339_ms(hour["hour"].as_str().unwrap()).unwrap(),
            start
        );
        let expected = events.iter().filter(|e| floor(e.ts, HOUR) == start).count();
        assert_eq!(hour["count"], json!(expected), "{body}");
    }
}

#[tokio::test]
async fn prometheus_exposes_the_service_itself() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let resp = api
        .post_events(&json!([
            {"type": "a", "id": "k1"},
            {"type": "a", "id": "k1"},
            {"type": ""},
            {"type": "b"}
        ]))
        .await;
    resp.expect_status(202);
    api.post_events(&json!({"type": ""}))
        .await
        .expect_error(400);
    api.get_events(&[]).await.expect_status(200);
    api.get("/nowhere").await.expect_error(404);

    let resp = api.get("/metrics/prometheus").await;
    resp.expect_status(200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = &resp.text;
    let value = |series: &str| {
        prometheus_sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value("eventide_events_ingested_total"), 2.0);
    assert_eq!(value("eventide_events_duplicate_total"), 1.0);
    assert_eq!(
        value("eventide_events_rejected_total{reason=\"invalid\"}"),
        2.0
    );
    assert_eq!(value("eventide_ingest_pending_capacity"), 100_000.0);
    assert_eq!(value("eventide_ingest_pending_events"), 0.0);
    assert_eq!(value("eventide_stream_subscribers"), 0.0);
    assert_eq!(
        value("eventide_http_requests_total{route=\"/events\",method=\"POST\",status=\"202\"}"),
        1.0
    );
    assert_eq!(
        value("eventide_http_requests_total{route=\"/events\",method=\"POST\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        value("eventide_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"),
        1.0
    );
    assert!(value("eventide_commit_batch_events_count") >= 1.0, "{text}");
    assert!(
        value("eventide_commit_duration_seconds_bucket{le=\"+Inf\"}") >= 1.0,
        "{text}"
    );
    assert!(text.contains("eventide_http_request_duration_seconds_bucket{route=\"/events\""));
}

const OTHER: &str = "(other)";

/// A name of 100 characters (the longest allowed), distinct for each `i`.
fn long_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:07}-")
        .chars()
        .chain(std::iter::repeat('.'))
        .take(100)
        .collect()
}

/// Posts `count` events from number `first` on, each with a type and a service of its own,
/// spread over the last ten minutes, in requests of 10,000 (the most one may hold).
async fn post_distinct(api: &Api, first: usize, count: usize) {
    let now = now_ms();
    let events: Vec<Value> = (first..first + count)
        .map(|i| {
            json!({
                "type": long_name("type", i),
                "service": long_name("service", i),
                "timestamp": format_rfc3339_ms(now - (i % 600) as i64 * SECOND),
            })
        })
        .collect();
    for batch in events.chunks(10_000) {
        api.post_all(batch).await;
    }
}

/// Checks that `by_type` and `by_service` of a window report hold at most `top` names
/// besides `(other)`, which they have, and add up to `total`.
#[track_caller]
fn check_folded(body: &Value, total: u64, top: usize) {
    assert_eq!(
        body["total"],
        json!(total),
        "{}",
        truncate(&body.to_string(), 2_000)
    );
    for map in ["by_type", "by_service"] {
        let counts = body[map].as_object().unwrap();
        assert!(counts.len() <= top + 1, "{map}: {} names", counts.len());
        assert!(counts[OTHER].as_u64().unwrap() > 0, "{map} without {OTHER}");
        let sum: u64 = counts.values().map(|count| count.as_u64().unwrap()).sum();
        assert_eq!(sum, total, "{map} does not add up to the total");
    }
}

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1_024
}

#[tokio::test]
async fn fifty_thousand_distinct_names_keep_every_answer_small() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    // A frequent type and service first, so that they are among those tracked.
    let now = now_ms();
    let popular: Vec<Value> = (0..30)
        .map(|_| json!({"type": "popular", "service": "main", "timestamp": format_rfc3339_ms(now)}))
        .collect();
    api.post_all(&popular).await;
    post_distinct(&api, 0, 50_000).await;
    let total = 50_030;

    for window in ["1h", "24h"] {
        let resp = api.get(&format!("/metrics?window={window}")).await;
        resp.expect_status(200);
        eprintln!("/metrics?window={window}: {} bytes", resp.text.len());
        assert!(resp.text.len() < 100_000, "{} bytes", resp.text.len());
        let body = resp.json();
        check_folded(&body, total, 50);
        assert_eq!(body["by_type"]["popular"], json!(30));
        assert_eq!(body["by_service"]["main"], json!(30));
    }
    let body = api.get("/metrics?window=1h&top=5").await.json();
    check_folded(&body, total, 5);
    assert_eq!(body["by_type"].as_object().unwrap().len(), 6, "{body}");
    assert_eq!(body["by_type"]["popular"], json!(30));
    let body = api.get("/metrics?window=1h&top=0").await.json();
    assert_eq!(body["by_type"], json!({OTHER: total}));
    assert_eq!(body["by_service"], json!({OTHER: total}));
    for top in ["51", "-1", "many"] {
        let resp = api.get(&format!("/metrics?top={top}")).await;
        resp.expect_error(400);
        assert_names_parameter(&resp, "top");
    }

    // The summary: the ten largest, and the rest as a total.
    let resp = api.get("/metrics/summary").await;
    eprintln!("/metrics/summary: {} bytes", resp.text.len());
    let body = resp.json();
    assert_eq!(body["events_last_24h"], json!(total));
    assert_eq!(
        body["top_types"][0],
        json!({"type": "popular", "count": 30})
    );
    assert_eq!(
        body["top_services"][0],
        json!({"service": "main", "count": 30})
    );
    for (list, other) in [
        ("top_types", "other_types"),
        ("top_services", "other_services"),
    ] {
        let top = body[list].as_array().unwrap();
        assert_eq!(top.len(), 10, "{body}");
        let listed: u64 = top
            .iter()
            .map(|entry| entry["count"].as_u64().unwrap())
            .sum();
        assert_eq!(listed, 39, "{body}");
        assert_eq!(body[other], json!(total - 39), "{body}");
    }

    // Pushes list the 20 largest by default.
    let mut pushes = Sse::open(&api, "/metrics?window=1h", None).await;
    for _ in 0..2 {
        let frame = pushes.next(Duration::from_secs(10)).await;
        assert_eq!(frame.event, "metrics");
        eprintln!("/stream/metrics push: {} bytes", frame.data.len());
        assert!(frame.data.len() < 10_000, "{} bytes", frame.data.len());
        check_folded(&frame.json(), total, 20);
    }
    drop(pushes);
    let mut pushes = Sse::open(&api, "/metrics?window=1h&top=3", None).await;
    let push = pushes.next(Duration::from_secs(10)).await.json();
    check_folded(&push, total, 3);
    assert_eq!(push["by_service"]["main"], json!(30));
    drop(pushes);

    // A time series by type: the names tracked, then "(other)". The events span the 10
    // minutes before they were sent, so by days from the first to now: one day, or two
    // just after midnight.
    let range = format!(
        "interval=day&from={}&to={}",
        format_rfc3339_ms(now - 600 * SECOND),
        format_rfc3339_ms(now_ms())
    );
    let body = timeseries(&api, &format!("{range}&group_by=type")).await;
    let keys = str_fields(&body["series"], "key");
    assert_eq!(keys.len(), 1_001, "1,000 types and {OTHER}");
    assert_eq!((keys[0], keys[1_000]), ("popular", OTHER));
    let counted: u64 = series_of(&body)
        .values()
        .flatten()
        .map(|point| point.1)
        .sum();
    assert_eq!(counted, total);
    // A type counted as "(other)" still has its exact series, from the rollups.
    let folded = (0..50_000)
        .map(|i| long_name("type", i))
        .find(|name| !keys.contains(&name.as_str()))
        .unwrap();
    let body = timeseries(&api, &format!("{range}&type={folded}")).await;
    let counted: u64 = series_of(&body)["all"].iter().map(|point| point.1).sum();
    assert_eq!(counted, 1, "{body}");
}

#[tokio::test]
async fn other_appears_only_when_names_were_folded() {
    let mut server =
        TestServer::start_temp(&["--max-tracked-types", "2", "--max-tracked-services", "2"]).await;
    let now = now_ms();
    let mut events = Vec::new();
    for (kind, service, times) in [("a", "x", 3), ("b", "y", 2)] {
        for _ in 0..times {
            events.push(sent(now - 5 * SECOND, kind, Some(service)));
        }
    }
    post(&server.api(), &events).await;
    let body = window(&server.api(), "1h").await;
    check_window(&body, &events, 3_600, SECOND);
    let summary = server.api().get("/metrics/summary").await.json();
    assert_eq!(
        (
            summary["other_types"].clone(),
            summary["other_services"].clone()
        ),
        (json!(0), json!(0))
    );
    let types = |body: &Value| series_of(body).keys().cloned().collect::<Vec<_>>();
    let hour = "interval=hour&group_by=type";
    assert_eq!(types(&timeseries(&server.api(), hour).await), ["a", "b"]);

    // A third type and service: beyond the limits.
    let late = [sent(now - 4 * SECOND, "c", Some("z"))];
    post(&server.api(), &late).await;
    let body = window(&server.api(), "1h").await;
    assert_eq!(body["by_type"], json!({"a": 3, "b": 2, OTHER: 1}));
    assert_eq!(body["by_service"], json!({"x": 3, "y": 2, OTHER: 1}));
    let summary = server.api().get("/metrics/summary").await.json();
    assert_eq!(
        summary["top_types"],
        json!([{"type": "a", "count": 3}, {"type": "b", "count": 2}])
    );
    assert_eq!(
        (
            summary["other_types"].clone(),
            summary["other_services"].clone()
        ),
        (json!(1), json!(1))
    );
    let body = timeseries(&server.api(), hour).await;
    let keys = str_fields(&body["series"], "key");
    assert_eq!(keys, ["a", "b", OTHER]);
    // Filtered on the folded name, the series is exact (from the rollups).
    let body = timeseries(&server.api(), "interval=hour&type=c").await;
    assert_eq!(
        series_of(&body)["all"].iter().map(|p| p.1).sum::<u64>(),
        1,
        "{body}"
    );

    // At a restart the most frequent names of the rollups are the ones tracked.
    let frequent: Vec<Sent> = (0..10)
        .map(|_| sent(now - 3 * SECOND, "d", Some("w")))
        .collect();
    post(&server.api(), &frequent).await;
    let body = window(&server.api(), "1h").await;
    assert_eq!(body["by_type"], json!({"a": 3, "b": 2, OTHER: 11}));
    server.terminate().await;
    server.restart().await;
    let body = window(&server.api(), "1h").await;
    assert_eq!(body["by_type"], json!({"d": 10, "a": 3, OTHER: 3}));
    assert_eq!(body["by_service"], json!({"w": 10, "x": 3, OTHER: 3}));
    assert_eq!(body["total"], json!(16));
}

#[tokio::test]
async fn memory_stays_bounded_whatever_the_names() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    // Enough for the tracked names, the store's caches and the allocator to settle.
    post_distinct(&api, 0, 50_000).await;
    window(&api, "1h").await;
    let before = rss_mb(server.pid());
    post_distinct(&api, 50_000, 200_000).await;
    let body = window(&api, "1h").await;
    let after = rss_mb(server.pid());
    eprintln!("RSS {before} MB before 200,000 more distinct names, {after} MB after");
    check_folded(&body, 250_000, 50);
    // Counted by name, they took 360 MB more; folded, a few (the store's caches).
    assert!(
        after < before + 50,
        "RSS grew from {before} MB to {after} MB"
    );
}
