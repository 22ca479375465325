//! The client's byte stream, with a bound on how long a write may make no progress.
//!
//! hyper has no write timeout. When a client stops reading, the socket's send buffer
//! fills, hyper waits in `poll_write`, and it never polls the response body again: no
//! timer inside the body (nor the handler's deadline) can end the connection, which
//! would keep its descriptor and a fully buffered serializing response until the client
//! goes away. [`Stream`] fails a write that has made no progress for `write_timeout`;
//! hyper then drops the connection and, with it, the response and whatever handler
//! still feeds it. The timer is armed only when a write returns `Pending`, so a write
//! that goes through costs one branch.
//!
//! A client that reads, but too slowly, makes progress now and then and is never
//! stalled for long; so a write also fails when it is still stalled at the response's
//! write deadline ([`WriteDeadline`], `write_timeout` after the request began): the
//! whole response must be written by then, whatever reads it. A tunnelled upgrade
//! (http mode websockets) lifts that deadline and may live on as long as its peer keeps
//! reading.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// When the response being written must be done, shared by a connection's [`Stream`]
/// and the requests on it: set when a request begins, lifted for a tunnel.
#[derive(Debug, Clone, Default)]
pub struct WriteDeadline(std::sync::Arc<std::sync::Mutex<Option<Instant>>>);

impl WriteDeadline {
    fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream whose writes fail once they have been stalled for `limit`, or are stalled
/// at the response's write deadline.
pub struct Stream<T> {
    inner: T,
    limit: Duration,
    deadline: WriteDeadline,
    /// Allocated at the first stall, then reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// The last write returned `Pending` and the timer runs for it.
    stalled: bool,
}

impl<T> Stream<T> {
    pub fn new(inner: T, limit: Duration, deadline: WriteDeadline) -> Stream<T> {
        Stream {
            inner,
            limit,
            deadline,
            timer: None,
            stalled: false,
        }
    }

    /// Called when the inner write is `Pending`: arms the timer on the first stall, and
    /// turns an expired one into an error.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.stalled {
            self.stalled = true;
            let mut at = Instant::now() + self.limit;
            if let Some(d) = self.deadline.get() {
                at = at.min(d);
            }
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client too slow: write stalled for write_timeout, or past the response's write deadline",
            ))),
            _ => Poll::Pending,
        }
    }

    fn progress<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A flush that is done says nothing about the client reading: only a write that
        // went through ends a stall.
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stall(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A share in a client connection's place among the open ones: the connection counts
/// as open (`max_connections`, the drain) while any share is alive. Each request carries
/// one in its extensions, so that what outlives hyper's hold on the connection (a
/// websocket tunnel, once the upgrade has resolved) keeps it counted.
/// It also carries the connection's [`WriteDeadline`].
#[derive(Clone)]
pub struct Held(std::sync::Arc<Share>);

struct Share {
    _guard: Box<dyn Send + Sync>,
    deadline: WriteDeadline,
    write_timeout: Duration,
}

impl Held {
    /// A share in `guard`, which is dropped with the last share; `deadline` is the one
    /// the connection's [`Stream`] obeys.
    pub fn new<G: Send + Sync + 'static>(
        guard: G,
        deadline: WriteDeadline,
        write_timeout: Duration,
    ) -> Held {
        Held(std::sync::Arc::new(Share {
            _guard: Box::new(guard),
            deadline,
            write_timeout,
        }))
    }

    /// A request begins: its response must be written within `write_timeout`.
    pub fn request_begins(&self) {
        let share = &self.0;
        share
            .deadline
            .set(Some(Instant::now() + share.write_timeout));
    }

    /// The connection becomes a tunnel: it lives as long as its peers keep reading.
    pub fn lift_write_deadline(&self) {
        self.0.deadline.set(None);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut s = Stream::new(a, Duration::from_millis(100), WriteDeadline::default());
        let started = std::time::Instant::now();
        let err = s
            .write_all(&[0u8; 64 * 1024])
            .await
            .expect_err("stalled write");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut s = Stream::new(a, Duration::from_millis(200), WriteDeadline::default());
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            // Each read frees room well within the limit; the whole copy takes longer.
            while got < 16 * 1024 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                got += b.read(&mut buf).await.expect("read");
            }
            got
        });
        s.write_all(&[1u8; 16 * 1024]).await.expect("steady write");
        assert_eq!(reader.await.expect("reader"), 16 * 1024);
    }

    /// Before, a reader slow enough to stall each write, but never for long, kept a
    /// response going for as long as it lasted.
    #[tokio::test]
    async fn a_steady_reader_is_cut_at_the_write_deadline() {
        let (a, mut b) = tokio::io::duplex(1024);
        let deadline = WriteDeadline::default();
        deadline.set(Some(Instant::now() + Duration::from_millis(300)));
        let mut s = Stream::new(a, Duration::from_secs(60), deadline);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n) = b.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let err = s
            .write_all(&[1u8; 1 << 20])
            .await
            .expect_err("cut at the deadline");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(s);
        reader.await.expect("reader");
    }
}
