//! A `/stream` subscriber for the stream scenario: a raw-TCP HTTP/1.1 client that sends one
//! `GET`, checks the head (200, `text/event-stream`, chunked), then decodes the chunked body
//! and splits it into Server-Sent Events frames (the test kit's [`ChunkedDecoder`] and
//! [`SseParser`]) and, for every `event: event` frame, measures how long ago the event's
//! `timestamp` was.
//!
//! The bench's generator sets `timestamp` to the wall-clock time right before it sends the
//! `POST`, so receipt minus timestamp is the POST-to-receipt time: an upper bound of the
//! commit-to-receipt time, plus up to 1 ms because timestamps carry whole milliseconds.
//!
//! Like [`testkit::http`], this avoids a general HTTP client: 1,010 of these share two cores
//! with the server, so per-frame work is kept to a few byte searches, without allocating.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use eventide::event::timefmt::parse_rfc3339_ms;
use testkit::http::RawHead;
use testkit::sse::{find_byte, ChunkedDecoder, Frame, SseParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::load::LoadOutcome;
use super::stats::micros;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

/// The text of the first `"<key>":"…"` string in `json`, found by byte search. The key must
/// be followed by a string without escapes (true of the server's ids, types and times).
fn string_field<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(json, key)? + key.len();
    let length = find_byte(b'"', &json[start..])?;
    Some(&json[start..start + length])
}

/// The first occurrence of `needle` (not empty) in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = find_byte(needle[0], &haystack[from..]) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The event's `timestamp` (UTC epoch ms) from the `data` of an `event` frame.
pub fn event_timestamp_ms(data: &[u8]) -> Option<i64> {
    let text = string_field(data, br#""timestamp":""#)?;
    parse_rfc3339_ms(std::str::from_utf8(text).ok()?).ok()
}

/// The event's `type` from the `data` of an `event` frame.
pub fn event_type(data: &[u8]) -> Option<&[u8]> {
    string_field(data, br#""type":""#)
}

/// Wall-clock time in microseconds since the epoch.
fn now_epoch_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as i64)
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct SubscriberOutcome {
    /// `event` frames received.
    pub delivered: u64,
    /// Receipt time minus event timestamp of each delivered event.
    pub delivery_us: Vec<u32>,
    /// `lagged` frames (the server dropped the subscriber for falling behind).
    pub lagged: u64,
    /// Streams that ended (or failed) before the bench stopped reading, other than after a
    /// `lagged` frame.
    pub disconnected: u64,
    /// Events whose `id:` was not above the previous one.
    pub out_of_order: u64,
    /// Events of another type than the subscriber's filter.
    pub misrouted: u64,
    /// Everything that went wrong, including the counts above, with samples.
    pub tally: LoadOutcome,
}

impl SubscriberOutcome {
    pub fn merge(&mut self, other: SubscriberOutcome) {
        self.delivered += other.delivered;
        self.delivery_us.extend(other.delivery_us);
        self.lagged += other.lagged;
        self.disconnected += other.disconnected;
        self.out_of_order += other.out_of_order;
        self.misrouted += other.misrouted;
        self.tally.merge(other.tally);
    }
}

/// One subscription to start: its query and, for typed ones, the type it must only see.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub path_and_query: String,
    pub only_type: Option<String>,
}

/// What a subscriber task shares with the scenario.
#[derive(Debug, Clone)]
pub struct SubscriberLinks {
    /// Told `Ok` once the response head is in (the subscription is registered), or why not.
    pub ready: mpsc::UnboundedSender<Result<(), String>>,
    /// Becomes `true` when the bench stops reading; the stream ending earlier is an error.
    pub stop: watch::Receiver<bool>,
    /// Events delivered, summed over all subscribers, for progress and the drain.
    pub delivered: Arc<AtomicU64>,
}

/// Subscribes and reads until told to stop; never fails, everything is in the outcome.
pub async fn subscribe(
    addr: SocketAddr,
    subscription: Subscription,
    links: SubscriberLinks,
) -> SubscriberOutcome {
    let mut outcome = SubscriberOutcome::default();
    let path = subscription.path_and_query.clone();
    let mut stop = links.stop.clone();
    let mut ready_sent = false;
    let ended = tokio::select! {
        result = read_stream(addr, &subscription, &links, &mut outcome, &mut ready_sent) => {
            Some(result)
        }
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    // Stopped by the bench while the stream was still open: the expected ending.
    let Some(result) = ended else {
        return outcome;
    };
    let description = match result {
        // The server ends the stream after a `lagged` frame; that is counted as lagged.
        Ok(()) if outcome.lagged > 0 => return outcome,
        Ok(()) => format!("GET {path}: stream ended while the bench was reading"),
        Err(error) => format!("GET {path}: {error:#}"),
    };
    if ready_sent {
        outcome.disconnected += 1;
    } else {
        let _ = links.ready.send(Err(description.clone()));
    }
    outcome.tally.record_error(description);
    outcome
}

/// Opens the stream and reads it until it ends: `Ok` at a clean end of the body or of the
/// connection, `Err` on anything malformed.
async fn read_stream(
    addr: SocketAddr,
    subscription: &Subscription,
    links: &SubscriberLinks,
    outcome: &mut SubscriberOutcome,
    ready_sent: &mut bool,
) -> Result<()> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Accept: text/event-stream\r\n\r\n",
        subscription.path_and_query,
        super::key::auth_header()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("writing request")?;

    let mut buffer = vec![0; READ_BUFFER];
    let mut filled = 0;
    let head_len = loop {
        if filled == buffer.len() {
            buffer.resize(filled * 2, 0);
        }
        let read = stream
            .read(&mut buffer[filled..])
            .await
            .context("reading the response head")?;
        if read == 0 {
            bail!("connection closed before the response head");
        }
        filled += read;
        if let Some(head) = RawHead::parse(&buffer[..filled])? {
            check_stream_head(&head, &buffer[head.head_len..filled])?;
            break head.head_len;
        }
    };
    let _ = links.ready.send(Ok(()));
    *ready_sent = true;

    let mut decoder = ChunkedDecoder::default();
    let mut parser = SseParser::default();
    let mut reader = FrameReader {
        only_type: subscription.only_type.as_deref().map(str::as_bytes),
        last_seq: None,
        outcome,
    };
    // The body starts with whatever followed the head in the last read.
    let mut received = head_len..filled;
    loop {
        // One receipt time per read: the frames in it arrived together.
        let received_at_us = now_epoch_us();
        decoder.decode(&buffer[received], parser.input())?;
        let before = reader.outcome.delivered;
        parser.drain(|frame| reader.frame(&frame, received_at_us))?;
        links
            .delivered
            .fetch_add(reader.outcome.delivered - before, Ordering::Relaxed);
        if decoder.is_done() {
            return Ok(());
        }
        let read = stream
            .read(&mut buffer)
            .await
            .context("reading the stream")?;
        if read == 0 {
            if reader.outcome.lagged > 0 {
                return Ok(());
            }
            bail!("connection closed in the middle of the chunked body");
        }
        received = 0..read;
    }
}

/// 200, `text/event-stream`, chunked: anything else is not the stream the bench measures.
fn check_stream_head(head: &RawHead<'_>, body_start: &[u8]) -> Result<()> {
    if head.status != 200 {
        let excerpt = String::from_utf8_lossy(&body_start[..body_start.len().min(200)]);
        bail!("answered {} instead of 200: {excerpt}", head.status);
    }
    let mut event_stream = false;
    let mut chunked = false;
    for header in head.headers() {
        let (name, value) = header?;
        if name.eq_ignore_ascii_case("content-type") {
            event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if !event_stream {
        bail!("answered 200 without content-type text/event-stream");
    }
    if !chunked {
        bail!("answered 200 without transfer-encoding chunked");
    }
    Ok(())
}

/// Per-frame bookkeeping of one subscriber.
struct FrameReader<'a> {
    only_type: Option<&'a [u8]>,
    last_seq: Option<u64>,
    outcome: &'a mut SubscriberOutcome,
}

impl FrameReader<'_> {
    fn frame(&mut self, frame: &Frame<'_>, received_at_us: i64) {
        if frame.is_comment() {
            return;
        }
        let outcome = &mut *self.outcome;
        match frame.event {
            Some(b"event") => {}
            Some(b"lagged") => {
                outcome.lagged += 1;
                let data = frame.data.as_deref().unwrap_or_default();
                outcome.tally.record_error(format!(
                    "lagged: {}",
                    String::from_utf8_lossy(&data[..data.len().min(200)])
                ));
                return;
            }
            other => {
                let name = String::from_utf8_lossy(other.unwrap_or(&b"(none)"[..]));
                outcome
                    .tally
                    .record_error(format!("unexpected SSE event type {name}"));
                return;
            }
        }
        outcome.delivered += 1;
        let data = frame.data.as_deref().unwrap_or_default();
        match event_timestamp_ms(data) {
            Some(timestamp_ms) => {
                let elapsed_us = (received_at_us - timestamp_ms * 1000).max(0);
                outcome
                    .delivery_us
                    .push(micros(Duration::from_micros(elapsed_us as u64)));
            }
            None => outcome.tally.record_error(format!(
                "event without a readable timestamp: {}",
                String::from_utf8_lossy(&data[..data.len().min(200)])
            )),
        }
        match frame.seq() {
            Some(seq) if self.last_seq.is_some_and(|last| seq <= last) => {
                outcome.out_of_order += 1;
                outcome.tally.record_error(format!(
                    "id {seq} after id {}",
                    self.last_seq.unwrap_or_default()
                ));
            }
            Some(seq) => self.last_seq = Some(seq),
            None => outcome
                .tally
                .record_error("event frame without a numeric id".to_owned()),
        }
        if let Some(expected) = self.only_type {
            if event_type(data) != Some(expected) {
                outcome.misrouted += 1;
                outcome.tally.record_error(format!(
                    "subscriber to {} got an event of type {}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(event_type(data).unwrap_or(&b"(none)"[..]))
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use testkit::sse::encode_chunked;

    const EVENT: &str = r#"{"id":"0190-a","type":"type-007","timestamp":"2026-11-22T10:00:00.123Z","service":"svc-01","message":"GET /x 200","metadata":{"timestamp":"1999-01-01T00:00:00Z"},"seq":42}"#;

    #[test]
    fn byte_and_substring_search() {
        assert_eq!(find_byte(b'\n', b"ab\ncd\n"), Some(2));
        assert_eq!(find_byte(b'\n', b""), None);
        assert_eq!(find_byte(b'x', b"abc"), None);
        assert_eq!(find(b"aab\"timestamp\":\"", br#""timestamp":""#), Some(3));
        assert_eq!(find(b"\"time\"timestamp", br#""timestamp""#), None);
        assert_eq!(find(b"abc", b"abcd"), None);
    }

    #[test]
    fn timestamp_and_type_are_read_from_the_event_json() {
        let expected = parse_rfc3339_ms("2026-11-22T10:00:00.123Z").unwrap();
        assert_eq!(event_timestamp_ms(EVENT.as_bytes()), Some(expected));
        assert_eq!(event_type(EVENT.as_bytes()), Some(&b"type-007"[..]));
        // A "timestamp" inside a string value is escaped and cannot be mistaken for the key.
        let tricky = r#"{"id":"x","message":"\"timestamp\":\"1999-01-01T00:00:00Z\"","timestamp":"2026-11-22T10:00:00.123Z"}"#;
        assert_eq!(event_timestamp_ms(tricky.as_bytes()), Some(expected));
        assert_eq!(event_timestamp_ms(br#"{"timestamp":"yesterday"}"#), None);
        assert_eq!(
            event_timestamp_ms(br#"{"timestamp":"2026-11-22T10:00"#),
            None
        );
        assert_eq!(event_timestamp_ms(b"{}"), None);
    }

    proptest! {
        /// Any body, any chunking, any read boundaries: chunked decoding then SSE splitting
        /// gives back exactly the frames that were sent.
        #[test]
        fn chunked_sse_round_trips(
            seqs in proptest::collection::vec(0u64..1_000_000, 1..20),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            cuts in proptest::collection::vec(0usize..100_000, 0..30),
        ) {
            let mut text = String::from(": connected\n\n");
            for seq in &seqs {
                text.push_str(&format!("id: {seq}\nevent: event\ndata: {EVENT}\n\n"));
            }
            let wire = encode_chunked(text.as_bytes(), &sizes);
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = ChunkedDecoder::default();
            let mut parser = SseParser::default();
            let mut seen = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([wire.len()]) {
                decoder.decode(&wire[start..cut], parser.input()).unwrap();
                parser.drain(|frame| {
                    if !frame.is_comment() {
                        let data = frame.data.as_deref().unwrap_or_default();
                        seen.push((frame.seq(), event_timestamp_ms(data)));
                    }
                }).unwrap();
                start = cut;
            }
            prop_assert!(decoder.is_done());
            let timestamp = event_timestamp_ms(EVENT.as_bytes());
            let expected: Vec<_> = seqs.iter().map(|&seq| (Some(seq), timestamp)).collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
