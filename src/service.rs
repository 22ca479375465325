//! The request chain: health → auth → limit → runner (§3).
//!
//! Each stage can answer early. `/_/health` and `/_/ready` are served here and are never
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
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};
use crate::config::Config;
use crate::logging;
use crate::metrics::Metrics;
use crate::runner::{fastcgi::FastCgi, files::Files, fork::Fork, http::Http, Ctx};

/// A runner written as a closure, for tests of the chain itself.
pub type CustomRunner = Box<
    dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// What answers function requests.
pub enum Runner {
    Fork(Fork),
    Http(Http),
    Files(Files),
    FastCgi(FastCgi),
    /// For tests of the chain itself.
    #[doc(hidden)]
    Custom(CustomRunner),
}

impl Runner {
    async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        match self {
            Runner::Fork(f) => f.call(req, ctx).await,
            Runner::Http(h) => h.call(req, ctx).await,
            Runner::Files(f) => f.call(req).await,
            Runner::FastCgi(f) => f.call(req, ctx).await,
            Runner::Custom(f) => f(req).await,
        }
    }
}

/// Liveness facts that health and shutdown share.
#[derive(Debug)]
pub struct State {
    /// False once shutdown has begun.
    pub accepting: AtomicBool,
    /// http mode: the upstream has been seen ready and is alive. Always true otherwise.
    pub upstream_ready: AtomicBool,
    /// Function requests holding a concurrency slot.
    inflight: AtomicUsize,
    /// With `max_queue`: the line for slots, whose permits the slot holders keep.
    queue: Option<crate::queue::Queue>,
}

/// Everything a request needs, shared by all connections.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub state: State,
    pub runner: Runner,
    /// The checks every function request passes.
    pub auth: crate::auth::Chain,
}

impl Shared {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, runner: Runner) -> Arc<Shared> {
        let upstream_ready = cfg.mode != crate::config::Mode::Http;
        let queue = (cfg.max_inflight > 0 && cfg.max_queue > 0)
            .then(|| crate::queue::Queue::new(cfg.max_inflight, cfg.max_queue, cfg.queue_timeout));
        let auth = crate::auth::Chain::new(&cfg);
        Arc::new(Shared {
            auth,
            cfg,
            metrics,
            state: State {
                accepting: AtomicBool::new(true),
                upstream_ready: AtomicBool::new(upstream_ready),
                inflight: AtomicUsize::new(0),
                queue,
            },
            runner,
        })
    }

    /// Whether `/_/health` would answer 200.
    pub fn healthy(&self) -> bool {
        self.state.accepting.load(Ordering::Acquire)
            && self.state.upstream_ready.load(Ordering::Acquire)
            && self.auth.ready()
            && (self.cfg.suppress_lock || self.cfg.lock_path.exists())
    }

    /// Answers one request.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Body>,
        remote: Option<SocketAddr>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if path == "/_/health" || path == "/_/ready" {
            return self.probe(req).await;
        }
        let started = Instant::now();
        let method = req.method().clone();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let quiet = req
            .headers()
            .get(http::header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes().starts_with(b"kube-probe"));
        let call_id = match req.headers().get("x-call-id").and_then(|v| v.to_str().ok()) {
            Some(id) => id.to_owned(),
            // JSON handler lines carry an id to tie them to their request line; text
            // lines keep the peers' `[none]`.
            None if self.cfg.log_format == crate::config::LogFormat::Json => logging::new_call_id(),
            None => String::new(),
        };
        let done = Done {
            shared: self.clone(),
            method,
            uri,
            started,
            status: 0,
            bytes: 0,
            quiet,
            call_id: call_id.clone(),
            slot: false,
            permit: None,
        };
        self.metrics.in_flight.inc();
        let mut done = done;

        let resp = match self.admit(req, remote, &mut done).await {
            Err(resp) => resp,
            Ok(req) => {
                let ctx = Ctx {
                    write_deadline: started + self.cfg.write_timeout,
                    call_id,
                };
                match (CatchUnwind {
                    inner: AssertUnwindSafe(self.runner.call(req, &ctx)),
                })
                .await
                {
                    Ok(resp) => resp,
                    Err(()) => {
                        tracing::error!(
                            "request {} {} panicked; the server keeps serving",
                            done.method,
                            done.uri
                        );
                        body::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
                    }
                }
            }
        };
        done.status = resp.status().as_u16();
        let (parts, inner) = resp.into_parts();
        Response::from_parts(parts, Tracked { inner, done }.boxed_unsync())
    }

    /// Auth, then the concurrency limit (and its line, with `max_queue`). Hands the
    /// request on, or answers it.
    async fn admit(
        &self,
        mut req: Request<Body>,
        remote: Option<SocketAddr>,
        done: &mut Done,
    ) -> Result<Request<Body>, Response<Body>> {
        if let Err(refusal) = self.auth.check(req.headers_mut()).await {
            if refusal.is_failure() {
                self.metrics.auth_failures.inc();
            }
            return Err(self.auth.response(refusal));
        }
        let max = self.cfg.max_inflight;
        if max > 0 {
            match &self.state.queue {
                None => {
                    if self.state.inflight.fetch_add(1, Ordering::AcqRel) >= max {
                        self.state.inflight.fetch_sub(1, Ordering::AcqRel);
                        return Err(too_many(max));
                    }
                }
                Some(queue) => {
                    // The wait counts against write_timeout, not exec_timeout.
                    let until = done.started + self.cfg.write_timeout;
                    let permit = queue
                        .slot(until, &self.metrics)
                        .await
                        .map_err(|_| too_many(max))?;
                    done.permit = Some(permit);
                    self.state.inflight.fetch_add(1, Ordering::AcqRel);
                }
            }
            done.slot = true;
        }
        if let Some(addr) = remote {
            req.extensions_mut().insert(addr);
        }
        Ok(req)
    }

    async fn probe(&self, req: Request<Body>) -> Response<Body> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut resp = body::text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
            resp.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        if !self.healthy() {
            return body::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
        }
        if req.uri().path() == "/_/health" {
            return body::text(StatusCode::OK, "OK");
        }
        let max = self.cfg.max_inflight;
        if max > 0 && self.state.inflight.load(Ordering::Acquire) >= max {
            return body::text(
                StatusCode::TOO_MANY_REQUESTS,
                "Concurrent request limit reached\n",
            );
        }
        match &self.cfg.ready_path {
            None => Response::new(body::empty()),
            Some(path) => {
                let inner = Request::get(path.as_str())
                    .body(body::empty())
                    .unwrap_or_default();
                let ctx = Ctx {
                    write_deadline: Instant::now() + self.cfg.write_timeout,
                    call_id: String::new(),
                };
                self.runner.call(inner, &ctx).await
            }
        }
    }
}

/// The 429 of §3.3.
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
/// line, the metrics, the concurrency slot.
struct Done {
    shared: Arc<Shared>,
    method: Method,
    uri: String,
    started: Instant,
    status: u16,
    bytes: u64,
    quiet: bool,
    call_id: String,
    slot: bool,
    /// With `max_queue`: the slot itself, released when this is dropped.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        if self.slot {
            self.shared.state.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.metrics.in_flight.dec();
        // No status: the request was dropped before its answer, because the client went
        // away (or shutdown killed it). Counted and logged as 499, nginx's "client closed
        // request", so it does not read as a server error.
        let status = if self.status == 0 { 499 } else { self.status };
        self.shared.metrics.observe(&self.method, status, took);
        if !self.quiet {
            logging::request(
                self.method.as_str(),
                &self.uri,
                status,
                self.bytes,
                took,
                &self.call_id,
                self.shared.cfg.log_callid,
            );
        }
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

/// Turns a panic inside a request into an `Err`, so one bad request cannot take the
/// connection task (or anything else) down with it.
struct CatchUnwind<F> {
    inner: AssertUnwindSafe<F>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        #[allow(unsafe_code)]
        // SAFETY: `inner` is never moved out of the pinned struct.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner.0) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Action};
    use std::collections::HashMap;

    fn shared(env: &[(&str, &str)], runner: Runner) -> Arc<Shared> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Action::Run(raw) =
            parse(["fwatchdog".to_owned()], |k| env.get(k).cloned()).expect("parse")
        else {
            unreachable!()
        };
        let cfg = Config::from_raw(&raw).expect("config");
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
        let req = Request::post(path).body(body::empty()).expect("req");
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
            .handle(Request::post("/ok").body(body::empty()).expect("req"), None)
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

    #[tokio::test]
    async fn probes_are_not_limited_or_counted() {
        let s = shared(
            &[("fprocess", "cat"), ("suppress_lock", "true")],
            panicking(),
        );
        let req = Request::get("/_/health").body(body::empty()).expect("req");
        let resp = s.handle(req, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!s.metrics.render().contains("code=\"200\""));
        let req = Request::delete("/_/ready")
            .body(body::empty())
            .expect("req");
        assert_eq!(
            s.handle(req, None).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
