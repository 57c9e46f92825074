//! The one error type of the HTTP API and how each case is answered: always a JSON body with
//! a machine-readable `error` code and a human `message`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::rate_limit::Limited;
use crate::live::SubscribeError;
use crate::queue::IngestError;

/// Seconds a client is asked to wait before retrying a refused request.
const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidParameter { parameter: String, message: String },
    #[error("malformed JSON at line {line}, column {column}: {reason}")]
    MalformedJson {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{message}")]
    BadBody { message: String },
    /// No event of the request was valid: the ingest answer, with an error code on top.
    #[error("no event in the request is valid")]
    NoValidEvents { answer: Value },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotYetIndexed(String),
    #[error("{0}")]
    HostNotAllowed(String),
    #[error("{0}")]
    CorsOriginNotAllowed(String),
    /// The request body arrived slower than `--min-body-rate`.
    #[error("{0}")]
    BodyTooSlow(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error("rate limit of {} per second (burst {}) exceeded; retry in {:.1} s", .0.per_second, .0.burst, .0.retry_after.as_secs_f64())]
    RateLimited(Limited),
    #[error("{0} requests are already in progress; retry shortly")]
    Overloaded(usize),
    #[error("the store is unavailable: {0:#}")]
    StoreUnavailable(anyhow::Error),
}

impl ApiError {
    pub fn invalid_parameter(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::MalformedJson { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::BadBody { .. } => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::NoValidEvents { .. } => (StatusCode::BAD_REQUEST, "no_valid_events"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Ingest(err) => {
                let status = match err {
                    IngestError::PendingFull { .. }
                    | IngestError::BacklogFull { .. }
                    | IngestError::QueueBacklogFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                    IngestError::LogUnavailable(_)
                    | IngestError::QueueUnavailable(_)
                    | IngestError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                };
                (status, err.code())
            }
            ApiError::Subscribe(SubscribeError::TooManySubscribers { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_subscribers")
            }
            ApiError::Subscribe(SubscribeError::ShuttingDown) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::NotYetIndexed(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_yet_indexed"),
            ApiError::HostNotAllowed(_) => (StatusCode::FORBIDDEN, "host_not_allowed"),
            ApiError::CorsOriginNotAllowed(_) => (StatusCode::FORBIDDEN, "cors_origin_not_allowed"),
            ApiError::BodyTooSlow(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        }
    }
}

/// Logs a server error at `error` once per distinct cause (and again after a minute), at
/// `debug` otherwise: a failing disk must not log one line per request.
fn log_failure(error: &ApiError) {
    static LAST: Mutex<Option<(String, Instant)>> = Mutex::new(None);
    const AGAIN_AFTER: Duration = Duration::from_secs(60);
    let cause = error.to_string();
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let repeated = last
        .as_ref()
        .is_some_and(|(text, at)| *text == cause && at.elapsed() < AGAIN_AFTER);
    if repeated {
        tracing::debug!(error = %cause, "request failed");
    } else {
        tracing::error!(error = %cause, "request failed");
        *last = Some((cause, Instant::now()));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // A full house or a shutdown is the server working as intended, not a failure; an
        // unwritable log is reported by the writer, once per outage.
        let expected = matches!(
            self,
            ApiError::Subscribe(_)
                | ApiError::Ingest(_)
                | ApiError::NotYetIndexed(_)
                | ApiError::Overloaded(_)
        );
        if status.is_server_error() && !expected {
            log_failure(&self);
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let message = self.to_string();
        let mut retry_after = RETRY_AFTER_SECONDS;
        let mut rate_limit_headers = None;
        let mut body = match self {
            ApiError::RateLimited(limited) => {
                // Whole seconds, rounded up: retrying sooner would be refused again.
                retry_after = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                rate_limit_headers = Some(limited.burst);
                json!({ "retry_after_seconds": retry_after })
            }
            ApiError::NoValidEvents { answer } => answer,
            ApiError::InvalidParameter { parameter, .. } => json!({ "parameter": parameter }),
            ApiError::MalformedJson { line, column, .. } => {
                json!({ "line": line, "column": column })
            }
            _ => json!({}),
        };
        body["error"] = json!(code);
        body["message"] = json!(message);
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is not read: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(burst) = rate_limit_headers {
            let headers = response.headers_mut();
            headers.insert("ratelimit-limit", HeaderValue::from(burst));
            headers.insert("ratelimit-remaining", HeaderValue::from(0));
            headers.insert("ratelimit-reset", HeaderValue::from(retry_after));
        }
        response
    }
}
