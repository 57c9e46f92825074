//! The key a request carries (`Authorization: Bearer <key>` or `X-API-Key: <key>`), checked
//! against the scope its route needs: `401` with `WWW-Authenticate` when it is missing,
//! unknown, revoked or expired, `403` naming the scope when the key lacks it. Failures are
//! counted for Prometheus and logged at most once a minute per source. The key that passed
//! is left in the request's extensions ([`crate::auth::Principal`]) for rate limits and attribution.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::keys::Scope;
use crate::auth::{Keys, Principal};
use crate::connections::PeerAddr;

/// The key a request carries, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|key| !key.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// What a route group needs, for [`require`].
#[derive(Clone)]
pub struct Guard {
    pub keys: Arc<Keys>,
    pub scope: Scope,
}

/// Middleware: lets the request through only with a key holding the guard's scope (or none
/// while no key is required).
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let presented = presented_key(&parts.headers);
    match check(&guard.keys, presented, guard.scope, &parts) {
        Ok(principal) => {
            if let Some(principal) = principal {
                parts.extensions.insert(principal);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Checks `presented` for `scope`: the key that passed (`None` while no key is required and
/// none was given), or the refusal, counted and logged at most once a minute per source.
pub fn check(
    keys: &Keys,
    presented: Option<&str>,
    scope: Scope,
    parts: &Parts,
) -> Result<Option<Principal>, ApiError> {
    keys.authenticate(presented, scope).map_err(|refusal| {
        crate::telemetry::auth_failed(refusal.reason());
        let source = PeerAddr::ip_of(&parts.extensions);
        if let Some(source) = source.filter(|source| keys.log_failure_now(*source)) {
            tracing::warn!(%source, reason = refusal.reason(), path = %parts.uri.path(), "authentication failed (logged once a minute per source)");
        }
        ApiError::Auth(refusal)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_come_as_bearer_tokens_or_in_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static(" evk_abc "));
        assert_eq!(presented_key(&headers), Some("evk_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer evk_def"),
        );
        assert_eq!(
            presented_key(&headers),
            Some("evk_def"),
            "Authorization wins"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        assert_eq!(presented_key(&headers), None, "not a bearer key");
    }
}
