//! Logs on stderr, in the OpenFaaS shapes that tools grep for, or as JSON lines.
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
//! Until the server is ready ([`started`]) there are no requests to protect, so a line
//! goes straight to stderr when stderr takes it at once: startup does not wait for the
//! writer thread to be scheduled.
//!
//! This file is the API the rest of the crate calls (install, request and handler lines,
//! call ids); `render` turns an event into a line and `writer` owns the queue and the
//! thread.

mod render;
mod time;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::prelude::*;

use crate::config::LogFormat;
use render::Lines;
use writer::Queue;

/// Target of request lines.
const REQUEST: &str = "fwatchdog::request";
/// Target of handler output lines.
const HANDLER: &str = "fwatchdog::handler";
/// Most bytes of rendered lines waiting for stderr. One line larger than this is still
/// taken, alone (handler output comes in pieces of at most [`LONGEST_LINE`]).
pub const QUEUE_BYTES: usize = 8 << 20;
/// The longest piece of handler output that becomes one log line, whatever
/// `log_buffer_size` says (`-1` included): a longer line is split into pieces of this
/// size, so a handler printing gigabytes without a newline costs a few of these here,
/// not the whole line two or three times over. (A JSON line can be longer than its
/// piece: escaping makes a control byte six.)
pub const LONGEST_LINE: usize = QUEUE_BYTES;
/// How long the process waits on exit for queued lines to reach stderr.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber and starts the writer thread. Safe to call more than
/// once (later calls change nothing). Keep the guard alive until the process exits: its
/// drop waits (briefly) for queued lines to be written.
#[must_use = "dropping the guard flushes the log; hold it until exit"]
pub fn init(format: LogFormat) -> Guard {
    let queue = QUEUE
        .get_or_init(|| {
            let q = Queue::start(format, Box::new(std::io::stderr()), QUEUE_BYTES);
            q.write_through_until_started();
            q
        })
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

/// The server is ready. Until now a line went straight to stderr when it could (no
/// wait for the writer thread to be scheduled); from now on lines are queued. Returns
/// once every line logged so far is written, like [`flush`].
pub fn started() {
    if let Some(q) = QUEUE.get() {
        q.started(FLUSH_TIMEOUT);
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
        // Go-style single-dash spellings too, as the command line accepts them.
        if let Some(v) = a
            .strip_prefix("--log-format=")
            .or_else(|| a.strip_prefix("-log-format="))
        {
            value = Some(v.to_owned());
        } else if a == "--log-format" || a == "-log-format" {
            value = args.next();
        }
    }
    value.is_some_and(|v| LogFormat::parse(&v) == Ok(LogFormat::Json))
}

/// The span a request runs in. In JSON, every line logged inside it carries the request's
/// `call_id`, so a handler that cannot start or a bad gateway is tied to its request.
pub fn request_span(call_id: &str) -> tracing::Span {
    tracing::info_span!(target: REQUEST, "request", call_id)
}

/// One finished request, as its log line tells it.
#[derive(Debug)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub status: u16,
    /// The reason phrase to print after the status (http mode prints the upstream's
    /// status line, `200 OK`); `None` prints the code alone, as the fork modes do.
    pub reason: Option<&'a str>,
    /// Bytes of body sent.
    pub bytes: u64,
    pub took: Duration,
    /// `X-Call-Id`, or empty.
    pub call_id: &'a str,
    /// Append ` [<call id>]` (or ` [none]`).
    pub show_call_id: bool,
}

/// Logs one request line as of-watchdog writes it:
/// `<METHOD> <URI> - <status> - ContentLength: <size> (<s>s)`, the size as go-units'
/// `HumanSize` (`20B`, `1.049MB`). JSON lines also carry the exact `bytes`.
pub fn request(line: &RequestLine<'_>) {
    let RequestLine {
        method,
        uri,
        status,
        bytes,
        call_id,
        ..
    } = *line;
    let secs = line.took.as_secs_f64();
    let message = request_message(line);
    tracing::info!(
        target: REQUEST,
        method,
        path = uri,
        status,
        bytes,
        duration_s = secs,
        call_id,
        "{message}"
    );
}

/// `<METHOD> <URI> - <status> - ContentLength: <size> (<s>s)[ [<call id>]]`, put
/// together piece by piece: the formatter's machinery for each of a dozen pieces was
/// most of what a request line cost.
fn request_message(line: &RequestLine<'_>) -> String {
    use std::fmt::Write as _;
    let mut m = String::with_capacity(line.method.len() + line.uri.len() + 64);
    m.push_str(line.method);
    m.push(' ');
    m.push_str(line.uri);
    m.push_str(" - ");
    push_decimal(&mut m, u64::from(line.status));
    if let Some(reason) = line.reason.filter(|r| !r.is_empty()) {
        m.push(' ');
        m.push_str(reason);
    }
    m.push_str(" - ContentLength: ");
    if line.bytes < 1000 {
        push_decimal(&mut m, line.bytes);
        m.push('B');
    } else {
        m.push_str(&human_size(line.bytes));
    }
    m.push_str(" (");
    push_secs4(&mut m, line.took);
    m.push_str("s)");
    if line.show_call_id {
        let _ = write!(m, "{}", CallIdSuffix(Some(line.call_id)));
    }
    m
}

/// Appends `n` in decimal.
fn push_decimal(m: &mut String, n: u64) {
    m.push_str(itoa::Buffer::new().format(n));
}

/// Appends seconds with four decimals, exactly as `{:.4}` prints `as_secs_f64()`,
/// without the float formatting (which takes the slow exact path for most values): the
/// nearest multiple of 100 µs in integers. A duration exactly halfway between two of
/// them, or too long for the float to be exact to the nanosecond, takes the float path.
fn push_secs4(m: &mut String, took: Duration) {
    use std::fmt::Write as _;
    let nanos = took.as_nanos();
    let (mut tenths_of_ms, rest) = (nanos / 100_000, nanos % 100_000);
    if rest == 50_000 || took.as_secs() >= 1_000_000 {
        let _ = write!(m, "{:.4}", took.as_secs_f64());
        return;
    }
    if rest > 50_000 {
        tenths_of_ms += 1;
    }
    push_decimal(m, (tenths_of_ms / 10_000) as u64);
    m.push('.');
    // 10_000 + the fraction: five digits, the first dropped, so its zeros stay.
    m.push_str(&itoa::Buffer::new().format(10_000 + tenths_of_ms % 10_000)[1..]);
}

/// go-units' `HumanSize` (`HumanSizeWithPrecision(size, 4)`): divide by 1000 while the
/// value is at least 1000 (units B kB MB GB TB PB EB ZB YB), then Go's `%.4g`: four
/// significant digits, ties to even, no trailing zeros. `20B`, `1kB`, `1.049MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    // `%.4g` of a value below 1000 (an u64 never reaches 1000 YB): the decimal exponent
    // after rounding to four digits decides how many of them follow the point.
    let exp: i32 = format!("{size:.3e}")
        .rsplit('e')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let decimals = usize::try_from(3 - exp).unwrap_or(0);
    let mut digits = format!("{size:.decimals$}");
    if digits.contains('.') {
        let kept = digits.trim_end_matches('0').trim_end_matches('.').len();
        digits.truncate(kept);
    }
    digits + UNITS[unit]
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

#[cfg(test)]
mod tests {
    use super::writer::tests::Shared;
    use super::*;

    /// go-units' own expectations (its TestHumanSize, those a byte count can reach) and
    /// the edges of Go's `%.4g`: rounding up into the next digit, ties to even.
    #[test]
    fn request_line_seconds_are_what_the_float_prints() {
        let mut cases: Vec<Duration> = [
            0u64,
            1,
            49_999,
            50_000,
            50_001,
            99_999,
            149_999,
            150_000,
            999_949_999,
            999_950_000,
            999_950_001,
            1_234_567_891,
            59_999_950_001,
            999_999_999_999_999,
            1_000_000_000_000_000,
            u64::MAX,
        ]
        .iter()
        .map(|n| Duration::from_nanos(*n))
        .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            cases.push(Duration::from_nanos(x >> (x % 40)));
        }
        for d in cases {
            let want = format!("{:.4}", d.as_secs_f64());
            let mut got = String::new();
            push_secs4(&mut got, d);
            assert_eq!(got, want, "{d:?}");
        }
    }

    #[test]
    fn human_size_is_go_units_human_size() {
        let cases: &[(u64, &str)] = &[
            (0, "0B"),
            (1, "1B"),
            (20, "20B"),
            (999, "999B"),
            (1000, "1kB"),
            (1024, "1.024kB"),
            (1500, "1.5kB"),
            (12_625, "12.62kB"),
            (999_949, "999.9kB"),
            (999_999, "1000kB"),
            (1_000_000, "1MB"),
            (1_048_576, "1.049MB"),
            (2_000_000, "2MB"),
            (123_456_789, "123.5MB"),
            (3_420_000_000, "3.42GB"),
            (5_372_000_000_000, "5.372TB"),
            (2_220_000_000_000_000, "2.22PB"),
            (u64::MAX, "18.45EB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_size(*n), *want, "{n}");
        }
        // The request line's own path for sizes under 1000 bytes.
        for n in 0..2000 {
            let line = RequestLine {
                method: "GET",
                uri: "/",
                status: 200,
                reason: None,
                bytes: n,
                took: Duration::ZERO,
                call_id: "",
                show_call_id: false,
            };
            let want = format!("GET / - 200 - ContentLength: {} (0.0000s)", human_size(n));
            assert_eq!(request_message(&line), want, "{n}");
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

    /// A request line with call id `cid`, shown when `shown` is `Some` (its value then
    /// replaces the id).
    fn line<'a>(
        method: &'a str,
        uri: &'a str,
        status: u16,
        reason: Option<&'a str>,
        bytes: u64,
        took: Duration,
        shown: Option<&'a str>,
    ) -> RequestLine<'a> {
        RequestLine {
            method,
            uri,
            status,
            reason,
            bytes,
            took,
            call_id: shown.unwrap_or("cid"),
            show_call_id: shown.is_some(),
        }
    }

    #[test]
    fn text_request_lines_have_the_openfaas_shape() {
        let out = capture(LogFormat::Text, || {
            let micros = |us| Duration::from_micros(us);
            request(&line("GET", "/a?b=1", 200, None, 12, micros(1500), None));
            request(&line(
                "POST",
                "/",
                500,
                None,
                0,
                micros(2_000_000),
                Some(""),
            ));
            request(&line(
                "PUT",
                "/x",
                201,
                None,
                3,
                Duration::ZERO,
                Some("abc-1"),
            ));
            request(&line("POST", "/", 200, Some("OK"), 20, micros(3000), None));
            request(&line(
                "GET",
                "/big",
                418,
                Some("Brewing"),
                1_048_576,
                micros(0),
                None,
            ));
        });
        let lines: Vec<&str> = out.lines().map(|l| &l[20..]).collect();
        assert_eq!(
            lines,
            [
                "GET /a?b=1 - 200 - ContentLength: 12B (0.0015s)",
                "POST / - 500 - ContentLength: 0B (2.0000s) [none]",
                "PUT /x - 201 - ContentLength: 3B (0.0000s) [abc-1]",
                "POST / - 200 OK - ContentLength: 20B (0.0030s)",
                "GET /big - 418 Brewing - ContentLength: 1.049MB (0.0000s)",
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
            request(&line(
                "GET",
                "/p",
                404,
                None,
                7,
                Duration::from_millis(250),
                None,
            ));
            handler_line("stderr", b"say \"hi\"\t\x01 \\ \x7f \xc3\xa9", true, "cid");
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
        assert_eq!(v[0]["msg"], "GET /p - 404 - ContentLength: 7B (0.2500s)");
        assert!(v[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(v[1]["stream"], "stderr");
        assert_eq!(v[1]["call_id"], "cid");
        assert_eq!(v[1]["msg"], "say \"hi\"\t\u{1} \\ \u{7f} é");
        assert!(v[1].get("bare").is_none());
        assert!(v[2].get("call_id").is_none(), "no request, no call_id");
        assert_eq!(v[3]["level"], "error");
        assert_eq!(v[3]["msg"], "bad\nthing");
    }

    #[test]
    fn json_lines_inside_a_request_span_carry_its_call_id() {
        let out = capture(LogFormat::Json, || {
            let span = request_span("cid-9");
            let entered = span.enter();
            tracing::warn!("inside");
            request(&RequestLine {
                call_id: "cid-9",
                ..line("GET", "/", 502, None, 0, Duration::ZERO, None)
            });
            handler_line("stderr", b"upstream", true, "");
            drop(entered);
            tracing::warn!("outside");
        });
        let raw: Vec<&str> = out.lines().collect();
        let v: Vec<serde_json::Value> = raw
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(v[0]["msg"], "inside");
        assert_eq!(v[0]["call_id"], "cid-9", "{out}");
        assert_eq!(raw[1].matches("call_id").count(), 1, "its own, once: {out}");
        assert!(v[2].get("call_id").is_none(), "upstream output: {out}");
        assert!(v[3].get("call_id").is_none(), "{out}");
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
        assert!(json_requested(args(&["fw", "-log-format", "json"]), none));
        assert!(json_requested(args(&["fw", "-log-format=json"]), none));
        assert!(json_requested(args(&["fw"]), env));
        assert!(!json_requested(args(&["fw", "--log-format=text"]), env));
        assert!(!json_requested(args(&["fw"]), none));
    }
}
