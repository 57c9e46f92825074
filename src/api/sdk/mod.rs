//! The endpoints existing SDKs send to: Segment's and RudderStack's (`/v1/...`), PostHog's
//! (`/capture`, `/batch`, `/e`, `/i/v0/e`) and OpenTelemetry's logs (`/v1/logs`). Each
//! authenticates itself (SDKs put their key in the body, or HTTP Basic), reads its shape
//! into Eventide events ([`crate::event::sdk`]) and hands them to [`super::submit`]: the same
//! validation, deduplication, durability and backpressure as `POST /events`.

pub mod otlp;
pub mod posthog;
pub mod segment;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;

use super::auth;
use super::body;
use super::error::ApiError;
use super::schema::IngestAnswer;
use super::state::AppState;
use super::submit;
use crate::auth::keys::Scope;
use crate::event::parse::{Assembled, FieldError, MAX_SDK_METADATA_BYTES};
use crate::event::sdk;

/// How an SDK endpoint reads its body: what its `Content-Type` may be (checked before the
/// body is read) and what the bytes, gunzipped already, become.
pub trait BodyKind: Sized {
    type Content;
    /// The kind of the request's body, from its headers, or why it is refused.
    fn of(state: &AppState, parts: &Parts) -> Result<Self, ApiError>;
    fn decode(&self, parts: &Parts, raw: Bytes) -> Result<Self::Content, ApiError>;
}

/// How a JSON body came: as JSON, or as a browser sends it without a CORS preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Json,
    /// `text/plain`: JSON or base64 text.
    Text,
    /// `application/x-www-form-urlencoded`: a `data` field of JSON or base64.
    Form,
}

impl BodyKind for Transport {
    /// The body as JSON text.
    type Content = String;

    /// The browser transports are refused while no key is required: a page on any site
    /// could send them without a preflight, and `POST /events` refuses them for that reason
    /// too.
    fn of(state: &AppState, parts: &Parts) -> Result<Transport, ApiError> {
        let essence = body::media_type(&parts.headers).unwrap_or_default();
        let browser = match essence.as_str() {
            "application/json" | "text/json" => return Ok(Transport::Json),
            "text/plain" => Transport::Text,
            "application/x-www-form-urlencoded" => Transport::Form,
            "" => {
                return Err(ApiError::UnsupportedMediaType(
                    "a Content-Type is required: application/json".to_owned(),
                ))
            }
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "content type '{other}' is not supported: use application/json"
                )))
            }
        };
        if !state.keys.required() {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type '{essence}' is accepted only when keys are required (a page on \
                 any site can send it without asking): use application/json"
            )));
        }
        Ok(browser)
    }

    /// Gunzipped also when `compression` asks for `gzip`, as PostHog's browser library does;
    /// taken from a form's `data` field, and base64-decoded when it is not JSON already.
    fn decode(&self, parts: &Parts, raw: Bytes) -> Result<String, ApiError> {
        let compression = query_value(parts, "compression");
        let raw = match compression.as_deref() {
            Some("gzip" | "gzip-js") => body::decode(raw, true)?,
            _ => raw,
        };
        let raw = match self {
            Transport::Form => form_data(&raw)?,
            Transport::Json | Transport::Text => raw,
        };
        // Without a copy when the body is the only holder of its bytes, the usual case.
        let text = String::from_utf8(Vec::from(raw)).map_err(|_| ApiError::BadBody {
            message: "the body is not UTF-8".to_owned(),
        })?;
        let trimmed = text.trim_start();
        if *self == Transport::Json || trimmed.starts_with('{') || trimmed.starts_with('[') {
            return Ok(text);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| ApiError::BadBody {
                message: "the body is neither JSON nor base64".to_owned(),
            })?;
        String::from_utf8(decoded).map_err(|_| ApiError::BadBody {
            message: "the base64 body is not UTF-8".to_owned(),
        })
    }
}

/// A form's `data` field.
fn form_data(raw: &Bytes) -> Result<Bytes, ApiError> {
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_bytes(raw).map_err(|err| ApiError::BadBody {
            message: format!("the form body cannot be read: {err}"),
        })?;
    fields
        .into_iter()
        .find(|(name, _)| name == "data")
        .map(|(_, data)| Bytes::from(data))
        .ok_or_else(|| ApiError::BadBody {
            message: "data is required: the form's field with the events".to_owned(),
        })
}

fn query_value(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// An SDK request's body, read as its [`BodyKind`] says, the request's headers already
/// checked for a key.
pub struct SdkBody<K: BodyKind> {
    pub kind: K,
    pub content: K::Content,
    /// `Some` (with the key's name) when the headers carried a key, which passed.
    header_key: Option<Option<String>>,
}

/// The body of the SDKs that send JSON.
pub type JsonBody = SdkBody<Transport>;

impl<K: BodyKind> SdkBody<K> {
    /// Checks the key the request carries in its headers (`Authorization: Bearer`,
    /// `X-API-Key`, or HTTP Basic's user name, as Segment's SDKs send the write key), then
    /// reads the body. A request without a key there whose body cannot be read is told
    /// that a key is needed while keys are required.
    pub async fn read(
        state: &AppState,
        parts: &mut Parts,
        body: axum::body::Body,
    ) -> Result<SdkBody<K>, ApiError> {
        let presented = auth::presented_key(&parts.headers)
            .map(str::to_owned)
            .or_else(|| basic_user(&parts.headers));
        let header_key = match presented {
            Some(key) => Some(authenticate(state, parts, Some(&key))?),
            None => None,
        };
        let read = async {
            let kind = K::of(state, parts)?;
            let raw = body::read(&parts.headers, body, &state.http).await?;
            let content = kind.decode(parts, raw)?;
            Ok((kind, content))
        };
        match read.await {
            Ok((kind, content)) => Ok(SdkBody {
                kind,
                content,
                header_key,
            }),
            Err(err) => Err(unreadable(header_key.is_some(), state, parts, err)),
        }
    }

    /// Reads the content with `parse`, refused as `invalid_body` (or as without a key).
    pub fn parse<'a, R>(
        &'a self,
        state: &AppState,
        parts: &Parts,
        parse: impl FnOnce(&'a K::Content) -> Result<R, String>,
    ) -> Result<R, ApiError> {
        parse(&self.content).map_err(|message| {
            unreadable(
                self.header_key.is_some(),
                state,
                parts,
                ApiError::BadBody { message },
            )
        })
    }

    /// The name of the request's key (the service of last resort): the one in its headers,
    /// else `in_body`, checked now.
    pub fn key_name(
        &self,
        state: &AppState,
        parts: &mut Parts,
        in_body: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        match &self.header_key {
            Some(name) => Ok(name.clone()),
            None => authenticate(state, parts, in_body),
        }
    }
}

/// `err`, unless the request is refused for want of a key: a body that cannot be read
/// tells nothing to whoever may not send one.
fn unreadable(with_key: bool, state: &AppState, parts: &Parts, err: ApiError) -> ApiError {
    if with_key {
        return err;
    }
    match auth::check(&state.keys, None, Scope::Ingest, parts) {
        Err(missing) => missing,
        Ok(_) => err,
    }
}

/// Checks `presented` for the ingest scope, leaving the key that passed in the request's
/// extensions for the rate limit; returns its name.
fn authenticate(
    state: &AppState,
    parts: &mut Parts,
    presented: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let principal = auth::check(&state.keys, presented, Scope::Ingest, parts)?;
    let name = principal.as_ref().map(|principal| principal.name.clone());
    if let Some(principal) = principal {
        parts.extensions.insert(principal);
    }
    Ok(name)
}

/// HTTP Basic's user name, when not empty.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_owned())
}

/// Maps each of an SDK request's calls onto an Eventide event with `map`, validated
/// against the SDK endpoints' bounds, and submits the valid ones.
pub async fn submit_calls<'a, T>(
    state: &AppState,
    parts: &Parts,
    calls: &'a [T],
    map: impl Fn(&'a T) -> Result<Assembled<'a>, FieldError>,
) -> Result<IngestAnswer, ApiError> {
    let now_ms = state.clock.now_ms();
    let items = submit::with_bounds(state, now_ms, None, MAX_SDK_METADATA_BYTES, |bounds| {
        calls
            .iter()
            .enumerate()
            .map(|(index, call)| sdk::item(index, map(call), bounds))
            .collect()
    });
    submit::submit(state, &parts.extensions, now_ms, items).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_write_key_is_basic_auths_user_name() {
        let mut headers = HeaderMap::new();
        // base64("evk_abc:")
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic ZXZrX2FiYzo="),
        );
        assert_eq!(basic_user(&headers).as_deref(), Some("evk_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Og=="),
        );
        assert_eq!(basic_user(&headers), None, "an empty user name is no key");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_user(&headers), None);
    }
}
