//! What every request passes through first, in one middleware rather than a layer each
//! (a layer costs every request a boxed future and a clone of the routes below it):
//!
//! - its id: the client's `X-Request-Id` when it is sane, otherwise a new UUIDv7, echoed in
//!   the answer's `X-Request-Id` and carried by every log line of the request through its
//!   span (at `debug`, each request ends with a line giving its status and duration);
//! - its count and duration for `/metrics/prometheus`;
//! - CORS for the origins `--cors-origins` lists (before the Host check: preflights carry
//!   nothing else to check, and refusals still name the origin for its page);
//! - the Host check while no key is required (`--allowed-hosts`);
//! - the cap on requests in progress (`--max-concurrent-requests`);
//! - the headers and the JSON shape every answer gets.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::admission::Admission;
use super::cors;
use super::guard::{finish_answer, host_refusal};
use super::state::AppState;
use crate::clock::{Clock, SystemClock};
use crate::queue::ids;
use crate::telemetry::RequestTiming;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// Middleware: everything above, around the routes.
pub async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
        let response = checked(&state, request, next).await;
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

/// The request through CORS, the Host check and admission, then the routes.
async fn checked(state: &AppState, request: Request, next: Next) -> Response {
    let listed = state.http.cors.as_deref();
    let cors_origin = match listed.map(|origins| cors::before(origins, &request)) {
        Some(cors::Before::Answer(answer)) => return answer,
        Some(cors::Before::Mark(origin)) => Some(origin),
        Some(cors::Before::Pass) | None => None,
    };
    let mut response = admitted(state, request, next).await;
    if let Some(origin) = cors_origin {
        cors::mark(&mut response, &origin);
    }
    response
}

/// The request through the Host check and admission, then the routes.
async fn admitted(state: &AppState, request: Request, next: Next) -> Response {
    if let Some(hosts) = &state.http.hosts {
        if let Some(refusal) = host_refusal(hosts, &state.keys, &request) {
            return refusal;
        }
    }
    let _admitted = match state.in_flight.admit(&request) {
        Admission::Refused => return state.in_flight.refusal(),
        admission => admission,
    };
    next.run(request).await
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
