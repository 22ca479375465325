//! http mode's upstream: the handler that is itself an HTTP server.
//!
//! It is started once, in its own process group, with its output going to the log;
//! health stays red until it accepts connections (or answers 2xx on `ready_path`), and
//! turns red again the moment it exits on its own. On shutdown it is stopped only after
//! the in-flight requests have drained: SIGTERM to its group, SIGKILL
//! `upstream_stop_grace` later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{stop, Ready};
use crate::config::Config;
use crate::duration::format_duration;
use crate::os::process::{self, ExitStatus, Stderr};
use crate::runner::pipe::log_output;

/// The upstream process: started once, watched, and stopped last.
pub struct Upstream {
    pid: i32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// Set once we asked it to stop, so its exit is not reported as a death.
    stopping: Arc<AtomicBool>,
    logs: Vec<JoinHandle<()>>,
    /// `upstream_stop_grace`.
    grace: Duration,
}

impl Upstream {
    /// Starts `fprocess` and waits until the upstream is ready (within `wait`), then
    /// marks it so. Dropping the future (or the `Upstream`) kills the process group.
    pub async fn start(cfg: &Config, wait: stop::Wait, ready: &Ready) -> Result<Upstream, String> {
        let mut up = Upstream::spawn(cfg, ready)?;
        up.ready(cfg, wait).await?;
        ready.set(true);
        if up.exit.borrow().is_some() {
            // It died between the probe and now.
            ready.set(false);
        }
        Ok(up)
    }

    fn spawn(cfg: &Config, ready: &Ready) -> Result<Upstream, String> {
        let cmd = shell_words::join(&cfg.fprocess);
        let mut child = process::spawn(
            &cfg.fprocess,
            std::iter::empty::<(&str, &str)>(),
            Stderr::Pipe,
        )
        .map_err(|e| format!("cannot start the upstream {cmd:?}: {e}"))?;
        let pid = child.pid();
        // A wrapper shell dies on SIGTERM at once; the server it started must still get
        // its grace period, so the group is not killed when the leader exits.
        child.keep_group_on_exit();
        tracing::info!("Started upstream {cmd:?} (pid {pid})");
        drop(child.stdin.take());
        let logs = log_output(&mut child, cfg.logs.buffer_size, cfg.logs.prefix);
        let (tx, exit) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let asked = stopping.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            ready.set(false);
            if asked.load(Ordering::Acquire) {
                tracing::info!("Upstream (pid {pid}) exited: {status}");
            } else {
                tracing::error!(
                    "upstream {cmd:?} (pid {pid}) exited on its own: {status}; health now fails, exiting once in-flight requests finish"
                );
            }
            let _ = tx.send(Some(status));
        });
        Ok(Upstream {
            pid,
            exit,
            stopping,
            logs,
            grace: cfg.timeouts.upstream_stop_grace,
        })
    }

    /// Polls until the upstream accepts TCP connections (and answers 2xx on
    /// `ready_path`, if set), within `wait`.
    async fn ready(&mut self, cfg: &Config, wait: stop::Wait) -> Result<(), String> {
        let url = cfg.proxy.upstream_url.clone().unwrap_or_default();
        let host = url
            .host()
            .unwrap_or("127.0.0.1")
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let port = url.port_u16().unwrap_or(80);
        let authority = url.authority().map(|a| a.as_str()).unwrap_or("127.0.0.1");
        let host_header = HeaderValue::from_str(authority)
            .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
        let ready_path = cfg.ready_path.as_ref().map(|p| {
            let prefix = url.path().trim_end_matches('/');
            format!("{prefix}{p}")
        });
        let what = format!(
            "the upstream at {url} to {}",
            match &ready_path {
                Some(p) => format!("answer 2xx on GET {p}"),
                None => "accept connections".into(),
            }
        );
        tracing::info!("Waiting {} for {what}", wait.describe());
        let poll = stop::until_ready(
            wait,
            || probe(&host, port, &host_header, ready_path.as_deref()),
            stop::still_waiting(&what),
        );
        tokio::select! {
            r = poll => match r {
                Ok(()) => {
                    tracing::info!("Upstream is ready");
                    Ok(())
                }
                Err(last) => Err(format!(
                    "the upstream at {url} did not become ready within startup_timeout={} ({last}); exiting",
                    wait.limit.map(format_duration).unwrap_or_default()
                )),
            },
            status = self.exited() => {
                Err(format!("the upstream exited before it became ready: {status}"))
            }
        }
    }

    /// Resolves when the upstream has exited; its status.
    pub async fn exited(&mut self) -> ExitStatus {
        match self.exit.wait_for(Option::is_some).await {
            Ok(s) => (*s).unwrap_or(ExitStatus::Code(-1)),
            Err(_) => ExitStatus::Code(-1),
        }
    }

    /// SIGTERM to the upstream's group, SIGKILL if it is still alive
    /// `upstream_stop_grace` later; then lets its last log lines through.
    pub async fn stop(&mut self) {
        if self.exit.borrow().is_none() || process::group_alive(self.pid) {
            self.stopping.store(true, Ordering::Release);
            tracing::info!(
                "Stopping the upstream (pid {}): SIGTERM to its process group",
                self.pid
            );
            let gone = stop::group_gone(self.pid);
            stop::terminate("upstream", &[self.pid], self.grace, gone).await;
        }
        for h in self.logs.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        process::signal_group(self.pid, Signal::SIGKILL);
    }
}

/// How long one readiness check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One readiness check: a TCP connect, then `GET ready_path` when set.
async fn probe(
    host: &str,
    port: u16,
    host_header: &HeaderValue,
    ready_path: Option<&str>,
) -> Result<(), String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let Some(path) = ready_path else {
            return Ok(());
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let req = Request::get(path)
            .header(header::HOST, host_header.clone())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        tokio::select! {
            r = sender.send_request(req) => match r {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(format!("GET {path} answered {}", resp.status())),
                Err(e) => Err(format!("GET {path}: {e}")),
            },
            r = conn => Err(format!("GET {path}: connection closed ({r:?})")),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                format_duration(PROBE_TIMEOUT)
            ))
        })
}
