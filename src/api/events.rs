//! `/events`: ingestion (`POST`) and queries (`GET`, `GET /events/{id}`).

use axum::body::Body;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::body;
use super::cursor::Cursor;
use super::error::ApiError;
use super::openapi::{
    BadParameter, ErrorBody, Event, EventsPage, IngestBadRequest, NewEvents, NotFound, RateLimited,
    TooManyRequests, Unavailable,
};
use super::params::{parse_list_params, EventFilterParams, ListQuery, Paging};
use super::rate_limit::ClientKey;
use super::AppState;
use crate::connections::{PeerAddr, Timeout};
use crate::event::parse::{parse_body, BodyError, TimeBounds, MAX_EVENTS_PER_REQUEST};
use crate::event::render;
use crate::queue::{ids, PreparedBatch, ReadPosition};
use crate::store::{EventQuery, Position};
use crate::telemetry;

/// The answer of `POST /events`.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "accepted": 2, "duplicates": 0, "conflicts": 0,
    "ids": ["order-1001", "019a1b2c-3d4e-7f00-8a9b-0c1d2e3f4a5b", null],
    "errors": [{"index": 2, "field": "colour", "message": "unknown field"},
        {"index": 2, "field": "type", "message": "must not be blank (empty or only whitespace)"}]
})))]
pub struct IngestAnswer {
    /// Events stored by this request.
    accepted: usize,
    /// Valid events not stored again: their `id` was accepted before, with the same content
    /// (a retry). `accepted + duplicates + conflicts` is the number of valid events.
    duplicates: usize,
    /// Valid events not stored because their `id` was accepted before with other content
    /// (type, timestamp if one was sent, service, user id, message or metadata): the first
    /// version stays. Only told apart from `duplicates` while the id is in memory (see
    /// `--dedup-window`); a repeat found by the store is counted in `accepted`.
    conflicts: usize,
    /// Each event's id, in request order (`null` for an invalid event).
    ids: Vec<Option<String>>,
    /// What is wrong with the invalid events, which were not stored: every problem of each,
    /// one entry per problem (entries of one event share its `index`).
    errors: Vec<EventError>,
}

/// One reason why an event of a request is invalid.
#[derive(Serialize, ToSchema)]
pub struct EventError {
    /// Position of the event in the request (from 0; the line, from 0, for NDJSON).
    index: usize,
    /// The field at fault (empty when it is the event as a whole).
    field: String,
    message: String,
}

/// The headers of `POST /events` besides `Content-Type`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IngestHeaders {
    /// `gzip` (or `x-gzip`) for a compressed body; absent or `identity` for none.
    #[param(rename = "Content-Encoding", required = false, inline)]
    pub content_encoding: ContentEncoding,
}

#[derive(ToSchema)]
pub enum ContentEncoding {
    #[serde(rename = "gzip")]
    Gzip,
    #[serde(rename = "x-gzip")]
    XGzip,
    #[serde(rename = "identity")]
    Identity,
}

/// Ingest events
///
/// One event (a JSON object), a JSON array of events, or NDJSON (one event per line), maybe
/// gzip-compressed; at most 10,000 events and 10 MiB (decompressed). Answered `202` once the
/// valid events are durable; invalid ones are not stored, and `errors` lists every problem
/// of each. If no event is valid: `400` `no_valid_events`.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    operation_id = "ingestEvents",
    params(IngestHeaders),
    request_body(
        description = "Events: `application/json` (also `text/json`) for one event or an array; \
            NDJSON (`application/x-ndjson`, also `application/ndjson`, `application/jsonl`, \
            `application/x-jsonlines`), one event per line. A `Content-Type` is required \
            (`415` without one).",
        content(
            (NewEvents = "application/json"),
            (String = "application/x-ndjson",
                example = json!("{\"type\":\"click\"}\n{\"type\":\"view\"}\n")),
        ),
    ),
    responses(
        (status = 202, description = "The valid events are durable", body = IngestAnswer,
            links(("getFirstEvent" = (operation_id = "getEvent",
                parameters(("id" = "$response.body#/ids/0")),
                description = "The first event of the request")))),
        (status = 400, description = "`no_valid_events` (with every event's error), \
            `malformed_json` (with `line` and `column`) or `invalid_body`", body = IngestBadRequest,
            examples(
                ("no_valid_events" = (value = json!({
                    "error": "no_valid_events", "message": "no event in the request is valid",
                    "accepted": 0, "duplicates": 0, "conflicts": 0, "ids": [null],
                    "errors": [{"index": 0, "field": "colour", "message": "unknown field"}]}))),
                ("malformed_json" = (value = json!({
                    "error": "malformed_json", "line": 1, "column": 17,
                    "message": "malformed JSON at line 1, column 17: expected `,` or `}`"}))),
            )),
        (status = 408, description = "`request_timeout`: the body arrived slower than \
            `--min-body-rate`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 10 MiB (decompressed) or \
            10,000 events; refused before reading when `Content-Length` says so", body = ErrorBody, example = json!({"error": "payload_too_large",
                "message": "the body is larger than 10485760 bytes"})),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type`, or a \
            `Content-Type` or `Content-Encoding` not listed", body = ErrorBody, example = json!({
                "error": "unsupported_media_type",
                "message": "content encoding 'br' is not supported: use gzip or none"})),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let format = body::format(&headers)?;
    let body = match body::read(&headers, body, state.http.min_body_rate).await {
        Err(ApiError::BodyTooSlow(message)) => {
            state.http.connections.count_timeout(Timeout::Body);
            return Err(ApiError::BodyTooSlow(message));
        }
        read => read?,
    };
    let now_ms = state.clock.now_ms();
    // Once per request, not per event.
    let oldest_ms = state.retention.cutoff_ms(now_ms).unwrap_or(i64::MIN);
    let bounds = TimeBounds {
        now_ms,
        oldest_ms,
        too_old: &|| state.retention.refusal(oldest_ms),
    };
    let items = parse_body(&body, format, &bounds).map_err(|err| match err {
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
        conflicts: 0,
        ids: Vec::with_capacity(items.len()),
        errors: Vec::new(),
    };
    let mut invalid = 0;
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
            Err(errors) => {
                invalid += 1;
                answer
                    .errors
                    .extend(errors.into_iter().map(|error| EventError {
                        index: item.index,
                        field: error.field,
                        message: error.message,
                    }));
                answer.ids.push(None);
            }
        }
    }
    telemetry::events_rejected("invalid", invalid);
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
    let outcome = match state.ingest.submit(batch).await {
        Ok(outcome) => outcome,
        Err(err) => {
            telemetry::events_rejected(err.code(), submitted);
            return Err(err.into());
        }
    };
    answer.duplicates = outcome.duplicates;
    answer.conflicts = outcome.conflicts;
    answer.accepted = submitted - outcome.duplicates - outcome.conflicts;
    telemetry::events_ingested(answer.accepted, answer.duplicates, answer.conflicts);
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

/// [`Ingest::read_position`](crate::queue::Ingest::read_position) with `--read-wait`.
pub(super) async fn read_position(state: &AppState) -> ReadPosition {
    state.ingest.read_position(state.read_wait).await
}

/// Query events
///
/// Newest first (or `order=asc`), filtered, in pages: follow `next_cursor` (with the same
/// filters and order) for a walk that sees every event that matched when it began exactly
/// once, or ask for `page`/`page_size` for offset paging with a `total`. Every event
/// acknowledged before the request is included, or the answer says `"partial": true`.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    operation_id = "listEvents",
    params(EventFilterParams, ListQuery),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, response = BadParameter),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_list_params(query.as_deref(), &state.cursors)?;
    let mut filter = params.filter;
    let mut out = Vec::with_capacity(16 * 1024);
    let mut partial = false;
    match params.paging {
        Paging::Cursor { limit, cursor } => {
            let snapshot_seq = match &cursor {
                // Everything up to a cursor's snapshot was indexed when the walk began.
                Some(cursor) => cursor.snapshot_seq,
                None => {
                    let read = read_position(&state).await;
                    partial = !read.complete;
                    read.through
                }
            };
            filter.max_seq = snapshot_seq;
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
                Some(cursor) => render::write_str(&mut out, &state.cursors.encode(&cursor)),
                None => out.extend_from_slice(b"null"),
            }
        }
        Paging::Pages { page, page_size } => {
            let read = read_position(&state).await;
            partial = !read.complete;
            filter.max_seq = read.through;
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

/// Get one event
///
/// `404` when no such event is stored; `503` `not_yet_indexed` when it may be among events
/// acknowledged but not yet indexed.
#[utoipa::path(
    get,
    path = "/events/{id}",
    tag = "events",
    operation_id = "getEvent",
    params(("id" = String, Path, description = "The event's `id`")),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|rejection| {
        ApiError::invalid_parameter(
            "id",
            format!(
                "the event id in the path cannot be read: {}",
                rejection.body_text()
            ),
        )
    })?;
    let complete = read_position(&state).await.complete;
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
