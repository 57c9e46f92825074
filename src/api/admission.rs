//! The cap on requests in progress: beyond `--max-concurrent-requests` a request is answered
//! `503` at once instead of queueing, so a flood costs fast refusals, not memory.
//! (Connections have their own cap in [`crate::connections`].)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

pub struct InFlight {
    current: AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            current: AtomicUsize::new(0),
            max,
        })
    }
}

/// Decrements on drop, also when the request's future is dropped (client gone).
struct Admitted<'a>(&'a InFlight);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: admits the request if fewer than the maximum are in progress. Health checks
/// always pass: an orchestrator must be able to ask an overloaded server how it is.
pub async fn limit_in_flight(
    State(in_flight): State<Arc<InFlight>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/health") {
        return next.run(request).await;
    }
    if in_flight.current.fetch_add(1, Ordering::AcqRel) >= in_flight.max {
        in_flight.current.fetch_sub(1, Ordering::AcqRel);
        return ApiError::Overloaded(in_flight.max).into_response();
    }
    let _admitted = Admitted(&in_flight);
    next.run(request).await
}
