//! Request parameters: those of `GET /events` with strict parsing (an unknown or invalid
//! parameter is a `400` naming it) and the opaque paging cursor, and the `{id}` of a path.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use utoipa::{IntoParams, ToSchema};

use crate::event::timefmt::parse_time_param;
use crate::store::{EventFilter, Order};

use super::cursor::{Cursor, CursorError, CursorKey};
use super::error::ApiError;
use super::schema::Time;

/// The `{id}` segment of a path (`/events/{id}`, `/keys/{id}`...), or a JSON `400` naming
/// `id` when it cannot be decoded (`%ff` is not UTF-8), instead of axum's plain-text answer.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::invalid_parameter(
                    "id",
                    format!(
                        "the id in the path cannot be read: {}",
                        rejection.body_text()
                    ),
                )
            })?;
        Ok(PathId(id))
    }
}

/// A page's size unless `limit` (or `page_size`) says otherwise, for every list the API pages.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` (or `page_size`) of events and of the alert history.
pub const MAX_LIMIT: usize = 1_000;

#[derive(Debug)]
pub enum Paging {
    /// Keyset paging: continue after the cursor's position, within its snapshot.
    Cursor {
        limit: usize,
        cursor: Option<Cursor>,
    },
    /// Offset paging for simple clients (`page` from 1).
    Pages { page: usize, page_size: usize },
}

#[derive(Debug)]
pub struct ListParams {
    pub filter: EventFilter,
    pub order: Order,
    pub paging: Paging,
}

/// The filters of `GET /events` and `GET /stream`, for the API description (the parsing is
/// [`parse_list_params`]'s and the stream's own).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilterParams {
    /// Only events of this type.
    #[param(rename = "type", required = false)]
    pub kind: String,
    /// Only events of this service.
    #[param(required = false)]
    pub service: String,
    /// Only events of this user.
    #[param(required = false)]
    pub user_id: String,
}

/// The time range, order and paging of `GET /events`, for the API description. Every
/// parameter may be given once; an unknown one is a `400`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Events at or after this time.
    #[param(required = false, value_type = Time, example = "2024-01-15T00:00:00Z")]
    pub from: String,
    /// Events before this time.
    #[param(required = false, value_type = Time, example = "1705363200")]
    pub to: String,
    /// Events per page of a cursor walk.
    #[param(required = false, minimum = 1, maximum = 1000, default = 100)]
    pub limit: u64,
    #[param(required = false, inline)]
    pub order: SortOrder,
    /// The `next_cursor` of the previous page, with the same filters and order.
    #[param(required = false, pattern = "^[0-9a-f]{96}$")]
    pub cursor: String,
    /// Offset paging: the page (from 1). Not with `cursor` or `limit`.
    #[param(required = false, minimum = 1, maximum = 18_446_744_073_709_551_u64)]
    pub page: u64,
    /// Offset paging: events per page (also `pageSize`). Not with `cursor` or `limit`.
    #[param(required = false, minimum = 1, maximum = 1000, default = 100)]
    pub page_size: u64,
}

/// By timestamp: newest first (`desc`, the default) or oldest first (`asc`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Parses the raw query string of `GET /events`; a cursor must be signed with `key`.
pub fn parse_list_params(raw_query: Option<&str>, key: &CursorKey) -> Result<ListParams, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or(""))
        .map_err(|err| {
            ApiError::invalid_parameter("", format!("unreadable query string: {err}"))
        })?;
    let mut filter = EventFilter::default();
    let mut order = Order::Desc;
    let mut limit = None;
    let mut cursor = None;
    let mut page = None;
    let mut page_size = None;
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &pairs {
        let canonical = if name == "pageSize" {
            "page_size"
        } else {
            name.as_str()
        };
        if seen.contains(&canonical) {
            return Err(ApiError::invalid_parameter(
                name,
                format!("'{name}' is given more than once"),
            ));
        }
        seen.push(canonical);
        match canonical {
            "type" => filter.kind = Some(value.clone()),
            "service" => filter.service = Some(value.clone()),
            "user_id" => filter.user_id = Some(value.clone()),
            "from" => filter.from_ms = Some(parse_time(name, value)?),
            "to" => filter.to_ms = Some(parse_time(name, value)?),
            "limit" => limit = Some(parse_count(name, value, MAX_LIMIT)?),
            "page" => page = Some(parse_count(name, value, usize::MAX / MAX_LIMIT)?),
            "page_size" => page_size = Some(parse_count(name, value, MAX_LIMIT)?),
            "order" => {
                order = match value.as_str() {
                    "desc" => Order::Desc,
                    "asc" => Order::Asc,
                    _ => return Err(ApiError::invalid_parameter(name, "'order' must be 'asc' or 'desc'")),
                }
            }
            "cursor" => {
                cursor = Some(key.decode(value).map_err(|err| {
                    ApiError::invalid_parameter(
                        name,
                        match err {
                            CursorError::Malformed => "'cursor' is not a cursor: send the \
                                `next_cursor` of the previous page as it is",
                            CursorError::Forged => "'cursor' is not a cursor this server gave \
                                out: its signature does not match (a cursor from another \
                                deployment, or altered)",
                        },
                    )
                })?)
            }
            _ => {
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("unknown parameter '{name}'; known: type, service, user_id, from, to, limit, order, cursor, page, page_size"),
                ))
            }
        }
    }
    if let Some(cursor) = &cursor {
        if !cursor.belongs_to(&filter, order) {
            return Err(ApiError::invalid_parameter(
                "cursor",
                "'cursor' belongs to a walk with other filters or order: send the same ones again",
            ));
        }
    }
    let paging = match (page, page_size) {
        (None, None) => Paging::Cursor {
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            cursor,
        },
        (page, page_size) => {
            if cursor.is_some() || limit.is_some() {
                let name = if cursor.is_some() { "cursor" } else { "limit" };
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("'{name}' cannot be combined with 'page'/'page_size'"),
                ));
            }
            Paging::Pages {
                page: page.unwrap_or(1),
                page_size: page_size.unwrap_or(DEFAULT_LIMIT),
            }
        }
    };
    Ok(ListParams {
        filter,
        order,
        paging,
    })
}

/// The pairs of a query string whose parameters are all in `known`, each at most once.
pub fn known_pairs(
    raw_query: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or(""))
        .map_err(|err| {
            ApiError::invalid_parameter("", format!("unreadable query string: {err}"))
        })?;
    for (index, (name, _)) in pairs.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            return Err(ApiError::invalid_parameter(
                name,
                format!("unknown parameter '{name}'; known: {}", known.join(", ")),
            ));
        }
        if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(ApiError::invalid_parameter(
                name,
                format!("'{name}' is given more than once"),
            ));
        }
    }
    Ok(pairs)
}

pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    parse_time_param(value)
        .map_err(|reason| ApiError::invalid_parameter(name, format!("'{name}' {reason}")))
}

pub fn parse_count(name: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_parameter(
            name,
            format!("'{name}' must be a whole number from 1 to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Position;

    fn key() -> CursorKey {
        CursorKey::new(b"a test deployment's secret")
    }

    fn error_parameter(query: &str) -> String {
        match parse_list_params(Some(query), &key()) {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("expected an invalid parameter for {query}, got {other:?}"),
        }
    }

    #[test]
    fn cursors_are_tied_to_their_filters() {
        let filter = EventFilter {
            kind: Some("signup".into()),
            ..Default::default()
        };
        let position = Position {
            timestamp_ms: 1_700_000_000_000,
            seq: 42,
        };
        let text = key().encode(&Cursor::new(position, Some(99), &filter, Order::Desc));
        let same = parse_list_params(Some(&format!("type=signup&cursor={text}")), &key()).unwrap();
        assert!(matches!(
            same.paging,
            Paging::Cursor { cursor: Some(c), .. } if c.position == position && c.snapshot_seq == Some(99)
        ));
        assert_eq!(
            error_parameter(&format!("type=login&cursor={text}")),
            "cursor"
        );
        assert_eq!(
            error_parameter(&format!("type=signup&order=asc&cursor={text}")),
            "cursor"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(error_parameter("colour=red"), "colour");
        assert_eq!(error_parameter("limit=0"), "limit");
        assert_eq!(error_parameter("limit=1001"), "limit");
        assert_eq!(error_parameter("order=sideways"), "order");
        assert_eq!(error_parameter("from=yesterday"), "from");
        assert_eq!(error_parameter("cursor=abc"), "cursor");
        assert_eq!(error_parameter("type=a&type=b"), "type");
        assert_eq!(error_parameter("page=1&limit=5"), "limit");
    }

    #[test]
    fn page_size_has_a_camel_case_alias() {
        let params = parse_list_params(Some("page=2&pageSize=5"), &key()).unwrap();
        assert!(matches!(
            params.paging,
            Paging::Pages {
                page: 2,
                page_size: 5
            }
        ));
    }
}
