//! A small `/stream` (Server-Sent Events) reader for tests that follow events across
//! processes: each read is bounded, the body is split into frames by the test kit's parser
//! ([`testkit::sse::SseParser`]) and each frame is checked strictly, and every `event`
//! frame's `id:` is checked against the `seq` of its data.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use testkit::sse::SseParser;

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

    /// The message of a parsed frame, `None` for comments only; panics on anything the
    /// server should not send (another field, several data lines, a non-numeric id).
    fn checked(frame: &testkit::sse::Frame<'_>) -> Option<Frame> {
        if let Some(name) = frame.other_field {
            panic!(
                "unexpected SSE field {:?} in {frame:?}",
                String::from_utf8_lossy(name)
            );
        }
        if frame.is_comment() {
            return None;
        }
        assert!(frame.data_lines <= 1, "more than one data line: {frame:?}");
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("UTF-8 stream");
        Some(Frame {
            event: frame.event.map_or_else(|| "message".to_owned(), text),
            id: frame.id.map(|id| text(id).parse().expect("numeric id")),
            data: frame.data.as_deref().map_or_else(String::new, text),
        })
    }
}

/// The body of a `200 text/event-stream` answer, read message by message.
pub struct SseBody {
    response: reqwest::Response,
    parser: SseParser,
    frames: VecDeque<Frame>,
    ended: bool,
}

impl SseBody {
    pub fn new(response: reqwest::Response) -> SseBody {
        SseBody {
            response,
            parser: SseParser::default(),
            frames: VecDeque::new(),
            ended: false,
        }
    }

    /// The next message, or `None` once the stream has ended (not inside a message);
    /// panics after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            if self.ended {
                assert!(
                    self.parser.pending().is_empty(),
                    "stream ended inside a message: {:?}",
                    String::from_utf8_lossy(self.parser.pending())
                );
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE message within {timeout:?}"));
            match chunk {
                Ok(Some(bytes)) => {
                    self.parser.input().extend_from_slice(&bytes);
                    let frames = &mut self.frames;
                    self.parser
                        .drain(|frame| frames.extend(Frame::checked(&frame)))
                        .unwrap_or_else(|e| panic!("reading the stream failed: {e:#}"));
                }
                Ok(None) => self.ended = true,
                Err(e) => panic!("reading the stream failed: {e:?}"),
            }
        }
    }
}

pub struct Sse {
    body: SseBody,
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
            body: SseBody::new(response),
        }
    }

    /// The next message; panics if none comes within `timeout` or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Frame {
        self.body
            .next_within(timeout)
            .await
            .unwrap_or_else(|| panic!("the stream ended"))
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
}
