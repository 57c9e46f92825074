//! POST /events: input shapes and aliases, every field rule at its boundary, every error of an
//! event reported, batches, NDJSON, gzip, size limits (413), content types (415), malformed
//! JSON, and idempotency keys (duplicates and conflicts).

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::time::Duration;

const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json";

async fn server() -> TestServer {
    TestServer::start_temp(&[]).await
}

/// GET /events/{id}, asserting 200, the id, and the stored-event shape.
async fn fetch(api: &Api, id: &str) -> Value {
    let resp = api.get_event(id).await;
    resp.expect_status(200);
    let ev = resp.json();
    assert_event_shape(&ev);
    assert_eq!(
        ev["id"],
        json!(id),
        "GET /events/{{id}} returned another event"
    );
    ev
}

fn rep(c: char, n: usize) -> String {
    c.to_string().repeat(n)
}

/// Checks `cases` of a text field of at most `max` characters known by `names` (the field,
/// then its alias if it has one), with the limit under each name: `max` characters are taken,
/// one more is refused, naming the field (and the alias it was sent as). Characters count,
/// not bytes: the field is also sent `max` and `max + 1` times '€' (three bytes each).
async fn check_text_field(
    s: &Api,
    names: &'static [&'static str],
    max: usize,
    mut cases: Vec<(Value, Want)>,
) {
    for (i, name) in names.iter().enumerate() {
        cases.extend(at_and_over_limit(name, 'x', max, Want::Err(&names[..=i])));
    }
    cases.extend(at_and_over_limit(
        names[0],
        '€',
        max,
        Want::Err(&names[..1]),
    ));
    check_field_cases(s, &cases, names[0], names).await;
}

/// Events whose `name` is `max` times `c`, taken, and one character longer, refused as
/// `over`: a length limit's two sides.
fn at_and_over_limit(name: &str, c: char, max: usize, over: Want) -> [(Value, Want); 2] {
    let event = |len| json!({"type": "t", name: rep(c, len)});
    [(event(max), Want::Ok), (event(max + 1), over)]
}

fn id_at(body: &Value, i: usize) -> String {
    body["ids"][i]
        .as_str()
        .unwrap_or_else(|| panic!("ids[{i}] is not a string: {body}"))
        .to_string()
}

/// An error naming the field `type`.
const TYPE: &[&str] = &["type"];

/// Posts the events of `cases` as one batch and checks each one's answer against its `Want`:
/// the answer.
async fn post_cases(s: &Api, cases: &[(Value, Want)]) -> Value {
    let batch = Value::Array(cases.iter().map(|(event, _)| event.clone()).collect());
    let wants: Vec<Want> = cases.iter().map(|(_, want)| *want).collect();
    check_batch(&s.post_events(&batch).await, &wants)
}

/// Posts `cases` as one batch, checks each event's answer, and reads every accepted event
/// back: its `stored_as` field must equal what was sent under the first of `sent_as` present.
async fn check_field_cases(s: &Api, cases: &[(Value, Want)], stored_as: &str, sent_as: &[&str]) {
    let body = post_cases(s, cases).await;
    for (i, (input, want)) in cases.iter().enumerate() {
        if matches!(want, Want::Ok) {
            let sent = sent_as
                .iter()
                .find_map(|name| input.get(*name))
                .unwrap_or_else(|| panic!("case {i} sends none of {sent_as:?}"));
            assert_eq!(
                &fetch(s, &id_at(&body, i)).await[stored_as],
                sent,
                "case {i}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_answers_status_ok() {
    let s = server().await;
    let resp = s.get("/health").await;
    resp.expect_status(200);
    assert_eq!(resp.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn historical_signup_shape_is_normalized() {
    let s = server().await;
    let id = s
        .post_one(json!({"eventType":"signup","userId":"u1","timestamp":1700000000,"metadata":{"plan":"pro"}}))
        .await;
    let ev = fetch(&s, &id).await;
    assert_eq!(ev["type"], json!("signup"));
    assert_eq!(ev["user_id"], json!("u1"));
    assert_eq!(ev["timestamp"], json!("2023-11-14T22:13:20.000Z"));
    assert_eq!(ev["metadata"], json!({"plan": "pro"}));
    for absent in ["service", "message"] {
        assert!(
            ev.get(absent).is_none(),
            "absent `{absent}` must be omitted: {ev}"
        );
    }
}

#[tokio::test]
async fn historical_log_shape_gets_type_log() {
    let s = server().await;
    let id = s
        .post_one(json!({"timestamp":"2024-01-15T10:30:00+02:00","service":"auth","message":"login ok","metadata":{"ip":"1.2.3.4"}}))
        .await;
    let ev = fetch(&s, &id).await;
    assert_eq!(ev["type"], json!("log"));
    assert_eq!(ev["timestamp"], json!("2024-01-15T08:30:00.000Z"));
    assert_eq!(ev["service"], json!("auth"));
    assert_eq!(ev["message"], json!("login ok"));
    assert_eq!(ev["metadata"], json!({"ip": "1.2.3.4"}));
    assert!(
        ev.get("user_id").is_none(),
        "absent user_id must be omitted: {ev}"
    );
}

#[tokio::test]
async fn type_aliases_are_accepted() {
    let s = server().await;
    let batch = json!([
        {"type": "via-type"},
        {"eventType": "via-eventType"},
        {"event_type": "via-event_type"},
        {"event": "via-event"},
    ]);
    let body = check_batch(&s.post_events(&batch).await, &[Want::Ok; 4]);
    for (i, want) in ["via-type", "via-eventType", "via-event_type", "via-event"]
        .iter()
        .enumerate()
    {
        let ev = fetch(&s, &id_at(&body, i)).await;
        assert_eq!(ev["type"], json!(want));
    }
}

#[tokio::test]
async fn type_is_required_except_for_the_log_shape() {
    let s = server().await;
    let body = post_cases(
        &s,
        &[
            (json!({}), Want::Err(TYPE)),
            (json!({"service": "s"}), Want::Err(TYPE)),
            (json!({"message": "m"}), Want::Err(TYPE)),
            (json!({"service": "s", "message": "m"}), Want::Ok),
            (
                json!({"service": "s", "message": "m", "type": "explicit"}),
                Want::Ok,
            ),
            (json!({"user_id": "u", "message": "m"}), Want::Err(TYPE)),
            (json!({"source": "s", "message": "m"}), Want::Ok),
        ],
    )
    .await;
    assert_eq!(fetch(&s, &id_at(&body, 3)).await["type"], json!("log"));
    assert_eq!(fetch(&s, &id_at(&body, 4)).await["type"], json!("explicit"));
    let via_source = fetch(&s, &id_at(&body, 6)).await;
    assert_eq!(via_source["type"], json!("log"));
    assert_eq!(via_source["service"], json!("s"));
}

// ---------------------------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn type_length_boundaries() {
    let s = server().await;
    let type_alias: &[&str] = &["type", "eventType"];
    let cases: Vec<(Value, Want)> = vec![
        (json!({"type": ""}), Want::Err(TYPE)),
        (json!({"type": "a"}), Want::Ok),
        (json!({"type": rep('x', 100)}), Want::Ok),
        (json!({"type": rep('x', 101)}), Want::Err(TYPE)),
        (json!({"type": rep('é', 100)}), Want::Ok),
        (json!({"type": rep('é', 101)}), Want::Err(TYPE)),
        (json!({"type": 5}), Want::Err(TYPE)),
        (json!({"type": null}), Want::Err(TYPE)),
        (json!({"eventType": rep('y', 101)}), Want::Err(type_alias)),
        (json!({"eventType": rep('y', 100)}), Want::Ok),
    ];
    check_field_cases(&s, &cases, "type", &["type", "eventType"]).await;
}

#[tokio::test]
async fn timestamp_formats_are_normalized_to_utc_millis() {
    let s = server().await;
    let ts: &[&str] = &["timestamp"];
    let cases: Vec<(Value, Option<&str>)> = vec![
        (
            json!("2024-01-15T10:30:00+02:00"),
            Some("2024-01-15T08:30:00.000Z"),
        ),
        (
            json!("2024-01-15T08:30:00Z"),
            Some("2024-01-15T08:30:00.000Z"),
        ),
        (
            json!("2024-01-15T08:30:00.123Z"),
            Some("2024-01-15T08:30:00.123Z"),
        ),
        (
            json!("2024-01-15T03:00:00.5-05:30"),
            Some("2024-01-15T08:30:00.500Z"),
        ),
        (
            json!("2024-01-01T01:00:00+02:00"),
            Some("2023-12-31T23:00:00.000Z"),
        ),
        (json!(1700000000000i64), Some("2023-11-14T22:13:20.000Z")),
        (json!(1700000000123i64), Some("2023-11-14T22:13:20.123Z")),
        (json!(1700000000), Some("2023-11-14T22:13:20.000Z")),
        (json!(1700000000.25), Some("2023-11-14T22:13:20.250Z")),
        // The seconds/milliseconds threshold: 100,000,000,000 and up are milliseconds.
        (json!(100000000000i64), Some("1973-03-03T09:46:40.000Z")),
        (json!(0), Some("1970-01-01T00:00:00.000Z")),
        (json!(1.7e9), Some("2023-11-14T22:13:20.000Z")),
        // Just below the threshold: seconds, i.e. the year 5138, far in the future.
        (json!(99999999999i64), None),
        (json!("2024-01-15T08:30:00"), None),
        (json!("yesterday"), None),
        (json!("2024-02-30T00:00:00Z"), None),
        (json!(true), None),
        (json!({"at": 1}), None),
    ];
    let batch = Value::Array(
        cases
            .iter()
            .enumerate()
            .map(|(i, (t, _))| json!({"type": format!("ts{i}"), "timestamp": t}))
            .collect(),
    );
    let wants: Vec<Want> = cases
        .iter()
        .map(|(_, w)| if w.is_some() { Want::Ok } else { Want::Err(ts) })
        .collect();
    let body = check_batch(&s.post_events(&batch).await, &wants);
    for (i, (sent, want)) in cases.iter().enumerate() {
        if let Some(want) = want {
            let ev = fetch(&s, &id_at(&body, i)).await;
            assert_eq!(ev["timestamp"], json!(want), "timestamp sent as {sent}");
        }
    }
}

/// The spec bounds timestamps only in the future: any number below 100,000,000,000 is epoch
/// seconds, negative ones included, and RFC 3339 times before 1970 are valid too.
#[tokio::test]
async fn pre_1970_timestamps_are_accepted() {
    let s = server().await;
    let batch = json!([
        {"type": "old", "timestamp": "1969-12-31T23:59:59.999Z"},
        {"type": "old", "timestamp": -1},
        {"type": "old", "timestamp": -1.5},
    ]);
    let body = check_batch(&s.post_events(&batch).await, &[Want::Ok; 3]);
    for (i, want) in [
        "1969-12-31T23:59:59.999Z",
        "1969-12-31T23:59:59.000Z",
        "1969-12-31T23:59:58.500Z",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(fetch(&s, &id_at(&body, i)).await["timestamp"], json!(want));
    }
}

#[tokio::test]
async fn absent_timestamp_is_the_time_of_receipt() {
    let s = server().await;
    let before = now_ms();
    let id = s.post_one(json!({"type": "no-ts"})).await;
    let after = now_ms();
    let ev = fetch(&s, &id).await;
    let ts = ev_ts(&ev);
    let received = parse_ts(ev["received_at"].as_str().unwrap()).unwrap();
    for (name, v) in [("timestamp", ts), ("received_at", received)] {
        assert!(
            (before - 50..=after + 50).contains(&v),
            "{name} {} not within the request ({} .. {})",
            fmt_ms(v),
            fmt_ms(before),
            fmt_ms(after)
        );
    }
}

#[tokio::test]
async fn timestamps_more_than_24h_ahead_are_rejected() {
    let s = server().await;
    let day = 86_400_000i64;
    let now = now_ms();
    let ok_ms = now + day - 120_000;
    let bad_ms = now + day + 120_000;
    let ts: &[&str] = &["timestamp"];
    let body = post_cases(
        &s,
        &[
            (json!({"type": "f", "timestamp": ok_ms}), Want::Ok),
            (json!({"type": "f", "timestamp": fmt_ms(ok_ms)}), Want::Ok),
            (json!({"type": "f", "timestamp": bad_ms}), Want::Err(ts)),
            (
                json!({"type": "f", "timestamp": fmt_ms(bad_ms)}),
                Want::Err(ts),
            ),
            (
                json!({"type": "f", "timestamp": bad_ms / 1000}),
                Want::Err(ts),
            ),
            (
                json!({"type": "f", "timestamp": (now + 3_600_000) / 1000}),
                Want::Ok,
            ),
        ],
    )
    .await;
    assert_eq!(ev_ts(&fetch(&s, &id_at(&body, 0)).await), ok_ms);
    assert_eq!(ev_ts(&fetch(&s, &id_at(&body, 1)).await), ok_ms);
    assert_eq!(
        ev_ts(&fetch(&s, &id_at(&body, 5)).await),
        (now + 3_600_000) / 1000 * 1000
    );
}

#[tokio::test]
async fn service_length_and_source_alias() {
    let s = server().await;
    let f: &[&str] = &["service"];
    let fa: &[&str] = &["service", "source"];
    let cases = vec![
        (json!({"type": "t", "service": 7}), Want::Err(f)),
        (json!({"type": "t", "service": ""}), Want::Err(f)),
        (json!({"type": "t", "source": " "}), Want::Err(fa)),
        (json!({"type": "t", "service": " s "}), Want::Ok),
    ];
    check_text_field(&s, &["service", "source"], 100, cases).await;
}

#[tokio::test]
async fn user_id_length_and_user_id_alias() {
    let s = server().await;
    let f: &[&str] = &["user_id"];
    let cases = vec![
        (json!({"type": "t", "user_id": 4.2}), Want::Err(f)),
        (json!({"type": "t", "user_id": true}), Want::Err(f)),
        (json!({"type": "t", "user_id": ""}), Want::Ok),
    ];
    check_text_field(&s, &["user_id", "userId"], 256, cases).await;
}

#[tokio::test]
async fn message_length_boundaries() {
    let s = server().await;
    let not_text = json!({"type": "t", "message": ["not", "a", "string"]});
    let cases = vec![(not_text, Want::Err(&["message"]))];
    check_text_field(&s, &["message"], 2000, cases).await;
}

/// A compact metadata object whose serialized text is exactly `len` bytes.
fn metadata_of_len(len: usize) -> String {
    // {"k":"xxx"} is 8 bytes plus the x's.
    format!("{{\"k\":\"{}\"}}", rep('x', len - 8))
}

#[tokio::test]
async fn metadata_size_limit_and_properties_alias() {
    let s = server().await;
    let exact = metadata_of_len(16 * 1024);
    let over = metadata_of_len(16 * 1024 + 1);
    assert_eq!(exact.len(), 16384);
    let body_text = format!(
        "[{{\"type\":\"t\",\"metadata\":{exact}}},\
          {{\"type\":\"t\",\"metadata\":{over}}},\
          {{\"type\":\"t\",\"properties\":{{\"via\":\"properties\"}}}},\
          {{\"type\":\"t\",\"properties\":{over}}}]"
    );
    let resp = s.post_raw(body_text, JSON, false).await;
    let m: &[&str] = &["metadata"];
    let ma: &[&str] = &["metadata", "properties"];
    let body = check_batch(&resp, &[Want::Ok, Want::Err(m), Want::Ok, Want::Err(ma)]);
    let ev = fetch(&s, &id_at(&body, 0)).await;
    assert_eq!(
        ev["metadata"],
        serde_json::from_str::<Value>(&exact).unwrap()
    );
    let ev = fetch(&s, &id_at(&body, 2)).await;
    assert_eq!(ev["metadata"], json!({"via": "properties"}));
}

/// `depth` nested objects: depth 1 is `{"leaf":1}`.
fn nested_objects(depth: usize) -> Value {
    let mut v = json!({"leaf": 1});
    for _ in 1..depth {
        v = json!({ "n": v });
    }
    v
}

/// An object holding `arrays` nested arrays: total depth `arrays + 1`.
fn nested_arrays(arrays: usize) -> Value {
    let mut v = json!([1]);
    for _ in 1..arrays {
        v = json!([v]);
    }
    json!({ "a": v })
}

#[tokio::test]
async fn metadata_depth_limit_and_type() {
    let s = server().await;
    let m: &[&str] = &["metadata"];
    let cases: Vec<(Value, Want)> = vec![
        (nested_objects(10), Want::Ok),
        (nested_objects(11), Want::Err(m)),
        (nested_arrays(9), Want::Ok),
        (nested_arrays(10), Want::Err(m)),
        (json!([1, 2]), Want::Err(m)),
        (json!("text"), Want::Err(m)),
        (json!(3), Want::Err(m)),
        (json!({}), Want::Ok),
    ];
    let batch = Value::Array(
        cases
            .iter()
            .map(|(md, _)| json!({"type": "t", "metadata": md}))
            .collect(),
    );
    let wants: Vec<Want> = cases.iter().map(|c| c.1).collect();
    let body = check_batch(&s.post_events(&batch).await, &wants);
    for (i, (md, want)) in cases.iter().enumerate() {
        if matches!(want, Want::Ok) {
            assert_eq!(&fetch(&s, &id_at(&body, i)).await["metadata"], md);
        }
    }
}

#[tokio::test]
async fn client_id_rules() {
    let s = server().await;
    let f: &[&str] = &["id"];
    let cases = vec![
        (json!({"type": "t", "id": ""}), Want::Err(f)),
        (json!({"type": "t", "id": "a"}), Want::Ok),
        (json!({"type": "t", "id": 12}), Want::Err(f)),
        (json!({"type": "t", "id": "order 17: café"}), Want::Ok),
        (json!({"type": "t", "id": "tenant/a?b#c%20"}), Want::Ok),
    ];
    // The client's id is the event id.
    check_text_field(&s, &["id"], 128, cases).await;
}

#[tokio::test]
async fn unknown_top_level_fields_are_named_errors() {
    let s = server().await;
    let body = post_cases(
        &s,
        &[
            (
                json!({"type": "a", "colour": "red"}),
                Want::Err(&["colour"]),
            ),
            (json!({"type": "b"}), Want::Ok),
            (json!({"type": "c", "seq": 5}), Want::Err(&["seq"])),
            (
                json!({"type": "d", "received_at": "2024-01-15T08:30:00.000Z"}),
                Want::Err(&["received_at"]),
            ),
            (json!({"type": "e", "Type": "x"}), Want::Err(&["Type"])),
        ],
    )
    .await;
    assert_eq!(fetch(&s, &id_at(&body, 1)).await["type"], json!("b"));
    assert_eq!(s.total(&[]).await, 1);
}

/// The `(field, message)` of each error entry of event `index`, in answer order.
fn errors_of(body: &Value, index: usize) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"))
        .iter()
        .filter(|e| e["index"] == json!(index))
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("field"), text("message"))
        })
        .collect()
}

fn pairs(errors: &[(&str, &str)]) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect()
}

const BLANK_TYPE: &str = "must not be blank (empty or only whitespace)";
const BLANK_SERVICE: &str =
    "must not be blank (empty or only whitespace): leave it out, or send null, when there is none";

#[tokio::test]
async fn blank_types_and_services_are_refused() {
    let s = server().await;
    let body = post_cases(
        &s,
        &[
            (json!({"type": ""}), Want::Err(TYPE)),
            (json!({"type": "   "}), Want::Err(TYPE)),
            (
                json!({"eventType": "\u{3000}\u{a0}"}),
                Want::Err(&["eventType"]),
            ),
            (json!({"type": "t", "service": ""}), Want::Err(&["service"])),
            (json!({"type": "t", "source": "  "}), Want::Err(&["source"])),
            (
                json!({"service": "", "message": "log line"}),
                Want::Err(&["service"]),
            ),
            (json!({"type": " t ", "service": " s "}), Want::Ok),
        ],
    )
    .await;
    for (i, field, message) in [
        (0, "type", BLANK_TYPE),
        (1, "type", BLANK_TYPE),
        (2, "eventType", BLANK_TYPE),
        (3, "service", BLANK_SERVICE),
        (4, "source", BLANK_SERVICE),
        (5, "service", BLANK_SERVICE),
    ] {
        assert_eq!(errors_of(&body, i), pairs(&[(field, message)]), "{body}");
    }
    let ev = fetch(&s, &id_at(&body, 6)).await;
    assert_eq!(
        (&ev["type"], &ev["service"]),
        (&json!(" t "), &json!(" s "))
    );
    assert_eq!(s.total(&[]).await, 1);
}

/// The error of a name holding the control character U+`code` at (character) `position`.
fn control(code: &str, position: usize) -> String {
    format!("contains a control character (U+{code}) at position {position}")
}

/// The error of a name holding the bidirectional formatting character U+`code`.
fn bidi(code: &str, position: usize) -> String {
    format!("contains a bidirectional formatting character (U+{code}) at position {position}")
}

#[tokio::test]
async fn control_and_bidi_characters_are_refused_in_names_but_kept_in_text() {
    let s = server().await;
    // (the field, its text, the error); each event is otherwise valid.
    let cases = [
        ("type", "a\u{0}b", control("0000", 2)),
        ("type", "ab\u{1b}[2J", control("001B", 3)),
        ("event", "ding\u{7}", control("0007", 5)),
        ("type", "\u{202e}gnp.exe", bidi("202E", 1)),
        ("service", "\u{0}", control("0000", 1)),
        ("source", "é\u{1b}", control("001B", 2)),
        ("service", "x\u{2066}", bidi("2066", 2)),
        ("user_id", "u\u{7}", control("0007", 2)),
        ("userId", "😀\u{202e}", bidi("202E", 2)),
        ("user_id", "\u{7f}", control("007F", 1)),
    ];
    let event = |field: &str, text: &str| match field {
        "type" | "event" => json!({ field: text }),
        _ => json!({"type": "t", field: text}),
    };
    let batch = Value::Array(
        cases
            .iter()
            .map(|(field, text, _)| event(field, text))
            .collect(),
    );
    let resp = s.post_events(&batch).await;
    let body = resp.expect_error(400);
    for (i, (field, _, message)) in cases.iter().enumerate() {
        assert_eq!(
            errors_of(&body, i),
            pairs(&[(field, message)]),
            "case {i}: {body}"
        );
    }

    // Message and metadata are free text: kept exactly as sent.
    let text = "NUL \u{0} ESC \u{1b}[31m BEL \u{7} RLO \u{202e} DEL \u{7f}";
    let id = s
        .post_one(json!({"type": "t", "message": text, "metadata": {"k": text}}))
        .await;
    let ev = fetch(&s, &id).await;
    assert_eq!(ev["message"], json!(text));
    assert_eq!(ev["metadata"], json!({"k": text}));
}

#[tokio::test]
async fn numeric_user_ids_are_stored_as_their_decimal_text() {
    let s = server().await;
    let inexact = "must be a string or an integer (no fraction or exponent, at most 64 bits): send other numbers as strings";
    let body = post_expecting(
        &s,
        &json!([
            {"type": "n", "user_id": 42},
            {"type": "n", "userId": 0},
            {"type": "n", "userId": -7},
            {"type": "n", "user_id": 18_446_744_073_709_551_615u64},
            {"type": "n", "user_id": 4.5},
            {"type": "n", "user_id": 1e3},
            {"type": "n", "userId": 1.0},
        ]),
        (4, 0, 0),
    )
    .await;
    for (i, stored) in ["42", "0", "-7", "18446744073709551615"].iter().enumerate() {
        assert_eq!(fetch(&s, &id_at(&body, i)).await["user_id"], json!(stored));
    }
    for (i, field) in [(4, "user_id"), (5, "user_id"), (6, "userId")] {
        assert_eq!(errors_of(&body, i), pairs(&[(field, inexact)]), "{body}");
    }
    // Beyond 64 bits, JSON numbers lose digits: refused too.
    let resp = s
        .post_raw(
            r#"{"type":"n","user_id":18446744073709551616}"#,
            JSON,
            false,
        )
        .await;
    assert_eq!(
        errors_of(&resp.expect_error(400), 0),
        pairs(&[("user_id", inexact)])
    );
    // Found like the string it became.
    s.post_one(json!({"type": "n", "user_id": "42"})).await;
    assert_eq!(s.total(&[("user_id", "42")]).await, 2);
}

/// A migration fixes a file in one pass: every problem of every event is in the answer.
#[tokio::test]
async fn every_error_of_an_event_is_reported() {
    let s = TestServer::start_temp(&["--retention", "1d"]).await;
    let all_wrong = json!({
        "type": " ", "timestamp": 1_600_000_000, "service": "", "user_id": 1.5,
        "message": 5, "metadata": [], "id": ""
    });
    let structural = r#"{"colour":"red","type":"\u001b","event":"b","type":"c","size":2,"colour":3,"userId":true}"#;
    let body_text = format!(r#"[{all_wrong},{{"type":"fine"}},{structural}]"#);
    let resp = s.post_raw(body_text, JSON, false).await;
    let body = check_batch(
        &resp,
        &[Want::Err(&["type"]), Want::Ok, Want::Err(&["colour"])],
    );
    // The retention's refusal names its cutoff, which moves with the time of the request.
    let want_first = |body: &Value| {
        let retention = errors_of(body, 0)[1].1.clone();
        assert!(
            retention.starts_with("is older than the retention of 1d"),
            "{retention}"
        );
        pairs(&[
            ("type", BLANK_TYPE),
            ("timestamp", &retention),
            ("service", BLANK_SERVICE),
            ("user_id", "must be a string or an integer (no fraction or exponent, at most 64 bits): send other numbers as strings"),
            ("message", "must be a string"),
            ("metadata", "must be a JSON object"),
            ("id", "must be 1-128 characters"),
        ])
    };
    assert_eq!(errors_of(&body, 0), want_first(&body), "{body}");
    // Unknown, repeated and conflicting keys first, in the order of the text, each once.
    let escape = control("001B", 1);
    let want_third = [
        ("colour", "unknown field"),
        ("event", "conflicts with \"type\""),
        ("type", "duplicate key"),
        ("size", "unknown field"),
        ("type", escape.as_str()),
        ("userId", "must be a string or an integer"),
    ];
    assert_eq!(errors_of(&body, 2), pairs(&want_third), "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 13, "{body}");

    // The same in NDJSON, by line.
    let lines = format!("{all_wrong}\n\n{structural}\n");
    let body = s.post_raw(lines, NDJSON, false).await.expect_error(400);
    assert_eq!(errors_of(&body, 0), want_first(&body), "{body}");
    assert_eq!(errors_of(&body, 2), pairs(&want_third), "{body}");
    assert_eq!(s.total(&[]).await, 1);
}

#[tokio::test]
async fn non_object_events_are_invalid() {
    let s = server().await;
    let cases = [
        (json!(1), Want::Invalid),
        (json!("x"), Want::Invalid),
        (json!(null), Want::Invalid),
        (json!([]), Want::Invalid),
        (json!({"type": "ok"}), Want::Ok),
    ];
    post_cases(&s, &cases).await;
    assert_eq!(s.total(&[]).await, 1);
    // A bare JSON scalar is not an event either.
    s.post_raw("\"hello\"", JSON, false).await.expect_error(400);
    assert_eq!(s.total(&[]).await, 1);
}

#[tokio::test]
async fn strings_are_stored_exactly_as_sent() {
    let s = server().await;
    let ev_in = json!({
        "type": "  spaced type  ",
        "service": " svc with spaces ",
        "user_id": "ÜSER-1 🎉",
        "message": "line1\nline2\r\n\ttab \"quote\" back\\slash /slash \u{0000}nul \u{001f} 中文 ñ 🎉  ",
        "id": " id with spaces ",
    });
    let id = s.post_one(ev_in.clone()).await;
    assert_eq!(id, " id with spaces ");
    let ev = fetch(&s, &id).await;
    for k in ["type", "service", "user_id", "message", "id"] {
        assert_eq!(ev[k], ev_in[k], "field {k} changed");
    }
}

#[tokio::test]
async fn metadata_text_is_preserved() {
    let s = server().await;
    let meta = r#"{"zeta":1,"alpha":1.50,"mid":[1e3,-0.0,1E+2,100000000000000000000000,0.1000,{"y":2.500,"b":null}],"t":true,"a":{"z":{},"c":[]}}"#;
    let body = format!(r#"{{"type":"meta","metadata": {meta} }}"#);
    let resp = s.post_raw(body, JSON, false).await;
    let answer = check_batch(&resp, &[Want::Ok]);
    let id = id_at(&answer, 0);

    let one = s.get_event(&id).await;
    one.expect_status(200);
    let raw = raw_value(&one.text, "metadata").expect("metadata in GET /events/{id}");
    assert_eq!(strip_json_ws(raw), meta, "metadata text changed (by-id)");

    let list = s.get_events(&[("type", "meta")]).await;
    list.expect_status(200);
    let raw = raw_value(&list.text, "metadata").expect("metadata in GET /events");
    assert_eq!(strip_json_ws(raw), meta, "metadata text changed (list)");
}

#[tokio::test]
async fn metadata_string_escapes_are_preserved() {
    let s = server().await;
    let meta = r#"{"s":"caf\u00e9 \ud83c\udf89 \/ \n","k\u0041":"x"}"#;
    let resp = s
        .post_raw(
            format!(r#"{{"type":"esc","metadata":{meta}}}"#),
            JSON,
            false,
        )
        .await;
    let id = id_at(&check_batch(&resp, &[Want::Ok]), 0);
    let one = s.get_event(&id).await;
    one.expect_status(200);
    let raw = raw_value(&one.text, "metadata").expect("metadata in GET /events/{id}");
    assert_eq!(strip_json_ws(raw), meta, "metadata text changed");
    assert_eq!(
        one.json()["metadata"],
        json!({"s": "café 🎉 / \n", "kA": "x"})
    );
}

#[tokio::test]
async fn server_ids_are_uuid_v7_and_seq_strictly_increases() {
    let s = server().await;
    let mut last_seq = None;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = s.post_one(json!({"type": format!("gen{i}")})).await;
        let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("id {id} not a UUID: {e}"));
        assert_eq!(uuid.get_version_num(), 7, "server id {id} is not UUIDv7");
        let ev = fetch(&s, &id).await;
        for absent in ["service", "user_id", "message", "metadata"] {
            assert!(
                ev.get(absent).is_none(),
                "absent `{absent}` must be omitted: {ev}"
            );
        }
        let seq = ev_seq(&ev);
        if let Some(prev) = last_seq {
            assert!(seq > prev, "seq {seq} not greater than previous {prev}");
        }
        last_seq = Some(seq);
        ids.push(id);
    }
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), ids.len(), "server ids repeat: {ids:?}");
}

// ---------------------------------------------------------------------------------------------
// Batches, NDJSON, gzip
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mixed_batch_stores_the_valid_events() {
    let s = server().await;
    let body = post_cases(
        &s,
        &[
            (
                json!({"type": "good", "id": "m-1", "message": "first"}),
                Want::Ok,
            ),
            (json!({"type": rep('x', 101)}), Want::Err(TYPE)),
            (
                json!({"type": "good", "id": "m-2", "message": "second"}),
                Want::Ok,
            ),
            (
                json!({"type": "good", "bogus": true}),
                Want::Err(&["bogus"]),
            ),
            (json!({"type": "good", "message": "third"}), Want::Ok),
        ],
    )
    .await;
    assert_eq!(body["ids"][0], json!("m-1"));
    assert_eq!(body["ids"][2], json!("m-2"));
    assert_eq!(fetch(&s, "m-1").await["message"], json!("first"));
    assert_eq!(fetch(&s, "m-2").await["message"], json!("second"));
    assert_eq!(fetch(&s, &id_at(&body, 4)).await["message"], json!("third"));
    assert_eq!(s.total(&[]).await, 3);
}

#[tokio::test]
async fn batch_with_no_valid_event_is_400_with_the_same_shape() {
    let s = server().await;
    let batch = json!([{"type": ""}, {"nope": 1}]);
    check_batch(
        &s.post_events(&batch).await,
        &[Want::Err(&["type"]), Want::Err(&["nope"])],
    );
    let single = s.post_events(&json!({"type": "x", "message": 5})).await;
    check_batch(&single, &[Want::Err(&["message"])]);
    assert_eq!(s.total(&[]).await, 0);
}

#[tokio::test]
async fn ndjson_broken_line_is_one_invalid_event() {
    let s = server().await;
    // No trailing newline on the last line.
    let body = "{\"type\":\"nd\",\"message\":\"zero\"}\n{\"type\": broken\n[1,2]\n{\"type\":\"nd\",\"message\":\"three\"}";
    let answer = check_batch(
        &s.post_raw(body, NDJSON, false).await,
        &[Want::Ok, Want::Invalid, Want::Invalid, Want::Ok],
    );
    assert_eq!(
        fetch(&s, &id_at(&answer, 0)).await["message"],
        json!("zero")
    );
    assert_eq!(
        fetch(&s, &id_at(&answer, 3)).await["message"],
        json!("three")
    );
    assert_eq!(s.total(&[("type", "nd")]).await, 2);
}

#[tokio::test]
async fn ndjson_blank_lines_are_skipped_and_errors_use_line_numbers() {
    let s = server().await;
    // Lines: 0 valid, 1 blank, 2 valid, 3 whitespace only, 4 broken, 5 valid.
    let body = "{\"type\":\"a\"}\n\n{\"type\":\"b\"}\n   \n{oops\n{\"type\":\"c\"}\n";
    let resp = s.post_raw(body, NDJSON, false).await;
    resp.expect_status(202);
    let answer = resp.json();
    assert_eq!(answer["accepted"], json!(3), "answer: {answer}");
    assert_eq!(answer["duplicates"], json!(0), "answer: {answer}");
    let ids = answer_ids(&answer);
    assert_eq!(
        ids.len(),
        4,
        "one id per event (blank lines are not events): {answer}"
    );
    assert!(ids[0].is_some() && ids[1].is_some() && ids[2].is_none() && ids[3].is_some());
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "answer: {answer}");
    assert_eq!(
        errors[0]["index"],
        json!(4),
        "index is the line number: {answer}"
    );
    for (i, t) in [(0, "a"), (1, "b"), (3, "c")] {
        assert_eq!(fetch(&s, ids[i].as_ref().unwrap()).await["type"], json!(t));
    }
}

#[tokio::test]
async fn ndjson_with_no_valid_line_is_400() {
    let s = server().await;
    let resp = s.post_raw("{bad\n{\"type\":\"\"}\n", NDJSON, false).await;
    check_batch(&resp, &[Want::Invalid, Want::Err(&["type"])]);
    assert_eq!(s.total(&[]).await, 0);
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let s = server().await;
    let arr = json!([{"type": "gz", "message": "a"}, {"type": "gz", "message": "b"}]).to_string();
    let answer = check_batch(&s.post_raw(arr, JSON, true).await, &[Want::Ok, Want::Ok]);
    assert_eq!(fetch(&s, &id_at(&answer, 1)).await["message"], json!("b"));

    let nd = ndjson(&[
        json!({"type": "gz", "message": "c"}),
        json!({"type": "gz", "message": "d"}),
    ]);
    let answer = check_batch(&s.post_raw(nd, NDJSON, true).await, &[Want::Ok, Want::Ok]);
    assert_eq!(fetch(&s, &id_at(&answer, 0)).await["message"], json!("c"));

    let single = json!({"type": "gz", "message": "e"}).to_string();
    let answer = check_batch(&s.post_raw(single, JSON, true).await, &[Want::Ok]);
    assert_eq!(fetch(&s, &id_at(&answer, 0)).await["message"], json!("e"));
    assert_eq!(s.total(&[("type", "gz")]).await, 5);
}

// ---------------------------------------------------------------------------------------------
// Limits and malformed input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn more_than_10000_events_is_413_and_10000_is_fine() {
    let s = server().await;
    let events: Vec<Value> = (0..10_001)
        .map(|i| json!({"type": "n", "message": format!("{i}")}))
        .collect();
    s.post_events(&Value::Array(events.clone()))
        .await
        .expect_error(413);
    s.post_raw(ndjson(&events), NDJSON, false)
        .await
        .expect_error(413);
    assert_eq!(
        s.total(&[]).await,
        0,
        "nothing of a 413 request may be stored"
    );

    let resp = s
        .post_events(&Value::Array(events[..10_000].to_vec()))
        .await;
    resp.expect_status(202);
    assert_eq!(resp.json()["accepted"], json!(10_000));
    assert_eq!(s.total(&[]).await, 10_000);
}

#[tokio::test]
async fn bodies_over_10_mib_are_413_even_when_gzipped() {
    let s = server().await;
    let mut big = Vec::with_capacity(11 << 20);
    big.push(b'[');
    big.resize(11 << 20, b' ');
    big.extend_from_slice(br#"{"type":"big"}]"#);
    // Tiny on the wire, over the limit once decompressed.
    s.post_raw(big.clone(), JSON, true).await.expect_error(413);

    // Uncompressed: the upload may be cut short by the answer, so use a raw connection.
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.addr,
        big.len()
    );
    let raw = raw_exchange(&s.addr, &head, &big).await;
    let (status, _) = parse_raw_response(&raw);
    assert_eq!(status, 413, "plain 11 MiB body");
    assert_eq!(s.total(&[]).await, 0);
}

/// A JSON array of one event padded with spaces to exactly `len` bytes.
fn padded_body(len: usize) -> Vec<u8> {
    let tail = br#"{"type":"big"}]"#;
    let mut body = vec![b' '; len - tail.len()];
    body[0] = b'[';
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn body_of_exactly_10_mib_is_accepted() {
    let s = server().await;
    let body = padded_body(10 << 20);
    check_batch(&s.post_raw(body.clone(), JSON, false).await, &[Want::Ok]);
    check_batch(&s.post_raw(body, JSON, true).await, &[Want::Ok]);
    s.post_raw(padded_body((10 << 20) + 1), JSON, true)
        .await
        .expect_error(413);
    assert_eq!(s.total(&[("type", "big")]).await, 2);
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    let s = server().await;
    check_batch(
        &s.post_raw(r#"{"type":"cs"}"#, "application/json; charset=utf-8", false)
            .await,
        &[Want::Ok],
    );
    check_batch(
        &s.post_raw(
            r#"{"type":"cs"}"#,
            "application/x-ndjson; charset=utf-8",
            false,
        )
        .await,
        &[Want::Ok],
    );
}

#[tokio::test]
async fn corrupt_gzip_is_a_400_json_error() {
    let s = server().await;
    let resp = s
        .client
        .post(s.url("/events"))
        .header("content-type", JSON)
        .header("content-encoding", "gzip")
        .body(b"definitely not gzip".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).expect("JSON body");
    assert_error_body(&body);
}

#[tokio::test]
async fn every_error_body_is_json_even_for_routing_errors() {
    let s = server().await;
    s.get("/no-such-route").await.expect_error(404);
    for (method, path) in [
        (reqwest::Method::PUT, "/events"),
        (reqwest::Method::DELETE, "/events/some-id"),
        (reqwest::Method::POST, "/health"),
    ] {
        let resp = s
            .client
            .request(method.clone(), s.url(path))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "{method} {path}: status {status}"
        );
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path} -> {status}: body {text:?} is not JSON ({e})")
        });
        assert_error_body(&body);
    }
}

#[tokio::test]
async fn unsupported_content_type_is_415() {
    let s = server().await;
    s.post_raw("type,message\nclick,hi\n", "text/csv", false)
        .await
        .expect_error(415);
    s.post_raw(r#"{"type":"x"}"#, "text/csv", false)
        .await
        .expect_error(415);
    assert_eq!(s.total(&[]).await, 0);
}

#[tokio::test]
async fn malformed_json_reports_line_and_column() {
    let s = server().await;
    let bodies = [
        "{\n  \"type\": \"a\",\n  \"service\": \n}",
        "[{\"type\":\"a\"},\n  {\"type\" \"b\"}]",
        "{\"type\": \"a\"} trailing",
    ];
    for text in bodies {
        let err = serde_json::from_str::<Value>(text).expect_err("body is malformed");
        let (line, column) = (err.line(), err.column());
        let body = s.post_raw(text, JSON, false).await.expect_error(400);
        assert_eq!(body["line"], json!(line), "line for {text:?}: {body}");
        assert_eq!(body["column"], json!(column), "column for {text:?}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains(&line.to_string()) && msg.contains(&column.to_string()),
            "message should give line {line} and column {column}: {msg}"
        );
    }
    assert_eq!(s.total(&[]).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

/// The answer's counts: (accepted, duplicates, conflicts).
fn counts(body: &Value) -> (u64, u64, u64) {
    let count = |name: &str| {
        body[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} count: {body}"))
    };
    (count("accepted"), count("duplicates"), count("conflicts"))
}

/// Posts `body`, expecting `202` with these counts; returns the answer.
async fn post_expecting(s: &Api, body: &Value, want: (u64, u64, u64)) -> Value {
    let resp = s.post_events(body).await;
    resp.expect_status(202);
    let answer = resp.json();
    assert_eq!(
        counts(&answer),
        want,
        "(accepted, duplicates, conflicts) for {body}: {answer}"
    );
    answer
}

#[tokio::test]
async fn repeated_ids_inside_one_batch_are_stored_once() {
    let s = server().await;
    let batch = json!([
        {"id": "dup", "type": "first"},
        {"id": "dup", "type": "first"},
        {"id": "dup", "type": "second"},
        {"id": "other", "type": "x"},
    ]);
    let body = post_expecting(&s, &batch, (2, 1, 1)).await;
    assert_eq!(
        body["ids"],
        json!(["dup", "dup", "dup", "other"]),
        "answer: {body}"
    );
    assert_eq!(body["errors"], json!([]), "answer: {body}");
    assert_eq!(fetch(&s, "dup").await["type"], json!("first"));
    assert_eq!(s.total(&[]).await, 2);
}

#[tokio::test]
async fn an_invalid_event_does_not_claim_its_id() {
    let s = server().await;
    let cases = [
        (json!({"id": "claim", "type": ""}), Want::Err(TYPE)),
        (json!({"id": "claim", "type": "valid"}), Want::Ok),
    ];
    let body = post_cases(&s, &cases).await;
    assert_eq!(body["ids"], json!([null, "claim"]));
    assert_eq!(fetch(&s, "claim").await["type"], json!("valid"));
    let resp = s
        .post_events(&json!({"id": "claim", "type": "valid"}))
        .await;
    resp.expect_status(202);
    assert_eq!(resp.json()["duplicates"], json!(1), "answer: {}", resp.text);
}

#[tokio::test]
async fn repeated_ids_across_requests_are_stored_once() {
    let s = server().await;
    let original = json!({"id": "k1", "type": "orig", "message": "one"});
    s.post_one(original.clone()).await;
    // A retry: the same event again.
    let body = post_expecting(&s, &original, (0, 1, 0)).await;
    assert_eq!(body["ids"], json!(["k1"]), "answer: {body}");
    assert_eq!(body["errors"], json!([]), "answer: {body}");
    // Another event under the same id: a conflict, not stored either.
    let changed = json!({"id": "k1", "type": "changed", "message": "two"});
    let body = post_expecting(&s, &changed, (0, 0, 1)).await;
    assert_eq!(body["ids"], json!(["k1"]), "answer: {body}");

    let batch = json!([{"id": "k1", "type": "again"}, {"id": "k2", "type": "new"}, original]);
    let body = post_expecting(&s, &batch, (1, 1, 1)).await;
    assert_eq!(body["ids"], json!(["k1", "k2", "k1"]), "answer: {body}");

    let ev = fetch(&s, "k1").await;
    assert_eq!(ev["type"], json!("orig"));
    assert_eq!(ev["message"], json!("one"));
    assert_eq!(s.total(&[]).await, 2);
    assert_eq!(s.total(&[("type", "changed")]).await, 0);
}

#[tokio::test]
async fn a_conflict_keeps_the_first_version_and_is_counted_apart() {
    let s = server().await;
    let first = json!({
        "id": "c1", "type": "order", "timestamp": 1_700_000_000_000i64, "service": "shop",
        "user_id": "u1", "message": "paid", "metadata": {"total": 10}
    });
    s.post_one(first.clone()).await;
    // Each field, changed alone, makes it another event.
    let changes = [
        ("type", json!("refund")),
        ("timestamp", json!(1_700_000_000_001i64)),
        ("service", json!("shop2")),
        ("user_id", json!("u2")),
        ("message", json!("paid!")),
        ("metadata", json!({"total": 11})),
    ];
    let mut batch: Vec<Value> = changes
        .iter()
        .map(|(field, value)| {
            let mut changed = first.clone();
            changed[*field] = value.clone();
            changed
        })
        .collect();
    // A field left out: another event too.
    let mut without_message = first.clone();
    without_message.as_object_mut().unwrap().remove("message");
    batch.push(without_message);
    // An invalid event counts in none of them; the first again, and with a null alias (an
    // absent field), is a duplicate.
    batch.push(json!({"id": "c1", "type": ""}));
    batch.push(first.clone());
    let mut null_alias = first.clone();
    null_alias["userId"] = Value::Null;
    batch.push(null_alias);
    let body = post_expecting(&s, &Value::Array(batch), (0, 2, 7)).await;
    assert_eq!(
        body["errors"].as_array().unwrap().len(),
        1,
        "answer: {body}"
    );

    let ev = fetch(&s, "c1").await;
    for field in ["type", "service", "user_id", "message", "metadata"] {
        assert_eq!(
            ev[field], first[field],
            "{field} of the first version: {ev}"
        );
    }
    assert_eq!(ev["timestamp"], json!("2023-11-14T22:13:20.000Z"));
    assert_eq!(s.total(&[]).await, 1);

    let text = s.get("/metrics/prometheus").await.text;
    let value = |series: &str| {
        prometheus_sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value("eventide_events_conflict_total"), 7.0);
    assert_eq!(value("eventide_events_duplicate_total"), 2.0);
    assert_eq!(value("eventide_events_ingested_total"), 1.0);
}

/// What the client did not send cannot make a retry another event: without a timestamp, an
/// event gets the time of receipt, which differs from one attempt to the next.
#[tokio::test]
async fn a_retry_without_timestamp_is_a_duplicate_not_a_conflict() {
    let s = server().await;
    let event = json!({"id": "nt", "type": "t", "message": "m"});
    let id = s.post_one(event.clone()).await;
    let first_ts = ev_ts(&fetch(&s, &id).await);
    // Another millisecond, so the time of receipt differs.
    tokio::time::sleep(Duration::from_millis(20)).await;
    post_expecting(&s, &event, (0, 1, 0)).await;
    post_expecting(&s, &json!([event.clone(), event]), (0, 2, 0)).await;
    assert_eq!(ev_ts(&fetch(&s, "nt").await), first_ts);

    // Within one request too.
    let twice = json!([{"id": "nt2", "type": "t"}, {"id": "nt2", "type": "t", "timestamp": null}]);
    post_expecting(&s, &twice, (1, 1, 0)).await;
    // Sending a timestamp where the first had none changes the event.
    post_expecting(
        &s,
        &json!({"id": "nt2", "type": "t", "timestamp": 1_700_000_000_000i64}),
        (0, 0, 1),
    )
    .await;
}

/// The content compared is what the event holds, not how it was spelled: aliases, timestamp
/// formats and a numeric user id are the same event.
#[tokio::test]
async fn the_same_event_spelled_differently_is_a_duplicate() {
    let s = server().await;
    s.post_one(json!({
        "id": "sp", "type": "signup", "timestamp": 1_700_000_000, "service": "auth",
        "user_id": 42, "metadata": {"plan": "pro"}
    }))
    .await;
    let spellings = json!([
        {"id": "sp", "eventType": "signup", "timestamp": "2023-11-14T22:13:20Z",
            "source": "auth", "userId": "42", "properties": {"plan": "pro"}},
        {"id": "sp", "event": "signup", "timestamp": 1_700_000_000_000i64, "service": "auth",
            "user_id": "42", "metadata": {"plan": "pro"}, "message": null},
        {"id": "sp", "type": "signup", "timestamp": "2023-11-15T00:13:20+02:00",
            "service": "auth", "userId": 42, "metadata": {"plan": "pro"}},
    ]);
    post_expecting(&s, &spellings, (0, 3, 0)).await;
    // Metadata is compared as the text sent (it is stored and returned as that text).
    post_expecting(
        &s,
        &json!({"id": "sp", "type": "signup", "timestamp": 1_700_000_000, "service": "auth",
            "user_id": 42, "metadata": {"plan": "pro", "seats": 1}}),
        (0, 0, 1),
    )
    .await;
}

#[tokio::test]
async fn events_without_id_are_never_duplicates() {
    let s = server().await;
    let e = json!({"type": "same", "message": "same", "timestamp": 1700000000000i64});
    let a = s.post_one(e.clone()).await;
    let b = s.post_one(e.clone()).await;
    assert_ne!(a, b);
    let body = check_batch(
        &s.post_events(&json!([e.clone(), e])).await,
        &[Want::Ok, Want::Ok],
    );
    assert_ne!(body["ids"][0], body["ids"][1]);
    assert_eq!(s.total(&[("type", "same")]).await, 4);
}

#[tokio::test]
async fn a_duplicate_past_the_dedup_window_is_still_stored_once() {
    let s = TestServer::start_temp(&["--dedup-window", "1s"]).await;
    s.post_one(json!({"id": "w", "type": "win"})).await;
    let resp = s.post_events(&json!({"id": "w", "type": "win"})).await;
    resp.expect_status(202);
    assert_eq!(
        resp.json()["duplicates"],
        json!(1),
        "within the window: {}",
        resp.text
    );
    // The window has to pass in real time.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Past the window the server can no longer tell from memory: the answer may count it as
    // accepted, but the spec still wants the event stored only once.
    let resp = s.post_events(&json!({"id": "w", "type": "win"})).await;
    resp.expect_status(202);
    let body = resp.json();
    assert_eq!(body["accepted"], json!(1), "after the window: {body}");
    assert_eq!(body["duplicates"], json!(0), "after the window: {body}");
    assert_eq!(
        s.total(&[("type", "win")]).await,
        1,
        "an old duplicate is still stored only once"
    );
}

// ---------------------------------------------------------------------------------------------
// Property: arbitrary strings round-trip exactly
// ---------------------------------------------------------------------------------------------

#[test]
fn prop_arbitrary_strings_round_trip() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(server());
    let api = server.api();
    let mut runner = TestRunner::new(PropConfig {
        cases: 48,
        failure_persistence: None,
        ..PropConfig::default()
    });
    // Names (type, service, user id) hold no control or bidirectional formatting characters
    // (\PC leaves out both), and type and service are not blank; message and metadata are
    // free text.
    let strategy = (
        "\\PC{0,99}[^\\s\\pC]",
        proptest::option::of("\\PC{0,99}[^\\s\\pC]"),
        proptest::option::of("\\PC{0,256}"),
        proptest::option::of("(?s).{0,300}"),
        "\\PC{1,100}",
        proptest::collection::btree_map("(?s).{0,20}", "(?s).{0,20}", 0..5),
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&strategy, |(ty, service, user, message, id_tail, meta)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("p{n}-{id_tail}");
        let mut ev = json!({"type": ty, "id": id, "metadata": meta});
        if let Some(v) = &service {
            ev["service"] = json!(v);
        }
        if let Some(v) = &user {
            ev["user_id"] = json!(v);
        }
        if let Some(v) = &message {
            ev["message"] = json!(v);
        }
        rt.block_on(async {
            let resp = api.post_events(&ev).await;
            prop_assert_eq!(resp.status, 202, "body {}", resp.text);
            let got = api.get_event(&id).await;
            prop_assert_eq!(got.status, 200, "body {}", got.text);
            let got = got.json();
            for k in ["type", "id", "service", "user_id", "message", "metadata"] {
                prop_assert_eq!(&got[k], &ev[k], "field {}", k);
            }
            Ok::<(), TestCaseError>(())
        })
    });
    rt.block_on(async move { drop(server) });
    result.unwrap();
}
