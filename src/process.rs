//! Handler processes: spawning into their own process group, killing the whole group,
//! and reaping every child — our own handlers and the orphans that reparent to us.
//!
//! One owner does every wait (§8.4). Tokio's process driver is not used: a blind
//! `waitpid(-1)` that reaps orphans would steal the statuses its child handles wait for.
//! Instead [`Reaper`] keeps a table of the leaders we started. On SIGCHLD it peeks at
//! each exited child with `waitid(WNOWAIT)`: an orphan is reaped; a leader first has its
//! whole group SIGKILLed (while the zombie leader still pins the group id, so it cannot
//! have been reused), then is reaped and its status sent to whoever waits for it.
//! Spawning and killing take the same lock as reaping, so a status can never be lost
//! between `fork` and registration, and a group is never signalled after its id is free.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a handler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// A number for logs, metrics and `X-Exit-Code`: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => {
                let name = Signal::try_from(*s).map(|s| s.as_str()).unwrap_or("?");
                write!(f, "killed by signal {s} ({name})")
            }
        }
    }
}

#[derive(Default)]
struct Reaper {
    leaders: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(Reaper::default)
}

fn table() -> std::sync::MutexGuard<'static, HashMap<i32, oneshot::Sender<ExitStatus>>> {
    reaper().leaders.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the task that reaps children on SIGCHLD. Call once, inside the runtime,
/// before the first spawn.
pub fn start_reaper() -> io::Result<()> {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Reaps every child that has exited.
fn reap() {
    let mut leaders = table();
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let status = match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(s) => s,
        };
        let Some(pid) = status.pid() else { return };
        let exit = match status {
            WaitStatus::Exited(_, code) => ExitStatus::Code(code),
            WaitStatus::Signaled(_, sig, _) => ExitStatus::Signal(sig as i32),
            _ => ExitStatus::Code(-1),
        };
        if let Some(tx) = leaders.remove(&pid.as_raw()) {
            // The zombie leader still holds the group id: nothing else can have it.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = tx.send(exit);
        }
        // Leader or orphan, it is reaped now; loop on EINTR only.
        while let Err(Errno::EINTR) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {}
    }
}

/// A started handler: its pipes and its exit status to come. Dropping it before the
/// status arrived kills the whole group.
pub struct Child {
    pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    exit: Option<oneshot::Receiver<ExitStatus>>,
}

/// Where the handler's stderr goes.
pub enum Stderr {
    Pipe,
    /// Into the stdout pipe, so the two interleave exactly as written.
    Stdout,
}

/// Spawns `argv` with piped stdio in a new process group. `env` is added to ours.
pub fn spawn<K, V>(
    argv: &[String],
    env: impl IntoIterator<Item = (K, V)>,
    stderr: Stderr,
) -> io::Result<Child>
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env).stdin(Stdio::piped());
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_env = "gnu")]
    {
        // glibc's posix_spawn sets its internal signals (32, 33) to SIG_IGN in the child,
        // and an ignored signal survives exec: every handler would start with them
        // ignored. Any pre_exec hook makes std fork instead, and a forked child's
        // handlers for those signals are reset by exec like any other. (The static musl
        // build keeps the faster posix_spawn path: musl leaves nothing ignored.)
        #[allow(unsafe_code)]
        // SAFETY: the hook does nothing, so it is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| Ok(()));
        }
    }
    let combined = match stderr {
        Stderr::Pipe => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        Stderr::Stdout => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let write2 = write.try_clone()?;
            cmd.stdout(Stdio::from(write)).stderr(Stdio::from(write2));
            Some(read)
        }
    };
    let (tx, rx) = oneshot::channel();
    let mut leaders = table();
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    leaders.insert(pid, tx);
    drop(leaders);
    // Drop the write ends we passed down (held by `cmd`) so EOF comes when the group exits.
    drop(cmd);
    Ok(Child {
        pid,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: combined.or_else(|| child.stdout.take().map(OwnedFd::from)),
        stderr: child.stderr.take().map(OwnedFd::from),
        exit: Some(rx),
    })
}

impl Child {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the leader's exit status. Resolves once; later calls pend forever.
    pub async fn wait(&mut self) -> ExitStatus {
        match self.exit.as_mut() {
            Some(rx) => {
                let status = rx.await.unwrap_or(ExitStatus::Code(-1));
                self.exit = None;
                status
            }
            None => std::future::pending().await,
        }
    }

    /// True once [`Child::wait`] has returned.
    pub fn exited(&self) -> bool {
        self.exit.is_none()
    }

    /// SIGKILLs the whole group if the leader has not been reaped yet.
    pub fn kill(&self) {
        signal_group(self.pid, Signal::SIGKILL);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_some() {
            self.kill();
        }
    }
}

/// Signals a leader's group, only while the leader is still ours and unreaped.
pub fn signal_group(pid: i32, sig: Signal) -> bool {
    let leaders = table();
    if leaders.contains_key(&pid) {
        killpg(Pid::from_raw(pid), sig).is_ok()
    } else {
        false
    }
}

/// SIGKILLs every handler group still running (the end of a drain).
pub fn kill_all() {
    let leaders = table();
    for pid in leaders.keys() {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// How many handler leaders are still running.
pub fn running() -> usize {
    table().len()
}
