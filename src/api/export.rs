//! `GET /events/export`: every matching event of one snapshot, oldest first, as NDJSON or
//! CSV, streamed page after page (the store's [`Store::export`]: keyset positions, as a
//! cursor walk, in one transaction on PostgreSQL) so that the server holds a few pages
//! whatever the size of the export; gzip-compressed when the client accepts it.
//!
//! The CSV columns ([`CSV_COLUMNS`]) and writer ([`csv_writer`]) are the client's too
//! (`eventide query --format csv`).

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::params::{known_pairs, parse_time, EventFilterParams};
use super::refusals::ReadRefusals;
use super::state::AppState;
use crate::event::render;
use crate::event::timefmt::format_rfc3339_ms;
use crate::event::StoredEvent;
use crate::store::{EventFilter, Store};

/// Events read from the store per page: about 500 KB of typical events; an export holds
/// three pages at most.
const PAGE: usize = 1_000;

/// The CSV columns, fixed whatever the events hold: the header, and each record's fields.
pub const CSV_COLUMNS: [&str; 9] = [
    "id",
    "seq",
    "timestamp",
    "received_at",
    "type",
    "service",
    "user_id",
    "message",
    "metadata",
];

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One event per line, as `GET /events` returns it.
    Ndjson,
    /// RFC 4180, with the header `id,seq,timestamp,received_at,type,service,user_id,message,metadata`
    /// (`metadata` as JSON text, absent values empty).
    Csv,
}

/// The format and time range of an export, for the API description.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    #[param(required = false, inline)]
    pub format: ExportFormat,
    /// Events at or after this time.
    #[param(required = false, value_type = super::schema::Time, example = "2024-01-15T00:00:00Z")]
    pub from: String,
    /// Events before this time.
    #[param(required = false, value_type = super::schema::Time, example = "1705363200")]
    pub to: String,
}

/// Export events
///
/// Every matching event acknowledged before the request, oldest first (by timestamp, then
/// `seq`), from one snapshot: events arriving meanwhile are not included. Waits up to
/// `--export-wait` for the indexer to reach them, else `503` `not_yet_indexed`. Streamed
/// (the server holds one page at a time), gzip-compressed with `Accept-Encoding: gzip`.
#[utoipa::path(
    get, path = "/events/export", tag = "events", operation_id = "exportEvents",
    params(EventFilterParams, ExportQuery),
    responses(
        (status = 200, description = "The events, as an attachment",
            content(
                (String = "application/x-ndjson",
                    example = json!("{\"id\":\"019a…\",\"type\":\"signup\",…,\"seq\":1043}\n")),
                (String = "text/csv",
                    example = json!("id,seq,timestamp,received_at,type,service,user_id,message,metadata\r\n")),
            ),
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"events.ndjson\"` (or `.csv`)"))),
        ReadRefusals,
    )
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut filter, format) = parse_export_params(query.as_deref())?;
    let read = state.ingest.read_position(state.export_wait).await;
    if !read.complete {
        return Err(ApiError::NotYetIndexed(format!(
            "the indexer has not reached every event acknowledged before the export within \
             {} s (--export-wait): retry shortly",
            state.export_wait.as_secs_f64()
        )));
    }
    filter.max_seq = read.through;
    let gzip = accepts_gzip(&headers);
    let (content_type, extension) = match format {
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let mut response =
        Body::from_stream(export_body(state.store.clone(), filter, format, gzip)).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"events.{extension}\""))
            .expect("an ASCII header value"),
    );
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// The filters of `GET /events` (no paging, order or cursor) and `format` (default NDJSON).
fn parse_export_params(raw_query: Option<&str>) -> Result<(EventFilter, ExportFormat), ApiError> {
    let mut filter = EventFilter::default();
    let mut format = ExportFormat::Ndjson;
    for (name, value) in known_pairs(
        raw_query,
        &["type", "service", "user_id", "from", "to", "format"],
    )? {
        match name.as_str() {
            "type" => filter.kind = Some(value),
            "service" => filter.service = Some(value),
            "user_id" => filter.user_id = Some(value),
            "from" => filter.from_ms = Some(parse_time(&name, &value)?),
            "to" => filter.to_ms = Some(parse_time(&name, &value)?),
            _ => {
                format = match value.as_str() {
                    "ndjson" => ExportFormat::Ndjson,
                    "csv" => ExportFormat::Csv,
                    _ => {
                        return Err(ApiError::invalid_parameter(
                            &name,
                            "'format' must be 'ndjson' or 'csv'",
                        ))
                    }
                }
            }
        }
    }
    Ok((filter, format))
}

/// Whether `Accept-Encoding` lists gzip with a quality above 0.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

/// Where the body of an export stands between pages.
struct Walk {
    /// The pages, from the store's export task.
    pages: mpsc::Receiver<anyhow::Result<Vec<StoredEvent>>>,
    format: ExportFormat,
    /// `Some` when compressing: the encoder, writing into its own buffer that each chunk
    /// takes.
    gzip: Option<GzEncoder<Vec<u8>>>,
    started: bool,
    done: bool,
}

/// The body: the CSV header, then one chunk per page of events until the store has sent
/// them all. A store failure mid-way ends the body with an error, which the client sees as
/// a connection cut before the end of the chunked body (the status is already sent).
fn export_body(
    store: Arc<dyn Store>,
    filter: EventFilter,
    format: ExportFormat,
    gzip: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    // A page waits while the body sends the one before, and the store reads the next: three
    // pages in memory at most. The
    // store's task ends once every page is sent or the body is dropped (the client left);
    // it is never cut mid-page, so a transaction it holds is always ended.
    let (sender, pages) = mpsc::channel(1);
    tokio::spawn(async move { store.export(filter, PAGE, sender).await });
    let walk = Walk {
        pages,
        format,
        gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
        started: false,
        done: false,
    };
    futures_util::stream::unfold(walk, |mut walk| async move {
        if walk.done {
            return None;
        }
        let mut out = Vec::with_capacity(if walk.started { 512 * PAGE } else { 128 });
        if !walk.started {
            walk.started = true;
            if walk.format == ExportFormat::Csv {
                write_csv(&mut out, [CSV_COLUMNS]);
            }
        } else {
            match walk.pages.recv().await {
                None => walk.done = true,
                Some(Err(err)) => {
                    tracing::error!(
                        error = format!("{err:#}"),
                        "export cut short: the store failed"
                    );
                    walk.done = true;
                    return Some((Err(std::io::Error::other(err.to_string())), walk));
                }
                Some(Ok(events)) => match walk.format {
                    ExportFormat::Ndjson => {
                        for event in &events {
                            render::write_event(&mut out, event);
                            out.push(b'\n');
                        }
                    }
                    ExportFormat::Csv => write_csv(&mut out, events.iter().map(csv_fields)),
                },
            }
        }
        let chunk = match &mut walk.gzip {
            None => out,
            Some(encoder) => {
                let written = encoder.write_all(&out).and_then(|()| encoder.flush());
                if let Err(err) = written {
                    walk.done = true;
                    return Some((Err(err), walk));
                }
                if walk.done {
                    let encoder = walk.gzip.take().expect("compressing");
                    match encoder.finish() {
                        Ok(rest) => rest,
                        Err(err) => return Some((Err(err), walk)),
                    }
                } else {
                    std::mem::take(encoder.get_mut())
                }
            }
        };
        Some((Ok(Bytes::from(chunk)), walk))
    })
}

/// A CSV writer into `out` (RFC 4180: CRLF, fields quoted when they hold a comma, a quote,
/// CR or LF, quotes doubled): the export's and the client's.
pub fn csv_writer(out: &mut Vec<u8>) -> csv::Writer<&mut Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

/// Appends `records` to `out` as CSV.
pub fn write_csv<R, F>(out: &mut Vec<u8>, records: impl IntoIterator<Item = R>)
where
    R: IntoIterator<Item = F>,
    F: AsRef<str>,
{
    let mut writer = csv_writer(out);
    for record in records {
        for field in record {
            writer
                .write_field(field.as_ref())
                .expect("writing to memory");
        }
        writer
            .write_record(None::<&[u8]>)
            .expect("writing to memory");
    }
    writer.flush().expect("writing to memory");
}

/// An event's fields, in the order of [`CSV_COLUMNS`] (absent ones empty, metadata as
/// its JSON text).
pub fn csv_fields(event: &StoredEvent) -> [std::borrow::Cow<'_, str>; 9] {
    [
        event.id.as_str().into(),
        event.seq.to_string().into(),
        format_rfc3339_ms(event.timestamp_ms).into(),
        format_rfc3339_ms(event.received_at_ms).into(),
        event.kind.as_str().into(),
        event.service.as_deref().unwrap_or("").into(),
        event.user_id.as_deref().unwrap_or("").into(),
        event.message.as_deref().unwrap_or("").into(),
        event.metadata.as_deref().unwrap_or("").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_quote_what_needs_quoting() {
        let event = StoredEvent {
            seq: 7,
            id: "a,b".into(),
            id_from_client: true,
            kind: "signup".into(),
            timestamp_ms: 0,
            received_at_ms: 1,
            service: None,
            user_id: Some("u-1".into()),
            message: Some("say \"hi\"\nbye".into()),
            metadata: Some(r#"{"k": "v"}"#.into()),
        };
        let mut out = Vec::new();
        write_csv(&mut out, [csv_fields(&event)]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,b\",7,1970-01-01T00:00:00.000Z,1970-01-01T00:00:00.001Z,signup,,u-1,\
             \"say \"\"hi\"\"\nbye\",\"{\"\"k\"\": \"\"v\"\"}\"\r\n"
        );
    }

    #[test]
    fn gzip_is_accepted_unless_refused() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(with("gzip"));
        assert!(with("br, gzip;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(parse_export_params(Some("format=xml")).is_err());
        assert!(parse_export_params(Some("limit=5")).is_err());
        let (filter, format) = parse_export_params(Some("type=a&format=csv")).unwrap();
        assert_eq!(filter.kind.as_deref(), Some("a"));
        assert_eq!(format, ExportFormat::Csv);
    }
}
