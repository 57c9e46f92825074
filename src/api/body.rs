//! Reading a request body to ingest: its media type (required, so that a web page cannot
//! post events cross-site without a preflight), a declared length over the limit refused
//! before anything is read (no `100 Continue`), a minimum rate so a client cannot hold a
//! request open by trickling, the size limit, and gzip.

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::error::ApiError;
use super::state::HttpPolicy;
use crate::connections::Timeout;
use crate::event::parse::{BodyFormat, MAX_BODY_BYTES};

/// The minimum body rate is checked over windows this long: a pause of a few seconds (a
/// phone changing networks) is fine, trickling a byte at a time is not.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// The most reserved for a body before its bytes arrive, whatever its `Content-Length`
/// says: reserving the declared size let 600 clients announcing 1 MB and sending a byte at a
/// time hold 700 MB of the server's memory. Beyond this, the buffer grows with what arrives.
const UP_FRONT_BODY_BYTES: u64 = 64 * 1024;

/// The format `Content-Type` names. A body without one, or with a type a browser may send
/// cross-site without asking first (`text/plain`, forms), is refused: `415`.
pub fn format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    const EXPECTED: &str = "send application/json (one event or an array) or \
                            application/x-ndjson (one event per line)";
    let Some(media_type) = media_type(headers) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a Content-Type is required: {EXPECTED}"
        )));
    };
    match media_type.as_str() {
        "application/json" | "text/json" => Ok(BodyFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type '{other}' is not supported: {EXPECTED}"
        ))),
    }
}

/// The media type `Content-Type` names (lower case, without parameters such as `charset`),
/// `None` without the header.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?;
    Some(
        content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads the whole body, gunzipping it if asked: refused at once if its declared length is
/// over [`MAX_BODY_BYTES`], cut with `408` (and counted as a body timeout) if it arrives
/// slower than `--min-body-rate` bytes a second over a [`RATE_WINDOW`] (0: no minimum).
pub async fn read(headers: &HeaderMap, body: Body, policy: &HttpPolicy) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    // Refused before reading, like a type that is not served.
    let gzip = match encoding.as_deref() {
        None | Some("identity") | Some("") => false,
        Some("gzip") | Some("x-gzip") => true,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content encoding '{other}' is not supported: use gzip or none"
            )))
        }
    };
    let raw = match read_at_rate(body, declared, policy.min_body_rate).await {
        Err(slow @ ApiError::BodyTooSlow(_)) => {
            // A body too slow is a connection timed out, counted with the others.
            policy.connections.count_timeout(Timeout::Body);
            return Err(slow);
        }
        raw => raw?,
    };
    decode(raw, gzip)
}

/// The body as sent, gunzipped when `gzip`: refused when it decompresses to more than
/// [`MAX_BODY_BYTES`] or is not gzip at all. What the fuzz target feeds bodies through.
pub fn decode(raw: Bytes, gzip: bool) -> Result<Bytes, ApiError> {
    if !gzip {
        return Ok(raw);
    }
    let mut decoded = Vec::with_capacity(raw.len().saturating_mul(4).min(MAX_BODY_BYTES));
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

/// The body's bytes, at most [`MAX_BODY_BYTES`], each window of [`RATE_WINDOW`] bringing at
/// least `min_rate` bytes a second.
async fn read_at_rate(
    mut body: Body,
    declared: Option<u64>,
    min_rate: u64,
) -> Result<Bytes, ApiError> {
    let window_bytes = min_rate.saturating_mul(RATE_WINDOW.as_secs());
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(UP_FRONT_BODY_BYTES) as usize);
    let mut first: Option<Bytes> = None;
    let mut window_end = Instant::now() + RATE_WINDOW;
    let mut in_window = 0u64;
    loop {
        let frame = if min_rate == 0 {
            body.frame().await
        } else {
            match tokio::time::timeout_at(window_end, body.frame()).await {
                Ok(frame) => frame,
                Err(_) if in_window >= window_bytes => {
                    window_end += RATE_WINDOW;
                    in_window = 0;
                    continue;
                }
                Err(_) => {
                    return Err(ApiError::BodyTooSlow(format!(
                        "the body arrived slower than {min_rate} bytes per second \
                         ({in_window} bytes in {} s)",
                        RATE_WINDOW.as_secs()
                    )))
                }
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|err| ApiError::BadBody {
            message: format!("could not read the request body: {err}"),
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        in_window += data.len() as u64;
        if Instant::now() >= window_end {
            // The window closed while this frame arrived: judge it, start the next.
            if min_rate > 0 && in_window < window_bytes {
                return Err(ApiError::BodyTooSlow(format!(
                    "the body arrived slower than {min_rate} bytes per second"
                )));
            }
            window_end = Instant::now() + RATE_WINDOW;
            in_window = 0;
        }
        if out.len() + first.as_ref().map_or(0, Bytes::len) + data.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        // Most bodies come in one frame: keep it as is, copying only when a second arrives.
        match first.take() {
            None if out.is_empty() => first = Some(data),
            Some(previous) => {
                out.extend_from_slice(&previous);
                out.extend_from_slice(&data);
            }
            None => out.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| out.into()))
}

/// A body through everything `POST /events` does with it before storing anything: gzip
/// decoding (when the first byte's low bit is set) and parsing as JSON or NDJSON (the next
/// bit). What the fuzz target (`fuzz/`) and the corpus replay test run; refusals are fine,
/// a panic is a bug.
pub fn fuzz_ingest_body(data: &[u8]) {
    use crate::event::parse::{parse_body, TimeBounds};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let format = if mode & 2 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let Ok(body) = decode(Bytes::copy_from_slice(rest), mode & 1 == 1) else {
        return;
    };
    let bounds = TimeBounds {
        now_ms: 1_765_000_000_000,
        oldest_ms: 1_762_000_000_000,
        too_old: &|| "is older than the retention".to_owned(),
        sent_at_ms: None,
        max_metadata_bytes: crate::event::parse::MAX_METADATA_BYTES,
    };
    if let Ok(items) = parse_body(&body, format, &bounds) {
        assert!(items.len() <= crate::event::parse::MAX_EVENTS_PER_REQUEST);
    }
}
