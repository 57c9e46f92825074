//! The command-line client through the real binary and a real server: `send`, `query`,
//! `export`, `import` (twice, and interrupted then run again, leaving each event once; the
//! rejects file) and `tail` (across a restart of the server, and lagging behind, without gap
//! or repeat); their output and exit codes (0 done, 1 input refused, 2 usage or connection).

mod common;

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Runs `eventide <args>` against `url` with `stdin`; (status, stdout, stderr).
async fn client(url: &str, args: &[&str], stdin: &[u8]) -> (ExitStatus, String, String) {
    client_fed(url, args, &[stdin], Duration::ZERO).await
}

/// Runs `eventide <args>` against `url`, writing `stdin` part after part with `pause` after
/// each; (status, stdout, stderr).
async fn client_fed(
    url: &str,
    args: &[&str],
    stdin: &[&[u8]],
    pause: Duration,
) -> (ExitStatus, String, String) {
    let mut child = spawn_client(url, args, Stdio::piped);
    let mut input = child.stdin.take().unwrap();
    for part in stdin {
        input.write_all(part).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the client ran for over 2 minutes")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `eventide <args>` against `url`, without an API key from the test's environment:
/// its stdin piped, its stdout and stderr `output` (piped or discarded).
fn spawn_client(url: &str, args: &[&str], output: fn() -> Stdio) -> tokio::process::Child {
    Command::new(BIN)
        .args(args)
        .env("EVENTIDE_URL", url)
        .env_remove("EVENTIDE_API_KEY")
        .stdin(Stdio::piped())
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn assert_one_error_line(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_query_and_export_answer_with_their_exit_codes() {
    let server = TestServer::start_temp(&[]).await;
    let url = server.api().base.clone();

    let (status, out, err) = client(&url, &["send", r#"{"type":"signup","id":"e-1"}"#], b"").await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(
        out,
        "accepted 1, duplicates 0, conflicts 0, rejected 0; id e-1\n"
    );
    let (status, out, _) = client(
        &url,
        &[
            "send",
            "--type",
            "login",
            "--service",
            "auth",
            "--user",
            "u-7",
            "--message",
            "hi, \"you\"",
            "--meta",
            "plan=pro",
            "--meta",
            "n=3",
            "--json",
        ],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(0));
    let answer: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer["accepted"], 1);
    let id = answer["ids"][0].as_str().unwrap().to_owned();
    let stored = server.api().get_event(&id).await.json();
    assert_eq!(stored["metadata"], json!({"plan": "pro", "n": 3}));
    assert_eq!(stored["user_id"], "u-7");

    // NDJSON on stdin; one event refused: exit 1, the reasons on one line.
    let (status, out, err) = client(
        &url,
        &["send"],
        b"{\"type\":\"click\",\"id\":\"e-2\"}\n{\"type\":\" \",\"colour\":\"red\"}\n",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{out} {err}");
    assert!(
        out.starts_with("accepted 1, duplicates 0, conflicts 0, rejected 1"),
        "{out}"
    );
    assert_one_error_line(&err);
    assert!(err.contains("colour: unknown field"), "{err}");
    // Nothing valid: still exit 1. Not JSON, no event: usage, 2.
    let (status, _, err) = client(&url, &["send", r#"{"type":""}"#], b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    let (status, _, err) = client(&url, &["send", "{nope"], b"").await;
    assert_eq!(status.code(), Some(2));
    assert_one_error_line(&err);
    let (status, _, err) = client(&url, &["send"], b"").await;
    assert_eq!(status.code(), Some(2), "{err}");
    // No server there: 2, one line.
    let (status, _, err) = client("http://127.0.0.1:9", &["query"], b"").await;
    assert_eq!(status.code(), Some(2));
    assert_one_error_line(&err);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    let (status, _, err) = client(&url, &["query", "--from", "yesterday"], b"").await;
    assert_eq!(status.code(), Some(2));
    assert_one_error_line(&err);

    // Enough events for several pages.
    let base = now_ms() - 3_600_000;
    let events: Vec<Value> = (0..2_300)
        .map(|i| {
            json!({"type": "page", "timestamp": base + i, "service": "web",
                "message": format!("n, \"{i}\"\nnext"), "metadata": {"i": i}})
        })
        .collect();
    for chunk in events.chunks(1_000) {
        server.api().post_all(chunk).await;
    }

    let (status, out, _) = client(
        &url,
        &["query", "--type", "page", "--format", "ndjson"],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(out.lines().count(), 100, "the default limit");
    let (_, out, _) = client(
        &url,
        &[
            "query", "--type", "page", "--limit", "3", "--format", "json",
        ],
        b"",
    )
    .await;
    let page: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["metadata"]["i"], 2_299, "newest first");
    let (_, out, _) = client(
        &url,
        &[
            "query", "--type", "page", "--all", "--order", "asc", "--format", "ndjson",
        ],
        b"",
    )
    .await;
    let all: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let walk = server
        .api()
        .walk(&[("type", "page"), ("order", "asc")], 1_000)
        .await;
    assert_eq!(all, walk);
    let (_, out, _) = client(&url, &["query", "--from", "-2h", "--type", "login"], b"").await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("TIME"), "{out}");
    assert!(lines[1].contains("login") && lines[1].contains("auth") && lines[1].contains("u-7"));

    // CSV from query and from export: the same records, read back by a CSV parser.
    let (_, query_csv, _) = client(
        &url,
        &[
            "query", "--type", "page", "--all", "--order", "asc", "--format", "csv",
        ],
        b"",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.csv");
    let file_arg = file.to_str().unwrap();
    let (status, out, err) = client(
        &url,
        &[
            "export", "--type", "page", "--format", "csv", "--output", file_arg,
        ],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.starts_with("exported "), "{out}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported, query_csv);
    let mut reader = csv::Reader::from_reader(exported.as_bytes());
    let header = "id,seq,timestamp,received_at,type,service,user_id,message,metadata";
    assert_eq!(
        reader.headers().unwrap(),
        header.split(',').collect::<Vec<_>>()
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2_300);
    for (record, event) in records.iter().zip(&walk) {
        assert_eq!(&record[0], event["id"].as_str().unwrap());
        assert_eq!(&record[7], event["message"].as_str().unwrap());
        let metadata: Value = serde_json::from_str(&record[8]).unwrap();
        assert_eq!(metadata, event["metadata"]);
    }
    assert!(!dir.path().join("page.csv.part").exists());

    // NDJSON export to stdout equals the walk.
    let (_, out, _) = client(&url, &["export", "--type", "page", "--output", "-"], b"").await;
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, walk);
    let (status, _, err) = client(&url, &["export", "--output", "-", "--to", "soon"], b"").await;
    assert_eq!(status.code(), Some(2));
    assert_one_error_line(&err);
}

/// `count` events without ids, one per line, with an invalid one at lines 5 and 7.
fn ndjson_file(count: usize) -> Vec<u8> {
    let mut text = String::new();
    let base = now_ms() - 3_600_000;
    for i in 1..=count {
        let line = match i {
            5 => r#"{"type":" ","colour":"red"}"#.to_owned(),
            7 => "this is not JSON".to_owned(),
            _ => json!({"type": "imported", "timestamp": base + i as i64, "metadata": {"line": i}})
                .to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    gzip_bytes(text.as_bytes())
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_twice_leaves_each_event_once_and_writes_the_rejects() {
    let server = TestServer::start_temp(&[]).await;
    let url = server.api().base.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson.gz");
    std::fs::write(&file, ndjson_file(5_000)).unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let (file_arg, rejects_arg) = (file.to_str().unwrap(), rejects.to_str().unwrap());

    let (status, out, err) =
        client(&url, &["import", file_arg, "--rejects", rejects_arg], b"").await;
    assert_eq!(status.code(), Some(1), "{out} {err}");
    let summary = last_line(&out);
    assert!(
        summary.starts_with("imported 4998, duplicates 0, rejected 2 in "),
        "{summary}"
    );
    assert!(summary.ends_with(" events/s)"), "{summary}");
    assert_one_error_line(&err);
    assert!(err.contains("2 events rejected"), "{err}");
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut lines: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    lines.sort();
    assert_eq!(lines, [5, 7]);
    let invalid = rejected.iter().find(|r| r["line"] == 5).unwrap();
    assert_eq!(invalid["file"], file_arg);
    assert_eq!(invalid["event"]["colour"], "red");
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["colour", "type"]);
    let malformed = rejected.iter().find(|r| r["line"] == 7).unwrap();
    assert!(malformed["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
    assert_eq!(server.api().total(&[("type", "imported")]).await, 4_998);

    // Again, and from stdin (the same content: the same ids): nothing new.
    let (_, out, _) = client(&url, &["import", file_arg, "--concurrency", "2"], b"").await;
    assert!(
        last_line(&out).starts_with("imported 0, duplicates 4998, rejected 2"),
        "{out}"
    );
    let bytes = std::fs::read(&file).unwrap();
    let (_, out, _) = client(&url, &["import", "-"], &bytes).await;
    assert!(
        last_line(&out).starts_with("imported 0, duplicates 4998"),
        "{out}"
    );
    assert_eq!(server.api().total(&[("type", "imported")]).await, 4_998);

    // No server there: 2 at once, one line.
    let (status, _, err) = client("http://127.0.0.1:9", &["import", file_arg], b"").await;
    assert_eq!(status.code(), Some(2));
    assert_one_error_line(&err);

    // CSV with a header: named columns are fields, the others metadata.
    let csv_file = dir.path().join("more.csv");
    std::fs::write(
        &csv_file,
        "type,service,plan,message\nsignup,auth,pro,\"hello, \"\"world\"\"\nbye\"\nlogin,,free,\n",
    )
    .unwrap();
    let (status, out, err) = client(&url, &["import", csv_file.to_str().unwrap()], b"").await;
    assert_eq!(status.code(), Some(0), "{out} {err}");
    assert!(
        last_line(&out).starts_with("imported 2, duplicates 0, rejected 0"),
        "{out}"
    );
    let (events, _) = server.api().page(&[("type", "signup")]).await;
    assert_eq!(events[0]["metadata"], json!({"plan": "pro"}));
    assert_eq!(events[0]["message"], "hello, \"world\"\nbye");
    assert_eq!(events[0]["service"], "auth");
    assert!(
        events[0]["id"].as_str().unwrap().ends_with("-2"),
        "line 2: {}",
        events[0]
    );
}

/// Not on a terminal, `import` and `export` print a progress line on stderr every
/// `--progress-every` (5 s unless told) and end with their summary, the last line of stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_print_progress_lines_when_not_on_a_terminal() {
    let server = TestServer::start_temp(&[]).await;
    let url = server.api().base.clone();
    // Stdin arrives over a second: the import lasts that long at least.
    let parts: Vec<Vec<u8>> = (0..5)
        .map(|part| {
            (0..1_000)
                .map(|i| {
                    json!({"type": "progress", "metadata": {"i": part * 1_000 + i}}).to_string()
                        + "\n"
                })
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let (status, out, err) = client_fed(
        &url,
        &["import", "-", "--progress-every", "100ms"],
        &parts,
        Duration::from_millis(250),
    )
    .await;
    assert!(status.success(), "{err}");
    let progress: Vec<&str> = err
        .lines()
        .filter(|line| line.starts_with("import: "))
        .collect();
    assert!(!progress.is_empty(), "no progress line: {err}");
    assert!(progress[0].contains(" events ("), "{err}");
    assert!(
        last_line(&out).starts_with("imported 5000, duplicates 0, rejected 0 in "),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("progress.ndjson");
    let (status, out, err) = client(
        &url,
        &[
            "export",
            "--type",
            "progress",
            "--output",
            file.to_str().unwrap(),
            "--progress-every",
            "1ms",
        ],
        b"",
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(
        err.lines()
            .any(|line| line.starts_with("export: ") && line.ends_with(" lines")),
        "no progress line: {err}"
    );
    assert!(
        last_line(&out).starts_with("exported 5000 events, "),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_run_again_stores_each_event_once() {
    // Rate-limited so that the import takes seconds (it waits out each 429): the kill then
    // always lands in the middle, however fast the machine.
    let server =
        TestServer::start_temp(&["--ingest-rate-limit", "10000", "--ingest-burst", "10000"]).await;
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson.gz");
    let count = 30_000;
    std::fs::write(&file, ndjson_file(count)).unwrap();
    let file_arg = file.to_str().unwrap();

    let args = [
        "import",
        file_arg,
        "--batch-size",
        "100",
        "--concurrency",
        "1",
    ];
    let mut child = spawn_client(&api.base, &args, Stdio::null);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = api.total(&[("type", "imported")]).await;
        if stored >= 2_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let stored = api.total(&[("type", "imported")]).await;
    assert!(
        stored < count as u64 - 2,
        "the import ended before it was killed"
    );

    let (_, out, err) = client(&api.base, &["import", file_arg], b"").await;
    let summary = last_line(&out);
    let imported: u64 = summary
        .strip_prefix("imported ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary} {err}"));
    assert!(imported < count as u64 - 2, "{summary}");
    assert_eq!(api.total(&[("type", "imported")]).await, count as u64 - 2);
}

/// A free port on loopback, for a server that must come back on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `eventide serve` on `port`, ready once `/health` answers.
async fn serve_on(dir: &std::path::Path, port: u16) -> tokio::process::Child {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--retention",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(resp) = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
        {
            if resp.status() == 200 {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start on port {port}");
}

/// The id of the next event `tail --json` prints.
async fn next_id(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line within 30 s")
        .unwrap()
        .expect("tail still running");
    let event: Value = serde_json::from_str(&line).unwrap();
    event["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_across_a_restart_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = serve_on(dir.path(), port).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: url.clone(),
    };
    api.post_all(&[json!({"type": "before", "id": "t-0"})])
        .await;

    let mut tail = spawn_client(&url, &["tail", "--json", "--since", "0"], Stdio::piped);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    assert_eq!(
        next_id(&mut lines).await,
        "t-0",
        "stored events after --since first"
    );
    for i in 1..=3 {
        api.post_all(&[json!({"type": "live", "id": format!("t-{i}")})])
            .await;
    }
    for i in 1..=3 {
        assert_eq!(next_id(&mut lines).await, format!("t-{i}"));
    }

    // The server goes away; events arrive while tail is disconnected, and after.
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    server = serve_on(dir.path(), port).await;
    for i in 4..=6 {
        api.post_all(&[json!({"type": "after", "id": format!("t-{i}")})])
            .await;
    }
    for i in 4..=6 {
        assert_eq!(next_id(&mut lines).await, format!("t-{i}"));
    }
    // Nothing repeated after the last one.
    api.post_all(&[json!({"type": "after", "id": "t-7"})]).await;
    assert_eq!(next_id(&mut lines).await, "t-7");
    tail.kill().await.unwrap();
    server.kill().await.unwrap();
}

#[test]
fn help_lists_the_client_commands() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["send", "import", "query", "export", "tail"] {
        assert!(text.contains(command), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_as_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (status, out, err) = run_binary(&[
        "keys",
        "create",
        "--name",
        "cli",
        "--scope",
        "read",
        "--json",
        "--data-dir",
        data,
    ])
    .await;
    assert!(status.success(), "{err}");
    let key: Value = serde_json::from_str(out.trim()).unwrap();
    let key = key["key"].as_str().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let url = server.api().base.clone();

    let (status, _, err) = client(&url, &["query"], b"").await;
    assert_eq!(status.code(), Some(2), "no key: {err}");
    assert_one_error_line(&err);
    assert!(err.contains("401"), "{err}");
    let (status, out, err) = client(&url, &["query", "--api-key", key], b"").await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.is_empty(), "no events, no table: {out}");
    // A read key cannot send: 403, exit 2.
    let (status, _, err) = client(&url, &["send", "--api-key", key, "--type", "t"], b"").await;
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("403"), "{err}");
    // The export needs the read scope too.
    let (status, _, err) = client(&url, &["export", "--output", "-"], b"").await;
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = client(&url, &["export", "--api-key", key, "--output", "-"], b"").await;
    assert_eq!(status.code(), Some(0), "{err}");
}

/// A tail whose output is not read falls behind the server's buffer (`--stream-buffer`),
/// is told `lagged`, resumes from where it was, and still prints every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_tail_resumes_without_gap_or_repeat() {
    let server = TestServer::start_temp(&["--stream-buffer", "100"]).await;
    let api = server.api();
    let mut tail = spawn_client(&api.base, &["tail", "--json"], Stdio::piped);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    // Connected once the first event comes through.
    let mut first = String::new();
    for attempt in 0..100 {
        api.post_all(&[json!({"type": "probe", "id": format!("probe-{attempt}")})])
            .await;
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            first = line.unwrap().unwrap();
            break;
        }
    }
    assert!(!first.is_empty(), "tail never printed the probe");
    // Meanwhile nothing reads the pipe: tail blocks writing, the server's buffer fills.
    let total = 60_000;
    let padding = "x".repeat(200);
    for chunk in 0..total / 1_000 {
        let batch: Vec<Value> = (0..1_000)
            .map(|i| json!({"type": "lag", "id": format!("l-{}", chunk * 1_000 + i), "message": padding}))
            .collect();
        api.post_all(&batch).await;
    }
    let mut seen = Vec::new();
    while seen.len() < total {
        let id = next_id(&mut lines).await;
        if !id.starts_with("probe-") {
            seen.push(id);
        }
    }
    let expected: Vec<String> = (0..total).map(|i| format!("l-{i}")).collect();
    assert!(seen == expected, "every event once, in order");
    tail.kill().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tail.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("lagged"),
        "tail was never told it lagged: {stderr}"
    );
}
