//! fwatchdog's entry point: arguments → configuration → run → exit code.

use std::process::ExitCode;

use fwatchdog::cli::{self, Action};
use fwatchdog::config::{Config, LogFormat};
use fwatchdog::exit::Exit;
use fwatchdog::os::signal;
use fwatchdog::{healthcheck, logging, server};

fn main() -> ExitCode {
    // A FastCGI worker on its way to `exec`: nothing else of ours runs in it.
    fwatchdog::os::process::exec_tied_if_asked();
    // Before any thread exists: what we inherited must not reach the handlers.
    signal::reset_inherited();
    signal::ensure_stdio();
    signal::cloexec_inherited();

    let env = |k: &str| std::env::var(k).ok();
    let raw = match cli::parse(std::env::args(), env) {
        Ok(Action::Run(raw)) => raw,
        Ok(Action::Version) => {
            println!("fwatchdog version {}", env!("CARGO_PKG_VERSION"));
            return Exit::Clean.into();
        }
        Ok(Action::RunHealthcheck(raw)) => return healthcheck::run(&raw).into(),
        Err(e) if e.use_stderr() && logging::json_requested(std::env::args(), env) => {
            // Even a malformed command line is reported as a JSON line when JSON was asked.
            let _logs = logging::init(LogFormat::Json);
            let text = e.render().to_string();
            tracing::error!("{}", text.trim_start_matches("error: ").trim_end());
            return Exit::Config.into();
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Config
            } else {
                Exit::Clean
            }
            .into();
        }
    };
    // Held to the end: dropping it waits (briefly) for queued log lines to be written.
    let _logs = logging::init(LogFormat::requested(&raw));
    let cfg = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return Exit::Config.into();
        }
    };
    if let Err(e) = become_reaper() {
        tracing::warn!("cannot become a child subreaper: {e}; orphans of handlers may linger");
    }
    open_file_limit(&cfg);
    // One thread by default: a watchdog's own work is small next to its handlers', and a
    // single thread avoids the cross-thread wakeups that cost more CPU per request than
    // the work itself, and keeps idle memory down. `threads` > 1 is for http mode on
    // several cores, where the proxying itself is the work. Blocking work (secret
    // reloads, file reads in static mode) goes to tokio's blocking pool either way.
    // The reaper and the stop signals hold with any number of workers: spawning and
    // reaping share one lock (process.rs), and tokio delivers each signal to its
    // listener whichever thread the kernel interrupted.
    let mut builder = if cfg.listen.threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.listen.threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return Exit::Runtime.into();
        }
    };
    let code = runtime.block_on(server::run(cfg));
    // Do not wait for stray blocking tasks (a secret reload) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code.into()
}

/// Raises the soft open-file limit to the hard one, and warns when even that cannot carry
/// `max_connections` requests at once: past it handlers fail to start (500) or
/// connections are refused.
fn open_file_limit(cfg: &Config) {
    use fwatchdog::config::Mode;
    use fwatchdog::os::limits;
    let nofile = match limits::raise_nofile() {
        Ok(n) => n,
        Err(e) => return tracing::warn!("cannot raise the open-file limit: {e}"),
    };
    if let Some(from) = nofile.raised_from {
        tracing::info!("Open-file limit raised from {from} to {}", nofile.soft);
    }
    // A fork-mode request holds its connection and the handler's three pipes; the
    // others hold the connection and one upstream socket or file.
    let per_request = match cfg.mode {
        Mode::Streaming | Mode::Serializing | Mode::Classic => 4,
        Mode::Http | Mode::Static | Mode::FastCgi | Mode::Lambda => 2,
    };
    if let Err(need) = limits::carries(nofile.soft, cfg.listen.max_connections, per_request) {
        tracing::warn!(
            "the open-file limit {} (hard limit {}) cannot carry max_connections={}: {} mode needs about {per_request} descriptors per request, {need} in all; raise the hard limit (docker run --ulimit nofile=N:N, or the container runtime's default) or lower max_connections",
            nofile.soft,
            nofile.hard,
            cfg.listen.max_connections,
            cfg.mode.name()
        );
    }
}

/// As PID 1 the kernel gives us every orphan; elsewhere we ask for the same.
fn become_reaper() -> nix::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true)
}

/// The static (musl) builds use mimalloc: musl's own malloc unmaps a large block as soon
/// as it is freed, so every 64 KiB of a streamed body cost an mmap, a munmap and a page
/// fault per page, and its small allocations are slow too. glibc builds keep glibc's.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
