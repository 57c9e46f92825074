//! A small `/stream` (Server-Sent Events) reader for tests that follow events across
//! processes: each read is bounded, and every `event` frame's `id:` is checked against the
//! `seq` of its data.

use std::time::Duration;

use serde_json::Value;

use super::Api;

/// One SSE message (comments such as heartbeats are skipped).
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub id: Option<u64>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.data))
    }
}

pub struct Sse {
    response: reqwest::Response,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
}

impl Sse {
    /// Opens `GET /stream{query}` on `api`, resuming after `last_event_id` if given; panics
    /// unless it answers 200 with `text/event-stream`.
    pub async fn open(api: &Api, query: &str, last_event_id: Option<u64>) -> Sse {
        // No total timeout: a stream outlives any request timeout; reads are bounded instead.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        let mut request = client.get(api.url(&format!("/stream{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = tokio::time::timeout(Duration::from_secs(30), request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer to GET /stream{query} within 30 s"))
            .unwrap_or_else(|e| panic!("GET /stream{query} failed: {e:?}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            panic!("GET /stream{query} answered {status}: {body}");
        }
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        Sse {
            response,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next message; panics if none comes within `timeout` or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_one() {
                return frame;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE message within {timeout:?}"));
            match chunk {
                Ok(Some(bytes)) => {
                    if self.start > 0 && self.start * 2 > self.buf.len() {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    self.buf.extend_from_slice(&bytes);
                }
                Ok(None) => panic!("the stream ended"),
                Err(e) => panic!("reading the stream failed: {e:?}"),
            }
        }
    }

    /// The next `n` messages, which must be events whose `id:` is their `seq`, as JSON.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let frame = self.next(timeout).await;
            assert_eq!(frame.event, "event", "unexpected message {frame:?}");
            let event = frame.json();
            assert_eq!(
                frame.id,
                event["seq"].as_u64(),
                "id: is not the seq: {frame:?}"
            );
            events.push(event);
        }
        events
    }

    fn parse_one(&mut self) -> Option<Frame> {
        parse_frame(&self.buf, &mut self.start)
    }
}

/// Parses the next complete message of `buf` from `*start` (advancing it past what it
/// consumed), skipping comment-only blocks; `None` until a whole message has arrived.
pub fn parse_frame(buf: &[u8], start: &mut usize) -> Option<Frame> {
    loop {
        let rest = &buf[*start..];
        let end = rest.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8(rest[..end].to_vec()).expect("UTF-8 stream");
        *start += end + 2;
        let mut frame = Frame {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut has_field = false;
        for line in block.split('\n') {
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            has_field = true;
            match name {
                "event" => frame.event = value.to_owned(),
                "id" => frame.id = Some(value.parse().expect("numeric id")),
                "data" => {
                    assert!(frame.data.is_empty(), "more than one data line: {block:?}");
                    frame.data = value.to_owned();
                }
                other => panic!("unexpected SSE field {other:?} in {block:?}"),
            }
        }
        if has_field {
            return Some(frame);
        }
    }
}
