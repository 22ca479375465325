//! The runners: what answers a function request in each mode.
//!
//! `fork` starts one handler process per request (streaming, serializing, classic);
//! `http` proxies to one long-running handler that is an HTTP server; `files` serves a
//! folder (static mode); `fastcgi` talks FastCGI to a pool of warm workers.
//! Each runner takes a request whose auth and concurrency checks have passed and returns
//! the response; it never panics the server and always ends the work it started.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub mod cgi;
pub mod env;
pub mod fastcgi;
pub mod files;
pub mod fork;
pub mod http;
pub mod pipe;

/// What a runner knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The whole response must be written by then (`write_timeout` after the head).
    pub write_deadline: Instant,
    /// `X-Call-Id`, or empty.
    pub call_id: String,
}

/// `deadline` as milliseconds since the Unix epoch: what handlers are told
/// (`FWATCHDOG_DEADLINE_MS`, `X-Deadline-Ms`) so they can stop before they are cut off.
pub fn deadline_ms(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    (SystemTime::now() + left)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
