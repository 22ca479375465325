//! Signals: what we inherit, what we hand down, and what stops us.
//!
//! A container runtime or a shell may start us with signals ignored or blocked, and both
//! survive `exec`: every handler would inherit them and, say, never die on SIGTERM. So at
//! startup we restore default dispositions and an empty mask (SIGPIPE stays ignored for
//! ourselves; the standard library resets it in each child). Stray inherited descriptors
//! are marked close-on-exec so handlers see exactly fds 0, 1 and 2.

use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow};
use tokio::signal::unix::{signal, SignalKind};

/// Restores default signal dispositions and an empty signal mask. Call before any thread
/// starts.
///
/// `exec` already put every caught signal back to SIG_DFL: what can arrive here is an
/// ignored one. The kernel lists those in `/proc/self/status` (`SigIgn`), so only they
/// are reset, a few system calls instead of one per signal; without `/proc` every signal
/// is. SIGPIPE stays ignored for ourselves (the standard library ignores it before
/// `main`; handlers get it back, see [`crate::os::process`]).
pub fn reset_inherited() {
    let ignored = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| sig_ign(&status))
        .unwrap_or(u64::MAX);
    for sig in 1..=64 {
        let keep = [libc::SIGKILL, libc::SIGSTOP, libc::SIGPIPE].contains(&sig);
        if ignored & (1 << (sig - 1)) != 0 && !keep {
            set_default(sig);
        }
    }
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The `SigIgn` mask of a `/proc/<pid>/status` text: bit N-1 for signal N.
fn sig_ign(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The kernel's `struct sigaction` as `rt_sigaction` takes it. x86-64 and aarch64 share
/// this layout (handler, flags, restorer, mask); other architectures order or size the
/// fields differently, so they must add theirs here before this builds for them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("os::signal: add this architecture's kernel `struct sigaction` layout");

/// Puts `sig` back to SIG_DFL by asking the kernel directly: glibc's `sigaction` refuses
/// 32 and 33 (its own), and SIG_DFL needs no handler or restorer from the C library.
fn set_default(sig: libc::c_int) {
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: installs SIG_DFL, which runs no code of ours; `dfl` outlives the call and
    // the old action is not asked for. A signal the kernel refuses is left as it is.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &dfl,
            std::ptr::null_mut::<KernelSigaction>(),
            8,
        );
    }
}

/// Opens `/dev/null` on any of fds 0-2 that we were started without, so no socket or
/// pipe of ours can land on them (and then be handed to a handler as its stdio).
pub fn ensure_stdio() {
    for fd in 0..=2 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            // open() takes the lowest free number, which is `fd`.
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(f);
            }
        }
    }
}

/// Marks every inherited descriptor above 2 close-on-exec.
pub fn cloexec_inherited() {
    // One system call on Linux 5.11 and later; older kernels (or sandboxes without it)
    // get the same from a walk of /proc/self/fd.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors;
    // it takes no pointers and closes nothing.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3,
            nix::libc::c_uint::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        // nix 0.29's fcntl takes the raw number; a stale one (the read_dir handle
        // itself) just fails with EBADF.
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) {
            let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
            let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
        }
    }
}

/// The stop signals we handle: SIGTERM and SIGINT, and SIGHUP and SIGQUIT, which drain
/// like SIGTERM. PID 1 ignores any signal without a handler, so all are always handled;
/// not PID 1 (under tini, `docker --init` or a shell, which forward what they get) an
/// unhandled one would kill us on the spot, with no drain and handlers orphaned.
pub struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

/// Signals whose default action would kill us, and that mean nothing to us: caught and
/// ignored (logged once each). Caught, not set to SIG_IGN, so that handlers, which
/// start with caught signals back at their defaults, are not affected.
const IGNORED: [(SignalKind, &str); 3] = [
    (SignalKind::user_defined1(), "SIGUSR1"),
    (SignalKind::user_defined2(), "SIGUSR2"),
    (SignalKind::alarm(), "SIGALRM"),
];

impl Stop {
    /// Installs the handlers. Call inside the runtime.
    pub fn install() -> std::io::Result<Stop> {
        for (kind, name) in IGNORED {
            let mut sig = signal(kind)?;
            tokio::spawn(async move {
                if sig.recv().await.is_some() {
                    tracing::info!("Received {name}: ignored (logged once)");
                }
                while sig.recv().await.is_some() {}
            });
        }
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Waits for the next stop signal and says which.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sig_ign;

    #[test]
    fn sig_ign_reads_the_kernels_mask() {
        let status = "Name:\tfwatchdog\nSigBlk:\t0000000000000000\n\
                      SigIgn:\t0000000000001006\nSigCgt:\t0000000000000000\n";
        // SIGINT (2), SIGQUIT (3) and SIGPIPE (13)
        assert_eq!(sig_ign(status), Some(0x1006));
        assert_eq!(sig_ign("Name:\tx\n"), None);
        assert_eq!(sig_ign("SigIgn:\tnot hex\n"), None);
    }
}
