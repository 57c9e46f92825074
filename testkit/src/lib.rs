//! What the integration tests and the load generator share to drive the real `eventide`
//! binary from outside: starting it on a free port ([`server`]), a minimal keep-alive HTTP
//! client and request helpers ([`http`]), and reading Server-Sent Events ([`sse`]).
//!
//! It depends on nothing of the service: it speaks to the binary as any client would.

pub mod http;
pub mod server;
pub mod sse;

pub use server::{parse_listening, strip_ansi};
