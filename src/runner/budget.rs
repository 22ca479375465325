//! One budget per request: what a request may spend, built once and handed to every
//! runner.
//!
//! A [`Budget`] is made when the request head has been parsed
//! ([`crate::service::Shared::handle`]) and travels in [`super::Ctx`]. Every runner reads
//! and holds bodies only through it, so a new mode or path gets the same bounds by
//! construction instead of its own copy of them:
//!
//! - [`Budget::check_declared`]: a `Content-Length` over `max_body_bytes` is 413 before
//!   anything starts.
//! - [`Budget::collect`]: a body held whole must arrive within `read_timeout` of the
//!   request's start (else 408) and is capped by `max_body_bytes`, or 64 MiB when that
//!   is unlimited: nothing is ever held without a cap.
//! - [`Budget::stream`]: a body passed on as it arrives gets the same byte cap and a
//!   bound on silence (`read_timeout`); its errors say why it ended ([`BodyError`]), so
//!   no caller sniffs error chains.
//! - [`Budget::expired`]: nothing starts (a handler, an upstream request) once the
//!   request's write deadline has passed.
//! - [`Budget::run`]: the deadline of one run, `exec_timeout` (or a shorter `X-Timeout`,
//!   [`Budget::shorten`]) from now, never past the write deadline.
//! - [`Budget::output`]: an answer held whole is capped by `max_response_bytes` (or
//!   64 MiB).
//! - [`Budget::response`]: a response body still streaming at the write deadline is
//!   aborted.
//! - [`DISCARD`]: what is left of a body nobody reads is discarded up to 256 KiB (as
//!   Go's server does), never past the answer; then the connection is closed.
//!
//! The shape follows linkerd2-proxy's stream timeouts: the limits travel with the
//! request and are enforced in the body wrappers, not in each runner's loops.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use super::{content_length, Deadline, Failure};
use crate::body::{Abort, Body, BoxError};
use crate::config::Config;

/// The cap on anything held whole in memory when its setting says "no limit": a
/// collected request body without `max_body_bytes`, a buffered answer without
/// `max_response_bytes`.
pub const HOLD_DEFAULT: u64 = 64 * 1024 * 1024;

/// How much of a request body nobody reads (the handler exited or closed its input) is
/// still read and thrown away so that a client sending its whole body before reading can
/// finish; past it the connection is closed after the answer.
pub const DISCARD: u64 = 256 * 1024;

/// What one request may spend. Cheap to clone; every field is fixed when the request
/// head has been parsed except the run limit, which `X-Timeout` may shorten.
#[derive(Debug, Clone)]
pub struct Budget {
    /// When the request head was parsed: the origin of `X-Duration-Seconds`, always.
    pub started: Instant,
    /// `started + write_timeout`: the whole response must be written by then.
    pub write_deadline: Instant,
    write_timeout: Duration,
    /// `read_timeout`: the longest silence inside a body, and how long after `started`
    /// a body held whole may take to arrive.
    read_timeout: Duration,
    /// How long one run may take (`exec_timeout`, or a shorter `X-Timeout`).
    run_limit: Option<(&'static str, Duration)>,
    /// `max_body_bytes`.
    body_max: Option<u64>,
    /// `max_response_bytes`.
    response_max: Option<u64>,
}

impl Budget {
    /// The budget of a request whose head was parsed at `started`.
    pub fn new(cfg: &Config, started: Instant) -> Budget {
        Budget {
            started,
            write_deadline: started + cfg.timeouts.write,
            write_timeout: cfg.timeouts.write,
            read_timeout: cfg.timeouts.read,
            run_limit: cfg.timeouts.exec.map(|t| ("exec_timeout", t)),
            body_max: cfg.limits.max_body_bytes,
            response_max: cfg.limits.max_response_bytes,
        }
    }

    /// Shortens the run limit for this request (`X-Timeout`); never widens it.
    pub fn shorten(&mut self, what: &'static str, limit: Duration) {
        if self.run_limit.is_none_or(|(_, t)| limit < t) {
            self.run_limit = Some((what, limit));
        }
    }

    /// 413 when the request's `Content-Length` is over `max_body_bytes`.
    pub fn check_declared(&self, headers: &HeaderMap) -> Result<(), Failure> {
        match self.body_max {
            Some(max) if content_length(headers).is_some_and(|n| n > max) => {
                Err(Failure::Body(BodyEnd::TooLarge(max)))
            }
            _ => Ok(()),
        }
    }

    /// The write deadline as a [`Deadline`], for a failure that names it.
    pub fn write(&self) -> Deadline {
        Deadline {
            at: self.write_deadline,
            what: "write_timeout",
            limit: self.write_timeout,
        }
    }

    /// 504 when the write deadline has passed: checked before anything starts.
    pub fn expired(&self) -> Result<(), Failure> {
        if Instant::now() >= self.write_deadline {
            return Err(Failure::Timeout(self.write()));
        }
        Ok(())
    }

    /// When a run starting now must end: the run limit from now, never after the write
    /// deadline.
    pub fn run(&self) -> Deadline {
        let now = Instant::now();
        match self.run_limit {
            Some((what, t)) if now + t <= self.write_deadline => Deadline {
                at: now + t,
                what,
                limit: t,
            },
            _ => self.write(),
        }
    }

    /// The cap on a request body held whole.
    pub fn hold_max(&self) -> u64 {
        self.body_max.unwrap_or(HOLD_DEFAULT)
    }

    /// The cap on an answer held whole.
    pub fn response_max(&self) -> u64 {
        self.response_max.unwrap_or(HOLD_DEFAULT)
    }

    /// `body` as it arrives, with the byte cap (`max_body_bytes`) and the silence bound
    /// (`read_timeout`). Its errors are [`BodyError`]s.
    pub fn stream(&self, body: Body) -> Body {
        Metered::new(body, self.read_timeout, self.body_max, None).boxed_unsync()
    }

    /// Reads the whole body into memory: it must arrive within `read_timeout` of the
    /// request's start (and before the write deadline), with no silence longer than that,
    /// and hold at most [`Budget::hold_max`] bytes.
    pub async fn collect(&self, body: Body) -> Result<(Vec<Bytes>, u64), Failure> {
        let by = (self.started + self.read_timeout).min(self.write_deadline);
        let body = Metered::new(body, self.read_timeout, Some(self.hold_max()), Some(by));
        hold_whole(body.boxed_unsync()).await.map_err(Failure::Body)
    }

    /// A place for an answer held whole, capped by `max_response_bytes`.
    pub fn output(&self) -> Output {
        Output {
            chunks: Vec::new(),
            len: 0,
            max: self.response_max(),
        }
    }

    /// `body`, aborted if it is still streaming at the write deadline.
    pub fn response<B>(&self, body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        Timed::new(body, self.write()).boxed_unsync()
    }
}

/// Reads one frame's data; `Ok(None)` at the end of the body. The bounds (silence,
/// size) are the body's own: it comes through a [`Budget`].
pub(super) async fn next_data(body: &mut Body) -> Result<Option<Bytes>, BodyEnd> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(BodyEnd::of(&*e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A body up to this size is kept as the frames it arrived in.
const KEEP_FRAMES: u64 = 64 * 1024;
/// Past that, frames are copied into blocks of this size.
const BLOCK: usize = 1 << 20;

/// Reads the whole body into memory; its bounds are the body's own (see
/// [`Budget::collect`]). A small body stays in the frames it arrived in; a larger
/// one is copied into full blocks of [`BLOCK`] bytes (the last one trimmed). A frame is a
/// slice of the connection's read buffer and keeps the whole buffer alive, including the
/// room past it that the next read did not use; the copy costs one memcpy of the body
/// and keeps memory close to the body's size, whatever the allocator recycles.
async fn hold_whole(mut body: Body) -> Result<(Vec<Bytes>, u64), BodyEnd> {
    let mut chunks = Vec::new();
    let mut block: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    while let Some(data) = next_data(&mut body).await? {
        total += data.len() as u64;
        if total <= KEEP_FRAMES {
            if !data.is_empty() {
                chunks.push(data);
            }
            continue;
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            if block.len() == block.capacity() {
                if !block.is_empty() {
                    chunks.push(Bytes::from(std::mem::take(&mut block)));
                }
                block.reserve_exact(BLOCK);
            }
            let n = rest.len().min(block.capacity() - block.len());
            block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    if !block.is_empty() {
        block.shrink_to_fit();
        chunks.push(Bytes::from(block));
    }
    Ok((chunks, total))
}

/// How reading a request body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// All of it was read; this many bytes.
    Done(u64),
    /// It grew past this limit (`max_body_bytes`, or the cap on a body held whole).
    TooLarge(u64),
    /// The client was silent for longer than `read_timeout`, or did not send a body held
    /// whole within `read_timeout` of the request's start.
    Idle,
    /// The client went away or sent a malformed body.
    Failed(String),
}

/// The error of a body read through the budget: why it ended.
#[derive(Debug, Clone)]
pub struct BodyError(pub BodyEnd);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            BodyEnd::Done(n) => write!(f, "request body ended after {n} bytes"),
            BodyEnd::TooLarge(max) => write!(f, "request body larger than {max} bytes"),
            BodyEnd::Idle => f.write_str("request body: client too slow (read_timeout)"),
            BodyEnd::Failed(why) => write!(f, "request body failed: {why}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl BodyEnd {
    /// Why a body read through the budget failed: the [`BodyError`] it carries (also
    /// when wrapped by hyper), else the error's text.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> BodyEnd {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(b) = c.downcast_ref::<BodyError>() {
                return b.0.clone();
            }
            cause = c.source();
        }
        BodyEnd::Failed(e.to_string())
    }
}

/// A request body with a byte cap, a bound on silence, and optionally an instant by
/// which it must have ended. The silence timer is armed only when a read has to wait.
struct Metered {
    inner: Body,
    idle: Duration,
    max: Option<u64>,
    by: Option<Instant>,
    seen: u64,
    timer: Option<Pin<Box<Sleep>>>,
    /// A read is waiting and the timer runs for it.
    waiting: bool,
}

impl Metered {
    fn new(inner: Body, idle: Duration, max: Option<u64>, by: Option<Instant>) -> Metered {
        Metered {
            inner,
            idle,
            max,
            by,
            seen: 0,
            timer: None,
            waiting: false,
        }
    }

    fn fail(end: BodyEnd) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err(Box::new(BodyError(end)))))
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if let Some(max) = this.max.filter(|m| this.seen > *m) {
                        return Metered::fail(BodyEnd::TooLarge(max));
                    }
                }
                if this.by.is_some_and(|by| Instant::now() >= by) {
                    return Metered::fail(BodyEnd::Idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let end = BodyEnd::of(&*e);
                Metered::fail(end)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let mut at = Instant::now() + this.idle;
                    if let Some(by) = this.by {
                        at = at.min(by);
                    }
                    match this.timer.as_mut() {
                        Some(t) => t.as_mut().reset(at.into()),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
                    }
                }
                match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Metered::fail(BodyEnd::Idle),
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body aborted if it is still streaming at its deadline. The timer is
/// armed only once the body has to wait, so a response that is already complete costs
/// none.
pub struct Timed<B> {
    inner: B,
    deadline: Deadline,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> Timed<B> {
    pub fn new(inner: B, deadline: Deadline) -> Timed<B> {
        Timed {
            inner,
            deadline,
            sleep: None,
        }
    }
}

impl<B> http_body::Body for Timed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = this.deadline.at;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                tracing::info!(
                    "response still streaming at its deadline, aborted: {}",
                    this.deadline.exceeded()
                );
                Poll::Ready(Some(Err(this.deadline.abort())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Deadline {
    /// The error that aborts a response body at this deadline: the client sees the
    /// response cut off.
    pub fn abort(&self) -> BoxError {
        Box::new(Abort(self.exceeded()))
    }
}

/// An answer held whole (serializing, classic), capped by `max_response_bytes`.
#[derive(Debug)]
pub struct Output {
    chunks: Vec<Bytes>,
    len: u64,
    max: u64,
}

/// The answer went past `max_response_bytes` (this limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCap(pub u64);

impl Output {
    /// Adds a chunk, or says the answer is over the cap (the chunk is not kept).
    pub fn push(&mut self, data: Bytes) -> Result<(), OverCap> {
        self.len += data.len() as u64;
        if self.len > self.max {
            return Err(OverCap(self.max));
        }
        self.chunks.push(data);
        Ok(())
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collected_bodies_keep_every_byte_in_order() {
        for len in [0usize, 1, 1000, 64 * 1024, 64 * 1024 + 1, 3 * BLOCK + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            // Frames of an awkward size, so blocks and frames never line up.
            let frames: Vec<Bytes> = data.chunks(40_000).map(Bytes::copy_from_slice).collect();
            let body = crate::body::Chunks::new(frames);
            let body = http_body_util::BodyExt::boxed_unsync(body);
            let (chunks, total) = hold_whole(body).await.expect("collect");
            assert_eq!(total, len as u64);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, data, "{len} bytes");
            assert!(chunks.iter().all(|c| !c.is_empty()));
            if len > 2 * BLOCK {
                // Full blocks, not one chunk per frame.
                assert!(chunks.len() <= 2 + len / BLOCK, "{} chunks", chunks.len());
            }
        }
    }

    fn budget(env: &[(&str, &str)]) -> Budget {
        let cfg = Config::from_env_pairs(env).expect("config");
        Budget::new(&cfg, Instant::now())
    }

    /// A body that sends `first`, then nothing, ever.
    fn stalled(first: &'static [u8]) -> Body {
        let (tx, chan) = crate::body::Channel::new(1);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(first)))).await;
            std::future::pending::<()>().await;
        });
        chan.boxed_unsync()
    }

    /// A body that sends one byte every `every`, for ever.
    fn trickle(every: Duration) -> Body {
        let (tx, chan) = crate::body::Channel::new(1);
        tokio::spawn(async move {
            while tx
                .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .is_ok()
            {
                tokio::time::sleep(every).await;
            }
        });
        chan.boxed_unsync()
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_413() {
        let b = budget(&[("fprocess", "cat"), ("max_body_bytes", "10")]);
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, "11".parse().expect("value"));
        let resp = b.check_declared(&h).expect_err("over").answer(b.started);
        assert_eq!(resp.status(), 413);
        h.insert(http::header::CONTENT_LENGTH, "10".parse().expect("value"));
        assert!(b.check_declared(&h).is_ok());
    }

    #[tokio::test]
    async fn a_run_never_ends_after_the_write_deadline_and_x_timeout_only_shortens() {
        let mut b = budget(&[
            ("fprocess", "cat"),
            ("write_timeout", "2s"),
            ("exec_timeout", "5s"),
        ]);
        assert_eq!(b.run().what, "write_timeout");
        b.shorten("X-Timeout", Duration::from_secs(10));
        assert_eq!(b.run().what, "write_timeout");
        b.shorten("X-Timeout", Duration::from_secs(1));
        let d = b.run();
        assert_eq!((d.what, d.limit), ("X-Timeout", Duration::from_secs(1)));
        assert!(d.at <= b.write_deadline);
    }

    #[tokio::test]
    async fn nothing_starts_after_the_write_deadline() {
        let b = budget(&[("fprocess", "cat"), ("write_timeout", "1ms")]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let resp = b.expired().expect_err("past").answer(b.started);
        assert_eq!(resp.status(), 504);
    }

    #[tokio::test]
    async fn a_collected_body_must_arrive_within_read_timeout_of_the_start() {
        // Never silent for 200 ms, yet never done: cut at read_timeout from the start.
        let b = budget(&[("fprocess", "cat"), ("read_timeout", "200ms")]);
        let t = Instant::now();
        let got = b.collect(trickle(Duration::from_millis(20))).await;
        assert!(matches!(got, Err(Failure::Body(BodyEnd::Idle))), "{got:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_collected_body_is_capped_without_max_body_bytes() {
        let b = budget(&[("fprocess", "cat"), ("mode", "streaming")]);
        assert_eq!(b.hold_max(), HOLD_DEFAULT);
        let b = budget(&[("fprocess", "cat"), ("max_body_bytes", "5")]);
        let got = b.collect(crate::body::full("123456")).await;
        assert!(matches!(got, Err(Failure::Body(BodyEnd::TooLarge(5)))));
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_after_a_silence_and_past_its_cap() {
        let b = budget(&[
            ("fprocess", "cat"),
            ("read_timeout", "100ms"),
            ("max_body_bytes", "4"),
        ]);
        let mut body = b.stream(stalled(b"ab"));
        assert_eq!(
            body.frame()
                .await
                .expect("frame")
                .expect("data")
                .into_data()
                .ok(),
            Some(Bytes::from_static(b"ab"))
        );
        let e = body.frame().await.expect("frame").expect_err("silence");
        assert_eq!(BodyEnd::of(&*e), BodyEnd::Idle);
        let mut body = b.stream(crate::body::full("12345"));
        let e = body.frame().await.expect("frame").expect_err("cap");
        assert_eq!(BodyEnd::of(&*e), BodyEnd::TooLarge(4));
    }

    #[tokio::test]
    async fn an_output_over_its_cap_is_refused() {
        let b = budget(&[("fprocess", "cat"), ("max_response_bytes", "5")]);
        let mut out = b.output();
        assert!(out.push(Bytes::from_static(b"abc")).is_ok());
        assert_eq!(out.push(Bytes::from_static(b"def")), Err(OverCap(5)));
        assert_eq!(out.chunks().len(), 1);
    }

    #[tokio::test]
    async fn a_response_still_streaming_at_the_write_deadline_is_aborted() {
        let b = budget(&[("fprocess", "cat"), ("write_timeout", "100ms")]);
        let mut body = b.response(stalled(b"ab"));
        assert!(body.frame().await.expect("frame").is_ok());
        let e = body.frame().await.expect("frame").expect_err("abort");
        assert_eq!(e.to_string(), "write_timeout exceeded (100ms)");
    }
}
