//! fastcgi mode: a pool of warm FastCGI 1.0 responders instead of one
//! process per request.
//!
//! The server is either the backend's spawned pool ([`Pool`], spawn-fcgi
//! inside the watchdog: `pool_size` workers from `fprocess` sharing one private Unix
//! socket, replaced when they die) or, with `fastcgi_address`, an external server
//! (php-fpm). Starting and stopping them is [`crate::backend`]'s job.
//!
//! [`FastCgi`] answers each request over one connection to the server: `BEGIN_REQUEST`
//! with `FCGI_KEEP_CONN`, the RFC 3875 meta-variables as `PARAMS` (the same ones
//! `--cgi` gives a forked handler, [`super::cgi::meta_variables`]), the body streamed as
//! `STDIN` while `STDOUT` is read, parsed as a CGI response ([`super::cgi::HeadBuf`])
//! and streamed to the client; `STDERR` goes to the log. Connections are kept open and
//! reused, one request at a time each, and never more than `pool_size` at once: a
//! php-cgi worker serves one connection until it is closed, so one more connection than
//! there are workers would wait in the listen backlog behind an idle one. Each exchange
//! on a connection has its own request id, and only a connection whose exchange ended
//! cleanly is reused. A request whose client has gone is not sent; one already sent gets
//! `ABORT_REQUEST` and keeps its connection and concurrency slot until the worker ends it;
//! a spawned worker still at it at the deadline is killed ([`Pool::kill_peer`]).
//!
//! Everything a worker sends is checked ([`codec::Decoder`]); a worker that breaks the
//! protocol gets its request answered 502 (or aborted, once the response has started),
//! never a panic.

pub mod codec;
mod pool;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::cgi;
use super::failure::{duration_header, malformed_cgi, X_DURATION};
use super::pipe::{BodyEnd, LogSink};
use super::{content_length, Ctx, Deadline, Failure};
use crate::body::{self, Abort, Body, BoxError};
use crate::config::{Config, FastCgiAddress};
use codec::{Decoder, End, Record};
use pool::{Conn, Connections, Io, Lease};

/// How long `ABORT_REQUEST` may take to send; a worker that does not take it in that
/// time is not waited for.
const ABORT_SEND: Duration = Duration::from_millis(100);

/// The spawned workers as the runner sees them (the backend runs them): where they
/// listen, and a way to stop the one still busy with an overdue request.
pub trait Pool: Send + Sync {
    fn socket(&self) -> &Path;
    /// SIGKILLs the worker at the other end of our connection `conn`, if it is ours.
    fn kill_peer(&self, conn: std::os::fd::BorrowedFd<'_>);
}

/// The FastCGI runner: what answers function requests in fastcgi mode.
pub struct FastCgi {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<Config>,
    /// The spawned workers (not with `fastcgi_address`), to stop one still busy with a
    /// request at its deadline.
    workers: Option<Arc<dyn Pool>>,
    /// `SERVER_PORT`.
    port: u16,
    /// The connections to the server, kept open between requests.
    conns: Arc<Connections>,
}

impl FastCgi {
    /// The runner over `workers` (the backend's spawned pool), or over the external
    /// server of `fastcgi_address`.
    pub fn new(cfg: Arc<Config>, port: u16, workers: Option<Arc<dyn Pool>>) -> FastCgi {
        // Where requests go: the workers' socket or the external server.
        let target = match (&workers, &cfg.fastcgi.address) {
            (Some(w), _) => FastCgiAddress::Unix(w.socket().to_owned()),
            (None, Some(address)) => address.clone(),
            // Not a valid configuration: requests fail with 502.
            (None, None) => FastCgiAddress::Unix(PathBuf::new()),
        };
        let conns = Arc::new(Connections::new(target, cfg.fastcgi.pool_size));
        FastCgi {
            inner: Arc::new(Inner {
                cfg,
                workers,
                port,
                conns,
            }),
        }
    }

    /// After the drain, before the workers are stopped: closes idle connections.
    pub fn close_idle(&self) {
        self.inner.conns.close_idle();
    }

    /// Answers one request.
    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let budget = &ctx.budget;
        let started = budget.started;
        let (parts, body) = req.into_parts();
        if let Err(f) = budget.check_declared(&parts.headers) {
            return f.answer(started);
        }
        // The application needs CONTENT_LENGTH to read its input: a chunked body is read
        // whole first, as nginx does (within the budget), a Content-Length one is
        // streamed.
        let declared = content_length(&parts.headers);
        let (input, stdin_len) = if let Some(n) = declared {
            (Input::Stream(budget.stream(body)), Some(n))
        } else if body.is_end_stream() {
            (Input::Empty, None)
        } else {
            match budget.collect(body).await {
                Ok((chunks, total)) => (Input::Chunks(chunks), Some(total)),
                Err(f) => return f.answer(started),
            }
        };
        if let Err(f) = budget.expired() {
            return f.answer(started);
        }
        let deadline = budget.run();
        let params = self.request_params(&parts, stdin_len);
        let safe = matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        );

        let (tx, chan) = body::Channel::new(body::RESPONSE_DEPTH);
        let (head_tx, head_rx) = oneshot::channel();
        let job = Job {
            inner: self.inner.clone(),
            params,
            safe,
            _slot: ctx.slot.clone(),
            input,
            tx,
            head_tx: Some(head_tx),
            deadline,
            started,
            call_id: ctx.call_id.clone(),
            rest: None,
        };
        tokio::spawn(job.run());
        match head_rx.await {
            Ok(Answer::Head(status, headers)) => {
                let mut resp = Response::new(chan.boxed_unsync());
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                resp
            }
            Ok(Answer::Early(resp)) => resp,
            Err(_) => bad_gateway("the FastCGI exchange ended unexpectedly", started),
        }
    }

    /// The `PARAMS` stream: the CGI meta-variables, `REQUEST_URI` (every PHP framework
    /// routes on it) and `SCRIPT_FILENAME` when configured.
    fn request_params(&self, parts: &http::request::Parts, stdin_len: Option<u64>) -> Vec<u8> {
        let cfg = &self.inner.cfg;
        let hidden = cfg.auth.hidden_header();
        let meta = cgi::Meta::for_request(parts, self.inner.port, stdin_len, hidden);
        let meta = cgi::meta_variables(parts, &meta);
        let uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes();
        let script = cfg.fastcgi.script_filename.as_deref().map(str::as_bytes);
        let params = meta
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .chain(std::iter::once((&b"REQUEST_URI"[..], uri)))
            .chain(script.map(|s| (&b"SCRIPT_FILENAME"[..], s)));
        codec::encode_pairs(params)
    }
}

/// The request body as it goes to `STDIN`.
enum Input {
    Empty,
    Chunks(Vec<Bytes>),
    Stream(Body),
}

/// What `call` waits for.
enum Answer {
    /// The CGI head: the body follows on the channel.
    Head(StatusCode, HeaderMap),
    /// A whole response from us (502, 504, ...).
    Early(Response<Body>),
}

/// Why an exchange did not end with `END_REQUEST`.
#[derive(Debug)]
enum Interrupt {
    /// The worker broke the protocol, closed the connection or could not be reached.
    Worker(String),
    /// The application's output is not a CGI response. The details quote that output,
    /// so they go to the log only.
    Malformed(cgi::HeadError),
    /// `exec_timeout` (or the write deadline).
    TimedOut,
    /// The client went away.
    Gone,
    /// The request body could not be read.
    Body(BodyEnd),
}

/// One request's exchange, on its own task so the response body can stream after
/// `call` has returned the head.
struct Job {
    inner: Arc<Inner>,
    /// The `PARAMS` stream's content; each exchange frames it with its own id.
    params: Vec<u8>,
    /// A safe method (GET, HEAD, OPTIONS, TRACE): may be sent again.
    safe: bool,
    /// The request's concurrency slot, held until the worker is done with the request,
    /// even when the client has gone.
    _slot: Option<crate::queue::Slot>,
    input: Input,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    head_tx: Option<oneshot::Sender<Answer>>,
    deadline: Deadline,
    started: Instant,
    call_id: String,
    /// The part of a streamed body the application did not read, held (unread) until
    /// the answer is over.
    rest: Option<Body>,
}

impl Job {
    async fn run(mut self) {
        // A reused connection may have been closed by the worker since (it exited, or
        // was recycled). An exchange that failed there before any record arrived is sent
        // once more on a new connection, but only when sending it twice cannot do
        // anything twice: a safe method (GET, HEAD, OPTIONS, TRACE) with a body we still
        // hold whole. Anything else (POST, PUT, PATCH, DELETE, ...) may have been acted on
        // by a worker that then died, and gets a 502 instead. This is stricter than
        // nginx, which also resends PUT and DELETE.
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let mut lease = match self.lease().await {
                Ok(lease) => lease,
                Err(f) => break Err(f),
            };
            let reused = lease.reused;
            let Some(mut conn) = lease.conn.take() else {
                break Err(Interrupt::Worker("no connection".into()));
            };
            let replayable = matches!(self.input, Input::Empty | Input::Chunks(_));
            let mut progress = Progress::default();
            let r = self.exchange_on(&mut conn, &mut progress).await;
            let retry = matches!(r, Err(Interrupt::Worker(_)))
                && reused
                && attempts < 2
                && !progress.any_record
                && self.safe
                && replayable;
            if retry {
                // `lease` frees the place; `conn` is closed.
                drop(conn);
                drop(lease);
                continue;
            }
            self.give_back(lease, conn, &r, &progress);
            break r.map(|end| (end, progress.head_done));
        };
        self.finish(outcome).await;
        // The response is over (its sender goes with `self`), and so is the body: what
        // the application did not read is not read after the answer (the connection is
        // closed instead).
    }

    /// A place in the pool and its connection. A client that leaves while its request
    /// waits for one: the request is never sent.
    async fn lease(&mut self) -> Result<Lease, Interrupt> {
        let lease = tokio::select! {
            l = self.inner.conns.checkout(self.deadline.at) => l?,
            _ = self.tx.closed() => return Err(Interrupt::Gone),
        };
        if self.tx.is_closed() {
            lease.keep();
            return Err(Interrupt::Gone);
        }
        Ok(lease)
    }

    /// One exchange on `conn`, whichever kind of socket it is.
    async fn exchange_on(
        &mut self,
        conn: &mut Conn,
        progress: &mut Progress,
    ) -> Result<End, Interrupt> {
        let id = conn.next_id();
        match &mut conn.io {
            Io::Unix(s) => {
                let (r, w) = s.split();
                self.exchange(r, w, id, progress).await
            }
            Io::Tcp(s) => {
                let (r, w) = s.split();
                self.exchange(r, w, id, progress).await
            }
        }
    }

    /// After an exchange: a spawned worker still at work on a request nobody waits for
    /// is stopped (php-cgi, for one, only notices `ABORT_REQUEST` when it writes; it is
    /// replaced) rather than let hold its place past the deadline, and only a connection
    /// whose exchange ended exactly as it should is used again.
    fn give_back(&self, lease: Lease, conn: Conn, r: &Result<End, Interrupt>, progress: &Progress) {
        if progress.overdue {
            if let (Some(w), Io::Unix(s)) = (&self.inner.workers, &conn.io) {
                w.kill_peer(std::os::fd::AsFd::as_fd(s));
            }
        }
        if matches!(r, Ok(end) if progress.reusable(end)) {
            let mut lease = lease;
            lease.conn = Some(conn);
            lease.keep();
        }
    }

    /// Answers what is left to answer once the exchange is over.
    async fn finish(&mut self, outcome: Result<(End, bool), Interrupt>) {
        let early = Answer::Early;
        match outcome {
            Ok((end, true)) => {
                if end.app_status != 0 {
                    tracing::info!("FastCGI application ended with status {}", end.app_status);
                }
            }
            Ok((end, false)) => {
                let resp = match end.protocol_status {
                    codec::OVERLOADED => Failure::Overloaded.answer(self.started),
                    codec::REQUEST_COMPLETE => {
                        malformed(&cgi::HeadError::Unterminated, self.started)
                    }
                    s => bad_gateway(
                        &format!("the FastCGI server refused the request (protocolStatus {s})"),
                        self.started,
                    ),
                };
                self.answer(early(resp));
            }
            Err(Interrupt::Gone) => {}
            Err(f) => {
                let resp = match &f {
                    Interrupt::TimedOut => {
                        tracing::info!(
                            "FastCGI request did not finish: {}",
                            self.deadline.exceeded()
                        );
                        Failure::Timeout(self.deadline).answer(self.started)
                    }
                    Interrupt::Worker(why) => bad_gateway(why, self.started),
                    Interrupt::Malformed(e) => malformed(e, self.started),
                    Interrupt::Body(end) => Failure::Body(end.clone()).answer(self.started),
                    Interrupt::Gone => return,
                };
                if self.head_tx.is_some() {
                    self.answer(early(resp));
                } else {
                    // The head is out: cut the response so the client sees it incomplete.
                    let why = match f {
                        Interrupt::TimedOut => self.deadline.exceeded(),
                        Interrupt::Worker(w) => w,
                        Interrupt::Malformed(_) => "malformed CGI response".into(),
                        _ => "request failed".into(),
                    };
                    let _ = self.tx.send(Err(Box::new(Abort(why)))).await;
                }
            }
        }
    }

    fn answer(&mut self, a: Answer) {
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(a);
        }
    }

    /// Writes the request and reads the response at once, until `END_REQUEST`, the
    /// deadline, or the client leaving; then settles what the connection's next user
    /// needs to know (`progress`) and what a retry would send again.
    async fn exchange<R, W>(
        &mut self,
        mut r: R,
        mut w: W,
        id: u16,
        progress: &mut Progress,
    ) -> Result<End, Interrupt>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (mut input, replay) = std::mem::replace(&mut self.input, Input::Empty).for_attempt();
        let mut reading = Reading::new(id, &self.inner.cfg, &self.call_id);
        let (result, stdin_done) = self
            .drive(
                &mut r,
                &mut w,
                &mut input,
                &mut reading,
                &progress.mid_record,
            )
            .await;
        progress.any_record = reading.any_record;
        progress.stdin_done = stdin_done;
        progress.head_done = self.head_tx.is_none();
        if let Err(Interrupt::TimedOut | Interrupt::Gone) = &result {
            let mid_record = progress.mid_record.load(Ordering::Relaxed);
            progress.overdue = abandon(
                &result,
                &mut r,
                &mut w,
                &mut reading,
                self.deadline.at,
                mid_record,
            )
            .await;
        }
        progress.leftover = reading.dec.pending();
        reading.log.finish();
        if result.is_err() {
            // Kept for a retry on a fresh connection.
            if let Some(i) = replay {
                self.input = i;
            }
        }
        if !stdin_done {
            if let Input::Stream(body) = input {
                self.rest = Some(body);
            }
        }
        result
    }

    /// The exchange itself: the request written while the response is read, until the
    /// response ends or fails, the deadline, or the client leaving. Also says whether
    /// the whole request (its empty `STDIN` record included) went out.
    async fn drive<R, W>(
        &mut self,
        r: &mut R,
        w: &mut W,
        input: &mut Input,
        reading: &mut Reading,
        mid_record: &AtomicBool,
    ) -> (Result<End, Interrupt>, bool)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let head = codec::request_head_with(reading.id, true, &self.params);
        let (deadline, tx) = (self.deadline.at, self.tx.clone());
        let mut stdin_done = false;
        let writer = write_request(w, reading.id, &head, input, mid_record);
        tokio::pin!(writer);
        let reader = read_response(r, reading, self);
        tokio::pin!(reader);
        let result = loop {
            tokio::select! {
                res = &mut reader => break res,
                res = &mut writer, if !stdin_done => match res {
                    Ok(()) => stdin_done = true,
                    Err(f) => break Err(f),
                },
                _ = tokio::time::sleep_until(deadline.into()) => break Err(Interrupt::TimedOut),
                _ = tx.closed() => break Err(Interrupt::Gone),
            }
        };
        (result, stdin_done)
    }
}

/// After the deadline or the client leaving: tells the worker (`ABORT_REQUEST`), and
/// says whether it is overdue, still at work on a request nobody waits for. A record
/// cut half-way (`mid_record`) cannot be followed by `ABORT_REQUEST`: the connection is
/// simply closed, which is enough for a worker that has not had the whole request; a
/// timed-out one is still at work.
async fn abandon<R, W>(
    result: &Result<End, Interrupt>,
    r: &mut R,
    w: &mut W,
    reading: &mut Reading,
    deadline: Instant,
    mid_record: bool,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let timed_out = matches!(result, Err(Interrupt::TimedOut));
    if mid_record {
        return timed_out;
    }
    let abort = codec::abort_request(reading.id);
    let sent = tokio::time::timeout(ABORT_SEND, async {
        w.write_all(&abort).await?;
        w.flush().await
    })
    .await;
    // The client is gone, but the worker may still be running its request: wait for it
    // to finish (php-cgi only notices the abort when it writes), until the deadline, so
    // the request keeps its place in the pool and its concurrency slot meanwhile.
    match sent {
        _ if timed_out => true,
        Ok(Ok(())) => !wait_end(r, reading, deadline).await,
        _ => false,
    }
}

impl Input {
    /// The input for one attempt, and what a retry would send again: a body held whole
    /// (or none) is kept, a streamed one cannot be.
    fn for_attempt(self) -> (Input, Option<Input>) {
        match self {
            Input::Chunks(c) => (Input::Chunks(c.clone()), Some(Input::Chunks(c))),
            Input::Empty => (Input::Empty, Some(Input::Empty)),
            s => (s, None),
        }
    }
}

/// What an exchange got to, for deciding whether its connection can be reused.
#[derive(Default)]
struct Progress {
    any_record: bool,
    stdin_done: bool,
    head_done: bool,
    /// Bytes after `END_REQUEST`.
    leftover: usize,
    /// A `STDIN` record is half written: no `ABORT_REQUEST` can follow it.
    mid_record: AtomicBool,
    /// The deadline passed (or the client left) with the worker still at work on the
    /// request.
    overdue: bool,
}

impl Progress {
    fn reusable(&self, end: &End) -> bool {
        self.stdin_done
            && self.leftover == 0
            && end.protocol_status == codec::REQUEST_COMPLETE
            && !self.mid_record.load(Ordering::Relaxed)
    }
}

impl Reading {
    fn new(id: u16, cfg: &Config, call_id: &str) -> Reading {
        let logs = &cfg.logs;
        Reading {
            id,
            buf: cgi::HeadBuf::new(cgi::MAX_HEAD),
            dec: Decoder::new(),
            log: LogSink::new("stderr", logs.buffer_size, logs.prefix, call_id.to_owned()),
            any_record: false,
        }
    }
}

struct Reading {
    /// This exchange's request id.
    id: u16,
    buf: cgi::HeadBuf,
    dec: Decoder,
    /// The worker's `STDERR`.
    log: LogSink,
    any_record: bool,
}

/// `BEGIN_REQUEST`, `PARAMS`, then the body as `STDIN` records and the empty one.
async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    id: u16,
    head: &[u8],
    input: &mut Input,
    mid_record: &AtomicBool,
) -> Result<(), Interrupt> {
    let worker =
        |e: std::io::Error| Interrupt::Worker(format!("writing to the FastCGI server: {e}"));
    let end = codec::end_stream(codec::STDIN, id);
    mid_record.store(true, Ordering::Relaxed);
    match input {
        Input::Empty => {
            let mut all = Vec::with_capacity(head.len() + end.len());
            all.extend_from_slice(head);
            all.extend_from_slice(&end);
            w.write_all(&all).await.map_err(worker)?;
        }
        Input::Chunks(chunks) => {
            w.write_all(head).await.map_err(worker)?;
            for c in chunks.iter() {
                write_stdin(w, id, c.clone()).await.map_err(worker)?;
            }
            w.write_all(&end).await.map_err(worker)?;
        }
        Input::Stream(body) => {
            w.write_all(head).await.map_err(worker)?;
            mid_record.store(false, Ordering::Relaxed);
            // The body's bounds (silence, size) are its own: it comes through the budget.
            loop {
                let frame = match body.frame().await {
                    None => break,
                    Some(Err(e)) => return Err(Interrupt::Body(BodyEnd::of(&*e))),
                    Some(Ok(f)) => f,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                mid_record.store(true, Ordering::Relaxed);
                write_stdin(w, id, data).await.map_err(worker)?;
                mid_record.store(false, Ordering::Relaxed);
            }
            mid_record.store(true, Ordering::Relaxed);
            w.write_all(&end).await.map_err(worker)?;
        }
    }
    w.flush().await.map_err(worker)?;
    mid_record.store(false, Ordering::Relaxed);
    Ok(())
}

/// One chunk of the body as `STDIN` records, header and data in one vectored write.
async fn write_stdin<W: AsyncWrite + Unpin>(
    w: &mut W,
    id: u16,
    mut data: Bytes,
) -> std::io::Result<()> {
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(codec::MAX_CONTENT));
        let header = codec::header(codec::STDIN, id, piece.len());
        let mut buf = Buf::chain(&header[..], piece);
        w.write_all_buf(&mut buf).await?;
    }
    Ok(())
}

/// Reads records until `END_REQUEST`: the CGI head to `call`, the body to the client,
/// stderr to the log.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    st: &mut Reading,
    job: &mut Job,
) -> Result<End, Interrupt> {
    let proto = |e: &dyn std::fmt::Display| {
        Interrupt::Worker(format!("the FastCGI server broke the protocol: {e}"))
    };
    loop {
        let rec = match st.dec.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => match r.read_buf(st.dec.buf_mut()).await {
                Ok(0) => {
                    return Err(Interrupt::Worker(
                        "the FastCGI server closed the connection before END_REQUEST".into(),
                    ))
                }
                Ok(_) => continue,
                Err(e) => {
                    return Err(Interrupt::Worker(format!(
                        "reading from the FastCGI server: {e}"
                    )))
                }
            },
            Err(e) => return Err(proto(&e)),
        };
        st.any_record = true;
        let Record { kind, id, content } = rec;
        if id == 0 {
            // Management records (GET_VALUES_RESULT, UNKNOWN_TYPE): not ours to act on.
            continue;
        }
        if id != st.id {
            // Left over from an earlier request on this connection, or made up.
            return Err(proto(&format!(
                "record for request id {id}, ours is {}",
                st.id
            )));
        }
        match kind {
            codec::STDOUT if content.is_empty() => {}
            codec::STDOUT => {
                if job.head_tx.is_some() {
                    match st.buf.push(content) {
                        Ok(None) => {}
                        Ok(Some((head, rest))) => {
                            let mut headers = head.headers;
                            headers.insert(X_DURATION.clone(), duration_header(job.started));
                            job.answer(Answer::Head(head.status, headers));
                            if !rest.is_empty() && job.tx.send(Ok(Frame::data(rest))).await.is_err()
                            {
                                return Err(Interrupt::Gone);
                            }
                        }
                        Err(e) => return Err(Interrupt::Malformed(e)),
                    }
                } else if job.tx.send(Ok(Frame::data(content))).await.is_err() {
                    return Err(Interrupt::Gone);
                }
            }
            codec::STDERR => st.log.push(&content),
            codec::END_REQUEST => return codec::parse_end(&content).map_err(|e| proto(&e)),
            other => return Err(proto(&format!("unexpected record type {other}"))),
        }
    }
}

/// After `ABORT_REQUEST` for a client that has gone: reads and discards what the worker
/// still sends (its stderr still goes to the log) until its `END_REQUEST`, the
/// connection closing, or anything unexpected (true), or `deadline` (false).
async fn wait_end<R: AsyncRead + Unpin>(r: &mut R, st: &mut Reading, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline.into(), async {
        loop {
            let rec = match st.dec.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => match r.read_buf(st.dec.buf_mut()).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(_) => return,
            };
            if rec.id == 0 {
                continue;
            }
            if rec.id != st.id {
                return;
            }
            match rec.kind {
                codec::STDOUT => {}
                codec::STDERR => st.log.push(&rec.content),
                _ => return,
            }
        }
    })
    .await
    .is_ok()
}

fn bad_gateway(why: &str, started: Instant) -> Response<Body> {
    tracing::warn!("FastCGI: {why}");
    Failure::BadGateway(why.to_owned()).answer(started)
}

/// The 502 for output that is not a CGI response.
fn malformed(e: &cgi::HeadError, started: Instant) -> Response<Body> {
    malformed_cgi(&"FastCGI application", e, started)
}

#[cfg(test)]
mod tests;
