//! The one way a runner fails: a [`Failure`] answered by [`Failure::answer`], which
//! picks the status and text and always says how long the request took
//! (`X-Duration-Seconds`). The caller logs the cause, which it knows best.

use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::cgi;
use super::pipe::BodyEnd;
use crate::body::{self, Body};
use crate::duration::format_duration;
use crate::os::process::ExitStatus;

pub static X_DURATION: HeaderName = HeaderName::from_static("x-duration-seconds");

/// When a run must have answered, and which setting said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    /// The setting (or header) that set it: `exec_timeout`, `X-Timeout`, `write_timeout`.
    pub what: &'static str,
    pub limit: Duration,
}

impl Deadline {
    /// `exec_timeout exceeded (10s)`.
    pub fn exceeded(&self) -> String {
        format!("{} exceeded ({})", self.what, format_duration(self.limit))
    }
}

/// Why a runner answers without the function's response.
#[derive(Debug)]
pub enum Failure {
    /// The deadline came before the response head: 504.
    Timeout(Deadline),
    /// The upstream or FastCGI server gave no usable answer: 502 with this text.
    BadGateway(String),
    /// The handler's output is not a CGI response: 502 with a fixed text (the details
    /// quote the handler's output and go to the log only).
    Malformed,
    /// The FastCGI server said it is overloaded: 503.
    Overloaded,
    /// The request body could not be read whole: 413, 408, 400.
    Body(BodyEnd),
    /// The answer to hold whole grew past `max_response_bytes` (the limit): 500.
    ResponseTooLarge(u64),
    /// A request that cannot be passed on: 400 with this text.
    BadRequest(String),
    /// The handler could not be started, or its pipes set up: 500 with this text.
    Start(String),
    /// The handler failed before any output: 500 naming its exit status.
    Exit(ExitStatus),
}

impl Failure {
    /// The response, with `X-Duration-Seconds` measured from `started`.
    pub fn answer(self, started: Instant) -> Response<Body> {
        let (status, text) = match self {
            Failure::Timeout(d) => (StatusCode::GATEWAY_TIMEOUT, d.exceeded() + "\n"),
            Failure::BadGateway(why) => (StatusCode::BAD_GATEWAY, why + "\n"),
            Failure::Malformed => (StatusCode::BAD_GATEWAY, cgi::MALFORMED.to_owned()),
            Failure::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the FastCGI server is overloaded\n".to_owned(),
            ),
            Failure::Body(BodyEnd::TooLarge(max)) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than max_body_bytes ({max} bytes)\n"),
            ),
            Failure::Body(BodyEnd::Idle) => (
                StatusCode::REQUEST_TIMEOUT,
                "request body: client too slow (read_timeout)\n".to_owned(),
            ),
            Failure::Body(BodyEnd::Failed(why)) => (
                StatusCode::BAD_REQUEST,
                format!("request body could not be read: {why}\n"),
            ),
            Failure::Body(BodyEnd::Done(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected end of body\n".to_owned(),
            ),
            Failure::ResponseTooLarge(max) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("response exceeds max_response_bytes ({max})\n"),
            ),
            Failure::BadRequest(why) => (StatusCode::BAD_REQUEST, why + "\n"),
            Failure::Start(why) => (StatusCode::INTERNAL_SERVER_ERROR, why + "\n"),
            Failure::Exit(status) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{status}\n")),
        };
        let mut resp = body::text(status, text);
        resp.headers_mut()
            .insert(X_DURATION.clone(), duration_header(started));
        resp
    }
}

/// The 502 for output that is not a CGI response. The client gets a fixed text
/// ([`cgi::MALFORMED`]): the details quote the handler's output, which may be anything
/// (a password in an error message), so they go to the log only, after `who`.
pub fn malformed_cgi(
    who: &dyn std::fmt::Display,
    e: &cgi::HeadError,
    started: Instant,
) -> Response<Body> {
    tracing::warn!("{who}: malformed CGI response, answering 502: {e}");
    Failure::Malformed.answer(started)
}

/// `X-Duration-Seconds`: seconds since `started`, 6 decimals (integer formatting: no
/// float rounding work on every response).
pub fn duration_header(started: Instant) -> HeaderValue {
    seconds6(started.elapsed().as_micros())
}

/// `micros` as seconds with six decimals.
fn seconds6(micros: u128) -> HeaderValue {
    let (mut whole, mut frac) = (itoa::Buffer::new(), itoa::Buffer::new());
    let whole = whole.format(micros / 1_000_000).as_bytes();
    // 1_000_000 + the fraction: seven digits, the first dropped, so its zeros stay.
    let frac = &frac.format(1_000_000 + micros % 1_000_000).as_bytes()[1..];
    let mut buf = [0u8; 48];
    let n = whole.len();
    buf[..n].copy_from_slice(whole);
    buf[n] = b'.';
    buf[n + 1..n + 7].copy_from_slice(frac);
    HeaderValue::from_bytes(&buf[..n + 7]).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_seconds_keep_six_decimals_with_their_zeros() {
        for (micros, want) in [
            (0, "0.000000"),
            (123, "0.000123"),
            (1_500_000, "1.500000"),
            (61_000_007, "61.000007"),
        ] {
            assert_eq!(seconds6(micros).to_str().ok(), Some(want));
        }
    }

    #[test]
    fn every_failure_says_how_long_it_took() {
        let started = Instant::now() - Duration::from_millis(1500);
        let deadline = Deadline {
            at: started + Duration::from_secs(1),
            what: "exec_timeout",
            limit: Duration::from_secs(1),
        };
        let all = [
            (Failure::Timeout(deadline), 504),
            (Failure::BadGateway("x".into()), 502),
            (Failure::Malformed, 502),
            (Failure::Overloaded, 503),
            (Failure::Body(BodyEnd::Idle), 408),
            (Failure::Body(BodyEnd::TooLarge(3)), 413),
            (Failure::ResponseTooLarge(3), 500),
            (Failure::BadRequest("x".into()), 400),
            (Failure::Start("x".into()), 500),
            (Failure::Exit(ExitStatus::Code(3)), 500),
        ];
        for (f, status) in all {
            let what = format!("{f:?}");
            let resp = f.answer(started);
            assert_eq!(resp.status().as_u16(), status, "{what}");
            let secs: f64 = resp.headers()[&X_DURATION]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!(secs >= 1.5, "{what}: {secs}");
        }
        assert_eq!(deadline.exceeded(), "exec_timeout exceeded (1s)");
    }
}
