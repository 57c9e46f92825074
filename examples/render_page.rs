//! Measures what keeps the hand-written event rendering (`eventide::event::render`): a page
//! of 1,000 typical events (each with a message and a metadata object, about 500 bytes)
//! written by hand, against serde serializing the same events as `EventView`s, which must
//! check each metadata text as JSON first. Both write the same bytes.
//!
//! `cargo run --release --example render_page`

use std::hint::black_box;
use std::time::{Duration, Instant};

use eventide::event::render::{write_events, EventView};
use eventide::event::StoredEvent;

const EVENTS: u64 = 1_000;
const PAGES: u32 = 2_000;

fn page() -> Vec<StoredEvent> {
    (0..EVENTS)
        .map(|i| StoredEvent {
            seq: 1_000_000 + i,
            id: format!("019a1b2c-3d4e-7f00-8a9b-{i:012x}"),
            id_from_client: false,
            kind: format!("type-{:02}", i % 20),
            timestamp_ms: 1_760_000_000_000 + i as i64 * 37,
            received_at_ms: 1_760_000_000_012 + i as i64 * 37,
            service: Some(format!("svc-{:02}", i % 10)),
            user_id: Some(format!("user-{:06}", i * 7_919 % 100_000)),
            message: Some(format!(
                "GET /api/v1/orders/{i} 200 in {}ms (request {:08x}, {} bytes, cache miss, attempt 1)",
                i % 900,
                i * 2_654_435_761 % (1 << 32),
                200 + i * 37 % 60_000
            )),
            metadata: Some(format!(
                r#"{{"path":"/api/v1/orders/{i}","status":200,"duration_ms":{},"region":"eu-west-1","ua":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"}}"#,
                i % 900
            )),
        })
        .collect()
}

fn by_hand(events: &[StoredEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    write_events(&mut out, events);
    out
}

fn by_serde(events: &[StoredEvent]) -> Vec<u8> {
    let views: Vec<EventView> = events
        .iter()
        .map(|event| EventView::of(event).expect("metadata is JSON"))
        .collect();
    let mut out = Vec::with_capacity(16 * 1024);
    serde_json::to_writer(&mut out, &views).expect("writing to a Vec cannot fail");
    out
}

/// The time `render` takes per page, over `PAGES` pages.
fn time(events: &[StoredEvent], render: fn(&[StoredEvent]) -> Vec<u8>) -> Duration {
    let started = Instant::now();
    for _ in 0..PAGES {
        black_box(render(black_box(events)));
    }
    started.elapsed() / PAGES
}

fn main() {
    let events = page();
    let hand = by_hand(&events);
    assert_eq!(hand, by_serde(&events), "both write the same bytes");
    println!("a page of {EVENTS} events: {} bytes", hand.len());
    for round in 1..=3 {
        let hand = time(&events, by_hand);
        let serde = time(&events, by_serde);
        println!(
            "round {round}: by hand {:.0} µs, serde {:.0} µs per page",
            hand.as_secs_f64() * 1e6,
            serde.as_secs_f64() * 1e6
        );
    }
}
