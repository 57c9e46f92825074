//! `GET /events/export` through the real server: the same events as a cursor walk of the same
//! snapshot (also while events keep arriving), in `(timestamp, seq)` order, as NDJSON and as
//! CSV that a standard parser reads back, gzip-compressed when asked, with the filters of
//! `GET /events` and strict parameters. On SQLite, and on PostgreSQL as
//! `export_on_postgres` (a link to this file).

mod common;

use std::io::Read;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// `count` events with timestamps spread (and repeated) over an hour, awkward text included.
fn events(count: usize, base_ms: i64, tag: &str) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let mut event = json!({
                "type": if i % 3 == 0 { "signup" } else { "click" },
                "timestamp": base_ms + (i as i64 * 7919) % 3_600_000,
                "user_id": format!("u-{}", i % 17),
                "metadata": {"i": i, "tag": tag, "note": "a, \"quoted\"\nline"},
            });
            if i % 2 == 0 {
                event["service"] = json!("auth");
                event["message"] = json!(format!("line {i}, with \"quotes\"\r\nand more"));
            }
            event
        })
        .collect()
}

async fn post_in_batches(api: &Api, events: &[Value]) {
    for chunk in events.chunks(1000) {
        api.post_all(chunk).await;
    }
}

/// The export's text (decompressed by the client when it asked for gzip).
async fn export(api: &Api, query: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = api
        .client
        .get(api.url(&format!("/events/export?{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// `export`, asserting a `200` of `content_type` as an attachment named `filename`: the body.
async fn export_file(api: &Api, query: &str, content_type: &str, filename: &str) -> String {
    let (status, headers, text) = export(api, query).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], content_type);
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"{filename}\"")
    );
    text
}

fn ndjson_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// An ascending cursor walk with `filters`.
async fn walk_asc(api: &Api, filters: &[(&str, &str)]) -> Vec<Value> {
    let mut query = filters.to_vec();
    query.push(("order", "asc"));
    api.walk(&query, 1000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_equals_an_ascending_walk_as_ndjson_and_csv() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let base = now_ms() - 2 * 3_600_000;
    post_in_batches(&api, &events(2_500, base, "a")).await;

    let walk = walk_asc(&api, &[]).await;
    assert_eq!(walk.len(), 2_500);
    let text = export_file(&api, "", "application/x-ndjson", "events.ndjson").await;
    let exported = ndjson_lines(&text);
    assert_eq!(exported, walk);
    assert_ordered(&exported, false);

    // CSV: the fixed header, then one record per event, read back by the csv crate.
    let text = export_file(&api, "format=csv", "text/csv; charset=utf-8", "events.csv").await;
    assert!(
        text.starts_with("id,seq,timestamp,received_at,type,service,user_id,message,metadata\r\n")
    );
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), walk.len());
    for (row, event) in rows.iter().zip(&walk) {
        let text_of = |name: &str| event[name].as_str().unwrap_or("").to_owned();
        assert_eq!(row[0], text_of("id"));
        assert_eq!(row[1], event["seq"].to_string());
        assert_eq!(row[2], text_of("timestamp"));
        assert_eq!(row[3], text_of("received_at"));
        assert_eq!(row[4], text_of("type"));
        assert_eq!(row[5], text_of("service"));
        assert_eq!(row[6], text_of("user_id"));
        assert_eq!(row[7], text_of("message"));
        let metadata: Value = serde_json::from_str(&row[8]).unwrap();
        assert_eq!(metadata, event["metadata"]);
    }

    // The filters of GET /events.
    let from = fmt_ms(base + 600_000);
    let to = fmt_ms(base + 1_800_000);
    let filters = [
        ("type", "signup"),
        ("service", "auth"),
        ("from", from.as_str()),
        ("to", to.as_str()),
    ];
    let query = serde_urlencoded::to_string(filters).unwrap();
    let (_, _, text) = export(&api, &query).await;
    let filtered = ndjson_lines(&text);
    assert!(!filtered.is_empty());
    assert_eq!(filtered, walk_asc(&api, &filters).await);
    let (_, _, text) = export(&api, "user_id=u-3").await;
    assert_eq!(
        ndjson_lines(&text),
        walk_asc(&api, &[("user_id", "u-3")]).await
    );

    // Strict parameters.
    for (query, parameter) in [
        ("format=xml", "format"),
        ("limit=5", "limit"),
        ("from=x", "from"),
    ] {
        let (status, _, text) = export(&api, query).await;
        assert_eq!(status, 400, "{query}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_gzip_compressed_when_the_client_accepts_it() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    post_in_batches(&api, &events(1_200, now_ms() - 3_600_000, "g")).await;
    let plain = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = plain
        .get(api.url("/events/export?format=csv"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let compressed = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    let (_, _, uncompressed) = export(&api, "format=csv").await;
    assert_eq!(text, uncompressed);
    assert!(compressed.len() < uncompressed.len() / 3);

    // Without Accept-Encoding: plain.
    let resp = plain.get(api.url("/events/export")).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap().lines().count(), 1_200);
}

/// Events keep arriving during the export: it holds every event acknowledged before it
/// began, none from after its snapshot, and equals the walk of that snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_while_ingesting_equals_a_walk_of_the_same_snapshot() {
    let server = TestServer::start_temp(&[]).await;
    let api = server.api();
    let base = now_ms() - 2 * 3_600_000;
    let before = events(5_000, base, "before");
    post_in_batches(&api, &before).await;

    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                let batch = events(500, base, &format!("during-{round}"));
                api.post_all(&batch).await;
            }
        })
    };
    let (status, _, text) = export(&api, "").await;
    assert_eq!(status, 200);
    writer.await.unwrap();
    let exported = ndjson_lines(&text);
    let snapshot = exported.iter().map(ev_seq).max().unwrap();

    let everything = walk_asc(&api, &[]).await;
    assert_eq!(everything.len(), 15_000);
    let of_snapshot: Vec<Value> = everything
        .into_iter()
        .filter(|event| ev_seq(event) <= snapshot)
        .collect();
    assert_eq!(exported.len(), of_snapshot.len());
    assert!(exported == of_snapshot, "the export differs from the walk");
    let before_export = exported
        .iter()
        .filter(|event| event["metadata"]["tag"] == "before")
        .count();
    assert_eq!(before_export, 5_000);
}

/// On PostgreSQL the export reads one snapshot across its many pages: rows deleted from
/// the store while it runs (as retention or another process may) are still in it, events
/// arriving meanwhile are not, and it equals the cursor walk taken just before it began.
/// (The embedded store has one writer storing in `seq` order: its snapshot is the `seq`
/// bound, checked by the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_on_postgres_reads_one_snapshot() {
    let server = TestServer::start_temp(&[]).await;
    let Ok(schema) = std::fs::read_to_string(server.data_dir.join("test-postgres-schema")) else {
        eprintln!("PostgreSQL only: runs as export_on_postgres");
        return;
    };
    let api = server.api();
    let base = now_ms() - 2 * 3_600_000;
    post_in_batches(&api, &events(60_000, base, "before")).await;
    let walk = walk_asc(&api, &[]).await;
    assert_eq!(walk.len(), 60_000);
    // The last events of the export's order: deleted once it has begun, and far enough
    // from its start that they are not yet read (some 20 MB of NDJSON come before them,
    // more than the sockets between server and test hold).
    let doomed: Vec<i64> = walk[57_000..]
        .iter()
        .map(|event| ev_seq(event) as i64)
        .collect();

    let resp = api
        .client
        .get(api.url("/events/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = Vec::new();
    // A page has come: the snapshot is taken.
    while text.iter().filter(|&&byte| byte == b'\n').count() < 1_000 {
        text.extend_from_slice(&body.next().await.expect("more of the export").unwrap());
    }
    post_in_batches(&api, &events(3_000, base, "during")).await;
    let (sql, connection) =
        tokio_postgres::connect(&common::postgres::url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    sql.batch_execute(&format!("SET search_path TO \"{}\"", schema.trim()))
        .await
        .unwrap();
    let deleted = sql
        .execute("DELETE FROM events WHERE seq = ANY($1)", &[&doomed])
        .await
        .unwrap();
    assert_eq!(deleted, 3_000);
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let exported = ndjson_lines(std::str::from_utf8(&text).unwrap());
    assert_eq!(exported.len(), walk.len());
    assert!(
        exported == walk,
        "the export differs from the walk of its snapshot"
    );
    // The live table has changed under it.
    assert_eq!(walk_asc(&api, &[]).await.len(), 60_000 - 3_000 + 3_000);
}

/// With almost no export wait, an export right after a large batch may begin before the
/// indexer has caught up: then it is refused (`503`, `Retry-After`), never answered with
/// fewer events than were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_could_not_wait_for_the_indexer_is_refused() {
    let server = TestServer::start_temp(&["--export-wait", "1ms"]).await;
    let api = server.api();
    let mut refused = 0;
    for n in 1..=5 {
        let batch: Vec<Value> = (0..10_000)
            .map(|i| json!({"type": "p", "message": format!("{i}")}))
            .collect();
        api.post_all(&batch).await;
        let (status, headers, text) = export(&api, "").await;
        if status == 503 {
            refused += 1;
            assert!(headers.get("retry-after").is_some());
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"], "not_yet_indexed", "{body}");
        } else {
            assert_eq!(status, 200, "{text}");
            assert_eq!(text.lines().count(), n * 10_000);
        }
    }
    eprintln!("{refused} of 5 exports were refused");
}
