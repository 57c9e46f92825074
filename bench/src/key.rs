//! The run's API key (`--auth`): set once at start, given to each server as it starts and
//! carried by every request.

use std::sync::OnceLock;

/// The API key every request of this run carries, set once at start.
static API_KEY: OnceLock<String> = OnceLock::new();

/// Makes every request of the run carry `key` (the servers are started with it).
pub fn use_api_key(key: String) {
    let _ = API_KEY.set(key);
}

pub fn api_key() -> Option<&'static str> {
    API_KEY.get().map(String::as_str)
}

/// `Authorization: Bearer ...\r\n` when the run uses a key, else nothing.
pub fn auth_header() -> String {
    api_key().map_or_else(String::new, |key| {
        format!("Authorization: Bearer {key}\r\n")
    })
}

/// A complete bodiless `GET` request for `path_and_query`, with the run's key if any.
pub fn get_request(path_and_query: &str) -> Vec<u8> {
    testkit::http::get_request(path_and_query, &auth_header())
}
