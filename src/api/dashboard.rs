//! The dashboard: the page at `GET /` and its files at `GET /assets/{file}`, from the
//! top-level `dashboard/` folder, compiled into the binary (so `cargo build` alone ships it and
//! nothing is fetched from elsewhere). The page reads the JSON API like any other client; it
//! is not part of the API description.
//!
//! Every file goes out with a Content-Security-Policy that lets the page run only this
//! origin's own scripts and style sheets (no inline script or style, no plugin, no framing),
//! so event data, which the scripts only ever insert as text, can never run; and with an
//! `ETag` and `Cache-Control: no-cache`, so browsers revalidate and get `304` until the binary
//! changes.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;

/// Only this origin's files and API; `data:` images for the SVG charts' and icons' sake.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $name)),
        }
    };
}

/// The page, served at `/`.
const PAGE: Asset = asset!("index.html", "text/html; charset=utf-8");

/// The files the page loads, served at `/assets/{name}`.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("util.js", "text/javascript; charset=utf-8"),
    asset!("charts.js", "text/javascript; charset=utf-8"),
    asset!("feed.js", "text/javascript; charset=utf-8"),
    asset!("explorer.js", "text/javascript; charset=utf-8"),
    asset!("status.js", "text/javascript; charset=utf-8"),
    asset!("alerts.js", "text/javascript; charset=utf-8"),
    asset!("session.js", "text/javascript; charset=utf-8"),
    asset!("stream.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Each file's entity tag (its length and CRC-32), computed once: the files change only with
/// the binary.
static PAGE_ETAG: LazyLock<String> = LazyLock::new(|| etag(PAGE.body));
static ASSET_ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|asset| etag(asset.body)).collect());

fn etag(body: &[u8]) -> String {
    format!("\"{:x}-{:08x}\"", body.len(), crc32fast::hash(body))
}

/// `GET /` and `GET /assets/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/assets/{file}", get(asset))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &PAGE_ETAG, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let index = ASSETS
        .iter()
        .position(|asset| asset.name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard file '{file}'")))?;
    Ok(serve(&ASSETS[index], &ASSET_ETAGS[index], &headers))
}

/// The file, or `304` when the client's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).expect("an entity tag is a valid header value"),
        ),
    ];
    if current {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_has_the_content_type_of_its_extension() {
        for asset in ASSETS.iter().chain([&PAGE]) {
            let extension = asset.name.rsplit('.').next().unwrap();
            let want = match extension {
                "html" => "text/html",
                "css" => "text/css",
                "js" => "text/javascript",
                "svg" => "image/svg+xml",
                other => panic!("no content type known for .{other}"),
            };
            assert!(asset.content_type.starts_with(want), "{}", asset.name);
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_or_style() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        for directive in ["script-src 'self'", "style-src 'self'", "object-src 'none'"] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
    }
}
