//! The spawned worker pool: spawn-fcgi inside the watchdog.
//!
//! One listening Unix socket in a private (0700) temp dir is every worker's fd 0,
//! `FCGI_LISTENSOCK_FILENO`; the kernel hands each connection to whichever worker
//! calls `accept` first. Each worker runs in its own process group with stdout and
//! stderr going to the log, started through [`crate::os::process`] so the one reaper sees
//! its exit. A worker that dies is replaced, after an exponential backoff (100 ms
//! doubling to 5 s) when it died within a second of starting, so a broken `fprocess`
//! does not spin. Health fails while no worker is alive. On shutdown, after the
//! drain, every group gets SIGTERM, and SIGKILL 5 s later; if the watchdog dies without
//! a shutdown (SIGKILL), the kernel kills each worker (parent-death signal, set by
//! [`Program::tied_to_us`]).
//!
//! Recycling (`pool_max_requests`): with one shared socket the watchdog cannot steer a
//! request to a given worker, so the worker counts for itself: it gets
//! `PHP_FCGI_MAX_REQUESTS`, which php-cgi honours by exiting after that many requests;
//! its replacement starts at once. Unset, it is 0 (never) unless our own environment
//! says otherwise: php-cgi's own default is 500.

use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::{stop, Ready};
use crate::config::Config;
use crate::duration::format_duration;
use crate::os::process::{self, Child, Program, Stderr, Stdin};
use crate::runner::pipe;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A worker that dies sooner than this after its start is crashing, not recycling.
const QUICK_DEATH: Duration = Duration::from_secs(1);

pub struct Workers {
    dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
    program: Program,
    command: String,
    env: Vec<(String, String)>,
    count: usize,
    max_requests: u64,
    log_max: Option<usize>,
    prefix: bool,
    /// Workers running now.
    alive: watch::Sender<usize>,
    /// Each slot's worker pid, 0 while it has none. Checked with `stopping` under the
    /// same lock, so no worker starts after `stop` has signalled the others.
    pids: Mutex<Vec<i32>>,
    stopping: AtomicBool,
}

impl Workers {
    /// Creates the private socket the workers will share.
    pub fn new(cfg: &Config) -> Result<Workers, String> {
        // Tied to our life: a worker must not outlive a watchdog that was SIGKILLed.
        let program = Program::new(&cfg.fprocess)
            .map_err(|e| format!("invalid fprocess: {e}"))?
            .tied_to_us();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "fwatchdog-fastcgi-{}-{nonce:x}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let socket = dir.join("fcgi.sock");
        let listener = UnixListener::bind(&socket).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot listen on {}: {e}", socket.display())
        })?;
        let max_requests = cfg.fastcgi.max_requests;
        let mut env = Vec::new();
        if max_requests > 0 || std::env::var_os("PHP_FCGI_MAX_REQUESTS").is_none() {
            env.push(("PHP_FCGI_MAX_REQUESTS".to_owned(), max_requests.to_string()));
        }
        Ok(Workers {
            dir,
            socket,
            listener,
            program,
            command: shell_words::join(&cfg.fprocess),
            env,
            count: cfg.fastcgi.pool_size,
            max_requests,
            log_max: cfg.logs.buffer_size,
            prefix: cfg.logs.prefix,
            alive: watch::channel(0).0,
            pids: Mutex::new(vec![0; cfg.fastcgi.pool_size]),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts every worker and a supervisor for each. Fails if the first cannot start
    /// (fprocess not found, not executable).
    pub fn start(self: &Arc<Self>, ready: &Ready) -> Result<(), String> {
        let mut first = Vec::with_capacity(self.count);
        for slot in 0..self.count {
            match self.spawn(slot, ready) {
                Ok(Some(child)) => first.push(child),
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(format!(
                        "cannot start FastCGI worker {:?}: {e}",
                        self.command
                    ))
                }
            }
        }
        tracing::info!(
            "Started {} FastCGI worker(s) {:?} on {}",
            self.count,
            self.command,
            self.socket.display()
        );
        for (slot, child) in first.into_iter().enumerate() {
            tokio::spawn(self.clone().supervise(slot, child, ready.clone()));
        }
        Ok(())
    }

    /// Starts the worker of `slot`, unless we are stopping (`Ok(None)`).
    fn spawn(&self, slot: usize, ready: &Ready) -> std::io::Result<Option<Child>> {
        let mut pids = self.pids();
        if self.stopping.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut child = self.program.spawn_with(
            self.env.iter().map(|(k, v)| (k, v)),
            Stdin::Fd(self.listener.as_fd()),
            Stderr::Pipe,
        )?;
        if let Some(p) = pids.get_mut(slot) {
            *p = child.pid();
        }
        drop(pids);
        self.alive.send_modify(|n| *n += 1);
        ready.set(true);
        pipe::log_output(&mut child, self.log_max, self.prefix);
        Ok(Some(child))
    }

    /// Waits for the worker of `slot` to exit and replaces it, until shutdown.
    async fn supervise(self: Arc<Self>, slot: usize, mut child: Child, ready: Ready) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let pid = child.pid();
            let status = child.wait().await;
            if let Some(p) = self.pids().get_mut(slot) {
                *p = 0;
            }
            let mut left = 0;
            self.alive.send_modify(|n| {
                *n = n.saturating_sub(1);
                left = *n;
            });
            if left == 0 {
                ready.set(false);
            }
            if self.stopping.load(Ordering::Acquire) {
                tracing::info!("FastCGI worker (pid {pid}) exited: {status}");
                return;
            }
            let recycled = status.success() && self.max_requests > 0;
            let wait = if started.elapsed() < QUICK_DEATH && !recycled {
                let w = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                w
            } else {
                backoff = BACKOFF_MIN;
                Duration::ZERO
            };
            if recycled {
                tracing::info!("FastCGI worker (pid {pid}) exited: {status}; replacing it");
            } else {
                tracing::warn!(
                    "FastCGI worker (pid {pid}) exited: {status}; replacing it in {}{}",
                    format_duration(wait),
                    if left == 0 {
                        " (no worker alive: health fails)"
                    } else {
                        ""
                    }
                );
            }
            // Bounded: each turn sleeps, and shutdown ends the loop.
            loop {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                match self.spawn(slot, &ready) {
                    Ok(Some(c)) => {
                        child = c;
                        break;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!("cannot start FastCGI worker {:?}: {e}", self.command);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// SIGKILLs the worker at the other end of our connection `conn`, if it is one of
    /// ours (its supervisor replaces it). A worker's own children (php-cgi with
    /// `PHP_FCGI_CHILDREN`) are in its group; only the one holding the connection goes.
    pub fn kill_peer(&self, conn: std::os::fd::BorrowedFd<'_>) {
        let leaders: Vec<i32> = self.pids().iter().copied().filter(|p| *p != 0).collect();
        let found = crate::os::peer::peer_inode(conn).map(|ino| {
            let members = group_members(&leaders);
            crate::os::peer::holders(ino, members.iter().map(|(pid, _)| *pid))
                .into_iter()
                .filter_map(|pid| members.iter().find(|(p, _)| *p == pid).copied())
                .collect::<Vec<_>>()
        });
        match found {
            Ok(holders) if holders.is_empty() => {
                tracing::debug!("FastCGI: the worker of an overdue request has already gone")
            }
            Ok(holders) => {
                for (pid, group) in holders {
                    tracing::warn!(
                        "FastCGI worker (pid {pid}) still busy with a request past its deadline: SIGKILL"
                    );
                    if pid == group {
                        // The leader: through the reaper, which knows its id is still ours.
                        process::signal_group(group, Signal::SIGKILL);
                    } else {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            Signal::SIGKILL,
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(
                "FastCGI: cannot tell which worker has an overdue request ({e}); it keeps running"
            ),
        }
    }

    /// SIGTERM to every worker's group, SIGKILL to those still alive 5 s later.
    pub async fn stop(&self) {
        let pids: Vec<i32> = {
            let pids = self.pids();
            self.stopping.store(true, Ordering::Release);
            pids.clone()
        };
        stop::stop_pool("FastCGI worker", &pids, &self.alive).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl crate::runner::fastcgi::Pool for Workers {
    fn socket(&self) -> &Path {
        Workers::socket(self)
    }

    fn kill_peer(&self, conn: std::os::fd::BorrowedFd<'_>) {
        Workers::kill_peer(self, conn);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(pid, process group)` of every process in one of `groups`.
fn group_members(groups: &[i32]) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name may hold spaces and parentheses; the fields follow the last ")":
        // state, ppid, pgrp.
        let pgrp = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok());
        if let Some(g) = pgrp.filter(|g| groups.contains(g)) {
            out.push((pid, g));
        }
    }
    out
}
