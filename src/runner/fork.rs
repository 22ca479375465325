//! The fork modes: one handler process per request, body on stdin, answer on stdout.
//!
//! `streaming` holds the response head back until the handler writes its first byte or
//! exits, so the status can be honest (500 for a failed start or exit, 504 for a
//! timeout), then streams stdout as it comes; a failure after output started aborts the
//! response rather than ending it cleanly. `serializing` and `classic` read the body
//! first, collect stdout, and answer once the handler exits.
//!
//! With `--cgi` the handler also gets the CGI/1.1 meta-variables and its stdout starts
//! with a CGI header block ([`super::cgi`]): streaming sends the head once that block is
//! parsed, serializing splits it off the collected output. Every handler is told its
//! deadline (`FWATCHDOG_DEADLINE_MS`); at that deadline its group gets SIGKILL, or
//! SIGTERM and SIGKILL `exec_kill_grace` later.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::budget::{Budget, Output, OverCap};
use super::cgi;
use super::env::{handler_env, EnvOptions};
use super::failure::{duration_header, malformed_cgi, X_DURATION};
use super::pipe::{feed_stdin, BodyEnd, LogSink};
use super::sniff;
use super::{content_length, Ctx, Deadline, Failure};
use crate::body::{self, Abort, Body, BoxError};
use crate::config::{Config, Mode};
use crate::header::canonical as canonical_header;
use crate::metrics::Metrics;
use crate::os::process::{self, ExitStatus, Stderr};

/// Once the handler's process group is gone, how long its stdout may stay open (held by
/// a process that left the group, such as a `setsid` daemon) before the answer ends.
/// While the group has members, its output is read until EOF, up to the run's deadline.
const EOF_GRACE: Duration = Duration::from_secs(1);
/// After the leader's exit, how often we look whether its group still has members.
const GROUP_POLL: Duration = Duration::from_millis(100);
/// Largest single read from stdout.
const MAX_CHUNK: usize = 64 * 1024;

pub struct Fork {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    /// The port requests arrive on (CGI's `SERVER_PORT`).
    port: u16,
    /// `fprocess`, prepared once. `None` only for an empty command line, which config
    /// refuses; each request then answers 500.
    program: Option<process::Program>,
}

/// A task that is aborted when this guard is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The handler's stdout or stderr; our end of a pipe from [`process`], already
/// non-blocking, so the checks (three syscalls per pipe) are skipped.
fn reader(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

fn pipes_failed() -> Failure {
    Failure::Start("cannot set up the handler's pipes".into())
}

impl Fork {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Fork {
        let port = cfg.listen.port;
        // The group outlives the leader: background processes it started may still be
        // writing the answer, which is read until EOF (bounded by the run's deadline).
        let program = process::Program::new(&cfg.fprocess)
            .ok()
            .map(process::Program::group_outlives_leader);
        Fork {
            cfg,
            metrics,
            port,
            program,
        }
    }

    /// The port really bound, when `port` was 0.
    pub fn with_port(self, port: u16) -> Fork {
        Fork { port, ..self }
    }

    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        if let Err(f) = ctx.budget.check_declared(req.headers()) {
            return f.answer(ctx.budget.started);
        }
        match self.cfg.mode {
            Mode::Streaming => self.streaming(req, ctx).await,
            _ => self.serializing(req, ctx).await,
        }
    }

    fn stderr_logger(&self, fd: Option<OwnedFd>, ctx: &Ctx) -> Option<oneshot::Sender<()>> {
        let rx = reader(fd?).ok()?;
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let log = self.log_sink("stderr", ctx).read_from(rx);
        tokio::spawn(async move {
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

    /// The log lines of the handler's `stream` for this request.
    fn log_sink(&self, stream: &'static str, ctx: &Ctx) -> LogSink {
        let logs = &self.cfg.logs;
        LogSink::new(stream, logs.buffer_size, logs.prefix, ctx.call_id.clone())
    }

    /// With `write_debug`, the handler's stdout is logged too, line by line as it is
    /// read (so a streaming response is logged while it streams).
    fn stdout_log(&self, ctx: &Ctx) -> Option<LogSink> {
        self.cfg
            .fork_io
            .write_debug
            .then(|| self.log_sink("stdout", ctx))
    }

    /// `content_length` is classic's `Http_ContentLength`; `stdin_len`, CGI's
    /// `CONTENT_LENGTH`, when known. Nothing starts once the request's deadline has
    /// passed.
    fn spawn_handler(
        &self,
        parts: &http::request::Parts,
        content_length: Option<u64>,
        stdin_len: Option<u64>,
        (budget, deadline): (&Budget, Deadline),
        stderr: Stderr,
    ) -> Result<process::Child, Failure> {
        budget.expired()?;
        let hidden = self.cfg.auth.hidden_header();
        let mut env = handler_env(
            parts,
            &EnvOptions {
                cgi_headers: self.cfg.fork_io.cgi_headers,
                content_length,
                hidden,
            },
        );
        if self.cfg.fork_io.cgi {
            let meta = cgi::Meta::for_request(parts, self.port, stdin_len, hidden);
            env.extend(cgi::meta_variables(parts, &meta));
        }
        let deadline_ms = super::deadline_ms(deadline.at).to_string();
        env.push(("FWATCHDOG_DEADLINE_MS".to_owned(), deadline_ms.into()));
        let started = match &self.program {
            Some(program) => program.spawn(env, stderr),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command",
            )),
        };
        match started {
            Ok(child) => {
                self.metrics.handler_starts.inc();
                Ok(child)
            }
            Err(e) => {
                let cmd = &self.cfg.fprocess[0];
                tracing::error!("cannot start handler {cmd:?}: {e}");
                Err(Failure::Start(format!("cannot start {cmd}: {e}")))
            }
        }
    }

    /// The run hit its deadline before the response head: end it (SIGKILL, or SIGTERM
    /// and the grace) and answer 504 saying which limit it was.
    fn timed_out(&self, run: Run, deadline: Deadline, started: Instant) -> Response<Body> {
        self.metrics.handler_timeouts.inc();
        tracing::info!(
            "handler {} killed: {}",
            run.child.pid(),
            deadline.exceeded()
        );
        run.expire(self.cfg.timeouts.exec_kill_grace);
        Failure::Timeout(deadline).answer(started)
    }

    fn count_exit(&self, status: ExitStatus) {
        self.metrics.handler_exit(status.code());
    }

    /// Streaming mode: the response head waits for the handler's first output (or its
    /// exit), then the body is streamed as the handler writes it.
    async fn streaming(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let te_trailers = wants_trailers(&parts.headers);
        let started = ctx.budget.started;
        let deadline = ctx.budget.run();
        let run = match self.start_streaming(&parts, body, ctx, deadline).await {
            Ok(run) => run,
            Err(f) => return f.answer(started),
        };
        let (run, first, head) = match self.await_head(run, deadline, started).await {
            Ok(opened) => opened,
            Err(resp) => return resp,
        };
        let mut builder = Response::builder().header(&X_DURATION, duration_header(started));
        if let Some(ct) = &self.cfg.fork_io.content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct.as_str());
        }
        if let Some(head) = head {
            builder = with_head(builder, head);
        }
        let Some(first) = first else {
            return self
                .answer_without_output(run, builder, deadline, started)
                .await;
        };

        let (tx, rx) = body::Channel::new(body::RESPONSE_DEPTH);
        let stream = BodyStream {
            run,
            tx,
            deadline,
            metrics: self.metrics.clone(),
            grace: self.cfg.timeouts.exec_kill_grace,
            te_trailers,
            cgi: self.cfg.fork_io.cgi,
        };
        tokio::spawn(stream.run(first));
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

    /// Starts a streaming run: the handler, its stderr log, and the copy of the request
    /// body to its stdin.
    async fn start_streaming(
        &self,
        parts: &http::request::Parts,
        body: Body,
        ctx: &Ctx,
        deadline: Deadline,
    ) -> Result<Run, Failure> {
        let stdin_len = content_length(&parts.headers);
        let mut child = self.spawn_handler(
            parts,
            None,
            stdin_len,
            (&ctx.budget, deadline),
            Stderr::Pipe,
        )?;
        let stderr_done = self.stderr_logger(child.stderr.take(), ctx);
        let (mut run, stdin) = Run::new(child, stderr_done, self.stdout_log(ctx), ctx)?;
        run.pump = feed_stdin(ctx.budget.stream(body), stdin)
            .await
            .map_err(|_| pipes_failed())?;
        Ok(run)
    }

    /// Holds the head back until the first byte of output (with --cgi: the end of the
    /// header block), EOF, or a failure. Decides whether the answer is a failure (504 on
    /// the deadline, 502 for a bad CGI head, the body's 4xx/5xx) or a response whose head
    /// can be sent: then returns the first output (`None` at EOF) and any CGI head.
    async fn await_head(
        &self,
        mut run: Run,
        deadline: Deadline,
        started: Instant,
    ) -> Result<(Run, Option<Bytes>, Option<cgi::Head>), Response<Body>> {
        let mut head = None;
        let step = if self.cfg.fork_io.cgi {
            match run.cgi_head(deadline.at).await {
                Ok((step, h)) => {
                    head = h;
                    step
                }
                Err(e) => return Err(bad_cgi(run.child.pid(), &e, started)),
            }
        } else {
            run.step(deadline.at).await
        };
        let first = match step {
            Step::Data(data) => Some(data),
            Step::Eof => None,
            Step::Deadline => return Err(self.timed_out(run, deadline, started)),
            Step::Body(end) => {
                run.child.kill();
                return Err(Failure::Body(end).answer(started));
            }
        };
        Ok((run, first, head))
    }

    /// The answer for a run that exited (or closed stdout) without output: the exit
    /// status decides between the empty 200 in `builder`, a 500, and a 504 if it hangs
    /// on past the deadline. With --cgi no output is a malformed response (502).
    async fn answer_without_output(
        &self,
        mut run: Run,
        builder: http::response::Builder,
        deadline: Deadline,
        started: Instant,
    ) -> Response<Body> {
        let status = match run.wait(deadline.at).await {
            Some(s) => s,
            None => return self.timed_out(run, deadline, started),
        };
        self.count_exit(status);
        if status.success() && self.cfg.fork_io.cgi {
            return bad_cgi(run.child.pid(), &cgi::HeadError::Unterminated, started);
        }
        if status.success() {
            return builder
                .body(body::empty())
                .unwrap_or_else(|_| Response::new(body::empty()));
        }
        Failure::Exit(status).answer(started)
    }

    /// Serializing and classic: the body is read whole, written to stdin while stdout is
    /// collected (capped by `max_response_bytes`), and the answer sent once the handler
    /// has exited.
    async fn serializing(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let started = ctx.budget.started;
        if let Some(refused) = self.classic_refuses(req.method()) {
            return refused;
        }
        let (parts, body) = req.into_parts();
        let (input, total) = match self.read_input(&parts, body, &ctx.budget).await {
            Ok(input) => input,
            Err(f) => return f.answer(started),
        };
        let deadline = ctx.budget.run();
        let (run, _writer) = match self
            .start_buffered(&parts, input, total, deadline, ctx)
            .await
        {
            Ok(started_run) => started_run,
            Err(f) => return f.answer(started),
        };
        match self.collect_output(run, deadline, ctx).await {
            Ok(collected) => self.buffered_response(&parts, collected, started),
            Err(resp) => resp,
        }
    }

    /// Classic mode answers only GET, POST, PUT, PATCH and DELETE.
    fn classic_refuses(&self, method: &Method) -> Option<Response<Body>> {
        let allowed = matches!(
            *method,
            Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if self.cfg.mode != Mode::Classic || allowed {
            return None;
        }
        Some(body::method_not_allowed("GET, POST, PUT, PATCH, DELETE"))
    }

    /// The whole body, within the budget, as stdin will get it (the `marshal_request`
    /// envelope, if set), and the body's own length.
    async fn read_input(
        &self,
        parts: &http::request::Parts,
        body: Body,
        budget: &Budget,
    ) -> Result<(Vec<Bytes>, u64), Failure> {
        let (chunks, total) = budget.collect(body).await?;
        let input = if self.cfg.fork_io.marshal_request {
            vec![marshal(&parts.headers, &chunks)]
        } else {
            chunks
        };
        Ok((input, total))
    }

    /// Starts a buffered run: the handler, its stderr log, and the copy of `input` to its
    /// stdin (a task aborted when the returned guard is dropped).
    async fn start_buffered(
        &self,
        parts: &http::request::Parts,
        input: Vec<Bytes>,
        total: u64,
        deadline: Deadline,
        ctx: &Ctx,
    ) -> Result<(Run, Option<AbortOnDrop<BodyEnd>>), Failure> {
        let stderr_mode = if self.cfg.fork_io.combine_output {
            Stderr::Stdout
        } else {
            Stderr::Pipe
        };
        let stdin_len = input.iter().map(|c| c.len() as u64).sum();
        let classic = self.cfg.mode == Mode::Classic;
        let mut child = self.spawn_handler(
            parts,
            classic.then_some(total),
            Some(stdin_len),
            (&ctx.budget, deadline),
            stderr_mode,
        )?;
        let _stderr_done = self.stderr_logger(child.stderr.take(), ctx);
        let (run, stdin) = Run::new(child, None, self.stdout_log(ctx), ctx)?;
        let writer = feed_stdin(
            http_body_util::BodyExt::boxed_unsync(body::Chunks::new(input)),
            stdin,
        )
        .await
        .map_err(|_| pipes_failed())?;
        Ok((run, writer.map(AbortOnDrop)))
    }

    /// Collects the run's output until EOF and its exit status, within `deadline` and
    /// `max_response_bytes`. With --cgi the header block is checked as it arrives, so a
    /// handler that does not speak CGI fails at once.
    async fn collect_output(
        &self,
        mut run: Run,
        deadline: Deadline,
        ctx: &Ctx,
    ) -> Result<Collected, Response<Body>> {
        let started = ctx.budget.started;
        let (output, cgi_head) = match self.read_output(&mut run, deadline, ctx).await {
            Ok(read) => read,
            Err(Cut::Deadline) => return Err(self.timed_out(run, deadline, started)),
            Err(Cut::Malformed(e)) => return Err(bad_cgi(run.child.pid(), &e, started)),
            Err(Cut::OverCap(max)) => return Err(self.over_cap(run, max, started)),
        };
        let Some(status) = run.wait(deadline.at).await else {
            return Err(self.timed_out(run, deadline, started));
        };
        self.count_exit(status);
        // With --cgi a parsed header block is the answer, whatever the exit status (as
        // Apache mod_cgi and nginx + fcgiwrap): PHP's `http_response_code(503); echo ...;
        // exit(1);` is a 503 with its body, not a 500. The exit status is logged.
        let mut output = output.into_chunks();
        let head = match cgi_head {
            Some((head, rest, at)) => {
                if !status.success() {
                    tracing::info!(
                        "handler {} {status} after its CGI header block; its answer is sent",
                        run.child.pid()
                    );
                }
                take_cgi_head(&mut output, rest, at);
                Some(head)
            }
            None if !status.success() => None,
            None if self.cfg.fork_io.cgi => {
                return Err(bad_cgi(
                    run.child.pid(),
                    &cgi::HeadError::Unterminated,
                    started,
                ))
            }
            None => None,
        };
        Ok(Collected {
            status,
            output,
            head,
        })
    }

    /// Reads the run's output until EOF, within `deadline` and `max_response_bytes`.
    /// With --cgi the header block is checked as it arrives, so a handler that does not
    /// speak CGI fails at once; then also returns the head, the start of the body, and
    /// the index of the chunk the body starts in.
    async fn read_output(
        &self,
        run: &mut Run,
        deadline: Deadline,
        ctx: &Ctx,
    ) -> Result<(Output, Option<(cgi::Head, Bytes, usize)>), Cut> {
        let mut output = ctx.budget.output();
        let mut cgi_buf = self
            .cfg
            .fork_io
            .cgi
            .then(|| cgi::HeadBuf::new(cgi::MAX_HEAD));
        let mut cgi_head = None;
        loop {
            match run.step(deadline.at).await {
                Step::Data(d) => {
                    if let Some(buf) = cgi_buf.as_mut() {
                        if let Some((head, rest)) = buf.push(d.clone()).map_err(Cut::Malformed)? {
                            cgi_head = Some((head, rest, output.chunks().len()));
                            cgi_buf = None;
                        }
                    }
                    output.push(d).map_err(|OverCap(max)| Cut::OverCap(max))?;
                }
                Step::Eof => return Ok((output, cgi_head)),
                Step::Deadline => return Err(Cut::Deadline),
                Step::Body(_) => unreachable!("serializing has no body pump"),
            }
        }
    }

    /// The handler wrote more than `max_response_bytes`: its group is killed and the
    /// request gets 500. Nothing more of its output is held.
    fn over_cap(&self, run: Run, max: u64, started: Instant) -> Response<Body> {
        tracing::warn!(
            "handler {} killed: its answer exceeds max_response_bytes ({max})",
            run.child.pid()
        );
        run.child.kill();
        Failure::ResponseTooLarge(max).answer(started)
    }

    /// The answer of a buffered run: 200 with the output (its Content-Type configured,
    /// echoed from the request, or sniffed), the CGI head's, or 500 with the exit status
    /// and the output.
    fn buffered_response(
        &self,
        parts: &http::request::Parts,
        collected: Collected,
        started: Instant,
    ) -> Response<Body> {
        let Collected {
            status,
            mut output,
            head,
        } = collected;
        let mut builder = Response::builder().header(&X_DURATION, duration_header(started));
        if !status.success() && head.is_none() {
            output.insert(0, Bytes::from(format!("{status}\n")));
            builder = builder
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        } else {
            let ct = match &self.cfg.fork_io.content_type {
                Some(ct) => HeaderValue::from_str(ct).ok(),
                None => parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .cloned()
                    .or_else(|| sniffed(&output)),
            };
            if let Some(ct) = ct {
                builder = builder.header(http::header::CONTENT_TYPE, ct);
            }
            if let Some(head) = head {
                builder = with_head(builder, head);
            }
        }
        let body = http_body_util::BodyExt::boxed_unsync(body::Chunks::new(output));
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(body::empty()))
    }
}

/// Why reading a buffered run's output stopped before EOF.
enum Cut {
    Deadline,
    /// Not a CGI header block (with --cgi).
    Malformed(cgi::HeadError),
    /// More than `max_response_bytes` (the limit).
    OverCap(u64),
}

/// What a buffered run produced.
struct Collected {
    status: ExitStatus,
    output: Vec<Bytes>,
    /// The CGI head, split off `output` (with --cgi, whatever the exit status).
    head: Option<cgi::Head>,
}

/// Removes the CGI header block from the collected output: the chunks up to and
/// including the one the body starts in (`at`) go, and `rest`, the start of the body,
/// takes their place.
fn take_cgi_head(output: &mut Vec<Bytes>, rest: Bytes, at: usize) {
    output.drain(..=at);
    if !rest.is_empty() {
        output.insert(0, rest);
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
    /// The request-body copy, ended with the run: nothing of the body is read after
    /// the answer (see [`body_to_stdin`] for what is discarded before).
    pump: Option<tokio::task::JoinHandle<BodyEnd>>,
    /// The request's concurrency slot (`max_inflight`), held until the run is over,
    /// `exec_kill_grace` included: live handler groups never outnumber the slots.
    _slot: Option<crate::queue::Slot>,
    status: Option<ExitStatus>,
    /// After the leader's exit, when to look next whether its group has members left.
    next_check: Option<Instant>,
    /// When the group was seen empty with stdout still open: [`EOF_GRACE`] counts from
    /// here.
    orphaned_at: Option<Instant>,
    _stderr_done: Option<oneshot::Sender<()>>,
    /// With `write_debug`: stdout is logged too, line by line as it is read.
    stdout_log: Option<LogSink>,
    buf: BytesMut,
    chunk: usize,
}

impl Run {
    /// A run of `child`, reading its stdout; its stdin is returned for the caller to
    /// feed.
    fn new(
        mut child: process::Child,
        stderr_done: Option<oneshot::Sender<()>>,
        stdout_log: Option<LogSink>,
        ctx: &Ctx,
    ) -> Result<(Run, OwnedFd), Failure> {
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take().map(reader)) {
            (Some(i), Some(Ok(o))) => (i, o),
            _ => return Err(pipes_failed()),
        };
        let run = Run {
            child,
            stdout,
            pump: None,
            _slot: ctx.slot.clone(),
            status: None,
            next_check: None,
            orphaned_at: None,
            _stderr_done: stderr_done,
            buf: BytesMut::with_capacity(4096),
            chunk: 4096,
            stdout_log,
        };
        Ok((run, stdin))
    }

    /// Waits for the next thing that matters: output, EOF, the deadline, or a body failure.
    ///
    /// The leader's exit does not end the output: processes it started in its group may
    /// still hold stdout and write to it, and are read until EOF or the deadline. Only
    /// when the group is gone and stdout is still open (held by a process that left the
    /// group, which we cannot kill) does the output end, [`EOF_GRACE`] later.
    async fn step(&mut self, deadline: Instant) -> Step {
        loop {
            if self.buf.capacity() < self.chunk {
                self.buf.reserve(self.chunk);
            }
            let eof_by = self.orphaned_at.map(|t| t + EOF_GRACE);
            let check = self.next_check.filter(|_| self.orphaned_at.is_none());
            tokio::select! {
                r = self.stdout.read_buf(&mut self.buf) => {
                    return match r {
                        Ok(0) | Err(_) => Step::Eof,
                        Ok(n) => {
                            if n == self.chunk && self.chunk < MAX_CHUNK {
                                self.chunk *= 2;
                            }
                            let data = self.buf.split().freeze();
                            if let Some(log) = &mut self.stdout_log {
                                log.push(&data);
                            }
                            Step::Data(data)
                        }
                    };
                }
                s = self.child.wait(), if self.status.is_none() => {
                    self.status = Some(s);
                    self.next_check = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(check.unwrap_or(deadline).into()), if check.is_some() => {
                    if self.child.group_alive() {
                        self.next_check = Some(Instant::now() + GROUP_POLL);
                    } else {
                        self.orphaned_at = Some(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(eof_by.unwrap_or(deadline).into()), if eof_by.is_some() => {
                    tracing::info!(
                        "handler {}: its process group is gone but a process outside it still holds stdout open; the answer ends here",
                        self.child.pid()
                    );
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

    /// Reads output until the CGI header block has been parsed; then returns the head
    /// and `Data` with the start of the body (possibly empty). Any other step (EOF, the
    /// deadline, a body failure) comes back as it is, with no head.
    async fn cgi_head(
        &mut self,
        deadline: Instant,
    ) -> Result<(Step, Option<cgi::Head>), cgi::HeadError> {
        let mut buf = cgi::HeadBuf::new(cgi::MAX_HEAD);
        loop {
            match self.step(deadline).await {
                Step::Data(data) => {
                    if let Some((head, rest)) = buf.push(data)? {
                        return Ok((Step::Data(rest), Some(head)));
                    }
                }
                other => return Ok((other, None)),
            }
        }
    }

    /// Ends a run that overran its deadline: SIGKILL for the whole group at once, or with
    /// a `grace`, SIGTERM first and SIGKILL once the grace is over. Meanwhile the run lives
    /// on in a task that drains and discards its output, so the handler can log while it
    /// cleans up; the leader's exit ends the grace early (the reaper then kills what is
    /// left of the group).
    fn expire(mut self, grace: Duration) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if grace.is_zero() || !self.child.signal(nix::sys::signal::Signal::SIGTERM) {
            self.child.kill();
            return;
        }
        tokio::spawn(async move {
            let until = Instant::now() + grace;
            while let Step::Data(_) | Step::Body(_) = self.step(until).await {}
            let _ = self.wait(until).await;
            // Dropping the run SIGKILLs whatever is left of the group.
        });
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

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(pump) = &self.pump {
            pump.abort();
        }
    }
}

/// Whether the client accepts trailers (`TE: trailers`), so a failure after the head can
/// be told in an `X-Exit-Code` trailer.
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

/// An abort of a streaming body: the client sees the response cut off.
fn fail(msg: String) -> Result<Frame<Bytes>, BoxError> {
    Err(Box::new(Abort(msg)))
}

/// The body of a streaming response once its head is decided: the handler's output,
/// then an end that says how the run ended.
struct BodyStream {
    run: Run,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    deadline: Deadline,
    metrics: Arc<Metrics>,
    grace: Duration,
    te_trailers: bool,
    /// A CGI handler: its header block was the answer, so a non-zero exit after it is
    /// logged, not an abort.
    cgi: bool,
}

impl BodyStream {
    /// Sends `first`, the output read before the head, then the rest.
    async fn run(self, first: Bytes) {
        // With --cgi the header block may have been all there was so far.
        if !first.is_empty() && self.tx.send(Ok(Frame::data(first))).await.is_err() {
            return; // client gone; dropping `run` kills the group
        }
        if let Some(stream) = self.copy().await {
            stream.finish().await;
        }
    }

    /// Copies output until EOF, then hands itself back for [`BodyStream::finish`]. On
    /// the deadline or a request-body failure it ends the run and aborts the body; it
    /// stops, too, when the client is gone (dropping the run kills the group).
    async fn copy(mut self) -> Option<BodyStream> {
        loop {
            let step = tokio::select! {
                s = self.run.step(self.deadline.at) => s,
                _ = self.tx.closed() => return None,
            };
            match step {
                Step::Data(data) => {
                    tokio::select! {
                        r = self.tx.send(Ok(Frame::data(data))) => if r.is_err() { return None },
                        _ = tokio::time::sleep_until(self.deadline.at.into()) => {
                            self.overrun().await;
                            return None;
                        }
                    }
                }
                Step::Eof => return Some(self),
                Step::Deadline => {
                    self.overrun().await;
                    return None;
                }
                Step::Body(end) => {
                    self.run.child.kill();
                    let _ = self.tx.send(fail(format!("request body: {end:?}"))).await;
                    return None;
                }
            }
        }
    }

    /// After EOF the exit status ends the body: cleanly on success; on a failure with an
    /// `X-Exit-Code` trailer when the client accepts trailers, else by an abort; if the
    /// run outlives the deadline, it is ended and the body aborted.
    async fn finish(mut self) {
        let status = tokio::select! {
            s = self.run.wait(self.deadline.at) => s,
            _ = self.tx.closed() => return,
        };
        match status {
            Some(s) if s.success() => self.metrics.handler_exit(0),
            Some(s) if self.cgi => {
                self.metrics.handler_exit(s.code());
                tracing::info!(
                    "handler {} {s} after its CGI header block; its answer is sent",
                    self.run.child.pid()
                );
                if self.te_trailers {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-exit-code", HeaderValue::from(s.code()));
                    let _ = self.tx.send(Ok(Frame::trailers(trailers))).await;
                }
            }
            Some(s) => {
                self.metrics.handler_exit(s.code());
                tracing::info!("handler failed after output started: {s}");
                if self.te_trailers {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-exit-code", HeaderValue::from(s.code()));
                    let _ = self.tx.send(Ok(Frame::trailers(trailers))).await;
                } else {
                    let _ = self.tx.send(fail(s.to_string())).await;
                }
            }
            None => self.overrun().await,
        }
    }

    /// The run outlived its deadline after the head went out: it is ended (SIGKILL, or
    /// SIGTERM and the grace) and the body aborted, so the client sees it cut off.
    async fn overrun(self) {
        self.metrics.handler_timeouts.inc();
        tracing::info!(
            "handler killed after output started: {}",
            self.deadline.exceeded()
        );
        self.run.expire(self.grace);
        // Not `try_send`: with the channel full (a slow reader) it would fail, and
        // dropping `tx` ends the body cleanly, a truncated 200. This waits until the
        // client reads or the stalled connection is cut (crate::conn).
        let _ = self.tx.send(Err(self.deadline.abort())).await;
    }
}

/// The status and header fields of a CGI response head, over the defaults already set
/// (a `Content-Type` from the head replaces the configured one).
fn with_head(mut builder: http::response::Builder, head: cgi::Head) -> http::response::Builder {
    builder = builder.status(head.status);
    if let Some(headers) = builder.headers_mut() {
        headers.extend(head.headers);
    }
    builder
}

/// The 502 for a handler whose output is not a CGI response.
fn bad_cgi(pid: i32, e: &cgi::HeadError, started: Instant) -> Response<Body> {
    malformed_cgi(&format_args!("handler {pid}"), e, started)
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

/// The classic watchdog's Content-Type for output nothing else labels: Go's
/// `http.DetectContentType` of its first bytes, and none at all for an empty body (Go
/// sniffs only what is written).
fn sniffed(output: &[Bytes]) -> Option<HeaderValue> {
    let head: Vec<u8> = output
        .iter()
        .flat_map(|c| c.iter().copied())
        .take(sniff::WINDOW)
        .collect();
    (!head.is_empty()).then(|| HeaderValue::from_static(sniff::content_type(&head)))
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
    fn classic_output_is_sniffed_and_an_empty_one_gets_no_type() {
        let html = [Bytes::from_static(b"<h"), Bytes::from_static(b"tml>hi")];
        assert_eq!(sniffed(&html).expect("a type"), "text/html; charset=utf-8");
        assert_eq!(sniffed(&[Bytes::new()]), None);
        assert_eq!(sniffed(&[]), None);
    }
}
