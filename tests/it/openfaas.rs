//! What a platform team swapping of-watchdog for fwatchdog under the official OpenFaaS
//! templates relies on, with handlers written here that behave as the templates do: a
//! python3-http style app that loads for a while before it listens, a golang-http style
//! upstream that keeps serving for `healthcheck_interval` after SIGTERM and then drains,
//! and the request log lines that tools parse.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{self, eventually, request, watchdog, Builder, TempDir};

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
            port: util::child_port(),
            work,
            script,
        }
    }

    /// Lets it listen (its "import" is done).
    fn go(&self) {
        std::fs::write(self.work.path().join("go"), "").expect("write go");
    }

    fn marker(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.work.path().join(name)).ok()
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

/// A python3-http handler that loads a model at import listens late. With the default
/// `startup_timeout=0` fwatchdog waits as long as that takes: health and function
/// requests answer 503 (with `Retry-After`) meanwhile, and `exec_timeout` (1 s here)
/// bounds requests only. On the old code fwatchdog gave up after `exec_timeout` and
/// exited 1 (`did not become ready within 1s`): the pod crash-looped.
#[test]
fn a_slow_starting_upstream_is_waited_for_with_503s_meanwhile() {
    let app = App::new();
    let port = util::child_port();
    let builder = app
        .watchdog()
        .env("exec_timeout", "1s")
        .env("port", port.to_string());
    let starting = std::thread::spawn(move || builder.start());
    assert!(
        eventually(Duration::from_secs(20), || app.marker("loading").is_some()),
        "the app never started loading"
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    // Longer than exec_timeout, which used to bound the start. Not a synchronisation:
    // whatever the machine's speed, this much real time has passed.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !starting.is_finished(),
        "fwatchdog gave up on a loading upstream"
    );
    let health = request(port, "GET", "/_/health", &[], b"");
    assert_eq!(health.status, 503);
    let r = request(port, "POST", "/", &[], b"too early");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    app.go();
    let w = starting.join().expect("watchdog started");
    let r = request(w.port, "GET", "/", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "twenty bytes, exact\n")
    );
    assert_eq!(request(w.port, "GET", "/_/health", &[], b"").status, 200);
    let log = w.log();
    assert!(
        log.contains(&format!(
            "Waiting as long as it takes (startup_timeout=0) for the upstream at http://127.0.0.1:{}/ to accept connections",
            app.port
        )),
        "{log}"
    );
    assert!(log.contains("POST / - 503 "), "{log}");
}

/// The golang-http and golang-middleware templates keep serving for their
/// `healthcheck_interval` after SIGTERM, then drain and exit. With the default
/// `upstream_stop_grace` (healthcheck_interval + 5s) they exit on their own. SIGINT
/// skips fwatchdog's own wait, so only the template's 6 s is waited for. On the old code
/// the upstream got SIGKILL 5 s after SIGTERM, mid-wait, and the stop logged a SIGKILL.
#[test]
fn a_go_template_upstream_exits_on_its_own_after_its_healthcheck_interval() {
    let app = App::new();
    app.go();
    let mut w = app.watchdog().env("healthcheck_interval", "6s").start();
    assert_eq!(request(w.port, "GET", "/", &[], b"").status, 200);
    w.signal(2);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("fwatchdog exited");
    let log = w.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("[entrypoint] SIGTERM: no connections in: 6s"),
        "{log}"
    );
    assert!(log.contains("[entrypoint] Exiting."), "{log}");
    assert!(
        app.marker("exited").is_some(),
        "the upstream did not exit on its own:\n{log}"
    );
    assert!(!log.contains("SIGKILL"), "{log}");
}

/// A shorter `upstream_stop_grace` cuts such an upstream off: SIGKILL, said in the log.
#[test]
fn upstream_stop_grace_bounds_the_upstream_s_exit() {
    let app = App::new();
    app.go();
    let mut w = app
        .watchdog()
        .env("healthcheck_interval", "6s")
        .env("upstream_stop_grace", "1s")
        .start();
    assert!(w.log().contains("upstream_stop_grace=1s"), "{}", w.log());
    w.signal(2);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("fwatchdog exited");
    let log = w.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("upstream still running 1s after SIGTERM: SIGKILL"),
        "{log}"
    );
    assert!(app.marker("exited").is_none(), "{log}");
}

/// The classic templates never set `mode` (the classic watchdog has none): swapped onto
/// fwatchdog they would silently get streaming. With `mode` unset the startup log says
/// which mode runs and what a classic image needs; a set `mode` says nothing more. On
/// the old code there was no such line.
#[test]
fn an_unset_mode_is_named_in_the_startup_log_with_the_classic_advice() {
    let w = watchdog().fprocess("cat").start();
    let line = "mode is not set: running mode=streaming, of-watchdog's default; an image built for the classic watchdog needs mode=classic";
    assert!(w.log().contains(line), "{}", w.log());
    let listening = w.log().find("Listening on port").expect("listening");
    assert!(w.log().find(line).expect("line") < listening, "{}", w.log());
    let set = watchdog().mode("streaming").fprocess("cat").start();
    assert!(!set.log().contains("mode is not set"), "{}", set.log());
}
