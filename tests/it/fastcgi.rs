//! `mode=fastcgi`: a pool of warm FastCGI workers, proved with real FastCGI
//! applications: Debian's `php-cgi` and `fcgiwrap`, and a WSGI app under PyPI's `flup`,
//! both spawned by the watchdog on its inherited socket and started on their own
//! (`fastcgi_address`).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::{
    self, children, connect, have, json, read_response, request, send_head, skip, watchdog,
    TempDir, PATIENCE,
};

fn have_flup() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import flup.server.fcgi"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const PHP: &str = "php-cgi not installed (apt-get install php-cgi)";

const PHP_SCRIPT: &str = r#"<?php
if (($_GET["sleep"] ?? "") !== "") { sleep((int)$_GET["sleep"]); }
header("Status: 404 Not Found");
header("X-Served-By: php-fastcgi");
header("X-Pid: " . getmypid());
header("Content-Type: application/json");
error_log("php says hi");
echo json_encode([
    "method" => $_SERVER["REQUEST_METHOD"],
    "uri" => $_SERVER["REQUEST_URI"] ?? null,
    "query" => $_SERVER["QUERY_STRING"],
    "get_x" => $_GET["x"] ?? null,
    "remote" => $_SERVER["REMOTE_ADDR"] ?? null,
    "port" => $_SERVER["SERVER_PORT"] ?? null,
    "custom" => $_SERVER["HTTP_X_CUSTOM"] ?? null,
    "proxy" => $_SERVER["HTTP_PROXY"] ?? false,
    "body" => file_get_contents("php://input"),
]);
"#;

/// The digest and length of what arrived, read from php://input in 1 MiB pieces.
const PHP_UPLOAD: &str = r#"<?php
$in = fopen("php://input", "rb");
$ctx = hash_init("sha256");
$n = 0;
while (!feof($in)) { $b = fread($in, 1 << 20); $n += strlen($b); hash_update($ctx, $b); }
echo $n, " ", hash_final($ctx);
"#;

fn php_watchdog(tmp: &TempDir, script: &str, extra: &[(&str, &str)]) -> util::Watchdog {
    let path = tmp.path().join("index.php");
    std::fs::write(&path, script).expect("write script");
    let mut b = watchdog()
        .mode("fastcgi")
        .fprocess("php-cgi -d post_max_size=0 -d memory_limit=64M")
        .env("script_filename", path.display().to_string())
        .env("pool_size", "2");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b.start()
}

#[test]
fn fastcgi_php_cgi_pool_answers_with_the_apps_status_headers_and_body() {
    if !have("php-cgi") {
        return skip(
            "fastcgi_php_cgi_pool_answers_with_the_apps_status_headers_and_body",
            PHP,
        );
    }
    let tmp = TempDir::new();
    let w = php_watchdog(&tmp, PHP_SCRIPT, &[]);
    let mut pids = std::collections::HashSet::new();
    for i in 0..6 {
        let r = request(
            w.port,
            "POST",
            &format!("/some/path?x={i}"),
            &[
                ("X-Custom", "hello"),
                ("Proxy", "http://evil:3128"),
                ("Content-Type", "text/plain"),
            ],
            b"the body",
        );
        assert_eq!(r.status, 404, "{}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-served-by"), Some("php-fastcgi"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("x-duration-seconds").is_some());
        pids.insert(r.header("x-pid").unwrap_or("").to_owned());
        let v = json(&r);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["uri"], format!("/some/path?x={i}"));
        assert_eq!(v["get_x"], i.to_string());
        assert_eq!(v["remote"], "127.0.0.1");
        assert_eq!(v["port"], w.port.to_string());
        assert_eq!(v["custom"], "hello");
        assert_eq!(v["proxy"], false, "httpoxy");
        assert_eq!(v["body"], "the body");
    }
    // Warm workers: six requests, at most two processes, none started per request.
    assert!(pids.len() <= 2, "{pids:?}");
    assert!(
        w.wait_log("stderr: php says hi", Duration::from_secs(5)),
        "{}",
        w.log()
    );
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn fastcgi_streams_a_100_mib_upload_through_php() {
    if !have("php-cgi") {
        return skip("fastcgi_streams_a_100_mib_upload_through_php", PHP);
    }
    let tmp = TempDir::new();
    let w = php_watchdog(
        &tmp,
        PHP_UPLOAD,
        &[("exec_timeout", "120s"), ("write_timeout", "120s")],
    );
    let block = util::random_bytes(1 << 20);
    let total = 100usize;
    let mut s = connect(w.port);
    send_head(
        &mut s,
        "POST",
        "/",
        &[("Content-Type", "application/octet-stream")],
        Some(total << 20),
    );
    let mut want = Vec::with_capacity(total << 20);
    for _ in 0..total {
        s.write_all(&block).expect("write");
        want.extend_from_slice(&block);
    }
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(r.text(), format!("{} {}", total << 20, util::sha256(&want)));
    // Streamed, not buffered: the watchdog never held the body.
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).expect("status");
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(
        hwm_kb < 64 * 1024,
        "peak RSS {hwm_kb} kB for a 100 MiB upload"
    );
}

#[test]
fn fastcgi_exec_timeout_is_a_504_and_the_pool_keeps_serving() {
    if !have("php-cgi") {
        return skip(
            "fastcgi_exec_timeout_is_a_504_and_the_pool_keeps_serving",
            PHP,
        );
    }
    let tmp = TempDir::new();
    let w = php_watchdog(
        &tmp,
        PHP_SCRIPT,
        &[("exec_timeout", "1s"), ("pool_size", "3")],
    );
    let started = Instant::now();
    let r = w.get("/?sleep=30");
    assert_eq!(r.status, 504, "{}", w.log());
    assert!(
        r.text().contains("exec_timeout exceeded (1s)"),
        "{}",
        r.text()
    );
    // At the deadline, long before the script's 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let r = w.get("/?x=after");
    assert_eq!(r.status, 404, "{}", w.log());
    assert_eq!(json(&r)["get_x"], "after");
}

#[test]
fn fastcgi_dead_worker_is_replaced_and_shutdown_stops_the_rest() {
    if !have("php-cgi") {
        return skip(
            "fastcgi_dead_worker_is_replaced_and_shutdown_stops_the_rest",
            PHP,
        );
    }
    let tmp = TempDir::new();
    let mut w = php_watchdog(&tmp, PHP_SCRIPT, &[]);
    assert_eq!(w.get("/").status, 404);
    assert!(
        util::eventually(Duration::from_secs(30), || children(w.pid()).len() == 2),
        "{:?}",
        children(w.pid())
    );
    let victim = children(w.pid())[0];
    let _ = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    assert!(
        w.wait_log("exited: killed by signal 9", Duration::from_secs(5)),
        "{}",
        w.log()
    );
    assert!(
        util::eventually(Duration::from_secs(30), || {
            let c = children(w.pid());
            c.len() == 2 && !c.contains(&victim)
        }),
        "not replaced: {:?}\n{}",
        children(w.pid()),
        w.log()
    );
    for _ in 0..4 {
        assert_eq!(w.get("/").status, 404, "{}", w.log());
    }
    let workers = children(w.pid());
    w.signal(15);
    let status = w.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}\n{}", w.log());
    assert!(
        w.log().contains("SIGTERM to their process groups"),
        "{}",
        w.log()
    );
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || children(pid).is_empty()
        );
        assert!(
            util::group_members(pid).is_empty(),
            "worker group {pid} left behind"
        );
    }
}

#[test]
fn fastcgi_health_fails_while_no_worker_is_alive() {
    let tmp = TempDir::new();
    let w = watchdog()
        .mode("fastcgi")
        .fprocess("sh -c 'exit 3'")
        .env("pool_size", "1")
        .tmp(tmp)
        .start();
    assert!(
        util::eventually_ok(Duration::from_secs(30), || Ok(w
            .try_get("/_/health")?
            .status
            == 503)),
        "{}",
        w.log()
    );
    assert!(
        w.wait_log(
            "exited: exit status 3; replacing it in 100ms",
            Duration::from_secs(5)
        ),
        "{}",
        w.log()
    );
    // Backoff doubles while it keeps dying at once.
    assert!(
        w.wait_log("replacing it in 200ms", Duration::from_secs(5)),
        "{}",
        w.log()
    );
}

#[test]
fn fastcgi_fcgiwrap_serves_a_cgi_script() {
    if !have("fcgiwrap") {
        return skip(
            "fastcgi_fcgiwrap_serves_a_cgi_script",
            "fcgiwrap not installed (apt-get install fcgiwrap)",
        );
    }
    let tmp = TempDir::new();
    let script = tmp.script(
        "hello.cgi",
        "#!/bin/sh\nprintf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Cgi: yes\\r\\n\\r\\n'\nprintf 'cgi %s %s %s ' \"$REQUEST_METHOD\" \"$PATH_INFO\" \"$QUERY_STRING\"\ncat\n",
    );
    let w = watchdog()
        .mode("fastcgi")
        .fprocess("fcgiwrap")
        .env("SCRIPT_FILENAME", script.display().to_string())
        .env("pool_size", "1")
        .start();
    for _ in 0..3 {
        let r = request(w.port, "POST", "/p/q?a=b", &[], b"input");
        assert_eq!(r.status, 201, "{}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-cgi"), Some("yes"));
        assert_eq!(r.text(), "cgi POST /p/q a=b input");
    }
}

const WSGI_APP: &str = r#"
import sys
from flup.server.fcgi import WSGIServer
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("202 Accepted", [("Content-Type", "text/plain"), ("X-App", "flup")])
    return [("flup %s %s %s %d" % (environ["REQUEST_METHOD"], environ.get("PATH_INFO"),
             environ.get("QUERY_STRING"), len(body))).encode()]
addr = sys.argv[1] if len(sys.argv) > 1 else None
WSGIServer(app, bindAddress=addr).run()
"#;

#[test]
fn fastcgi_flup_wsgi_app_on_the_inherited_socket() {
    if !have_flup() {
        return skip(
            "fastcgi_flup_wsgi_app_on_the_inherited_socket",
            "flup not installed (pip install flup)",
        );
    }
    let tmp = TempDir::new();
    let app = tmp.path().join("app.py");
    std::fs::write(&app, WSGI_APP).expect("write app");
    let w = watchdog()
        .mode("fastcgi")
        .fprocess(format!("python3 {}", app.display()))
        .env("pool_size", "1")
        .start();
    for i in 0..3 {
        let r = request(w.port, "PUT", &format!("/w?i={i}"), &[], b"12345");
        assert_eq!(r.status, 202, "{}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-app"), Some("flup"));
        assert_eq!(r.text(), format!("flup PUT /w i={i} 5"));
    }
}

#[test]
fn fastcgi_address_reaches_an_externally_started_flup_server() {
    if !have_flup() {
        return skip(
            "fastcgi_address_reaches_an_externally_started_flup_server",
            "flup not installed (pip install flup)",
        );
    }
    let tmp = TempDir::new();
    let app = tmp.path().join("app.py");
    std::fs::write(&app, WSGI_APP).expect("write app");
    let sock = tmp.path().join("flup.sock");
    let mut server = std::process::Command::new("python3")
        .arg(&app)
        .arg(&sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start flup");
    // No fprocess: the server is not ours to start. The watchdog waits for it.
    let w = watchdog()
        .mode("fastcgi")
        .env("fastcgi_address", sock.display().to_string())
        .env("pool_size", "4")
        .start();
    let r = w.get("/ext?z=1");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r.status, 202, "{}\n{}", r.text(), w.log());
    assert_eq!(r.text(), "flup GET /ext z=1 0");
    assert!(w.log().contains("is ready"), "{}", w.log());
}

#[test]
fn fastcgi_settings_are_validated() {
    // Any program on PATH will do (the settings are refused before it would start).
    let (status, out) = watchdog()
        .mode("fastcgi")
        .fprocess("cat")
        .env("pool_size", "0")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("pool_size") && out.contains("\"0\""), "{out}");
    let (status, out) = watchdog()
        .mode("fastcgi")
        .env("fastcgi_address", "nohost")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("fastcgi_address"), "{out}");
    let (status, out) = watchdog().mode("fastcgi").run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("fprocess is required"), "{out}");
}

/// A FastCGI responder small enough to misbehave on purpose, on the inherited socket
/// (fd 0), one connection at a time, several requests per connection. Every request is
/// appended to the file named by argv[1] as `METHOD QUERY STDIN-LENGTH`. What it does
/// is chosen by the query string:
/// - `die`: closes the connection without answering (a worker that crashed);
/// - `dieonce`: the same the first time only;
/// - `stale`: answers, then 200 ms later writes more `STDOUT` for the finished request;
/// - `malformed`: answers a line that is not a CGI header;
/// - `host`: answers `HTTP_HOST SERVER_NAME`;
/// - anything else: `Content-Type: text/plain` and `answer QUERY`.
const RESPONDER: &str = r#"
import os, socket, struct, sys, time
runs = sys.argv[1]
lsock = socket.socket(fileno=os.dup(0))
def rec(kind, rid, data=b""):
    return struct.pack(">BBHHBB", 1, kind, rid, len(data), 0, 0) + data
def end(rid):
    return rec(3, rid, struct.pack(">IB3x", 0, 0))
def pairs(b):
    out, i = {}, 0
    while i < len(b):
        ls = []
        for _ in range(2):
            if b[i] < 128: ls.append(b[i]); i += 1
            else: ls.append(struct.unpack(">I", b[i:i+4])[0] & 0x7fffffff); i += 4
        out[b[i:i+ls[0]].decode()] = b[i+ls[0]:i+ls[0]+ls[1]].decode()
        i += ls[0] + ls[1]
    return out
def serve(conn):
    buf = b""
    params, stdin, rid = b"", b"", 0
    while True:
        while len(buf) < 8 or len(buf) < 8 + struct.unpack(">H", buf[4:6])[0] + buf[6]:
            more = conn.recv(65536)
            if not more: return
            buf += more
        _, kind, r, n, pad, _ = struct.unpack(">BBHHBB", buf[:8])
        data, buf = buf[8:8+n], buf[8+n+pad:]
        if kind == 1: rid, params, stdin = r, b"", b""
        elif kind == 4: params += data
        elif kind == 5 and data: stdin += data
        elif kind == 5:
            env = pairs(params)
            q = env.get("QUERY_STRING", "")
            with open(runs, "a") as f:
                f.write("%s %s %d\n" % (env["REQUEST_METHOD"], q, len(stdin)))
            if q == "die" or (q == "dieonce" and not os.path.exists(runs + ".died")):
                open(runs + ".died", "w").close()
                return
            if q == "host":
                host = "%s %s" % (env.get("HTTP_HOST"), env.get("SERVER_NAME"))
                conn.sendall(rec(6, rid, b"Content-Type: text/plain\r\n\r\n" + host.encode()) + end(rid))
                continue
            if q == "malformed":
                conn.sendall(rec(6, rid, b"DB_PASSWORD=hunter2 connection failed\n\n") + end(rid))
                continue
            conn.sendall(rec(6, rid, b"Content-Type: text/plain\r\n\r\nanswer " + q.encode()) + rec(6, rid) + end(rid))
            if q == "stale":
                time.sleep(0.2)
                conn.sendall(rec(6, rid, b"Content-Type: text/plain\r\n\r\nSTALE output of an earlier request"))
while True:
    c, _ = lsock.accept()
    serve(c)
    c.close()
"#;

/// The watchdog with [`RESPONDER`] as its one worker; returns it and the runs file.
fn responder(tmp: &TempDir) -> (util::Watchdog, std::path::PathBuf) {
    let app = tmp.path().join("responder.py");
    std::fs::write(&app, RESPONDER).expect("write responder");
    let runs = tmp.path().join("runs");
    let w = watchdog()
        .mode("fastcgi")
        .fprocess(format!("python3 {} {}", app.display(), runs.display()))
        .env("pool_size", "1")
        // No test of the responder is about timeouts: room for a python worker on a
        // loaded machine (5 s was exceeded under the flaky campaign's load).
        .env("exec_timeout", "30s")
        .start();
    (w, runs)
}

fn runs(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A request that may have been acted on is never sent twice. Reproduction: one worker;
/// a `GET` leaves a pooled connection; then a chunked `POST /?die` whose worker closes
/// the connection without answering (as a crashed php-cgi does). It used to be sent
/// again on a new connection and run twice; a `Content-Length` `POST` was sent again
/// with the same `CONTENT_LENGTH` and an empty stdin, a bodyless `DELETE` ran twice.
/// Now each runs once and gets a 502; a `GET` (safe) is still retried and answered.
#[test]
fn fastcgi_a_request_that_may_have_run_is_never_replayed() {
    let tmp = TempDir::new();
    let (w, file) = responder(&tmp);
    // Method, framing header, body as sent.
    let cases: [(&str, &str, &[u8]); 3] = [
        (
            "POST",
            "Transfer-Encoding: chunked\r\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        ),
        ("POST", "Content-Length: 3\r\n", b"abc"),
        ("DELETE", "", b""),
    ];
    for (method, headers, body) in &cases {
        let _ = std::fs::remove_file(&file);
        // A pooled connection first: the retry only ever happened on a reused one.
        assert_eq!(w.get("/?warm").status, 200, "{}", w.log());
        let mut s = connect(w.port);
        let head =
            format!("{method} /?die HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(body).expect("write");
        let r = read_response(&mut s, false);
        assert_eq!(r.status, 502, "{method} {headers:?}: {}", r.text());
        let ran = runs(&file);
        let want_len = if body.is_empty() { 0 } else { 3 };
        assert_eq!(
            ran,
            vec!["GET warm 0".to_owned(), format!("{method} die {want_len}")],
            "{method} {headers:?}: ran {ran:?}"
        );
    }
    // A safe method is still sent again when the pooled connection fails first.
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(tmp.path().join("runs.died"));
    assert_eq!(w.get("/?warm").status, 200);
    let r = w.get("/?dieonce");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(r.text(), "answer dieonce");
    assert_eq!(
        runs(&file),
        ["GET warm 0", "GET dieonce 0", "GET dieonce 0"]
    );
}

/// One client never gets another's output. Reproduction: one worker that, after its
/// `END_REQUEST`, writes more `STDOUT` 200 ms later; the next request on that connection
/// used to take that output as its own answer (5 of 5 tries), because every request
/// had id 1. Now each exchange has its own id, the stray record is seen as stale, the
/// connection is dropped, and the next request gets a 502 instead of the other's body.
#[test]
fn fastcgi_output_after_end_request_never_reaches_the_next_request() {
    let tmp = TempDir::new();
    let (w, _) = responder(&tmp);
    for i in 0..5 {
        let r = w.get("/?stale");
        assert_eq!(r.status, 200, "{i}: {}", r.text());
        assert_eq!(r.text(), "answer stale");
        // Sent at once, so it is on the connection when the stray output arrives.
        let r = w.get("/?next");
        assert!(!r.text().contains("STALE"), "{i}: got {:?}", r.text());
        assert!(
            r.status == 502 || r.text() == "answer next",
            "{i}: {}",
            r.text()
        );
        let r = w.get("/?after");
        assert_eq!(r.status, 200, "{i}: {}", r.text());
        assert_eq!(r.text(), "answer after");
    }
}

/// The 502 for a response that is not CGI does not echo the application's output.
/// Reproduction: a responder whose first line is `DB_PASSWORD=hunter2 connection failed`
/// got the client `line "DB_PASSWORD=hunter2 ..." is not a "Name: value" header`. Now the
/// client gets a fixed text and the line is in the log.
#[test]
fn fastcgi_malformed_response_502_does_not_echo_the_output() {
    let tmp = TempDir::new();
    let (w, _) = responder(&tmp);
    let r = w.get("/?malformed");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!r.text().contains("hunter2"), "{}", r.text());
    assert!(r.text().contains("malformed CGI response"), "{}", r.text());
    assert!(
        w.wait_log("hunter2", Duration::from_secs(2)),
        "the details are logged: {}",
        w.log()
    );
}

/// Abandoned requests do not run past `max_inflight`. Reproduction: `max_inflight=1`,
/// a php-cgi script that sleeps 1 s, 20 clients that each send a request and leave
/// after 50 ms: the slot used to be freed as each client left while its request still
/// waited for a worker and was then sent anyway, so php-cgi ran all 20 (two at a time)
/// and the next real request took 9.7 s. Now a request whose client is gone before it
/// reaches a worker is never sent, and one already sent keeps the slot until its worker
/// is done. Here all twenty clients leave once the first request runs (its marker), so
/// no client is still there when the slot frees, however slow the machine: the script
/// runs once, and the next request is answered.
#[test]
fn fastcgi_abandoned_requests_are_not_run_past_max_inflight() {
    if !have("php-cgi") {
        return skip(
            "fastcgi_abandoned_requests_are_not_run_past_max_inflight",
            PHP,
        );
    }
    let tmp = TempDir::new();
    let runs = tmp.path().join("runs");
    let script = format!(
        r#"<?php
if (isset($_GET["slow"])) {{
    file_put_contents("{}", "slow\n", FILE_APPEND);
    sleep(1);
}}
echo "done";
"#,
        runs.display()
    );
    let w = php_watchdog(
        &tmp,
        &script,
        &[
            ("max_inflight", "1"),
            ("max_queue", "50"),
            ("exec_timeout", "10s"),
            // More workers than slots: only the slot can keep abandoned requests out.
            ("pool_size", "6"),
        ],
    );
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let mut s = connect(w.port);
            s.write_all(b"GET /?slow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            s
        })
        .collect();
    util::wait_for_marker(&runs);
    drop(clients);
    // Answered (not stuck behind twenty 1 s runs until its 10 s deadline).
    let r = w.get("/?fast");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(r.text(), "done");
    // A window to see runs that should not happen: sent anyway, they would follow one
    // another a second apart. Waiting longer can only find more, never fewer.
    std::thread::sleep(Duration::from_secs(2));
    let ran = std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        ran <= 3,
        "the slow script ran {ran} times for 20 abandoned requests"
    );
}

/// Workers die with the watchdog, even when it is not PID 1 and gets no chance to stop
/// them. Reproduction: `mode=fastcgi fprocess=php-cgi`, `kill -9` the watchdog: its
/// php-cgi workers (each in its own process group) kept running. Now each worker is
/// started with the parent-death signal set, and dies with it.
#[test]
fn fastcgi_workers_die_when_the_watchdog_is_killed() {
    if !have("php-cgi") {
        return skip("fastcgi_workers_die_when_the_watchdog_is_killed", PHP);
    }
    let tmp = TempDir::new();
    let mut w = php_watchdog(&tmp, PHP_SCRIPT, &[]);
    assert_eq!(w.get("/").status, 404, "{}", w.log());
    assert!(
        util::eventually(Duration::from_secs(30), || children(w.pid()).len() == 2),
        "{:?}",
        children(w.pid())
    );
    let workers = children(w.pid());
    w.signal(9);
    let _ = w.wait_exit(Duration::from_secs(5));
    let alive = |pid: i32| {
        util::processes()
            .iter()
            .any(|p| p.pid == pid && p.state != 'Z')
    };
    let gone = util::eventually(Duration::from_secs(30), || {
        !workers.iter().any(|p| alive(*p))
    });
    let left: Vec<i32> = workers.iter().copied().filter(|p| alive(*p)).collect();
    for pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(gone, "workers {left:?} outlived the watchdog");
}

/// The parent-death signal fires when the *thread* that started the child ends, not the
/// process. With `threads=2` recycled workers are started again by a task on a runtime
/// worker thread: they must keep serving, and still die when the watchdog is killed,
/// because those threads live as long as the runtime (a tied program is never started
/// from a `spawn_blocking` thread, which ends when idle).
#[test]
fn fastcgi_workers_restarted_on_worker_threads_serve_and_die_with_the_watchdog() {
    let name = "fastcgi_workers_restarted_on_worker_threads_serve_and_die_with_the_watchdog";
    if !have("php-cgi") {
        return skip(name, PHP);
    }
    let tmp = TempDir::new();
    let extra = [("threads", "2"), ("pool_max_requests", "1")];
    let mut w = php_watchdog(&tmp, PHP_SCRIPT, &extra);
    assert!(
        util::eventually(Duration::from_secs(30), || children(w.pid()).len() == 2),
        "{:?}",
        children(w.pid())
    );
    let first = children(w.pid());
    // Each request ends its worker (one request each); the pool starts another.
    for _ in 0..6 {
        assert_eq!(w.get("/").status, 404, "{}", w.log());
    }
    let restarted = || {
        let now = children(w.pid());
        now.len() == 2 && now.iter().all(|p| !first.contains(p))
    };
    assert!(
        util::eventually(Duration::from_secs(30), restarted),
        "{first:?} → {:?}\n{}",
        children(w.pid()),
        w.log()
    );
    let workers = children(w.pid());
    w.signal(9);
    let _ = w.wait_exit(Duration::from_secs(5));
    let alive = |pid: i32| {
        util::processes()
            .iter()
            .any(|p| p.pid == pid && p.state != 'Z')
    };
    let gone = util::eventually(Duration::from_secs(30), || {
        !workers.iter().any(|p| alive(*p))
    });
    let left: Vec<i32> = workers.iter().copied().filter(|p| alive(*p)).collect();
    for pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(gone, "restarted workers {left:?} outlived the watchdog");
}

/// With an absolute-form target the target's authority is the host, and CONNECT is not
/// run. Reproduction: `GET http://evil.example:9999/admin?host` with `Host:
/// legit.example` gave the application `HTTP_HOST=legit.example`; `CONNECT
/// evil.example:443` was sent to it. Now it sees `evil.example:9999`, and CONNECT is a
/// 405 that never reaches it.
#[test]
fn fastcgi_absolute_form_host_and_connect() {
    let tmp = TempDir::new();
    let (w, file) = responder(&tmp);
    let raw = |head: &str| {
        let mut s = connect(w.port);
        s.write_all(head.as_bytes()).expect("write");
        read_response(&mut s, false)
    };
    let r = raw("GET http://evil.example:9999/admin?host HTTP/1.1\r\nHost: legit.example\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "evil.example:9999 evil.example");
    let _ = std::fs::remove_file(&file);
    let r = raw("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n");
    assert_eq!(r.status, 405, "{}", r.text());
    assert!(runs(&file).is_empty(), "ran: {:?}", runs(&file));
}

/// A worker still at work on a request past its deadline is stopped and replaced, so it
/// cannot hold its place in the pool. Reproduction: `pool_size=1 exec_timeout=1s`, a
/// php-cgi script that sleeps 30 s: the client got its 504 after 1 s, but the worker
/// kept sleeping (php-cgi ignores ABORT_REQUEST until it writes), and every request for
/// the next 29 s waited behind it and got a 504 too. The same after a client that left.
/// Now the worker holding the connection is SIGKILLed at the deadline and replaced.
#[test]
fn fastcgi_a_worker_still_busy_at_the_deadline_is_replaced() {
    if !have("php-cgi") {
        return skip(
            "fastcgi_a_worker_still_busy_at_the_deadline_is_replaced",
            PHP,
        );
    }
    let tmp = TempDir::new();
    // The script marks that a sleeping request reached its worker.
    let reached = tmp.path().join("reached");
    let script = format!(
        "<?php\nif (($_GET[\"sleep\"] ?? \"\") !== \"\") {{ touch(\"{}\"); }}\n{}",
        reached.display(),
        PHP_SCRIPT.strip_prefix("<?php\n").expect("php script")
    );
    // A deadline that leaves the replacement worker time to start on a loaded machine;
    // a request stuck behind the sleeping worker would still meet it (and get a 504).
    let w = php_watchdog(&tmp, &script, &[("pool_size", "1"), ("exec_timeout", "5s")]);
    let pid_of = |r: &util::Resp| r.header("x-pid").unwrap_or("").to_owned();
    let r = w.get("/");
    assert_eq!(r.status, 404, "{}", w.log());
    let first = pid_of(&r);
    let killed = || w.log().matches("past its deadline: SIGKILL").count();
    // Timed out.
    assert_eq!(w.get("/?sleep=30").status, 504);
    assert!(util::eventually(PATIENCE, || killed() == 1), "{}", w.log());
    let r = w.get("/");
    assert_eq!(r.status, 404, "{}\n{}", r.text(), w.log());
    let second = pid_of(&r);
    assert_ne!(second, first, "the busy worker was not replaced");
    // Abandoned by its client once it reached the worker.
    let _ = std::fs::remove_file(&reached);
    let mut s = connect(w.port);
    s.write_all(b"GET /?sleep=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    util::wait_for_marker(&reached);
    drop(s);
    assert!(util::eventually(PATIENCE, || killed() == 2), "{}", w.log());
    let r = w.get("/");
    assert_eq!(r.status, 404, "{}\n{}", r.text(), w.log());
    assert_ne!(pid_of(&r), second, "the busy worker was not replaced");
}
