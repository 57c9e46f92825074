//! One process per data directory: a second server on a directory in use refuses to start,
//! naming the directory and the process holding it, and a crash never leaves it locked.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let mut first = TestServer::start_temp(&[]).await;
    first.post_one(json!({"id": "fromA-1", "type": "a"})).await;
    let dir = first.data_dir.display().to_string();

    let stderr = serve_refused("127.0.0.1:0", &dir, &["--retention", "0"]).await;
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(line.contains(&dir), "names the directory: {line}");
    assert!(
        line.contains(&format!("process {}", first.pid())),
        "names the process holding it: {line}"
    );

    // The first server was not disturbed, and a crash releases the lock at once.
    first.get_event("fromA-1").await.expect_status(200);
    first.kill9().await;
    first.restart().await;
    first.get_event("fromA-1").await.expect_status(200);
    first.post_one(json!({"id": "fromA-2", "type": "a"})).await;
}
