//! `mode=fastcgi`: a pool of warm FastCGI workers, proved with real FastCGI
//! applications: Debian's `php-cgi` and `fcgiwrap`, and a WSGI app under PyPI's `flup`,
//! both spawned by the watchdog on its inherited socket and started on their own
//! (`fastcgi_address`).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::{
    self, children, connect, have, json, read_response, request, send_head, skip, watchdog, TempDir,
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
    let r = w.get("/?sleep=5");
    assert_eq!(r.status, 504, "{}", w.log());
    assert!(
        r.text().contains("exec_timeout exceeded (1s)"),
        "{}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
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
        util::eventually(Duration::from_secs(5), || children(w.pid()).len() == 2),
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
        util::eventually(Duration::from_secs(5), || {
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
        util::eventually(Duration::from_secs(5), || w.get("/_/health").status == 503),
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
    let (status, out) = watchdog()
        .mode("fastcgi")
        .fprocess("php-cgi")
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
