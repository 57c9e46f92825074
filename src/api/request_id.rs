//! What every request passes through first. Its id: the client's `X-Request-Id` when it is
//! sane, otherwise a new UUIDv7, echoed in the response's `X-Request-Id` and carried by every
//! log line of the request through its span (at `debug`, each request ends with a line
//! giving its status and duration). Its count and duration for `/metrics/prometheus`, and
//! the headers and JSON shape every answer gets. One middleware rather than three: each
//! layer costs every request a boxed future and a clone of the routes below it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::guard::finish_answer;
use crate::clock::{Clock, SystemClock};
use crate::queue::ids;
use crate::telemetry::RequestTiming;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Middleware: assigns the id, runs the request in a span holding it, counts it, gives the
/// answer its headers, echoes the id.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_sane(id))
        .map(str::to_owned)
        .unwrap_or_else(new_id);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = std::time::Instant::now();
    let timing = RequestTiming::start(&request);
    let response = async {
        let response = next.run(request).await;
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request finished"
        );
        response
    }
    .instrument(span)
    .await;
    timing.finish(response.status().as_u16());
    let mut response = finish_answer(response).await;
    let value = HeaderValue::from_str(&id).expect("sane ids are valid header values");
    response.headers_mut().insert(HEADER, value);
    response
}

/// Short, printable and free of anything that could forge log lines or headers.
fn is_sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&byte))
}

fn new_id() -> String {
    ids::new_event_id(SystemClock.now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        for sane in ["abc", "0f3a-11:22", "req_1.2/3+4=5@x", &"a".repeat(128)] {
            assert!(is_sane(sane), "{sane}");
        }
        for insane in [
            "",
            "a b",
            "line\nbreak",
            "quote\"",
            "é",
            &"a".repeat(129),
            "{}",
        ] {
            assert!(!is_sane(insane), "{insane}");
        }
    }
}
