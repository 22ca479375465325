//! The runners: what answers a function request in each mode.
//!
//! `fork` starts one handler process per request (streaming, serializing, classic);
//! `proxy` proxies to one long-running handler that is an HTTP server; `files` serves a
//! folder (static mode); `fastcgi` talks FastCGI to a pool of warm workers.
//! Each runner takes a request whose auth and concurrency checks have passed and returns
//! the response; it never panics the server and always ends the work it started.

use std::io::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ::http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use pipe::BodyEnd;

pub mod cgi;
pub mod env;
pub mod fastcgi;
pub mod files;
pub mod fork;
pub mod pipe;
pub mod proxy;

/// What a runner knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The whole response must be written by then (`write_timeout` after the head).
    pub write_deadline: Instant,
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
        .get(::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `X-Duration-Seconds`: seconds since `started`, 6 decimals (integer formatting: no
/// float rounding work on every response).
pub(crate) fn duration_header(started: Instant) -> HeaderValue {
    let micros = started.elapsed().as_micros();
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let n = cur.position() as usize;
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("0"))
}

/// 413 for a body over `max_body_bytes`.
pub(crate) fn too_large(max: u64) -> Response<Body> {
    body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than max_body_bytes ({max} bytes)\n"),
    )
}

/// The answer for a request body that could not be read whole: 413, 408 or 400.
pub(crate) fn body_failure(end: BodyEnd, max: Option<u64>) -> Response<Body> {
    match end {
        BodyEnd::TooLarge => too_large(max.unwrap_or(0)),
        BodyEnd::Idle => body::text(
            StatusCode::REQUEST_TIMEOUT,
            "request body: client too slow (read_timeout)\n",
        ),
        BodyEnd::Failed(why) => body::text(
            StatusCode::BAD_REQUEST,
            format!("request body could not be read: {why}\n"),
        ),
        BodyEnd::Done(_) => body::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected end of body\n",
        ),
    }
}
