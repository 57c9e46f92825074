//! `/alerts`: every rule's alert and its state (read), the history of changes and notices
//! (read, paged, newest first), the rules (read; adding, replacing and deleting those added
//! over HTTP needs admin, those of the alerts file and the built-in ones are read-only) and
//! silences (listing reads, adding needs admin). No answer holds a channel's secret: rules
//! name channels, never their URLs or passwords.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::params::{known_pairs, parse_count, DEFAULT_LIMIT, MAX_LIMIT};
use super::refusals::{NotFound, ReadRefusals};
use super::state::AppState;
use crate::alerts::history::HistoryEntry;
use crate::alerts::rule::RuleSpec;
use crate::alerts::silence::Matcher;
use crate::alerts::{AlertInfo, AlertsError, RuleInfo, SilenceInfo};
use crate::config::parse_duration;
use crate::event::timefmt::parse_rfc3339_ms;

/// The most a rule or silence body may be.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every rule's alert, by rule name.
#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertInfo>,
}

/// A page of the history, newest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Give it as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Every rule.
#[derive(Serialize, ToSchema)]
pub struct RuleList {
    pub rules: Vec<RuleInfo>,
}

/// Every silence, newest first.
#[derive(Serialize, ToSchema)]
pub struct SilenceList {
    pub silences: Vec<SilenceInfo>,
}

/// What `POST /alerts/silences` takes: matchers, and an end (`ends_at`) or a length
/// (`duration`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "matchers": [{"name": "alertname", "value": "checkout-stopped"}],
    "duration": "2h", "comment": "deploying checkout"
}))]
pub struct CreateSilence {
    /// Labels an alert must all have to be silenced.
    pub matchers: Vec<Matcher>,
    /// When it ends (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// How long it lasts from now (`30m`, `2h`...), instead of `ends_at`.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub comment: String,
}

impl From<AlertsError> for ApiError {
    fn from(err: AlertsError) -> ApiError {
        match err {
            AlertsError::Invalid(message) => ApiError::BadBody { message },
            AlertsError::ReadOnly(message) => ApiError::RuleReadOnly(message),
            AlertsError::NotFound(message) => ApiError::NotFound(message),
            AlertsError::Exists(message) => ApiError::AlreadyExists(message),
            AlertsError::Store(err) => ApiError::StoreUnavailable(err),
        }
    }
}

async fn read_body<T: serde::de::DeserializeOwned>(body: Body, what: &str) -> Result<T, ApiError> {
    let body: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        })?;
    serde_json::from_slice(&body).map_err(|err| ApiError::BadBody {
        message: format!("{what}: {err}"),
    })
}

fn rule_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(name)| name).map_err(|rejection| {
        ApiError::invalid_parameter(
            "name",
            format!("the rule name cannot be read: {}", rejection.body_text()),
        )
    })
}

/// List alerts
///
/// Every rule's alert: `inactive`, `pending` (the condition holds, not yet for `for`) or
/// `firing`, since when, the last value observed and whether a silence matches it.
#[utoipa::path(
    get, path = "/alerts", tag = "alerts", operation_id = "listAlerts",
    responses((status = 200, description = "Every rule's alert", body = AlertList), ReadRefusals)
)]
pub async fn list(State(state): State<AppState>) -> Json<AlertList> {
    Json(AlertList {
        alerts: state.alerts.alerts(),
    })
}

/// Alert history
///
/// State changes and notices, newest first, `limit` at a time; `before` (the previous page's
/// `next_before`) continues with older ones.
#[utoipa::path(
    get, path = "/alerts/history", tag = "alerts", operation_id = "alertHistory",
    params(
        ("limit" = Option<usize>, Query, description = "At most this many (1 to 1000, default 100)"),
        ("before" = Option<i64>, Query, description = "Entries older than this id (a page's `next_before`)"),
    ),
    responses(
        (status = 200, description = "A page of the history, newest first", body = HistoryPage),
        ReadRefusals,
    )
)]
pub async fn history(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<HistoryPage>, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    let mut before = None;
    for (name, value) in known_pairs(query.as_deref(), &["limit", "before"])? {
        match name.as_str() {
            "limit" => limit = parse_count("limit", &value, MAX_LIMIT)?,
            _ => {
                before = Some(value.parse::<i64>().map_err(|_| {
                    ApiError::invalid_parameter("before", "'before' must be a whole number")
                })?)
            }
        }
    }
    let (entries, next_before) = state
        .alerts
        .history(before, limit)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(Json(HistoryPage {
        entries,
        next_before,
    }))
}

/// List rules
///
/// Every rule: from the alerts file (`file`), added over HTTP (`api`) or the service's own
/// (`builtin`).
#[utoipa::path(
    get, path = "/alerts/rules", tag = "alerts", operation_id = "listAlertRules",
    responses((status = 200, description = "Every rule", body = RuleList), ReadRefusals)
)]
pub async fn rules(State(state): State<AppState>) -> Json<RuleList> {
    Json(RuleList {
        rules: state.alerts.rules(),
    })
}

/// Get a rule
#[utoipa::path(
    get, path = "/alerts/rules/{name}", tag = "alerts", operation_id = "getAlertRule",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 200, description = "The rule", body = RuleInfo),
        (status = 404, response = NotFound),
        ReadRefusals,
    )
)]
pub async fn rule(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RuleInfo>, ApiError> {
    let name = rule_name(name)?;
    state
        .alerts
        .rule(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no rule '{name}'")))
}

/// Add a rule
///
/// Admin. Kept in the store, evaluated from the next evaluation on.
#[utoipa::path(
    post, path = "/alerts/rules", tag = "alerts", operation_id = "createAlertRule",
    request_body = RuleSpec,
    responses(
        (status = 201, description = "The rule", body = RuleInfo),
        (status = 409, description = "A rule of that name exists (`already_exists`)", body = super::error::ErrorBody),
        ReadRefusals,
    )
)]
pub async fn create_rule(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let spec: RuleSpec = read_body(body, "the rule").await?;
    let info = state.alerts.create_rule(spec).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Replace a rule
///
/// Admin. Only rules added over HTTP; its alert keeps its state.
#[utoipa::path(
    put, path = "/alerts/rules/{name}", tag = "alerts", operation_id = "replaceAlertRule",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = RuleSpec,
    responses(
        (status = 200, description = "The rule", body = RuleInfo),
        (status = 404, response = NotFound),
        (status = 409, description = "The rule comes from the alerts file or is built in (`rule_read_only`)", body = super::error::ErrorBody),
        ReadRefusals,
    )
)]
pub async fn replace_rule(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<RuleInfo>, ApiError> {
    let name = rule_name(name)?;
    let spec: RuleSpec = read_body(body, "the rule").await?;
    Ok(Json(state.alerts.replace_rule(&name, spec).await?))
}

/// Delete a rule
///
/// Admin. Only rules added over HTTP; its alert and what its channels were told are
/// forgotten.
#[utoipa::path(
    delete, path = "/alerts/rules/{name}", tag = "alerts", operation_id = "deleteAlertRule",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
        (status = 409, description = "The rule comes from the alerts file or is built in (`rule_read_only`)", body = super::error::ErrorBody),
        ReadRefusals,
    )
)]
pub async fn delete_rule(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = rule_name(name)?;
    state.alerts.delete_rule(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Add a silence
///
/// Admin. From now until `ends_at` (or for `duration`), alerts whose labels match every
/// matcher are not announced; a firing one is announced when the silence ends.
#[utoipa::path(
    post, path = "/alerts/silences", tag = "alerts", operation_id = "createSilence",
    request_body = CreateSilence,
    responses((status = 201, description = "The silence", body = SilenceInfo), ReadRefusals)
)]
pub async fn create_silence(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let wanted: CreateSilence = read_body(body, "the silence").await?;
    let now = state.clock.now_ms();
    let ends_at_ms = match (&wanted.ends_at, &wanted.duration) {
        (Some(ends_at), None) => parse_rfc3339_ms(ends_at).map_err(|reason| ApiError::BadBody {
            message: format!("ends_at: {reason}"),
        })?,
        (None, Some(duration)) => match parse_duration(duration) {
            Ok(duration) if !duration.is_zero() => {
                now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
            }
            _ => {
                return Err(ApiError::BadBody {
                    message: format!("duration: '{duration}' is not a duration like 30m or 2h"),
                })
            }
        },
        _ => {
            return Err(ApiError::BadBody {
                message: "give either ends_at or duration".to_owned(),
            })
        }
    };
    let info = state
        .alerts
        .add_silence(wanted.matchers, ends_at_ms, wanted.comment, None)
        .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// List silences
#[utoipa::path(
    get, path = "/alerts/silences", tag = "alerts", operation_id = "listSilences",
    responses(
        (status = 200, description = "Every silence, newest first", body = SilenceList),
        ReadRefusals,
    )
)]
pub async fn silences(State(state): State<AppState>) -> Json<SilenceList> {
    Json(SilenceList {
        silences: state.alerts.silences(),
    })
}
