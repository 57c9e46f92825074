//! `/events`: ingestion (`POST`) and queries (`GET`, `GET /events/{id}`).

use std::io::Read;

use axum::body::{Body, Bytes};

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::params::{parse_list_params, Cursor, Paging};
use super::rate_limit::ClientKey;
use super::AppState;
use crate::connections::PeerAddr;
use crate::event::parse::{
    parse_body, BodyError, BodyFormat, MAX_BODY_BYTES, MAX_EVENTS_PER_REQUEST,
};
use crate::event::render;
use crate::ingest::{ids, PreparedBatch};
use crate::store::{EventQuery, Position};
use crate::telemetry;

#[derive(Serialize)]
struct IngestAnswer {
    accepted: usize,
    duplicates: usize,
    ids: Vec<Option<String>>,
    errors: Vec<EventError>,
}

#[derive(Serialize)]
struct EventError {
    index: usize,
    field: String,
    message: String,
}

/// `POST /events`: one event, a JSON array of events, or NDJSON; answered `202` once the
/// valid ones are durable.
pub async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let format = body_format(&headers)?;
    let body = read_body(&headers, body).await?;
    let now_ms = state.clock.now_ms();
    let items = parse_body(&body, format, now_ms).map_err(|err| match err {
        BodyError::Malformed {
            line,
            column,
            reason,
        } => ApiError::MalformedJson {
            line,
            column,
            reason,
        },
        BodyError::TooManyEvents { count_at_least } => ApiError::PayloadTooLarge(format!(
            "{count_at_least} or more events in one request; at most {MAX_EVENTS_PER_REQUEST}"
        )),
    })?;

    let mut batch = PreparedBatch::new(now_ms, items.len());
    let mut answer = IngestAnswer {
        accepted: 0,
        duplicates: 0,
        ids: Vec::with_capacity(items.len()),
        errors: Vec::new(),
    };
    for item in items {
        match item.result {
            Ok(event) => {
                let id = match &event.id {
                    Some(id) => id.clone(),
                    None => ids::new_event_id(now_ms),
                };
                batch.push(&event, &id);
                answer.ids.push(Some(id));
            }
            Err(error) => {
                answer.errors.push(EventError {
                    index: item.index,
                    field: error.field,
                    message: error.message,
                });
                answer.ids.push(None);
            }
        }
    }
    telemetry::events_rejected("invalid", answer.errors.len());
    if batch.is_empty() {
        let answer = serde_json::to_value(&answer).expect("serializable");
        return Err(ApiError::NoValidEvents { answer });
    }

    let submitted = batch.len();
    if let Some(limiter) = &state.rate_limits.ingest {
        let cells = u32::try_from(submitted).unwrap_or(u32::MAX);
        if let Err(limited) = limiter.check(&ClientKey::of(&peer), cells) {
            telemetry::events_rejected("rate_limited", submitted);
            return Err(ApiError::RateLimited(limited));
        }
    }
    let duplicates = match state.ingest.submit(batch).await {
        Ok(duplicates) => duplicates,
        Err(err) => {
            telemetry::events_rejected(err.code(), submitted);
            return Err(err.into());
        }
    };
    answer.duplicates = duplicates.len();
    answer.accepted = submitted - duplicates.len();
    telemetry::events_ingested(answer.accepted, answer.duplicates);
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let media_type = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/json" | "text/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type '{other}' is not supported: send application/json (one event or an array) or application/x-ndjson"
        ))),
    }
}

/// Reads the whole body, gunzipping it if asked, refusing more than [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    let raw = axum::body::to_bytes(body, MAX_BODY_BYTES + 1)
        .await
        .map_err(|err| {
            let over_limit = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                too_large()
            } else {
                ApiError::BadBody {
                    message: format!("could not read the request body: {err}"),
                }
            }
        })?;
    if raw.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") | Some("") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut decoded = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut decoded)
                .map_err(|err| ApiError::BadBody {
                    message: format!("the gzip body cannot be decompressed: {err}"),
                })?;
            if decoded.len() > MAX_BODY_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the body decompresses to more than {MAX_BODY_BYTES} bytes"
                )));
            }
            Ok(decoded.into())
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "content encoding '{other}' is not supported: use gzip or none"
        ))),
    }
}

/// Waits (bounded) until every event acknowledged before now is indexed. Returns the seq
/// the answer may include up to, and whether that covers everything acknowledged.
pub(super) async fn read_position(state: &AppState) -> (u64, bool) {
    let progress = state.ingest.progress();
    let committed = progress.committed();
    if progress.wait_indexed(committed, state.read_wait).await {
        (committed, true)
    } else {
        (progress.indexed(), false)
    }
}

/// `GET /events`
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_list_params(query.as_deref())?;
    let mut filter = params.filter;
    let mut out = Vec::with_capacity(16 * 1024);
    let mut partial = false;
    match params.paging {
        Paging::Cursor { limit, cursor } => {
            let snapshot_seq = match &cursor {
                // Everything up to a cursor's snapshot was indexed when the walk began.
                Some(cursor) => cursor.snapshot_seq,
                None => {
                    let (seq, complete) = read_position(&state).await;
                    partial = !complete;
                    seq
                }
            };
            filter.max_seq = Some(snapshot_seq);
            let mut events = state
                .store
                .query(EventQuery {
                    filter: filter.clone(),
                    order: params.order,
                    after: cursor.map(|cursor| cursor.position),
                    limit: limit + 1,
                    offset: 0,
                })
                .await
                .map_err(ApiError::StoreUnavailable)?;
            let next_cursor = if events.len() > limit {
                events.truncate(limit);
                let last = events.last().expect("limit is at least 1");
                let position = Position {
                    timestamp_ms: last.timestamp_ms,
                    seq: last.seq,
                };
                Some(Cursor::new(position, snapshot_seq, &filter, params.order))
            } else {
                None
            };
            out.extend_from_slice(b"{\"events\":");
            render::write_events(&mut out, &events);
            out.extend_from_slice(b",\"next_cursor\":");
            match next_cursor {
                Some(cursor) => render::write_str(&mut out, &cursor.encode()),
                None => out.extend_from_slice(b"null"),
            }
        }
        Paging::Pages { page, page_size } => {
            let (seq, complete) = read_position(&state).await;
            partial = !complete;
            filter.max_seq = Some(seq);
            let offset = (page - 1).saturating_mul(page_size);
            let total = state
                .store
                .count(filter.clone())
                .await
                .map_err(ApiError::StoreUnavailable)?;
            let events = state
                .store
                .query(EventQuery {
                    filter,
                    order: params.order,
                    after: None,
                    limit: page_size,
                    offset,
                })
                .await
                .map_err(ApiError::StoreUnavailable)?;
            let has_more = (offset as u64).saturating_add(events.len() as u64) < total;
            out.extend_from_slice(b"{\"events\":");
            render::write_events(&mut out, &events);
            out.extend_from_slice(
                format!(",\"page\":{page},\"page_size\":{page_size},\"total\":{total},\"has_more\":{has_more}")
                    .as_bytes(),
            );
        }
    }
    if partial {
        out.extend_from_slice(b",\"partial\":true");
    }
    out.push(b'}');
    Ok(json_response(StatusCode::OK, out))
}

/// `GET /events/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, complete) = read_position(&state).await;
    let event = state
        .store
        .get(id.clone())
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or_else(|| {
            if complete {
                ApiError::NotFound(format!("no event with id '{id}'"))
            } else {
                // It may be among the events acknowledged but not yet indexed: not a 404.
                ApiError::NotYetIndexed(format!(
                    "no event with id '{id}' is indexed yet, and indexing is behind: retry shortly"
                ))
            }
        })?;
    let mut out = Vec::with_capacity(1024);
    render::write_event(&mut out, &event);
    Ok(json_response(StatusCode::OK, out))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}
