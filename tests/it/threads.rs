//! `--threads N`: a multi-thread runtime serves the same requests the same way. The
//! reaper and the signals are the parts that could break across threads: statuses must
//! reach the request that started the handler, no zombie may stay, SIGTERM must still
//! stop the server.

use std::time::Duration;

use crate::util::{self, eventually, request, skip, watchdog, TempDir};

/// Threads of a process, from /proc.
fn thread_count(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line")
}

/// Runs `per_client` requests on each of `clients` threads at once; `check` sees each
/// client's index, the request's index and the response.
fn hammer(clients: usize, per_client: usize, check: impl Fn(usize, usize) + Sync) {
    std::thread::scope(|s| {
        for c in 0..clients {
            let check = &check;
            s.spawn(move || {
                for i in 0..per_client {
                    check(c, i);
                }
            });
        }
    });
}

#[test]
fn two_threads_run_fork_handlers_and_deliver_each_exit_status_to_its_request() {
    let tmp = TempDir::new();
    // Echoes the body, then exits with the code the request asked for.
    let handler = tmp.script("handler.sh", "#!/bin/sh\ncat\nexit \"${Http_X_Code:-0}\"\n");
    let mut w = watchdog()
        .mode("serializing")
        .fprocess(handler.display().to_string())
        .arg("--threads")
        .arg("2")
        .start();
    // main + 2 workers + the log writer; one thread would make 2.
    assert!(
        thread_count(w.pid()) >= 4,
        "--threads 2 should run worker threads: {} threads\n{}",
        thread_count(w.pid()),
        w.log()
    );
    hammer(8, 12, |c, i| {
        let body = format!("client {c} request {i}\n");
        let code = ((c + i) % 3).to_string(); // 0, 1 or 2
        let r = request(
            w.port,
            "POST",
            "/",
            &[("X-Code", code.as_str())],
            body.as_bytes(),
        );
        if code == "0" {
            assert_eq!(r.status, 200, "client {c} request {i}: {}", r.text());
            assert_eq!(r.text(), body);
        } else {
            assert_eq!(r.status, 500, "client {c} request {i}: {}", r.text());
            assert!(
                r.text().contains(&format!("exit status {code}")),
                "client {c} request {i} with code {code}: {}",
                r.text()
            );
        }
    });
    assert!(
        eventually(Duration::from_secs(30), || util::zombie_children(w.pid())
            .is_empty()),
        "zombies left: {:?}",
        util::zombie_children(w.pid())
    );
    w.signal(15);
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.log());
}

#[test]
fn two_threads_stream_bodies_exactly() {
    let mut w = watchdog()
        .mode("streaming")
        .fprocess("cat")
        .env("threads", "2")
        .start();
    assert!(thread_count(w.pid()) >= 4, "{}", w.log());
    hammer(8, 6, |c, i| {
        let body = util::random_bytes(64 * 1024 + c * 1000 + i);
        let r = request(w.port, "POST", "/", &[], &body);
        assert_eq!(r.status, 200, "client {c} request {i}");
        assert_eq!(
            util::sha256(&r.body),
            util::sha256(&body),
            "client {c} request {i}"
        );
    });
    w.signal(15);
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.log());
}

/// A small upstream: answers every POST with its body.
const ECHO_PY: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn two_threads_proxy_http_mode() {
    if !util::have("python3") {
        let why = "python3 not found";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        return skip("two_threads_proxy_http_mode", why);
    }
    let tmp = TempDir::new();
    let script = tmp.path().join("echo.py");
    std::fs::write(&script, ECHO_PY).expect("write upstream");
    let port = crate::util::child_port();
    let mut w = watchdog()
        .mode("http")
        .fprocess(format!("python3 {} {port}", script.display()))
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .arg("--threads=2")
        .start();
    assert!(thread_count(w.pid()) >= 4, "{}", w.log());
    assert!(
        util::eventually_ok(Duration::from_secs(30), || Ok(w
            .try_get("/_/health")?
            .status
            == 200)),
        "upstream never healthy:\n{}",
        w.log()
    );
    hammer(8, 25, |c, i| {
        let body = format!("client {c} request {i}");
        let r = request(w.port, "POST", "/", &[], body.as_bytes());
        assert_eq!(r.status, 200, "client {c} request {i}: {}", r.text());
        assert_eq!(r.text(), body);
    });
    w.signal(15);
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.log());
}
