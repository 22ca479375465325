//! Rendering an event as one log line: text in the OpenFaaS shapes, or a JSON object.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serializer as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::time::{write_json_time, write_text_time};
use super::writer::Queue;
use super::{HANDLER, REQUEST};
use crate::config::LogFormat;

/// The layer that renders every event of ours and queues it for the writer.
pub(super) struct Lines {
    pub(super) format: LogFormat,
    pub(super) queue: Arc<Queue>,
}

/// The call id of a request's span (see [`super::request_span`]).
struct CallId(String);

impl Visit for CallId {
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "call_id" {
            value.clone_into(&mut self.0);
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Lines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::INFO && metadata.target().starts_with("fwatchdog")
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut call_id = CallId(String::new());
        attrs.record(&mut call_id);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(call_id);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = match self.format {
            LogFormat::Text => render_text(event, now),
            LogFormat::Json => match ctx.event_span(event) {
                Some(span) => render_json(event, now, span.extensions().get::<CallId>()),
                None => render_json(event, now, None),
            },
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

/// `span` is the request the event happened in, if any: its call id is added to events
/// that do not carry one themselves (request and handler lines do).
fn render_json(event: &Event<'_>, now: Duration, span: Option<&CallId>) -> Vec<u8> {
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
    if let Some(CallId(id)) = span.filter(|_| meta.target() != REQUEST && meta.target() != HANDLER)
    {
        line.extend_from_slice(b",\"call_id\":");
        let _ = serde_json::to_writer(&mut line, id);
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
            // Escaped as the Debug output is produced: no String in between.
            let mut json = serde_json::Serializer::new(&mut *self.out);
            let _ = json.collect_str(&format_args!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // Output of a long-running upstream belongs to no request.
        if self.handler && field.name() == "call_id" && value.is_empty() {
            return;
        }
        if self.key(field) {
            let _ = serde_json::to_writer(&mut *self.out, value);
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
