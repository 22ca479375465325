//! The log queue and the one thread that writes it to stderr.
//!
//! Lines wait in a bounded queue; when stderr is not read, the oldest are dropped (and
//! counted) so that logging never blocks the request path.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::time::{write_json_time, write_text_time};
use super::DROPPED;
use crate::config::LogFormat;

/// The writer gathers lines into writes of about this size.
const WRITE_CHUNK: usize = 64 * 1024;
/// After a write the writer waits this long before looking at the queue again, so under
/// load lines gather into one write and the server does not wake the writer thread (a
/// system call and a cross-thread wakeup) for every line. At 2 ms a request every
/// ~1.5 ms still woke it each time (~50 µs of CPU per request, measured with wrk at one
/// connection); 25 ms batches a dozen requests per write and delays no line noticeably. An idle log costs nothing: the
/// writer then sleeps until the next line.
const LINGER: Duration = Duration::from_millis(25);

pub(super) struct Queue {
    format: LogFormat,
    cap: usize,
    pending: Mutex<Pending>,
    /// The writer waits here for lines.
    wake: Condvar,
    /// `flush` waits here for the queue to empty.
    idle: Condvar,
}

#[derive(Default)]
pub(super) struct Pending {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Dropped since the writer last reported it.
    dropped: u64,
    /// The writer is asleep on `wake`.
    waiting: bool,
    /// The writer holds lines it has not finished writing.
    busy: bool,
    /// No writer thread could be started: lines are written by whoever logs.
    direct: bool,
    /// Until the server is ready, a line is written by whoever logs it when stderr takes
    /// it at once: the startup lines are out before health answers 200 without waiting
    /// for the writer thread to be scheduled (milliseconds on a busy machine).
    eager: bool,
    /// Someone waits in `flush`: the writer skips its linger.
    urgent: bool,
}

type Sink = Box<dyn std::io::Write + Send>;

impl Queue {
    pub(super) fn start(format: LogFormat, out: Sink, cap: usize) -> Arc<Queue> {
        let q = Arc::new(Queue {
            format,
            cap,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let writer = q.clone();
        let spawned = std::thread::Builder::new()
            .name("fwatchdog-log".into())
            .spawn(move || writer.run(out));
        if spawned.is_err() {
            q.lock().direct = true;
        }
        q
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starting up: lines go straight to stderr while it takes them at once (see
    /// [`Pending::eager`]), until [`Queue::started`].
    pub(super) fn write_through_until_started(&self) {
        self.lock().eager = true;
    }

    /// The server is ready: lines are queued from now on, and whatever could not be
    /// written at once is written before this returns (or after `timeout`).
    pub(super) fn started(&self, timeout: Duration) {
        self.lock().eager = false;
        self.flush(timeout);
    }

    /// Queues one rendered line; never blocks on the output.
    pub(super) fn push(&self, line: Vec<u8>) {
        let mut p = self.lock();
        if p.direct {
            drop(p);
            let _ = std::io::stderr().write_all(&line);
            return;
        }
        // Nothing queued ahead of it, so writing it here keeps the order.
        if p.eager && p.lines.is_empty() && !p.busy && stderr_takes_now(line.len()) {
            let _ = std::io::stderr().write_all(&line);
            return;
        }
        while !p.lines.is_empty() && p.bytes + line.len() > self.cap {
            if let Some(old) = p.lines.pop_front() {
                p.bytes -= old.len();
                p.dropped += 1;
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        p.bytes += line.len();
        p.lines.push_back(line);
        let wake = p.waiting;
        drop(p);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits until every queued line is written, or `timeout`.
    pub(super) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut p = self.lock();
        p.urgent = true;
        self.wake.notify_all();
        while !p.direct && (p.busy || !p.lines.is_empty() || p.dropped > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            p = match self.idle.wait_timeout(p, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// The writer thread: takes everything queued at once and writes it in large writes.
    fn run(&self, mut out: Sink) {
        let mut batch: VecDeque<Vec<u8>> = VecDeque::new();
        // Taken on first use: a watchdog that has logged nothing since startup holds none.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let dropped = {
                let mut p = self.lock();
                while p.lines.is_empty() && p.dropped == 0 {
                    p.waiting = true;
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                p.waiting = false;
                p.busy = true;
                std::mem::swap(&mut p.lines, &mut batch);
                p.bytes = 0;
                std::mem::take(&mut p.dropped)
            };
            buf.reserve(WRITE_CHUNK);
            if dropped > 0 {
                buf.extend_from_slice(&self.dropped_notice(dropped));
            }
            let mut failed = false;
            for line in batch.drain(..) {
                if failed {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if buf.len() + line.len() > WRITE_CHUNK && !buf.is_empty() {
                    failed = write_patiently(&mut out, &buf).is_err();
                    buf.clear();
                }
                if failed {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                } else if line.len() >= WRITE_CHUNK {
                    failed = write_patiently(&mut out, &line).is_err();
                } else {
                    buf.extend_from_slice(&line);
                }
            }
            if !buf.is_empty() && !failed {
                let _ = write_patiently(&mut out, &buf);
            }
            buf.clear();
            if buf.capacity() > 4 * WRITE_CHUNK {
                buf = Vec::with_capacity(WRITE_CHUNK);
            }
            let mut p = self.lock();
            p.busy = false;
            if p.lines.is_empty() && p.dropped == 0 {
                p.urgent = false;
                self.idle.notify_all();
            }
            // Linger, unless a flush is waiting. Lines pushed meanwhile do not wake us:
            // `push` wakes the writer only when it waits for lines (`waiting`).
            let until = Instant::now() + LINGER;
            while !p.urgent {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                p = match self.wake.wait_timeout(p, left) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
        }
    }

    fn dropped_notice(&self, n: u64) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = Vec::with_capacity(160);
        let msg = format_args!("{n} log lines dropped: stderr was not read fast enough");
        match self.format {
            LogFormat::Text => {
                write_text_time(&mut line, now);
                let _ = writeln!(line, " warning: {msg}");
            }
            LogFormat::Json => {
                line.extend_from_slice(b"{\"time\":\"");
                write_json_time(&mut line, now);
                let _ = writeln!(
                    line,
                    "\",\"level\":\"warn\",\"msg\":\"{msg}\",\"dropped\":{n}}}"
                );
            }
        }
        line
    }
}

/// Whether one write of `len` bytes to stderr completes without blocking: a pipe with
/// room takes up to `PIPE_BUF` (4096) bytes whole; files and terminals always take it.
fn stderr_takes_now(len: usize) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    const PIPE_BUF: usize = 4096;
    if len > PIPE_BUF {
        return false;
    }
    let stderr = std::io::stderr();
    let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0].revents().is_some_and(|r| {
            r.contains(PollFlags::POLLOUT) && !r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)
        })
}

/// `write_all` that waits out a non-blocking descriptor instead of failing.
fn write_patiently(out: &mut Sink, mut data: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A sink the test can read, optionally held shut until released.
    #[derive(Clone)]
    pub(in crate::logging) struct Shared(Arc<Mutex<Vec<u8>>>, Arc<(Mutex<bool>, Condvar)>);

    impl Shared {
        pub(in crate::logging) fn new(open: bool) -> Shared {
            Shared(Arc::default(), Arc::new((Mutex::new(open), Condvar::new())))
        }
        pub(in crate::logging) fn open(&self) {
            *self.1 .0.lock().expect("gate") = true;
            self.1 .1.notify_all();
        }
        pub(in crate::logging) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("out")).into_owned()
        }
    }

    impl std::io::Write for Shared {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let (gate, cv) = &*self.1;
            let mut open = gate.lock().expect("gate");
            while !*open {
                open = cv.wait(open).expect("gate");
            }
            self.0.lock().expect("out").extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_drops_the_oldest_lines_and_says_so() {
        let sink = Shared::new(false);
        let queue = Queue::start(LogFormat::Text, Box::new(sink.clone()), 100);
        // The writer takes the first line and blocks writing it.
        queue.push(b"first\n".to_vec());
        let until = Instant::now() + Duration::from_secs(5);
        while !queue.lock().busy && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        for i in 0..1000 {
            queue.push(format!("line {i:04}\n").into_bytes());
        }
        assert!(t.elapsed() < Duration::from_secs(1), "push never blocks");
        sink.open();
        queue.flush(Duration::from_secs(5));
        let out = sink.text();
        assert!(out.starts_with("first\n"), "{out}");
        assert!(
            out.ends_with("line 0999\n"),
            "the newest lines survive: {out}"
        );
        // The writer may have taken a few lines along with the first; the notice comes
        // right after the ones it held.
        let notice = out.lines().find(|l| l.contains("dropped")).expect("notice");
        assert!(
            notice.contains("warning: ") && notice.ends_with("stderr was not read fast enough"),
            "{out}"
        );
        let dropped: u64 = notice[29..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("count");
        let kept = out.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(dropped + kept, 1000, "{out}");
    }

    #[test]
    fn a_line_larger_than_the_queue_is_kept_whole() {
        let sink = Shared::new(true);
        let queue = Queue::start(LogFormat::Text, Box::new(sink.clone()), 1000);
        let mut big = vec![b'x'; 300_000];
        big.push(b'\n');
        queue.push(big);
        queue.flush(Duration::from_secs(5));
        assert_eq!(sink.text().len(), 300_001);
    }
}
