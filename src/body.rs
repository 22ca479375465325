//! Response and request body types shared by every runner.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body we send or hand to a runner.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text answer from fwatchdog itself.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(full(msg.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// fwatchdog's 405, naming the methods it would take (`Allow`).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
    resp.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// How many frames of a streamed response ([`Channel`]) wait for a slow client before
/// the runner feeding it waits too. A frame is one read of a handler's stdout or one
/// FastCGI `STDOUT` record, at most 64 KiB each; applications often write far smaller
/// ones (php flushes every 4 KiB), which a shorter queue would throttle. A client that
/// stops reading is cut off by the connection's write stall, not by this.
pub const RESPONSE_DEPTH: usize = 8;

/// A body fed frame by frame from a task. An `Err` frame aborts the response: hyper
/// closes the connection without the final chunk, so the client sees it incomplete.
pub struct Channel {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    /// An abort waiting for one `Pending` to pass first: hyper flushes what it has
    /// buffered when the body is not ready, so the output sent before the failure
    /// reaches the client before the connection is cut.
    stashed: Option<BoxError>,
}

impl Channel {
    pub fn new(depth: usize) -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, Channel) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, Channel { rx, stashed: None })
    }
}

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(e) = self.stashed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.stashed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

/// A body already in memory as a list of chunks (no concatenation copy).
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    pub fn new(chunks: impl Into<VecDeque<Bytes>>) -> Chunks {
        let chunks = chunks.into();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.chunks.pop_front() {
            Some(c) => {
                self.remaining -= c.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A simple error with a message, for aborting bodies.
#[derive(Debug)]
pub struct Abort(pub String);

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Abort {}
