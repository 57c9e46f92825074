//! PostHog's capture API: `POST /capture`, `/batch`, `/e` and `/i/v0/e` (each also with a
//! trailing slash, as posthog-python posts to `/batch/`), answered `200 {"status": 1}`
//! once the events are durable.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::super::error::ApiError;
use super::super::refusals::{IngestBadRequest, SdkRefusals};
use super::super::schema::IngestAnswer;
use super::super::state::AppState;
use crate::event::sdk::posthog;

/// Where PostHog's libraries send events: each path also with a trailing slash.
pub const PATHS: [&str; 4] = ["/capture", "/batch", "/e", "/i/v0/e"];

/// The answer PostHog's SDKs expect, with what Eventide made of the events.
#[derive(Serialize, ToSchema)]
pub struct PostHogAnswer {
    /// Always 1: the valid events are durable.
    pub status: u8,
    #[serde(flatten)]
    pub ingest: IngestAnswer,
}

/// PostHog: capture
///
/// Events as PostHog's libraries send them: one event, an array, or `{"batch": [...]}`,
/// with the project key (an Eventide key with the `ingest` scope) as `api_key` or `token`
/// (at the top, in the event, or in its `properties`), or as a bearer key. `event` →
/// `type`, `distinct_id` → `user_id`, `uuid` → `id` (deduplicated), `properties` →
/// `metadata` as sent; `sent_at` corrects the timestamps for the client's clock skew. JSON,
/// gzip (`Content-Encoding`, or `?compression=gzip-js`), and, only while keys are required,
/// the browser library's `text/plain` and form-encoded (`data=`) bodies, plain or base64.
/// `/batch`, `/e` and `/i/v0/e`, with or without a trailing slash, are the same.
#[utoipa::path(
    post, path = "/capture", tag = "sdks", operation_id = "posthogCapture",
    request_body(content = Object, content_type = "application/json",
        example = json!({"api_key": "evk_...", "batch": [{"event": "$pageview",
            "distinct_id": "d-1", "uuid": "0190a000-0000-7000-8000-000000000001",
            "properties": {"$current_url": "https://example.com"},
            "timestamp": "2026-01-01T00:00:00Z"}], "sent_at": "2026-01-01T00:00:01Z"})),
    responses(
        (status = 200, description = "The valid events are durable", body = PostHogAnswer),
        (status = 400, description = "The body is not JSON (or base64 JSON), or no event is \
            valid (`no_valid_events`)", body = IngestBadRequest),
        SdkRefusals,
    )
)]
pub async fn capture(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let body = super::JsonBody::read(&state, &mut parts, body).await?;
    let request = body.parse(&state, &parts, |text| posthog::request(text))?;
    let key_name = body.key_name(&state, &mut parts, request.key.as_deref())?;
    let ingest = super::submit_calls(&state, &parts, &request.events, |raw| {
        posthog::event(raw, request.sent_at, key_name.as_deref())
    })
    .await?;
    Ok(Json(PostHogAnswer { status: 1, ingest }).into_response())
}
