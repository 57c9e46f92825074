//! The `Store` contract, checked against a real SQLite file. The checks take any
//! `Arc<dyn Store>`, so every backend runs the same suite.

use std::sync::Arc;

use eventide::event::StoredEvent;
use eventide::store::sqlite::{SqliteStore, UserIndexSweep};
use eventide::store::{
    EventFilter, EventQuery, Order, Position, RollupQuery, RollupRow, Store, DAY_MS, HOUR_MS,
    MINUTE_MS,
};

fn event(seq: u64, id: &str, kind: &str, ts: i64) -> StoredEvent {
    StoredEvent {
        seq,
        id: id.to_owned(),
        id_from_client: id.starts_with("client-"),
        kind: kind.to_owned(),
        timestamp_ms: ts,
        received_at_ms: 1_000 + seq as i64,
        service: Some(format!("svc-{}", seq % 2)),
        user_id: Some(format!("user-{}", seq % 3)),
        message: None,
        metadata: None,
    }
}

fn query(filter: EventFilter, order: Order, limit: usize) -> EventQuery {
    EventQuery {
        filter,
        order,
        after: None,
        limit,
        offset: 0,
    }
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Ten events: seqs 1..=10, timestamps with ties (seq 3 and 4 share one).
async fn load_ten(store: &Arc<dyn Store>) {
    let timestamps = [100, 200, 300, 300, 500, 600, 700, 800, 900, 1000];
    let events: Vec<_> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| {
            let seq = i as u64 + 1;
            let kind = if seq % 2 == 0 { "even" } else { "odd" };
            event(seq, &format!("client-{seq}"), kind, ts)
        })
        .collect();
    store
        .append_batch(Arc::new(events[..6].to_vec()), 6)
        .await
        .unwrap();
    store
        .append_batch(Arc::new(events[6..].to_vec()), 10)
        .await
        .unwrap();
}

async fn check_order_filters_and_paging(store: Arc<dyn Store>) {
    load_ten(&store).await;
    assert_eq!(store.indexed_seq().await.unwrap(), 10);

    let all = store
        .query(query(EventFilter::default(), Order::Desc, 100))
        .await
        .unwrap();
    assert_eq!(
        seqs(&all),
        [10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
        "ties broken by seq, descending"
    );
    let asc = store
        .query(query(EventFilter::default(), Order::Asc, 100))
        .await
        .unwrap();
    assert_eq!(seqs(&asc), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

    let even = EventFilter {
        kind: Some("even".into()),
        ..Default::default()
    };
    let found = store
        .query(query(even.clone(), Order::Desc, 100))
        .await
        .unwrap();
    assert_eq!(seqs(&found), [10, 8, 6, 4, 2]);
    assert_eq!(store.count(even).await.unwrap(), 5);

    let by_service_and_user = EventFilter {
        service: Some("svc-1".into()),
        user_id: Some("user-0".into()),
        ..Default::default()
    };
    let found = store
        .query(query(by_service_and_user, Order::Asc, 100))
        .await
        .unwrap();
    assert_eq!(seqs(&found), [3, 9]);

    let window = EventFilter {
        from_ms: Some(300),
        to_ms: Some(600),
        ..Default::default()
    };
    let found = store
        .query(query(window.clone(), Order::Asc, 100))
        .await
        .unwrap();
    assert_eq!(seqs(&found), [3, 4, 5], "from inclusive, to exclusive");
    assert_eq!(store.count(window).await.unwrap(), 3);

    let snapshot = EventFilter {
        max_seq: Some(4),
        ..Default::default()
    };
    let found = store
        .query(query(snapshot, Order::Desc, 100))
        .await
        .unwrap();
    assert_eq!(seqs(&found), [4, 3, 2, 1]);

    // Keyset: strictly after (ts 300, seq 4) in descending order is seq 3 (same ts), then 2, 1.
    let mut after = query(EventFilter::default(), Order::Desc, 100);
    after.after = Some(Position {
        timestamp_ms: 300,
        seq: 4,
    });
    assert_eq!(seqs(&store.query(after).await.unwrap()), [3, 2, 1]);
    let mut after = query(EventFilter::default(), Order::Asc, 2);
    after.after = Some(Position {
        timestamp_ms: 300,
        seq: 3,
    });
    assert_eq!(seqs(&store.query(after).await.unwrap()), [4, 5]);

    let mut page = query(EventFilter::default(), Order::Desc, 3);
    page.offset = 3;
    assert_eq!(seqs(&store.query(page).await.unwrap()), [7, 6, 5]);
}

async fn check_fields_round_trip_and_get(store: Arc<dyn Store>) {
    let mut stored = event(1, "client-\u{1f600}", "ty\"pe", -5);
    stored.message = Some("line\nbreak <b>".into());
    stored.metadata = Some(r#"{"z":1.50,"a":{"b":[1e3,null]}}"#.into());
    stored.service = None;
    store
        .append_batch(Arc::new(vec![stored.clone()]), 1)
        .await
        .unwrap();
    assert_eq!(store.get(stored.id.clone()).await.unwrap(), Some(stored));
    assert_eq!(store.get("missing".into()).await.unwrap(), None);
}

async fn check_appends_are_idempotent_on_id(store: Arc<dyn Store>) {
    store
        .append_batch(Arc::new(vec![event(1, "client-a", "t", 1)]), 1)
        .await
        .unwrap();
    // A replay after a crash, or an old duplicate no longer in the dedup set.
    let again = vec![
        event(1, "client-a", "t", 1),
        event(2, "client-a", "t", 2),
        event(3, "b", "t", 3),
    ];
    let outcome = store.append_batch(Arc::new(again), 3).await.unwrap();
    assert_eq!(
        outcome.skipped,
        [1, 2],
        "ids already stored are reported skipped"
    );
    let all = store
        .query(query(EventFilter::default(), Order::Asc, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&all), [1, 3]);
    assert_eq!(
        store.indexed_seq().await.unwrap(),
        3,
        "the position advances anyway"
    );
}

async fn check_recent_client_ids(store: Arc<dyn Store>) {
    load_ten(&store).await;
    store
        .append_batch(Arc::new(vec![event(11, "server-made", "t", 1)]), 11)
        .await
        .unwrap();
    // received_at is 1000 + seq: ids received at 1007 or later are 7..=10.
    let recent = store.recent_client_ids(1_007, 100).await.unwrap();
    let ids: Vec<_> = recent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["client-10", "client-9", "client-8", "client-7"],
        "newest first, client ids only"
    );
    assert_eq!(
        store.recent_client_ids(0, 2).await.unwrap().len(),
        2,
        "limit holds"
    );
}

/// Rollups count exactly the stored events (not the skipped duplicates), per minute, type and
/// service (none apart from ""), including times before 1970; the event count matches.
async fn check_rollups_and_counts(store: Arc<dyn Store>) {
    assert_eq!(store.time_range().await.unwrap(), None, "an empty store");
    let minute = 1_700_000_040_000; // a minute boundary
    let mut events = vec![
        event(1, "a", "login", minute),
        event(2, "b", "login", minute + 59_999),
        event(3, "c", "login", minute + 60_000),
        event(4, "d", "signup", minute - 1),
        event(5, "e", "login", -1), // 1969-12-31T23:59:59.999Z
    ];
    events[0].service = None;
    events[1].service = Some(String::new());
    events[2].service = Some(String::new());
    events[3].service = Some("web".into());
    events[4].service = Some("web".into());
    store
        .append_batch(Arc::new(events.clone()), 5)
        .await
        .unwrap();
    // A duplicate id is not counted twice.
    let again = vec![event(6, "a", "login", minute)];
    store.append_batch(Arc::new(again), 6).await.unwrap();
    assert_eq!(store.event_count().await.unwrap(), 5);
    assert_eq!(
        store.time_range().await.unwrap(),
        Some((-1, minute + 60_000)),
        "oldest and newest timestamps"
    );

    let rollups = |from_ms, to_ms, bucket_ms, kind: Option<&str>, service: Option<&str>| {
        let store = store.clone();
        let query = RollupQuery {
            from_ms,
            to_ms,
            bucket_ms,
            kind: kind.map(Into::into),
            service: service.map(Into::into),
        };
        async move {
            let mut rows = store.rollups(query).await.unwrap();
            rows.sort_by(|a, b| {
                (a.bucket_ms, &a.kind, &a.service).cmp(&(b.bucket_ms, &b.kind, &b.service))
            });
            rows
        }
    };
    let row = |bucket_ms, kind: &str, service: Option<&str>, count| RollupRow {
        bucket_ms,
        kind: kind.into(),
        service: service.map(Into::into),
        count,
    };
    assert_eq!(
        rollups(i64::MIN, i64::MAX, MINUTE_MS, None, None).await,
        [
            row(-MINUTE_MS, "login", Some("web"), 1),
            row(minute - MINUTE_MS, "signup", Some("web"), 1),
            row(minute, "login", None, 1),
            row(minute, "login", Some(""), 1),
            row(minute + MINUTE_MS, "login", Some(""), 1),
        ]
    );
    assert_eq!(
        rollups(
            minute - MINUTE_MS,
            minute + 2 * MINUTE_MS,
            HOUR_MS,
            Some("login"),
            Some("")
        )
        .await,
        [row(
            minute - minute.rem_euclid(HOUR_MS),
            "login",
            Some(""),
            2
        )],
        "hour buckets, filtered; the range excludes the 1969 event"
    );
    assert_eq!(
        rollups(minute, minute + MINUTE_MS, MINUTE_MS, None, Some("web")).await,
        []
    );
    // Whole hours come from the hourly rollups, which must agree.
    let day = minute - minute.rem_euclid(DAY_MS);
    assert_eq!(
        rollups(day - DAY_MS, day + DAY_MS, DAY_MS, None, None).await,
        [
            row(day, "login", None, 1),
            row(day, "login", Some(""), 2),
            row(day, "signup", Some("web"), 1),
        ]
    );
    assert_eq!(
        rollups(-HOUR_MS, HOUR_MS, HOUR_MS, None, None).await,
        [row(-HOUR_MS, "login", Some("web"), 1)]
    );

    let mut seconds = store.counts_per_second(minute - 1).await.unwrap();
    seconds.sort_by(|a, b| (a.bucket_ms, &a.service).cmp(&(b.bucket_ms, &b.service)));
    assert_eq!(
        seconds,
        [
            row(minute - 1_000, "signup", Some("web"), 1),
            row(minute, "login", None, 1),
            row(minute + 59_000, "login", Some(""), 1),
            row(minute + 60_000, "login", Some(""), 1),
        ]
    );
}

/// A resuming stream reads events after a seq, in seq order, filtered.
async fn check_events_after_seq(store: Arc<dyn Store>) {
    load_ten(&store).await;
    let after = |filter: EventFilter, seq, limit| {
        let store = store.clone();
        async move { seqs(&store.events_after_seq(filter, seq, limit).await.unwrap()) }
    };
    assert_eq!(after(EventFilter::default(), 6, 100).await, [7, 8, 9, 10]);
    assert_eq!(after(EventFilter::default(), 0, 3).await, [1, 2, 3]);
    let even = EventFilter {
        kind: Some("even".into()),
        ..Default::default()
    };
    assert_eq!(after(even, 3, 100).await, [4, 6, 8, 10]);
    let user = EventFilter {
        user_id: Some("user-1".into()),
        ..Default::default()
    };
    assert_eq!(after(user, 1, 100).await, [4, 7, 10]);
}

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("events.db"), false).unwrap();
    (dir, Arc::new(store))
}

/// A store whose user index keeps about half its entries in each of its two tables, so
/// user queries must merge them.
async fn sqlite_store_half_swept() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sweep = UserIndexSweep {
        per_added: 0.5,
        recent_target: usize::MAX,
    };
    let store = SqliteStore::open_with(&dir.path().join("events.db"), false, sweep).unwrap();
    (dir, Arc::new(store))
}

/// Many batches for a few users, with timestamp ties; every user query (both orders,
/// keyset pages, other filters, counts) must match what the events say.
async fn check_user_queries_across_batches(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    let mut seq = 0;
    for batch in 0..20 {
        let mut events = Vec::new();
        for i in 0..50u64 {
            seq += 1;
            let mut e = event(
                seq,
                &format!("e-{seq}"),
                if i % 3 == 0 { "a" } else { "b" },
                ((seq * 7919) % 400) as i64,
            );
            e.user_id = Some(format!("user-{}", (seq * 31 + batch) % 5));
            events.push(e);
        }
        all.extend(events.clone());
        store.append_batch(Arc::new(events), seq).await.unwrap();
    }
    // Replaying a stored id adds nothing, to the events or to the user index.
    store
        .append_batch(Arc::new(vec![all[0].clone()]), seq)
        .await
        .unwrap();

    for user in 0..5 {
        let user_id = format!("user-{user}");
        for (order, kind, from) in [
            (Order::Desc, None, None),
            (Order::Asc, Some("a"), Some(100)),
        ] {
            let filter = EventFilter {
                user_id: Some(user_id.clone()),
                kind: kind.map(str::to_owned),
                from_ms: from,
                ..Default::default()
            };
            let mut expected: Vec<&StoredEvent> = all
                .iter()
                .filter(|e| e.user_id.as_deref() == Some(user_id.as_str()))
                .filter(|e| kind.is_none_or(|k| e.kind == k))
                .filter(|e| from.is_none_or(|f| e.timestamp_ms >= f))
                .collect();
            expected.sort_by_key(|e| (e.timestamp_ms, e.seq));
            if order == Order::Desc {
                expected.reverse();
            }
            let expected: Vec<u64> = expected.iter().map(|e| e.seq).collect();
            assert!(!expected.is_empty());

            let everything = store
                .query(query(filter.clone(), order, 1000))
                .await
                .unwrap();
            assert_eq!(seqs(&everything), expected, "{user_id} {order:?}");
            assert_eq!(
                store.count(filter.clone()).await.unwrap(),
                expected.len() as u64
            );

            let mut walked = Vec::new();
            let mut after = None;
            loop {
                let mut page = query(filter.clone(), order, 7);
                page.after = after;
                let events = store.query(page).await.unwrap();
                let Some(last) = events.last() else { break };
                after = Some(Position {
                    timestamp_ms: last.timestamp_ms,
                    seq: last.seq,
                });
                walked.extend(seqs(&events));
            }
            assert_eq!(walked, expected, "keyset walk for {user_id} {order:?}");

            let mut offset_page = query(filter.clone(), order, 5);
            offset_page.offset = 3;
            let page = store.query(offset_page).await.unwrap();
            assert_eq!(
                seqs(&page),
                expected[3..8.min(expected.len())],
                "offset page for {user_id}"
            );
        }
    }
}

#[tokio::test]
async fn sqlite_orders_filters_and_pages() {
    let (_dir, store) = sqlite_store().await;
    check_order_filters_and_paging(store).await;
}

#[tokio::test]
async fn sqlite_round_trips_every_field() {
    let (_dir, store) = sqlite_store().await;
    check_fields_round_trip_and_get(store).await;
}

#[tokio::test]
async fn sqlite_appends_are_idempotent_on_id() {
    let (_dir, store) = sqlite_store().await;
    check_appends_are_idempotent_on_id(store).await;
}

#[tokio::test]
async fn sqlite_lists_recent_client_ids() {
    let (_dir, store) = sqlite_store().await;
    check_recent_client_ids(store).await;
}

#[tokio::test]
async fn sqlite_keeps_rollups_and_counts() {
    let (_dir, store) = sqlite_store().await;
    check_rollups_and_counts(store).await;
}

#[tokio::test]
async fn sqlite_reads_events_after_a_seq() {
    let (_dir, store) = sqlite_store().await;
    check_events_after_seq(store).await;
}

#[tokio::test]
async fn sqlite_keeps_events_and_position_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, true).unwrap());
        load_ten(&store).await;
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, false).unwrap());
    assert_eq!(store.indexed_seq().await.unwrap(), 10);
    assert_eq!(store.count(EventFilter::default()).await.unwrap(), 10);
}

#[tokio::test]
async fn sqlite_user_queries_match_across_batches() {
    let (dir, store) = sqlite_store().await;
    check_user_queries_across_batches(store).await;
    let (main, recent) = user_index_levels(&dir);
    assert_eq!(main + recent, 1000, "one entry per event with a user");
    assert!(main > 0, "the sweep moved entries into the main level");
}

/// Rows in each level of the user index of the store in `dir`.
fn user_index_levels(dir: &tempfile::TempDir) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    let count = |table: &str| {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    };
    let day_tables: Vec<String> = db
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'user_index_d%'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!day_tables.is_empty(), "the main level has a table per day");
    let main = day_tables.iter().map(|table| count(table)).sum();
    (main, count("user_index_recent"))
}

#[tokio::test]
async fn sqlite_with_both_user_index_levels_in_use() {
    let (dir, store) = sqlite_store_half_swept().await;
    check_user_queries_across_batches(store).await;
    let (main, recent) = user_index_levels(&dir);
    assert_eq!(main + recent, 1000, "one entry per event with a user");
    assert!(
        main > 100 && recent > 100,
        "both levels in use: {main} + {recent}"
    );
    let (_dir, store) = sqlite_store_half_swept().await;
    check_order_filters_and_paging(store).await;
    let (_dir, store) = sqlite_store_half_swept().await;
    check_appends_are_idempotent_on_id(store).await;
}
