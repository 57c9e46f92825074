//! OpenTelemetry logs over HTTP (OTLP/HTTP): `POST /v1/logs`, protobuf or JSON, answered as
//! OTLP's specification says: `200` with an `ExportLogsServiceResponse` in the request's
//! encoding once the valid records are durable, with `partial_success` counting the records
//! refused; a request none of whose records is valid is bad data, `400`, which exporters do
//! not retry; `429` and `503` carry `Retry-After`, which they honour.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use prost::Message;
use utoipa::ToSchema;

use super::super::body;
use super::super::error::{ApiError, ErrorBody};
use super::super::refusals::{IngestBadRequest, TooManyRequests, Unavailable};
use super::super::schema::EventError;
use super::super::state::AppState;
use super::super::submit;
use super::{BodyKind, SdkBody};
use crate::event::parse::{Item, MAX_SDK_METADATA_BYTES};
use crate::event::sdk::{otlp, otlp::Encoding};

/// Content types, as OTLP/HTTP names them.
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The records whose errors `partial_success.error_message` spells out; the count covers
/// them all.
const ERRORS_TOLD: usize = 10;

impl BodyKind for Encoding {
    /// The body's bytes, decoded later by [`otlp::request`].
    type Content = Bytes;

    /// Neither type can be sent cross-site without a CORS preflight: both are accepted
    /// whether keys are required or not.
    fn of(_: &AppState, parts: &Parts) -> Result<Encoding, ApiError> {
        match body::media_type(&parts.headers).as_deref() {
            Some(PROTOBUF) => Ok(Encoding::Protobuf),
            Some(JSON) => Ok(Encoding::Json),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "content type '{}' is not supported: OTLP/HTTP sends {PROTOBUF} or {JSON}",
                other.unwrap_or_default()
            ))),
        }
    }

    fn decode(&self, _: &Parts, raw: Bytes) -> Result<Bytes, ApiError> {
        Ok(raw)
    }
}

/// An OTLP message in protobuf's binary encoding: an `ExportLogsServiceRequest` sent, an
/// `ExportLogsServiceResponse` answered.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Protobuf(pub Vec<u8>);

/// OpenTelemetry: logs
///
/// Log records as OpenTelemetry's OTLP/HTTP exporters send them (set
/// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` to this URL): an `ExportLogsServiceRequest` in protobuf
/// (`application/x-protobuf`) or in OTLP's JSON (`application/json`), gzip or not, with an
/// Eventide key with the `ingest` scope in the headers (`OTEL_EXPORTER_OTLP_HEADERS=
/// Authorization=Bearer%20evk_...`). Each record becomes an event: the resource's
/// `service.name` → `service`; the record's `event_name` (or `event.name` attribute), else
/// `log` → `type`; the body → `message` (a value other than a string as JSON text; beyond
/// 2,000 characters cut, the whole body then in `metadata.body`); `time_unix_nano`, else
/// `observed_time_unix_nano` → `timestamp`; severity, attributes, the resource's and the
/// scope's, trace and span ids (hex) → `metadata`. Answered in the request's encoding: an
/// `ExportLogsServiceResponse`, with `partialSuccess` (`rejectedLogRecords`, `errorMessage`)
/// when some records are invalid.
#[utoipa::path(
    post, path = "/v1/logs", tag = "sdks", operation_id = "otlpLogs",
    request_body(content(
        (Object = "application/json", example = json!({"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name",
                "value": {"stringValue": "checkout"}}]},
            "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [{
                "timeUnixNano": "1767225600000000000", "severityNumber": 9,
                "severityText": "INFO", "body": {"stringValue": "order placed"},
                "attributes": [{"key": "order.id", "value": {"stringValue": "o-1"}}],
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174"}]}]}]})),
        (Protobuf = "application/x-protobuf"),
    )),
    responses(
        (status = 200, description = "The valid records are durable: an \
            `ExportLogsServiceResponse`, with `partialSuccess` when some records are invalid",
            content(
                (Object = "application/json", example = json!({"partialSuccess": {
                    "rejectedLogRecords": "1", "errorMessage":
                    "log record 0: time_unix_nano is more than 24 h in the future"}})),
                (Protobuf = "application/x-protobuf"),
            )),
        (status = 400, description = "The body is not an `ExportLogsServiceRequest`, or no \
            record is valid (`no_valid_events`)", body = IngestBadRequest),
        (status = 408, description = "`request_timeout`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn logs(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let body = SdkBody::<Encoding>::read(&state, &mut parts, body).await?;
    // OTLP's exporters send keys in headers only: without one, this refuses.
    body.key_name(&state, &mut parts, None)?;
    let encoding = body.kind;
    let request = body.parse(&state, &parts, |raw| otlp::request(raw, encoding))?;
    let events = otlp::events(&request);
    // OTLP: a request without records is a success.
    if events.is_empty() {
        return Ok(answer(encoding, None));
    }
    let now_ms = state.clock.now_ms();
    let items = submit::with_bounds(&state, now_ms, None, MAX_SDK_METADATA_BYTES, |bounds| {
        events
            .into_iter()
            .enumerate()
            .map(|(index, text)| Item {
                index,
                result: otlp::validate(&text, bounds),
            })
            .collect()
    });
    let ingest = submit::submit(&state, &parts.extensions, now_ms, items).await?;
    let rejected = ingest.ids.iter().filter(|id| id.is_none()).count();
    let partial_success = (rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: error_message(&ingest.errors),
    });
    Ok(answer(encoding, partial_success))
}

/// `200` with an `ExportLogsServiceResponse` in `encoding`.
fn answer(encoding: Encoding, partial_success: Option<ExportLogsPartialSuccess>) -> Response {
    match encoding {
        Encoding::Protobuf => {
            let response = ExportLogsServiceResponse { partial_success };
            ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
        }
        // As protobuf's JSON mapping writes it: a 64-bit integer as a string, nothing for
        // fields left unset.
        Encoding::Json => {
            let body = match partial_success {
                None => serde_json::json!({}),
                Some(partial) => serde_json::json!({"partialSuccess": {
                    "rejectedLogRecords": partial.rejected_log_records.to_string(),
                    "errorMessage": partial.error_message,
                }}),
            };
            ([(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
        }
    }
}

/// Why records were refused, in English as OTLP asks: the first [`ERRORS_TOLD`] records'
/// errors, each naming the record by its position in the request (from 0).
fn error_message(errors: &[EventError]) -> String {
    let mut told: Vec<usize> = Vec::new();
    let mut parts = Vec::new();
    for error in errors {
        if !told.contains(&error.index) {
            if told.len() == ERRORS_TOLD {
                parts.push("...".to_owned());
                break;
            }
            told.push(error.index);
        }
        let field = if error.field.is_empty() {
            String::new()
        } else {
            format!("{} ", error.field)
        };
        parts.push(format!(
            "log record {}: {field}{}",
            error.index, error.message
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_message_names_the_first_records_refused() {
        let error = |index: usize, field: &str| EventError {
            index,
            field: field.to_owned(),
            message: "is wrong".to_owned(),
        };
        assert_eq!(
            error_message(&[error(0, "body"), error(0, "event_name"), error(3, "body")]),
            "log record 0: body is wrong; log record 0: event_name is wrong; \
             log record 3: body is wrong"
        );
        let many: Vec<EventError> = (0..20).map(|index| error(index, "body")).collect();
        let message = error_message(&many);
        assert!(
            message.ends_with("log record 9: body is wrong; ..."),
            "{message}"
        );
    }
}
