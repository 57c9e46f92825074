//! Every `error` code an answer of the HTTP service can carry, with the status it comes with:
//! one table for the API's errors ([`crate::api::error`]), the refusals the connection layer
//! writes by itself ([`crate::connections`]) and the list of codes in the API description,
//! which therefore cannot miss one.

use axum::http::StatusCode;
use serde::{Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Declares [`ErrorCode`] from one table: each variant with its code and its status.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, $status:ident;)+) => {
        /// The machine-readable `error` of an error answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The status an answer with this code has.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

error_codes! {
    /// A query parameter (or header) is invalid; the answer names it in `parameter`.
    InvalidParameter = "invalid_parameter", BAD_REQUEST;
    /// The body is not JSON; the answer gives the `line` and `column`.
    MalformedJson = "malformed_json", BAD_REQUEST;
    /// The body cannot be read (e.g. gzip that does not decompress).
    InvalidBody = "invalid_body", BAD_REQUEST;
    /// No event of the request is valid; the answer is the ingest answer with this code.
    NoValidEvents = "no_valid_events", BAD_REQUEST;
    /// Not HTTP the server can read (the request line, a header or the framing).
    BadRequest = "bad_request", BAD_REQUEST;
    /// Refused by a layer of the server for another reason, with its own status.
    RequestFailed = "request_failed", BAD_REQUEST;
    /// No key, or a key that is unknown, revoked or expired.
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// A valid key without the scope the route needs (named in the message).
    Forbidden = "forbidden", FORBIDDEN;
    /// The `Host` is not served (`--allowed-hosts`).
    HostNotAllowed = "host_not_allowed", FORBIDDEN;
    /// A CORS preflight from an origin `--cors-origins` does not list.
    CorsOriginNotAllowed = "cors_origin_not_allowed", FORBIDDEN;
    NotFound = "not_found", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// An alert rule of the alerts file, or a built-in one: not changed over HTTP.
    RuleReadOnly = "rule_read_only", CONFLICT;
    /// Something of that name exists already (an alert rule).
    AlreadyExists = "already_exists", CONFLICT;
    /// The request head or body arrived too slowly.
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    UriTooLong = "uri_too_long", URI_TOO_LONG;
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    HeadersTooLarge = "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    /// Too many events wait to be committed.
    IngestQueueFull = "ingest_queue_full", TOO_MANY_REQUESTS;
    /// The indexer is too far behind the log.
    IndexBacklogFull = "index_backlog_full", TOO_MANY_REQUESTS;
    /// A cluster's workers are too far behind the queue.
    QueueBacklogFull = "queue_backlog_full", TOO_MANY_REQUESTS;
    /// The client is over its rate limit.
    RateLimited = "rate_limited", TOO_MANY_REQUESTS;
    InternalError = "internal_error", INTERNAL_SERVER_ERROR;
    LogUnavailable = "log_unavailable", SERVICE_UNAVAILABLE;
    QueueUnavailable = "queue_unavailable", SERVICE_UNAVAILABLE;
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE;
    /// An event may be among those acknowledged but not yet indexed.
    NotYetIndexed = "not_yet_indexed", SERVICE_UNAVAILABLE;
    ShuttingDown = "shutting_down", SERVICE_UNAVAILABLE;
    /// `--max-subscribers` streams are open.
    TooManySubscribers = "too_many_subscribers", SERVICE_UNAVAILABLE;
    /// `--max-connections` connections are open.
    TooManyConnections = "too_many_connections", SERVICE_UNAVAILABLE;
    /// `--max-concurrent-requests` requests are in progress.
    Overloaded = "overloaded", SERVICE_UNAVAILABLE;
    /// `/health/ready`: the service cannot take events now.
    NotReady = "not_ready", SERVICE_UNAVAILABLE;
    HttpVersionNotSupported = "http_version_not_supported", HTTP_VERSION_NOT_SUPPORTED;
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialSchema for ErrorCode {
    /// A string, one of the table's codes, described by status.
    fn schema() -> RefOr<Schema> {
        let mut statuses: Vec<StatusCode> = ErrorCode::ALL.iter().map(|c| c.status()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        let by_status: Vec<String> = statuses
            .iter()
            .map(|&status| {
                let codes: Vec<String> = ErrorCode::ALL
                    .iter()
                    .filter(|code| code.status() == status)
                    .map(|code| format!("`{}`", code.as_str()))
                    .collect();
                format!("{} ({})", codes.join(", "), status.as_u16())
            })
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .description(Some(format!(
                "What went wrong, for programs: {}.",
                by_status.join("; ")
            )))
            .into()
    }
}

impl ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text}"
            );
            assert!(code.status().as_u16() >= 400, "{text}");
            assert_eq!(serde_json::to_value(code).unwrap(), text);
        }
    }
}
