//! lambda mode's runtimes: `pool_size` processes from `fprocess` (or the image's
//! `bootstrap`), each with its own Runtime API listener on loopback
//! (`AWS_LAMBDA_RUNTIME_API`), in its own process group, its output in the log tagged
//! with the request it works on.
//!
//! The lifecycle is the backend's: [`Runtimes::start`] returns once every runtime has
//! asked for its first invocation (health is 503 until then), within `startup_timeout`;
//! a runtime that exits is restarted after a back-off (100 ms doubling to 5 s; reset
//! once a runtime comes up), and its invocation fails; a runtime killed at an
//! invocation's deadline (by the hub) is restarted the same way. Three init failures in a
//! row with no invocation served in between end the watchdog (exit 1) naming the error:
//! an orchestrator then shows why. On shutdown, after the drain, every group gets
//! SIGTERM and SIGKILL 5 s later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::watch;

use super::{stop, Ready};
use crate::config::{Config, LogFormat};
use crate::duration::format_duration;
use crate::metrics::Metrics;
use crate::os::process::{Child, ExitStatus, Program, Stderr, Stdin};
use crate::runner::lambda::{api, hub::Hub};
use crate::runner::pipe::LineSplitter;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` without a cgroup limit: Lambda's and RIE's default.
const MEMORY_DEFAULT_MIB: u64 = 3008;

pub struct Runtimes {
    hub: Arc<Hub>,
    /// Each slot's Runtime API listener, until started.
    listeners: Mutex<Vec<std::net::TcpListener>>,
    /// Each slot's `AWS_LAMBDA_RUNTIME_API`.
    apis: Vec<String>,
    program: Program,
    command: String,
    /// The Lambda environment, minus what is already in ours.
    env: Vec<(String, String)>,
    log_max: Option<usize>,
    prefix: bool,
    text_logs: bool,
    startup: Option<Duration>,
    /// Runtimes running now.
    alive: watch::Sender<usize>,
    /// Each slot's pid, 0 while it has none; checked with `stopping` under one lock, so
    /// no runtime starts after `stop` has signalled the others.
    pids: Mutex<Vec<i32>>,
    stopping: AtomicBool,
}

/// One Runtime API listener per runtime on 127.0.0.1 (the port the kernel picks), and
/// each one's `AWS_LAMBDA_RUNTIME_API`.
fn bind_apis(count: usize) -> Result<(Vec<std::net::TcpListener>, Vec<String>), String> {
    let mut listeners = Vec::with_capacity(count);
    let mut apis = Vec::with_capacity(count);
    for _ in 0..count {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on 127.0.0.1 for the Lambda Runtime API: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        apis.push(format!("127.0.0.1:{port}"));
        listeners.push(l);
    }
    Ok((listeners, apis))
}

/// The environment a Lambda runtime expects (as Lambda and RIE set it), minus what ours
/// already sets, and the function's ARN.
fn lambda_env(cfg: &Config) -> (Vec<(String, String)>, HeaderValue) {
    let ours = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| cfg.lambda.function_name.clone());
    let region = std::env::var("AWS_REGION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let task_root = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "/var/task".to_owned());
    let stream = format!(
        "{}/[$LATEST]{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .get(..10)
            .unwrap_or("1970-01-01")
            .replace('-', "/"),
        crate::logging::new_call_id().replace('-', "")
    );
    let mut defaults = vec![
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mib().to_string()),
        ("AWS_REGION", region.clone()),
        ("AWS_DEFAULT_REGION", region.clone()),
        ("LAMBDA_TASK_ROOT", task_root),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("TZ", ":UTC".to_owned()),
    ];
    // As RIE: a command with arguments names the handler last.
    if cfg.fprocess.len() > 1 {
        if let Some(h) = cfg.fprocess.last() {
            defaults.push(("_HANDLER", h.clone()));
        }
    }
    let env = defaults
        .into_iter()
        .filter(|(k, _)| !ours(k))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let arn = HeaderValue::from_str(&format!(
        "arn:aws:lambda:{region}:012345678912:function:{name}"
    ))
    .unwrap_or(HeaderValue::from_static(
        "arn:aws:lambda:us-east-1:012345678912:function:function",
    ));
    (env, arn)
}

impl Runtimes {
    /// Binds every runtime's Runtime API listener; nothing runs until [`Runtimes::start`].
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<Runtimes, String> {
        let count = cfg.lambda.pool_size;
        let program = Program::new(&cfg.fprocess)
            .map_err(|e| format!("invalid fprocess: {e}"))?
            .tied_to_us();
        let (listeners, apis) = bind_apis(count)?;
        let (env, arn) = lambda_env(cfg);
        Ok(Runtimes {
            hub: Hub::new(count, arn, metrics),
            listeners: Mutex::new(listeners),
            apis,
            program,
            command: shell_words::join(&cfg.fprocess),
            env,
            log_max: cfg.logs.buffer_size,
            prefix: cfg.logs.prefix,
            text_logs: cfg.logs.format == LogFormat::Text,
            startup: cfg.timeouts.startup,
            alive: watch::channel(0).0,
            pids: Mutex::new(vec![0; count]),
            stopping: AtomicBool::new(false),
        })
    }

    /// Where invocations meet the runtimes: the runner's side.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the Runtime API, starts every runtime, and returns once each has asked for
    /// its first invocation (within `startup_timeout`), or fails when one cannot start
    /// or init failed three times in a row.
    pub async fn start(self: &Arc<Self>, ready: &Ready) -> Result<(), String> {
        ready.set(false);
        let listeners =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|e| e.into_inner()));
        for (slot, l) in listeners.into_iter().enumerate() {
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| format!("Lambda Runtime API listener: {e}"))?;
            tokio::spawn(api::serve(self.hub.clone(), slot, l));
        }
        let count = self.apis.len();
        for slot in 0..count {
            match self.spawn(slot) {
                Ok(Some(child)) => {
                    tokio::spawn(self.clone().supervise(slot, child));
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(format!(
                        "cannot start the Lambda runtime {:?}: {e}",
                        self.command
                    ))
                }
            }
        }
        let wait = stop::Wait::startup(self.startup);
        let what = format!(
            "{count} Lambda runtime(s) {:?} to ask for work",
            self.command
        );
        tracing::info!("Waiting {} for {what}", wait.describe());
        let asked = self.hub.ready();
        let poll = stop::until_ready(
            wait,
            || {
                let n = *asked.borrow();
                async move {
                    if n >= count {
                        Ok(())
                    } else {
                        Err(format!("{n} of {count} ready"))
                    }
                }
            },
            stop::still_waiting(&what),
        );
        tokio::select! {
            r = poll => r.map_err(|last| format!(
                "the Lambda runtimes did not ask for work within startup_timeout={} ({last}); exiting",
                wait.limit.map(format_duration).unwrap_or_default()
            ))?,
            why = self.hub.fatal() => return Err(why),
        }
        tracing::info!("Lambda runtimes are ready");
        ready.set(true);
        Ok(())
    }

    /// Resolves once init has failed too often: the watchdog exits 1.
    pub async fn exited(&self) -> ExitStatus {
        let why = self.hub.fatal().await;
        tracing::error!("{why}");
        ExitStatus::Code(1)
    }

    /// Starts the runtime of `slot`, unless we are stopping (`Ok(None)`).
    fn spawn(&self, slot: usize) -> std::io::Result<Option<Child>> {
        let mut pids = self.pids();
        if self.stopping.load(Ordering::Acquire) {
            return Ok(None);
        }
        let api = self.apis.get(slot).cloned().unwrap_or_default();
        let env = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(std::iter::once(("AWS_LAMBDA_RUNTIME_API", api.as_str())));
        let mut child = self.program.spawn_with(env, Stdin::Pipe, Stderr::Pipe)?;
        drop(child.stdin.take());
        let pid = child.pid();
        if let Some(p) = pids.get_mut(slot) {
            *p = pid;
        }
        self.hub.runtime_started(slot, pid);
        drop(pids);
        self.alive.send_modify(|n| *n += 1);
        tracing::info!(
            "Started Lambda runtime {:?} (pid {pid}) on {api}",
            self.command
        );
        self.log_output(slot, &mut child);
        Ok(Some(child))
    }

    /// The runtime's stdout and stderr, line by line, each tagged with the request it
    /// is working on (JSON `call_id`, or ` [<id>]` at the end of a text line).
    fn log_output(&self, slot: usize, child: &mut Child) {
        for (stream, fd) in [
            ("stdout", child.stdout.take()),
            ("stderr", child.stderr.take()),
        ] {
            let Some(rx) =
                fd.and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
            else {
                continue;
            };
            let hub = self.hub.clone();
            let (max, prefix, text) = (self.log_max, self.prefix, self.text_logs);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let mut rx = rx;
                let mut split = LineSplitter::new(max);
                let mut emit = |l: &[u8]| {
                    let id = hub.call_id(slot);
                    if text && !id.is_empty() {
                        let mut tagged = Vec::with_capacity(l.len() + id.len() + 3);
                        tagged.extend_from_slice(l);
                        tagged.extend_from_slice(format!(" [{id}]").as_bytes());
                        crate::logging::handler_line(stream, &tagged, prefix, &id);
                    } else {
                        crate::logging::handler_line(stream, l, prefix, &id);
                    }
                };
                let mut chunk = [0u8; 8192];
                loop {
                    match rx.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => split.push(&chunk[..n], &mut emit),
                    }
                }
                split.finish(&mut emit);
            });
        }
    }

    /// Waits for the runtime of `slot` to exit and restarts it, until shutdown.
    async fn supervise(self: Arc<Self>, slot: usize, mut child: Child) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let pid = child.pid();
            let status = child.wait().await;
            if let Some(p) = self.pids().get_mut(slot) {
                *p = 0;
            }
            self.alive.send_modify(|n| *n = n.saturating_sub(1));
            let stopping = self.stopping.load(Ordering::Acquire);
            let init_failed = self
                .hub
                .runtime_exited(slot, pid, &status.to_string(), stopping);
            if stopping {
                tracing::info!("Lambda runtime (pid {pid}) exited: {status}");
                return;
            }
            if self.hub.gave_up() {
                // Init failed too often: the watchdog exits 1, nothing is restarted.
                return;
            }
            if !init_failed {
                backoff = BACKOFF_MIN;
            }
            let wait = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tracing::warn!(
                "Lambda runtime (pid {pid}) exited: {status}; restarting it in {}",
                format_duration(wait)
            );
            // Bounded: each turn sleeps, and shutdown ends the loop.
            loop {
                tokio::time::sleep(wait).await;
                match self.spawn(slot) {
                    Ok(Some(c)) => {
                        child = c;
                        break;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::error!("cannot start the Lambda runtime {:?}: {e}", self.command);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// After the drain: SIGTERM to every runtime's group, SIGKILL 5 s later.
    pub async fn stop(&self) {
        let pids: Vec<i32> = {
            let pids = self.pids();
            self.stopping.store(true, Ordering::Release);
            pids.clone()
        };
        stop::stop_pool("Lambda runtime", &pids, &self.alive).await;
    }
}

/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`: the container's memory limit in MiB (cgroup v2,
/// else v1), else [`MEMORY_DEFAULT_MIB`].
fn memory_mib() -> u64 {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|v| v.trim().parse::<u64>().ok())
    .map(|bytes| bytes / (1024 * 1024))
    // cgroup v1 says "no limit" with a number near 2^63.
    .find(|mib| (1..1 << 30).contains(mib))
    .unwrap_or(MEMORY_DEFAULT_MIB)
}
