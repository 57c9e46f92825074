//! `GET /dead-letters` and `POST /dead-letters/replay`: a cluster's events that the workers
//! could not store after several attempts, with the reason, and putting them back in the
//! queue once the cause is fixed. With the embedded queue there are none (invalid events are
//! refused at ingest), and both answer accordingly.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::params::{known_pairs, parse_count, DEFAULT_LIMIT};
use super::refusals::ReadRefusals;
use super::state::AppState;
use crate::queue::redis::DeadLetter;
use crate::queue::IngestError;

/// The largest `limit` of both operations (the default is the API's page size).
const MAX_LIMIT: usize = 10_000;

/// The dead letters, oldest first.
#[derive(Serialize, ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
}

/// How many dead letters went back into the queue.
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// The query of both operations: how many dead letters at most.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (1 to 10000, default 100)
    #[param(required = false)]
    limit: usize,
}

impl<S: Send + Sync> FromRequestParts<S> for Limit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut limit = DEFAULT_LIMIT;
        for (_, value) in known_pairs(parts.uri.query(), &["limit"])? {
            limit = parse_count("limit", &value, MAX_LIMIT)?;
        }
        Ok(Limit { limit })
    }
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Ingest(IngestError::QueueUnavailable(err.to_string()))
}

/// List dead letters
///
/// Events a cluster's workers could not store after `max_attempts` tries (or could not
/// decode), with the reason, the number of attempts and the event. Always empty with the
/// embedded queue.
#[utoipa::path(
    get, path = "/dead-letters", tag = "events", operation_id = "listDeadLetters",
    params(Limit),
    responses(
        (status = 200, description = "The dead letters, oldest first", body = DeadLetters),
        ReadRefusals,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Limit { limit }: Limit,
) -> Result<Json<DeadLetters>, ApiError> {
    let dead_letters = match &state.dead_letters {
        Some(queue) => queue.dead_letters(limit).await.map_err(unavailable)?,
        None => Vec::new(),
    };
    Ok(Json(DeadLetters { dead_letters }))
}

/// Replay dead letters
///
/// Puts up to `limit` dead letters back into the queue (oldest first) and removes them from
/// the dead letters; the workers try them again. Safe to repeat: event ids make storing
/// idempotent.
#[utoipa::path(
    post, path = "/dead-letters/replay", tag = "events", operation_id = "replayDeadLetters",
    params(Limit),
    responses(
        (status = 200, description = "How many went back into the queue", body = Replayed),
        ReadRefusals,
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Limit { limit }: Limit,
) -> Result<Json<Replayed>, ApiError> {
    let replayed = match &state.dead_letters {
        Some(queue) => queue
            .replay_dead_letters(limit)
            .await
            .map_err(unavailable)?,
        None => 0,
    };
    Ok(Json(Replayed { replayed }))
}
