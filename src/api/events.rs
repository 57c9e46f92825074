//! `/events`: ingestion (`POST`) and queries (`GET`, `GET /events/{id}`).

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::body;
use super::cursor::Cursor;
use super::error::{ApiError, ErrorBody};
use super::params::{parse_list_params, EventFilterParams, ListQuery, Paging, PathId};
use super::refusals::{IngestBadRequest, NotFound, ReadRefusals, TooManyRequests, Unavailable};
use super::schema::{IngestAnswer, NewEvents};
use super::snapshot::Snapshot;
use super::state::AppState;
use super::submit;
use crate::event::parse::{parse_body, MAX_METADATA_BYTES};
use crate::event::render::{self, EventView};
use crate::event::StoredEvent;
use crate::store::{EventQuery, Position};

/// The headers of `POST /events` besides `Content-Type`, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IngestHeaders {
    /// `gzip` (or `x-gzip`) for a compressed body; absent or `identity` for none.
    #[param(rename = "Content-Encoding", required = false, inline)]
    pub content_encoding: ContentEncoding,
    /// When the client sent the request by its own clock (RFC 3339, or epoch seconds or
    /// milliseconds): each event's `timestamp` is then corrected for the client's clock
    /// skew, to the time of receipt minus (`Sent-At` minus `timestamp`), and the timestamp
    /// as sent kept in its metadata as `original_timestamp`. An event's own `sent_at` wins.
    #[param(rename = "Sent-At", required = false)]
    pub sent_at: Option<String>,
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
    post, path = "/events", tag = "events", operation_id = "ingestEvents",
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
pub async fn ingest(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    // The request taken apart rather than its headers and extensions extracted, which would
    // clone both on every POST.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let format = body::format(headers)?;
    let sent_at_ms = submit::sent_at_header(headers)?;
    let body = body::read(headers, body, &state.http).await?;
    let now_ms = state.clock.now_ms();
    let items = submit::with_bounds(&state, now_ms, sent_at_ms, MAX_METADATA_BYTES, |bounds| {
        parse_body(&body, format, bounds)
    })
    .map_err(submit::body_error)?;
    let answer = submit::submit(&state, &parts.extensions, now_ms, items).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}

/// Query events
///
/// Newest first (or `order=asc`), filtered, in pages: follow `next_cursor` (with the same
/// filters and order) for a walk that sees every event that matched when it began exactly
/// once, or ask for `page`/`page_size` for offset paging with a `total`. Every event
/// acknowledged before the request is included, or the answer says `"partial": true`.
#[utoipa::path(
    get, path = "/events", tag = "events", operation_id = "listEvents",
    params(EventFilterParams, ListQuery),
    responses((status = 200, description = "A page of events", body = EventsPage), ReadRefusals)
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = parse_list_params(query.as_deref(), &state.cursors)?;
    let mut filter = params.filter;
    let page = match params.paging {
        Paging::Cursor { limit, cursor } => {
            let (snapshot_seq, partial) = match &cursor {
                // Everything up to a cursor's snapshot was indexed when the walk began.
                Some(cursor) => (cursor.snapshot_seq, false),
                None => {
                    let snapshot = Snapshot::take(&state).await;
                    (snapshot.through, snapshot.partial)
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
                let cursor = Cursor::new(position, snapshot_seq, &filter, params.order);
                Some(state.cursors.encode(&cursor))
            } else {
                None
            };
            EventsPage::Cursor(CursorPage {
                events,
                next_cursor,
                partial,
            })
        }
        Paging::Pages { page, page_size } => {
            let snapshot = Snapshot::take(&state).await;
            filter.max_seq = snapshot.through;
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
            EventsPage::Offset(OffsetPage {
                events,
                page,
                page_size,
                total,
                has_more,
                partial: snapshot.partial,
            })
        }
    };
    Ok(json_response(page.to_json()))
}

// Serialized by hand (`to_json`) as serde would, which tests check.
/// The answer of `GET /events`: a cursor page, or an offset page when `page` or
/// `page_size` is given.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsPage {
    Cursor(CursorPage),
    Offset(OffsetPage),
}

/// A page of a cursor walk (without `page`/`page_size`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorPage {
    #[serde(serialize_with = "render::serialize_events")]
    #[schema(value_type = Vec<EventView>)]
    pub events: Vec<StoredEvent>,
    /// Pass it as `cursor`, with the same filters and order, for the next page; `null` at
    /// the end. The walk is pinned to the events that matched when it began.
    #[schema(required = true, pattern = "^[0-9a-f]{96}$")]
    pub next_cursor: Option<String>,
    /// Present and `true` when the indexer had not caught up within `--read-wait`: the page
    /// may miss events acknowledged before the request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// A page of offset paging (with `page` and/or `page_size`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OffsetPage {
    #[serde(serialize_with = "render::serialize_events")]
    #[schema(value_type = Vec<EventView>)]
    pub events: Vec<StoredEvent>,
    #[schema(minimum = 1)]
    pub page: usize,
    #[schema(minimum = 1, maximum = 1000)]
    pub page_size: usize,
    /// Events matching the filters.
    pub total: u64,
    /// Whether a later page has events.
    pub has_more: bool,
    /// Present and `true` when the indexer had not caught up within `--read-wait`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl EventsPage {
    /// The JSON serde writes for the page, written by hand like its events
    /// ([`render::write_events`]: a page of 1,000 events is the answer where it counts).
    fn to_json(&self) -> Vec<u8> {
        let (events, partial) = match self {
            EventsPage::Cursor(page) => (&page.events, page.partial),
            EventsPage::Offset(page) => (&page.events, page.partial),
        };
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(b"{\"events\":");
        render::write_events(&mut out, events);
        match self {
            EventsPage::Cursor(page) => {
                out.extend_from_slice(b",\"next_cursor\":");
                match &page.next_cursor {
                    Some(cursor) => render::write_str(&mut out, cursor),
                    None => out.extend_from_slice(b"null"),
                }
            }
            EventsPage::Offset(page) => out.extend_from_slice(
                format!(
                    ",\"page\":{},\"page_size\":{},\"total\":{},\"has_more\":{}",
                    page.page, page.page_size, page.total, page.has_more
                )
                .as_bytes(),
            ),
        }
        if partial {
            out.extend_from_slice(b",\"partial\":true");
        }
        out.push(b'}');
        out
    }
}

/// Get one event
///
/// `404` when no such event is stored; `503` `not_yet_indexed` when it may be among events
/// acknowledged but not yet indexed.
#[utoipa::path(
    get, path = "/events/{id}", tag = "events", operation_id = "getEvent",
    params(("id" = String, Path, description = "The event's `id`")),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 404, response = NotFound),
        ReadRefusals,
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let partial = Snapshot::take(&state).await.partial;
    let event = state
        .store
        .get(&id)
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or_else(|| {
            if partial {
                // It may be among the events acknowledged but not yet indexed: not a 404.
                ApiError::NotYetIndexed(format!(
                    "no event with id '{id}' is indexed yet, and indexing is behind: retry shortly"
                ))
            } else {
                ApiError::NotFound(format!("no event with id '{id}'"))
            }
        })?;
    let mut out = Vec::with_capacity(1024);
    render::write_event(&mut out, &event);
    Ok(json_response(out))
}

/// A `200` with a JSON body already written.
fn json_response(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, metadata: Option<&str>) -> StoredEvent {
        StoredEvent {
            seq,
            id: format!("id-{seq}"),
            id_from_client: false,
            kind: "signup".into(),
            timestamp_ms: 1_700_000_000_000 + seq as i64,
            received_at_ms: 1_700_000_000_500,
            service: (seq % 2 == 0).then(|| "auth".into()),
            user_id: None,
            message: Some("a \"quoted\" line\n".into()),
            metadata: metadata.map(str::to_owned),
        }
    }

    #[test]
    fn pages_are_written_as_serde_writes_them() {
        let events = || {
            vec![
                event(1, Some(r#"{"plan": "pro", "n": 1.50}"#)),
                event(2, None),
            ]
        };
        let pages = [
            EventsPage::Cursor(CursorPage {
                events: events(),
                next_cursor: Some("ab".repeat(48)),
                partial: false,
            }),
            EventsPage::Cursor(CursorPage {
                events: Vec::new(),
                next_cursor: None,
                partial: true,
            }),
            EventsPage::Offset(OffsetPage {
                events: events(),
                page: 3,
                page_size: 2,
                total: 7,
                has_more: true,
                partial: false,
            }),
            EventsPage::Offset(OffsetPage {
                events: Vec::new(),
                page: 9,
                page_size: 100,
                total: 0,
                has_more: false,
                partial: true,
            }),
        ];
        for page in pages {
            let hand = String::from_utf8(page.to_json()).unwrap();
            let serde = serde_json::to_string(&page).unwrap();
            assert_eq!(hand, serde);
        }
    }
}
