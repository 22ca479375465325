//! Logs on stderr, in the OpenFaaS shapes that tools grep for, or as JSON lines (§9.1).
//!
//! Everything logs through `tracing`. One small layer renders each event either as
//! `YYYY/MM/DD HH:MM:SS <msg>` (text, like Go's `log` package the peers use) or as one
//! JSON object per line carrying the event's fields. Request lines and handler output
//! lines are built here, so their shapes live in one place.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(Lines { format })
        .try_init();
}

/// Logs one request line: `<METHOD> <URI> - <status> - ContentLength: <n> (<s>s)`.
pub fn request(
    method: &str,
    uri: &str,
    status: u16,
    bytes: u64,
    took: Duration,
    call_id: Option<&str>,
) {
    let secs = took.as_secs_f64();
    let mut msg = format!("{method} {uri} - {status} - ContentLength: {bytes} ({secs:.4}s)");
    if let Some(id) = call_id {
        let _ = write!(msg, " [{id}]");
    }
    tracing::info!(
        kind = "request",
        method,
        path = uri,
        status,
        bytes,
        duration_s = secs,
        call_id = call_id.unwrap_or(""),
        "{msg}"
    );
}

/// Logs one line of handler output. With `prefix`, text lines read `<date> stderr: <line>`;
/// without, the bare line.
pub fn handler_line(stream: &'static str, line: &[u8], prefix: bool, call_id: &str) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(kind = "handler", stream, bare = !prefix, call_id, "{text}");
}

struct Lines {
    format: LogFormat,
}

#[derive(Default)]
struct Fields {
    message: String,
    kind: &'static str,
    stream: &'static str,
    bare: bool,
    extra: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.extra.push((
                field.name(),
                serde_json::Value::String(format!("{value:?}")),
            ));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "kind" => self.kind = intern(value),
            "stream" => self.stream = intern(value),
            name => self.extra.push((name, value.into())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "bare" {
            self.bare = value;
        } else {
            self.extra.push((field.name(), value.into()));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.extra.push((field.name(), value.into()));
    }
}

/// Our `kind`/`stream` fields take a handful of literal values.
fn intern(v: &str) -> &'static str {
    match v {
        "request" => "request",
        "handler" => "handler",
        "stdout" => "stdout",
        "stderr" => "stderr",
        _ => "",
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::INFO && metadata.target().starts_with("fwatchdog")
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = String::with_capacity(f.message.len() + 64);
        match self.format {
            LogFormat::Text => {
                if f.kind == "handler" && f.bare {
                    line.push_str(&f.message);
                } else {
                    line.push_str(&text_time(now));
                    line.push(' ');
                    if f.kind == "handler" {
                        line.push_str(f.stream);
                        line.push_str(": ");
                    } else if *event.metadata().level() == Level::WARN {
                        line.push_str("warning: ");
                    } else if *event.metadata().level() == Level::ERROR {
                        line.push_str("error: ");
                    }
                    line.push_str(&f.message);
                }
            }
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("time".into(), json_time(now).into());
                obj.insert(
                    "level".into(),
                    event
                        .metadata()
                        .level()
                        .as_str()
                        .to_ascii_lowercase()
                        .into(),
                );
                obj.insert("msg".into(), std::mem::take(&mut f.message).into());
                if !f.stream.is_empty() {
                    obj.insert("stream".into(), f.stream.into());
                }
                for (k, v) in f.extra {
                    obj.insert(k.into(), v);
                }
                line = serde_json::Value::Object(obj).to_string();
            }
        }
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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

/// `YYYY/MM/DD HH:MM:SS` in UTC.
fn text_time(now: Duration) -> String {
    let (y, mo, d, h, mi, s) = split(now);
    format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}")
}

/// RFC 3339 in UTC with milliseconds.
fn json_time(now: Duration) -> String {
    let (y, mo, d, h, mi, s) = split(now);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
