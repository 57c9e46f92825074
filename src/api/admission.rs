//! The cap on requests in progress: beyond `--max-concurrent-requests` a request is answered
//! `503` at once instead of queueing, so a flood costs fast refusals, not memory.
//! (Connections have their own cap in [`crate::connections`].)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

pub struct InFlight {
    /// Shared with whatever paces itself by the load (the log writer).
    current: Arc<AtomicUsize>,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize, current: Arc<AtomicUsize>) -> Arc<InFlight> {
        Arc::new(InFlight { current, max })
    }
}

/// A request admitted: counted in progress until dropped, also when the request's future
/// is dropped (client gone).
pub struct Admitted<'a>(&'a InFlight);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`InFlight::admit`] decided.
pub enum Admission<'a> {
    /// Counted in progress until this is dropped.
    Admitted(Admitted<'a>),
    /// Not counted: health checks always pass, as an orchestrator must be able to ask an
    /// overloaded server how it is.
    Exempt,
    /// Refused: as many requests as allowed are in progress.
    Refused,
}

impl InFlight {
    /// Admits `request` if fewer than the maximum are in progress.
    pub fn admit(&self, request: &Request) -> Admission<'_> {
        if request.uri().path().starts_with("/health") {
            return Admission::Exempt;
        }
        if self.current.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.current.fetch_sub(1, Ordering::AcqRel);
            return Admission::Refused;
        }
        Admission::Admitted(Admitted(self))
    }

    /// The answer to a refused request.
    pub fn refusal(&self) -> Response {
        ApiError::Overloaded(self.max).into_response()
    }
}
