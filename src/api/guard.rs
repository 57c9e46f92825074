//! What every request and answer passes through at the edge: the `Host` check that keeps
//! DNS rebinding out while no authentication is configured, the headers every answer carries
//! (`nosniff`, no caching of data), and a last resort turning any error answer that is not
//! JSON (an extractor's plain-text rejection) into the API's JSON error shape.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use crate::auth::Keys;
use crate::error_code::ErrorCode;

/// Which `Host`s requests may name: a page on another site that points its own DNS name at
/// this machine (DNS rebinding) would otherwise be same-origin with the API and read it.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listening: SocketAddr,
    /// Lower-case names (or `name:port`) given with `--allowed-hosts`.
    extra: Vec<String>,
}

impl AllowedHosts {
    pub fn new(listening: SocketAddr, extra: &[String]) -> AllowedHosts {
        AllowedHosts {
            listening,
            extra: extra
                .iter()
                .map(|host| host.trim().to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (a `Host` header value) may be served: `localhost` and its
    /// subdomains (browsers resolve those to loopback themselves), an IP address that is
    /// loopback, the listening one, or any of the machine's when listening on all of them
    /// (an address is no DNS name, so cannot be rebound), or a name given with
    /// `--allowed-hosts` (with or without its port).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = host_name(&host);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return ip.is_loopback()
                || ip == self.listening.ip()
                || self.listening.ip().is_unspecified();
        }
        self.extra
            .iter()
            .any(|allowed| *allowed == host || *allowed == name)
    }
}

/// The name part of `host[:port]` (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(name, _)| &host[..=name.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// While no key is required, the refusal (`403`) of a request naming a `Host` that is not
/// allowed. With keys, a rebound page would have no key to send.
pub fn host_refusal(hosts: &AllowedHosts, keys: &Keys, request: &Request) -> Option<Response> {
    if keys.required() {
        return None;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("?"));
    // A request without Host (HTTP/1.0) cannot come from a browser, which always sends one.
    let host = host.filter(|host| !hosts.allows(host))?;
    Some(
        ApiError::HostNotAllowed(format!(
            "the Host '{host}' is not served: without authentication only this server's \
             address, localhost and loopback addresses are; add it with --allowed-hosts"
        ))
        .into_response(),
    )
}

/// The headers every answer carries, and JSON for every error.
pub async fn finish_answer(response: Response) -> Response {
    let mut response = if response.status().as_u16() >= 400 && !is_json(response.headers()) {
        into_json_error(response).await
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Answers carry data that changes with every event: no cache, shared or not, keeps them.
    // Files that may be cached (the dashboard's) say so themselves.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// An error answer some extractor or layer wrote as text, in the API's error shape.
async fn into_json_error(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    } else {
        text
    };
    let code = match parts.status {
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        status if status.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::RequestFailed,
    };
    let body = serde_json::to_string(&ErrorBody::new(code, message)).expect("serializable");
    let mut response = Response::from_parts(parts, Body::from(body));
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_and_named_hosts_are_allowed() {
        let hosts = AllowedHosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["events.example.com".into(), "proxy:8443".into()],
        );
        for allowed in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:9",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:8080",
            "[::1]:8080",
            "events.example.com",
            "events.example.com:443",
            "proxy:8443",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "10.0.0.5:8080",
            "proxy:9999",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        let everywhere = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(everywhere.allows("10.0.0.5:8080"));
        assert!(everywhere.allows("[fe80::1]:8080"));
        assert!(!everywhere.allows("attacker.example:8080"));
    }
}
