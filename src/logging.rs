//! Logs on stderr, in the OpenFaaS shapes that tools grep for, or as JSON lines (§9.1).
//!
//! Everything logs through `tracing`. One small layer renders each event either as
//! `YYYY/MM/DD HH:MM:SS <msg>` (text, like Go's `log` package the peers use) or as one
//! JSON object per line carrying the event's fields. Request lines and handler output
//! lines are built here, so their shapes live in one place.
//!
//! Logging never blocks the request path. A rendered line goes into a bounded in-memory
//! queue and one dedicated thread writes the queue to stderr. If nobody reads our stderr
//! (a stalled log collector, a pipe no one drains), the writer thread blocks, not the
//! server: once the queue holds [`QUEUE_BYTES`], the *oldest* queued lines are dropped so
//! the newest output (the end of what a handler printed, the latest request lines)
//! survives, and the writer reports how many were dropped as soon as it can write again.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Target of request lines.
const REQUEST: &str = "fwatchdog::request";
/// Target of handler output lines.
const HANDLER: &str = "fwatchdog::handler";
/// Most bytes of rendered lines waiting for stderr. One line larger than this is still
/// taken, alone.
pub const QUEUE_BYTES: usize = 8 << 20;
/// How long the process waits on exit for queued lines to reach stderr.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The writer gathers lines into writes of about this size.
const WRITE_CHUNK: usize = 64 * 1024;
/// After a write the writer waits this long before looking at the queue again, so under
/// load lines gather into one write and the server does not wake the writer thread (a
/// system call and a cross-thread wakeup) for every line. At 2 ms a request every
/// ~1.5 ms still woke it each time (~50 µs of CPU per request, measured with wrk at one
/// connection); 25 ms batches a dozen requests per write and delays no line noticeably. An idle log costs nothing: the
/// writer then sleeps until the next line.
const LINGER: Duration = Duration::from_millis(25);

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber and starts the writer thread. Safe to call more than
/// once (later calls change nothing). Keep the guard alive until the process exits: its
/// drop waits (briefly) for queued lines to be written.
#[must_use = "dropping the guard flushes the log; hold it until exit"]
pub fn init(format: LogFormat) -> Guard {
    let queue = QUEUE
        .get_or_init(|| Queue::start(format, Box::new(std::io::stderr()), QUEUE_BYTES))
        .clone();
    let installed = tracing_subscriber::registry()
        .with(Lines {
            format,
            queue: queue.clone(),
        })
        .try_init()
        .is_ok();
    if installed {
        // The default hook writes straight to stderr (blocking, and not JSON).
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let bt = std::backtrace::Backtrace::capture();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                tracing::error!("thread '{name}' {info}\n{bt}");
            } else {
                tracing::error!("thread '{name}' {info}");
            }
        }));
    }
    Guard { queue }
}

/// Flushes the log queue when dropped (see [`init`]).
pub struct Guard {
    queue: Arc<Queue>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.queue.flush(FLUSH_TIMEOUT);
    }
}

/// Log lines dropped so far because stderr was not read fast enough.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether `--log-format`/`log_format` ask for JSON, read straight from the arguments
/// and environment: for errors found before the configuration could be parsed.
pub fn json_requested(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> bool {
    let mut value = env("log_format").filter(|v| !v.is_empty());
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix("--log-format=") {
            value = Some(v.to_owned());
        } else if a == "--log-format" {
            value = args.next();
        }
    }
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("json"))
}

/// Logs one request line: `<METHOD> <URI> - <status> - ContentLength: <n> (<s>s)`, with
/// ` [<call id>]` (or ` [none]`) appended when `show_call_id`.
pub fn request(
    method: &str,
    uri: &str,
    status: u16,
    bytes: u64,
    took: Duration,
    call_id: &str,
    show_call_id: bool,
) {
    let secs = took.as_secs_f64();
    let suffix = CallIdSuffix(show_call_id.then_some(call_id));
    tracing::info!(
        target: REQUEST,
        method,
        path = uri,
        status,
        bytes,
        duration_s = secs,
        call_id,
        "{method} {uri} - {status} - ContentLength: {bytes} ({secs:.4}s){suffix}"
    );
}

struct CallIdSuffix<'a>(Option<&'a str>);

impl std::fmt::Display for CallIdSuffix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => Ok(()),
            Some("") => f.write_str(" [none]"),
            Some(id) => write!(f, " [{id}]"),
        }
    }
}

/// Logs one line of handler output. With `prefix`, text lines read `<date> stderr: <line>`;
/// without, the bare line. `call_id` ties it to its request in JSON (empty: none).
pub fn handler_line(stream: &'static str, line: &[u8], prefix: bool, call_id: &str) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(
        target: HANDLER,
        message = &*text,
        stream,
        call_id,
        bare = !prefix
    );
}

/// A fresh request id (UUID v4 shaped) for requests that came without `X-Call-Id`, so
/// JSON handler lines can be tied to their request. No system call: a per-process random
/// seed and a counter, mixed.
pub fn new_call_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::from_le_bytes(b) ^ now.as_nanos() as u64 ^ u64::from(std::process::id()) << 40
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let hi = splitmix64(seed.wrapping_add(n.wrapping_mul(2)));
    let lo = splitmix64(seed.wrapping_add(n.wrapping_mul(2)).wrapping_add(1));
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Splits a byte stream into log lines. A line longer than `max` bytes is emitted in
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
            max: max.map(|m| m.max(1)),
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

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------------------
// Rendering

struct Lines {
    format: LogFormat,
    queue: Arc<Queue>,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::INFO && metadata.target().starts_with("fwatchdog")
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = match self.format {
            LogFormat::Text => render_text(event, now),
            LogFormat::Json => render_json(event, now),
        };
        self.queue.push(line);
    }
}

fn render_text(event: &Event<'_>, now: Duration) -> Vec<u8> {
    let meta = event.metadata();
    let mut line = Vec::with_capacity(128);
    if meta.target() == HANDLER {
        let mut h = HandlerFields::default();
        event.record(&mut h);
        if !h.bare {
            write_text_time(&mut line, now);
            line.push(b' ');
            line.extend_from_slice(h.stream.as_bytes());
            line.extend_from_slice(b": ");
        }
    } else {
        write_text_time(&mut line, now);
        line.push(b' ');
        match *meta.level() {
            Level::WARN => line.extend_from_slice(b"warning: "),
            Level::ERROR => line.extend_from_slice(b"error: "),
            _ => {}
        }
    }
    event.record(&mut TextMessage(&mut line));
    line.push(b'\n');
    line
}

fn render_json(event: &Event<'_>, now: Duration) -> Vec<u8> {
    let meta = event.metadata();
    let mut line = Vec::with_capacity(192);
    line.extend_from_slice(b"{\"time\":\"");
    write_json_time(&mut line, now);
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(level_name(*meta.level()).as_bytes());
    line.push(b'"');
    let mut v = JsonFields {
        out: &mut line,
        handler: meta.target() == HANDLER,
        saw_msg: false,
    };
    event.record(&mut v);
    if !v.saw_msg {
        line.extend_from_slice(b",\"msg\":\"\"");
    }
    line.extend_from_slice(b"}\n");
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The fields that shape a handler line in text.
#[derive(Default)]
struct HandlerFields {
    stream: &'static str,
    bare: bool,
}

impl Visit for HandlerFields {
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "stream" {
            self.stream = match value {
                "stdout" => "stdout",
                _ => "stderr",
            };
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "bare" {
            self.bare = value;
        }
    }
}

/// Text lines carry only the message.
struct TextMessage<'a>(&'a mut Vec<u8>);

impl Visit for TextMessage<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.extend_from_slice(value.as_bytes());
        }
    }
}

/// Writes each field as `,"name":value`, the message as `msg`.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    handler: bool,
    saw_msg: bool,
}

impl JsonFields<'_> {
    /// Writes `,"name":` and says whether the field is wanted.
    fn key(&mut self, field: &Field) -> bool {
        let name = match field.name() {
            "message" => {
                self.saw_msg = true;
                "msg"
            }
            "bare" => return false,
            n => n,
        };
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        true
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.key(field) {
            self.out.push(b'"');
            let _ = write!(JsonEscaped(self.out), "{value:?}");
            self.out.push(b'"');
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Output of a long-running upstream belongs to no request.
        if self.handler && field.name() == "call_id" && value.is_empty() {
            return;
        }
        if self.key(field) {
            self.out.push(b'"');
            let _ = JsonEscaped(self.out).write_str(value);
            self.out.push(b'"');
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.out, "{value}");
            } else {
                self.out.extend_from_slice(b"null");
            }
        }
    }
}

/// Escapes what is written into it as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let out = &mut *self.0;
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f | 0x7f => b"",
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            if esc.is_empty() {
                let _ = write!(out, "\\u{b:04x}");
            } else {
                out.extend_from_slice(esc);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        Ok(())
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split(now: Duration) -> (i64, u32, u32, u64, u64, u64) {
    let secs = now.as_secs();
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let sod = secs % 86_400;
    (y, mo, d, sod / 3600, sod % 3600 / 60, sod % 60)
}

/// `YYYY/MM/DD HH:MM:SS` in UTC. Every text line starts with it, so its digits are
/// written directly rather than through `format_args!`, which cost a request line more
/// than the rest of its prefix.
fn write_text_time(out: &mut Vec<u8>, now: Duration) {
    let (y, mo, d, h, mi, s) = split(now);
    let Ok(y @ 0..=9999) = u64::try_from(y) else {
        let _ = write!(out, "{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}");
        return;
    };
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let (mo, d) = (u64::from(mo), u64::from(d));
    out.extend_from_slice(&[
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'/',
        digit(mo / 10),
        digit(mo),
        b'/',
        digit(d / 10),
        digit(d),
        b' ',
        digit(h / 10),
        digit(h),
        b':',
        digit(mi / 10),
        digit(mi),
        b':',
        digit(s / 10),
        digit(s),
    ]);
}

/// RFC 3339 in UTC with milliseconds.
fn write_json_time(out: &mut Vec<u8>, now: Duration) {
    let (y, mo, d, h, mi, s) = split(now);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    );
}

// ---------------------------------------------------------------------------------------
// The queue and its writer thread

struct Queue {
    format: LogFormat,
    cap: usize,
    pending: Mutex<Pending>,
    /// The writer waits here for lines.
    wake: Condvar,
    /// `flush` waits here for the queue to empty.
    idle: Condvar,
}

#[derive(Default)]
struct Pending {
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
}

type Sink = Box<dyn std::io::Write + Send>;

impl Queue {
    fn start(format: LogFormat, out: Sink, cap: usize) -> Arc<Queue> {
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

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one rendered line; never blocks on the output.
    fn push(&self, line: Vec<u8>) {
        let mut p = self.lock();
        if p.direct {
            drop(p);
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
    fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut p = self.lock();
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
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
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
            {
                let mut p = self.lock();
                p.busy = false;
                if p.lines.is_empty() && p.dropped == 0 {
                    self.idle.notify_all();
                }
            }
            std::thread::sleep(LINGER);
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
mod tests {
    use super::*;

    fn text_time(now: Duration) -> String {
        let mut v = Vec::new();
        write_text_time(&mut v, now);
        String::from_utf8(v).expect("utf8")
    }

    fn json_time(now: Duration) -> String {
        let mut v = Vec::new();
        write_json_time(&mut v, now);
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn formats_dates_in_utc() {
        assert_eq!(text_time(Duration::from_secs(0)), "1970/01/01 00:00:00");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(
            text_time(Duration::from_secs(1_709_251_199)),
            "2024/02/29 23:59:59"
        );
        assert_eq!(
            json_time(Duration::from_millis(1_796_115_600_250)),
            "2026-12-01T09:00:00.250Z"
        );
        // The hand-written digits agree with the formatter over many dates and times,
        // and past year 9999, where the formatter takes over.
        for secs in (0..400_000_000_000u64)
            .step_by(7_777_777)
            .chain([253_402_300_800])
        {
            let now = Duration::from_secs(secs);
            let (y, mo, d, h, mi, s) = split(now);
            let want = format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}");
            assert_eq!(text_time(now), want, "{secs}");
        }
    }

    /// A sink the test can read, optionally held shut until released.
    #[derive(Clone)]
    struct Shared(Arc<Mutex<Vec<u8>>>, Arc<(Mutex<bool>, Condvar)>);

    impl Shared {
        fn new(open: bool) -> Shared {
            Shared(Arc::default(), Arc::new((Mutex::new(open), Condvar::new())))
        }
        fn open(&self) {
            *self.1 .0.lock().expect("gate") = true;
            self.1 .1.notify_all();
        }
        fn text(&self) -> String {
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

    /// Runs `f` with a subscriber that renders into a fresh queue; returns the output.
    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let sink = Shared::new(true);
        let queue = Queue::start(format, Box::new(sink.clone()), QUEUE_BYTES);
        let sub = tracing_subscriber::registry().with(Lines {
            format,
            queue: queue.clone(),
        });
        tracing::subscriber::with_default(sub, f);
        queue.flush(Duration::from_secs(5));
        sink.text()
    }

    #[test]
    fn text_request_lines_have_the_openfaas_shape() {
        let out = capture(LogFormat::Text, || {
            request(
                "GET",
                "/a?b=1",
                200,
                12,
                Duration::from_micros(1500),
                "",
                false,
            );
            request("POST", "/", 500, 0, Duration::from_secs(2), "", true);
            request("PUT", "/x", 201, 3, Duration::ZERO, "abc-1", true);
        });
        let lines: Vec<&str> = out.lines().map(|l| &l[20..]).collect();
        assert_eq!(
            lines,
            [
                "GET /a?b=1 - 200 - ContentLength: 12 (0.0015s)",
                "POST / - 500 - ContentLength: 0 (2.0000s) [none]",
                "PUT /x - 201 - ContentLength: 3 (0.0000s) [abc-1]",
            ],
            "{out}"
        );
        assert!(out.as_bytes()[4] == b'/' && out.as_bytes()[19] == b' ');
    }

    #[test]
    fn text_handler_lines_prefixed_or_bare() {
        let out = capture(LogFormat::Text, || {
            handler_line("stderr", b"oops", true, "");
            handler_line("stdout", b"hello", true, "id");
            handler_line("stderr", b"bare line", false, "");
            tracing::warn!("careful");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[0][19..], " stderr: oops");
        assert_eq!(&lines[1][19..], " stdout: hello");
        assert_eq!(lines[2], "bare line");
        assert_eq!(&lines[3][19..], " warning: careful");
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let out = capture(LogFormat::Json, || {
            request(
                "GET",
                "/p",
                404,
                7,
                Duration::from_millis(250),
                "cid",
                false,
            );
            handler_line("stderr", b"say \"hi\"\t\x01", true, "cid");
            handler_line("stdout", b"upstream", false, "");
            tracing::error!("bad\nthing");
        });
        let v: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(v[0]["level"], "info");
        assert_eq!(v[0]["method"], "GET");
        assert_eq!(v[0]["path"], "/p");
        assert_eq!(v[0]["status"], 404);
        assert_eq!(v[0]["bytes"], 7);
        assert_eq!(v[0]["duration_s"], 0.25);
        assert_eq!(v[0]["call_id"], "cid");
        assert_eq!(v[0]["msg"], "GET /p - 404 - ContentLength: 7 (0.2500s)");
        assert!(v[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(v[1]["stream"], "stderr");
        assert_eq!(v[1]["call_id"], "cid");
        assert_eq!(v[1]["msg"], "say \"hi\"\t\u{1}");
        assert!(v[1].get("bare").is_none());
        assert!(v[2].get("call_id").is_none(), "no request, no call_id");
        assert_eq!(v[3]["level"], "error");
        assert_eq!(v[3]["msg"], "bad\nthing");
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

    #[test]
    fn call_ids_are_unique_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_call_id()).collect();
        assert_eq!(ids.len(), 1000);
        let id = new_call_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn json_is_found_in_args_or_env() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = |_: &str| None;
        let env = |k: &str| (k == "log_format").then(|| "JSON".to_owned());
        assert!(json_requested(args(&["fw", "--log-format", "json"]), none));
        assert!(json_requested(args(&["fw", "--log-format=json"]), none));
        assert!(json_requested(args(&["fw"]), env));
        assert!(!json_requested(args(&["fw", "--log-format=text"]), env));
        assert!(!json_requested(args(&["fw"]), none));
    }
}
