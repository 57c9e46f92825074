//! API keys through the real server: every operation of the API description, with no key,
//! an unknown, a revoked, an expired key, a key without the scope and one with it; the
//! default policy (open on loopback until a key exists, refused beyond loopback without
//! keys), the bootstrap key, keys never kept in clear, the `keys` command, rate limits per
//! key, and failures counted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// A request for `method path` that the route will take (a body where it needs one).
fn request(api: &Api, method: &str, path: &str) -> reqwest::RequestBuilder {
    let url = api.url(path);
    match method {
        "get" => api.client.get(url),
        "delete" => api.client.delete(url),
        "post" if path == "/events" => api
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"type":"auth-check"}"#),
        "post" if path == "/keys" => api
            .client
            .post(url)
            .json(&json!({"name": "made-in-a-check", "scopes": ["read"]})),
        "post" if path == "/alerts/rules" => api
            .client
            .post(url)
            .json(&json!({"name": "made-in-a-check", "window": "1m", "condition": "absent"})),
        "put" => api
            .client
            .put(url)
            .json(&json!({"name": "x", "window": "1m", "condition": "absent"})),
        "post" if path == "/alerts/silences" => api
            .client
            .post(url)
            .json(&json!({"matchers": [{"name": "alertname", "value": "x"}], "duration": "1h"})),
        "post" => api.client.post(url),
        other => panic!("no request for method {other}"),
    }
}

/// The status of `method path` sent with `api`'s key (headers only for streams).
async fn status_of(api: &Api, method: &str, path: &str) -> (u16, reqwest::header::HeaderMap) {
    let resp = request(api, method, path).send().await.unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_checks_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let admin_key = create_key_offline(&data, "admin", &["admin"]).await;
    let admin_secret = admin_key["key"].as_str().unwrap().to_owned();
    assert!(admin_secret.starts_with("evk_"), "{admin_key}");

    let server = TestServer::start(dir.path(), &[]).await;
    let anonymous = server.api();
    let admin = anonymous.with_key(&admin_secret);
    let secret_of = |key: &Value| key["key"].as_str().unwrap().to_owned();
    let ingest_key = admin
        .create_key(&json!({"name": "producer", "scopes": ["ingest"]}))
        .await;
    let read_key = admin
        .create_key(&json!({"name": "reader", "scopes": ["read"]}))
        .await;
    let revoked_key = admin
        .create_key(&json!({"name": "gone", "scopes": ["admin"]}))
        .await;
    let expiring = admin
        .create_key(&json!({"name": "brief", "scopes": ["admin"], "expires": "1s"}))
        .await;
    admin.revoke_key(&revoked_key).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let ingest = anonymous.with_key(&secret_of(&ingest_key));
    let read = anonymous.with_key(&secret_of(&read_key));
    let event_id = ingest.post_one(json!({"type": "seen"})).await;

    // Every operation the document describes, with the scope it declares.
    let document = anonymous.get("/openapi.json").await.json();
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path
                .replace(
                    "{id}",
                    if path.starts_with("/keys") {
                        "key_missing"
                    } else {
                        &event_id
                    },
                )
                .replace("{file}", "swagger-ui.css");
            let scope = operation["x-eventide-scope"].as_str();
            let Some(scope) = scope else {
                let (status, _) = status_of(&anonymous, method, &concrete).await;
                assert!(status < 400, "{method} {path} is open: got {status}");
                continue;
            };
            let (status, headers) = status_of(&anonymous, method, &concrete).await;
            assert_eq!(status, 401, "{method} {path} without a key");
            assert!(
                headers.get("www-authenticate").is_some(),
                "{method} {path}: WWW-Authenticate"
            );
            for (what, key) in [
                ("unknown", "evk_0000000000000000000000".to_owned()),
                ("revoked", secret_of(&revoked_key)),
                ("expired", secret_of(&expiring)),
            ] {
                let (status, _) = status_of(&anonymous.with_key(&key), method, &concrete).await;
                assert_eq!(status, 401, "{method} {path} with a {what} key");
            }
            let (wrong, right) = match scope {
                "ingest" => (&read, &ingest),
                "read" => (&ingest, &read),
                "admin" => (&read, &admin),
                other => panic!("unknown scope {other}"),
            };
            let resp = request(wrong, method, &concrete).send().await.unwrap();
            assert_eq!(
                resp.status(),
                403,
                "{method} {path} with a key lacking {scope}"
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "forbidden");
            assert!(
                body["message"].as_str().unwrap().contains(scope),
                "{method} {path}: {body}"
            );
            let (status, _) = status_of(right, method, &concrete).await;
            assert!(
                status != 401 && status != 403,
                "{method} {path} with the {scope} scope: {status}"
            );
            // Admin implies every scope.
            let (status, _) = status_of(&admin, method, &concrete).await;
            assert!(
                status != 401 && status != 403,
                "{method} {path} as admin: {status}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} protected operations checked");
    // X-API-Key works as well as a bearer token.
    anonymous
        .get_with("/events", &[("x-api-key", &secret_of(&read_key))])
        .await
        .expect_status(200);

    // Failures are counted by reason.
    let metrics = read.get("/metrics/prometheus").await.text;
    for reason in ["missing", "unknown", "revoked", "expired", "forbidden"] {
        assert!(
            metrics.contains(&format!(
                "eventide_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    // ...and logged once a minute per source, not per request.
    let logged = server
        .logs()
        .lines()
        .filter(|line| line.contains("authentication failed"))
        .count();
    assert_eq!(logged, 1, "{}", server.logs());
    // Listing shows no secret; creation and revocation are logged with the id only.
    let list = admin.get("/keys").await;
    list.expect_status(200);
    for secret in [
        &admin_secret,
        &secret_of(&ingest_key),
        &secret_of(&read_key),
    ] {
        assert!(!list.text.contains(secret.as_str()));
        assert!(
            !server.logs().contains(secret.as_str()),
            "a secret in the logs"
        );
    }
    let listed = list.json();
    let keys = listed["keys"].as_array().unwrap();
    assert!(keys.iter().any(|key| key["revoked"].is_string()));
    assert!(server.logs().contains(revoked_key["id"].as_str().unwrap()));
}

#[tokio::test]
async fn on_loopback_the_api_is_open_until_a_key_exists() {
    let server = TestServer::start_temp(&[]).await;
    server.post_one(json!({"type": "before-keys"})).await;
    server.get("/events").await.expect_status(200);
    // Anyone on loopback may make the first key; from then on keys are required.
    let first = server
        .create_key(&json!({"name": "first", "scopes": ["admin"]}))
        .await;
    let resp = server.get("/events").await;
    let body = resp.expect_error(401);
    assert_eq!(body["error"], "unauthorized");
    let admin = server.with_key(first["key"].as_str().unwrap());
    admin.get("/events").await.expect_status(200);
    // Probes and the API description stay open.
    server.get("/health").await.expect_status(200);
    server.get("/health/ready").await.expect_status(200);
    server.get("/openapi.json").await.expect_status(200);
    server.get("/").await.expect_status(200);
}

#[tokio::test]
async fn beyond_loopback_a_server_without_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let stderr = serve_refused("0.0.0.0:0", &data, &["--retention", "0"]).await;
    // Start-up's own log lines aside, one line says why and what to do.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("eventide keys create"), "{stderr}");
    assert!(errors[0].contains("--auth off"), "{stderr}");
    // With --auth off it starts (and warns).
    let mut open = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--auth",
            "off",
            "--data-dir",
            &data,
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(open.stderr.take().unwrap()).lines();
    let mut warned = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        warned |= line.contains("authentication is off");
        if line.contains("listening on") {
            break;
        }
    }
    assert!(warned, "no warning about --auth off beyond loopback");
}

#[tokio::test]
async fn a_bootstrap_key_is_created_once_and_works_as_admin() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "evk_BootstrapKeyForTheTest0123";
    let env = [("EVENTIDE_BOOTSTRAP_KEY", secret)];
    let mut server = TestServer::start_with_env(dir.path(), &[], &env).await;
    server.get("/events").await.expect_error(401);
    let admin = server.with_key(secret);
    admin.get("/keys").await.expect_status(200);
    server.restart().await;
    let admin = server.with_key(secret);
    let keys = admin.get("/keys").await.json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["keys"][0]["name"], "bootstrap");
    assert!(!server.logs().contains(secret));
    // Nothing in the data directory holds a key in clear.
    drop(admin);
    server.kill9().await;
    assert_no_file_contains(&server.data_dir, secret.as_bytes());
}

/// Panics if a file under `dir` contains `needle`.
fn assert_no_file_contains(dir: &std::path::Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_no_file_contains(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "{} holds a key in clear",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn the_keys_command_lists_and_revokes_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let made = create_key_offline(&data, "ci", &["ingest", "read"]).await;
    assert_eq!(made["scopes"], json!(["ingest", "read"]));
    let (status, stdout, _) = run_binary(&["keys", "list", "--json", "--data-dir", &data]).await;
    assert!(status.success());
    let listed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(listed[0]["id"], made["id"]);
    assert!(!stdout.contains(made["key"].as_str().unwrap()));
    let id = made["id"].as_str().unwrap();
    let (status, stdout, _) = run_binary(&["keys", "revoke", id, "--data-dir", &data]).await;
    assert!(status.success());
    assert!(stdout.contains(id));
    let (status, _, stderr) = run_binary(&["keys", "revoke", id, "--data-dir", &data]).await;
    assert_eq!(status.code(), Some(1), "revoking twice: {stderr}");
    // Without --json, create prints the key alone on stdout.
    let (status, stdout, stderr) = run_binary(&[
        "keys",
        "create",
        "--name",
        "plain",
        "--scope",
        "read",
        "--data-dir",
        &data,
    ])
    .await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.trim().starts_with("evk_") && stdout.trim().lines().count() == 1);
    assert_no_file_contains(dir.path(), stdout.trim().as_bytes());
    // While a server holds the directory, the command says so instead of writing under it.
    let server = TestServer::start(dir.path(), &[]).await;
    let (status, _, stderr) = run_binary(&["keys", "list", "--data-dir", &data]).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains(&format!("process {}", server.pid())),
        "{stderr}"
    );
}

#[tokio::test]
async fn rate_limits_apply_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let a = create_key_offline(&data, "a", &["ingest"]).await;
    let b = create_key_offline(&data, "b", &["ingest"]).await;
    let server = TestServer::start(
        dir.path(),
        &["--ingest-rate-limit", "1", "--ingest-burst", "2"],
    )
    .await;
    let a = server.with_key(a["key"].as_str().unwrap());
    let b = server.with_key(b["key"].as_str().unwrap());
    let batch = Value::Array(vec![json!({"type": "x"}), json!({"type": "y"})]);
    a.post_events(&batch).await.expect_status(202);
    a.post_events(&batch).await.expect_error(429);
    // Same address, another key: a bucket of its own.
    b.post_events(&batch).await.expect_status(202);
}
