//! The `Store` contract, checked against a real SQLite file and a real PostgreSQL server (a
//! schema per test; see `common::postgres`). Each case of [`contract!`] runs on both, as
//! `sqlite::<case>` and `postgres::<case>`; after it, tests of what only one store has.

mod common;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use common::parse_ts;
use common::postgres::TestSchema;
use eventide::event::StoredEvent;
use eventide::store::partitioning::{Span, TimeRange};
use eventide::store::postgres::PostgresStore;
use eventide::store::sqlite::{SqliteStore, UserIndexSweep};
use eventide::store::{
    floor_to, EventFilter, EventQuery, Order, Position, ReplayQuery, RollupQuery, RollupRow, Store,
    StoreError, DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS,
};

/// The store contract: each case (an `async fn(TestStore)` below) runs on SQLite, as
/// `sqlite::<case>`, and on PostgreSQL in a schema named after it, as `postgres::<case>`
/// (SKIPPED without a server outside CI, see `common::postgres`).
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::TestStore::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(store) = super::TestStore::postgres(stringify!($case)).await {
                        super::$case(store).await;
                    }
                }
            )*
        }
    };
}

contract!(
    orders_filters_and_pages,
    round_trips_every_field,
    appends_are_idempotent_on_id,
    skips_exactly_the_stored_ids_in_long_batches,
    holds_uuid_ids_as_sent,
    lists_recent_client_ids,
    keeps_rollups_and_counts,
    reads_events_after_a_seq,
    keeps_events_and_position_across_reopen,
    user_queries_match_across_batches,
    service_queries_match_across_batches,
    purges_before_a_cutoff,
    keeps_old_events_in_months_and_years,
    trims_a_coarse_partition_in_several_steps,
);

/// A store under test, and what holds its data, kept as long as a clone of it lives.
#[derive(Clone)]
struct TestStore {
    store: Arc<dyn Store>,
    data: Arc<Data>,
}

enum Data {
    /// The directory of the SQLite file, `events.db`.
    Sqlite(tempfile::TempDir),
    /// The PostgreSQL schema, dropped with this.
    Postgres(TestSchema),
}

impl Deref for TestStore {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl TestStore {
    fn sqlite() -> TestStore {
        Self::sqlite_with(UserIndexSweep::DEFAULT)
    }

    /// A store whose user index keeps about half its entries in each of its two tables, so
    /// user queries must merge them.
    fn sqlite_half_swept() -> TestStore {
        Self::sqlite_with(UserIndexSweep {
            per_added: 0.5,
            recent_target: usize::MAX,
        })
    }

    fn sqlite_with(sweep: UserIndexSweep) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("events.db"), false, sweep).unwrap();
        TestStore {
            store: Arc::new(store),
            data: Arc::new(Data::Sqlite(dir)),
        }
    }

    /// A PostgreSQL store in a fresh schema; `None` when the test server cannot be reached
    /// (see `common::postgres`).
    async fn postgres(label: &str) -> Option<TestStore> {
        let schema = TestSchema::new(label).await?;
        Some(TestStore {
            store: Arc::new(pg_connect(&schema).await),
            data: Arc::new(Data::Postgres(schema)),
        })
    }

    /// [`reopen`](Self::reopen), running `alter` on the files while the store is closed.
    async fn reopen_altered(self, alter: impl FnOnce()) -> TestStore {
        let TestStore { store, data } = self;
        // Dropped, the store has closed its files.
        drop(store);
        alter();
        TestStore {
            store: Arc::new(SqliteStore::open(&sqlite_path(&data), true).unwrap()),
            data,
        }
    }

    /// The same data opened again, as a restarted process does (SQLite with `fsync` this
    /// time), once this store is closed.
    async fn reopen(self) -> TestStore {
        let TestStore { store, data } = self;
        drop(store);
        let store: Arc<dyn Store> = match &*data {
            Data::Sqlite(dir) => {
                Arc::new(SqliteStore::open(&dir.path().join("events.db"), true).unwrap())
            }
            Data::Postgres(schema) => Arc::new(pg_connect(schema).await),
        };
        TestStore { store, data }
    }

    /// SQLite's user index, in two levels: how many entries each holds (`None` on
    /// PostgreSQL, where users are an index of the events table).
    fn user_index_levels(&self) -> Option<(i64, i64)> {
        match &*self.data {
            Data::Sqlite(dir) => Some(user_index_levels(dir)),
            Data::Postgres(_) => None,
        }
    }

    /// After purges, SQLite's user index has exactly one entry per stored event (every test
    /// event has a user), and so has its service index (every test event has a service):
    /// none is left of a purged event, in either level of the user index.
    async fn assert_one_index_entry_per_event(&self) {
        if let Data::Sqlite(dir) = &*self.data {
            let (main, recent) = user_index_levels(dir);
            let events = self.event_count().await.unwrap() as i64;
            assert_eq!(main + recent, events, "{main} + {recent} entries");
            assert_eq!(service_index_entries(dir), events, "service index entries");
        }
    }
}

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

/// [`event`] with an id the client sent, whatever it looks like.
fn client_event(seq: u64, id: &str, kind: &str, ts: i64) -> StoredEvent {
    StoredEvent {
        id_from_client: true,
        ..event(seq, id, kind, ts)
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

/// Stores `events` as a batch indexed through `through`, checking that none was skipped.
async fn append_none_skipped(store: &Arc<dyn Store>, events: &[StoredEvent], through: u64) {
    let outcome = store
        .append_batch(Arc::new(events.to_vec()), through)
        .await
        .unwrap();
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
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

async fn orders_filters_and_pages(store: TestStore) {
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

async fn round_trips_every_field(store: TestStore) {
    let mut stored = event(1, "client-\u{1f600}\u{0}", "ty\"pe\u{0}", -5);
    stored.message = Some("line\nbreak <b> \u{0}".into());
    stored.user_id = Some("\u{0}".into());
    stored.metadata = Some(r#"{"z":1.50,"a":{"b":[1e3,null]}}"#.into());
    stored.service = None;
    store
        .append_batch(Arc::new(vec![stored.clone()]), 1)
        .await
        .unwrap();
    assert_eq!(store.get(&stored.id).await.unwrap(), Some(stored));
    assert_eq!(store.get("missing").await.unwrap(), None);
}

async fn appends_are_idempotent_on_id(store: TestStore) {
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
    // A new id twice in one batch: the first event is stored, the second skipped.
    let twice = vec![event(4, "c", "t", 4), event(5, "c", "t", 5)];
    let outcome = store.append_batch(Arc::new(twice), 5).await.unwrap();
    assert_eq!(outcome.skipped, [5]);
    assert_eq!(store.event_count().await.unwrap(), 3);
    // Skipped events leave nothing in the indexes: of svc-0's (even seqs) only 4 is stored.
    let svc_0 = EventFilter {
        service: Some("svc-0".into()),
        ..Default::default()
    };
    let found = store.query(query(svc_0, Order::Asc, 10)).await.unwrap();
    assert_eq!(seqs(&found), [4]);
    store.assert_one_index_entry_per_event().await;
}

/// Long batches over two partitions, stored again after a crash and mixed with new events
/// whose ids are stored already (in the batch before, or earlier in the same batch): exactly
/// those are skipped, wherever they fall in the batch, and only the others are counted in
/// the rollups (of more keys a minute than the store writes in one statement).
async fn skips_exactly_the_stored_ids_in_long_batches(store: TestStore) {
    // Seqs 1..=130 on one day, 131..=200 on the next; 41 types over two services.
    let ts_of = |seq: u64| {
        if seq <= 130 {
            seq as i64
        } else {
            DAY_MS + seq as i64
        }
    };
    let new_event = |seq: u64, id: &str, ts: i64| event(seq, id, &format!("t{}", seq % 41), ts);
    let first: Vec<_> = (1..=200)
        .map(|seq| new_event(seq, &format!("client-{seq}"), ts_of(seq)))
        .collect();
    append_none_skipped(&store, &first, 200).await;

    // 101..=200 again as they were; then 201..=300, new seqs, of which every seventh has the
    // id (and time) of an event stored before, and 251 the id of 250.
    let mut second = first[100..].to_vec();
    let mut expected_skipped: Vec<u64> = (101..=200).collect();
    for seq in 201..=300 {
        let event = if seq % 7 == 0 {
            expected_skipped.push(seq);
            let stored = seq - 200;
            new_event(seq, &format!("client-{stored}"), ts_of(stored))
        } else if seq == 251 {
            expected_skipped.push(seq);
            new_event(seq, "client-twice", ts_of(seq))
        } else if seq == 250 {
            new_event(seq, "client-twice", ts_of(seq))
        } else {
            new_event(seq, &format!("client-{seq}"), ts_of(seq))
        };
        second.push(event);
    }
    let outcome = store
        .append_batch(Arc::new(second.clone()), 300)
        .await
        .unwrap();
    let mut skipped = outcome.skipped;
    skipped.sort_unstable();
    assert_eq!(skipped, expected_skipped);

    let stored: Vec<&StoredEvent> = first
        .iter()
        .chain(
            second
                .iter()
                .filter(|e| e.seq > 200 && !expected_skipped.contains(&e.seq)),
        )
        .collect();
    assert_eq!(store.event_count().await.unwrap(), stored.len() as u64);
    let all = store
        .query(query(EventFilter::default(), Order::Asc, 1_000))
        .await
        .unwrap();
    let mut found = seqs(&all);
    found.sort_unstable();
    assert_eq!(found, stored.iter().map(|e| e.seq).collect::<Vec<_>>());
    for event in &stored {
        assert_eq!(store.get(&event.id).await.unwrap().as_ref(), Some(*event));
    }
    store.assert_one_index_entry_per_event().await;

    for bucket_ms in [MINUTE_MS, HOUR_MS] {
        let mut expected = BTreeMap::new();
        for event in &stored {
            let key = (
                floor_to(event.timestamp_ms, bucket_ms),
                &event.kind,
                &event.service,
            );
            *expected.entry(key).or_insert(0) += 1;
        }
        let query = RollupQuery {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            bucket_ms,
            kind: None,
            service: None,
        };
        let mut rows: Vec<_> = store
            .rollups(query)
            .await
            .unwrap()
            .into_iter()
            .map(|row| ((row.bucket_ms, row.kind, row.service), row.count))
            .collect();
        rows.sort();
        let expected: Vec<_> = expected
            .into_iter()
            .map(|((bucket, kind, service), count)| {
                ((bucket, kind.clone(), service.clone()), count)
            })
            .collect();
        assert!(expected.len() > 2 * 64, "{} rollup rows", expected.len());
        assert_eq!(rows, expected, "rollups per {bucket_ms} ms");
    }
}

/// Ids in a UUID's canonical form (which SQLite holds as 16 bytes) and in other spellings of
/// the same UUID (held as text) are different ids, each read back exactly as sent and stored
/// once.
async fn holds_uuid_ids_as_sent(store: TestStore) {
    let canonical = "0190f1a2-7b3c-7d4e-8f50-123456789abc";
    let spellings = [
        canonical.to_owned(),
        canonical.to_uppercase(),
        canonical.replace('-', ""),
        format!("{{{canonical}}}"),
        uuid::Uuid::now_v7().to_string(),
    ];
    let events: Vec<_> = (1..)
        .zip(&spellings)
        .map(|(seq, id)| client_event(seq, id, "t", seq as i64))
        .collect();
    append_none_skipped(&store, &events, 5).await;
    for event in &events {
        assert_eq!(store.get(&event.id).await.unwrap().as_ref(), Some(event));
    }
    let mut retries = events.clone();
    for (event, seq) in retries.iter_mut().zip(6..) {
        event.seq = seq;
    }
    let outcome = store.append_batch(Arc::new(retries), 10).await.unwrap();
    assert_eq!(outcome.skipped, [6, 7, 8, 9, 10], "each id is stored once");
    let recent = store.recent_client_ids(0, 10).await.unwrap();
    let mut ids: Vec<_> = recent.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    let mut sent = spellings.to_vec();
    sent.sort();
    assert_eq!(ids, sent);
    let all = store
        .query(query(EventFilter::default(), Order::Asc, 10))
        .await
        .unwrap();
    assert_eq!(all, events);
}

async fn lists_recent_client_ids(store: TestStore) {
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
async fn keeps_rollups_and_counts(store: TestStore) {
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
async fn reads_events_after_a_seq(store: TestStore) {
    load_ten(&store).await;
    let after = |filter: EventFilter, after_seq, limit| {
        let store = store.clone();
        let query = ReplayQuery {
            filter,
            after_seq,
            limit,
        };
        async move { seqs(&store.events_after_seq(query).await.unwrap()) }
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

/// Many batches for a few users, with timestamp ties; every user query (both orders,
/// keyset pages, other filters, counts) must match what the events say.
async fn user_queries_match_across_batches(store: TestStore) {
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
            assert_queries_match(&store, &all, filter, order).await;
        }
    }
    if let Some((main, recent)) = store.user_index_levels() {
        assert_eq!(main + recent, 1000, "one entry per event with a user");
        assert!(main > 0, "the sweep moved entries into the main level");
    }
}

/// Many batches over three days for a few services (and events without one), with
/// timestamp ties; every service query (both orders, keyset pages, other filters, counts)
/// must match what the events say.
async fn service_queries_match_across_batches(store: TestStore) {
    let mut all = Vec::new();
    let mut seq = 0;
    for batch in 0..12 {
        let mut events = Vec::new();
        for i in 0..50u64 {
            seq += 1;
            let ts = ((seq * 7919) % 3) as i64 * DAY_MS + ((seq * 31) % 400) as i64;
            let mut e = event(
                seq,
                &format!("e-{seq}"),
                if i % 3 == 0 { "a" } else { "b" },
                ts,
            );
            e.service = match (seq + batch) % 5 {
                4 => None,
                n => Some(format!("svc-{n}")),
            };
            events.push(e);
        }
        all.extend(events.clone());
        store.append_batch(Arc::new(events), seq).await.unwrap();
    }
    // Replaying a stored id adds nothing, to the events or to the service index.
    let replayed = all[7].clone();
    store
        .append_batch(Arc::new(vec![replayed]), seq)
        .await
        .unwrap();

    for service in 0..4 {
        let service = format!("svc-{service}");
        for (order, kind, from, to) in [
            (Order::Desc, None, None, None),
            (Order::Asc, None, Some(100), Some(2 * DAY_MS + 200)),
            (Order::Desc, Some("a"), None, None),
        ] {
            let filter = EventFilter {
                service: Some(service.clone()),
                kind: kind.map(str::to_owned),
                from_ms: from,
                to_ms: to,
                ..Default::default()
            };
            assert_queries_match(&store, &all, filter, order).await;
        }
    }
}

/// What `all` says `filter` matches in `order`, `store` answers: the whole list, the count,
/// a keyset walk in pages of 7, and a page at an offset.
async fn assert_queries_match(
    store: &TestStore,
    all: &[StoredEvent],
    filter: EventFilter,
    order: Order,
) {
    let matches = |e: &StoredEvent| {
        let equal =
            |wanted: &Option<String>, value: &Option<String>| wanted.is_none() || wanted == value;
        equal(&filter.user_id, &e.user_id)
            && equal(&filter.service, &e.service)
            && filter.kind.as_ref().is_none_or(|kind| &e.kind == kind)
            && filter.from_ms.is_none_or(|from| e.timestamp_ms >= from)
            && filter.to_ms.is_none_or(|to| e.timestamp_ms < to)
    };
    let mut expected: Vec<&StoredEvent> = all.iter().filter(|e| matches(e)).collect();
    expected.sort_by_key(|e| (e.timestamp_ms, e.seq));
    if order == Order::Desc {
        expected.reverse();
    }
    let expected: Vec<u64> = expected.iter().map(|e| e.seq).collect();
    assert!(expected.len() >= 8, "{filter:?}");

    let everything = store
        .query(query(filter.clone(), order, 1000))
        .await
        .unwrap();
    assert_eq!(seqs(&everything), expected, "{filter:?} {order:?}");
    assert_eq!(
        store.count(filter.clone()).await.unwrap(),
        expected.len() as u64,
        "count of {filter:?}"
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
    assert_eq!(walked, expected, "keyset walk for {filter:?} {order:?}");

    let mut offset_page = query(filter.clone(), order, 5);
    offset_page.offset = 3;
    let page = store.query(offset_page).await.unwrap();
    assert_eq!(seqs(&page), expected[3..8], "offset page for {filter:?}");
}

/// Opening the store again (as a restarted process does) finds the events and the position;
/// the migrations do not run twice.
async fn keeps_events_and_position_across_reopen(store: TestStore) {
    load_ten(&store).await;
    let store = store.reopen().await;
    assert_eq!(store.indexed_seq().await.unwrap(), 10);
    assert_eq!(store.count(EventFilter::default()).await.unwrap(), 10);
    assert_eq!(store.event_count().await.unwrap(), 10);
    // What the indexer asks before deleting log segments (SQLite reopened with fsync: its
    // files flushed), with its WAL in use and after more writes.
    store.make_durable().await.unwrap();
    store
        .append_batch(Arc::new(vec![event(11, "client-11", "odd", 1_100)]), 11)
        .await
        .unwrap();
    store.make_durable().await.unwrap();
    assert_eq!(store.event_count().await.unwrap(), 11);
}

/// The SQLite store's file in `data`.
fn sqlite_path(data: &Data) -> std::path::PathBuf {
    match data {
        Data::Sqlite(dir) => dir.path().join("events.db"),
        Data::Postgres(_) => unreachable!("a SQLite store"),
    }
}

/// The user index's file of the store in `dir`.
fn user_index_file(dir: &tempfile::TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(SqliteStore::user_index_path(&dir.path().join("events.db"))).unwrap()
}

/// The names of the tables of the user index's file of the store in `dir` that match the
/// `LIKE` pattern `like`.
fn user_file_tables(dir: &tempfile::TempDir, like: &str) -> Vec<String> {
    user_index_file(dir)
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE ?")
        .unwrap()
        .query_map([like], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Entries in the service index of the store in `dir`, all partitions together.
fn service_index_entries(dir: &tempfile::TempDir) -> i64 {
    let db = user_index_file(dir);
    user_file_tables(dir, "service_index_%")
        .iter()
        .map(|table| {
            db.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap()
        })
        .sum()
}

/// Rows in each level of the user index of the store in `dir`.
fn user_index_levels(dir: &tempfile::TempDir) -> (i64, i64) {
    let db = user_index_file(dir);
    let count = |table: &str| {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    };
    let main_tables: Vec<String> = user_file_tables(dir, "user_index_%")
        .into_iter()
        .filter(|table| table != "user_index_recent")
        .collect();
    assert!(
        !main_tables.is_empty(),
        "the main level has a table per partition"
    );
    let main = main_tables.iter().map(|table| count(table)).sum();
    (main, count("user_index_recent"))
}

#[tokio::test]
async fn sqlite_with_both_user_index_levels_in_use() {
    let store = TestStore::sqlite_half_swept();
    user_queries_match_across_batches(store.clone()).await;
    let (main, recent) = store.user_index_levels().unwrap();
    assert!(
        main > 100 && recent > 100,
        "both levels in use: {main} + {recent}"
    );
    orders_filters_and_pages(TestStore::sqlite_half_swept()).await;
    appends_are_idempotent_on_id(TestStore::sqlite_half_swept()).await;
}

/// Rollup rows for `events`, summed into `bucket_ms` buckets, in the order the checks sort by.
fn expected_rollups(events: &[StoredEvent], bucket_ms: i64) -> Vec<RollupRow> {
    let mut counts: BTreeMap<(i64, String, Option<String>), u64> = BTreeMap::new();
    for e in events {
        let key = (
            floor_to(e.timestamp_ms, bucket_ms),
            e.kind.clone(),
            e.service.clone(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((bucket_ms, kind, service), count)| RollupRow {
            bucket_ms,
            kind,
            service,
            count,
        })
        .collect()
}

/// `store.rollups(...)` sorted like [`expected_rollups`].
async fn sorted_rollups(
    store: &Arc<dyn Store>,
    from_ms: i64,
    to_ms: i64,
    bucket_ms: i64,
) -> Vec<RollupRow> {
    let query = RollupQuery {
        from_ms,
        to_ms,
        bucket_ms,
        kind: None,
        service: None,
    };
    let mut rows = store.rollups(query).await.unwrap();
    rows.sort_by(|a, b| {
        (a.bucket_ms, &a.kind, &a.service).cmp(&(b.bucket_ms, &b.kind, &b.service))
    });
    rows
}

/// Every read agrees that exactly `kept` are stored: queries, counts, gets, the time range,
/// the seq walk, per-second counts, client ids and the stored count.
async fn assert_holds_exactly(store: &Arc<dyn Store>, kept: &[StoredEvent], gone: &[StoredEvent]) {
    let all = store
        .query(query(EventFilter::default(), Order::Asc, 1000))
        .await
        .unwrap();
    assert_eq!(all, kept, "the events left, in order");
    assert_eq!(
        store.count(EventFilter::default()).await.unwrap(),
        kept.len() as u64
    );
    assert_eq!(store.event_count().await.unwrap(), kept.len() as u64);
    let odd = EventFilter {
        kind: Some("odd".into()),
        ..Default::default()
    };
    let kept_odd = kept.iter().filter(|e| e.kind == "odd").count() as u64;
    assert_eq!(store.count(odd).await.unwrap(), kept_odd);
    let user = EventFilter {
        user_id: Some("user-1".into()),
        ..Default::default()
    };
    let kept_user: Vec<_> = kept
        .iter()
        .filter(|e| e.user_id.as_deref() == Some("user-1"))
        .cloned()
        .collect();
    let found = store
        .query(query(user.clone(), Order::Asc, 1000))
        .await
        .unwrap();
    assert_eq!(found, kept_user, "by user");
    assert_eq!(store.count(user).await.unwrap(), kept_user.len() as u64);
    let walked = store
        .events_after_seq(ReplayQuery {
            filter: EventFilter::default(),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap();
    let mut by_seq = kept.to_vec();
    by_seq.sort_by_key(|e| e.seq);
    assert_eq!(walked, by_seq, "in seq order too");
    for e in gone {
        assert_eq!(store.get(&e.id).await.unwrap(), None, "{} purged", e.id);
    }
    for e in kept {
        assert_eq!(store.get(&e.id).await.unwrap().as_ref(), Some(e));
    }
    let range = kept
        .first()
        .zip(kept.last())
        .map(|(first, last)| (first.timestamp_ms, last.timestamp_ms));
    assert_eq!(store.time_range().await.unwrap(), range);
    let mut seconds = store.counts_per_second(i64::MIN).await.unwrap();
    seconds.sort_by(|a, b| {
        (a.bucket_ms, &a.kind, &a.service).cmp(&(b.bucket_ms, &b.kind, &b.service))
    });
    assert_eq!(seconds, expected_rollups(kept, SECOND_MS));
    let mut client_ids: Vec<_> = kept
        .iter()
        .filter(|e| e.id_from_client)
        .map(|e| (e.id.clone(), e.received_at_ms))
        .collect();
    client_ids.sort_by_key(|(_, received_at)| std::cmp::Reverse(*received_at));
    assert_eq!(store.recent_client_ids(0, 1000).await.unwrap(), client_ids);
}

/// Retention: events over three whole days, the day the cutoff falls in and a later day. A
/// purge deletes exactly the events before the cutoff, and every read agrees; the rollups of
/// buckets that ended by the cutoff go, later ones are untouched; a purged id is new again.
/// Three whole days are dropped as partitions, then the cutoff's day is trimmed, then the day
/// a late event recreated is dropped again.
async fn purges_before_a_cutoff(store: TestStore) {
    let day = 1_700_006_400_000; // 2023-11-15T00:00:00Z
    let empty = store.purge_before(day).await.unwrap();
    assert_eq!((empty.events, empty.partitions), (0, 0), "an empty store");
    let mut all = Vec::new();
    let mut seq = 0;
    for d in 0..5 {
        let mut batch = Vec::new();
        for hour in [0, 5, 6, 12, 23] {
            seq += 1;
            let id = if seq % 2 == 0 {
                format!("client-{seq}")
            } else {
                format!("e-{seq}")
            };
            let kind = if seq % 2 == 0 { "even" } else { "odd" };
            let ts = day + d * DAY_MS + hour * HOUR_MS + 30 * SECOND_MS;
            batch.push(event(seq, &id, kind, ts));
        }
        all.extend(batch.clone());
        store.append_batch(Arc::new(batch), seq).await.unwrap();
    }

    // An hour-aligned cutoff on the fourth day, 06:00: days 1-3 and 00:30 and 05:30 go.
    let cutoff = day + 3 * DAY_MS + 6 * HOUR_MS;
    let first = store.purge_before(cutoff).await.unwrap();
    assert_eq!(first.events, 17);
    let (gone, kept): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|e| e.timestamp_ms < cutoff);
    assert_holds_exactly(&store, &kept, &gone).await;
    assert_eq!(store.indexed_seq().await.unwrap(), 25, "the position stays");
    for bucket in [MINUTE_MS, HOUR_MS, DAY_MS] {
        assert_eq!(
            sorted_rollups(&store, day, day + 5 * DAY_MS, bucket).await,
            expected_rollups(&kept, bucket),
            "rollups in {bucket} ms buckets count what is left"
        );
    }
    assert_eq!(
        sorted_rollups(&store, i64::MIN, i64::MAX, MINUTE_MS).await,
        expected_rollups(&kept, MINUTE_MS)
    );
    let again = store.purge_before(cutoff).await.unwrap();
    assert_eq!(
        (again.events, again.partitions),
        (0, 0),
        "nothing more before the same cutoff"
    );

    // A cutoff inside a minute, 12:00:30.001: the 06:00:30 and 12:00:30 events go; the rows
    // of buckets ended by then go, those it falls in are not checked.
    let cutoff = day + 3 * DAY_MS + 12 * HOUR_MS + 30 * SECOND_MS + 1;
    let second = store.purge_before(cutoff).await.unwrap();
    assert_eq!(second.events, 2);
    let (gone, kept): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|e| e.timestamp_ms < cutoff);
    assert_holds_exactly(&store, &kept, &gone).await;
    let noon = day + 3 * DAY_MS + 12 * HOUR_MS;
    assert_eq!(sorted_rollups(&store, i64::MIN, noon, MINUTE_MS).await, []);
    assert_eq!(sorted_rollups(&store, day, noon, HOUR_MS).await, []);
    assert_eq!(
        sorted_rollups(&store, noon + HOUR_MS, i64::MAX, MINUTE_MS).await,
        expected_rollups(&kept, MINUTE_MS)
    );

    // Purged ids are new again: one comes back on a kept day, one on a purged day (the store
    // takes it; the next purge deletes it).
    let mut back = all[0].clone();
    back.seq = 26;
    back.timestamp_ms = day + 4 * DAY_MS + 13 * HOUR_MS;
    let mut old = all[1].clone();
    old.seq = 27;
    append_none_skipped(&store, &[back.clone(), old.clone()], 27).await;
    assert_eq!(store.event_count().await.unwrap(), kept.len() as u64 + 2);
    let third = store.purge_before(cutoff).await.unwrap();
    assert_eq!(third.events, 1);
    let mut kept = kept;
    kept.push(back);
    kept.sort_by_key(|e| (e.timestamp_ms, e.seq));
    assert_holds_exactly(&store, &kept, &[old]).await;
    let partitions: Vec<u64> = [first, second, third]
        .iter()
        .map(|p| p.partitions)
        .collect();
    assert_eq!(
        partitions,
        [3, 0, 1],
        "three whole days, then a trim, then the day recreated by a late event"
    );
    store.assert_one_index_entry_per_event().await;
}

/// When the events of [`keeps_old_events_in_months_and_years`] are received: 2026-12-06T10:00:00.000Z.
const RECEIVED_MS: i64 = 1_796_551_200_000;

fn ms(text: &str) -> i64 {
    parse_ts(text).unwrap_or_else(|| panic!("not a timestamp: {text}"))
}

fn range(text: &str, span: Span) -> TimeRange {
    TimeRange::containing(ms(text), span).unwrap()
}

/// Backfilled history: recent events get day partitions, older ones the coarsest free year
/// or month (a day where a month would overlap one), and events go to the partition that
/// covers them whatever their age. Every read walks the mixed partitions in `(ts, seq)` order;
/// a retried id is skipped; retention drops the partitions wholly past the cutoff and trims
/// the month it falls in by rows.
async fn keeps_old_events_in_months_and_years(store: TestStore) {
    let mut seq = 0;
    let mut next = |at: &str, received_ms: i64| {
        seq += 1;
        let mut e = event(
            seq,
            &format!("client-{seq}"),
            ["even", "odd"][seq as usize % 2],
            ms(at),
        );
        // Distinct receipt times keep the order of client ids by receipt time certain.
        e.received_at_ms = received_ms + seq as i64;
        e
    };
    // A day partition made when 2021-05-05 was recent, as live traffic makes them.
    let live = next("2021-05-05T08:00:00.000Z", ms("2021-05-05T08:00:01.000Z"));
    // The backfill, received on 2026-12-06, in no particular order.
    let backfill: Vec<StoredEvent> = [
        "2026-11-20T10:00:00.000Z",
        "2019-11-30T23:59:59.999Z",
        "2021-06-20T12:00:00.000Z",
        "2021-06-20T12:00:00.000Z",
        "1969-12-31T23:00:00.000Z",
        "2021-05-20T00:00:00.000Z",
        "2026-03-15T09:30:00.000Z",
        "2021-01-10T00:00:00.000Z",
        "2019-02-03T04:05:06.007Z",
        "2026-12-06T09:00:00.000Z",
        "2021-06-01T00:00:00.000Z",
        "2026-10-31T23:59:59.999Z",
    ]
    .iter()
    .map(|at| next(at, RECEIVED_MS))
    .collect();
    store
        .append_batch(Arc::new(vec![live.clone()]), 1)
        .await
        .unwrap();
    let last = backfill.last().unwrap().seq;
    store
        .append_batch(Arc::new(backfill.clone()), last)
        .await
        .unwrap();

    let expected = vec![
        range("1969-12-31T23:00:00.000Z", Span::Year),
        range("2019-06-01T00:00:00.000Z", Span::Year),
        range("2021-01-10T00:00:00.000Z", Span::Month),
        range("2021-05-05T00:00:00.000Z", Span::Day),
        range("2021-05-20T00:00:00.000Z", Span::Day),
        range("2021-06-01T00:00:00.000Z", Span::Month),
        range("2026-03-01T00:00:00.000Z", Span::Month),
        range("2026-10-01T00:00:00.000Z", Span::Month),
        range("2026-11-20T00:00:00.000Z", Span::Day),
        range("2026-12-06T00:00:00.000Z", Span::Day),
    ];
    assert_eq!(store.partitions().await.unwrap(), expected);

    let mut all: Vec<StoredEvent> = std::iter::once(live).chain(backfill).collect();
    all.sort_by_key(|e| (e.timestamp_ms, e.seq));
    // A retry of a backfilled event (same id, same timestamp) lands in its year and is skipped.
    let mut retry = all[1].clone();
    retry.seq = 100;
    let outcome = store
        .append_batch(Arc::new(vec![retry]), 100)
        .await
        .unwrap();
    assert_eq!(outcome.skipped, [100]);
    assert_holds_exactly(&store, &all, &[]).await;

    // Pages of two in both orders, each continuing from the last one's position.
    for order in [Order::Asc, Order::Desc] {
        let mut expected = all.clone();
        if order == Order::Desc {
            expected.reverse();
        }
        let mut walked = Vec::new();
        let mut page = query(EventFilter::default(), order, 2);
        loop {
            let found = store.query(page.clone()).await.unwrap();
            let Some(last) = found.last() else { break };
            page.after = Some(Position {
                timestamp_ms: last.timestamp_ms,
                seq: last.seq,
            });
            walked.extend(found);
        }
        assert_eq!(walked, expected, "{order:?}");
        let mut offset = query(EventFilter::default(), order, 4);
        offset.offset = 5;
        let found = store.query(offset).await.unwrap();
        assert_eq!(found, expected[5..9], "offset {order:?}");
    }
    // A time range cutting through a year, a month and a day.
    let window = EventFilter {
        from_ms: Some(ms("2019-06-01T00:00:00.000Z")),
        to_ms: Some(ms("2021-05-20T00:00:00.001Z")),
        ..Default::default()
    };
    let inside: Vec<_> = all
        .iter()
        .filter(|e| window.from_ms <= Some(e.timestamp_ms) && Some(e.timestamp_ms) < window.to_ms)
        .cloned()
        .collect();
    assert_eq!(inside.len(), 4);
    let found = store
        .query(query(window.clone(), Order::Asc, 100))
        .await
        .unwrap();
    assert_eq!(found, inside);
    assert_eq!(store.count(window).await.unwrap(), 4);

    // The cutoff falls in June 2021: the five partitions before it go whole, the month is
    // trimmed by rows.
    let cutoff = ms("2021-06-10T00:00:00.000Z");
    let purged = store.purge_before(cutoff).await.unwrap();
    let (gone, kept): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|e| e.timestamp_ms < cutoff);
    assert_eq!((purged.events, purged.partitions), (gone.len() as u64, 5));
    assert_holds_exactly(&store, &kept, &gone).await;
    assert_eq!(store.partitions().await.unwrap(), expected[5..]);
    // A late event in the trimmed month still goes to it.
    let late = next("2021-06-25T00:00:00.000Z", RECEIVED_MS);
    store
        .append_batch(Arc::new(vec![late.clone()]), late.seq)
        .await
        .unwrap();
    assert_eq!(store.partitions().await.unwrap(), expected[5..]);
    let mut kept = kept;
    kept.push(late);
    kept.sort_by_key(|e| (e.timestamp_ms, e.seq));
    assert_holds_exactly(&store, &kept, &gone).await;
    store.assert_one_index_entry_per_event().await;
}

/// A cutoff that jumps into a coarse partition: 3,000 events over 2015 (one year partition),
/// 2,400 of them before the cutoff, so the trim takes several steps of 2,000 rows. Every read
/// agrees afterwards, by user too.
async fn trims_a_coarse_partition_in_several_steps(store: TestStore) {
    let start = ms("2015-01-01T00:00:00.000Z");
    let step = 365 * DAY_MS / 3_000;
    let all: Vec<StoredEvent> = (1..=3_000u64)
        .map(|seq| {
            let id = format!("client-{seq}");
            let mut e = event(
                seq,
                &id,
                ["even", "odd"][seq as usize % 2],
                start + (seq as i64 - 1) * step,
            );
            e.received_at_ms = RECEIVED_MS + seq as i64;
            e
        })
        .collect();
    for batch in all.chunks(1_000) {
        let last = batch.last().unwrap().seq;
        store
            .append_batch(Arc::new(batch.to_vec()), last)
            .await
            .unwrap();
    }
    assert_eq!(
        store.partitions().await.unwrap(),
        [range("2015-06-01T00:00:00.000Z", Span::Year)]
    );
    let cutoff = start + 2_400 * step;
    let purged = store.purge_before(cutoff).await.unwrap();
    assert_eq!((purged.events, purged.partitions), (2_400, 0));
    let (gone, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.timestamp_ms < cutoff);
    assert_holds_exactly(&store, &kept, &gone).await;
    store.assert_one_index_entry_per_event().await;
}

/// With user-index entries in both levels, which queries of coarse partitions merge, and
/// trims delete from.
#[tokio::test]
async fn sqlite_with_both_user_index_levels_keeps_old_events_and_trims() {
    keeps_old_events_in_months_and_years(TestStore::sqlite_half_swept()).await;
    trims_a_coarse_partition_in_several_steps(TestStore::sqlite_half_swept()).await;
}

/// The sweep moves entries into the main level of a year, too.
#[tokio::test]
async fn sqlite_sweeps_into_the_user_index_of_a_year() {
    let store = TestStore::sqlite_half_swept();
    let history: Vec<StoredEvent> = (1..=40)
        .map(|seq| {
            let mut e = event(
                seq,
                &format!("e-{seq}"),
                "t",
                ms("2019-03-01T00:00:00.000Z"),
            );
            e.timestamp_ms += seq as i64 * DAY_MS;
            e.received_at_ms = RECEIVED_MS;
            e
        })
        .collect();
    store.append_batch(Arc::new(history), 40).await.unwrap();
    let Data::Sqlite(dir) = &*store.data else {
        unreachable!("a SQLite store")
    };
    let db = user_index_file(dir);
    let year: i64 = db
        .query_row("SELECT count(*) FROM user_index_y2019", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(
        year, 20,
        "half of the batch's entries swept into the year's table"
    );
    assert_eq!(store.user_index_levels(), Some((20, 20)));
}

/// The first day of [`two_days_of_users`] (2026-12-05), in days since 1970.
const FIRST_OF_TWO_DAYS: i64 = 20_792;

/// Four batches of 25 events over two days, each event with a user.
fn two_days_of_users() -> Vec<Vec<StoredEvent>> {
    let day = FIRST_OF_TWO_DAYS * DAY_MS + 10 * HOUR_MS;
    (0..4u64)
        .map(|batch| {
            (1..=25)
                .map(|i| {
                    let seq = batch * 25 + i;
                    let ts = day + (seq as i64 % 2) * DAY_MS + seq as i64;
                    event(seq, &format!("e-{seq}"), "t", ts)
                })
                .collect()
        })
        .collect()
}

/// A SQLite store's two files.
struct Files {
    events: std::path::PathBuf,
    users: std::path::PathBuf,
}

/// A half-swept SQLite store holding [`two_days_of_users`]: it, their events in order, and
/// its files.
async fn sqlite_with_two_days_of_users() -> (TestStore, Vec<StoredEvent>, Files) {
    let store = TestStore::sqlite_half_swept();
    let all = append_all(&store, &two_days_of_users()).await;
    let events = sqlite_path(&store.data);
    let users = SqliteStore::user_index_path(&events);
    (store, all, Files { events, users })
}

/// Appends `batches` to `store`, each as far as its last seq; returns their events.
async fn append_all(store: &Arc<dyn Store>, batches: &[Vec<StoredEvent>]) -> Vec<StoredEvent> {
    for batch in batches {
        let last = batch.last().unwrap().seq;
        store
            .append_batch(Arc::new(batch.clone()), last)
            .await
            .unwrap();
    }
    let mut all: Vec<StoredEvent> = batches.concat();
    all.sort_by_key(|e| (e.timestamp_ms, e.seq));
    all
}

/// Each of the test users' events, in order, and one user-index entry per event.
async fn assert_users_hold(store: &TestStore, all: &[StoredEvent]) {
    for user in 0..3 {
        let user_id = format!("user-{user}");
        let filter = EventFilter {
            user_id: Some(user_id.clone()),
            ..Default::default()
        };
        let expected: Vec<_> = all
            .iter()
            .filter(|e| e.user_id.as_deref() == Some(user_id.as_str()))
            .cloned()
            .collect();
        let found = store.query(query(filter, Order::Asc, 1000)).await.unwrap();
        assert_eq!(found, expected, "{user_id}");
    }
    let (main, recent) = store.user_index_levels().unwrap();
    assert_eq!(main + recent, all.len() as i64, "{main} + {recent} entries");
}

/// `CREATE TABLE` of a user-index table called `name`, as the store makes them.
fn user_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            user_id TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
            PRIMARY KEY (user_id, ts, seq)
        ) WITHOUT ROWID"
    )
}

/// Runs `sql` on the file at `path` while no store has it open.
fn alter(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// The user index's file found without its position (lost, or new beside a store from
/// before it existed) is built again from the events when the store opens.
#[tokio::test]
async fn sqlite_user_index_is_built_again_from_the_events() {
    let (store, all, files) = sqlite_with_two_days_of_users().await;
    let drop_position = || alter(&files.users, "DROP TABLE users_progress");
    let store = store.reopen_altered(drop_position).await;
    assert_eq!(store.indexed_seq().await.unwrap(), 100);
    assert_users_hold(&store, &all).await;
    let (_, recent) = store.user_index_levels().unwrap();
    assert_eq!(recent, 0, "built straight into the main level");
}

/// A main-level table whose partition is gone (retention dropped the partition, and the
/// process stopped before the user index's step) is dropped when the store opens.
#[tokio::test]
async fn sqlite_user_index_drops_the_tables_of_partitions_gone() {
    let (store, all, files) = sqlite_with_two_days_of_users().await;
    let table = user_table("user_index_d3");
    let entry = "INSERT INTO user_index_d3 VALUES ('user-1', 259200000, 7)";
    let services = "CREATE TABLE service_index_d3 (service TEXT, ts INTEGER, seq INTEGER)";
    let store = store
        .reopen_altered(|| alter(&files.users, &format!("{table}; {entry}; {services};")))
        .await;
    let stale: i64 = rusqlite::Connection::open(&files.users)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%index_d3'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(stale, 0, "the tables of a partition gone are dropped");
    assert_users_hold(&store, &all).await;
}

/// A store from before the user index had a file of its own (schema version 8, its tables
/// in `events.db`) has them dropped there and built again in their own file.
#[tokio::test]
async fn sqlite_store_with_the_user_index_inside_is_migrated() {
    let (store, all, files) = sqlite_with_two_days_of_users().await;
    let store = store
        .reopen_altered(|| {
            // Version 8's tables, holding an entry of an event that is not stored: gone
            // with them.
            alter(
                &files.events,
                &format!(
                    "{}; {};
                     INSERT INTO user_index_d{FIRST_OF_TWO_DAYS} VALUES ('user-1', 5, 999);
                     PRAGMA user_version = 8;",
                    user_table("user_index_recent"),
                    user_table(&format!("user_index_d{FIRST_OF_TWO_DAYS}")),
                ),
            );
            std::fs::remove_file(&files.users).unwrap();
            for suffix in ["-wal", "-shm"] {
                let mut file = files.users.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        })
        .await;
    let db = rusqlite::Connection::open(&files.events).unwrap();
    let (version, user_tables): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), count(*)
             FROM sqlite_schema WHERE name LIKE 'user_index%'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, user_tables), (10, 0));
    assert_users_hold(&store, &all).await;
}

/// A store from before the service index moved to the user index's file (schema version 9:
/// a `(service, ts)` index on each partition's events, no table for it in that file) has
/// the index dropped and built again in that file.
#[tokio::test]
async fn sqlite_store_with_the_service_index_inside_is_migrated() {
    let (store, all, files) = sqlite_with_two_days_of_users().await;
    let days = [FIRST_OF_TWO_DAYS, FIRST_OF_TWO_DAYS + 1];
    let store = store
        .reopen_altered(|| {
            let version_9: String = days
                .iter()
                .map(|day| {
                    format!("CREATE INDEX events_d{day}_service_ts ON events_d{day} (service, ts);")
                })
                .collect();
            alter(
                &files.events,
                &format!("{version_9} PRAGMA user_version = 9;"),
            );
            let dropped: String = days
                .iter()
                .map(|day| format!("DROP TABLE service_index_d{day};"))
                .collect();
            alter(&files.users, &dropped);
        })
        .await;
    let db = rusqlite::Connection::open(&files.events).unwrap();
    let (version, indexes): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), count(*)
             FROM sqlite_schema WHERE type = 'index' AND name LIKE '%service_ts'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, indexes), (10, 0));
    for service in ["svc-0", "svc-1"] {
        let filter = EventFilter {
            service: Some(service.into()),
            ..Default::default()
        };
        assert_queries_match(&store, &all, filter, Order::Asc).await;
    }
    store.assert_one_index_entry_per_event().await;
}

/// The user index committed a batch whose events then failed (the events' writer commits
/// last): the batch stored again is stored whole, and none of its entries twice, whether
/// they were swept into the main level meanwhile or not.
#[tokio::test]
async fn sqlite_user_index_ahead_of_the_events_takes_the_batch_again() {
    let (store, _, files) = sqlite_with_two_days_of_users().await;
    // Back to where the events' database was after the first two batches.
    let store = store
        .reopen_altered(|| {
            alter(
                &files.events,
                &format!(
                    "DELETE FROM events_d{FIRST_OF_TWO_DAYS} WHERE seq > 50;
                     DELETE FROM events_d{next} WHERE seq > 50;
                     UPDATE partitions SET events = 25;
                     UPDATE progress SET value = 50 WHERE name IN ('indexed_seq', 'event_count');",
                    next = FIRST_OF_TWO_DAYS + 1
                ),
            )
        })
        .await;
    assert_eq!(
        store.indexed_seq().await.unwrap(),
        50,
        "the smaller position"
    );
    let all = append_all(&store, &two_days_of_users()).await;
    assert_holds_exactly(&store, &all, &[]).await;
    assert_users_hold(&store, &all).await;
}

/// Committed events reach the database file within about a second, copied there by the
/// checkpointer thread (the writer's own automatic checkpoint waits for a WAL of 400 MiB).
#[tokio::test]
async fn sqlite_checkpoints_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path, false).unwrap();
    let day = ms("2026-12-05T10:00:00.000Z");
    let events: Vec<StoredEvent> = (1..=2_000)
        .map(|seq| event(seq, &format!("e-{seq}"), "t", day + seq as i64))
        .collect();
    store.append_batch(Arc::new(events), 2_000).await.unwrap();
    // Read from the database file alone, ignoring the WAL (and assuming the file does not
    // change: hence a new connection each time).
    let sql = format!("SELECT count(*) FROM events_d{}", day / DAY_MS);
    let in_file = || -> i64 {
        rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", path.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap()
        .query_row(&sql, [], |row| row.get(0))
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_file() < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "not in the database file after 10 s: {}",
            in_file()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(store);
}

/// A store made before partitions could be months or years (schema version 3, partitions
/// listed by day alone) is migrated: its days keep their tables and events, and history
/// added afterwards goes into coarse partitions.
#[tokio::test]
async fn sqlite_store_with_day_partitions_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let day = event(1, "client-1", "odd", ms("2026-12-05T10:00:00.000Z"));
    let other_day = event(2, "client-2", "even", ms("2026-11-30T10:00:00.000Z"));
    {
        let store = SqliteStore::open(&path, false).unwrap();
        store
            .append_batch(Arc::new(vec![day.clone(), other_day.clone()]), 2)
            .await
            .unwrap();
    }
    // Back to version 3: the same day tables, listed as `partitions (day, events)`, and
    // none of the tables of the later migrations (secrets, keys, alerting).
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE v3 (day INTEGER PRIMARY KEY, events INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO v3 SELECT first_day, events FROM partitions WHERE span = 'day';
             DROP TABLE partitions;
             ALTER TABLE v3 RENAME TO partitions;
             DROP TABLE secrets;
             DROP TABLE api_keys;
             DELETE FROM progress WHERE name = 'keys_version';
             DROP TABLE alert_records;
             DROP TABLE alert_history;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, false).unwrap());
    let days = vec![
        range("2026-11-30T10:00:00.000Z", Span::Day),
        range("2026-12-05T10:00:00.000Z", Span::Day),
    ];
    assert_eq!(store.partitions().await.unwrap(), days);
    let mut old = event(3, "client-3", "odd", ms("2020-02-02T10:00:00.000Z"));
    old.received_at_ms = RECEIVED_MS;
    store
        .append_batch(Arc::new(vec![old.clone()]), 3)
        .await
        .unwrap();
    let mut layout = days;
    layout.insert(0, range("2020-02-02T10:00:00.000Z", Span::Year));
    assert_eq!(store.partitions().await.unwrap(), layout);
    assert_holds_exactly(&store, &[old, other_day, day], &[]).await;
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 10, "every later migration applied");
}

/// The SQL type of the id of the event `seq` in `table`.
fn stored_id_type(path: &std::path::Path, table: &str, seq: u64) -> String {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            &format!("SELECT typeof(id) FROM {table} WHERE seq = ?"),
            [seq as i64],
            |row| row.get(0),
        )
        .unwrap()
}

/// A store made before ids in a UUID's canonical form were held as 16 bytes (schema version
/// 7) keeps them as text in its partitions, so a retry of one is still refused there; a
/// partition made afterwards holds them as bytes; every id reads back as sent.
#[tokio::test]
async fn sqlite_store_with_text_ids_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let uuid = "0190f1a2-7b3c-7d4e-8f50-123456789abc";
    let day = ms("2026-12-05T10:00:00.000Z");
    let table = format!("events_d{}", day / DAY_MS);
    let before = client_event(1, uuid, "t", day);
    {
        let store = SqliteStore::open(&path, false).unwrap();
        store
            .append_batch(Arc::new(vec![before.clone()]), 1)
            .await
            .unwrap();
    }
    assert_eq!(stored_id_type(&path, &table, 1), "blob");
    // Back to version 7: the id as text, as that version wrote it, and partitions listed
    // without `packed_ids`.
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(&format!("UPDATE {table} SET id = ? WHERE seq = 1"), [uuid])
            .unwrap();
        db.execute_batch(
            "CREATE TABLE v7 (
                first_day INTEGER PRIMARY KEY,
                span TEXT NOT NULL CHECK (span IN ('day', 'month', 'year')),
                events INTEGER NOT NULL
             ) WITHOUT ROWID;
             INSERT INTO v7 SELECT first_day, span, events FROM partitions;
             DROP TABLE partitions;
             ALTER TABLE v7 RENAME TO partitions;
             PRAGMA user_version = 7;",
        )
        .unwrap();
    }
    assert_eq!(stored_id_type(&path, &table, 1), "text");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, false).unwrap());
    let mut retry = before.clone();
    retry.seq = 2;
    let outcome = store.append_batch(Arc::new(vec![retry]), 2).await.unwrap();
    assert_eq!(
        outcome.skipped,
        [2],
        "the retry is refused in the old partition"
    );
    assert_eq!(store.get(uuid).await.unwrap(), Some(before.clone()));
    let other = "0190f1a2-7b3c-7d4e-8f50-cba987654321";
    let later = client_event(3, other, "t", day + DAY_MS);
    store
        .append_batch(Arc::new(vec![later.clone()]), 3)
        .await
        .unwrap();
    assert_eq!(
        stored_id_type(&path, &format!("events_d{}", day / DAY_MS + 1), 3),
        "blob"
    );
    assert_eq!(store.get(other).await.unwrap(), Some(later.clone()));
    assert_holds_exactly(&store, &[before, later], &[]).await;
    drop(store);
    // Reopened, the old partition still takes text: the retry is refused again.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, false).unwrap());
    let retry = client_event(4, uuid, "t", day);
    let outcome = store.append_batch(Arc::new(vec![retry]), 4).await.unwrap();
    assert_eq!(outcome.skipped, [4]);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: several processes on one database, each test in a schema of its own.
// ---------------------------------------------------------------------------------------------

/// Another store on `schema`, as another process of the cluster has.
async fn pg_connect(schema: &TestSchema) -> PostgresStore {
    PostgresStore::connect(&schema.url, Some(&schema.name))
        .await
        .unwrap()
}

/// Processes starting at once take turns migrating: all succeed, each migration runs once.
#[tokio::test]
async fn pg_concurrent_connects_migrate_once() {
    let Some(schema) = TestSchema::new("migrate_race").await else {
        return;
    };
    let connects = (0..4).map(|_| pg_connect(&schema));
    let stores: Vec<Arc<dyn Store>> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .map(|store| Arc::new(store) as Arc<dyn Store>)
        .collect();
    load_ten(&stores[0]).await;
    assert_eq!(stores[3].event_count().await.unwrap(), 10);
}

/// Two writers (two worker processes) storing overlapping batches at once, some new days in
/// each: every id is stored exactly once, and the counts and rollups agree.
#[tokio::test]
async fn pg_concurrent_writers_store_each_id_once() {
    let Some(schema) = TestSchema::new("two_writers").await else {
        return;
    };
    let writers: Vec<Arc<dyn Store>> = vec![
        Arc::new(pg_connect(&schema).await),
        Arc::new(pg_connect(&schema).await),
    ];
    let day = 1_700_006_400_000;
    // Writer 0 has ids 0..1500, writer 1 ids 500..2000, in batches of 100 over 8 days.
    let tasks = writers.iter().enumerate().map(|(w, store)| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut skipped = 0;
            for batch in 0..15u64 {
                let events: Vec<_> = (0..100u64)
                    .map(|i| {
                        let n = w as u64 * 500 + batch * 100 + i;
                        let seq = w as u64 * 10_000 + batch * 100 + i + 1;
                        let ts = day + (n % 8) as i64 * DAY_MS + n as i64;
                        event(seq, &format!("id-{n}"), "t", ts)
                    })
                    .collect();
                let last = events.last().unwrap().seq;
                let outcome = store.append_batch(Arc::new(events), last).await.unwrap();
                skipped += outcome.skipped.len();
            }
            skipped
        })
    });
    let skipped: usize = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|skipped| skipped.unwrap())
        .sum();
    assert_eq!(
        skipped, 1000,
        "each shared id skipped by exactly one writer"
    );
    let store = &writers[0];
    assert_eq!(store.event_count().await.unwrap(), 2000);
    assert_eq!(store.count(EventFilter::default()).await.unwrap(), 2000);
    let rolled: u64 = sorted_rollups(store, i64::MIN, i64::MAX, MINUTE_MS)
        .await
        .iter()
        .map(|row| row.count)
        .sum();
    assert_eq!(rolled, 2000);
    for n in [0, 499, 500, 1499, 1500, 1999] {
        assert!(
            store.get(&format!("id-{n}")).await.unwrap().is_some(),
            "id-{n}"
        );
    }
}

/// One process's retention drops a day's partition that another process's writer has seen:
/// that writer's next event on the day recreates the partition instead of failing.
#[tokio::test]
async fn pg_writer_recreates_a_partition_dropped_by_another_process() {
    let Some(schema) = TestSchema::new("dropped_day").await else {
        return;
    };
    let writer = pg_connect(&schema).await;
    let retention = pg_connect(&schema).await;
    let day = 1_700_006_400_000;
    writer
        .append_batch(Arc::new(vec![event(1, "a", "t", day)]), 1)
        .await
        .unwrap();
    let purged = retention.purge_before(day + DAY_MS).await.unwrap();
    assert_eq!((purged.events, purged.partitions), (1, 1));
    writer
        .append_batch(Arc::new(vec![event(2, "b", "t", day + 1)]), 2)
        .await
        .unwrap();
    assert_eq!(
        seqs(
            &writer
                .query(query(EventFilter::default(), Order::Asc, 10))
                .await
                .unwrap()
        ),
        [2]
    );
    assert_eq!(writer.event_count().await.unwrap(), 1);
}

/// A batch PostgreSQL refuses for a value in it (a user id too large for an index entry,
/// SQLSTATE 54000) is rejected, not taken for an outage, so a worker sets it aside; the store
/// goes on taking other batches on the same connection.
#[tokio::test]
async fn pg_a_value_too_large_for_an_index_is_rejected() {
    let Some(store) = TestStore::postgres("rejected").await else {
        return;
    };
    // 100 KB that compression cannot shrink below the 2.7 KB an index entry may hold.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: String = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect();
    let mut huge = event(1, "huge", "t", 1_000);
    huge.user_id = Some(noise);
    match store.append_batch(Arc::new(vec![huge]), 1).await {
        Err(StoreError::Rejected(err)) => assert!(format!("{err:#}").contains("index"), "{err:#}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    store
        .append_batch(Arc::new(vec![event(2, "fine", "t", 1_000)]), 2)
        .await
        .unwrap();
    assert_eq!(store.event_count().await.unwrap(), 1);
    assert_eq!(store.indexed_seq().await.unwrap(), 2);
    assert!(store.get("huge").await.unwrap().is_none());
}

/// Indexing throughput of 1,000-event batches (a figure, not a check):
/// `cargo test --test store -- --ignored pg_append_throughput --nocapture`.
#[tokio::test]
#[ignore = "a benchmark"]
async fn pg_append_throughput() {
    let Some(store) = TestStore::postgres("throughput").await else {
        return;
    };
    const BATCHES: u64 = 100;
    const BATCH: u64 = 1_000;
    let start_ms = 1_700_006_400_000 + 20 * HOUR_MS;
    let batches: Vec<Arc<Vec<StoredEvent>>> = (0..BATCHES)
        .map(|b| {
            let events = (0..BATCH)
                .map(|i| {
                    let seq = b * BATCH + i + 1;
                    // About 40 s of a busy service: 25 events per ms, crossing midnight.
                    let ts = start_ms + 4 * HOUR_MS - 20_000 + seq as i64 / 25;
                    let mut e = event(
                        seq,
                        &format!("client-{seq:012}"),
                        ["click", "view", "login", "error"][(seq % 4) as usize],
                        ts,
                    );
                    e.service = Some(format!("service-{}", seq % 7));
                    e.user_id = Some(format!("user-{}", (seq * 7919) % 10_000));
                    e.message = Some(format!("request {seq} handled"));
                    e.metadata = Some(format!(
                        r#"{{"path":"/api/items/{seq}","status":200,"ms":{}}}"#,
                        seq % 250
                    ));
                    e
                })
                .collect();
            Arc::new(events)
        })
        .collect();
    let started = std::time::Instant::now();
    for batch in batches {
        let last = batch.last().unwrap().seq;
        store.append_batch(batch, last).await.unwrap();
    }
    let elapsed = started.elapsed();
    let events = BATCHES * BATCH;
    assert_eq!(store.event_count().await.unwrap(), events);
    println!(
        "PostgreSQL append_batch: {events} events in {BATCHES} batches of {BATCH}: {:.2} s, {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}
