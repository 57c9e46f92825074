//! Segment's HTTP Tracking API, which RudderStack's SDKs speak too: `POST /v1/{call}` for
//! one call and `POST /v1/batch` (or `/v1/import`) for many, answered `200
//! {"success": true}` once the events are durable.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use utoipa::{IntoParams, ToSchema};

use super::super::error::{ApiError, ErrorBody};
use super::super::refusals::{IngestBadRequest, SdkRefusals};
use super::super::schema::IngestAnswer;
use super::super::state::AppState;
use crate::event::sdk::segment;

/// The answer Segment's and RudderStack's SDKs expect, with what Eventide made of the calls.
#[derive(Serialize, ToSchema)]
pub struct SegmentAnswer {
    /// Always true: the valid calls are durable.
    pub success: bool,
    #[serde(flatten)]
    pub ingest: IngestAnswer,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CallPath {
    /// `track`, `identify`, `page`, `screen`, `group` or `alias`.
    #[param(inline)]
    pub call: Call,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

/// Segment: one call
///
/// One call of Segment's HTTP Tracking API, as its SDKs and RudderStack's send it: the write
/// key (an Eventide key with the `ingest` scope) as HTTP Basic's user name or `writeKey`.
/// `track` → `type` = the `event` name, other calls → `type` = the call; `userId`, else
/// `anonymousId` → `user_id`; `messageId` → `id` (deduplicated); `properties`, `traits`,
/// `context`, `integrations` and every other member → `metadata` as sent;
/// `context.library.name`, else the key's name → `service`. With `sentAt`, the timestamp is
/// corrected for the client's clock skew. At most 32 KB. Error answers also carry the `error`
/// code as `code`, as Segment's do.
#[utoipa::path(
    post, path = "/v1/{call}", tag = "sdks", operation_id = "segmentCall",
    params(CallPath),
    request_body(content = Object, content_type = "application/json",
        example = json!({"userId": "u-1", "event": "Signed Up", "properties": {"plan": "pro"},
            "messageId": "m-1", "timestamp": "2026-01-01T00:00:00Z"})),
    responses(
        (status = 200, description = "The call is durable", body = SegmentAnswer),
        (status = 400, description = "The body is not JSON, is over 32 KB, or the call is \
            invalid (`no_valid_events`)", body = IngestBadRequest),
        (status = 404, description = "`not_found`: not a call Segment has", body = ErrorBody),
        SdkRefusals,
    )
)]
pub async fn call(
    State(state): State<AppState>,
    Path(call): Path<String>,
    request: Request,
) -> Response {
    answer(ingest(state, request, Some(call)).await)
}

/// Segment: a batch
///
/// Many calls of Segment's HTTP Tracking API, `{"batch": [...], "sentAt": ...}`, each with
/// its `type`; at most 500 KB and 2,500 calls, each at most 32 KB. Mapped as for
/// `/v1/{call}`. `/v1/import` is the same.
#[utoipa::path(
    post, path = "/v1/batch", tag = "sdks", operation_id = "segmentBatch",
    request_body(content = Object, content_type = "application/json",
        example = json!({"batch": [{"type": "track", "userId": "u-1", "event": "Signed Up",
            "messageId": "m-1"}], "sentAt": "2026-01-01T00:00:01Z"})),
    responses(
        (status = 200, description = "The valid calls are durable", body = SegmentAnswer),
        (status = 400, description = "The body is not JSON, is over 500 KB or 2,500 calls, \
            or no call is valid (`no_valid_events`)", body = IngestBadRequest),
        SdkRefusals,
    )
)]
pub async fn batch(State(state): State<AppState>, request: Request) -> Response {
    answer(ingest(state, request, None).await)
}

/// The answer; an error's with `code` beside `error`, as Segment's.
fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_segment_response)
}

/// `call`: the call the endpoint stands for (`None` for a batch).
async fn ingest(
    state: AppState,
    request: Request,
    call: Option<String>,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let body = super::JsonBody::read(&state, &mut parts, body).await?;
    let request = body.parse(&state, &parts, |text| {
        segment::request(text, call.is_some())
    })?;
    let key_name = body.key_name(&state, &mut parts, request.write_key.as_deref())?;
    // Only now: without the right key, no answer tells what the server has.
    let call = call
        .map(|call| {
            segment::CALLS
                .iter()
                .copied()
                .find(|known| *known == call)
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "'{call}' is not a call of Segment's: they are {}",
                        segment::CALLS.join(", ")
                    ))
                })
        })
        .transpose()?;
    let ingest = super::submit_calls(&state, &parts, &request.calls, |raw| {
        segment::event(raw, call, request.sent_at, key_name.as_deref())
    })
    .await?;
    Ok(Json(SegmentAnswer {
        success: true,
        ingest,
    })
    .into_response())
}
