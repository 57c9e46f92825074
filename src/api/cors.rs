//! CORS for the origins `--cors-origins` lists (none by default): their preflights are
//! answered (`204`, no key needed) and their requests' answers name them in
//! `Access-Control-Allow-Origin`, so that a browser app on such an origin can send events
//! (with an ingest key) and read answers. Any other origin gets no CORS header: the browser
//! keeps the answer from the page.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Methods a listed origin may use.
const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
/// Request headers a listed origin may send.
const ALLOWED_HEADERS: &str = "Authorization, X-API-Key, Content-Type, Content-Encoding, \
    Last-Event-ID, X-Request-Id, Sent-At";
/// Answer headers a page may read besides the simple ones.
const EXPOSED_HEADERS: &str = "Retry-After, X-Request-Id, RateLimit-Limit, RateLimit-Remaining, \
    RateLimit-Reset, WWW-Authenticate";
/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECONDS: &str = "600";

/// The origins allowed, exactly as browsers send them (`scheme://host[:port]`).
#[derive(Debug, Clone)]
pub struct CorsOrigins(Vec<String>);

impl CorsOrigins {
    pub fn new(origins: &[String]) -> CorsOrigins {
        CorsOrigins(
            origins
                .iter()
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|origin| !origin.is_empty())
                .collect(),
        )
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.0.contains(&origin)
    }
}

/// Middleware: answers preflights of listed origins, and marks the answers to them.
pub async fn cors(
    State(origins): State<Arc<CorsOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let allowed = origins.allows(&origin);
    if is_preflight(request.method(), request.headers()) {
        if !allowed {
            return ApiError::CorsOriginNotAllowed(format!(
                "the origin '{origin}' is not allowed: list it with --cors-origins"
            ))
            .into_response();
        }
        let mut answer = StatusCode::NO_CONTENT.into_response();
        let headers = answer.headers_mut();
        allow(headers, &origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECONDS),
        );
        return answer;
    }
    let mut answer = next.run(request).await;
    if allowed {
        let headers = answer.headers_mut();
        allow(headers, &origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    answer
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    // Caches must not serve one origin's answer to another.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_ignoring_case_and_a_trailing_slash() {
        let origins = CorsOrigins::new(&["https://App.example.com/".into(), " ".into()]);
        assert!(origins.allows("https://app.example.com"));
        assert!(!origins.allows("http://app.example.com"));
        assert!(!origins.allows("https://app.example.com:8443"));
        assert!(!origins.allows("https://evil.example.com"));
        assert!(!origins.allows("null"));
    }
}
