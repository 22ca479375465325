//! Health, readiness, the lock file and the concurrency limit.

use std::time::Duration;

use crate::util::{eventually, request, send_head, watchdog};

#[test]
fn health_follows_the_lock_file() {
    let w = watchdog().fprocess("cat").start();
    assert!(w.lock_file().exists(), "lock file in TMPDIR");
    let r = w.get("/_/health");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    std::fs::remove_file(w.lock_file()).expect("rm lock");
    assert_eq!(
        w.get("/_/health").status,
        503,
        "a function may delete the lock to mark itself sick"
    );
    assert_eq!(w.get("/_/ready").status, 503);
    std::fs::write(w.lock_file(), "").expect("lock");
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn a_lock_file_already_there_is_a_warning_naming_it() {
    let first = watchdog().fprocess("cat").start();
    assert!(
        !first.log().contains("already exists"),
        "a fresh TMPDIR warns about nothing: {}",
        first.log()
    );
    // A second instance sharing the first one's TMPDIR (and so its lock file).
    let second = watchdog()
        .fprocess("cat")
        .env("TMPDIR", first.tmp.path().to_string_lossy())
        .start();
    let lock = first.lock_file();
    assert!(
        second.log().contains(&format!(
            "warning: lock file {} already exists",
            lock.display()
        )),
        "{}",
        second.log()
    );
    assert!(second.log().contains("TMPDIR"), "{}", second.log());
}

#[test]
fn suppress_lock_means_healthy_without_a_lock_file() {
    let w = watchdog()
        .fprocess("cat")
        .env("suppress_lock", "true")
        .start();
    assert!(!w.lock_file().exists());
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(w.get("/_/ready").status, 200);
}

#[test]
fn probes_answer_get_and_head_only() {
    let w = watchdog().fprocess("cat").start();
    for path in ["/_/health", "/_/ready"] {
        let r = request(w.port, "HEAD", path, &[], b"");
        assert_eq!(r.status, 200, "HEAD {path}");
        for m in ["POST", "PUT", "DELETE"] {
            assert_eq!(request(w.port, m, path, &[], b"").status, 405, "{m} {path}");
        }
    }
    let r = w.get("/_/ready");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[test]
fn ready_path_asks_the_function() {
    let w = watchdog()
        .fprocess("sh -c 'echo ready at $Http_Path'")
        .env("ready_path", "/healthz")
        .start();
    let r = w.get("/_/ready");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ready at /healthz\n");
    let w = watchdog()
        .fprocess("sh -c 'exit 1'")
        .env("ready_path", "/healthz")
        .start();
    assert_eq!(w.get("/_/ready").status, 500);
}

#[test]
fn max_inflight_answers_429_exactly_and_releases_slots() {
    let w = watchdog()
        .fprocess("sh -c 'test -n \"$Http_X_Slow\" && sleep 100; echo ok'")
        .env("max_inflight", "1")
        .start();
    // Hold the only slot with a slow request.
    let mut slow = w.connect();
    send_head(&mut slow, "POST", "/", &[("X-Slow", "1")], Some(0));
    assert!(eventually(Duration::from_secs(30), || w
        .post("/", b"")
        .status
        == 429));
    let r = w.post("/", b"");
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        "Concurrent request limit exceeded. Max concurrent requests: 1\n"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(w.get("/_/ready").status, 429);
    assert_eq!(w.get("/_/health").status, 200, "health is not limited");
    // A client that goes away gives its slot back.
    drop(slow);
    assert!(eventually(Duration::from_secs(30), || w
        .post("/", b"")
        .status
        == 200));
    assert_eq!(w.get("/_/ready").status, 200);
    // Timeouts and failures give it back too.
    let w = watchdog()
        .fprocess("sleep 5")
        .env("max_inflight", "1")
        .env("exec_timeout", "200ms")
        .start();
    for _ in 0..3 {
        assert_eq!(w.post("/", b"").status, 504);
    }
}

/// No clean-up redirects and no slash merging; only dot-segments are resolved (a
/// `Http_Path` of `/a/../b` was passed as is on old main).
#[test]
fn function_paths_are_passed_untouched_but_for_dot_segments() {
    let w = watchdog().fprocess("sh -c 'echo \"$Http_Path\"'").start();
    for (p, want) in [
        ("//double//slash", "//double//slash"),
        ("/a/../b", "/b"),
        ("/a/%2e%2e/b/./c", "/b/c"),
        ("/trailing/", "/trailing/"),
    ] {
        let r = w.get(p);
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.text().trim_end(), want, "{p}");
    }
}

#[test]
fn malformed_requests_get_400_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let w = watchdog().fprocess("cat").start();
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01",
    ] {
        let mut s = w.connect();
        s.write_all(garbage).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let sent = String::from_utf8_lossy(garbage);
        assert!(text.starts_with("HTTP/1.1 400"), "{sent:?}: {text:?}");
    }
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn oversized_heads_get_431_and_long_uris_414() {
    let w = watchdog().fprocess("cat").start();
    let long_uri = format!("/{}", "a".repeat(70 * 1024));
    assert_eq!(w.get(&long_uri).status, 414);
    let big = "b".repeat(300 * 1024);
    let r = request(w.port, "GET", "/", &[("X-Big", &big)], b"");
    assert_eq!(r.status, 431);
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let w = watchdog().fprocess("cat").start();
    let mut s = w.connect();
    for i in 0..20 {
        use std::io::Write;
        let body = format!("request {i}");
        send_head(
            &mut s,
            "POST",
            "/",
            &[("Connection", "keep-alive")],
            Some(body.len()),
        );
        s.write_all(body.as_bytes()).expect("body");
        let r = crate::util::read_response(&mut s, false);
        assert_eq!(r.text(), body);
    }
}

#[test]
fn slowloris_head_is_cut_at_read_timeout() {
    use std::io::{Read, Write};
    let w = watchdog().fprocess("cat").env("read_timeout", "1s").start();
    let mut s = w.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // Cut at read_timeout (1 s), not held until the client's own 60 s read timeout.
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "connection held {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
}
