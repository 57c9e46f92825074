//! Backfills through the real server: history spanning decades is stored in a bounded number
//! of partitions (old data in years and months, recent data in days) and becomes queryable
//! quickly, queries keep answering meanwhile, cursor walks cross day, month and year
//! partitions in order, and retention drops and trims coarse partitions.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Events received less than this many days after their timestamp get day partitions
/// (`store::partitioning::RECENT_DAYS`).
const RECENT_DAYS: i64 = 35;

fn today_ms() -> i64 {
    let now = now_ms();
    now - now.rem_euclid(DAY)
}

/// `/health/detailed`'s count of partitions: (total, days, months, years).
async fn partitions(api: &Api) -> (u64, u64, u64, u64) {
    let health = api.get("/health/detailed").await.json();
    let counts = &health["events"]["partitions"];
    let count = |span: &str| {
        counts[span]
            .as_u64()
            .unwrap_or_else(|| panic!("no partition count `{span}` in {health}"))
    };
    (count("total"), count("day"), count("month"), count("year"))
}

/// Tables of the SQLite store in `data_dir` holding events, when the server uses one (the
/// `_on_postgres` run has none): what `/health/detailed`'s count must agree with.
fn sqlite_event_tables(data_dir: &std::path::Path) -> Option<u64> {
    let path = data_dir.join("events.db");
    if !path.exists() {
        return None;
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let db = rusqlite::Connection::open_with_flags(&path, flags).unwrap();
    let sql = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'events_%'";
    let tables: i64 = db.query_row(sql, [], |row| row.get(0)).unwrap();
    Some(tables as u64)
}

/// Whether an event `age` old, received now, gets a month partition (none other being in its
/// year): its month ends before the recent days and its year does not.
fn gets_a_month(age: i64) -> bool {
    let (year, month, _) = date_of(now_ms() - age);
    let (recent_year, recent_month, _) = date_of(today_ms() - RECENT_DAYS * DAY);
    year == recent_year && month < recent_month
}

/// How many day partitions a backfill of every day from years back up to `last_day` (a UTC
/// midnight) makes when received on the day starting at `received_on`: the recent days up to
/// `last_day`, plus the days of the month the recent days start in that come before them
/// (that month does not end before the recent days, so it cannot be a month partition, and
/// its earlier days fall back to days).
fn expected_days(last_day: i64, received_on: i64) -> u64 {
    let recent_from = received_on - RECENT_DAYS * DAY;
    let (_, _, day_of_month) = date_of(recent_from);
    ((last_day - recent_from) / DAY + 1 + (day_of_month - 1)) as u64
}

/// The UTC year, month (1-12) and day of the month (1-31) of `ms`.
fn date_of(ms: i64) -> (i64, i64, i64) {
    let text = fmt_ms(ms);
    let part = |range: std::ops::Range<usize>| text[range].parse().unwrap();
    (part(0..4), part(5..7), part(8..10))
}

/// A GET timed, asserting `200` within `limit`; returns the body.
async fn timed_get(api: &Api, path: &str, limit: Duration) -> Value {
    let started = Instant::now();
    let resp = api.get(path).await;
    let took = started.elapsed();
    resp.expect_status(200);
    assert!(
        took < limit,
        "GET {path} took {took:?}, more than {limit:?}"
    );
    resp.json()
}

/// The brief's case: one POST of 10,000 events, each on a different day (27 years back from
/// today), with retention off. All are queryable within 30 s of the `202`, and every query
/// meanwhile answers within 3 s (partial after `--read-wait`, 1 s); the store makes tens of
/// partitions (it made 10,000 day partitions, 20,015 tables, before).
#[tokio::test]
async fn ten_thousand_days_in_one_post_are_queryable_within_30_s() {
    let server = TestServer::start_temp(&["--retention", "0", "--read-wait", "1s"]).await;
    let api = server.api();
    let today = today_ms();
    let mut rng = Rng::new(11);
    let mut days: Vec<i64> = (0..10_000).collect();
    for i in (1..days.len()).rev() {
        days.swap(i, rng.range(0, i as u64) as usize);
    }
    let events: Vec<Value> = days
        .iter()
        .map(|&back| {
            json!({
                "id": format!("day-{back}"),
                "type": (["click", "view", "buy"][(back % 3) as usize]),
                "timestamp": today - back * DAY + (back * 7_919) % DAY / 2,
                "service": "shop",
                "user_id": format!("user-{}", back % 50),
            })
        })
        .collect();
    api.post_all(&events).await;
    let acknowledged = Instant::now();
    // Received today, or tomorrow if midnight passed meanwhile.
    let received_on = today_ms();

    let limit = Duration::from_secs(3);
    let mut queries = 0;
    loop {
        let total = timed_get(&api, "/events?page=1&page_size=1", limit).await["total"]
            .as_u64()
            .unwrap();
        timed_get(&api, "/events?type=buy&limit=50", limit).await;
        timed_get(&api, "/events?user_id=user-7&limit=50", limit).await;
        queries += 3;
        if total == 10_000 {
            break;
        }
        assert!(
            acknowledged.elapsed() < Duration::from_secs(30),
            "only {total} of 10,000 queryable 30 s after the 202"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = acknowledged.elapsed();
    eprintln!("10,000 days queryable {took:?} after the 202 ({queries} queries meanwhile)");

    // 1999-ish to last year in years, this year's earlier months, the recent days.
    let (total, days, months, years) = partitions(&api).await;
    assert_eq!(total, days + months + years);
    assert!((26..=28).contains(&years), "years: {years}");
    assert!(months <= 11, "months: {months}");
    let expected = expected_days(today, received_on);
    assert_eq!(days, expected, "days");
    assert!(total <= 28 + 11 + expected, "{total} partitions");
    if let Some(tables) = sqlite_event_tables(&server.data_dir) {
        assert_eq!(tables, total, "one events table per partition");
    }

    let walked = api.walk(&[], 1_000).await;
    assert_eq!(walked.len(), 10_000);
    assert_ordered(&walked, true);
    let ids: HashSet<String> = walked.iter().map(ev_id).collect();
    assert_eq!(ids.len(), 10_000);
    let buys = api.walk(&[("type", "buy"), ("order", "asc")], 500).await;
    assert_eq!(buys.len(), 3_333);
    assert_ordered(&buys, false);
}

/// Events at one instant of several ages, with ties; what a walk must return.
fn history(now: i64) -> Vec<Value> {
    // Recent (days), a few months back (a month or a day), years back (years).
    let ages = [
        HOUR,
        3 * DAY,
        40 * DAY,
        70 * DAY,
        200 * DAY,
        800 * DAY,
        5_000 * DAY,
        9_000 * DAY,
    ];
    let mut events = Vec::new();
    for (a, age) in ages.iter().enumerate() {
        for i in 0..30i64 {
            // Pairs of events share a timestamp, so ties are broken by seq.
            let ts = now - age + (i / 2) * 61_000;
            events.push(json!({
                "id": format!("age{a}-{i}"),
                "type": (["a", "b"][(i % 2) as usize]),
                "timestamp": ts,
                "user_id": format!("u{}", i % 4),
            }));
        }
    }
    events
}

/// Cursor walks, offset pages and time ranges cross day, month and year partitions in
/// `(timestamp, seq)` order, with every event exactly once; a retried client id in a year
/// partition is a duplicate.
#[tokio::test]
async fn walks_cross_day_month_and_year_partitions_in_order() {
    let server = TestServer::start_temp(&["--retention", "0"]).await;
    let api = server.api();
    let now = now_ms();
    let mut events = history(now);
    // Posted newest age last and shuffled in two batches, as an import might.
    let mut rng = Rng::new(5);
    for i in (1..events.len()).rev() {
        events.swap(i, rng.range(0, i as u64) as usize);
    }
    api.post_all(&events[..120]).await;
    api.post_all(&events[120..]).await;
    let mut expected: Vec<(i64, String)> = Vec::new();
    for e in &events {
        expected.push((
            e["timestamp"].as_i64().unwrap(),
            e["id"].as_str().unwrap().to_owned(),
        ));
    }

    // Queries wait for the indexer; /health/detailed does not.
    assert_eq!(api.total(&[]).await, 240);
    let (_, days, months, years) = partitions(&api).await;
    assert!(days >= 2 && years >= 2, "days {days}, years {years}");
    if [40 * DAY, 70 * DAY, 200 * DAY]
        .into_iter()
        .any(gets_a_month)
    {
        assert!(months >= 1, "months {months}");
    }

    for (filters, wanted) in [
        (vec![], None),
        (vec![("type", "a")], Some(("type", "a"))),
        (vec![("user_id", "u3")], Some(("user_id", "u3"))),
    ] {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|e| wanted.is_none_or(|(field, value)| e[field] == json!(value)))
            .collect();
        for order in ["desc", "asc"] {
            let mut query = filters.clone();
            query.push(("order", order));
            let walked = api.walk(&query, 7).await;
            assert_eq!(walked.len(), matching.len(), "{query:?}");
            assert_ordered(&walked, order == "desc");
            let ids: HashSet<String> = walked.iter().map(ev_id).collect();
            assert_eq!(ids.len(), walked.len(), "no event twice: {query:?}");
            let timestamps: Vec<i64> = walked.iter().map(ev_ts).collect();
            let mut sorted: Vec<i64> = matching
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap())
                .collect();
            sorted.sort_unstable();
            if order == "desc" {
                sorted.reverse();
            }
            assert_eq!(timestamps, sorted, "{query:?}");
        }
    }

    // Offset pages: page 5 of 17 skips whole partitions by their counts.
    expected.sort();
    let body = api
        .get("/events?order=asc&page=5&page_size=17")
        .await
        .json();
    assert_eq!(body["total"], json!(240), "{body}");
    let page: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(ev_ts)
        .collect();
    let wanted: Vec<i64> = expected[68..85].iter().map(|(ts, _)| *ts).collect();
    assert_eq!(page, wanted);

    // A range from a year partition to a recent day.
    let (from, to) = (now - 5_000 * DAY, now - 3 * DAY + 61_000);
    let query = format!("/events?from={}&to={}&limit=1000", fmt_ms(from), fmt_ms(to));
    let found = api.get(&query).await.json()["events"]
        .as_array()
        .unwrap()
        .clone();
    let inside = expected
        .iter()
        .filter(|(ts, _)| (from..to).contains(ts))
        .count();
    assert_eq!(found.len(), inside);
    assert_eq!(
        inside,
        30 + 30 * 4 + 2,
        "ages 5,000 to 40 days and two of 3 days"
    );

    // A retry of an old event is a duplicate, and the store still has it once.
    let body = api.post_events(&json!([events[0].clone()])).await.json();
    assert_eq!(body["duplicates"], json!(1), "{body}");
    let id = events[0]["id"].as_str().unwrap();
    api.get_event(id).await.expect_status(200);
    assert_eq!(api.total(&[]).await, 240);
}

/// Retention with a coarse partition involved: events of 2015 (a year partition) and over
/// all of 2016 (another), restarted with a retention whose cutoff is 2016-07-01. 2015 is
/// dropped whole; 2016's first half is trimmed by rows, in more than one step of 2,000; the
/// rest of 2016 and today stay, in order, and 2016 still takes late events after the cutoff.
#[tokio::test]
async fn retention_drops_and_trims_year_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let year_2015 = parse_ts("2015-01-01T00:00:00.000Z").unwrap();
    let year_2016 = parse_ts("2016-01-01T00:00:00.000Z").unwrap();
    let cutoff = parse_ts("2016-07-01T00:00:00.000Z").unwrap();
    // 5,000 events 1.76 h apart over the leap year 2016: none within an hour after July 1.
    let step = 366 * DAY / 5_000;
    let event = |id: String, ts: i64, i: i64| {
        json!({"id": id, "type": (["a", "b"][(i % 2) as usize]), "timestamp": ts,
               "user_id": format!("u{}", i % 3)})
    };
    let mut old: Vec<Value> = (0..300)
        .map(|i| event(format!("y2015-{i}"), year_2015 + i * DAY, i))
        .collect();
    old.extend((0..5_000).map(|i| event(format!("y2016-{i}"), year_2016 + i * step, i)));
    let recent: Vec<Value> = (0..20)
        .map(|i| json!({"type": "a", "timestamp": now_ms() - HOUR + i, "user_id": "u1"}))
        .collect();

    let mut server = TestServer::start(dir.path(), &["--retention", "0"]).await;
    let api = server.api();
    for chunk in old.chunks(2_000) {
        api.post_all(chunk).await;
    }
    api.post_all(&recent).await;
    assert_eq!(api.total(&[]).await, 5_320);
    let (_, _, _, years) = partitions(&api).await;
    assert_eq!(years, 2, "2015 and 2016");
    server.terminate().await;

    let keep_ms = now_ms() - cutoff;
    let server = TestServer::start(dir.path(), &["--retention", &format!("{keep_ms}ms")]).await;
    let api = server.api();
    let run = poll_until(Duration::from_secs(60), || async {
        let health = api.get("/health/detailed").await.json();
        let run = health["retention"]["last_run"].clone();
        (run != Value::Null).then_some(run)
    })
    .await
    .expect("the start-up retention run");
    let first_half = (0..5_000i64)
        .filter(|i| year_2016 + i * step < cutoff)
        .count() as u64;
    assert_eq!(first_half, 2_487);
    assert_eq!(run["error"], Value::Null, "{run}");
    assert_eq!(run["events_deleted"], json!(300 + first_half), "{run}");
    assert_eq!(run["partitions_dropped"], json!(1), "2015 only: {run}");
    let (_, days, months, years) = partitions(&api).await;
    assert_eq!((years, months), (1, 0), "2016 is left");
    assert!(days >= 1);

    let kept = 5_000 - first_half + 20;
    assert_eq!(api.total(&[]).await, kept);
    let walked = api.walk(&[("order", "asc")], 500).await;
    assert_eq!(walked.len() as u64, kept);
    assert_ordered(&walked, false);
    assert!(ev_ts(&walked[0]) >= cutoff, "first kept: {}", walked[0]);
    assert_eq!(ev_id(&walked[0]), format!("y2016-{first_half}"));
    api.get_event("y2016-0").await.expect_status(404);
    api.get_event("y2015-299").await.expect_status(404);
    api.get_event("y2016-4999").await.expect_status(200);
    let u2 = api.walk(&[("user_id", "u2")], 100).await;
    let expected_u2 = (first_half..5_000).filter(|i| i % 3 == 2).count();
    assert_eq!(u2.len(), expected_u2);
    assert_ordered(&u2, true);

    // 2016 after the cutoff still takes events (into its year); before it they are refused.
    let late = json!({"id": "late", "type": "a", "timestamp": cutoff + 30 * DAY});
    api.post_one(late).await;
    let expired = json!({"type": "a", "timestamp": cutoff - 30 * DAY});
    api.post_events(&expired).await.expect_error(400);
    assert_eq!(partitions(&api).await.3, 1);
    assert_eq!(api.total(&[]).await, kept + 1);
}
