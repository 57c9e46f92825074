//! CORS for the origins `--cors-origins` lists (none by default): their preflights are
//! answered (`204`, no key needed) and their requests' answers name them in
//! `Access-Control-Allow-Origin`, so that a browser app on such an origin can send events
//! (with an ingest key) and read answers. Any other origin gets no CORS header: the browser
//! keeps the answer from the page.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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

/// What CORS makes of a request before it goes on.
pub enum Before {
    /// Nothing: no `Origin`, or one not listed (its page will not see the answer).
    Pass,
    /// A listed origin's request: [`mark`] its answer.
    Mark(String),
    /// A preflight, answered now (`204` for a listed origin, `403` otherwise).
    Answer(Response),
}

pub fn before(origins: &CorsOrigins, request: &Request) -> Before {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return Before::Pass;
    };
    let allowed = origins.allows(origin);
    if !is_preflight(request.method(), request.headers()) {
        return match allowed {
            true => Before::Mark(origin.to_owned()),
            false => Before::Pass,
        };
    }
    if !allowed {
        return Before::Answer(
            ApiError::CorsOriginNotAllowed(format!(
                "the origin '{origin}' is not allowed: list it with --cors-origins"
            ))
            .into_response(),
        );
    }
    let mut answer = StatusCode::NO_CONTENT.into_response();
    let headers = answer.headers_mut();
    allow(headers, origin);
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
    Before::Answer(answer)
}

/// Marks the answer to a listed origin's request as readable by its page.
pub fn mark(answer: &mut Response, origin: &str) {
    let headers = answer.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
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
