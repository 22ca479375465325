//! The bounded line in front of `max_inflight` (`max_queue`, `queue_timeout`),
//! and the deadlines handlers are told (`FWATCHDOG_DEADLINE_MS`, `X-Deadline-Ms`) and
//! given (`exec_kill_grace`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{self, eventually, request, send_head, watchdog, Builder, TempDir, Watchdog};

/// A handler that waits until `gate` exists, then answers `ok`.
fn gated(gate: &Path) -> String {
    format!(
        "sh -c 'while [ ! -e {} ]; do sleep 0.01; done; echo ok'",
        gate.display()
    )
}

/// A watchdog with metrics on, whose handlers wait for a gate file.
fn gated_watchdog(env: &[(&str, &str)]) -> (Watchdog, PathBuf) {
    let tmp = TempDir::new();
    let gate = tmp.path().join("gate");
    let mut b: Builder = watchdog().env("metrics_port", "0").fprocess(gated(&gate));
    for (k, v) in env {
        b = b.env(k, v);
    }
    let w = b.tmp(tmp).start();
    (w, gate)
}

/// One sample from the metrics port, e.g. `fwatchdog_queue_depth`.
fn metric(w: &Watchdog, name: &str) -> Option<f64> {
    let port = w.metrics_port.expect("metrics on");
    let text = request(port, "GET", "/metrics", &[], b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn wait_metric(w: &Watchdog, name: &str, want: f64) -> bool {
    eventually(Duration::from_secs(30), || metric(w, name) == Some(want))
}

/// `n` concurrent GETs, each on its own connection and thread.
fn burst(port: u16, n: usize) -> Vec<std::thread::JoinHandle<util::Resp>> {
    (0..n)
        .map(|_| std::thread::spawn(move || request(port, "GET", "/", &[], b"")))
        .collect()
}

#[test]
fn a_burst_of_3x_max_inflight_all_succeeds_with_the_queue_and_gets_429s_without() {
    // With the queue: 2 run, 4 wait in line, all 6 succeed once the gate opens.
    let (w, gate) = gated_watchdog(&[("max_inflight", "2"), ("max_queue", "4")]);
    let calls = burst(w.port, 6);
    assert!(wait_metric(&w, "fwatchdog_queue_depth", 4.0), "{}", w.log());
    assert!(wait_metric(&w, "fwatchdog_handler_starts_total", 2.0));
    std::fs::write(&gate, b"").expect("open the gate");
    let statuses: Vec<u16> = calls
        .into_iter()
        .map(|c| c.join().expect("call").status)
        .collect();
    assert_eq!(statuses, [200; 6], "{}", w.log());
    assert_eq!(metric(&w, "fwatchdog_queue_depth"), Some(0.0));
    assert_eq!(metric(&w, "fwatchdog_queue_wait_seconds_count"), Some(4.0));
    assert_eq!(metric(&w, "fwatchdog_handler_starts_total"), Some(6.0));

    // Without: the same burst gets 429s for all but the 2 that run.
    let (w, gate) = gated_watchdog(&[("max_inflight", "2")]);
    let calls = burst(w.port, 6);
    assert!(wait_metric(&w, "fwatchdog_handler_starts_total", 2.0));
    assert!(eventually(Duration::from_secs(30), || {
        metric(&w, "http_requests_total{code=\"429\",method=\"get\"}") == Some(4.0)
    }));
    std::fs::write(&gate, b"").expect("open the gate");
    let resps: Vec<util::Resp> = calls.into_iter().map(|c| c.join().expect("call")).collect();
    let ok = resps.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&util::Resp> = resps.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, limited.len()), (2, 4));
    for r in limited {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(
            r.text(),
            "Concurrent request limit exceeded. Max concurrent requests: 2\n"
        );
    }
}

#[test]
fn a_full_line_is_429_at_once_and_a_long_wait_is_429_at_queue_timeout() {
    let (w, gate) = gated_watchdog(&[
        ("max_inflight", "1"),
        ("max_queue", "1"),
        ("queue_timeout", "400ms"),
    ]);
    let running = burst(w.port, 1);
    assert!(wait_metric(&w, "fwatchdog_handler_starts_total", 1.0));
    let t = Instant::now();
    let queued = burst(w.port, 1);
    assert!(wait_metric(&w, "fwatchdog_queue_depth", 1.0));
    // The line is full: no waiting.
    let full = w.get("/");
    assert_eq!(full.status, 429);
    assert_eq!(full.header("retry-after"), Some("1"));
    let timed_out = queued
        .into_iter()
        .next()
        .expect("one")
        .join()
        .expect("call");
    assert_eq!(timed_out.status, 429);
    assert_eq!(timed_out.header("retry-after"), Some("1"));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(metric(&w, "fwatchdog_queue_depth"), Some(0.0));
    assert_eq!(metric(&w, "fwatchdog_queue_wait_seconds_count"), Some(1.0));
    std::fs::write(&gate, b"").expect("open the gate");
    let first = running
        .into_iter()
        .next()
        .expect("one")
        .join()
        .expect("call");
    assert_eq!(first.status, 200);
    assert_eq!(metric(&w, "fwatchdog_handler_starts_total"), Some(1.0));
}

#[test]
fn a_queued_request_whose_client_leaves_gives_its_place_back() {
    let (w, gate) = gated_watchdog(&[
        ("max_inflight", "1"),
        ("max_queue", "1"),
        ("queue_timeout", "60s"),
    ]);
    let running = burst(w.port, 1);
    assert!(wait_metric(&w, "fwatchdog_handler_starts_total", 1.0));
    let mut leaver = w.connect();
    send_head(&mut leaver, "GET", "/", &[], Some(0));
    assert!(wait_metric(&w, "fwatchdog_queue_depth", 1.0));
    drop(leaver);
    assert!(
        wait_metric(&w, "fwatchdog_queue_depth", 0.0),
        "the gone client still holds its place"
    );
    // Its place is free again: the next request waits instead of getting a 429.
    let next = burst(w.port, 1);
    assert!(wait_metric(&w, "fwatchdog_queue_depth", 1.0));
    std::fs::write(&gate, b"").expect("open the gate");
    for c in running.into_iter().chain(next) {
        assert_eq!(c.join().expect("call").status, 200);
    }
    // The one that left never ran a handler, and no slot leaked.
    assert_eq!(metric(&w, "fwatchdog_handler_starts_total"), Some(2.0));
    assert_eq!(w.get("/").status, 200);
    assert_eq!(w.get("/_/ready").status, 200);
}

#[test]
fn max_queue_without_max_inflight_or_a_zero_queue_timeout_is_a_startup_error() {
    for env in [
        &[("max_queue", "3")][..],
        &[
            ("max_inflight", "1"),
            ("max_queue", "3"),
            ("queue_timeout", "0"),
        ][..],
        &[("exec_kill_grace", "-1s")][..],
    ] {
        let mut b = watchdog().fprocess("cat");
        for (k, v) in env {
            b = b.env(k, v);
        }
        let (status, out) = b.run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{env:?}: {out}");
        assert!(out.contains(env[env.len() - 1].0), "{env:?}: {out}");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[test]
fn fork_handlers_see_their_deadline() {
    for mode in ["streaming", "serializing", "classic"] {
        let w = watchdog()
            .mode(mode)
            .env("exec_timeout", "5s")
            .fprocess("sh -c 'echo $FWATCHDOG_DEADLINE_MS'")
            .start();
        let before = now_ms();
        let r = w.post("/", b"");
        assert_eq!(r.status, 200, "{mode}");
        let deadline: i64 = r.text().trim().parse().expect("ms since the epoch");
        let after = now_ms();
        assert!(
            deadline >= before + 5000 - 50 && deadline <= after + 5000 + 50,
            "{mode}: {deadline} not 5 s after {before}..{after}"
        );
    }
    // write_timeout is the real limit when it is the shorter one.
    let w = watchdog()
        .env("exec_timeout", "60s")
        .env("write_timeout", "2s")
        .fprocess("sh -c 'echo $FWATCHDOG_DEADLINE_MS'")
        .start();
    let before = now_ms();
    let deadline: i64 = w.post("/", b"").text().trim().parse().expect("ms");
    assert!(deadline <= now_ms() + 2000 + 50 && deadline >= before + 1000);
}

#[test]
fn exec_kill_grace_sends_sigterm_first_then_sigkill() {
    for mode in ["streaming", "serializing"] {
        // A handler that cleans up on SIGTERM gets to do it.
        let w = watchdog()
            .mode(mode)
            .env("exec_timeout", "300ms")
            .env("exec_kill_grace", "5s")
            .fprocess("sh -c 'trap \"echo cleaned up >&2; exit 0\" TERM; sleep 100 & wait'")
            .start();
        let r = w.post("/", b"");
        assert_eq!(r.status, 504, "{mode}");
        assert!(
            w.wait_log("stderr: cleaned up", util::PATIENCE),
            "{mode}: {}",
            w.log()
        );

        // One that ignores SIGTERM is SIGKILLed when the grace is over.
        let tmp = TempDir::new();
        let pidfile = tmp.path().join("pid");
        let w = watchdog()
            .mode(mode)
            .env("exec_timeout", "300ms")
            .env("exec_kill_grace", "1s")
            .fprocess(format!(
                "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 100'",
                pidfile.display()
            ))
            .start();
        // The group cannot end before exec_timeout + the grace after the request was
        // sent: a lower bound that holds however late the 504 reaches us on a loaded
        // machine (timing from the answer did not: a late answer shortened it).
        let sent = Instant::now();
        let r = w.post("/", b"");
        assert_eq!(r.status, 504, "{mode}");
        let pgid = util::read_pid(&pidfile);
        util::assert_group_ends(
            pgid,
            Duration::from_secs(5),
            &format!("{mode}: after the grace"),
        );
        assert!(
            sent.elapsed() >= Duration::from_millis(1300),
            "{mode}: killed before exec_timeout + exec_kill_grace"
        );
    }
}

#[test]
fn without_a_grace_the_group_is_killed_at_once() {
    let tmp = TempDir::new();
    let pidfile = tmp.path().join("pid");
    let w = watchdog()
        .env("exec_timeout", "300ms")
        .fprocess(format!(
            "sh -c 'trap \"echo cleaned up >&2; exit 0\" TERM; echo $$ > {}; sleep 100 & wait'",
            pidfile.display()
        ))
        .start();
    assert_eq!(w.post("/", b"").status, 504);
    util::assert_handler_group_ends(&pidfile, Duration::from_secs(2), "no grace");
    assert!(!w.log().contains("stderr: cleaned up"), "{}", w.log());
}

/// A python upstream that answers with the `X-Deadline-Ms` it was sent.
const UPSTREAM: &str = r#"import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("X-Deadline-Ms") or "none").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn http_upstreams_get_x_deadline_ms_and_a_client_cannot_set_it() {
    let tmp = TempDir::new();
    let script = tmp.path().join("upstream.py");
    std::fs::write(&script, UPSTREAM).expect("write");
    let port = crate::util::child_port();
    let w = watchdog()
        .mode("http")
        .env("exec_timeout", "7s")
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .fprocess(format!("python3 -u {} {port}", script.display()))
        .start();
    let before = now_ms();
    let r = request(w.port, "GET", "/", &[("X-Deadline-Ms", "1")], b"");
    assert_eq!(r.status, 200, "{}", w.log());
    let deadline: i64 = r.text().parse().expect("ms since the epoch");
    assert!(
        deadline >= before + 7000 - 50 && deadline <= now_ms() + 7000 + 50,
        "{deadline} vs {before}"
    );
}
