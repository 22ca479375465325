//! The request chain: strict head → health → auth → limit → runner.
//!
//! Each stage can answer early. A head RFC 9112 says to refuse is refused first
//! ([`crate::head`]), with its path's dot-segments resolved for every mode. `/_/health` and `/_/ready` are served here and are never
//! subject to auth, the concurrency limit or metrics. Every function request is then
//! checked for its API key (before its body is read, so an `Expect: 100-continue` upload
//! that fails never gets `100 Continue`), takes a concurrency slot, and goes to the
//! runner. Logging, metrics and the slot are tied to the response body's lifetime, so
//! they are settled however the request ends: complete, aborted, disconnected or panicked.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::body::{self, Body, BoxError};
use crate::config::Config;
use crate::logging;
use crate::metrics::Metrics;
use crate::queue::Slot;
use crate::runner::{
    fastcgi::FastCgi, files::Files, fork::Fork, lambda::Lambda, proxy::Proxy, Budget, Ctx,
};

/// A runner written as a closure, for tests of the chain itself.
pub type CustomRunner = Box<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// What answers function requests.
pub enum Runner {
    Fork(Fork),
    Proxy(Box<Proxy>),
    Files(Files),
    FastCgi(FastCgi),
    Lambda(Lambda),
    /// For tests of the chain itself.
    #[doc(hidden)]
    Custom(CustomRunner),
}

impl Runner {
    /// After the drain, before the backend stops: lets go of idle connections to it.
    pub fn close_idle(&self) {
        match self {
            Runner::FastCgi(f) => f.close_idle(),
            Runner::Proxy(h) => h.close_idle(),
            _ => {}
        }
    }

    async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        if req.method() == Method::CONNECT
            && matches!(
                self,
                Runner::Fork(_) | Runner::FastCgi(_) | Runner::Proxy(_) | Runner::Lambda(_)
            )
        {
            // A function is not a tunnel: CONNECT never reaches a handler or the upstream
            // (which would answer 200 and leave the client with nothing).
            return body::method_not_allowed("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        }
        match self {
            Runner::Fork(f) => f.call(req, ctx).await,
            Runner::Proxy(h) => h.call(req, ctx).await,
            Runner::Files(f) => f.call(req, ctx).await,
            Runner::FastCgi(f) => f.call(req, ctx).await,
            Runner::Lambda(l) => l.call(req, ctx).await,
            Runner::Custom(f) => f(req).await,
        }
    }
}

/// Liveness facts that health and shutdown share.
#[derive(Debug)]
pub struct State {
    /// False once shutdown has begun.
    pub accepting: AtomicBool,
    /// True while the server is starting: health fails until the startup lines
    /// (`Listening on port: N`) are written, so a tool that saw health go green finds
    /// them in the log. False for a chain built outside the server.
    pub starting: AtomicBool,
    /// The mode's backend (http upstream, FastCGI workers or server) has been seen
    /// ready and is alive. Always true for a mode without one.
    pub backend_ready: watch::Receiver<bool>,
    /// Function requests holding a concurrency slot.
    inflight: Arc<AtomicUsize>,
    /// With `max_queue`: the line for slots, whose permits the slot holders keep.
    queue: Option<crate::queue::Queue>,
}

/// Everything a request needs, shared by all connections.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub state: State,
    pub runner: Runner,
    ready: ReadyRun,
    /// The checks every function request passes.
    pub auth: crate::auth::Chain,
}

impl Shared {
    /// A chain whose backend is always ready (a mode without one, or a test).
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, runner: Runner) -> Arc<Shared> {
        Shared::with_backend(cfg, metrics, runner, watch::channel(true).1)
    }

    /// A chain whose health follows `backend_ready` (see [`crate::backend::Ready`]).
    pub fn with_backend(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        runner: Runner,
        backend_ready: watch::Receiver<bool>,
    ) -> Arc<Shared> {
        let l = &cfg.limits;
        let queue = match l.max_inflight {
            Some(max) if l.max_queue > 0 => {
                Some(crate::queue::Queue::new(max, l.max_queue, l.queue_timeout))
            }
            _ => None,
        };
        let auth = crate::auth::Chain::new(cfg.auth.api_keys.clone(), cfg.auth.jwt.clone());
        Arc::new(Shared {
            auth,
            cfg,
            metrics,
            state: State {
                accepting: AtomicBool::new(true),
                starting: AtomicBool::new(false),
                backend_ready,
                inflight: Arc::default(),
                queue,
            },
            runner,
            ready: ReadyRun::default(),
        })
    }

    /// Whether `/_/health` would answer 200.
    pub fn healthy(&self) -> bool {
        self.state.accepting.load(Ordering::Acquire)
            && !self.state.starting.load(Ordering::Acquire)
            && *self.state.backend_ready.borrow()
            && self.auth.ready()
            && self.cfg.lock_file.as_ref().is_none_or(|p| p.exists())
    }

    /// Answers one request.
    pub async fn handle(
        self: &Arc<Self>,
        mut req: Request<Body>,
        remote: Option<SocketAddr>,
    ) -> Response<Body> {
        if let Err(refused) = crate::head::check(&mut req) {
            return refused;
        }
        authority_is_the_host(&mut req);
        let path = req.uri().path();
        if path == "/_/health" || path == "/_/ready" {
            return self.probe(req).await;
        }
        let started = Instant::now();
        let mut done = self.record(&req, started);
        self.metrics.in_flight.inc();
        let resp = match self.admit(req, remote, &mut done).await {
            Err(resp) => resp,
            Ok(req) => {
                let ctx = Ctx {
                    budget: Budget::new(&self.cfg, started),
                    call_id: done.call_id.clone(),
                    slot: done.slot.clone(),
                };
                self.run_contained(req, &ctx, &done).await
            }
        };
        done.status = resp.status().as_u16();
        if self.cfg.mode == crate::config::Mode::Http {
            done.reason = Some(crate::runner::proxy::reason(&resp).to_owned());
        }
        let (parts, inner) = resp.into_parts();
        Response::from_parts(parts, Tracked { inner, done }.boxed_unsync())
    }

    /// What the request line and the metrics will need of a function request, which
    /// settles it when dropped.
    fn record(self: &Arc<Self>, req: &Request<Body>, started: Instant) -> Done {
        let uri = req.uri().path_and_query();
        let quiet = req
            .headers()
            .get(http::header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes().starts_with(b"kube-probe"));
        let call_id = match req.headers().get("x-call-id").and_then(|v| v.to_str().ok()) {
            Some(id) => id.to_owned(),
            // JSON handler lines carry an id to tie them to their request line; text
            // lines keep the peers' `[none]`.
            None if self.cfg.logs.format == crate::config::LogFormat::Json => {
                logging::new_call_id()
            }
            None => String::new(),
        };
        Done {
            shared: self.clone(),
            method: req.method().clone(),
            uri: uri.map_or_else(|| "/".into(), |p| p.as_str().to_owned()),
            started,
            status: 0,
            reason: None,
            bytes: 0,
            quiet,
            call_id,
            slot: None,
        }
    }

    /// The runner's answer; a panic in it is a 500 for this request only.
    async fn run_contained(&self, req: Request<Body>, ctx: &Ctx, done: &Done) -> Response<Body> {
        // Only JSON lines show a span's call id.
        let span = match self.cfg.logs.format {
            crate::config::LogFormat::Json => logging::request_span(&ctx.call_id),
            crate::config::LogFormat::Text => tracing::Span::none(),
        };
        let run = AssertUnwindSafe(self.runner.call(req, ctx).instrument(span));
        match run.catch_unwind().await {
            Ok(resp) => resp,
            Err(_) => {
                tracing::error!(
                    "request {} {} panicked; the server keeps serving",
                    done.method,
                    done.uri
                );
                body::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }

    /// Auth, then the concurrency limit (and its line, with `max_queue`). Hands the
    /// request on, or answers it.
    async fn admit(
        &self,
        mut req: Request<Body>,
        remote: Option<SocketAddr>,
        done: &mut Done,
    ) -> Result<Request<Body>, Response<Body>> {
        // A token check that waits for the issuer's keys counts against write_timeout.
        let until = tokio::time::Instant::from_std(done.started + self.cfg.timeouts.write);
        if let Err(refusal) = self.auth.check(req.headers_mut(), until).await {
            if refusal.is_failure() {
                self.metrics.auth_failures.inc();
            }
            return Err(self.auth.response(refusal));
        }
        if self.state.starting.load(Ordering::Acquire) && !*self.state.backend_ready.borrow() {
            // The upstream (or FastCGI server) is still starting: nothing to run yet.
            return Err(starting());
        }
        if let Some(max) = self.cfg.limits.max_inflight {
            let permit = match &self.state.queue {
                None => {
                    if self.state.inflight.fetch_add(1, Ordering::AcqRel) >= max {
                        self.state.inflight.fetch_sub(1, Ordering::AcqRel);
                        return Err(too_many(max));
                    }
                    None
                }
                Some(queue) => {
                    // The wait counts against write_timeout, not exec_timeout.
                    let until = done.started + self.cfg.timeouts.write;
                    let permit = queue
                        .slot(until, &self.metrics)
                        .await
                        .map_err(|_| too_many(max))?;
                    self.state.inflight.fetch_add(1, Ordering::AcqRel);
                    Some(permit)
                }
            };
            done.slot = Some(Slot::new(self.state.inflight.clone(), permit));
        }
        if let Some(addr) = remote {
            req.extensions_mut().insert(addr);
        }
        Ok(req)
    }

    async fn probe(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return body::method_not_allowed("GET, HEAD");
        }
        if !self.healthy() {
            return body::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
        }
        if req.uri().path() == "/_/health" {
            return body::text(StatusCode::OK, "OK");
        }
        let full = self.cfg.limits.max_inflight;
        if full.is_some_and(|max| self.state.inflight.load(Ordering::Acquire) >= max) {
            return body::text(
                StatusCode::TOO_MANY_REQUESTS,
                "Concurrent request limit reached\n",
            );
        }
        match &self.cfg.ready_path {
            None => Response::new(body::empty()),
            Some(path) => {
                let mut rx = self.ready_run(path);
                // The run's task always sends before it ends (or panics, dropping the
                // sender): either way the wait is over.
                let _ = rx.wait_for(Option::is_some).await;
                let answer = rx.borrow().clone();
                match answer {
                    Some(a) => a.response(),
                    None => body::text(StatusCode::BAD_GATEWAY, "readiness check failed\n"),
                }
            }
        }
    }

    /// Joins the readiness request to the function that is running, or starts one. It
    /// runs on its own task, so a probe that hangs up does not cancel it for the others.
    fn ready_run(self: &Arc<Self>, path: &str) -> watch::Receiver<Option<Arc<ReadyAnswer>>> {
        let mut running = self.ready.lock();
        if let Some(rx) = &*running {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        *running = Some(rx.clone());
        drop(running);
        self.metrics.ready_probe_runs.inc();
        let me = self.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            // Frees the slot however the run ends, a panic included.
            let _done = ReadyDone(me.clone());
            let answer = me.ask_ready(&path).await;
            let _ = tx.send(Some(Arc::new(answer)));
        });
        rx
    }

    /// Sends `GET <ready_path>` to the function and reads its whole answer, within
    /// `write_timeout`.
    async fn ask_ready(&self, path: &str) -> ReadyAnswer {
        let inner = Request::get(path).body(body::empty()).unwrap_or_default();
        let ctx = Ctx {
            budget: Budget::new(&self.cfg, Instant::now()),
            call_id: String::new(),
            slot: None,
        };
        let run = async {
            let (mut parts, inner) = self.runner.call(inner, &ctx).await.into_parts();
            parts.headers.remove(http::header::CONTENT_LENGTH);
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            let mut inner = inner;
            let mut body = Vec::new();
            while let Some(frame) = inner.frame().await {
                match frame {
                    Ok(f) => {
                        let Some(d) = f.data_ref() else { continue };
                        if body.len() + d.len() > READY_BODY_MAX {
                            tracing::warn!(
                                "ready_path answer is over {} KiB: /_/ready sends its status with an empty body",
                                READY_BODY_MAX / 1024
                            );
                            body.clear();
                            break;
                        }
                        body.extend_from_slice(d);
                    }
                    Err(e) => {
                        tracing::warn!("ready_path answer failed: {e}");
                        return ReadyAnswer::failed(StatusCode::BAD_GATEWAY);
                    }
                }
            }
            let body = Bytes::from(body);
            ReadyAnswer {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        match tokio::time::timeout(self.cfg.timeouts.write, run).await {
            Ok(a) => a,
            Err(_) => ReadyAnswer::failed(StatusCode::GATEWAY_TIMEOUT),
        }
    }
}

/// The largest body of a `ready_path` answer that `/_/ready` passes on; probes look at
/// the status.
const READY_BODY_MAX: usize = 64 * 1024;

/// One answer of the function to a readiness request, shared by every probe that
/// waited for it.
#[derive(Debug)]
struct ReadyAnswer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl ReadyAnswer {
    fn failed(status: StatusCode) -> ReadyAnswer {
        ReadyAnswer {
            status,
            headers: http::HeaderMap::new(),
            body: Bytes::from_static(b"readiness check failed\n"),
        }
    }

    fn response(&self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// The readiness request running now, if any: at most one goes to the function at a
/// time, however many probes arrive.
#[derive(Default)]
struct ReadyRun(std::sync::Mutex<Option<watch::Receiver<Option<Arc<ReadyAnswer>>>>>);

impl ReadyRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<watch::Receiver<Option<Arc<ReadyAnswer>>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Clears [`ReadyRun`] when a run's task ends.
struct ReadyDone(Arc<Shared>);

impl Drop for ReadyDone {
    fn drop(&mut self) {
        *self.0.ready.lock() = None;
    }
}

/// RFC 9112 §3.2.2: with an absolute-form target (`GET http://host:port/path`), the
/// target's authority is the host the request is for, and a `Host` header is replaced
/// by it, so handlers (`Http_Host`, `HTTP_HOST`, `SERVER_NAME`) and upstreams see one
/// host, not two that disagree.
fn authority_is_the_host(req: &mut Request<Body>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    // Without any `user@` part.
    let host = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

/// The 503 for a function request while the backend is still starting.
fn starting() -> Response<Body> {
    let mut resp = body::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the function is starting; retry shortly\n",
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The 429 for a request over `max_inflight` (with no queue place left).
fn too_many(max: usize) -> Response<Body> {
    let mut resp = body::text(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n"),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Settles a function request when its response body is finished or dropped: the log
/// line, the metrics, its hold on the concurrency slot.
struct Done {
    shared: Arc<Shared>,
    method: Method,
    uri: String,
    started: Instant,
    status: u16,
    /// http mode: the reason phrase of the status line, as of-watchdog logs it.
    reason: Option<String>,
    bytes: u64,
    quiet: bool,
    call_id: String,
    slot: Option<Slot>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        self.slot = None;
        self.shared.metrics.in_flight.dec();
        // No status: the request was dropped before its answer, because the client went
        // away (or shutdown killed it). Counted and logged as 499, nginx's "client closed
        // request", so it does not read as a server error.
        let status = if self.status == 0 { 499 } else { self.status };
        self.shared.metrics.observe(&self.method, status, took);
        if !self.quiet {
            logging::request(&logging::RequestLine {
                method: self.method.as_str(),
                uri: &self.uri,
                status,
                reason: self.reason.as_deref(),
                bytes: self.bytes,
                took,
                call_id: &self.call_id,
                show_call_id: self.shared.cfg.logs.callid,
            });
        }
        crate::os::memory::request_ended();
    }
}

/// A response body that counts what it sends and settles the request when dropped.
struct Tracked {
    inner: Body,
    done: Done,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(d) = frame.data_ref() {
                self.done.bytes += d.len() as u64;
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(env: &[(&str, &str)], runner: Runner) -> Arc<Shared> {
        let cfg = Config::from_env_pairs(env).expect("config");
        Shared::new(Arc::new(cfg), Metrics::new(), runner)
    }

    fn panicking() -> Runner {
        Runner::Custom(Box::new(|req: Request<Body>| {
            Box::pin(async move {
                if req.uri().path() == "/panic" {
                    panic!("handler bug");
                }
                Response::new(body::full("fine"))
            })
        }))
    }

    async fn send(s: &Arc<Shared>, path: &str) -> (StatusCode, Bytes) {
        let req = Request::post(path)
            .header("host", "fn")
            .body(body::empty())
            .expect("req");
        let resp = s.handle(req, None).await;
        let status = resp.status();
        (
            status,
            resp.into_body().collect().await.expect("body").to_bytes(),
        )
    }

    #[tokio::test]
    async fn a_panicking_request_is_contained_and_releases_its_slot() {
        let s = shared(
            &[
                ("fprocess", "cat"),
                ("max_inflight", "1"),
                ("suppress_lock", "true"),
            ],
            panicking(),
        );
        for _ in 0..3 {
            let (status, _) = send(&s, "/panic").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        let (status, body) = send(&s, "/ok").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "fine");
        assert_eq!(s.state.inflight.load(Ordering::Acquire), 0);
        let m = s.metrics.render();
        assert!(
            m.contains("http_requests_total{code=\"500\",method=\"post\"} 3\n")
                && m.contains("\nhttp_requests_in_flight 0\n"),
            "panicked requests are counted: {m}"
        );
    }

    #[tokio::test]
    async fn a_dropped_response_releases_its_slot() {
        let s = shared(
            &[
                ("fprocess", "cat"),
                ("max_inflight", "1"),
                ("suppress_lock", "true"),
            ],
            panicking(),
        );
        let resp = s
            .handle(
                Request::post("/ok")
                    .header("host", "fn")
                    .body(body::empty())
                    .expect("req"),
                None,
            )
            .await;
        let (status, _) = send(&s, "/ok").await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "slot held while the body is alive"
        );
        drop(resp);
        let (status, _) = send(&s, "/ok").await;
        assert_eq!(status, StatusCode::OK);
    }

    /// On tokio's paused clock, so the first run's 200 ms outlast the twenty probes
    /// however slowly this machine schedules them.
    #[tokio::test(start_paused = true)]
    async fn ready_probes_share_one_run_and_a_panicking_run_frees_the_slot() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let runner = Runner::Custom(Box::new(move |req: Request<Body>| {
            let n = counted.fetch_add(1, Ordering::AcqRel);
            Box::pin(async move {
                assert_eq!(req.uri().path(), "/ready");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if n == 1 {
                    panic!("ready handler bug");
                }
                Response::new(body::full(format!("run {n}")))
            })
        }));
        let s = shared(
            &[
                ("fprocess", "cat"),
                ("suppress_lock", "true"),
                ("ready_path", "/ready"),
            ],
            runner,
        );
        let probe = |s: Arc<Shared>| async move {
            let req = Request::get("/_/ready")
                .header("host", "fn")
                .body(body::empty())
                .expect("req");
            let resp = s.handle(req, None).await;
            let status = resp.status();
            (
                status,
                resp.into_body().collect().await.expect("body").to_bytes(),
            )
        };
        let answers = futures_join_all((0..20).map(|_| tokio::spawn(probe(s.clone())))).await;
        assert!(answers
            .iter()
            .all(|a| a == &(StatusCode::OK, Bytes::from("run 0"))));
        assert_eq!(calls.load(Ordering::Acquire), 1);
        assert_eq!(s.metrics.ready_probe_runs.get(), 1);
        // The second run panics: its probes get a 502, and the next probe runs again.
        assert_eq!(probe(s.clone()).await.0, StatusCode::BAD_GATEWAY);
        assert_eq!(
            probe(s.clone()).await,
            (StatusCode::OK, Bytes::from("run 2"))
        );
        assert_eq!(s.metrics.ready_probe_runs.get(), 3);
    }

    async fn futures_join_all<T>(
        handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles.collect::<Vec<_>>() {
            out.push(h.await.expect("task"));
        }
        out
    }

    #[tokio::test]
    async fn probes_are_not_limited_or_counted() {
        let s = shared(
            &[("fprocess", "cat"), ("suppress_lock", "true")],
            panicking(),
        );
        let req = Request::get("/_/health")
            .header("host", "fn")
            .body(body::empty())
            .expect("req");
        let resp = s.handle(req, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!s.metrics.render().contains("code=\"200\""));
        let req = Request::delete("/_/ready")
            .header("host", "fn")
            .body(body::empty())
            .expect("req");
        assert_eq!(
            s.handle(req, None).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
