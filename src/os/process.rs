//! Handler processes: spawning into their own process group, killing the whole group,
//! and reaping every child — our own handlers and the orphans that reparent to us.
//!
//! One owner does every wait. Tokio's process driver is not used: a blind
//! `waitpid(-1)` that reaps orphans would steal the statuses its child handles wait for.
//! Instead [`Reaper`] keeps a table of the leaders we started. On SIGCHLD it peeks at
//! each exited child with `waitid(WNOWAIT)`: an orphan is reaped; a leader first has its
//! whole group SIGKILLed (while the zombie leader still pins the group id, so it cannot
//! have been reused), then is reaped and its status sent to whoever waits for it.
//! Spawning and killing take the same lock as reaping, so a status can never be lost
//! between `fork` and registration, and a group is never signalled after its id is free.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::libc;
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use cstr_array::CStrArray;

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

/// A process group we started. `exit` is `None` once its leader has been reaped; the
/// entry stays only for a lingering group (see [`Child::keep_group_on_exit`]) or a group
/// kept until its [`Child`] is dropped ([`Program::group_outlives_leader`]).
struct Entry {
    exit: Option<oneshot::Sender<ExitStatus>>,
    linger: bool,
    /// Kept after the leader's exit until the [`Child`] is dropped (`released`).
    owned: bool,
    released: bool,
    /// Which [`Child`] this is: a group id can be handed out again once the group is
    /// empty, and a stale handle must never signal the new group.
    id: u64,
}

impl Entry {
    /// Kept past its leader's exit: the owner still needs the group.
    fn kept(&self) -> bool {
        self.linger || (self.owned && !self.released)
    }
}

/// Numbers the groups we start ([`Entry::id`]).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Default)]
struct Reaper {
    leaders: Mutex<HashMap<i32, Entry>>,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(Reaper::default)
}

fn table() -> std::sync::MutexGuard<'static, HashMap<i32, Entry>> {
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
        if let Some(mut entry) = leaders.remove(&pid.as_raw()) {
            if entry.kept() {
                // The rest of the group may still be shutting down; keep it signalable.
                let tx = entry.exit.take();
                leaders.insert(pid.as_raw(), entry);
                if let Some(tx) = tx {
                    let _ = tx.send(exit);
                }
            } else {
                // The zombie leader still holds the group id: nothing else can have it.
                let _ = killpg(pid, Signal::SIGKILL);
                if let Some(tx) = entry.exit {
                    let _ = tx.send(exit);
                }
            }
        }
        // Leader or orphan, it is reaped now; loop on EINTR only.
        while let Err(Errno::EINTR) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {}
        prune(&mut leaders);
    }
}

/// Forgets the released groups whose last member is gone (their members are reaped
/// here, so a SIGCHLD comes when one dies).
fn prune(leaders: &mut HashMap<i32, Entry>) {
    leaders.retain(|pid, e| {
        !(e.exit.is_none() && e.released && killpg(Pid::from_raw(*pid), None).is_err())
    });
}

/// A started handler: its pipes and its exit status to come. Dropping it before the
/// status arrived kills the whole group. Our ends of the pipes are non-blocking.
pub struct Child {
    pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    exit: Option<oneshot::Receiver<ExitStatus>>,
    /// Its [`Entry::id`].
    id: u64,
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
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    Program::new(argv)?.spawn(env, stderr)
}

/// A command line prepared once: argv as C strings, and the program's path resolved on
/// `PATH` at the first successful lookup, so a request does not pay for either.
pub struct Program {
    name: String,
    argv: Vec<CString>,
    path: OnceLock<CString>,
    /// Started through [`exec_tied_if_asked`], so it dies with us.
    tied: bool,
    /// The group is not killed when the leader exits, only when the [`Child`] is dropped.
    owned_group: bool,
}

/// The argument that makes fwatchdog, started by itself, a trampoline for
/// [`Program::tied_to_us`] instead of a server: `fwatchdog <this> <our pid> <path>
/// <argv...>`.
const EXEC_TIED: &str = "--exec-tied-to-parent";

/// The trampoline's half of [`Program::tied_to_us`], to be called first thing in
/// `main`: when we were started as `fwatchdog --exec-tied-to-parent PPID PATH ARGV...`,
/// asks the kernel for SIGKILL when our parent dies, checks the parent is still the one
/// that started us (it may have died already), and becomes PATH. Returns when started
/// any other way.
///
/// posix_spawn cannot set the parent-death signal, and it survives `exec`, hence the
/// one extra `exec` per worker start. The signal comes when the *thread* that spawned
/// the child ends, not the process. So a tied program must be started from a thread
/// that lives as long as the runtime: the main thread or a runtime worker thread (with
/// `threads > 1` the pool restarts workers from tasks on those), never from a
/// `spawn_blocking` thread, which ends after sitting idle.
pub fn exec_tied_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(EXEC_TIED)) {
        return;
    }
    let fail = |why: String| -> ! {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("fwatchdog: {why}\n").as_bytes(),
        );
        std::process::exit(127)
    };
    let parent: i32 = args
        .next()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or_else(|| fail(format!("{EXEC_TIED}: no parent pid")));
    let path = args
        .next()
        .and_then(|p| CString::new(p.into_vec()).ok())
        .unwrap_or_else(|| fail(format!("{EXEC_TIED}: no program")));
    let argv: Vec<CString> = args
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect();
    // SAFETY: prctl with integer arguments, and signal() restoring a default
    // disposition; no memory is shared with anything.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(format!(
                "cannot set the parent-death signal: {}",
                io::Error::last_os_error()
            ));
        }
        // Rust ignores SIGPIPE before `main`, and an ignored signal survives `exec`.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if nix::unistd::getppid().as_raw() != parent {
        fail("the watchdog is gone; not starting".into());
    }
    let e = nix::unistd::execv(&path, &argv).err();
    let e = e.map_or(io::Error::other("exec returned"), io::Error::from);
    fail(format!("{}", explain(e, &path)));
}

/// The folders `execvp` searches: `PATH`, or its default when `PATH` is unset.
fn search_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

fn executable(p: &Path) -> bool {
    p.metadata().is_ok_and(|m| m.is_file())
        && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// The first executable file called `name` in a [`search_path`] folder, an empty entry
/// being the current folder: the file `execvp` would run.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path())
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
            .join(name)
        })
        .find(|p| executable(p))
}

/// Where `program` would be run from: itself when it names a path (it has a `/`), else
/// what [`Program`] will find on `PATH` when it starts it. The error says why not, for
/// a configuration error at startup instead of a 500 on every request.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    let found = if program.contains('/') {
        let p = PathBuf::from(program);
        match p.metadata() {
            Err(e) => return Err(format!("program {program}: {e}")),
            Ok(m) if !m.is_file() => return Err(format!("program {program} is not a file")),
            Ok(_) if !executable(&p) => return Err(format!("program {program} is not executable")),
            Ok(_) => p,
        }
    } else {
        which(program).ok_or_else(|| {
            format!(
                "program {program} not found (or not executable) on PATH={}",
                search_path().to_string_lossy()
            )
        })?
    };
    runnable(&found, 0)?;
    Ok(found)
}

/// Whether the kernel can `exec` the file: an ELF binary, or a script whose `#!`
/// interpreter exists and is executable (checked the same way, a few levels deep, as
/// the kernel allows). Without this, a script missing its `#!` line passes and every
/// request is a 500 `Exec format error`. A file we may run but not read gets the
/// benefit of the doubt.
fn runnable(path: &Path, depth: u8) -> Result<(), String> {
    use std::io::Read as _;
    // The kernel reads no more of a `#!` line than this either.
    let mut head = [0u8; 256];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return Ok(());
    };
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Err(format!(
            "{} is neither a binary (ELF) nor a script starting with #!, so it cannot be run (add a first line such as #!/bin/sh)",
            path.display()
        ));
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    // A `\r` is part of the name to the kernel (a script saved with CRLF line ends).
    let interpreter = line
        .trim_ascii_start()
        .split(|b| *b == b' ' || *b == b'\t')
        .next()
        .unwrap_or_default();
    let interpreter = Path::new(OsStr::from_bytes(interpreter));
    if interpreter.as_os_str().is_empty() || !executable(interpreter) {
        return Err(format!(
            "{}: its #! interpreter {:?} is missing or not executable",
            path.display(),
            interpreter.as_os_str()
        ));
    }
    if depth < 4 {
        runnable(interpreter, depth + 1)?;
    }
    Ok(())
}

impl Program {
    pub fn new(argv: &[String]) -> io::Result<Program> {
        let name = argv
            .first()
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let argv = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "command contains a NUL byte")
            })?;
        Ok(Program {
            name,
            argv,
            path: OnceLock::new(),
            tied: false,
            owned_group: false,
        })
    }

    /// Makes every process this starts die with us, even when we are SIGKILLed and
    /// not PID 1 (whose death takes the whole container down anyway): for long-running
    /// children that nothing else would stop. It is started through our own binary
    /// ([`exec_tied_if_asked`]), which sets the parent-death signal and then becomes it.
    pub fn tied_to_us(mut self) -> Program {
        self.tied = true;
        self
    }

    /// Keeps each started group alive after its leader exits, until the [`Child`] is
    /// dropped (which SIGKILLs what is left): a handler's background processes may still
    /// be writing the answer. Without this the group is killed as soon as the leader is
    /// reaped.
    pub fn group_outlives_leader(mut self) -> Program {
        self.owned_group = true;
        self
    }

    /// The program's path: as given when it contains a `/`, else the first executable
    /// file of that name on `PATH` (what `execvp` would run).
    fn path(&self) -> io::Result<&CString> {
        if let Some(p) = self.path.get() {
            return Ok(p);
        }
        let found = if self.name.contains('/') {
            Some(PathBuf::from(&self.name))
        } else {
            which(&self.name)
        };
        let found =
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found on PATH"))?;
        let c = CString::new(found.into_os_string().into_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        Ok(self.path.get_or_init(|| c))
    }

    /// Starts the program with piped stdio, in a new process group, with every signal at
    /// its default disposition and none blocked. `env` is added to ours and wins over it.
    pub fn spawn<K, V>(
        &self,
        env: impl IntoIterator<Item = (K, V)>,
        stderr: Stderr,
    ) -> io::Result<Child>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.spawn_with(env, Stdin::Pipe, stderr)
    }

    /// [`Program::spawn`] with a choice of fd 0: a pipe, or a descriptor of ours the
    /// child shares (FastCGI workers get the listening socket there). With
    /// [`Stdin::Fd`], [`Child::stdin`] is `None`.
    pub fn spawn_with<K, V>(
        &self,
        env: impl IntoIterator<Item = (K, V)>,
        stdin: Stdin<'_>,
        stderr: Stderr,
    ) -> io::Result<Child>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let path = self.path()?;
        let envp = environment(env)?;
        let (theirs, ours) = stdio(stdin, stderr)?;
        let tie = self.tied.then(|| tied_head(path));
        let argv: CStrArray<'_> = tie
            .iter()
            .flat_map(|head| head.iter())
            .chain(self.argv.iter())
            .map(CString::as_c_str)
            .collect();
        let exe: &CStr = if tie.is_some() {
            c"/proc/self/exe"
        } else {
            path.as_c_str()
        };
        let envp = envp.array();

        let (tx, rx) = oneshot::channel();
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut leaders = table();
        prune(&mut leaders);
        let pid = posix_spawn(exe, &argv, &envp, theirs.fds()).map_err(|e| explain(e, exe))?;
        leaders.insert(
            pid,
            Entry {
                exit: Some(tx),
                linger: false,
                owned: self.owned_group,
                released: false,
                id,
            },
        );
        drop(leaders);
        // The child has its copies; ours of its ends must go so EOF comes when it exits.
        drop(theirs);
        Ok(Child {
            pid,
            stdin: ours.stdin,
            stdout: Some(ours.stdout),
            stderr: ours.stderr,
            exit: Some(rx),
            id,
        })
    }
}

/// The head of a tied program's argv: `fwatchdog --exec-tied-to-parent <our pid>
/// <path>`, run as `/proc/self/exe` ([`exec_tied_if_asked`]).
fn tied_head(path: &CString) -> [CString; 4] {
    [
        CString::new("fwatchdog").unwrap_or_default(),
        CString::new(EXEC_TIED).unwrap_or_default(),
        CString::new(std::process::id().to_string()).unwrap_or_default(),
        path.clone(),
    ]
}

/// The child's ends of its stdio, closed in our process once it has them.
struct TheirEnds<'a> {
    stdin: StdinEnd<'a>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl TheirEnds<'_> {
    /// What becomes its fd 0, 1 and 2.
    fn fds(&self) -> [RawFd; 3] {
        [
            self.stdin.as_raw_fd(),
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
        ]
    }
}

/// Our ends: its stdin (with [`Stdin::Pipe`]), its stdout, and its stderr (with
/// [`Stderr::Pipe`]).
struct OurEnds {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
}

/// The pipes of one spawn, or the descriptor its fd 0 shares with us.
fn stdio(stdin: Stdin<'_>, stderr: Stderr) -> io::Result<(TheirEnds<'_>, OurEnds)> {
    let (stdin_r, stdin_w) = match stdin {
        Stdin::Pipe => {
            let (r, w) = pipe(Ours::Write)?;
            (StdinEnd::Owned(r), Some(w))
        }
        // dup2 onto fd 0 gives the child a copy without FD_CLOEXEC; ours keeps it.
        Stdin::Fd(fd) => (StdinEnd::Shared(fd), None),
    };
    let (stdout_r, stdout_w) = pipe(Ours::Read)?;
    let (stderr_r, stderr_w) = match stderr {
        Stderr::Pipe => {
            let (r, w) = pipe(Ours::Read)?;
            (Some(r), w)
        }
        Stderr::Stdout => (None, stdout_w.try_clone()?),
    };
    let theirs = TheirEnds {
        stdin: stdin_r,
        stdout: stdout_w,
        stderr: stderr_w,
    };
    let ours = OurEnds {
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
    };
    Ok((theirs, ours))
}

/// Which end of a handler's pipe is ours.
enum Ours {
    Read,
    Write,
}

/// A close-on-exec pipe whose end of ours is non-blocking, as tokio wants it (so the
/// runners can skip the checks of `from_owned_fd`), and whose handler end is blocking,
/// as programs expect their stdio. Returns (read end, write end).
fn pipe(ours: Ours) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // O_NONBLOCK belongs to each end's open file, so clearing it on one end leaves the
    // other as it is. The access mode is not changed by F_SETFL.
    let theirs = match ours {
        Ours::Read => &w,
        Ours::Write => &r,
    };
    fcntl(theirs.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((r, w))
}

/// What a handler's fd 0 is.
pub enum Stdin<'a> {
    /// A pipe; its write end is [`Child::stdin`].
    Pipe,
    /// This descriptor of ours, shared with the child (e.g. a listening socket, FastCGI's
    /// `FCGI_LISTENSOCK_FILENO`). It must not be 0, 1 or 2.
    Fd(std::os::fd::BorrowedFd<'a>),
}

/// Our side of the child's fd 0 while spawning: a pipe end to close after the spawn, or
/// a descriptor we keep.
enum StdinEnd<'a> {
    Owned(OwnedFd),
    Shared(std::os::fd::BorrowedFd<'a>),
}

impl AsRawFd for StdinEnd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StdinEnd::Owned(fd) => fd.as_raw_fd(),
            StdinEnd::Shared(fd) => fd.as_raw_fd(),
        }
    }
}

/// ENOENT for a file that exists means its `#!` interpreter or ELF loader is missing
/// (a glibc binary in a musl or scratch image): say so, or the error misleads.
fn explain(e: io::Error, path: &std::ffi::CStr) -> io::Error {
    let exists = std::path::Path::new(OsStr::from_bytes(path.to_bytes())).exists();
    if e.raw_os_error() == Some(libc::ENOENT) && exists {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{e} (the file exists: its #! interpreter or ELF loader is missing)"),
        )
    } else {
        e
    }
}

/// A NULL-terminated array of pointers to C strings, what `execve` takes as argv and
/// envp. It can only be built from borrowed `CStr`s, and it borrows them, so every
/// pointer in it is valid for as long as the array is. (In its own module so that not
/// even this file can fill it with other pointers.)
mod cstr_array {
    use std::ffi::CStr;
    use std::marker::PhantomData;

    use nix::libc::c_char;

    pub(super) struct CStrArray<'a> {
        ptrs: Vec<*mut c_char>,
        _strings: PhantomData<&'a CStr>,
    }

    impl CStrArray<'_> {
        /// The array for `posix_spawn`/`execve`: valid while `self` is.
        pub(super) fn as_ptr(&self) -> *const *mut c_char {
            self.ptrs.as_ptr()
        }
    }

    impl<'a> FromIterator<&'a CStr> for CStrArray<'a> {
        fn from_iter<I: IntoIterator<Item = &'a CStr>>(strings: I) -> Self {
            let mut ptrs: Vec<*mut c_char> =
                strings.into_iter().map(|c| c.as_ptr() as *mut _).collect();
            ptrs.push(std::ptr::null_mut());
            CStrArray {
                ptrs,
                _strings: PhantomData,
            }
        }
    }
}

/// A handler's environment: ours (read once, never copied per request) plus the
/// request's variables; a later `extra` entry wins over an earlier one and over ours.
struct Envp {
    base: &'static [(Vec<u8>, CString)],
    /// The request's variables, each with the length of its name.
    added: Vec<(usize, CString)>,
}

impl Envp {
    fn array(&self) -> CStrArray<'_> {
        // Comparing every inherited name with every request variable cost more than the
        // rest of building the array. A name can only be shadowed by one of the same
        // length and first byte: a 64-bit mask of (length, first byte) pairs rules
        // out almost every inherited name at once.
        let sig = |k: &[u8]| {
            1u64 << ((k.len() as u64 * 31 + u64::from(k.first().copied().unwrap_or(0))) % 64)
        };
        let mask = self
            .added
            .iter()
            .fold(0u64, |m, (n, e)| m | sig(&e.as_bytes()[..*n]));
        let shadowed = |key: &[u8]| {
            mask & sig(key) != 0 && self.added.iter().any(|(n, e)| e.as_bytes()[..*n] == *key)
        };
        self.base
            .iter()
            .filter(|(k, _)| !shadowed(k))
            .map(|(_, c)| c.as_c_str())
            .chain(self.added.iter().map(|(_, c)| c.as_c_str()))
            .collect()
    }
}

fn environment<K, V>(extra: impl IntoIterator<Item = (K, V)>) -> io::Result<Envp>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    static BASE: OnceLock<Vec<(Vec<u8>, CString)>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok().map(|c| (k.as_bytes().to_vec(), c))
            })
            .collect()
    });
    let extra = extra.into_iter();
    let mut added: Vec<(usize, CString)> = Vec::with_capacity(extra.size_hint().0);
    for (k, v) in extra {
        let (k, v) = (k.as_ref().as_bytes(), v.as_ref().as_bytes());
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k);
        kv.push(b'=');
        kv.extend_from_slice(v);
        let kv = CString::new(kv).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "environment contains a NUL byte",
            )
        })?;
        match added.iter_mut().find(|(n, e)| e.as_bytes()[..*n] == *k) {
            Some(slot) => slot.1 = kv,
            None => added.push((k.len(), kv)),
        }
    }
    Ok(Envp { base, added })
}

/// The signals `posix_spawn` sets to SIG_DFL in the child, as a mask of signals 1..=64:
/// those that could otherwise reach the handler ignored (an ignored signal survives
/// `exec`; a caught one does not, and the C library resets every caught one in the child
/// anyway). SIGPIPE is the one signal we ignore ourselves ([`crate::os::signal`] resets
/// every inherited disposition at startup), and 32-34 are the C libraries' own, which
/// their `posix_spawn` leaves ignored unless asked. Naming only these spares the child
/// one `rt_sigaction` per other signal (about 60) while the parent waits on its `exec`.
const SIGDEFAULT: u64 = 1 << (libc::SIGPIPE - 1) | 0b111 << (32 - 1);

/// `posix_spawn` with fds 0-2 from `stdio`, a new process group, an empty signal mask and
/// no signal ignored ([`SIGDEFAULT`]). Unlike `std::process::Command`, this also resets
/// the signals glibc keeps for itself (32, 33): its `posix_spawn` otherwise leaves them
/// ignored in the child, and an ignored signal survives `exec`. It is also the cheapest
/// way to start a process: glibc and musl both use `CLONE_VM | CLONE_VFORK`.
fn posix_spawn(
    path: &CStr,
    argv: &CStrArray<'_>,
    envp: &CStrArray<'_>,
    stdio: [RawFd; 3],
) -> io::Result<i32> {
    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }
    // SAFETY: the attr and file-actions objects are initialised before use and destroyed
    // on every path; the argv/envp arrays are NULL-terminated and borrow the strings they
    // point to (see `CStrArray`), so every pointer is valid for the call; the sigset is
    // plain memory we fill bit by bit (glibc's sigfillset/sigaddset refuse its internal
    // signals, which are exactly the ones we need in the set).
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (target, fd) in stdio.iter().enumerate() {
                // Our fds 0-2 are always open (see signal::ensure_stdio), so a pipe end
                // is never already at its target number.
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    *fd,
                    target as libc::c_int,
                ))?;
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut reset: libc::sigset_t = std::mem::zeroed();
            let words = std::slice::from_raw_parts_mut(
                (&mut reset as *mut libc::sigset_t).cast::<u64>(),
                std::mem::size_of::<libc::sigset_t>() / 8,
            );
            // Signals 1..=64 are bits 0..=63 of the set's first word on Linux.
            words[0] = SIGDEFAULT;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &reset))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                flags as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result
    }
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

    /// Lets the rest of the group outlive the leader, for a long-running upstream whose
    /// command is a wrapper (`sh -c 'gunicorn ...'`): on SIGTERM the shell dies at once
    /// while the server is still draining, and must not take the server with it. The
    /// group is then stopped through [`signal_group`] until [`group_alive`] says it is
    /// empty.
    pub fn keep_group_on_exit(&self) {
        if let Some(entry) = table().get_mut(&self.pid) {
            entry.linger = true;
        }
    }

    /// SIGKILLs the whole group if the leader has not been reaped yet (or, for a group
    /// that outlives its leader, while it has members).
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Signals the group, as [`signal_group`], if it is still this child's.
    pub fn signal(&self, sig: Signal) -> bool {
        let ours = table().get(&self.pid).is_some_and(|e| e.id == self.id);
        ours && signal_group(self.pid, sig)
    }

    /// Whether the group still has a live member (the leader included, until reaped).
    pub fn group_alive(&self) -> bool {
        let leaders = table();
        leaders.get(&self.pid).is_some_and(|e| e.id == self.id)
            && killpg(Pid::from_raw(self.pid), None).is_ok()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let owned = {
            let mut leaders = table();
            match leaders.get_mut(&self.pid) {
                Some(e) if e.id == self.id && e.owned => {
                    e.released = true;
                    true
                }
                _ => false,
            }
        };
        if self.exit.is_some() || owned {
            self.kill();
        }
    }
}

/// Signals a group of ours: while its leader is unreaped (so the id cannot have been
/// reused), or, for a lingering group, while it still has members (a process group id
/// is not handed out again while any process uses it).
pub fn signal_group(pid: i32, sig: Signal) -> bool {
    let mut leaders = table();
    let Some(entry) = leaders.get(&pid) else {
        return false;
    };
    if entry.exit.is_none() && killpg(Pid::from_raw(pid), None).is_err() {
        leaders.remove(&pid);
        return false;
    }
    killpg(Pid::from_raw(pid), sig).is_ok()
}

/// Whether a group of ours still has a live member.
pub fn group_alive(pid: i32) -> bool {
    let leaders = table();
    leaders.contains_key(&pid) && killpg(Pid::from_raw(pid), None).is_ok()
}

/// SIGKILLs every group of ours still running (the end of a drain).
pub fn kill_all() {
    let leaders = table();
    for pid in leaders.keys() {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// How many leaders are still running.
pub fn running() -> usize {
    table().values().filter(|e| e.exit.is_some()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    /// What the handler gets: ours, minus each name a request variable shadows, then the
    /// request's.
    fn names(envp: &Envp) -> Vec<String> {
        let array = envp.array();
        let mut out = Vec::new();
        let mut at = array.as_ptr();
        // SAFETY: the array is NULL-terminated and its strings live as long as `envp`.
        unsafe {
            while !(*at).is_null() {
                out.push(CStr::from_ptr(*at).to_string_lossy().into_owned());
                at = at.add(1);
            }
        }
        out
    }

    #[test]
    fn request_variables_shadow_inherited_ones_of_the_same_name_only() {
        let base: Vec<(Vec<u8>, CString)> = ["PATH=/bin", "Http_X=ours", "Http_Y=ours", "H=1"]
            .iter()
            .map(|kv| {
                (
                    kv.split('=').next().unwrap_or("").as_bytes().to_vec(),
                    c(kv),
                )
            })
            .collect();
        let envp = Envp {
            base: Box::leak(base.into_boxed_slice()),
            added: vec![
                (6, c("Http_X=theirs")),
                (6, c("Http_Z=theirs")),
                (4, c("Path=x")),
            ],
        };
        assert_eq!(
            names(&envp),
            [
                "PATH=/bin",
                "Http_Y=ours",
                "H=1",
                "Http_X=theirs",
                "Http_Z=theirs",
                "Path=x"
            ]
        );
    }
}
