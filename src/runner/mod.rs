//! The runners: what answers a function request in each mode.
//!
//! `fork` starts one handler process per request (streaming, serializing, classic).
//! Each runner takes a request whose auth and concurrency checks have passed and returns
//! the response; it never panics the server and always ends the work it started.

use std::time::Instant;

pub mod env;
pub mod fork;
pub mod pipe;

/// What a runner knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The whole response must be written by then (`write_timeout` after the head).
    pub write_deadline: Instant,
    /// `X-Call-Id`, or empty.
    pub call_id: String,
}
