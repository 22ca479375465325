//! Lifecycle: the SIGTERM and SIGINT drain, PID 1, exit codes.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{
    assert_handler_group_ends, connect, eventually, read_response, request, send_head,
    wait_for_marker, watchdog, zombie_children, TempDir,
};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

#[test]
fn sigterm_fails_health_at_once_keeps_serving_then_exits_0() {
    // Long enough for the requests below on a loaded machine.
    let interval = Duration::from_secs(10);
    let mut w = watchdog()
        .fprocess("echo served")
        .env("healthcheck_interval", "10s")
        .start();
    assert!(w.lock_file().exists());
    let t = Instant::now();
    w.signal(SIGTERM);
    w.expect_log("Received SIGTERM");
    assert_eq!(w.get("/_/health").status, 503, "health fails at once");
    assert_eq!(w.get("/_/ready").status, 503);
    assert!(!w.lock_file().exists(), "lock file removed");
    // Still serving function requests during healthcheck_interval.
    let r = w.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "served\n"));
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("exits after the interval");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(t.elapsed() >= interval, "exited after {:?}", t.elapsed());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", w.port)).is_err(),
        "listener closed"
    );
}

#[test]
fn healthcheck_interval_0_means_no_wait_and_sigint_works_too() {
    let mut w = watchdog()
        .fprocess("cat")
        .env("healthcheck_interval", "0")
        .start();
    w.signal(SIGINT);
    // Its exit is all the test waits for: no interval, no request in flight.
    let status = w.wait_exit(Duration::from_secs(60)).expect("no hang");
    assert_eq!(status.code(), Some(0));
    assert!(w.log().contains("Received SIGINT"));
}

#[test]
fn sigint_drains_without_the_healthcheck_interval_wait() {
    // Ctrl-C at a terminal: nobody needs time to stop routing here, so the 30 s wait
    // SIGTERM gets is skipped, but a request in flight still gets its answer.
    // The handler marks that it started, then finishes only once the test says so: the
    // request is surely in flight when SIGINT comes.
    let tmp = TempDir::new();
    let (started, go) = (tmp.path().join("started"), tmp.path().join("go"));
    let mut w = watchdog()
        .fprocess(format!(
            "sh -c 'touch {}; while [ ! -e {} ]; do sleep 0.01; done; echo finished'",
            started.display(),
            go.display()
        ))
        .env("healthcheck_interval", "30s")
        .start();
    let port = w.port;
    let client = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    wait_for_marker(&started);
    let t = Instant::now();
    w.signal(SIGINT);
    w.expect_log("Received SIGINT");
    std::fs::write(&go, "").expect("let the handler finish");
    let r = client.join().expect("client");
    assert_eq!((r.status, r.text().as_str()), (200, "finished\n"));
    // Well before the 30 s interval a SIGTERM would wait.
    let status = w.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn sigterm_keeps_serving_for_the_healthcheck_interval() {
    // A long interval, so "still serving a while after SIGTERM" does not depend on how
    // fast this machine is; the exit after the interval is the test above. A second
    // SIGTERM ends it.
    let mut w = watchdog()
        .fprocess("echo served")
        .env("healthcheck_interval", "60s")
        .start();
    let t = Instant::now();
    w.signal(SIGTERM);
    w.expect_log("Received SIGTERM");
    std::thread::sleep(Duration::from_millis(1200));
    let r = w.post("/", b"");
    assert_eq!(
        r.status,
        200,
        "still serving {:?} after SIGTERM",
        t.elapsed()
    );
    assert_eq!(w.post("/", b"").text(), "served\n");
    w.signal(SIGTERM);
    let status = w.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(1), "a cut-short drain");
}

#[test]
fn in_flight_requests_finish_before_exit() {
    let tmp = TempDir::new();
    let (started, go) = (tmp.path().join("started"), tmp.path().join("go"));
    let mut w = watchdog()
        .fprocess(format!(
            "sh -c 'touch {}; while [ ! -e {} ]; do sleep 0.01; done; echo finished'",
            started.display(),
            go.display()
        ))
        .start();
    let port = w.port;
    let client = std::thread::spawn(move || request(port, "POST", "/", &[], b""));
    // In flight for sure: the handler runs until the test lets it finish, after SIGTERM.
    wait_for_marker(&started);
    w.signal(SIGTERM);
    w.expect_log("Received SIGTERM");
    std::fs::write(&go, "").expect("let the handler finish");
    let r = client.join().expect("client");
    assert_eq!(
        (r.status, r.text().as_str(), r.complete),
        (200, "finished\n", true)
    );
    assert_eq!(
        w.wait_exit(Duration::from_secs(60)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn the_drain_is_bounded_by_write_timeout_and_kills_what_is_left() {
    let tmp = TempDir::new();
    let pidfile = tmp.path().join("pid");
    let mut w = watchdog()
        .fprocess(format!(
            "sh -c 'echo $$ > {}; trap \"\" TERM; echo started; sleep 100'",
            pidfile.display()
        ))
        .env("exec_timeout", "0")
        .env("write_timeout", "1500ms")
        .start();
    let mut s = connect(w.port);
    send_head(&mut s, "POST", "/", &[], Some(0));
    wait_for_marker(&pidfile);
    w.signal(SIGTERM);
    // The handler would sleep 100 s: an exit well before that is the bound at work.
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("drain is bounded");
    assert_eq!(status.code(), Some(0));
    assert_handler_group_ends(
        &pidfile,
        Duration::from_secs(2),
        "a handler ignoring SIGTERM still ends",
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut w = watchdog()
        .fprocess("sleep 100")
        .env("healthcheck_interval", "30s")
        .start();
    w.signal(SIGTERM);
    w.expect_log("Received SIGTERM");
    w.signal(SIGTERM);
    // Well before the 30 s interval ends.
    let status = w.wait_exit(Duration::from_secs(20)).expect("exits at once");
    assert_eq!(
        status.code(),
        Some(1),
        "a cut-short drain is not a clean exit"
    );
}

#[test]
fn no_request_accepted_before_the_listener_closed_is_dropped() {
    let mut w = watchdog()
        .fprocess("cat")
        .env("healthcheck_interval", "300ms")
        .start();
    let port = w.port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        clients.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return; // refused: the listener is closed
                };
                let body = format!("client {c} request {n}");
                use std::io::Write;
                let mut head = format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                head.extend_from_slice(body.as_bytes());
                if s.write_all(&head).is_err() {
                    continue;
                }
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                let text = String::from_utf8_lossy(&out);
                if text.is_empty() {
                    continue; // never read by the server: counted against the log below
                }
                if text.starts_with("HTTP/1.1 200")
                    && text.contains(&body)
                    && text.ends_with("\r\n0\r\n\r\n")
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.lock().expect("bad").push(text.into_owned());
                }
            }
        }));
    }
    assert!(eventually(Duration::from_secs(120), || ok
        .load(Ordering::Relaxed)
        > 50));
    w.signal(SIGTERM);
    let status = w.wait_exit(Duration::from_secs(60)).expect("exit");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert_eq!(status.code(), Some(0));
    let bad = bad.lock().expect("bad");
    assert!(bad.is_empty(), "partial or wrong responses: {bad:?}");
    let served = w.log().matches("POST / - 200").count();
    assert_eq!(
        ok.load(Ordering::Relaxed),
        served,
        "every request the server took got its full answer"
    );
    assert!(served > 50);
}

fn has_unshare_pid() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The watchdog's pid inside `unshare --fork`: the one child of the unshare process.
fn inner_pid(unshare: i32) -> i32 {
    let mut found = 0;
    assert!(eventually(Duration::from_secs(30), || {
        let kids = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        found = kids
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        found != 0
    }));
    found
}

#[test]
fn as_pid_1_orphans_are_reaped_and_exit_statuses_stay_exact() {
    if !has_unshare_pid() {
        return crate::util::skip(
            "as_pid_1_orphans_are_reaped_and_exit_statuses_stay_exact",
            "unshare --pid --fork --mount-proc is not available (needs root)",
        );
    }
    let tmp = TempDir::new();
    let handler = tmp.script(
        "h.sh",
        "#!/bin/sh\n\
         # The grandchild leaves the process group and outlives us: an orphan for PID 1.\n\
         setsid sh -c 'sleep 0.05' </dev/null >/dev/null 2>&1 &\n\
         case \"$Http_X_Exit\" in\n  kill) kill -9 $$ ;;\n  *) exit \"$Http_X_Exit\" ;;\nesac\n",
    );
    let mut w = watchdog()
        .wrap(&["unshare", "--pid", "--fork", "--mount-proc"])
        .fprocess(handler.to_str().expect("utf8"))
        .start();
    let inner = inner_pid(w.pid());
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{inner}/status"))
            .expect("status")
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .map(|l| l.split_whitespace().last() == Some("1")),
        Some(true),
        "fwatchdog is PID 1 in its namespace"
    );
    let want = [
        ("0", 200, ""),
        ("1", 500, "exit status 1\n"),
        ("7", 500, "exit status 7\n"),
        ("kill", 500, "killed by signal 9 (SIGKILL)\n"),
    ];
    for i in 0..200 {
        let (code, status, body) = want[i % want.len()];
        let r = request(w.port, "POST", "/", &[("X-Exit", code)], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (status, body),
            "request {i} exit {code}"
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || zombie_children(inner)
            .is_empty()),
        "zombies under PID 1: {:?}",
        zombie_children(inner)
    );
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(inner.to_string())
        .status();
    let status = w
        .wait_exit(Duration::from_secs(5))
        .expect("PID 1 handles SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(w.log().contains("Received SIGTERM"));
}

#[test]
fn outside_pid_1_we_are_a_subreaper_so_double_forks_leave_no_zombies() {
    let tmp = TempDir::new();
    let orphan = tmp.path().join("orphan");
    // A grandchild that leaves the handler's group and outlives it: an orphan.
    let handler = tmp.script(
        "h.sh",
        &format!(
            "#!/bin/sh\ncase \"$Http_Path\" in\n  /long) setsid sh -c 'echo $$ > {0}.new; mv {0}.new {0}; exec sleep 1' </dev/null >/dev/null 2>&1 &\n    # Answer once it has left our group (the group is killed when we exit).\n    while [ ! -e {0} ]; do sleep 0.01; done ;;\n  *) setsid sh -c 'sleep 0.05' </dev/null >/dev/null 2>&1 & ;;\nesac\necho ok\n",
            orphan.display()
        ),
    );
    let w = watchdog().fprocess(handler.to_str().expect("utf8")).start();
    assert_eq!(w.post("/long", b"").text(), "ok\n");
    // Its parent gone, the orphan is ours, not the host init's...
    let pid = crate::util::read_pid(&orphan);
    let parent = || {
        crate::util::processes()
            .into_iter()
            .find(|p| p.pid == pid)
            .map(|p| p.ppid)
    };
    assert!(
        eventually(Duration::from_secs(30), || parent() == Some(w.pid())),
        "orphan {pid} has parent {:?}, not the watchdog {}",
        parent(),
        w.pid()
    );
    // ...and reaped when it exits.
    assert!(
        eventually(Duration::from_secs(30), || parent().is_none()),
        "orphan {pid} not reaped: {:?}",
        zombie_children(w.pid())
    );
    for _ in 0..50 {
        assert_eq!(w.post("/", b"").text(), "ok\n");
    }
    assert!(
        eventually(Duration::from_secs(30), || zombie_children(w.pid())
            .is_empty()),
        "{:?}",
        zombie_children(w.pid())
    );
}

#[test]
fn exit_code_0_on_clean_shutdown_1_runtime_2_config() {
    let mut w = watchdog().fprocess("cat").start();
    w.signal(SIGTERM);
    assert_eq!(
        w.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );

    let (status, out) = watchdog()
        .fprocess("cat")
        .env("write_timeout", "0")
        .run(Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{out}");

    // A lock file that cannot be written is a runtime failure naming how to disable it.
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("TMPDIR", "/proc/no-such-dir")
        .run(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("suppress_lock"), "{out}");
}

#[test]
fn sigterm_during_a_read_of_read_response_still_completes() {
    // A keep-alive client mid-conversation when SIGTERM arrives gets its answer.
    let tmp = TempDir::new();
    let started = tmp.path().join("started");
    let mut w = watchdog()
        .fprocess(format!("sh -c 'touch {}; exec cat'", started.display()))
        .env("healthcheck_interval", "0")
        .start();
    let mut s = connect(w.port);
    send_head(
        &mut s,
        "POST",
        "/",
        &[("Connection", "keep-alive")],
        Some(5),
    );
    // The head has been read and the handler started (streaming starts it before the
    // body): the request is in flight, not a connection the drain may close.
    wait_for_marker(&started);
    w.signal(SIGTERM);
    use std::io::Write;
    // The body goes out only once the watchdog is draining.
    w.expect_log("Received SIGTERM");
    s.write_all(b"hello").expect("body");
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(
        w.wait_exit(Duration::from_secs(60)).and_then(|s| s.code()),
        Some(0)
    );
}

/// Not PID 1 (a child of the test, as under tini, `docker --init` or a shell): SIGUSR1,
/// SIGUSR2 and SIGALRM are ignored and logged once; SIGHUP and SIGQUIT drain like
/// SIGTERM: the request in flight is answered, the lock file goes, exit 0. On old main
/// each of them killed fwatchdog on the spot (`kill -USR1 <pid>`: exit by signal 10, the
/// client got an empty reply, the lock file stayed).
#[test]
fn hup_and_quit_drain_and_usr1_usr2_alrm_are_ignored_when_not_pid_1() {
    use std::io::Write as _;
    for (stop, signo) in [("SIGHUP", 1), ("SIGQUIT", 3)] {
        let work = TempDir::new();
        let (started, go) = (work.path().join("started"), work.path().join("go"));
        let mut w = watchdog()
            .fprocess(format!(
                "sh -c 'touch {0}; while [ ! -e {1} ]; do sleep 0.01; done; echo done'",
                started.display(),
                go.display()
            ))
            .start();
        assert_ne!(w.pid(), 1);
        let mut s = w.connect();
        send_head(&mut s, "POST", "/", &[], Some(0));
        assert!(eventually(Duration::from_secs(10), || started.exists()));
        for (name, signo) in [("SIGUSR1", 10), ("SIGUSR2", 12), ("SIGALRM", 14)] {
            w.signal(signo);
            w.signal(signo);
            assert!(
                w.wait_log(
                    &format!("Received {name}: ignored"),
                    Duration::from_secs(10)
                ),
                "{name}: {}",
                w.log()
            );
        }
        assert_eq!(w.get("/_/health").status, 200, "{}", w.log());
        w.signal(signo);
        assert!(
            w.wait_log(
                &format!("Received {stop}, shutting down"),
                Duration::from_secs(10)
            ),
            "{stop}: {}",
            w.log()
        );
        assert!(!w.lock_file().exists(), "{stop}: lock file kept");
        std::fs::write(&go, "").expect("go");
        let r = read_response(&mut s, false);
        assert_eq!((r.status, r.text().as_str()), (200, "done\n"), "{stop}");
        let status = w.wait_exit(Duration::from_secs(20)).expect("exit");
        assert_eq!(status.code(), Some(0), "{stop}: {}", w.log());
        let log = w.log();
        for name in ["SIGUSR1", "SIGUSR2", "SIGALRM"] {
            assert_eq!(
                log.matches(&format!("Received {name}")).count(),
                1,
                "{name}: {log}"
            );
        }
        let _ = s.flush();
    }
}
