//! The API description through the real server: `/openapi.json` is OpenAPI 3.1 and lists
//! exactly the operations below, each of which the server serves; real answers of every
//! JSON operation are what the document's schemas say, field for field; `/docs` serves
//! Swagger UI and the files its page loads, from the binary (nothing from elsewhere).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Map, Value};

/// Every operation of the API, as the router serves them, and what it answers: JSON
/// operations are each checked at least once with a success against their schema.
const OPERATIONS: &[(&str, &str, Answer)] = &[
    ("POST", "/events", Json),
    ("GET", "/events", Json),
    ("GET", "/events/{id}", Json),
    ("GET", "/events/export", Other),
    ("GET", "/metrics", Json),
    ("GET", "/metrics/timeseries", Json),
    ("GET", "/metrics/summary", Json),
    ("GET", "/metrics/prometheus", Other),
    ("GET", "/stream", Other),
    ("GET", "/stream/metrics", Other),
    ("GET", "/dead-letters", Json),
    ("POST", "/dead-letters/replay", Json),
    ("POST", "/keys", Json),
    ("GET", "/keys", Json),
    ("DELETE", "/keys/{id}", Other),
    ("GET", "/alerts", Json),
    ("GET", "/alerts/history", Json),
    ("GET", "/alerts/rules", Json),
    ("POST", "/alerts/rules", Json),
    ("GET", "/alerts/rules/{name}", Json),
    ("PUT", "/alerts/rules/{name}", Json),
    ("DELETE", "/alerts/rules/{name}", Other),
    ("POST", "/alerts/silences", Json),
    ("GET", "/alerts/silences", Json),
    ("GET", "/health", Json),
    ("GET", "/health/ready", Json),
    ("POST", "/v1/logs", Json),
    ("POST", "/v1/{call}", Json),
    ("POST", "/v1/batch", Json),
    ("POST", "/v1/import", Json),
    ("POST", "/capture", Json),
    ("POST", "/capture/", Json),
    ("POST", "/batch", Json),
    ("POST", "/batch/", Json),
    ("POST", "/e", Json),
    ("POST", "/e/", Json),
    ("POST", "/i/v0/e", Json),
    ("POST", "/i/v0/e/", Json),
    ("GET", "/health/detailed", Json),
    ("GET", "/openapi.json", Other),
    ("GET", "/docs", Other),
    ("GET", "/docs/", Other),
    ("GET", "/docs/{file}", Other),
];

/// What an operation answers, as far as the schema check goes.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// JSON described by a schema in the document.
    Json,
    /// Anything else: no content, CSV or NDJSON, a stream, text, a page, a redirect, or the
    /// document itself.
    Other,
}
use Answer::{Json, Other};

async fn document(server: &TestServer) -> Value {
    let resp = server.get("/openapi.json").await;
    resp.expect_status(200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    resp.json()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_operation() {
    let server = TestServer::start_temp(&[]).await;
    let document = document(&server).await;
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert_eq!(document["info"]["title"], "Eventide");

    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            assert!(
                operation["operationId"].is_string() && operation["summary"].is_string(),
                "{name} lacks an operationId or a summary"
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|answers| !answers.is_empty()),
                "{name} documents no answer"
            );
            documented.insert(name);
        }
    }
    let expected: BTreeSet<String> = OPERATIONS
        .iter()
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    assert_eq!(documented, expected);

    // Refusals that ask for a retry say when, in the document too.
    for name in ["TooManyRequests", "Unavailable"] {
        let answer = &document["components"]["responses"][name];
        assert_eq!(answer["headers"]["Retry-After"]["required"], true, "{name}");
        assert_eq!(
            answer["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    // Authentication off: the key this makes must not close the routes after it.
    let server = TestServer::start_temp(&["--auth", "off"]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path, _) in OPERATIONS {
        let concrete = path
            .replace("{id}", "no-such-event")
            .replace("{name}", "no-such-rule")
            .replace("{file}", "swagger-ui.css")
            .replace("{call}", "track");
        let rule = json!({"name": "openapi-test", "window": "1m", "condition": "absent"});
        let request = match *method {
            "GET" => no_redirects.get(server.url(&concrete)),
            "POST" if *path == "/keys" => no_redirects
                .post(server.url(&concrete))
                .json(&json!({"name": "openapi-test", "scopes": ["admin"]})),
            "POST" if *path == "/alerts/rules" => {
                no_redirects.post(server.url(&concrete)).json(&rule)
            }
            "POST" if *path == "/alerts/silences" => no_redirects.post(server.url(&concrete)).json(
                &json!({"matchers": [{"name": "alertname", "value": "x"}], "duration": "1h"}),
            ),
            "POST" if path.starts_with("/v1/") => {
                let call = json!({"type": "track", "event": "openapi-test", "userId": "u"});
                let body = if path.ends_with("{call}") {
                    call
                } else {
                    json!({ "batch": [call] })
                };
                no_redirects.post(server.url(&concrete)).json(&body)
            }
            "POST"
                if ["/capture", "/batch", "/e", "/i/v0/e"]
                    .contains(&path.trim_end_matches('/')) =>
            {
                no_redirects
                    .post(server.url(&concrete))
                    .json(&json!({"event": "openapi-test", "distinct_id": "u"}))
            }
            "PUT" => no_redirects.put(server.url(&concrete)).json(&rule),
            "POST" => no_redirects
                .post(server.url(&concrete))
                .header("content-type", "application/json")
                .body(r#"{"type":"openapi-test"}"#),
            "DELETE" => no_redirects.delete(server.url(&concrete)),
            other => panic!("no request for {other}"),
        };
        // Headers only: the streams never end.
        let resp = request.send().await.expect("request");
        let status = resp.status().as_u16();
        if status == 404 {
            let body: Value = resp.json().await.expect("JSON 404");
            let unrouted = body["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("no route for"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
        } else {
            assert!(
                matches!(status, 200 | 201 | 202 | 204 | 303),
                "{method} {concrete}: {status}"
            );
        }
    }
}

#[tokio::test]
async fn docs_serve_swagger_ui_and_its_files_from_the_binary() {
    let server = TestServer::start_temp(&[]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(redirect.status().as_u16(), 303);
    assert_eq!(redirect.headers()["location"], "/docs/");

    let page = server.get("/docs").await; // followed to /docs/
    page.expect_status(200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(
        page.text.contains("swagger-ui"),
        "{}",
        truncate(&page.text, 500)
    );
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "the page loads something from elsewhere: {}",
        page.text
    );

    // Every script and style sheet the page references is served, with its type.
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for rest in page.text.split(attribute).skip(1) {
            let reference = &rest[..rest.find('"').unwrap()];
            if reference.ends_with(".js") || reference.ends_with(".css") {
                assets.push(reference.trim_start_matches("./").to_owned());
            }
        }
    }
    assert!(
        assets.iter().any(|a| a == "swagger-ui-bundle.js")
            && assets.iter().any(|a| a == "swagger-ui.css"),
        "{assets:?}"
    );
    for asset in &assets {
        let resp = server.get(&format!("/docs/{asset}")).await;
        resp.expect_status(200);
        let content_type = resp.header("content-type").unwrap_or_default();
        let want = if asset.ends_with(".css") {
            "text/css"
        } else {
            "javascript"
        };
        assert!(content_type.contains(want), "{asset}: {content_type}");
        assert!(!resp.text.is_empty(), "{asset} is empty");
    }
    let bundle = server.get("/docs/swagger-ui-bundle.js").await;
    assert!(
        bundle.text.len() > 100_000,
        "the bundle is only {} bytes",
        bundle.text.len()
    );

    // The page is set up to show this server's document.
    let initializer = server.get("/docs/swagger-initializer.js").await;
    assert!(
        initializer.text.contains("\"/openapi.json\""),
        "{}",
        initializer.text
    );

    let missing = server.get("/docs/no-such-file.js").await;
    assert_eq!(missing.expect_error(404)["error"], "not_found");
}

/// The document with its object schemas closed: one that lists properties allows no other
/// (`unevaluatedProperties: false`), so an answer with a field the document does not
/// describe fails too. An `allOf` is merged into one object schema first, which closing
/// would otherwise break (each part would refuse the other's fields).
fn closed(document: &Value) -> Value {
    fn close(node: &mut Value, schemas: &Map<String, Value>) {
        match node {
            Value::Object(object) => {
                if let Some(Value::Array(parts)) = object.remove("allOf") {
                    let mut properties = Map::new();
                    let mut required = Vec::new();
                    for part in parts {
                        let part = match part["$ref"].as_str() {
                            Some(reference) => {
                                let name = reference
                                    .strip_prefix("#/components/schemas/")
                                    .expect("a schema reference");
                                schemas[name].clone()
                            }
                            None => part,
                        };
                        assert!(part.get("allOf").is_none(), "nested allOf: {part}");
                        if let Some(Value::Object(more)) = part.get("properties") {
                            properties.extend(more.clone());
                        }
                        if let Some(Value::Array(more)) = part.get("required") {
                            required.extend(more.iter().cloned());
                        }
                    }
                    object.insert("type".into(), json!("object"));
                    object.insert("properties".into(), Value::Object(properties));
                    object.insert("required".into(), Value::Array(required));
                }
                if object.contains_key("properties") && !object.contains_key("additionalProperties")
                {
                    object.insert("unevaluatedProperties".into(), json!(false));
                }
                for value in object.values_mut() {
                    close(value, schemas);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| close(item, schemas)),
            _ => {}
        }
    }
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .clone();
    let mut document = document.clone();
    close(&mut document, &schemas);
    document
}

/// Where the (closed) document gives the schema of the JSON answer of `method path` with
/// `status`: a JSON pointer, through the reusable answer it refers to if it does.
fn answer_schema(document: &Value, method: &str, path: &str, status: u16) -> String {
    let escape = |segment: &str| segment.replace('~', "~0").replace('/', "~1");
    let operation = format!(
        "/paths/{}/{}/responses/{status}",
        escape(path),
        method.to_lowercase()
    );
    let answer = document
        .pointer(&operation)
        .unwrap_or_else(|| panic!("{method} {path}: the document has no {status} answer"));
    let answer = match answer["$ref"].as_str() {
        Some(reference) => reference.strip_prefix('#').expect("local").to_owned(),
        None => operation,
    };
    let schema = format!("{answer}/content/application~1json/schema");
    assert!(
        document.pointer(&schema).is_some(),
        "{method} {path}: the {status} answer has no JSON schema"
    );
    schema
}

/// Panics unless `resp`, an answer of `method path` (as the document spells the path), is
/// JSON that the document's schema for it accepts, formats included.
fn check_answer(document: &Value, method: &str, path: &str, resp: &Resp) {
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{method} {path}: content type {content_type}"
    );
    let pointer = answer_schema(document, method, path, resp.status);
    // A URI fragment: the braces of a path template are percent-encoded.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let mut root = document.clone();
    root["$ref"] = json!(format!("#{fragment}"));
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|err| panic!("the schema of {method} {path} does not compile: {err}"));
    let body = resp.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {}: the answer breaks its schema:\n{}\n{body}",
        resp.status,
        errors.join("\n")
    );
}

#[tokio::test]
async fn every_json_answer_is_what_its_schema_in_the_document_says() {
    // Alerts evaluated every second, one rule firing at once: the history has entries.
    let (server, _alerts) = start_with_absent_rule("nothing-yet", "never-sent", "1s").await;
    let document = closed(&document(&server).await);
    let mut answers: Vec<(&str, &str, Resp)> = Vec::new();

    let batch = json!([
        {"id": "order-1001", "type": "signup", "user_id": "u-42", "service": "auth",
            "message": "a \"quoted\" line\n", "timestamp": now_ms() - 60_000,
            "metadata": {"plan": "pro", "price": 1.50, "nested": {"list": [1e3, null, true]}}},
        {"type": "click"},
        {"event": "view", "userId": 42, "timestamp": "2025-01-01T00:00:00Z"},
        {"type": " ", "colour": "red"},
    ]);
    let accepted = server.post_events(&batch).await;
    accepted.expect_status(202);
    answers.push(("POST", "/events", accepted));
    let refused = server.post_events(&json!([{"colour": "red"}])).await;
    answers.push(("POST", "/events", refused));
    for (body, content_type) in [("{\"type\":", "application/json"), ("{}", "text/plain")] {
        let resp = server.post_raw(body, content_type, false).await;
        answers.push(("POST", "/events", resp));
    }

    let first = server.get("/events?limit=2").await;
    let cursor = first.json()["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    answers.push(("GET", "/events", first));
    let last = server
        .get(&format!("/events?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(last.json()["next_cursor"], Value::Null);
    answers.push(("GET", "/events", last));
    // (the route as documented, the request)
    let reads = [
        ("/events", "/events?page=2&page_size=2"),
        ("/events", "/events?limit=0"),
        ("/events/{id}", "/events/order-1001"),
        ("/events/{id}", "/events/no-such-event"),
        ("/metrics", "/metrics?window=1h&top=1"),
        ("/metrics", "/metrics?window=soon"),
        (
            "/metrics/timeseries",
            "/metrics/timeseries?group_by=type&interval=hour",
        ),
        ("/metrics/timeseries", "/metrics/timeseries?interval=week"),
        ("/metrics/summary", "/metrics/summary"),
        ("/dead-letters", "/dead-letters"),
        ("/dead-letters", "/dead-letters?limit=0"),
    ];
    for (route, path) in reads {
        answers.push(("GET", route, server.get(path).await));
    }
    let replay = server
        .request(reqwest::Method::POST, "/dead-letters/replay", &[], None)
        .await;
    answers.push(("POST", "/dead-letters/replay", replay));
    for path in ["/health", "/health/ready", "/health/detailed"] {
        answers.push(("GET", path, server.get(path).await));
    }
    let missing_doc = server.get("/docs/no-such-file.js").await;
    answers.push(("GET", "/docs/{file}", missing_doc));
    alert_answers(&server, &mut answers).await;
    sdk_answers(&server, &mut answers).await;

    // Refusals for being over the rate limits (one event, or one read, per second).
    let limited = TestServer::start_temp(&[
        "--ingest-rate-limit",
        "1",
        "--ingest-burst",
        "1",
        "--query-rate-limit",
        "1",
    ])
    .await;
    let event = json!({"type": "limited"});
    limited.post_events(&event).await.expect_status(202);
    answers.push(("POST", "/events", limited.post_events(&event).await));
    limited.get("/events").await.expect_status(200);
    answers.push(("GET", "/events", limited.get("/events").await));

    // Keys, last: once one exists, requests without one are refused (401), and a key
    // without a route's scope too (403).
    let post = reqwest::Method::POST;
    let key = json!({"name": "schema-check", "scopes": ["admin"]});
    let made = send_json(&server, post.clone(), "/keys", &key).await;
    let admin = server.with_key(made.json()["key"].as_str().unwrap());
    answers.push(("POST", "/keys", made));
    answers.push(("GET", "/keys", admin.get("/keys").await));
    answers.push(("GET", "/events", server.get("/events").await));
    let key = json!({"name": "ingest-only", "scopes": ["ingest"]});
    let ingest = send_json(&admin, post, "/keys", &key).await.json();
    let ingest = server.with_key(ingest["key"].as_str().unwrap());
    answers.push(("GET", "/metrics", ingest.get("/metrics").await));

    let mut succeeded = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for (method, path, resp) in &answers {
        check_answer(&document, method, path, resp);
        statuses.insert(resp.status);
        if resp.status < 300 {
            succeeded.insert((*method, *path));
        }
    }
    for (method, path, answer) in OPERATIONS {
        assert!(
            *answer != Json || succeeded.contains(&(*method, *path)),
            "no success of {method} {path} checked"
        );
    }
    assert_eq!(
        statuses,
        BTreeSet::from([200, 201, 202, 400, 401, 403, 404, 409, 415, 429]),
        "the statuses checked"
    );
}

/// `method path` with a JSON `body`, read whole.
async fn send_json(api: &Api, method: reqwest::Method, path: &str, body: &Value) -> Resp {
    let resp = api
        .client
        .request(method.clone(), api.url(path))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

/// The answers of the alerts' operations: successes, a bad rule, a read-only one, a
/// duplicate, a missing one, a bad page.
/// A success of every SDK path, and refusals: an invalid call, a body that is not JSON.
async fn sdk_answers<'a>(server: &TestServer, answers: &mut Vec<(&'a str, &'a str, Resp)>) {
    let post = reqwest::Method::POST;
    let call =
        json!({"type": "track", "event": "schema-sdk", "userId": "u", "properties": {"a": 1}});
    let segment: [(&str, &str, Value); 3] = [
        ("/v1/{call}", "/v1/track", call.clone()),
        (
            "/v1/batch",
            "/v1/batch",
            json!({"batch": [call.clone()], "sentAt": "2026-01-01T00:00:00Z"}),
        ),
        ("/v1/import", "/v1/import", json!({"batch": [call]})),
    ];
    for (route, path, body) in segment {
        answers.push((
            "POST",
            route,
            send_json(server, post.clone(), path, &body).await,
        ));
    }
    let capture = json!({"event": "schema-sdk", "distinct_id": "u", "properties": {"$lib": "x"}});
    for path in [
        "/capture",
        "/capture/",
        "/batch",
        "/batch/",
        "/e",
        "/e/",
        "/i/v0/e",
        "/i/v0/e/",
    ] {
        answers.push((
            "POST",
            path,
            send_json(server, post.clone(), path, &capture).await,
        ));
    }
    let logs = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "paid"}, "severityNumber": 9}]}]
    }]});
    answers.push((
        "POST",
        "/v1/logs",
        send_json(server, post.clone(), "/v1/logs", &logs).await,
    ));
    let invalid = json!({"batch": [{"type": "track", "userId": "u"}]});
    answers.push((
        "POST",
        "/v1/batch",
        send_json(server, post.clone(), "/v1/batch", &invalid).await,
    ));
    let not_json = server
        .request(
            post,
            "/capture",
            &[("content-type", "application/json")],
            Some("{"),
        )
        .await;
    answers.push(("POST", "/capture", not_json));
}

async fn alert_answers<'a>(server: &TestServer, answers: &mut Vec<(&'a str, &'a str, Resp)>) {
    let rule = json!({
        "name": "schema-rule", "type": "signup", "service": "auth", "window": "5m",
        "condition": "above", "threshold": 10, "for": "1m", "keep_firing_for": "30s",
        "labels": {"severity": "page"}, "annotations": {"summary": "many signups"},
        "group_wait": "10s", "send_resolved": false
    });
    let bad = json!({"name": "bad", "window": "5m", "condition": "above"});
    let builtin = json!({"name": "eventide-not-ready", "window": "1m", "condition": "absent"});
    let silence = json!({
        "matchers": [{"name": "alertname", "value": "schema-rule"}],
        "ends_at": fmt_ms(now_ms() + 3_600_000), "comment": "checking the schema"
    });
    // (method, documented path, path asked, body): in order, the second POST a duplicate.
    let requests: [(&'a str, &'a str, &str, Option<&Value>); 11] = [
        ("POST", "/alerts/rules", "/alerts/rules", Some(&rule)),
        ("POST", "/alerts/rules", "/alerts/rules", Some(&rule)),
        ("POST", "/alerts/rules", "/alerts/rules", Some(&bad)),
        (
            "PUT",
            "/alerts/rules/{name}",
            "/alerts/rules/schema-rule",
            Some(&rule),
        ),
        (
            "PUT",
            "/alerts/rules/{name}",
            "/alerts/rules/eventide-not-ready",
            Some(&builtin),
        ),
        (
            "GET",
            "/alerts/rules/{name}",
            "/alerts/rules/schema-rule",
            None,
        ),
        ("GET", "/alerts/rules/{name}", "/alerts/rules/nothing", None),
        ("GET", "/alerts/rules", "/alerts/rules", None),
        ("GET", "/alerts", "/alerts", None),
        (
            "POST",
            "/alerts/silences",
            "/alerts/silences",
            Some(&silence),
        ),
        ("GET", "/alerts/silences", "/alerts/silences", None),
    ];
    for (method, documented, path, body) in requests {
        let answer = match body {
            Some(body) => send_json(server, method.parse().unwrap(), path, body).await,
            None => server.get(path).await,
        };
        answers.push((method, documented, answer));
    }
    // Some history: the file's rule fires at the first evaluation.
    poll_until(std::time::Duration::from_secs(30), || async {
        let page = server.get("/alerts/history?limit=1").await.json();
        (page["entries"].as_array()?.len() == 1).then_some(())
    })
    .await;
    for path in ["/alerts/history?limit=1", "/alerts/history?before=x"] {
        answers.push(("GET", "/alerts/history", server.get(path).await));
    }
}
