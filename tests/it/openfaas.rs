//! What a platform team swapping of-watchdog for fwatchdog under the official OpenFaaS
//! templates relies on, with handlers written here that behave as the templates do: a
//! python3-http style app that loads for a while before it listens, a golang-http style
//! upstream that keeps serving for `healthcheck_interval` after SIGTERM and then drains,
//! and the request log lines that tools parse.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::{request, watchdog, Builder, TempDir};

/// The upstream: `python3 -u upstream.py PORT WORKDIR`.
///
/// - Like a python3-http handler that loads a model at import, it does not listen until
///   the file `WORKDIR/go` exists (and writes `WORKDIR/loading` while it waits).
/// - Like the golang-http and golang-middleware templates' `main.go`, on SIGTERM it
///   logs `SIGTERM: no connections in: <d>`, keeps serving for its `healthcheck_interval`
///   (else `write_timeout`, else 10 s, read as the template reads them), then stops and
///   exits 0, writing `WORKDIR/term_at` and `WORKDIR/exited`.
/// - `GET /` answers `200 OK` with 20 bytes; `GET /made` answers `201 Made` (its own
///   reason phrase) with 5 bytes.
const UPSTREAM_PY: &str = r#"
import os, re, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, work = int(sys.argv[1]), sys.argv[2]

def mark(name, text=""):
    tmp = os.path.join(work, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(work, name))

def go_duration(value, fallback):
    # The template's parseIntOrDurationValue: whole seconds, else a Go duration.
    if value.isdigit():
        return float(value)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return fallback
    return sum(float(n) * units[u] for n, u in parts)

write_timeout = go_duration(os.environ.get("write_timeout", ""), 10.0)
health_interval = go_duration(os.environ.get("healthcheck_interval", ""), write_timeout)

while not os.path.exists(os.path.join(work, "go")):
    if not os.path.exists(os.path.join(work, "loading")):
        mark("loading")
    time.sleep(0.02)

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path == "/made":
            self.send_response(201, "Made")
            body = b"made\n"
        else:
            self.send_response(200)
            body = b"twenty bytes, exact\n"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", port), H)

def on_term(sig, frame):
    mark("term_at", repr(time.time()))
    sys.stderr.write("[entrypoint] SIGTERM: no connections in: %gs\n" % health_interval)
    def later():
        time.sleep(health_interval)
        server.shutdown()
    threading.Thread(target=later, daemon=True).start()

signal.signal(signal.SIGTERM, on_term)
server.serve_forever()
mark("exited", repr(time.time()))
sys.stderr.write("[entrypoint] Exiting.\n")
"#;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The python upstream, its port and its folder.
struct App {
    port: u16,
    work: TempDir,
    script: PathBuf,
}

impl App {
    fn new() -> App {
        let work = TempDir::new();
        let script = work.path().join("upstream.py");
        std::fs::write(&script, UPSTREAM_PY).expect("write upstream.py");
        App {
            port: free_port(),
            work,
            script,
        }
    }

    /// Lets it listen (its "import" is done).
    fn go(&self) {
        std::fs::write(self.work.path().join("go"), "").expect("write go");
    }

    /// fwatchdog in http mode in front of it, as the template's Dockerfile sets it up.
    fn watchdog(&self) -> Builder {
        watchdog()
            .mode("http")
            .fprocess(format!(
                "python3 -u {} {} {}",
                self.script.display(),
                self.port,
                self.work.path().display()
            ))
            .env("upstream_url", format!("http://127.0.0.1:{}", self.port))
            .env("prefix_logs", "false")
    }
}

/// of-watchdog 0.11.6 logs the upstream's status line and go-units' human size:
/// `GET / - 200 OK - ContentLength: 20B (0.0030s)`. On the old code the line read
/// `GET / - 200 - ContentLength: 20 (…)`: no reason phrase, a bare byte count.
#[test]
fn http_request_lines_carry_the_upstream_status_line_and_a_human_size() {
    let app = App::new();
    app.go();
    let w = app.watchdog().env("log_callid", "true").start();
    let r = request(w.port, "GET", "/", &[("X-Call-Id", "c-1")], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "twenty bytes, exact\n")
    );
    let r = request(w.port, "GET", "/made", &[], b"");
    assert_eq!(r.status, 201);
    assert!(
        w.wait_log("GET /made - ", Duration::from_secs(10)),
        "{}",
        w.log()
    );
    let log = w.log();
    let line = |prefix: &str| {
        log.lines()
            .find_map(|l| l.get(20..).filter(|l| l.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{log}"))
            .to_owned()
    };
    let root = line("GET / - ");
    let made = line("GET /made - ");
    let shape = regex::Regex::new(r"^\(\d+\.\d{4}s\)").expect("regex");
    let rest = root
        .strip_prefix("GET / - 200 OK - ContentLength: 20B ")
        .unwrap_or_else(|| panic!("{root:?}"));
    assert_eq!(
        rest.strip_suffix(" [c-1]").map(|d| shape.is_match(d)),
        Some(true),
        "{root:?}"
    );
    let rest = made
        .strip_prefix("GET /made - 201 Made - ContentLength: 5B ")
        .unwrap_or_else(|| panic!("{made:?}"));
    assert_eq!(
        rest.strip_suffix(" [none]").map(|d| shape.is_match(d)),
        Some(true),
        "{made:?}"
    );
}
