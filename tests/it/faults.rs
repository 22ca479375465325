//! Fault injection: one misbehaving handler per fault, run in every
//! fork mode. Each case proves four things: the answer has the status the mode promises, the
//! request ends (within [`BOUND`]), nothing of the handler's process group is left (and no
//! zombie), and the next request on the same watchdog is served normally.
//!
//! Every handler is the same script with one fault spliced in: `POST /ok` is a plain
//! `cat`, any other path writes the shell's pid (its process group id) to a file and
//! misbehaves.

use std::io::Write;
use std::net::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{
    assert_handler_group_ends, connect, eventually, read_pid, read_response, request, send_head,
    watchdog, zombie_children, Resp, TempDir,
};

/// One fault: the script's misbehaviour, the settings it needs, what the client sends
/// and what it must get back.
struct Fault {
    /// Shell code run after the pid is written. `$DIR` is the test's temp folder.
    script: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// Request body size; sent in 64 KiB pieces `pause` apart.
    body: usize,
    pause: Duration,
    expect: fn(mode: &str, sent: &[u8], r: &Resp),
}

const PIECE: usize = 64 * 1024;

/// Sends `body` from a second thread while the answer is read, so a server that
/// answers before it has read everything can never deadlock the test.
fn exchange(port: u16, body: Vec<u8>, pause: Duration) -> (Resp, Duration) {
    let mut s = connect(port);
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    let started = Instant::now();
    send_head(&mut s, "POST", "/fault", &[], Some(body.len()));
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for piece in body.chunks(PIECE) {
            if w.write_all(piece).is_err() {
                return;
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    });
    let r = read_response(&mut s, false);
    let took = started.elapsed();
    // Unblocks the writer if the server stopped reading without closing.
    let _ = s.shutdown(Shutdown::Both);
    writer.join().expect("writer");
    (r, took)
}

/// Kills (by pid) a process that escaped its group on purpose, when the test ends.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn check(fault: &Fault, mode: &str) {
    let tmp = TempDir::new();
    let dir = tmp.path().to_owned();
    let _daemon = KillOnDrop(dir.join("daemon"));
    let script = tmp.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\nulimit -c 0\nDIR='{}'; export DIR\ncase \"$Http_Path\" in /ok) exec cat ;; esac\necho $$ > \"$DIR/pid\"\n{}\n",
            dir.display(),
            fault.script
        ),
    );
    let mut b = watchdog().mode(mode).fprocess(script.display().to_string());
    for (k, v) in fault.env {
        b = b.env(k, v);
    }
    let w = b.start();

    let sent = crate::util::random_bytes(fault.body);
    let (r, took) = exchange(w.port, sent.clone(), fault.pause);
    (fault.expect)(mode, &sent, &r);
    assert!(took < BOUND, "{mode}: took {took:?}, bound {BOUND:?}");

    assert_handler_group_ends(&dir.join("pid"), Duration::from_secs(3), mode);
    assert!(
        eventually(Duration::from_secs(30), || zombie_children(w.pid())
            .is_empty()),
        "{mode}: zombies left: {:?}",
        zombie_children(w.pid())
    );

    // A daemon escaped the group on purpose: it runs on, and is reaped when it dies.
    if fault.script.contains("$DIR/daemon") {
        let pid = read_pid(&dir.join("daemon"));
        let proc_dir = format!("/proc/{pid}");
        assert!(
            Path::new(&proc_dir).exists(),
            "{mode}: the daemon died early"
        );
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(
            eventually(Duration::from_secs(30), || !Path::new(&proc_dir).exists()),
            "{mode}: daemon {pid} not reaped: zombies {:?}",
            zombie_children(w.pid())
        );
    }

    let next = request(w.port, "POST", "/ok", &[], b"still serving");
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "still serving"),
        "{mode}: the next request"
    );
    assert!(!w.log().contains("panicked"), "{}", w.log());
}

/// Expands each fault into one test per fork mode: `faults::<fault>::<mode>`.
macro_rules! in_every_fork_mode {
    ($($(#[$doc:meta])* $name:ident => $fault:expr;)*) => {$(
        $(#[$doc])*
        mod $name {
            #[test]
            fn streaming() {
                super::check(&$fault, "streaming");
            }
            #[test]
            fn serializing() {
                super::check(&$fault, "serializing");
            }
            #[test]
            fn classic() {
                super::check(&$fault, "classic");
            }
        }
    )*};
}

/// The faults that run into `exec_timeout`. Long enough for the plain requests that
/// share it (`/ok`, and the output a timed-out handler writes first) on a loaded machine.
const TIMEOUTS: &[(&str, &str)] = &[("exec_timeout", "2s")];

/// How long any fault's request may take: far above what a loaded machine needs, far
/// below what a hang costs (the faults sleep 20 s and more, or forever). Not a speed
/// check.
const BOUND: Duration = Duration::from_secs(15);

/// Starts a daemon in its own session that keeps the handler's stdout and stderr open,
/// and exits only once the daemon has left the group (else the kill of the group at the
/// handler's exit could win the race and the fault would not be injected).
const DAEMON: &str = "(setsid sh -c 'echo $$ > \"$DIR/daemon.new\"; mv \"$DIR/daemon.new\" \"$DIR/daemon\"; exec sleep 20' &)
i=0; while [ ! -e \"$DIR/daemon\" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
echo hi";

in_every_fork_mode! {
    segfault_is_a_500_naming_the_signal => super::Fault {
        script: "cat >/dev/null; kill -SEGV $$",
        env: &[],
        body: 100_000,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!(r.status, 500, "{mode}: {}", r.text());
            assert!(r.text().starts_with("killed by signal 11 (SIGSEGV)\n"), "{mode}: {}", r.text());
        },
    };

    segfault_after_output_never_looks_like_success => super::Fault {
        script: "echo partial; kill -SEGV $$",
        env: &[],
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| match mode {
            // The head (200) is out before the crash: the stream must be cut short.
            "streaming" => {
                assert_eq!(r.body, b"partial\n", "{mode}");
                assert!(!r.complete, "{mode}: a crash after output ended cleanly");
            }
            _ => {
                assert_eq!(r.status, 500, "{mode}");
                assert_eq!(r.text(), "killed by signal 11 (SIGSEGV)\npartial\n", "{mode}");
            }
        },
    };

    exit_during_upload_answers_and_discards_the_rest => super::Fault {
        script: "head -c 1000 >/dev/null; echo early; exit 0",
        env: &[],
        body: 4 << 20,
        pause: std::time::Duration::from_millis(5),
        expect: |mode, _, r| {
            assert_eq!((r.status, r.text().as_str()), (200, "early\n"), "{mode}");
            assert!(r.complete, "{mode}");
        },
    };

    never_reading_stdin_is_fine => super::Fault {
        script: "sleep 0.2; echo ignored",
        env: &[],
        body: 1 << 20,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!((r.status, r.text().as_str()), (200, "ignored\n"), "{mode}");
        },
    };

    writing_more_than_a_pipe_before_reading_loses_nothing => super::Fault {
        script: "head -c 1000000 /dev/zero; cat",
        env: &[],
        body: 1 << 20,
        pause: std::time::Duration::ZERO,
        expect: |mode, sent, r| {
            assert_eq!(r.status, 200, "{mode}");
            assert!(r.complete, "{mode}");
            let mut want = vec![0u8; 1_000_000];
            want.extend_from_slice(sent);
            assert_eq!(r.body.len(), want.len(), "{mode}");
            assert_eq!(crate::util::sha256(&r.body), crate::util::sha256(&want), "{mode}");
        },
    };

    flooding_stdout_and_stderr_at_once_never_stalls => super::Fault {
        script: "yes 'a line for the log' | head -c 1000000 >&2 & head -c 3000000 /dev/zero; wait",
        env: &[],
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!(r.status, 200, "{mode}");
            assert!(r.complete, "{mode}");
            // classic combines stderr into the body (combine_output defaults to true).
            let want = if mode == "classic" { 4_000_000 } else { 3_000_000 };
            assert_eq!(r.body.len(), want, "{mode}");
        },
    };

    ignoring_sigterm_does_not_outlive_exec_timeout => super::Fault {
        script: "trap '' TERM INT HUP; sleep 100",
        // With a kill grace, SIGTERM comes first and SIGKILL must still follow.
        env: &[("exec_timeout", "2s"), ("exec_kill_grace", "300ms")],
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!(r.status, 504, "{mode}: {}", r.text());
            assert_eq!(r.text(), "exec_timeout exceeded (2s)\n", "{mode}");
        },
    };

    a_daemon_holding_the_pipes_does_not_hold_the_request => super::Fault {
        // setsid: the daemon leaves the group, so only EOF_GRACE can end the wait.
        script: super::DAEMON,
        env: &[],
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!((r.status, r.text().as_str()), (200, "hi\n"), "{mode}");
            assert!(r.complete, "{mode}");
        },
    };

    /// Background children's output is part of the answer: it is read until EOF, not cut
    /// when the leader exits. Before, the group was killed as soon as the leader was
    /// reaped: `echo parent-exit; (sleep .3; echo child) & exit 0` answered
    /// `200 "parent-exit\n"` in a few ms in every fork mode (of-watchdog, which reads to
    /// EOF, answers both lines).
    background_children_are_read_until_eof => super::Fault {
        script: "echo parent-exit; (sleep 0.3; echo child 1; sleep 0.1; echo child 2) & exit 0",
        env: &[],
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "parent-exit\nchild 1\nchild 2\n"),
                "{mode}"
            );
            assert!(r.complete, "{mode}");
        },
    };

    /// A background child that keeps stdout open past `exec_timeout` is a timeout, never
    /// a clean answer cut short: streaming aborts the body, the buffered modes answer
    /// 504, and the group is killed. Before, `echo parent; sleep 100 & exit 0` answered
    /// `200 "parent\n"` at once, with `sleep` killed as the leader was reaped.
    background_child_holding_stdout_past_exec_timeout_is_a_timeout => super::Fault {
        script: "echo parent; sleep 100 & exit 0",
        env: super::TIMEOUTS,
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| match mode {
            "streaming" => {
                assert_eq!((r.status, r.text().as_str()), (200, "parent\n"), "{mode}");
                assert!(!r.complete, "{mode}: a timed-out answer ended cleanly");
            }
            _ => {
                assert_eq!(r.status, 504, "{mode}: {}", r.text());
                assert_eq!(r.text(), "exec_timeout exceeded (2s)\n", "{mode}");
            }
        },
    };

    sleeping_forever_is_a_504_at_exec_timeout => super::Fault {
        script: "sleep 1000",
        env: super::TIMEOUTS,
        body: 0,
        pause: std::time::Duration::ZERO,
        expect: |mode, _, r| {
            assert_eq!(r.status, 504, "{mode}: {}", r.text());
            assert_eq!(r.text(), "exec_timeout exceeded (2s)\n", "{mode}");
            assert!(r.header("x-duration-seconds").is_some(), "{mode}");
        },
    };
}
