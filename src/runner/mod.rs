//! The runners: what answers a function request in each mode.
//!
//! `fork` starts one handler process per request (streaming, serializing, classic);
//! `proxy` proxies to one long-running handler that is an HTTP server; `files` serves a
//! folder (static mode); `fastcgi` talks FastCGI to a pool of warm workers; `lambda`
//! hands invocations to AWS Lambda runtimes through the Lambda Runtime API.
//! Each runner takes a request whose auth and concurrency checks have passed and returns
//! the response; it never panics the server and always ends the work it started. A
//! runner that cannot give the function's answer gives a [`Failure`]'s, and a run is
//! bounded by a [`Deadline`]. Every runner reads and holds bodies, starts work and times
//! its runs through the request's one [`Budget`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

pub use budget::Budget;
pub use failure::{Deadline, Failure};

pub mod budget;
pub mod cgi;
pub mod env;
pub mod failure;
pub mod fastcgi;
pub mod files;
pub mod fork;
pub mod lambda;
pub mod pipe;
pub mod proxy;
pub mod sniff;
pub mod upstream_pool;

/// What a runner knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// What the request may spend: deadlines, byte caps, the discard allowance.
    pub budget: Budget,
    /// `X-Call-Id`, or empty.
    pub call_id: String,
    /// The request's concurrency slot, with `max_inflight`: a runner whose work can
    /// outlive the client (a FastCGI worker still busy with an abandoned request) keeps a
    /// clone until that work is over, so the slot is not handed to the next request
    /// while the function is still running this one.
    pub slot: Option<crate::queue::Slot>,
}

/// `deadline` as milliseconds since the Unix epoch: what handlers are told
/// (`FWATCHDOG_DEADLINE_MS`, `X-Deadline-Ms`) so they can stop before they are cut off.
pub fn deadline_ms(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    (SystemTime::now() + left)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The request's `Content-Length`, when it has a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
