//! `/keys` (admin): creating an API key (its secret in that answer only), listing keys (never
//! a secret) and revoking one, which takes effect from the next request on.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::params::PathId;
use super::refusals::ReadRefusals;
use super::state::AppState;
use crate::auth::keys::{CreatedKey, KeyInfo, Scope, Scopes};
use crate::config::parse_duration;

/// The most a key's name may be.
const MAX_NAME_CHARS: usize = 100;
/// The most a `POST /keys` body may be.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What `POST /keys` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "checkout-service", "scopes": ["ingest"], "expires": "90d"}))]
pub struct CreateKey {
    /// What the key is for (1 to 100 characters), e.g. the producer it is handed to.
    pub name: String,
    /// `ingest` (send events), `read` (read events, metrics, streams) or `admin` (keys, dead
    /// letters, alert rules; implies both).
    pub scopes: Vec<Scope>,
    /// How long it is valid (`90d`, `12h`...); forever when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Every key, oldest first.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Create a key
///
/// Admin. The answer holds the key's secret; it is never shown again.
#[utoipa::path(
    post, path = "/keys", tag = "keys", operation_id = "createKey",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedKey),
        ReadRefusals,
    )
)]
pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        })?;
    let wanted = parse_create(&body)?;
    let now_ms = state.clock.now_ms();
    let expires_ms = match &wanted.expires {
        None => None,
        Some(text) => match parse_duration(text) {
            Ok(duration) if !duration.is_zero() => {
                Some(now_ms.saturating_add(duration.as_millis() as i64))
            }
            _ => {
                return Err(ApiError::BadBody {
                    message: format!("expires: '{text}' is not a duration like 90d, 12h or 30m"),
                })
            }
        },
    };
    let made = state
        .keys
        .create(&wanted.name, Scopes::new(wanted.scopes), expires_ms)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok((StatusCode::CREATED, Json(CreatedKey::from(&made))).into_response())
}

fn parse_create(body: &Bytes) -> Result<CreateKey, ApiError> {
    let wanted: CreateKey = serde_json::from_slice(body).map_err(|err| ApiError::BadBody {
        message: format!("the key to create: {err}"),
    })?;
    let name = wanted.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::BadBody {
            message: format!(
                "name: must be 1 to {MAX_NAME_CHARS} characters, without control characters"
            ),
        });
    }
    if wanted.scopes.is_empty() {
        return Err(ApiError::BadBody {
            message: "scopes: give at least one of ingest, read, admin".to_owned(),
        });
    }
    Ok(CreateKey {
        name: name.to_owned(),
        ..wanted
    })
}

/// List keys
///
/// Admin. Every key, revoked and expired ones included; never a secret.
#[utoipa::path(
    get, path = "/keys", tag = "keys", operation_id = "listKeys",
    responses((status = 200, description = "The keys, oldest first", body = KeyList), ReadRefusals)
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let records = state
        .keys
        .list()
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(Json(KeyList {
        keys: records.iter().map(KeyInfo::from).collect(),
    }))
}

/// Revoke a key
///
/// Admin. Refused from the next request on (on every node of a cluster within a second).
#[utoipa::path(
    delete, path = "/keys/{id}", tag = "keys", operation_id = "revokeKey",
    params(("id" = String, Path, description = "The key's `id` (not its secret)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, response = super::refusals::NotFound),
        ReadRefusals,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let revoked = state
        .keys
        .revoke(&id)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if !revoked {
        return Err(ApiError::NotFound(format!(
            "no key '{id}' that is not revoked already"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
