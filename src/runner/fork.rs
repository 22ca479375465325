//! The fork modes (§4): one handler process per request, body on stdin, answer on stdout.
//!
//! `streaming` holds the response head back until the handler writes its first byte or
//! exits, so the status can be honest (500 for a failed start or exit, 504 for a
//! timeout), then streams stdout as it comes; a failure after output started aborts the
//! response rather than ending it cleanly. `serializing` and `classic` read the body
//! first, collect stdout, and answer once the handler exits.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::env::{canonical_header, handler_env, EnvOptions};
use super::pipe::{body_to_stdin, chunks_to_stdin, collect, lines, BodyEnd};
use super::Ctx;
use crate::body::{self, Abort, Body, BoxError};
use crate::config::{format_duration, Config, Mode};
use crate::logging;
use crate::metrics::Metrics;
use crate::process::{self, ExitStatus, Stderr};

/// After the handler exits, how long its pipes may stay open (held by something that
/// escaped its process group) before we stop waiting for EOF.
const EOF_GRACE: Duration = Duration::from_secs(1);
/// Largest single read from stdout.
const MAX_CHUNK: usize = 64 * 1024;

pub struct Fork {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
}

/// A task that is aborted when this guard is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn duration_header(started: Instant) -> HeaderValue {
    let v = format!("{:.6}", started.elapsed().as_secs_f64());
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("0"))
}

fn reader(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd)
}

impl Fork {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Fork {
        Fork { cfg, metrics }
    }

    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        if let Some(max) = self.cfg.max_body_bytes {
            if content_length(req.headers()).is_some_and(|n| n > max) {
                return too_large(max);
            }
        }
        match self.cfg.mode {
            Mode::Streaming => self.streaming(req, ctx).await,
            _ => self.serializing(req, ctx).await,
        }
    }

    /// When a run must end: `exec_timeout` from now, and never after the write deadline.
    fn deadline(&self, ctx: &Ctx, started: Instant) -> (Instant, &'static str, Duration) {
        match self.cfg.exec_timeout {
            Some(t) if started + t <= ctx.write_deadline => (started + t, "exec_timeout", t),
            _ => (ctx.write_deadline, "write_timeout", self.cfg.write_timeout),
        }
    }

    fn stderr_logger(&self, fd: Option<OwnedFd>, ctx: &Ctx) -> Option<oneshot::Sender<()>> {
        let rx = reader(fd?).ok()?;
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let max = self.cfg.log_buffer_size;
        let prefix = self.cfg.prefix_logs;
        let call_id = ctx.call_id.clone();
        tokio::spawn(async move {
            let log = lines(rx, max, |l| {
                logging::handler_line("stderr", l, prefix, &call_id)
            });
            tokio::pin!(log);
            tokio::select! {
                _ = &mut log => {}
                _ = done_rx => {
                    // The request is over; give the rest of its output a moment.
                    let _ = tokio::time::timeout(EOF_GRACE, log).await;
                }
            }
        });
        Some(done_tx)
    }

    fn start(
        &self,
        parts: &http::request::Parts,
        content_length: Option<u64>,
        stderr: Stderr,
    ) -> Result<process::Child, Response<Body>> {
        let hidden = self
            .cfg
            .api_keys
            .as_ref()
            .filter(|k| !k.forward())
            .map(|k| k.header());
        let env = handler_env(
            parts,
            &EnvOptions {
                cgi_headers: self.cfg.cgi_headers,
                content_length,
                hidden,
            },
        );
        match process::spawn(&self.cfg.fprocess, env, stderr) {
            Ok(child) => {
                self.metrics.handler_starts.inc();
                Ok(child)
            }
            Err(e) => {
                let cmd = &self.cfg.fprocess[0];
                tracing::error!("cannot start handler {cmd:?}: {e}");
                Err(body::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot start {cmd}: {e}\n"),
                ))
            }
        }
    }

    fn exited(&self, status: ExitStatus) {
        self.metrics.handler_exit(status.code());
    }

    async fn streaming(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let te_trailers = parts.headers.get_all(http::header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
        let started = Instant::now();
        let mut child = match self.start(&parts, None, Stderr::Pipe) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let stderr_done = self.stderr_logger(child.stderr.take(), ctx);
        let (stdin, stdout) = match (
            child.stdin.take().map(pipe::Sender::from_owned_fd),
            child.stdout.take().map(reader),
        ) {
            (Some(Ok(i)), Some(Ok(o))) => (i, o),
            _ => {
                return body::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot set up the handler's pipes\n",
                )
            }
        };
        let pump = tokio::spawn(body_to_stdin(
            body,
            stdin,
            self.cfg.read_timeout,
            self.cfg.max_body_bytes,
        ));
        let mut run = Run {
            child,
            stdout,
            pump: Some(pump),
            status: None,
            exited_at: None,
            _stderr_done: stderr_done,
            buf: BytesMut::with_capacity(4096),
            chunk: 4096,
        };
        let (deadline, what, limit) = self.deadline(ctx, started);

        // Hold the head back until the first byte of output, EOF, or a failure.
        let first = match run.step(deadline).await {
            Step::Data(data) => Some(data),
            Step::Eof => None,
            Step::Deadline => {
                run.child.kill();
                self.metrics.handler_timeouts.inc();
                tracing::info!(
                    "handler {} killed: {what} exceeded ({})",
                    run.child.pid(),
                    format_duration(limit)
                );
                let mut resp = body::text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{what} exceeded ({})\n", format_duration(limit)),
                );
                resp.headers_mut()
                    .insert("x-duration-seconds", duration_header(started));
                return resp;
            }
            Step::Body(end) => {
                run.child.kill();
                let mut resp = body_failure(end, self.cfg.max_body_bytes);
                resp.headers_mut()
                    .insert("x-duration-seconds", duration_header(started));
                return resp;
            }
        };
        let mut builder =
            Response::builder().header("x-duration-seconds", duration_header(started));
        if let Some(ct) = &self.cfg.content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct.as_str());
        }
        let Some(first) = first else {
            // Exited (or closed stdout) without output: the status decides.
            let status = match run.wait(deadline).await {
                Some(s) => s,
                None => {
                    run.child.kill();
                    self.metrics.handler_timeouts.inc();
                    return body::text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("{what} exceeded ({})\n", format_duration(limit)),
                    );
                }
            };
            self.exited(status);
            if status.success() {
                return builder
                    .body(body::empty())
                    .unwrap_or_else(|_| Response::new(body::empty()));
            }
            let mut resp = body::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{status}\n"));
            resp.headers_mut()
                .insert("x-duration-seconds", duration_header(started));
            return resp;
        };

        let (tx, rx) = body::Channel::new(2);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if tx.send(Ok(Frame::data(first))).await.is_err() {
                return; // client gone; dropping `run` kills the group
            }
            let fail =
                |msg: String| -> Result<Frame<Bytes>, BoxError> { Err(Box::new(Abort(msg))) };
            loop {
                let step = tokio::select! {
                    s = run.step(deadline) => s,
                    _ = tx.closed() => return,
                };
                match step {
                    Step::Data(data) => {
                        tokio::select! {
                            r = tx.send(Ok(Frame::data(data))) => if r.is_err() { return },
                            _ = tokio::time::sleep_until(deadline.into()) => {
                                metrics.handler_timeouts.inc();
                                let _ = tx.try_send(fail(format!("{what} exceeded")));
                                return;
                            }
                        }
                    }
                    Step::Eof => break,
                    Step::Deadline => {
                        run.child.kill();
                        metrics.handler_timeouts.inc();
                        tracing::info!(
                            "handler killed after output started: {what} exceeded ({})",
                            format_duration(limit)
                        );
                        let _ = tx.send(fail(format!("{what} exceeded"))).await;
                        return;
                    }
                    Step::Body(end) => {
                        run.child.kill();
                        let _ = tx.send(fail(format!("request body: {end:?}"))).await;
                        return;
                    }
                }
            }
            let status = tokio::select! {
                s = run.wait(deadline) => s,
                _ = tx.closed() => return,
            };
            match status {
                Some(s) if s.success() => metrics.handler_exit(0),
                Some(s) => {
                    metrics.handler_exit(s.code());
                    tracing::info!("handler failed after output started: {s}");
                    if te_trailers {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("x-exit-code", HeaderValue::from(s.code()));
                        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                    } else {
                        let _ = tx.send(fail(s.to_string())).await;
                    }
                }
                None => {
                    run.child.kill();
                    metrics.handler_timeouts.inc();
                    let _ = tx.send(fail(format!("{what} exceeded"))).await;
                }
            }
        });
        let mut resp = builder
            .body(http_body_util::BodyExt::boxed_unsync(rx))
            .unwrap_or_else(|_| Response::new(body::empty()));
        if te_trailers {
            resp.headers_mut().insert(
                http::header::TRAILER,
                HeaderValue::from_static("X-Exit-Code"),
            );
        }
        resp
    }

    async fn serializing(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let classic = self.cfg.mode == Mode::Classic;
        if classic
            && !matches!(
                *req.method(),
                Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            )
        {
            let mut resp = body::text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
            resp.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
            );
            return resp;
        }
        let (parts, body) = req.into_parts();
        let (chunks, total) =
            match collect(body, self.cfg.read_timeout, self.cfg.max_body_bytes).await {
                Ok(c) => c,
                Err(end) => return body_failure(end, self.cfg.max_body_bytes),
            };
        let input = if self.cfg.marshal_request {
            vec![marshal(&parts.headers, &chunks)]
        } else {
            chunks
        };
        let stderr_mode = if self.cfg.combine_output {
            Stderr::Stdout
        } else {
            Stderr::Pipe
        };
        let started = Instant::now();
        let mut child = match self.start(&parts, classic.then_some(total), stderr_mode) {
            Ok(c) => c,
            Err(resp) => return resp,
        };
        let _stderr_done = self.stderr_logger(child.stderr.take(), ctx);
        let (stdin, stdout) = match (
            child.stdin.take().map(pipe::Sender::from_owned_fd),
            child.stdout.take().map(reader),
        ) {
            (Some(Ok(i)), Some(Ok(o))) => (i, o),
            _ => {
                return body::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot set up the handler's pipes\n",
                )
            }
        };
        let _writer = AbortOnDrop(tokio::spawn(chunks_to_stdin(input, stdin)));
        let mut run = Run {
            child,
            stdout,
            pump: None,
            status: None,
            exited_at: None,
            _stderr_done: None,
            buf: BytesMut::with_capacity(4096),
            chunk: 4096,
        };
        let (deadline, what, limit) = self.deadline(ctx, started);
        let mut output: Vec<Bytes> = Vec::new();
        let timed_out = loop {
            match run.step(deadline).await {
                Step::Data(d) => output.push(d),
                Step::Eof => break false,
                Step::Deadline => break true,
                Step::Body(_) => unreachable!("serializing has no body pump"),
            }
        };
        let status = if timed_out {
            None
        } else {
            run.wait(deadline).await
        };
        let Some(status) = status else {
            run.child.kill();
            self.metrics.handler_timeouts.inc();
            tracing::info!(
                "handler {} killed: {what} exceeded ({})",
                run.child.pid(),
                format_duration(limit)
            );
            let mut resp = body::text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{what} exceeded ({})\n", format_duration(limit)),
            );
            resp.headers_mut()
                .insert("x-duration-seconds", duration_header(started));
            return resp;
        };
        self.exited(status);
        if self.cfg.write_debug {
            for chunk in &output {
                for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    logging::handler_line("stdout", line, self.cfg.prefix_logs, &ctx.call_id);
                }
            }
        }
        let mut builder =
            Response::builder().header("x-duration-seconds", duration_header(started));
        if !status.success() {
            output.insert(0, Bytes::from(format!("{status}\n")));
            builder = builder
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        } else {
            let ct = match &self.cfg.content_type {
                Some(ct) => HeaderValue::from_str(ct).ok(),
                None => parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .cloned()
                    .or_else(|| Some(sniff(&output))),
            };
            if let Some(ct) = ct {
                builder = builder.header(http::header::CONTENT_TYPE, ct);
            }
        }
        let body = http_body_util::BodyExt::boxed_unsync(body::Chunks::new(output));
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(body::empty()))
    }
}

/// What a handler run did next.
enum Step {
    Data(Bytes),
    Eof,
    Deadline,
    Body(BodyEnd),
}

/// One running handler with its stdout, for the steps of a request.
struct Run {
    child: process::Child,
    stdout: pipe::Receiver,
    /// The request-body copy. Not aborted with the run: when the handler stops reading,
    /// the rest of the upload is read and discarded so the client can read its answer.
    pump: Option<tokio::task::JoinHandle<BodyEnd>>,
    status: Option<ExitStatus>,
    exited_at: Option<Instant>,
    _stderr_done: Option<oneshot::Sender<()>>,
    buf: BytesMut,
    chunk: usize,
}

impl Run {
    /// Waits for the next thing that matters: output, EOF, the deadline, or a body failure.
    async fn step(&mut self, deadline: Instant) -> Step {
        loop {
            if self.buf.capacity() < self.chunk {
                self.buf.reserve(self.chunk);
            }
            let eof_by = self.exited_at.map(|t| t + EOF_GRACE);
            tokio::select! {
                r = self.stdout.read_buf(&mut self.buf) => {
                    return match r {
                        Ok(0) | Err(_) => Step::Eof,
                        Ok(n) => {
                            if n == self.chunk && self.chunk < MAX_CHUNK {
                                self.chunk *= 2;
                            }
                            Step::Data(self.buf.split().freeze())
                        }
                    };
                }
                s = self.child.wait(), if self.status.is_none() => {
                    self.status = Some(s);
                    self.exited_at = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(eof_by.unwrap_or(deadline).into()), if eof_by.is_some() => {
                    return Step::Eof;
                }
                _ = tokio::time::sleep_until(deadline.into()) => return Step::Deadline,
                end = async { self.pump.as_mut().expect("guarded").await }, if self.pump.is_some() => {
                    self.pump = None;
                    match end {
                        Ok(BodyEnd::Done(_)) => {}
                        Ok(other) => return Step::Body(other),
                        Err(_) => return Step::Body(BodyEnd::Failed("body task failed".into())),
                    }
                }
            }
        }
    }

    /// The exit status, waiting until `deadline` at most.
    async fn wait(&mut self, deadline: Instant) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let s = tokio::time::timeout_at(deadline.into(), self.child.wait())
            .await
            .ok()?;
        self.status = Some(s);
        Some(s)
    }
}

fn too_large(max: u64) -> Response<Body> {
    body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than max_body_bytes ({max} bytes)\n"),
    )
}

fn body_failure(end: BodyEnd, max: Option<u64>) -> Response<Body> {
    match end {
        BodyEnd::TooLarge => too_large(max.unwrap_or(0)),
        BodyEnd::Idle => body::text(
            StatusCode::REQUEST_TIMEOUT,
            "request body: client too slow (read_timeout)\n",
        ),
        BodyEnd::Failed(why) => body::text(
            StatusCode::BAD_REQUEST,
            format!("request body could not be read: {why}\n"),
        ),
        BodyEnd::Done(_) => body::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected end of body\n",
        ),
    }
}

/// The classic watchdog's `marshal_request` envelope.
fn marshal(headers: &HeaderMap, chunks: &[Bytes]) -> Bytes {
    use base64::Engine;
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in headers {
        map.entry(canonical_header(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut raw = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for c in chunks {
        raw.extend_from_slice(c);
    }
    let envelope = serde_json::json!({
        "header": map,
        "body": { "raw": base64::engine::general_purpose::STANDARD.encode(raw) },
    });
    Bytes::from(envelope.to_string())
}

/// What Go's `http.DetectContentType` would say for our purposes: text or bytes.
fn sniff(output: &[Bytes]) -> HeaderValue {
    let head: Vec<u8> = output
        .iter()
        .flat_map(|c| c.iter().copied())
        .take(512)
        .collect();
    let binary = head
        .iter()
        .any(|b| matches!(b, 0..=8 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f));
    if binary || (std::str::from_utf8(&head).is_err() && head.len() < 509) {
        HeaderValue::from_static("application/octet-stream")
    } else {
        HeaderValue::from_static("text/plain; charset=utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshal_uses_canonical_names_and_base64() {
        let mut h = HeaderMap::new();
        h.append("x-thing", HeaderValue::from_static("a"));
        h.append("x-thing", HeaderValue::from_static("b"));
        let out = marshal(
            &h,
            &[Bytes::from_static(b"hi "), Bytes::from_static(b"there")],
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["header"]["X-Thing"], serde_json::json!(["a", "b"]));
        assert_eq!(v["body"]["raw"], "aGkgdGhlcmU=");
    }

    #[test]
    fn sniffs_text_and_binary() {
        assert_eq!(
            sniff(&[Bytes::from_static(b"hello\n")]),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            sniff(&[Bytes::from_static(b"\x00\x01\x02")]),
            "application/octet-stream"
        );
    }
}
