//! http mode: the watchdog in front of a real upstream server that the
//! test starts as `fprocess` — a small python3 stdlib server, waitress for WSGI, python
//! `websockets` for the tunnel, node's `http` module when `node` exists. Tests that need
//! an optional tool check for it and say clearly when they skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{self, eventually, json, request, skip, watchdog, Builder, TempDir, PATIENCE};

/// The upstream for most tests: `python3 -u upstream.py PORT WORKDIR`. It writes marker
/// files into WORKDIR (`pid`, `<mark>.started`, `<mark>.done`, `<mark>.cancelled`,
/// `term_at`) so tests can see what it saw, and when.
const UPSTREAM_PY: &str = r#"
import hashlib, json, os, select, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

port, work = int(sys.argv[1]), sys.argv[2]

def mark(name, text=""):
    tmp = os.path.join(work, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(work, name))

def on_term(sig, frame):
    mark("term_at", repr(time.time()))
    if os.environ.get("SLOW_TERM") == "1":
        time.sleep(1)
        mark("term_done", repr(time.time()))
    if os.environ.get("IGNORE_TERM") != "1":
        os._exit(0)

signal.signal(signal.SIGTERM, on_term)
mark("pid", str(os.getpid()))
gate = os.environ.get("GATE_FILE")
while gate and not os.path.exists(gate):
    time.sleep(0.02)

connections = set()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        connections.add(self.client_address)

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, body, ctype="text/plain", extra=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def peer_closed(self):
        r, _, _ = select.select([self.connection], [], [], 0)
        if not r:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def route(self):
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        name = url.path.rsplit("/", 1)[-1]
        if name == "echo":
            data = self.read_body()
            # A HEAD's answer has no body: what it carried is told here.
            mark("echo." + self.command, str(len(data)))
            out = {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "len": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            self.reply(200, json.dumps(out), "application/json", [("X-Seen-Method", self.command)])
        elif name == "hop":
            self.reply(200, "hop", extra=[("Connection", "X-Hop"), ("X-Hop", "1"),
                                          ("Keep-Alive", "timeout=5"), ("Upgrade", "foo"),
                                          ("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")])
        elif name == "slow":
            ms, tag = int(q.get("ms", "1000")), q.get("mark", "slow")
            mark(tag + ".started", repr(time.time()))
            end = time.time() + ms / 1000.0
            while time.time() < end:
                if self.peer_closed():
                    mark(tag + ".cancelled", repr(time.time()))
                    self.close_connection = True
                    return
                time.sleep(0.01)
            # Marked before the answer is sent: once the client has the answer, the
            # watchdog may drain and SIGTERM us before a later mark was written.
            mark(tag + ".done", repr(time.time()))
            self.reply(200, "slept %d" % ms)
        elif name == "sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.chunk(b"data: one\n\n")
            # The second event waits for the client to say it saw the first: the first
            # reached it while the stream was still open (no clock involved).
            release = os.path.join(work, "sse.release")
            end = time.time() + 60
            while not os.path.exists(release) and time.time() < end:
                time.sleep(0.01)
            self.chunk(b"data: two\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif name == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif name == "exit":
            self.reply(200, "bye", extra=[("Connection", "close")])
            self.close_connection = True
            threading.Timer(0.2, os._exit, [int(q.get("code", "7"))]).start()
        elif name == "stop-listening":
            self.reply(200, "no longer listening", extra=[("Connection", "close")])
            self.close_connection = True
            threading.Thread(target=server.shutdown).start()
        elif name == "ready":
            gate = os.environ.get("READY_GATE")
            if gate and not os.path.exists(gate):
                self.reply(503, "not yet")
            else:
                self.reply(200, "ready")
        elif name == "connections":
            self.reply(200, str(len(connections)))
        else:
            self.reply(404, "no route " + url.path)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_PURGE = route

server = ThreadingHTTPServer(("127.0.0.1", port), H)
server.daemon_threads = True
server.serve_forever()
server.server_close()
while True:
    time.sleep(1)
"#;

const WSGI_PY: &str = r#"
import hashlib, json, sys
from waitress import serve

def app(environ, start):
    n = environ.get("CONTENT_LENGTH") or None
    data = environ["wsgi.input"].read(int(n)) if n else b""
    body = json.dumps({"content_length": n, "len": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4)
"#;

// Written for both the long-standing API (Debian 12's websockets 10.4) and the current one.
const WS_SERVER_PY: &str = r#"
import asyncio, sys
import websockets

async def echo(ws, path=None):
    async for msg in ws:
        if msg == "close-me":
            await ws.close(4001, "bye")
            return
        await ws.send(msg)

async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1])):
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
"#;

const WS_CLIENT_PY: &str = r#"
import asyncio, sys, time
import websockets
from websockets.exceptions import ConnectionClosed

async def main(url):
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello", "text echo"
        await ws.send(b"\x00\x01\xffbin")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\xffbin", "binary echo"
        big = bytes(range(256)) * 4000
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 5) == big, "large binary echo"
        await ws.send("close-me")
        try:
            await asyncio.wait_for(ws.recv(), 5)
            print("server close did not arrive")
            sys.exit(1)
        except ConnectionClosed as e:
            print("server closed", e.rcvd.code, e.rcvd.reason)

    ws = await websockets.connect(url, open_timeout=10)
    await ws.send("ping")
    assert await asyncio.wait_for(ws.recv(), 5) == "ping"
    t = time.time()
    await ws.close(1000, "done")
    print("client close answered", ws.close_code, "in %.2fs" % (time.time() - t))

asyncio.run(main(sys.argv[1]))
"#;

const NODE_JS: &str = r#"
const http = require('http');
let sockets = 0;
const held = [];
const srv = http.createServer((req, res) => {
  if (req.url === '/ndjson') {
    res.writeHead(200, {'content-type': 'application/x-ndjson'});
    res.write('{"n":1}\n');
    held.push(res);
    return;
  }
  if (req.url === '/release') {
    for (const r of held.splice(0)) { r.write('{"n":2}\n'); r.end('{"n":3}\n'); }
    res.end('released');
    return;
  }
  if (req.url === '/sockets') { res.end(String(sockets)); return; }
  let n = 0;
  req.on('data', c => n += c.length);
  req.on('end', () => res.end(JSON.stringify({n, cl: req.headers['content-length'] || null})));
});
srv.on('connection', () => sockets++);
srv.keepAliveTimeout = 5000;
srv.listen(+process.argv[2], '127.0.0.1');
"#;

/// A python upstream and where it leaves its marker files.
struct Upstream {
    port: u16,
    work: TempDir,
    script: PathBuf,
}

impl Upstream {
    fn new() -> Upstream {
        let work = TempDir::new();
        let script = work.path().join("upstream.py");
        std::fs::write(&script, UPSTREAM_PY).expect("write upstream.py");
        Upstream {
            port: util::child_port(),
            work,
            script,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A watchdog in http mode with this upstream as fprocess.
    fn watchdog(&self) -> Builder {
        watchdog()
            .mode("http")
            .fprocess(format!(
                "python3 -u {} {} {}",
                self.script.display(),
                self.port,
                self.work.path().display()
            ))
            .env("upstream_url", self.url())
    }

    fn marker(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.work.path().join(name)).ok()
    }

    /// Waits for `timeout`, but at least [`PATIENCE`] (a marker that must come).
    fn wait_marker(&self, name: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        eventually(timeout.max(PATIENCE), || {
            found = self.marker(name);
            found.is_some()
        });
        found
    }

    fn pid(&self) -> i32 {
        self.wait_marker("pid", Duration::from_secs(10))
            .expect("upstream pid")
            .trim()
            .parse()
            .expect("pid")
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; it is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn has_python_module(m: &str) -> bool {
    Command::new("python3")
        .arg("-c")
        .arg(format!("import {m}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The value of a header the upstream saw, from `/echo`'s answer.
fn seen<'a>(v: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().expect("value"))
        .collect()
}

/// Polls health until it answers `status` (the listener may not be bound yet).
fn health_becomes(port: u16, status: u16, timeout: Duration) -> bool {
    eventually(timeout, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && request(port, "GET", "/_/health", &[], b"").status == status
    })
}

#[test]
fn health_fails_and_no_lock_file_until_the_upstream_listens() {
    let up = Upstream::new();
    let gate = up.work.path().join("gate");
    let tmp = TempDir::new();
    let lock = tmp.path().join(".lock");
    let port = util::child_port();
    let builder = up
        .watchdog()
        .env("GATE_FILE", gate.display().to_string())
        .env("port", port.to_string())
        .tmp(tmp);
    let starting = std::thread::spawn(move || builder.start());

    assert!(
        health_becomes(port, 503, Duration::from_secs(10)),
        "health should answer 503 while the upstream is not listening"
    );
    up.wait_marker("pid", Duration::from_secs(10))
        .expect("upstream started");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(port, "GET", "/_/health", &[], b"").status, 503);
    assert_eq!(request(port, "GET", "/_/ready", &[], b"").status, 503);
    assert!(
        !lock.exists(),
        "lock file written before the upstream listens"
    );
    assert!(
        !starting.is_finished(),
        "Listening line logged before the upstream listens"
    );

    std::fs::write(&gate, "").expect("open gate");
    let w = starting.join().expect("watchdog start");
    assert!(w.lock_file().exists());
    assert_eq!(w.get("/_/health").status, 200);
    let log = w.log();
    let ready_at = log.find("Upstream is ready").expect("ready line");
    assert!(
        log.find("Writing lock-file").expect("lock line") > ready_at,
        "{log}"
    );
    assert!(
        log.find("Listening on port").expect("listening line") > ready_at,
        "{log}"
    );
}

#[test]
fn with_ready_path_health_waits_for_a_2xx_there() {
    let up = Upstream::new();
    let gate = up.work.path().join("ready-gate");
    let tmp = TempDir::new();
    let lock = tmp.path().join(".lock");
    let port = util::child_port();
    let builder = up
        .watchdog()
        .env("READY_GATE", gate.display().to_string())
        .env("ready_path", "/ready")
        .env("port", port.to_string())
        .tmp(tmp);
    let starting = std::thread::spawn(move || builder.start());
    assert!(health_becomes(port, 503, Duration::from_secs(10)));
    // The upstream accepts connections but answers 503 on /ready: still not ready.
    assert!(eventually(Duration::from_secs(30), || TcpStream::connect(
        ("127.0.0.1", up.port)
    )
    .is_ok()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(port, "GET", "/_/health", &[], b"").status, 503);
    assert!(!lock.exists());
    std::fs::write(&gate, "").expect("open gate");
    let w = starting.join().expect("start");
    assert_eq!(w.get("/_/health").status, 200);
    let r = w.get("/_/ready");
    assert_eq!((r.status, r.text().as_str()), (200, "ready"));
}

#[test]
fn never_ready_upstream_exits_1_with_a_message_and_is_killed() {
    let work = TempDir::new();
    let pidfile = work.path().join("pid");
    let port = util::child_port();
    let started = Instant::now();
    let (status, out) = watchdog()
        .mode("http")
        .fprocess(format!(
            "sh -c 'echo $$ > {}; exec sleep 60'",
            pidfile.display()
        ))
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .env("startup_timeout", "1s")
        .run(Duration::from_secs(50));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("did not become ready within startup_timeout=1s"),
        "{out}"
    );
    assert!(!out.contains("Listening on port"), "{out}");
    // Long before the upstream's 60 s sleep ends.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        eventually(Duration::from_secs(30), || !alive(pid)),
        "upstream {pid} left running"
    );
}

#[test]
fn upstream_that_exits_during_startup_is_exit_1() {
    let (status, out) = watchdog()
        .mode("http")
        .fprocess("sh -c 'exit 3'")
        .env(
            "upstream_url",
            format!("http://127.0.0.1:{}", util::child_port()),
        )
        .run(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("exited before it became ready: exit status 3"),
        "{out}"
    );
}

#[test]
fn proxies_path_query_methods_and_headers() {
    let up = Upstream::new();
    let w = up.watchdog().start();

    let r = request(
        w.port,
        "GET",
        "/echo/deeper/../echo?x=1&y=%20two&x=3",
        &[
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("X-Custom", "kept"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(
        v["path"], "/echo/echo?x=1&y=%20two&x=3",
        "dot-segments resolved, query untouched"
    );
    // The client's Host (util sends `127.0.0.1`), not the upstream's `127.0.0.1:<port>`.
    assert_eq!(seen(&v, "host"), ["127.0.0.1"]);
    assert_eq!(seen(&v, "x-custom"), ["kept"]);
    assert_eq!(seen(&v, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(seen(&v, hop).is_empty(), "{hop} reached the upstream: {v}");
    }
    assert!(
        seen(&v, "connection")
            .iter()
            .all(|c| !c.to_lowercase().contains("x-hop")),
        "{v}"
    );
    let secs: f64 = r
        .header("x-duration-seconds")
        .expect("X-Duration-Seconds")
        .parse()
        .expect("secs");
    assert!(secs > 0.0 && secs < 5.0);

    // No X-Forwarded-For from the client: ours alone.
    let v = json(&w.get("/echo"));
    assert_eq!(seen(&v, "x-forwarded-for"), ["127.0.0.1"]);

    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"] {
        let r = request(w.port, method, "/echo", &[], b"");
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(json(&r)["method"], method);
    }
    let r = request(w.port, "HEAD", "/echo", &[], b"");
    assert_eq!((r.status, r.header("x-seen-method")), (200, Some("HEAD")));

    // Response hop-by-hop headers are removed too.
    let r = w.get("/hop");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kept"), Some("yes"));
    for hop in ["x-hop", "keep-alive", "upgrade", "proxy-connection"] {
        assert_eq!(
            r.header(hop),
            None,
            "{hop} reached the client: {:?}",
            r.headers
        );
    }
    assert!(
        r.header("connection")
            .is_none_or(|c| c.eq_ignore_ascii_case("close")),
        "{:?}",
        r.headers
    );
}

#[test]
fn upstream_url_path_is_joined_without_a_doubled_slash() {
    let up = Upstream::new();
    let w = up
        .watchdog()
        .env("upstream_url", format!("{}/base/", up.url()))
        .start();
    let v = json(&w.get("/echo?q=1"));
    assert_eq!(v["path"], "/base/echo?q=1");
}

#[test]
fn request_bodies_keep_their_framing_and_content() {
    let up = Upstream::new();
    let w = up.watchdog().start();
    let body = util::random_bytes(300_000);

    let r = w.post("/echo", &body);
    let v = json(&r);
    assert_eq!(v["sha256"], util::sha256(&body));
    assert_eq!(
        seen(&v, "content-length"),
        ["300000"],
        "Content-Length forwarded as is"
    );
    assert!(seen(&v, "transfer-encoding").is_empty(), "re-chunked: {v}");

    let r = post_chunked(w.port, "/echo", &body);
    let v = json(&r);
    assert_eq!(v["sha256"], util::sha256(&body));
    assert_eq!(
        seen(&v, "transfer-encoding"),
        ["chunked"],
        "streamed, not buffered"
    );
}

#[test]
fn buffer_req_body_sends_a_content_length() {
    let up = Upstream::new();
    let w = up.watchdog().env("http_buffer_req_body", "true").start();
    let body = util::random_bytes(200_000);
    let v = json(&post_chunked(w.port, "/echo", &body));
    assert_eq!(v["sha256"], util::sha256(&body));
    assert_eq!(seen(&v, "content-length"), ["200000"]);
    assert!(seen(&v, "transfer-encoding").is_empty(), "{v}");
}

/// Sends `body` chunked (no Content-Length) in pieces. The server may answer (413) and
/// close before all of it went out: writing then stops, and the answer is read.
fn post_chunked(port: u16, path: &str, body: &[u8]) -> util::Resp {
    let mut s = util::connect(port);
    util::send_head(&mut s, "POST", path, &[], None);
    let mut framed = Vec::with_capacity(body.len() + 64);
    for piece in body.chunks(64 * 1024) {
        framed.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    util::write_tolerant(&mut s, &framed).expect("body");
    util::read_response(&mut s, false)
}

#[test]
fn wsgi_upstream_gets_the_content_length() {
    if !has_python_module("waitress") {
        return skip(
            "wsgi_upstream_gets_the_content_length",
            "python3 module waitress not installed (pip install waitress, or apt-get install python3-waitress)",
        );
    }
    let work = TempDir::new();
    let script = work.path().join("wsgi.py");
    std::fs::write(&script, WSGI_PY).expect("write");
    let port = util::child_port();
    let w = watchdog()
        .mode("http")
        .fprocess(format!("python3 -u {} {port}", script.display()))
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .start();
    let body = util::random_bytes(3 << 20);
    let r = w.post("/upload", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["content_length"], (3 << 20).to_string());
    assert_eq!(v["len"], 3 << 20);
    assert_eq!(v["sha256"], util::sha256(&body));
}

#[test]
fn sse_events_arrive_as_they_are_written() {
    let up = Upstream::new();
    let w = up.watchdog().start();
    let mut s = util::connect(w.port);
    util::send_head(
        &mut s,
        "GET",
        "/sse",
        &[("Accept", "text/event-stream")],
        Some(0),
    );
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let mut seen = String::new();
    while !seen.contains("data: one") {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).expect("body") > 0,
            "stream ended early: {seen}"
        );
        seen.push_str(&line);
    }
    // The upstream holds the second event until it is released: the first arrived
    // while the upstream was still writing, so it was streamed, not buffered.
    assert!(
        up.marker("sse.release").is_none(),
        "released before the first event was seen"
    );
    std::fs::write(up.work.path().join("sse.release"), "").expect("release");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("data: two"), "{rest}");
    assert!(!seen.contains("data: two"), "{seen}");
}

#[test]
fn node_upstream_streams_ndjson_and_reuses_connections() {
    if Command::new("node")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return skip(
            "node_upstream_streams_ndjson_and_reuses_connections",
            "node not found",
        );
    }
    let work = TempDir::new();
    let script = work.path().join("server.js");
    std::fs::write(&script, NODE_JS).expect("write");
    let port = util::child_port();
    let w = watchdog()
        .mode("http")
        .fprocess(format!("node {} {port}", script.display()))
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .start();

    let mut s = util::connect(w.port);
    util::send_head(&mut s, "GET", "/ndjson", &[], Some(0));
    let mut r = BufReader::new(s);
    let mut text = String::new();
    while !text.contains("{\"n\":1}") {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).expect("read") > 0,
            "ended early: {text}"
        );
        text.push_str(&line);
    }
    // The upstream holds the rest until /release: the first line arrived while the
    // upstream was still answering, so it was streamed, not buffered (no clock needed).
    assert_eq!(w.get("/release").text(), "released");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.contains("{\"n\":3}"), "{rest}");

    let body = vec![b'x'; 10_000];
    for _ in 0..40 {
        let r = w.post("/count", &body);
        assert_eq!(r.text(), r#"{"n":10000,"cl":"10000"}"#);
    }
    let sockets: u32 = w.get("/sockets").text().parse().expect("count");
    // The readiness probe's connection, plus a pooled one or two.
    assert!(
        sockets <= 4,
        "{sockets} upstream connections for 42 requests: not pooled"
    );
}

#[test]
fn websocket_is_tunnelled_both_ways_with_close() {
    if !has_python_module("websockets") {
        return skip(
            "websocket_is_tunnelled_both_ways_with_close",
            "python3 module websockets not installed (pip install websockets, or apt-get install python3-websockets)",
        );
    }
    let work = TempDir::new();
    let server = work.path().join("ws_server.py");
    let client = work.path().join("ws_client.py");
    std::fs::write(&server, WS_SERVER_PY).expect("write");
    std::fs::write(&client, WS_CLIENT_PY).expect("write");
    let port = util::child_port();
    let w = watchdog()
        .mode("http")
        .fprocess(format!("python3 -u {} {port}", server.display()))
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
        .start();
    let out = Command::new("python3")
        .arg(&client)
        .arg(format!("ws://127.0.0.1:{}/chat", w.port))
        .output()
        .expect("run client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", w.log());
    assert!(text.contains("server closed 4001 bye"), "{text}");
    let answered = text
        .lines()
        .find(|l| l.starts_with("client close answered"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(answered.contains("answered 1000"), "{answered}");
    let secs: f64 = answered
        .rsplit(' ')
        .next()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("secs");
    assert!(secs < 2.0, "close handshake took {secs}s");
}

#[test]
fn refused_and_dropped_connections_are_502() {
    let up = Upstream::new();
    let w = up.watchdog().start();

    let r = w.get("/drop");
    assert_eq!(r.status, 502);
    let body = r.text();
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(body.contains("closed the connection"), "{body}");

    assert_eq!(w.get("/stop-listening").status, 200);
    assert!(eventually(Duration::from_secs(30), || TcpStream::connect(
        ("127.0.0.1", up.port)
    )
    .is_err()));
    let r = w.get("/echo");
    assert_eq!(r.status, 502);
    let body = r.text();
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(body.contains("cannot connect to upstream"), "{body}");
    assert!(body.to_lowercase().contains("refused"), "{body}");
}

#[test]
fn exec_timeout_answers_504_with_duration() {
    let up = Upstream::new();
    let w = up.watchdog().env("exec_timeout", "10s").start();
    let sent = Instant::now();
    let r = w.get("/slow?ms=40000&mark=t504");
    let took = sent.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.text(), "exec_timeout exceeded (10s)\n");
    let secs: f64 = r
        .header("x-duration-seconds")
        .expect("X-Duration-Seconds")
        .parse()
        .expect("secs");
    // At the 10 s deadline, long before the upstream's 40 s answer.
    assert!((9.9..30.0).contains(&secs), "{secs}");
    assert!(
        took >= Duration::from_millis(9950) && took < Duration::from_secs(30),
        "{took:?}"
    );
    // The upstream request was cancelled, not left running.
    assert!(up
        .wait_marker("t504.cancelled", Duration::from_secs(3))
        .is_some());
}

#[test]
fn x_timeout_shortens_but_never_disables_or_extends() {
    let up = Upstream::new();
    // Each window ends long before the upstream's 40 s answer; a shortened deadline
    // ends long before exec_timeout.
    let w = up.watchdog().env("exec_timeout", "10s").start();
    let port = w.port;
    let cases = [
        ("500ms", 0.4, 8.0),
        ("0s", 9.9, 30.0),
        ("0", 9.9, 30.0),
        ("20s", 9.9, 30.0),
        ("-1s", 9.9, 30.0),
        ("soon", 9.9, 30.0),
    ];
    let runs: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (v, lo, hi))| {
            let (v, lo, hi) = (v.to_string(), *lo, *hi);
            std::thread::spawn(move || {
                let sent = Instant::now();
                let r = request(
                    port,
                    "GET",
                    &format!("/slow?ms=40000&mark=x{i}"),
                    &[("X-Timeout", &v)],
                    b"",
                );
                (v, lo, hi, r.status, sent.elapsed().as_secs_f64())
            })
        })
        .collect();
    for run in runs {
        let (v, lo, hi, status, took) = run.join().expect("thread");
        assert_eq!(status, 504, "X-Timeout: {v}");
        assert!(
            took >= lo && took < hi,
            "X-Timeout: {v} answered after {took:.2}s, expected {lo}..{hi}"
        );
    }
    let r = request(
        port,
        "GET",
        "/slow?ms=100&mark=fast",
        &[("X-Timeout", "1s")],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn client_hang_up_cancels_the_upstream_request_and_is_logged_as_such() {
    let up = Upstream::new();
    let w = up.watchdog().env("exec_timeout", "10s").start();
    let mut s = util::connect(w.port);
    util::send_head(&mut s, "GET", "/slow?ms=8000&mark=hang", &[], Some(0));
    up.wait_marker("hang.started", Duration::from_secs(5))
        .expect("upstream got the request");
    drop(s);
    assert!(
        up.wait_marker("hang.cancelled", Duration::from_secs(3))
            .is_some(),
        "upstream request not cancelled after the client hung up:\n{}",
        w.log()
    );
    assert!(
        w.wait_log("client hung up", Duration::from_secs(3)),
        "{}",
        w.log()
    );
    let log = w.log();
    assert!(
        !log.contains("exceeded") && !log.contains("did not answer"),
        "logged as a timeout:\n{log}"
    );
    assert!(up.marker("hang.done").is_none());
}

#[test]
fn api_key_is_not_passed_to_the_upstream_unless_forwarded() {
    let secrets = TempDir::new();
    std::fs::write(secrets.path().join("fn-key"), "s3cret\n").expect("secret");
    for (forward, expect) in [("false", None), ("true", Some("s3cret"))] {
        let up = Upstream::new();
        let w = up
            .watchdog()
            .env("api_key_secret", "fn-key")
            .env("secrets_dir", secrets.path().display().to_string())
            .env("api_key_forward", forward)
            .start();
        assert_eq!(w.get("/echo").status, 401);
        let r = request(w.port, "GET", "/echo", &[("X-Api-Key", "s3cret")], b"");
        assert_eq!(r.status, 200);
        let v = json(&r);
        assert_eq!(
            seen(&v, "x-api-key").first().copied(),
            expect,
            "api_key_forward={forward}"
        );
    }
}

/// `X-Api_Key: forged` beside the real key: WSGI servers keep underscore names and map
/// both to `HTTP_X_API_KEY`. Old main passed it on (the upstream saw `x-api_key:
/// forged`, with or without `api_key_forward`).
#[test]
fn api_key_lookalike_headers_never_reach_the_upstream() {
    let secrets = TempDir::new();
    std::fs::write(secrets.path().join("fn-key"), "s3cret\n").expect("secret");
    for (forward, real) in [("false", None), ("true", Some("s3cret"))] {
        let up = Upstream::new();
        let w = up
            .watchdog()
            .env("api_key_secret", "fn-key")
            .env("secrets_dir", secrets.path().display().to_string())
            .env("api_key_forward", forward)
            .start();
        let headers = [
            ("X-Api_Key", "forged"),
            ("X-Api-Key", "s3cret"),
            ("x_api_key", "forged2"),
        ];
        let r = request(w.port, "GET", "/echo", &headers, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json(&r);
        assert_eq!(
            seen(&v, "x-api_key"),
            Vec::<&str>::new(),
            "forward={forward}: {v}"
        );
        assert_eq!(
            seen(&v, "x_api_key"),
            Vec::<&str>::new(),
            "forward={forward}: {v}"
        );
        assert_eq!(
            seen(&v, "x-api-key").first().copied(),
            real,
            "forward={forward}"
        );
    }
}

/// A GET with a chunked body: hyper's client sends an unknown-length GET body as none,
/// so on old main the upstream got `len: 0` and the client a 200.
/// Reproduce: `printf 'GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'`.
#[test]
fn chunked_get_body_reaches_the_upstream() {
    let up = Upstream::new();
    let w = up.watchdog().start();
    let mut s = util::connect(w.port);
    util::send_head(&mut s, "GET", "/echo", &[], None);
    s.write_all(b"5\r\nhello\r\n0\r\n\r\n").expect("body");
    let r = util::read_response(&mut s, false);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["len"], 5, "{v}");
    assert_eq!(v["sha256"], util::sha256(b"hello"));
}

/// A HEAD with a chunked body: as for GET, hyper's client sent none on old main (the
/// upstream read 0 bytes and the client got a 200). Reproduce:
/// `printf 'HEAD /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'`.
#[test]
fn chunked_head_body_reaches_the_upstream() {
    let up = Upstream::new();
    let w = up.watchdog().start();
    let mut s = util::connect(w.port);
    util::send_head(&mut s, "HEAD", "/echo", &[], None);
    s.write_all(b"5\r\nhello\r\n0\r\n\r\n").expect("body");
    let r = util::read_response(&mut s, true);
    assert_eq!(r.status, 200);
    assert_eq!(
        up.wait_marker("echo.HEAD", PATIENCE).as_deref(),
        Some("5"),
        "bytes of the HEAD body the upstream read"
    );
}

/// CONNECT is not proxied: on old main it went to the upstream as `CONNECT
/// 127.0.0.1:<port>` and its answer (python: 501) came back, or a 200 with nothing after.
#[test]
fn connect_is_405_with_allow_and_never_reaches_the_upstream() {
    let up = Upstream::new();
    let w = up.watchdog().start();
    let target = format!("127.0.0.1:{}", up.port);
    let mut s = util::connect(w.port);
    write!(
        s,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let r = util::read_response(&mut s, false);
    assert_eq!(r.status, 405, "{}", r.text());
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );
    assert!(!w.log().contains("upstream: \"CONNECT"), "{}", w.log());
}

#[test]
fn upstream_death_fails_health_at_once_and_exits_1() {
    let up = Upstream::new();
    let mut w = up.watchdog().start();
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(w.get("/exit?code=7").status, 200);
    let died = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", w.port)).is_err()
                || w.try_get("/_/health").is_ok_and(|r| r.status == 503)
        }),
        "health stayed green after the upstream died"
    );
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("watchdog exited");
    assert_eq!(status.code(), Some(1), "{}", w.log());
    assert!(died.elapsed() < Duration::from_secs(8));
    let log = w.log();
    assert!(log.contains("exited on its own: exit status 7"), "{log}");
}

#[test]
fn shutdown_drains_in_flight_requests_before_sigterm_reaches_the_upstream() {
    let up = Upstream::new();
    let mut w = up.watchdog().start();
    let port = w.port;
    let inflight =
        std::thread::spawn(move || request(port, "GET", "/slow?ms=2000&mark=drain", &[], b""));
    up.wait_marker("drain.started", Duration::from_secs(5))
        .expect("request reached the upstream");
    w.signal(15);
    let r = inflight.join().expect("request thread");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slept 2000"),
        "in-flight request dropped"
    );
    let status = w
        .wait_exit(Duration::from_secs(15))
        .expect("watchdog exited");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    let done: f64 = up
        .marker("drain.done")
        .expect("done")
        .parse()
        .expect("time");
    let term: f64 = up
        .wait_marker("term_at", Duration::from_secs(2))
        .expect("upstream got SIGTERM")
        .parse()
        .expect("time");
    assert!(
        term >= done,
        "SIGTERM reached the upstream {:.3}s before its request finished",
        done - term
    );
    assert!(!alive(up.pid()));
}

#[test]
fn upstream_ignoring_sigterm_gets_sigkill_after_5s() {
    let up = Upstream::new();
    let mut w = up.watchdog().env("IGNORE_TERM", "1").start();
    let pid = up.pid();
    let sent = Instant::now();
    w.signal(15);
    up.wait_marker("term_at", Duration::from_secs(5))
        .expect("upstream got SIGTERM");
    let status = w
        .wait_exit(Duration::from_secs(15))
        .expect("watchdog exited");
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(
        took >= Duration::from_millis(4800) && took < Duration::from_secs(9),
        "{took:?}"
    );
    assert!(
        eventually(Duration::from_secs(30), || !alive(pid)),
        "upstream {pid} survived"
    );
    assert!(w.log().contains("SIGKILL"), "{}", w.log());
}

#[test]
fn a_wrapped_upstream_gets_its_grace_period_when_the_wrapper_dies() {
    let up = Upstream::new();
    // dash runs the server as a child (no exec): SIGTERM kills the shell at once while
    // the server is still finishing. The server must not be killed with its shell.
    let mut w = up
        .watchdog()
        .fprocess(format!(
            "sh -c 'python3 -u {} {} {}; echo wrapper-after'",
            up.script.display(),
            up.port,
            up.work.path().display()
        ))
        .env("SLOW_TERM", "1")
        .start();
    w.signal(15);
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("watchdog exited");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    assert!(
        up.marker("term_done").is_some(),
        "the server was killed mid-shutdown:\n{}",
        w.log()
    );
}

#[test]
fn max_body_bytes_applies_to_proxied_bodies() {
    let up = Upstream::new();
    let w = up.watchdog().env("max_body_bytes", "1000").start();
    let r = w.post("/echo", &[b'x'; 1001]);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = post_chunked(w.port, "/echo", &[b'x'; 5000]);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = w.post("/echo", &[b'x'; 1000]);
    assert_eq!((r.status, json(&r)["len"].as_u64()), (200, Some(1000)));
}
