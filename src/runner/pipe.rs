//! Copying between an HTTP body and a handler's pipes, over `AsyncRead`/`AsyncWrite` so
//! it can be tested with in-memory pipes.
//!
//! The request body is written to stdin *while* stdout is read (by the caller), and
//! stderr is split into log lines beside them: a handler may write before it reads, stop
//! reading, or flood stderr, and nothing deadlocks.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes};
use http_body::Body as _;
use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

pub use super::budget::BodyEnd;
use super::budget::{next_data, DISCARD};
use crate::body::Body;

/// Copies `body` into `stdin` and closes it. When the handler stops reading (its stdin
/// is closed), at most [`DISCARD`] more bytes are read and thrown away, so a client that
/// sends its whole body before reading its answer can finish; past that the copy ends
/// and the body is dropped, which closes the connection after the answer. The caller
/// ends the copy when the answer is over: nothing is read after it.
pub async fn body_to_stdin<W>(body: Body, stdin: W) -> BodyEnd
where
    W: AsyncWrite + Unpin,
{
    copy_to_stdin(None, body, stdin).await
}

/// [`body_to_stdin`], with `first` already read from the body.
async fn copy_to_stdin<W>(mut first: Option<Bytes>, mut body: Body, stdin: W) -> BodyEnd
where
    W: AsyncWrite + Unpin,
{
    let mut stdin = Some(stdin);
    let mut total: u64 = 0;
    let mut discarded: u64 = 0;
    loop {
        let data = match first.take() {
            Some(d) => d,
            None => match next_data(&mut body).await {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(end) => return end,
            },
        };
        total += data.len() as u64;
        match stdin.as_mut() {
            Some(w) => {
                if w.write_all(&data).await.is_err() {
                    stdin = None;
                }
            }
            None => {
                discarded += data.len() as u64;
                if discarded > DISCARD {
                    break;
                }
            }
        }
    }
    if let Some(mut w) = stdin {
        let _ = w.shutdown().await;
    }
    BodyEnd::Done(total)
}

/// Feeds the request body to the handler's stdin: `stdin` is our non-blocking end of its
/// pipe. A body that has already arrived whole (none at all, or a small POST in one
/// frame) is written at once and stdin closed, with no task and without registering the
/// pipe with the reactor: that spares two `epoll_ctl` calls and a wake-up per request.
/// Anything else is copied by a task, as [`body_to_stdin`] does, starting with what was
/// read here; its outcome is the returned handle's. `None`: the whole body was read.
pub async fn feed_stdin(mut body: Body, stdin: OwnedFd) -> io::Result<Option<JoinHandle<BodyEnd>>> {
    let first = if http_body::Body::is_end_stream(&body) {
        None
    } else {
        // One look at what has arrived; a body still on its way goes to the task.
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(None) => None,
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            Poll::Ready(Some(Err(e))) => {
                let end = BodyEnd::of(&*e);
                return Ok(Some(tokio::spawn(async move { end })));
            }
            Poll::Pending => return spawn_copy(None, body, stdin).map(Some),
        }
    };
    let mut data = match first {
        _ if !http_body::Body::is_end_stream(&body) => {
            return spawn_copy(first, body, stdin).map(Some)
        }
        None => return Ok(None), // no body: dropping `stdin` closes it
        Some(data) => data,
    };
    let written = loop {
        match nix::unistd::write(&stdin, &data) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => break 0,
            // The handler closed its stdin: the body is read, there is nowhere to put it.
            Err(_) => return Ok(None),
        }
    };
    if written == data.len() {
        return Ok(None);
    }
    // The pipe is full (a body larger than its buffer): the task writes the rest.
    data.advance(written);
    spawn_copy(Some(data), body, stdin).map(Some)
}

fn spawn_copy(first: Option<Bytes>, body: Body, stdin: OwnedFd) -> io::Result<JoinHandle<BodyEnd>> {
    let stdin = tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(stdin)?;
    Ok(tokio::spawn(copy_to_stdin(first, body, stdin)))
}

/// Logs a long-running process's stdout and stderr line by line (an http upstream, a
/// FastCGI worker), each on its own task until the pipe closes.
pub fn log_output(
    child: &mut crate::os::process::Child,
    max: Option<usize>,
    prefix: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (stream, fd) in [
        ("stdout", child.stdout.take()),
        ("stderr", child.stderr.take()),
    ] {
        let Some(rx) = fd.and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
        else {
            continue;
        };
        let sink = LogSink::new(stream, max, prefix, String::new());
        tasks.push(tokio::spawn(sink.read_from(rx)));
    }
    tasks
}

/// Splits a byte stream into log lines. A line longer than `max` bytes (never more than
/// [`LONGEST_LINE`](crate::logging::LONGEST_LINE), whatever `max` says) is emitted in
/// pieces of `max`, so a reader never has to hold (or wait for) a whole huge line; a
/// trailing `\r` is removed; [`finish`](Self::finish) emits a last line that had no
/// newline.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: Option<usize>,
}

impl LineSplitter {
    pub fn new(max: Option<usize>) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max: Some(
                max.unwrap_or(crate::logging::LONGEST_LINE)
                    .clamp(1, crate::logging::LONGEST_LINE),
            ),
        }
    }

    /// Feeds more bytes; calls `emit` for every line they complete.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            let line = &data[..pos];
            data = &data[pos + 1..];
            if self.buf.is_empty() {
                // The common case: a whole line in one read, emitted without a copy.
                let line = strip_cr(line);
                match self.max {
                    Some(max) if line.len() > max => line.chunks(max).for_each(&mut *emit),
                    _ => emit(line),
                }
            } else {
                self.append(line, emit);
                emit(strip_cr(&self.buf));
                self.buf.clear();
            }
        }
        self.append(data, emit);
    }

    /// Emits what is left of a last line without a newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(strip_cr(&self.buf));
            self.buf.clear();
        }
    }

    fn append(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        let Some(max) = self.max else {
            self.buf.extend_from_slice(data);
            return;
        };
        while !data.is_empty() {
            // A full piece goes out only once more of the same line follows, so a line of
            // exactly `max` bytes is one line, not one plus an empty one.
            if self.buf.len() >= max {
                emit(&self.buf);
                self.buf.clear();
            }
            let take = (max - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }
}

/// A handler's stdout or stderr copied into the log line by line
/// ([`crate::logging::handler_line`]), each line tagged with the stream and the request.
/// A last line without a newline is logged by [`LogSink::finish`], or when the sink is
/// dropped.
#[derive(Debug)]
pub struct LogSink {
    split: LineSplitter,
    stream: &'static str,
    prefix: bool,
    call_id: String,
}

impl LogSink {
    /// The lines of `stream` (`stdout`, `stderr`), split at `max` bytes
    /// (`log_buffer_size`), with the date and stream first when `prefix`, tagged with
    /// `call_id` (empty: no request).
    pub fn new(stream: &'static str, max: Option<usize>, prefix: bool, call_id: String) -> LogSink {
        LogSink {
            split: LineSplitter::new(max),
            stream,
            prefix,
            call_id,
        }
    }

    /// Logs every line `data` completes.
    pub fn push(&mut self, data: &[u8]) {
        let (stream, prefix, id) = (self.stream, self.prefix, &self.call_id);
        self.split.push(data, &mut |l| {
            crate::logging::handler_line(stream, l, prefix, id)
        });
    }

    /// Logs what is left of a last line without a newline.
    pub fn finish(&mut self) {
        let (stream, prefix, id) = (self.stream, self.prefix, &self.call_id);
        self.split
            .finish(&mut |l| crate::logging::handler_line(stream, l, prefix, id));
    }

    /// Logs what `r` gives until its end (or an error).
    pub async fn read_from<R: AsyncRead + Unpin>(mut self, mut r: R) {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.push(&chunk[..n]),
            }
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.finish();
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    /// `r` split into lines as [`LogSink::read_from`] splits it, each given to `emit`.
    async fn lines<R: AsyncRead + Unpin>(
        mut r: R,
        max: Option<usize>,
        mut emit: impl FnMut(&[u8]),
    ) {
        let mut split = LineSplitter::new(max);
        let mut chunk = [0u8; 8192];
        loop {
            let n = match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            split.push(&chunk[..n], &mut emit);
        }
        split.finish(&mut emit);
    }

    async fn split(input: &[u8], max: Option<usize>) -> Vec<Vec<u8>> {
        let (mut w, r) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            w.write_all(&input).await.expect("write");
        });
        let mut out = Vec::new();
        lines(r, max, |l| out.push(l.to_vec())).await;
        writer.await.expect("writer");
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_last_partial_one() {
        let out = split(b"one\ntwo\r\n\nthree", Some(100)).await;
        assert_eq!(
            out,
            [
                b"one".to_vec(),
                b"two".to_vec(),
                b"".to_vec(),
                b"three".to_vec()
            ]
        );
    }

    fn split_all(input: &[&[u8]], max: Option<usize>) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in input {
            s.push(chunk, &mut |l: &[u8]| out.push(l.to_vec()));
        }
        s.finish(&mut |l: &[u8]| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splitter_handles_pieces_limits_and_a_last_partial_line() {
        let out = split_all(&[b"one\ntw", b"o\r\n\nthr", b"ee"], Some(100));
        assert_eq!(out, [&b"one"[..], b"two", b"", b"three"]);
        let out = split_all(&[b"abcdefghij\n"], Some(4));
        assert_eq!(out, [&b"abcd"[..], b"efgh", b"ij"]);
        let out = split_all(&[b"abcd", b"efgh\n"], Some(4));
        assert_eq!(out, [&b"abcd"[..], b"efgh"], "no empty piece");
        let out = split_all(&[b"ab", b"cdefghij", b"k\n"], Some(4));
        assert_eq!(out, [&b"abcd"[..], b"efgh", b"ijk"]);
        let big = vec![b'z'; 200_000];
        let out = split_all(&[&big, b"\n"], None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 200_000);
    }

    /// "No limit" and limits past the log's own are split at the longest line the log
    /// takes: the splitter once held a 256 MiB line without a newline whole (and the
    /// log copied it twice more, 868 MB in all).
    #[test]
    fn no_piece_is_longer_than_the_log_takes() {
        use crate::logging::LONGEST_LINE;
        let big = vec![b'z'; 2 * LONGEST_LINE + 5];
        for max in [None, Some(1 << 30)] {
            let out = split_all(&[&big[..3], &big[3..]], max);
            let lens: Vec<usize> = out.iter().map(Vec::len).collect();
            assert_eq!(lens, [LONGEST_LINE, LONGEST_LINE, 5], "{max:?}");
            let out = split_all(&[&big, b"\n"], max);
            let lens: Vec<usize> = out.iter().map(Vec::len).collect();
            assert_eq!(lens, [LONGEST_LINE, LONGEST_LINE, 5], "{max:?}");
        }
    }

    #[tokio::test]
    async fn body_is_copied() {
        let (w, mut r) = tokio::io::duplex(1 << 20);
        let end = body_to_stdin(crate::body::full(vec![7u8; 1000]), w).await;
        assert_eq!(end, BodyEnd::Done(1000));
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), 1000);
    }

    /// Before, the rest of an upload nobody read was read for as long as the client
    /// sent it (`fprocess="echo hi"` and an endless chunked POST: 25.6 GB read in 15 s
    /// after the answer).
    #[tokio::test]
    async fn a_body_nobody_reads_is_discarded_only_up_to_the_allowance() {
        let (w, r) = tokio::io::duplex(16);
        drop(r);
        let end = body_to_stdin(crate::body::full(vec![1u8; 100_000]), w).await;
        assert_eq!(end, BodyEnd::Done(100_000));

        let (w, r) = tokio::io::duplex(16);
        drop(r);
        let (tx, chan) = crate::body::Channel::new(1);
        let sender = tokio::spawn(async move {
            let mut sent = 0u64;
            let frame = Bytes::from(vec![0u8; 8192]);
            while tx
                .send(Ok(http_body::Frame::data(frame.clone())))
                .await
                .is_ok()
            {
                sent += frame.len() as u64;
            }
            sent
        });
        let end = body_to_stdin(chan.boxed_unsync(), w).await;
        let sent = sender.await.expect("sender");
        assert!(matches!(end, BodyEnd::Done(_)), "{end:?}");
        assert!(
            sent <= DISCARD + 4 * 8192,
            "read {sent} bytes nobody wanted"
        );
    }

    /// A handler's stdin pipe as `feed_stdin` gets it: our end non-blocking.
    fn stdin_pipe() -> (tokio::net::unix::pipe::Receiver, OwnedFd) {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .expect("pipe2");
        let r = tokio::net::unix::pipe::Receiver::from_owned_fd(r).expect("receiver");
        (r, w)
    }

    #[tokio::test]
    async fn a_whole_body_is_written_at_once_and_a_larger_one_by_the_task() {
        // None, or one small frame: written here, stdin closed, no task.
        for body in [crate::body::empty(), crate::body::full(&b"hello\n"[..])] {
            let want = body.size_hint().exact().expect("exact");
            let (mut r, w) = stdin_pipe();
            assert!(feed_stdin(body, w).await.expect("feed").is_none());
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("read");
            assert_eq!(got.len() as u64, want);
        }
        // Whole but larger than the pipe holds: what fits now, the rest by the task.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, w) = stdin_pipe();
        let task = feed_stdin(crate::body::full(data.clone()), w)
            .await
            .expect("feed")
            .expect("a task for the rest");
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        assert!(got == data, "{} bytes back of {}", got.len(), data.len());
        assert!(matches!(task.await.expect("task"), BodyEnd::Done(_)));
        // Still arriving: all of it goes to the task.
        let (tx, chan) = crate::body::Channel::new(1);
        let (mut r, w) = stdin_pipe();
        let task = feed_stdin(chan.boxed_unsync(), w)
            .await
            .expect("feed")
            .expect("task");
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"late"))))
            .await
            .expect("send");
        drop(tx);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"late");
        assert_eq!(task.await.expect("task"), BodyEnd::Done(4));
    }
}
