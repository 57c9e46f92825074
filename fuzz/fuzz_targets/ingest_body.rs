//! Fuzz target: a request body through gzip decoding and event parsing, as `POST /events`
//! does, in both formats. The first byte chooses the format and whether the rest is gzip;
//! anything may be refused, nothing may panic, hang or take unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    eventide::api::body::fuzz_ingest_body(data);
});
