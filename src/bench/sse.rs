//! A `/stream` subscriber for the stream scenario: a raw-TCP HTTP/1.1 client that sends one
//! `GET`, checks the head (200, `text/event-stream`, chunked), then decodes the chunked body
//! ([`ChunkedDecoder`]), splits it into Server-Sent Events frames ([`SseParser`]) and, for
//! every `event: event` frame, measures how long ago the event's `timestamp` was.
//!
//! The bench's generator sets `timestamp` to the wall-clock time right before it sends the
//! `POST`, so receipt minus timestamp is the POST-to-receipt time: an upper bound of the
//! commit-to-receipt time, plus up to 1 ms because timestamps carry whole milliseconds.
//!
//! Like [`super::http`], this avoids a general HTTP client: 1,010 of these share two cores
//! with the server, so per-frame work is kept to a few byte searches, without allocating.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::http::RawHead;
use super::load::LoadOutcome;
use super::stats::micros;
use crate::event::timefmt::parse_rfc3339_ms;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;
/// A chunk-size line is hex digits and an extension we skip; more digits than this would
/// overflow the size and are refused.
const MAX_SIZE_DIGITS: u32 = 15;
/// A frame larger than this means the stream is not SSE as we know it: stop buffering.
const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Where a [`ChunkedDecoder`] is within the `Transfer-Encoding: chunked` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line: hex digits, then an optional extension, then CRLF.
    Size {
        size: u64,
        digits: u32,
        /// Past the digits (an extension or whitespace); bytes are skipped until CRLF.
        in_extension: bool,
        /// The CR of the closing CRLF was seen.
        cr: bool,
    },
    /// Copying chunk data, `remaining` bytes still to come.
    Data { remaining: u64 },
    /// Expecting the CRLF that follows chunk data (`cr`: the CR was seen).
    DataEnd { cr: bool },
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailer { line_len: usize, cr: bool },
    /// The body is complete.
    Done,
}

const SIZE_LINE_START: ChunkState = ChunkState::Size {
    size: 0,
    digits: 0,
    in_extension: false,
    cr: false,
};

/// Incremental decoder of a chunked HTTP/1.1 body: fed the bytes as they arrive, split
/// anywhere, it appends the chunk data to an output buffer.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: SIZE_LINE_START,
        }
    }
}

impl ChunkedDecoder {
    /// Decodes `input`, appending chunk data to `out`. Errors on malformed framing and on
    /// bytes after the end of the body.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while let Some((&byte, rest)) = input.split_first() {
            if let ChunkState::Data { remaining } = self.state {
                let take = input
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                input = &input[take..];
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    ChunkState::DataEnd { cr: false }
                } else {
                    ChunkState::Data { remaining }
                };
                continue;
            }
            input = rest;
            self.state = match self.state {
                ChunkState::Size {
                    size,
                    digits,
                    cr: true,
                    ..
                } => {
                    if byte != b'\n' {
                        bail!("chunk-size line: CR not followed by LF");
                    }
                    if digits == 0 {
                        bail!("chunk-size line without a size");
                    }
                    if size == 0 {
                        ChunkState::Trailer {
                            line_len: 0,
                            cr: false,
                        }
                    } else {
                        ChunkState::Data { remaining: size }
                    }
                }
                ChunkState::Size {
                    size,
                    digits,
                    in_extension,
                    cr: false,
                } => match byte {
                    b'\r' => ChunkState::Size {
                        size,
                        digits,
                        in_extension,
                        cr: true,
                    },
                    b'\n' => bail!("chunk-size line ended by a bare LF"),
                    _ if in_extension => ChunkState::Size {
                        size,
                        digits,
                        in_extension,
                        cr: false,
                    },
                    b';' | b' ' | b'\t' if digits > 0 => ChunkState::Size {
                        size,
                        digits,
                        in_extension: true,
                        cr: false,
                    },
                    _ => {
                        let Some(value) = char::from(byte).to_digit(16) else {
                            bail!("bad byte {byte:#04x} in a chunk size");
                        };
                        if digits == MAX_SIZE_DIGITS {
                            bail!("chunk size of more than {MAX_SIZE_DIGITS} hex digits");
                        }
                        ChunkState::Size {
                            size: size * 16 + u64::from(value),
                            digits: digits + 1,
                            in_extension: false,
                            cr: false,
                        }
                    }
                },
                ChunkState::DataEnd { cr: false } if byte == b'\r' => {
                    ChunkState::DataEnd { cr: true }
                }
                ChunkState::DataEnd { cr: true } if byte == b'\n' => SIZE_LINE_START,
                ChunkState::DataEnd { .. } => bail!("chunk data not followed by CRLF"),
                ChunkState::Trailer { line_len, cr: true } => {
                    if byte != b'\n' {
                        bail!("trailer line: CR not followed by LF");
                    }
                    if line_len == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer {
                            line_len: 0,
                            cr: false,
                        }
                    }
                }
                ChunkState::Trailer {
                    line_len,
                    cr: false,
                } => ChunkState::Trailer {
                    line_len: line_len + usize::from(byte != b'\r'),
                    cr: byte == b'\r',
                },
                ChunkState::Done => bail!("data after the end of the chunked body"),
                ChunkState::Data { .. } => unreachable!("handled above"),
            };
        }
        Ok(())
    }

    /// The terminal chunk (and trailer) has been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// One Server-Sent Events frame (the lines before a blank line). Comment lines are
/// skipped; a frame of comments only has no fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: Option<&'a [u8]>,
    pub event: Option<&'a [u8]>,
    /// The `data` lines joined by `\n` (borrowed when there is one, the usual case).
    pub data: Option<Cow<'a, [u8]>>,
}

impl Frame<'_> {
    /// Only comments (heartbeats, `: connected`): nothing to dispatch.
    pub fn is_comment(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_none()
    }

    /// The `id` as a number, if it is one.
    pub fn seq(&self) -> Option<u64> {
        std::str::from_utf8(self.id?).ok()?.parse().ok()
    }
}

/// Splits a decoded SSE byte stream into [`Frame`]s. Lines end with LF or CRLF (a lone CR,
/// which the SSE grammar also allows, is not used by the server and not supported).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for line ends: the complete, non-blank lines of
    /// the frame being read.
    scanned: usize,
}

impl SseParser {
    /// Where new decoded bytes go; call [`drain`](Self::drain) afterwards.
    pub fn input(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Calls `on_frame` for every complete frame in the input and drops their bytes.
    pub fn drain(&mut self, mut on_frame: impl FnMut(Frame<'_>)) -> Result<()> {
        let mut frame_start = 0;
        let mut position = self.scanned;
        while let Some(newline) = find_byte(b'\n', &self.buffer[position..]) {
            let line_end = position + newline;
            let line = strip_cr(&self.buffer[position..line_end]);
            if line.is_empty() {
                if position > frame_start {
                    on_frame(parse_frame(&self.buffer[frame_start..position]));
                }
                frame_start = line_end + 1;
            }
            position = line_end + 1;
        }
        self.buffer.drain(..frame_start);
        self.scanned = position - frame_start;
        if self.buffer.len() > MAX_FRAME_LEN {
            bail!("an SSE frame longer than {MAX_FRAME_LEN} bytes");
        }
        Ok(())
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses the lines of one frame (each ending in LF or CRLF, none blank).
fn parse_frame(lines: &[u8]) -> Frame<'_> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: None,
    };
    let mut rest = lines;
    while !rest.is_empty() {
        let (line, after) = match find_byte(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = strip_cr(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match find_byte(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"id" => frame.id = Some(value),
            b"event" => frame.event = Some(value),
            b"data" => {
                frame.data = Some(match frame.data.take() {
                    None => Cow::Borrowed(value),
                    Some(earlier) => {
                        let mut joined = earlier.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                });
            }
            _ => {}
        }
    }
    frame
}

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

/// The first occurrence of `byte` in `haystack`, by the C library's vectorised `memchr`:
/// the subscribers scan ~100 MB/s for line ends, and a byte-at-a-time loop was half of
/// their CPU time.
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most `haystack.len()` bytes from the start of `haystack`, and
    // returns either null or a pointer into it.
    let found = unsafe {
        libc::memchr(
            haystack.as_ptr().cast(),
            libc::c_int::from(byte),
            haystack.len(),
        )
    };
    (!found.is_null()).then(|| found as usize - haystack.as_ptr() as usize)
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
        super::http::auth_header()
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

    /// Encodes `body` as chunks of the given sizes (cycled), with an extension on one and
    /// a trailer at the end, the way a lenient-but-valid server might.
    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut index = 0;
        while !rest.is_empty() {
            let size = sizes[index % sizes.len()].clamp(1, rest.len());
            if index == 1 {
                out.extend_from_slice(format!("{size:X};name=value\r\n").as_bytes());
            } else {
                out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            }
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
            index += 1;
        }
        out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        out
    }

    /// Feeds `wire` to a decoder in pieces cut at `cuts` (offsets, any order).
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool)> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&cut| cut % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([wire.len()]) {
            decoder.decode(&wire[start..cut], &mut out)?;
            start = cut;
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn chunked_body_decodes_whatever_the_read_boundaries() {
        let body: Vec<u8> = (0..200u8).collect();
        let wire = chunked(&body, &[7, 64, 1, 100]);
        // Every single split point, then every byte on its own.
        for cut in 0..=wire.len() {
            assert_eq!(
                decode_in_pieces(&wire, &[cut]).unwrap(),
                (body.clone(), true)
            );
        }
        let every_byte: Vec<usize> = (0..wire.len()).collect();
        assert_eq!(decode_in_pieces(&wire, &every_byte).unwrap(), (body, true));
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        let mut out = Vec::new();
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"3\nabc\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\r\nmore",
        ] {
            let mut decoder = ChunkedDecoder::default();
            assert!(
                decoder.decode(bad, &mut out).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let mut decoder = ChunkedDecoder::default();
        decoder.decode(b"3\r\nabc\r\n", &mut out).unwrap();
        assert!(!decoder.is_done());
    }

    const EVENT: &str = r#"{"id":"0190-a","type":"type-007","timestamp":"2026-11-22T10:00:00.123Z","service":"svc-01","message":"GET /x 200","metadata":{"timestamp":"1999-01-01T00:00:00Z"},"seq":42}"#;

    /// A stream as the server writes it: a comment, events, a heartbeat, a lagged notice.
    fn sse_stream() -> String {
        format!(
            ": connected\n\nid: 41\nevent: event\ndata: {EVENT}\n\n: heartbeat\n\nid: 42\r\nevent: event\r\ndata: {EVENT}\r\n\r\nevent: lagged\ndata: {{\"last_seq\":42}}\n\n"
        )
    }

    fn frames_of(pieces: &[&[u8]]) -> Vec<(Option<u64>, Option<String>, Option<String>)> {
        let mut parser = SseParser::default();
        let mut frames = Vec::new();
        for piece in pieces {
            parser.input().extend_from_slice(piece);
            parser
                .drain(|frame| {
                    if !frame.is_comment() {
                        frames.push((
                            frame.seq(),
                            frame
                                .event
                                .map(|event| String::from_utf8_lossy(event).into_owned()),
                            frame
                                .data
                                .map(|data| String::from_utf8_lossy(&data).into_owned()),
                        ));
                    }
                })
                .unwrap();
        }
        frames
    }

    #[test]
    fn sse_frames_split_on_blank_lines_with_lf_or_crlf() {
        let text = sse_stream();
        let expected = vec![
            (Some(41), Some("event".into()), Some(EVENT.into())),
            (Some(42), Some("event".into()), Some(EVENT.into())),
            (
                None,
                Some("lagged".into()),
                Some(r#"{"last_seq":42}"#.into()),
            ),
        ];
        for cut in 0..=text.len() {
            let (first, second) = text.as_bytes().split_at(cut);
            assert_eq!(frames_of(&[first, second]), expected, "cut at {cut}");
        }
        // A frame is only complete at its blank line.
        assert!(frames_of(&[b"id: 1\nevent: event\ndata: {}\n"]).is_empty());
    }

    #[test]
    fn multi_line_data_is_joined_and_fields_without_colon_are_empty() {
        let frames = frames_of(&[b"data: a\ndata:b\nevent\n\n"]);
        assert_eq!(
            frames,
            vec![(None, Some(String::new()), Some("a\nb".to_owned()))]
        );
    }

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
            let wire = chunked(text.as_bytes(), &sizes);
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
