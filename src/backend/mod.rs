//! Long-lived helpers a mode depends on: the http mode's upstream server
//! ([`upstream`]), the FastCGI worker pool ([`workers`]) or an external FastCGI server,
//! lambda mode's runtimes ([`runtimes`]).
//!
//! Each has one lifecycle, driven by the server: [`Backend::start`] (returns once it is
//! ready), [`Backend::exited`] (resolves if it dies on its own), [`Backend::stop`]
//! (after the drain). Health learns whether it is ready through a [`Ready`] handle the
//! backend sets, so nothing here knows the request chain.

pub mod runtimes;
pub mod stop;
pub mod upstream;
pub mod workers;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, FastCgiAddress, Mode};
use crate::duration::format_duration;
use crate::metrics::Metrics;
use crate::os::process::ExitStatus;
use runtimes::Runtimes;
use upstream::Upstream;
use workers::Workers;

/// Whether the backend can serve: set by the backend, read by health.
#[derive(Debug, Clone)]
pub struct Ready(watch::Sender<bool>);

impl Ready {
    pub fn new(ready: bool) -> Ready {
        Ready(watch::channel(ready).0)
    }

    pub fn set(&self, ready: bool) {
        self.0.send_replace(ready);
    }

    /// What health reads.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// The backend of the configured mode.
pub struct Backend {
    cfg: Arc<Config>,
    kind: Kind,
    ready: Ready,
}

enum Kind {
    /// The fork and static modes need none.
    None,
    /// http mode: `None` until started.
    Upstream(Option<Upstream>),
    /// fastcgi mode with spawned workers.
    Workers(Arc<Workers>),
    /// fastcgi mode with `fastcgi_address`.
    External(FastCgiAddress),
    /// lambda mode's runtimes.
    Runtimes(Arc<Runtimes>),
}

impl Backend {
    /// Prepares the backend; for spawned FastCGI workers, creates their socket. Nothing
    /// runs until [`Backend::start`].
    pub fn new(cfg: Arc<Config>, metrics: &Arc<Metrics>) -> Result<Backend, String> {
        let kind = match (cfg.mode, &cfg.fastcgi.address) {
            (Mode::Http, _) => Kind::Upstream(None),
            (Mode::Lambda, _) => Kind::Runtimes(Arc::new(Runtimes::new(&cfg, metrics.clone())?)),
            (Mode::FastCgi, Some(a)) => Kind::External(a.clone()),
            (Mode::FastCgi, None) => Kind::Workers(Arc::new(Workers::new(&cfg)?)),
            _ => Kind::None,
        };
        let ready = Ready::new(matches!(kind, Kind::None));
        Ok(Backend { cfg, kind, ready })
    }

    /// Health's view of [`Ready`].
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.watch()
    }

    /// The spawned FastCGI workers, which the runner sends requests to.
    pub fn workers(&self) -> Option<Arc<Workers>> {
        match &self.kind {
            Kind::Workers(w) => Some(w.clone()),
            _ => None,
        }
    }

    /// Where lambda-mode invocations meet the runtimes.
    pub fn lambda_hub(&self) -> Option<Arc<crate::runner::lambda::hub::Hub>> {
        match &self.kind {
            Kind::Runtimes(r) => Some(r.hub()),
            _ => None,
        }
    }

    /// What the log calls it.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::None => "backend",
            Kind::Upstream(_) => "upstream",
            Kind::Workers(_) | Kind::External(_) => "FastCGI server",
            Kind::Runtimes(_) => "Lambda runtimes",
        }
    }

    /// Starts it and returns once it is ready, within `startup_timeout` (as long as it
    /// takes when 0, saying every 10 s what it waits for). Dropping the future kills what
    /// it started.
    pub async fn start(&mut self) -> Result<(), String> {
        let wait = stop::Wait::startup(self.cfg.timeouts.startup);
        match &mut self.kind {
            Kind::None => Ok(()),
            Kind::Upstream(up) => {
                *up = Some(Upstream::start(&self.cfg, wait, &self.ready).await?);
                Ok(())
            }
            Kind::Workers(w) => {
                self.ready.set(false);
                w.start(&self.ready)
            }
            Kind::Runtimes(r) => r.start(&self.ready).await,
            Kind::External(address) => {
                self.ready.set(false);
                let what = format!("the FastCGI server at {} to accept connections", address);
                tracing::info!("Waiting {} for {what}", wait.describe());
                stop::until_ready(wait, || connect(address), stop::still_waiting(&what))
                    .await
                    .map_err(|e| {
                        format!(
                            "the FastCGI server at {} did not accept connections within startup_timeout={}: {e}; exiting",
                            address,
                            wait.limit.map(format_duration).unwrap_or_default()
                        )
                    })?;
                tracing::info!("FastCGI server at {} is ready", address);
                self.ready.set(true);
                Ok(())
            }
        }
    }

    /// Resolves when the backend has died on its own (Lambda runtimes: init failed three
    /// times in a row); never for one that heals itself (workers are replaced) or has no
    /// process.
    pub async fn exited(&mut self) -> ExitStatus {
        match &mut self.kind {
            Kind::Upstream(Some(up)) => up.exited().await,
            Kind::Runtimes(r) => r.exited().await,
            _ => std::future::pending().await,
        }
    }

    /// After the drain: SIGTERM, SIGKILL `upstream_stop_grace` (the upstream) or 5 s
    /// (FastCGI workers, Lambda runtimes) later.
    pub async fn stop(&mut self) {
        match &mut self.kind {
            Kind::Upstream(Some(up)) => up.stop().await,
            Kind::Workers(w) => w.stop().await,
            Kind::Runtimes(r) => r.stop().await,
            _ => {}
        }
    }
}

/// One readiness check of an external FastCGI server: it accepts a connection.
async fn connect(address: &FastCgiAddress) -> Result<(), String> {
    match address {
        FastCgiAddress::Tcp(a) => tokio::net::TcpStream::connect(a.as_str()).await.map(drop),
        FastCgiAddress::Unix(p) => tokio::net::UnixStream::connect(p).await.map(drop),
    }
    .map_err(|e| e.to_string())
}
