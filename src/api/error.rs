//! The one error type of the HTTP API and how each case is answered: always a JSON body with
//! a machine-readable `error` code and a human `message` ([`ErrorBody`], or
//! [`NoValidEvents`] when no event of a request is valid).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::rate_limit::Limited;
use super::schema::IngestAnswer;
use crate::auth::AuthError;
use crate::error_code::ErrorCode;
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
    NoValidEvents(IngestAnswer),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    RuleReadOnly(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotYetIndexed(String),
    #[error("{0}")]
    HostNotAllowed(String),
    #[error("{0}")]
    CorsOriginNotAllowed(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
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

    /// The code it is answered with, which gives the status.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidParameter { .. } => ErrorCode::InvalidParameter,
            ApiError::MalformedJson { .. } => ErrorCode::MalformedJson,
            ApiError::BadBody { .. } => ErrorCode::InvalidBody,
            ApiError::NoValidEvents(_) => ErrorCode::NoValidEvents,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::RuleReadOnly(_) => ErrorCode::RuleReadOnly,
            ApiError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ApiError::NotYetIndexed(_) => ErrorCode::NotYetIndexed,
            ApiError::HostNotAllowed(_) => ErrorCode::HostNotAllowed,
            ApiError::BodyTooSlow(_) => ErrorCode::RequestTimeout,
            ApiError::Ingest(err) => match err {
                IngestError::PendingFull { .. } => ErrorCode::IngestQueueFull,
                IngestError::BacklogFull { .. } => ErrorCode::IndexBacklogFull,
                IngestError::QueueBacklogFull { .. } => ErrorCode::QueueBacklogFull,
                IngestError::LogUnavailable(_) => ErrorCode::LogUnavailable,
                IngestError::QueueUnavailable(_) => ErrorCode::QueueUnavailable,
                IngestError::ShuttingDown => ErrorCode::ShuttingDown,
            },
            ApiError::Subscribe(SubscribeError::TooManySubscribers { .. }) => {
                ErrorCode::TooManySubscribers
            }
            ApiError::Subscribe(SubscribeError::ShuttingDown) => ErrorCode::ShuttingDown,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::Overloaded(_) => ErrorCode::Overloaded,
            ApiError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            ApiError::CorsOriginNotAllowed(_) => ErrorCode::CorsOriginNotAllowed,
            ApiError::Auth(AuthError::Forbidden { .. }) => ErrorCode::Forbidden,
            ApiError::Auth(_) => ErrorCode::Unauthorized,
        }
    }
}

/// Every error answer: a machine-readable `error` code and a human `message`, with more
/// fields for some codes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "error": "invalid_parameter", "message": "'limit' must be a whole number from 1 to 1000",
    "parameter": "limit"
})))]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
    /// `invalid_parameter`: the query parameter (or header) at fault; empty when the query
    /// string itself could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parameter: Option<String>,
    /// `malformed_json`: the line of the body where it stops being JSON (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub line: Option<usize>,
    /// `malformed_json`: the column in that line (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub column: Option<usize>,
    /// `rate_limited`: the `Retry-After` seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_after_seconds: Option<u64>,
    /// On the Segment endpoints only: `error` again, under the name Segment's answers give
    /// it (RudderStack's SDK reads it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<ErrorCode>,
}

impl ErrorBody {
    /// An answer with no field but the code and the message.
    pub fn new(error: ErrorCode, message: String) -> ErrorBody {
        ErrorBody {
            error,
            message,
            parameter: None,
            line: None,
            column: None,
            retry_after_seconds: None,
            code: None,
        }
    }
}

/// `no_valid_events`: no event of the request was valid, so none was stored. The ingest
/// answer (every event's `errors`), with the error code and message on top.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "error": "no_valid_events", "message": "no event in the request is valid",
    "accepted": 0, "duplicates": 0, "conflicts": 0, "ids": [null],
    "errors": [{"index": 0, "field": "colour", "message": "unknown field"}]
})))]
pub struct NoValidEvents {
    /// `no_valid_events`
    pub error: ErrorCode,
    pub message: String,
    /// On the Segment endpoints only: `error` again, under the name Segment's answers give
    /// it (RudderStack's SDK reads it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<ErrorCode>,
    #[serde(flatten)]
    pub answer: IngestAnswer,
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
        self.render(false)
    }
}

impl ApiError {
    /// The answer with the error code also as `code`, as Segment's answers carry it
    /// (RudderStack's Python SDK reads it, and retries an answer without it for ever).
    pub fn into_segment_response(self) -> Response {
        self.render(true)
    }

    fn render(self, with_code: bool) -> Response {
        let code = self.code();
        let status = code.status();
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
        let body = ErrorBody {
            code: with_code.then_some(code),
            ..ErrorBody::new(code, self.to_string())
        };
        let mut retry_after = RETRY_AFTER_SECONDS;
        let mut rate_limit_burst = None;
        let body = match self {
            ApiError::NoValidEvents(answer) => Json(NoValidEvents {
                error: code,
                message: body.message,
                code: body.code,
                answer,
            })
            .into_response(),
            ApiError::InvalidParameter { parameter, .. } => Json(ErrorBody {
                parameter: Some(parameter),
                ..body
            })
            .into_response(),
            ApiError::MalformedJson { line, column, .. } => Json(ErrorBody {
                line: Some(line),
                column: Some(column),
                ..body
            })
            .into_response(),
            ApiError::RateLimited(limited) => {
                // Whole seconds, rounded up: retrying sooner would be refused again.
                retry_after = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                rate_limit_burst = Some(limited.burst);
                Json(ErrorBody {
                    retry_after_seconds: Some(retry_after),
                    ..body
                })
                .into_response()
            }
            _ => Json(body).into_response(),
        };
        let mut response = (status, body).into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"eventide\""),
            );
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is not read: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(burst) = rate_limit_burst {
            let headers = response.headers_mut();
            headers.insert("ratelimit-limit", HeaderValue::from(burst));
            headers.insert("ratelimit-remaining", HeaderValue::from(0));
            headers.insert("ratelimit-reset", HeaderValue::from(retry_after));
        }
        response
    }
}

/// A rate limiter's refusal is answered as [`ApiError::RateLimited`] (here, so that the
/// limiter's middleware needs nothing of this module).
impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        ApiError::RateLimited(self).into_response()
    }
}
