//! The process's life: bind, become ready, serve, and drain on SIGTERM (or SIGHUP, SIGQUIT) or SIGINT.
//!
//! Startup: the listener is bound before anything else can fail late, the lock file is
//! written only once we can really serve (the mode's [`Backend`] is ready), and the
//! `Listening on port: N` line reports the port actually bound. Shutdown: health fails at
//! once, the lock file goes, on SIGTERM we keep serving for `healthcheck_interval` so the
//! orchestrator stops routing to us (not on SIGINT: that is Ctrl-C at a terminal), then
//! stop accepting, let in-flight requests finish within `write_timeout`, stop the
//! backend, and kill whatever handlers remain. A backend that dies on its own starts the
//! same shutdown without the grace period. A second signal exits at once.
//!
//! The function port and the metrics port share one acceptor ([`Port`] and
//! [`accept_loop`]): the same HTTP settings (head deadline, keep-alive idle timeout,
//! head size limits), a cap on open connections, and an accept loop that backs off on
//! errors such as running out of descriptors. Both are open to clients without a key,
//! so neither may be a way to exhaust the process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};

use crate::backend::Backend;
use crate::body::Body;
use crate::config::{Config, Mode};
use crate::duration::format_duration;
use crate::exit::Exit;
use crate::metrics::Metrics;
use crate::os::signal::Stop;
use crate::runner::fastcgi::{FastCgi, Pool};
use crate::runner::{files::Files, fork::Fork, lambda::Lambda, proxy::Proxy};
use crate::service::{Runner, Shared};

/// Open connections, and the switch that asks them to close once idle.
struct Conns {
    open: AtomicUsize,
    all_closed: Notify,
    closing: watch::Sender<bool>,
}

struct ConnGuard(Arc<Conns>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// On shutdown, how long a connection that has not sent its first request yet may take
/// to send it.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Resolves once the flag is set (or its sender is gone).
async fn until_set(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Binds a listening socket with a backlog fit for bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The HTTP/1.1 settings of every connection, on both ports.
fn conn_builder(cfg: &Config) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.read)
        .keep_alive(true)
        .max_buf_size(256 * 1024)
        // Room for a 64 KiB URI plus headers; also keeps every header under the
        // kernel's 128 KiB limit for one environment string.
        .max_header_size(96 * 1024);
    builder
}

/// Serves function requests on any byte stream exactly as on an accepted TCP
/// connection (same HTTP settings, same write-stall bound, same request chain), until
/// the stream ends. For tests and fuzzing over in-memory streams.
pub async fn serve_io<I>(io: I, shared: Arc<Shared>, peer: Option<SocketAddr>) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = crate::conn::Stream::new(
        io,
        shared.cfg.timeouts.write,
        crate::conn::WriteDeadline::default(),
    );
    let builder = conn_builder(&shared.cfg);
    let svc = service(
        move |req| {
            let shared = shared.clone();
            async move { shared.handle(req, peer).await }
        },
        None,
        None,
    );
    builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
}

/// hyper's service over `handle`, for one connection: the request body boxed, no error
/// ever (a failure is a response). `begun` is told when a request begins; each request
/// carries a share in the connection's place (`held`) in its extensions.
fn service<H, F>(
    handle: H,
    begun: Option<Arc<Notify>>,
    held: Option<crate::conn::Held>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<hyper::Response<Body>, std::convert::Infallible>,
    > + Send,
>
where
    H: Fn(hyper::Request<Body>) -> F,
    F: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        if let Some(b) = &begun {
            b.notify_one();
        }
        let mut req = boxed(req);
        if let Some(h) = &held {
            h.request_begins();
            req.extensions_mut().insert(h.clone());
        }
        let resp = handle(req);
        async move { Ok(resp.await) }
    })
}

fn boxed(req: hyper::Request<hyper::body::Incoming>) -> hyper::Request<Body> {
    req.map(|b| {
        http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(b, Into::into))
    })
}

/// Most connections open at once on the metrics port. A scraper needs one; the cap
/// keeps an unauthenticated port from holding the descriptors and memory the function
/// port needs.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// The first pause after a failed accept, and the longest. Each failure in a row
/// doubles the pause; an accepted connection resets it.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Which port a [`Port`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Function requests and probes.
    Main,
    Metrics,
}

impl Kind {
    /// The `port` label of the rejection counter, and the word in logs.
    fn name(self) -> &'static str {
        match self {
            Kind::Main => "main",
            Kind::Metrics => "metrics",
        }
    }

    /// What sets the port's connection cap, for the log line.
    fn cap_setting(self) -> &'static str {
        match self {
            Kind::Main => "max_connections",
            Kind::Metrics => "the metrics port's fixed cap",
        }
    }
}

/// One listening port, hardened the same way for the function port and the metrics
/// port: the HTTP settings of [`conn_builder`] (head deadline, keep-alive idle timeout,
/// head size limits), a cap on open connections, and a backed-off accept loop. The two
/// ports differ only in their kind, their cap and what answers a request.
struct Port {
    kind: Kind,
    builder: http1::Builder,
    conns: Arc<Conns>,
    /// Most connections open at once; more are closed as soon as they are accepted.
    max: usize,
    metrics: Arc<Metrics>,
    write_timeout: Duration,
}

impl Port {
    fn new(kind: Kind, cfg: &Config, max: usize, metrics: Arc<Metrics>) -> Port {
        Port {
            kind,
            builder: conn_builder(cfg),
            conns: Arc::new(Conns {
                open: AtomicUsize::new(0),
                all_closed: Notify::new(),
                closing: watch::channel(false).0,
            }),
            max,
            metrics,
            write_timeout: cfg.timeouts.write,
        }
    }

    fn rejected(&self) -> &crate::metrics::Counter {
        match self.kind {
            Kind::Main => &self.metrics.connections_rejected,
            Kind::Metrics => &self.metrics.metrics_connections_rejected,
        }
    }
}

/// A log line that is written at most once per [`RateLimited::EVERY`]; the lines held
/// back meanwhile are counted and reported with the next one, so a flood of the same
/// failure costs one line a second, not one per event.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether to log now; if so, how many lines were held back since the last one.
    fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What a run of failed accepts costs: a pause that grows while they keep failing (out
/// of descriptors stays so until a connection closes; retrying at once only burns the
/// CPU the open connections need), and a rate-limited warning.
#[derive(Debug, Default)]
struct AcceptErrors {
    pause: Duration,
    log: RateLimited,
}

impl AcceptErrors {
    fn accepted(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// Logs (at most once a second) and returns how long to pause before the next try.
    fn failed(&mut self, port: &str, e: &std::io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        if let Some(held) = self.log.allow(std::time::Instant::now()) {
            let more = if held > 0 {
                format!(" ({held} more since the last warning)")
            } else {
                String::new()
            };
            tracing::warn!(
                "accept failed on the {port} port: {e}{more}; retrying in {} ms",
                self.pause.as_millis()
            );
        }
        self.pause
    }
}

/// Accepts connections until `stop` resolves, each served by `handle` on its own task.
/// Connections the kernel already completed (the listen backlog) are accepted and
/// served before the listener closes, so a client whose `connect` succeeded is not
/// reset.
async fn accept_loop<H, F>(
    listener: TcpListener,
    port: Arc<Port>,
    handle: H,
    stop: impl std::future::Future<Output = ()>,
) where
    H: Fn(hyper::Request<Body>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let mut errors = AcceptErrors::default();
    let mut over_cap = RateLimited::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    errors.accepted();
                    admit(stream, peer, &port, &handle, &mut over_cap);
                }
                // One client gave up before we took its connection: nothing to wait for.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => {}
                Err(e) => {
                    let pause = errors.failed(port.kind.name(), &e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.as_mut() => break,
                    }
                }
            },
            _ = stop.as_mut() => break,
        }
    }
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await
    {
        admit(stream, peer, &port, &handle, &mut over_cap);
    }
    drop(listener);
}

/// Serves a new connection, or closes it at once when the port is at its cap.
fn admit<H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    port: &Arc<Port>,
    handle: &H,
    over_cap: &mut RateLimited,
) where
    H: Fn(hyper::Request<Body>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    if port.conns.open.load(Ordering::Acquire) >= port.max {
        drop(stream);
        port.rejected().inc();
        if let Some(held) = over_cap.allow(std::time::Instant::now()) {
            tracing::warn!(
                "{} connections open on the {} port ({}): closing new ones ({} closed since the last warning)",
                port.max,
                port.kind.name(),
                port.kind.cap_setting(),
                held + 1
            );
        }
        return;
    }
    serve_conn(stream, peer, port, handle.clone());
}

/// Serves one connection on its own task until it closes, or until shutdown asks it to
/// finish its current request and close.
fn serve_conn<H, F>(stream: tokio::net::TcpStream, peer: SocketAddr, port: &Arc<Port>, handle: H)
where
    H: Fn(hyper::Request<Body>, SocketAddr) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let conns = &port.conns;
    conns.open.fetch_add(1, Ordering::AcqRel);
    let deadline = crate::conn::WriteDeadline::default();
    let guard = crate::conn::Held::new(
        ConnGuard(conns.clone()),
        deadline.clone(),
        port.write_timeout,
    );
    let builder = port.builder.clone();
    let mut closing = conns.closing.subscribe();
    // Set once the connection has begun a request; see the shutdown branch below.
    let begun = Arc::new(Notify::new());
    let begun_in_service = begun.clone();
    let write_timeout = port.write_timeout;
    tokio::spawn(async move {
        let svc = service(
            move |req| handle(req, peer),
            Some(begun_in_service),
            Some(guard),
        );
        let conn = builder
            .serve_connection(
                TokioIo::new(crate::conn::Stream::new(stream, write_timeout, deadline)),
                svc,
            )
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = until_set(&mut closing) => {
                // hyper closes a connection that has not begun a request at once, even
                // with the request already in its socket buffer. A connection accepted
                // just before the listener closed gets a moment to begin its first one.
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = begun.notified() => {}
                    _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    });
}

/// Answers the metrics port: `/metrics`, else 404.
fn metrics_answer(req: &hyper::Request<Body>, metrics: &Metrics) -> hyper::Response<Body> {
    if req.uri().path() == "/metrics" {
        let mut r = hyper::Response::new(crate::body::full(metrics.render()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    } else {
        crate::body::text(http::StatusCode::NOT_FOUND, "Not Found\n")
    }
}

/// Runs the watchdog until it is stopped. Returns the exit code.
pub async fn run(cfg: Config) -> Exit {
    match serve(Arc::new(cfg)).await {
        Ok(exit) | Err(exit) => exit,
    }
}

/// The life of the process as named phases. An `Err` ends it early with that exit code
/// (`Clean` too: a stop signal before we were ready), after logging why.
async fn serve(cfg: Arc<Config>) -> Result<Exit, Exit> {
    let mut stop_signals = prepare_process()?;
    log_startup(&cfg);
    let (listener, port) = bind_main(&cfg)?;
    let metrics = Metrics::new();
    spawn_metrics_port(&cfg, &metrics)?;
    let mut backend = Backend::new(cfg.clone(), &metrics).map_err(|e| fail(&e))?;
    let shared = build_shared(&cfg, port, metrics, &backend);
    let main_port = spawn_main_port(&cfg, &shared, listener);
    tokio::spawn(crate::os::memory::give_back());
    let lock = become_ready(&cfg, &shared, &mut backend, &mut stop_signals).await?;
    tracing::info!("Listening on port: {port}");
    // Health goes green only once the startup lines are out: most were written as they
    // were logged; any stderr could not take at once are waited for here (at most 2 s
    // if nobody reads stderr), once.
    crate::logging::started();
    shared.state.starting.store(false, Ordering::Release);

    let cause = wait_for_stop(&mut stop_signals, &mut backend).await;
    shared.state.accepting.store(false, Ordering::Release);
    drop(lock);
    let grace = cause.grace(&cfg);
    // The backend is stopped only once the requests it serves have drained.
    let drain_then_stop_backend = async {
        main_port.drain(grace, cfg.timeouts.write).await;
        shared.runner.close_idle();
        backend.stop().await;
    };
    tokio::select! {
        _ = drain_then_stop_backend => {}
        sig = stop_signals.recv() => {
            tracing::info!("Received {sig} again: exiting now");
            crate::os::process::kill_all();
            return Err(Exit::Runtime);
        }
    }
    crate::os::process::kill_all();
    tracing::info!("Shutdown complete");
    Ok(match cause {
        StopCause::Signal(_) => Exit::Clean,
        StopCause::BackendDied => Exit::Runtime,
    })
}

/// Logs `why` as the error that stops the process: exit 1.
fn fail(why: &dyn std::fmt::Display) -> Exit {
    tracing::error!("{why}");
    Exit::Runtime
}

/// The reaper of child processes and the stop signals, before anything is started.
fn prepare_process() -> Result<Stop, Exit> {
    crate::os::process::start_reaper()
        .map_err(|e| fail(&format!("cannot watch for child processes: {e}")))?;
    Stop::install().map_err(|e| fail(&format!("cannot install signal handlers: {e}")))
}

/// The version, the effective configuration and what it could not use.
fn log_startup(cfg: &Config) {
    tracing::info!("fwatchdog version: {}", env!("CARGO_PKG_VERSION"));
    tracing::info!("Config: {}", cfg.summary());
    if !cfg.mode_set {
        tracing::info!(
            "mode is not set: running mode={}, of-watchdog's default; an image built for the classic watchdog needs mode=classic",
            cfg.mode.name()
        );
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(keys) = &cfg.auth.api_keys {
        for (name, path) in keys.sources() {
            tracing::info!("API key secret {name}: loaded from {}", path.display());
        }
    }
    if let Some(lock) = cfg.lock_file.as_ref().filter(|p| p.exists()) {
        // Another instance sharing $TMPDIR would remove this file when it stops, and our
        // health would fail with it; say so now rather than then.
        tracing::warn!(
            "lock file {} already exists: another fwatchdog shares this TMPDIR (its shutdown would make this one unhealthy) or a previous one did not stop cleanly; give each instance its own TMPDIR",
            lock.display()
        );
    }
}

/// The function port's listener, bound before anything can fail late, and the port
/// actually bound (`port=0` picks one).
fn bind_main(cfg: &Config) -> Result<(TcpListener, u16), Exit> {
    let addr = SocketAddr::new(cfg.listen.bind, cfg.listen.port);
    let listener = bind(addr).map_err(|e| fail(&format!("cannot listen on {addr}: {e}")))?;
    let port = listener.local_addr().map_or(cfg.listen.port, |a| a.port());
    Ok((listener, port))
}

/// The metrics port, when on: served until the process exits (only the function port
/// drains).
fn spawn_metrics_port(cfg: &Config, metrics: &Arc<Metrics>) -> Result<(), Exit> {
    let Some(mport) = cfg.listen.metrics_port else {
        return Ok(());
    };
    let maddr = SocketAddr::new(cfg.listen.bind, mport);
    let listener = bind(maddr).map_err(|e| {
        fail(&format!(
            "cannot listen on {maddr} for metrics: {e} (set metrics_port=off to disable)"
        ))
    })?;
    let real = listener.local_addr().map_or(mport, |a| a.port());
    tracing::info!("Metrics listening on port: {real}");
    let port = Port::new(Kind::Metrics, cfg, METRICS_MAX_CONNECTIONS, metrics.clone());
    let m = metrics.clone();
    let answer = move |req: hyper::Request<Body>, _: SocketAddr| {
        let resp = metrics_answer(&req, &m);
        async move { resp }
    };
    let never = std::future::pending();
    tokio::spawn(accept_loop(listener, Arc::new(port), answer, never));
    Ok(())
}

/// The mode's runner and the request chain around it, still starting (health 503); the
/// API-key reloader.
fn build_shared(
    cfg: &Arc<Config>,
    port: u16,
    metrics: Arc<Metrics>,
    backend: &Backend,
) -> Arc<Shared> {
    let runner = match cfg.mode {
        Mode::Http => Runner::Proxy(Box::new(Proxy::new(cfg))),
        Mode::Static => Runner::Files(Files::new(cfg)),
        Mode::FastCgi => {
            let pool = backend.workers().map(|w| w as Arc<dyn Pool>);
            Runner::FastCgi(FastCgi::new(cfg.clone(), port, pool))
        }
        Mode::Lambda => match backend.lambda_hub() {
            Some(hub) => Runner::Lambda(Lambda::new(cfg.clone(), hub)),
            None => Runner::Fork(Fork::new(cfg.clone(), metrics.clone()).with_port(port)),
        },
        _ => Runner::Fork(Fork::new(cfg.clone(), metrics.clone()).with_port(port)),
    };
    let shared = Shared::with_backend(cfg.clone(), metrics, runner, backend.ready());
    shared.state.starting.store(true, Ordering::Release);
    if let (Some(keys), Some(every)) = (&cfg.auth.api_keys, cfg.auth.secret_reload_interval) {
        keys.spawn_reloader(every);
    }
    shared
}

/// The function port, accepting from now on (health answers 503 until we are ready).
fn spawn_main_port(cfg: &Config, shared: &Arc<Shared>, listener: TcpListener) -> MainPort {
    let max = cfg.listen.max_connections;
    let port = Arc::new(Port::new(Kind::Main, cfg, max, shared.metrics.clone()));
    let conns = port.conns.clone();
    let (stop, mut stop_rx) = watch::channel(false);
    let serve = {
        let shared = shared.clone();
        move |req: hyper::Request<Body>, peer: SocketAddr| {
            let shared = shared.clone();
            async move { shared.handle(req, Some(peer)).await }
        }
    };
    let until_stopped = async move { until_set(&mut stop_rx).await };
    let accept = tokio::spawn(accept_loop(listener, port, serve, until_stopped));
    MainPort {
        accept,
        stop,
        conns,
    }
}

/// Waits for what the function needs before it can answer (the token issuer's keys,
/// the backend), then writes the lock file. A stop signal meanwhile ends the process
/// cleanly.
async fn become_ready(
    cfg: &Config,
    shared: &Shared,
    backend: &mut Backend,
    stop_signals: &mut Stop,
) -> Result<Option<LockFile>, Exit> {
    // jwt_auth: health and function requests answer 503 until the issuer's keys are in.
    if let Some(jwt) = shared.auth.jwt() {
        tokio::select! {
            r = jwt.start() => r.map_err(|e| fail(&e))?,
            sig = stop_signals.recv() => {
                tracing::info!("Received {sig} before the token issuer's keys were fetched: exiting");
                return Err(Exit::Clean);
            }
        }
    }
    // The backend (http upstream, FastCGI workers or server) is ready before the lock
    // file is written; health answers 503 meanwhile.
    tokio::select! {
        // A mode without a backend is ready at once, even with a signal waiting.
        biased;
        r = backend.start() => r.map_err(|e| fail(&e))?,
        sig = stop_signals.recv() => {
            tracing::info!("Received {sig} before the {} was ready: exiting", backend.name());
            return Err(Exit::Clean);
        }
    }
    cfg.lock_file.as_deref().map(LockFile::create).transpose()
}

/// Why the watchdog stops serving.
enum StopCause {
    /// SIGTERM, SIGINT, SIGHUP or SIGQUIT.
    Signal(&'static str),
    /// The backend (upstream, workers) exited on its own: health failed the moment it
    /// did.
    BackendDied,
}

impl StopCause {
    /// How long to keep serving with health failing, logged. SIGTERM (and SIGHUP and
    /// SIGQUIT, which an init may forward instead) waits `healthcheck_interval`: SIGINT
    /// is a person at a terminal pressing Ctrl-C, and no orchestrator needs time to stop
    /// routing here; a dead backend needs no wait.
    fn grace(&self, cfg: &Config) -> Duration {
        let StopCause::Signal(sig) = self else {
            return Duration::ZERO;
        };
        let grace = match *sig {
            "SIGINT" => Duration::ZERO,
            _ => cfg.timeouts.healthcheck_interval,
        };
        tracing::info!(
            "Received {sig}, shutting down: health now fails, serving for {}",
            if *sig != "SIGINT" {
                format!("healthcheck_interval={}", format_duration(grace))
            } else {
                "0s (no healthcheck_interval wait on SIGINT)".to_owned()
            }
        );
        grace
    }
}

/// Serves until a stop signal or the backend's death.
async fn wait_for_stop(stop_signals: &mut Stop, backend: &mut Backend) -> StopCause {
    tokio::select! {
        sig = stop_signals.recv() => StopCause::Signal(sig),
        _ = backend.exited() => StopCause::BackendDied,
    }
}

/// The lock file, which exists exactly while we are ready: written on create, removed
/// on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn create(path: &Path) -> Result<LockFile, Exit> {
        std::fs::write(path, b"").map_err(|e| {
            fail(&format!(
                "cannot write lock file {}: {e} (set suppress_lock=true to run without it)",
                path.display()
            ))
        })?;
        tracing::info!("Writing lock-file to: {}", path.display());
        Ok(LockFile(path.to_owned()))
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The function port's acceptor and its connections, for the drain.
struct MainPort {
    accept: tokio::task::JoinHandle<()>,
    /// Set: stop accepting.
    stop: watch::Sender<bool>,
    conns: Arc<Conns>,
}

impl MainPort {
    /// After `grace`, stops accepting and drains the open connections within `within`.
    async fn drain(self, grace: Duration, within: Duration) {
        tokio::time::sleep(grace).await;
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        self.conns.drain(within).await;
    }
}

impl Conns {
    /// Asks every connection to close once idle and waits up to `within` for them all
    /// (`write_timeout`: no response may take longer); then their handlers get killed.
    async fn drain(&self, within: Duration) {
        let _ = self.closing.send(true);
        let open = self.open.load(Ordering::Acquire);
        tracing::info!(
            "No longer accepting connections; draining {open} open connection(s) for up to write_timeout={}",
            format_duration(within)
        );
        let all_closed = async {
            loop {
                let notified = self.all_closed.notified();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(within, all_closed).await.is_err() {
            tracing::info!(
                "write_timeout reached with {} connection(s) open; killing their handlers",
                self.open.load(Ordering::Acquire)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn rate_limited_lets_one_line_a_second_through_and_counts_the_rest() {
        let mut r = RateLimited::default();
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(r.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(r.allow(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(r.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(2000)), Some(1));
    }

    #[test]
    fn accept_errors_back_off_with_growth_and_reset_on_success() {
        let mut e = AcceptErrors::default();
        let err = std::io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<u128> = (0..6).map(|_| e.failed("main", &err).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 100, 100]);
        e.accepted();
        assert_eq!(e.failed("main", &err), ACCEPT_BACKOFF_MIN);
    }
}
