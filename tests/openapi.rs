//! The API description through the real server: `/openapi.json` is OpenAPI 3.1 and lists
//! exactly the operations below, each of which the server serves; `/docs` serves Swagger UI
//! and the files its page loads, from the binary (nothing from elsewhere).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// Every operation of the API, as the router serves them.
const OPERATIONS: &[(&str, &str)] = &[
    ("POST", "/events"),
    ("GET", "/events"),
    ("GET", "/events/{id}"),
    ("GET", "/metrics"),
    ("GET", "/metrics/timeseries"),
    ("GET", "/metrics/summary"),
    ("GET", "/metrics/prometheus"),
    ("GET", "/stream"),
    ("GET", "/stream/metrics"),
    ("GET", "/dead-letters"),
    ("POST", "/dead-letters/replay"),
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("GET", "/health/detailed"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/"),
    ("GET", "/docs/{file}"),
];

/// Documented ahead of their handlers, which come from another branch: they may still be
/// unrouted here. (Once they are routed everywhere, this list can go.)
const MAYBE_NOT_ROUTED_YET: &[&str] = &["/health/ready", "/health/detailed"];

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
        .map(|(method, path)| format!("{method} {path}"))
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
    let server = TestServer::start_temp(&[]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in OPERATIONS {
        let concrete = path
            .replace("{id}", "no-such-event")
            .replace("{file}", "swagger-ui.css");
        let request = match *method {
            "GET" => no_redirects.get(server.url(&concrete)),
            "POST" => no_redirects
                .post(server.url(&concrete))
                .header("content-type", "application/json")
                .body(r#"{"type":"openapi-test"}"#),
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
            if unrouted && MAYBE_NOT_ROUTED_YET.contains(path) {
                continue;
            }
            assert!(!unrouted, "{method} {path} is documented but not routed");
        } else {
            assert!(
                matches!(status, 200 | 202 | 303),
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
