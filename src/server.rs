//! The process's life: bind, become ready, serve, and drain on SIGTERM (§8).
//!
//! Startup follows §8.1: the listener is bound before anything else can fail late, the
//! lock file is written only once we can really serve, and the `Listening on port: N`
//! line reports the port actually bound. Shutdown follows §8.3: health fails at once,
//! the lock file goes, we keep serving for `healthcheck_interval` so the orchestrator
//! stops routing to us, then stop accepting, let in-flight requests finish within
//! `write_timeout`, and kill whatever handlers remain. A second signal exits at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};

use crate::body::Body;
use crate::config::{Config, Mode};
use crate::exit::Exit;
use crate::metrics::Metrics;
use crate::runner::{files::Files, fork::Fork, http::Http, http::Upstream};
use crate::service::{Runner, Shared};
use crate::signal::Stop;

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

/// The HTTP/1.1 settings of every function connection.
fn conn_builder(cfg: &Config) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.read_timeout)
        .keep_alive(true)
        .max_buf_size(256 * 1024)
        // Room for a 64 KiB URI (§10) plus headers; also keeps every header under the
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
    let io = crate::conn::Stream::new(io, shared.cfg.write_timeout);
    let builder = conn_builder(&shared.cfg);
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move {
            let req = req.map(|b| {
                http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                    b,
                    Into::into,
                ))
            });
            Ok::<_, std::convert::Infallible>(shared.handle(req, peer).await)
        }
    });
    builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
}

/// Accepts connections until `stop` fires. Connections the kernel already completed
/// (the listen backlog) are accepted and served before the listener closes, so a client
/// whose `connect` succeeded is not reset.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Conns>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = conn_builder(&shared.cfg);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => serve_conn(stream, peer, &shared, &conns, &builder),
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = until_set(&mut stop) => break,
        }
    }
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await
    {
        serve_conn(stream, peer, &shared, &conns, &builder);
    }
    drop(listener);
}

/// Serves one connection on its own task until it closes, or until shutdown asks it to
/// finish its current request and close.
fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    conns: &Arc<Conns>,
    builder: &http1::Builder,
) {
    let _ = stream.set_nodelay(true);
    conns.open.fetch_add(1, Ordering::AcqRel);
    let guard = ConnGuard(conns.clone());
    let shared = shared.clone();
    let builder = builder.clone();
    let mut closing = conns.closing.subscribe();
    // Set once the connection has begun a request; see the shutdown branch below.
    let begun = Arc::new(Notify::new());
    let begun_in_service = begun.clone();
    let write_timeout = shared.cfg.write_timeout;
    tokio::spawn(async move {
        let _guard = guard;
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            begun_in_service.notify_one();
            async move {
                let req = req.map(|b| {
                    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                        b,
                        Into::into,
                    ))
                });
                Ok::<_, std::convert::Infallible>(shared.handle(req, Some(peer)).await)
            }
        });
        let conn = builder
            .serve_connection(
                TokioIo::new(crate::conn::Stream::new(stream, write_timeout)),
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

/// Serves `/metrics` on its own port.
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let resp: hyper::Response<Body> = if req.uri().path() == "/metrics" {
                        let mut r = hyper::Response::new(crate::body::full(metrics.render()));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        crate::body::text(http::StatusCode::NOT_FOUND, "Not Found\n")
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Runs the watchdog until it is stopped. Returns the exit code.
pub async fn run(cfg: Config) -> Exit {
    let cfg = Arc::new(cfg);
    if let Err(e) = crate::process::start_reaper() {
        tracing::error!("cannot watch for child processes: {e}");
        return Exit::Runtime;
    }
    let mut stop_signals = match Stop::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return Exit::Runtime;
        }
    };

    tracing::info!("fwatchdog version: {}", env!("CARGO_PKG_VERSION"));
    tracing::info!("Config: {}", cfg.summary());
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(keys) = &cfg.api_keys {
        for (name, path) in keys.sources() {
            tracing::info!("API key secret {name}: loaded from {}", path.display());
        }
    }

    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return Exit::Runtime;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(cfg.port);

    let metrics = Metrics::new();
    if let Some(mport) = cfg.metrics_port {
        let maddr = SocketAddr::new(cfg.bind, mport);
        match bind(maddr) {
            Ok(l) => {
                let real = l.local_addr().map(|a| a.port()).unwrap_or(mport);
                tracing::info!("Metrics listening on port: {real}");
                tokio::spawn(serve_metrics(l, metrics.clone()));
            }
            Err(e) => {
                tracing::error!(
                    "cannot listen on {maddr} for metrics: {e} (set metrics_port=off to disable)"
                );
                return Exit::Runtime;
            }
        }
    }

    let runner = match cfg.mode {
        Mode::Http => Runner::Http(Http::new(&cfg)),
        Mode::Static => Runner::Files(Files::new(&cfg)),
        Mode::FastCgi => match crate::runner::fastcgi::FastCgi::new(cfg.clone(), port) {
            Ok(f) => Runner::FastCgi(f),
            Err(e) => {
                tracing::error!("{e}");
                return Exit::Runtime;
            }
        },
        _ => Runner::Fork(Fork::new(cfg.clone(), metrics.clone()).with_port(port)),
    };
    let shared = Shared::new(cfg.clone(), metrics, runner);

    if let (Some(keys), Some(every)) = (&cfg.api_keys, cfg.secret_reload_interval) {
        keys.spawn_reloader(every);
    }

    let conns = Arc::new(Conns {
        open: AtomicUsize::new(0),
        all_closed: Notify::new(),
        closing: watch::channel(false).0,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        shared.clone(),
        conns.clone(),
        stop_rx,
    ));

    // http mode: health answers 503 meanwhile; the lock file waits for the upstream.
    let mut upstream = None;
    if cfg.mode == Mode::Http {
        tokio::select! {
            r = Upstream::start(&cfg, &shared) => match r {
                Ok(up) => upstream = Some(up),
                Err(e) => {
                    tracing::error!("{e}");
                    return Exit::Runtime;
                }
            },
            sig = stop_signals.recv() => {
                tracing::info!("Received {sig} before the upstream was ready: exiting");
                return Exit::Clean;
            }
        }
    }

    // jwt_auth: health and function requests answer 503 until the issuer's keys are in.
    if let Some(jwt) = shared.auth.jwt() {
        tokio::select! {
            r = jwt.start() => if let Err(e) = r {
                tracing::error!("{e}");
                return Exit::Runtime;
            },
            sig = stop_signals.recv() => {
                tracing::info!("Received {sig} before the token issuer's keys were fetched: exiting");
                return Exit::Clean;
            }
        }
    }

    // fastcgi mode: the workers start (or the external server answers) before the lock.
    if let Runner::FastCgi(f) = &shared.runner {
        tokio::select! {
            r = f.start(&shared) => if let Err(e) = r {
                tracing::error!("{e}");
                return Exit::Runtime;
            },
            sig = stop_signals.recv() => {
                tracing::info!("Received {sig} before the FastCGI server was ready: exiting");
                return Exit::Clean;
            }
        }
    }

    if !cfg.suppress_lock {
        if let Err(e) = std::fs::write(&cfg.lock_path, b"") {
            tracing::error!(
                "cannot write lock file {}: {e} (set suppress_lock=true to run without it)",
                cfg.lock_path.display()
            );
            return Exit::Runtime;
        }
        tracing::info!("Writing lock-file to: {}", cfg.lock_path.display());
    }

    tracing::info!("Listening on port: {port}");

    let upstream_died = async {
        match upstream.as_mut() {
            Some(up) => up.exited().await,
            None => std::future::pending().await,
        }
    };
    // An upstream that died needs no grace period: health failed the moment it did.
    let died = tokio::select! {
        sig = stop_signals.recv() => {
            tracing::info!(
                "Received {sig}, shutting down: health now fails, serving for healthcheck_interval={}",
                crate::config::format_duration(cfg.healthcheck_interval)
            );
            false
        }
        _ = upstream_died => true,
    };
    shared.state.accepting.store(false, Ordering::Release);
    if !cfg.suppress_lock {
        let _ = std::fs::remove_file(&cfg.lock_path);
    }

    let drain = async {
        if !died {
            tokio::time::sleep(cfg.healthcheck_interval).await;
        }
        let _ = stop_tx.send(true);
        let _ = accept.await;
        let _ = conns.closing.send(true);
        let open = conns.open.load(Ordering::Acquire);
        tracing::info!("No longer accepting connections; draining {open} open connection(s) for up to write_timeout={}",
            crate::config::format_duration(cfg.write_timeout));
        let wait_closed = async {
            loop {
                let notified = conns.all_closed.notified();
                if conns.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(cfg.write_timeout, wait_closed)
            .await
            .is_err()
        {
            tracing::info!(
                "write_timeout reached with {} connection(s) open; killing their handlers",
                conns.open.load(Ordering::Acquire)
            );
        }
    };
    // The upstream is stopped only once the requests it serves have drained (§5).
    let drain_then_stop_upstream = async {
        drain.await;
        if let Some(up) = upstream.as_mut() {
            up.stop().await;
        }
        if let Runner::FastCgi(f) = &shared.runner {
            f.stop().await;
        }
    };
    tokio::select! {
        _ = drain_then_stop_upstream => {}
        sig = stop_signals.recv() => {
            tracing::info!("Received {sig} again: exiting now");
            crate::process::kill_all();
            return Exit::Runtime;
        }
    }
    crate::process::kill_all();
    tracing::info!("Shutdown complete");
    if died {
        Exit::Runtime
    } else {
        Exit::Clean
    }
}
