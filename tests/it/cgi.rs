//! `--cgi`: CGI/1.1 (RFC 3875) in the fork modes, proved with real CGI
//! programs: Debian's `php-cgi`, a Python CGI script, and shell scripts that write
//! malformed header blocks.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::util::{self, connect, have, json, request, send_head, skip, watchdog, TempDir};

const MODES: [&str; 2] = ["streaming", "serializing"];

const PHP_SCRIPT: &str = r#"<?php
header("Status: 404 Not Found");
header("X-Served-By: php-cgi");
header("Content-Type: application/json");
setcookie("a", "1");
echo json_encode([
    "method" => $_SERVER["REQUEST_METHOD"],
    "query" => $_SERVER["QUERY_STRING"],
    "path_info" => $_SERVER["PATH_INFO"] ?? null,
    "get_x" => $_GET["x"] ?? null,
    "remote" => $_SERVER["REMOTE_ADDR"] ?? null,
    "port" => $_SERVER["SERVER_PORT"] ?? null,
    "gateway" => $_SERVER["GATEWAY_INTERFACE"] ?? null,
    "custom" => $_SERVER["HTTP_X_CUSTOM"] ?? null,
    "proxy" => getenv("HTTP_PROXY"),
    "body" => file_get_contents("php://input"),
]);
"#;

#[test]
fn php_cgi_sets_status_headers_and_reads_the_request() {
    if !have("php-cgi") {
        return skip(
            "php_cgi_sets_status_headers_and_reads_the_request",
            "php-cgi not installed (apt-get install php-cgi)",
        );
    }
    let tmp = TempDir::new();
    let script = tmp.path().join("index.php");
    std::fs::write(&script, PHP_SCRIPT).expect("write script");
    for mode in MODES {
        // php-cgi takes its script from SCRIPT_FILENAME, which handlers inherit.
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .env("SCRIPT_FILENAME", script.display().to_string())
            .fprocess("php-cgi")
            .start();
        let r = request(
            w.port,
            "POST",
            "/some/path?x=42",
            &[
                ("X-Custom", "hello"),
                ("Proxy", "http://evil:3128"),
                ("Content-Type", "text/plain"),
            ],
            b"the body",
        );
        assert_eq!(r.status, 404, "{mode}: {}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-served-by"), Some("php-cgi"), "{mode}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{mode}");
        assert_eq!(r.header("set-cookie"), Some("a=1"), "{mode}");
        assert!(r.header("x-duration-seconds").is_some(), "{mode}");
        assert!(
            r.header("status").is_none(),
            "{mode}: Status is not a header"
        );
        let v = json(&r);
        assert_eq!(v["method"], "POST", "{mode}");
        assert_eq!(v["query"], "x=42", "{mode}");
        assert_eq!(v["get_x"], "42", "{mode}");
        assert_eq!(v["path_info"], "/some/path", "{mode}");
        assert_eq!(v["remote"], "127.0.0.1", "{mode}");
        assert_eq!(v["port"], w.port.to_string(), "{mode}");
        assert_eq!(v["gateway"], "CGI/1.1", "{mode}");
        assert_eq!(v["custom"], "hello", "{mode}");
        assert_eq!(v["proxy"], false, "{mode}: httpoxy");
        assert_eq!(v["body"], "the body", "{mode}");
    }
}

#[test]
fn php_cgi_redirect_is_a_302_with_location() {
    if !have("php-cgi") {
        return skip(
            "php_cgi_redirect_is_a_302_with_location",
            "php-cgi not installed (apt-get install php-cgi)",
        );
    }
    let tmp = TempDir::new();
    let script = tmp.path().join("redirect.php");
    std::fs::write(&script, "<?php header('Location: /elsewhere');\n").expect("write");
    let w = watchdog()
        .env("cgi", "1")
        .env("SCRIPT_FILENAME", script.display().to_string())
        .fprocess("php-cgi")
        .start();
    let r = w.get("/");
    assert_eq!(r.status, 302, "{}", w.log());
    assert_eq!(r.header("location"), Some("/elsewhere"));
}

/// A Python CGI script: it reads its request from `os.environ` and stdin, as CGI scripts
/// do, and answers with a header block (CRLF, as `print` with `end` gives it) and a body.
const PY_SCRIPT: &str = r#"import json, os, sys
length = int(os.environ.get("CONTENT_LENGTH") or 0)
body = sys.stdin.read(length)
names = ["REQUEST_METHOD", "QUERY_STRING", "PATH_INFO", "SCRIPT_NAME", "CONTENT_TYPE",
         "CONTENT_LENGTH", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
         "GATEWAY_INTERFACE", "REDIRECT_STATUS", "HTTP_X_CUSTOM", "HTTP_ACCEPT",
         "HTTP_PROXY", "HTTP_CONTENT_TYPE", "Http_X_Custom", "FWATCHDOG_DEADLINE_MS"]
seen = {n: os.environ.get(n) for n in names}
seen["body"] = body
sys.stdout.write("Status: 201 Created\r\nContent-Type: application/json\r\nX-From: python\r\n\r\n")
sys.stdout.write(json.dumps(seen))
"#;

#[test]
fn python_cgi_script_gets_the_rfc3875_meta_variables() {
    let tmp = TempDir::new();
    let script = tmp.path().join("env.py");
    std::fs::write(&script, PY_SCRIPT).expect("write");
    for mode in MODES {
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .fprocess(format!("python3 {}", script.display()))
            .start();
        let r = request(
            w.port,
            "PUT",
            "/a%20b/c?q=1&r=%20",
            &[
                ("X-Custom", "v"),
                ("Accept", "text/plain"),
                ("Proxy", "http://evil"),
                ("Content-Type", "text/csv"),
            ],
            b"a,b\n",
        );
        assert_eq!(r.status, 201, "{mode}: {}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-from"), Some("python"), "{mode}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{mode}");
        let v = json(&r);
        let port = w.port.to_string();
        let want = [
            ("REQUEST_METHOD", "PUT"),
            ("QUERY_STRING", "q=1&r=%20"),
            ("PATH_INFO", "/a b/c"),
            ("SCRIPT_NAME", ""),
            ("CONTENT_TYPE", "text/csv"),
            ("CONTENT_LENGTH", "4"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "127.0.0.1"),
            ("SERVER_PORT", port.as_str()),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REDIRECT_STATUS", "200"),
            ("HTTP_X_CUSTOM", "v"),
            ("HTTP_ACCEPT", "text/plain"),
            ("Http_X_Custom", "v"),
            ("body", "a,b\n"),
        ];
        for (k, want) in want {
            assert_eq!(v[k], want, "{mode}: {k}");
        }
        assert!(v["HTTP_PROXY"].is_null(), "{mode}: httpoxy");
        assert!(v["HTTP_CONTENT_TYPE"].is_null(), "{mode}");
        assert!(v["FWATCHDOG_DEADLINE_MS"].is_string(), "{mode}");
    }
}

#[test]
fn streaming_sends_the_head_once_the_block_is_parsed_then_streams_the_body() {
    let tmp = TempDir::new();
    let gate = tmp.path().join("gate");
    let w = watchdog()
        .env("cgi", "true")
        .fprocess(format!(
            "sh -c 'printf \"Status: 202 Accepted\\nContent-Type: text/event-stream\\n\\nfirst\\n\"; \
             while [ ! -e {} ]; do sleep 0.01; done; echo second'",
            gate.display()
        ))
        .start();
    let mut s = connect(w.port);
    send_head(&mut s, "GET", "/", &[], Some(0));
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 202"), "{line:?}");
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h.trim().is_empty() {
            break;
        }
        headers.push(h.trim().to_ascii_lowercase());
    }
    assert!(
        headers.contains(&"content-type: text/event-stream".to_owned()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"transfer-encoding: chunked".to_owned()),
        "{headers:?}"
    );
    // The first chunk arrives while the handler is still running.
    let mut size = String::new();
    r.read_line(&mut size).expect("chunk size");
    let mut chunk = vec![0u8; usize::from_str_radix(size.trim(), 16).expect("hex") + 2];
    r.read_exact(&mut chunk).expect("chunk");
    assert_eq!(&chunk[..chunk.len() - 2], b"first\n");
    std::fs::write(&gate, b"").expect("open the gate");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("rest");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("second\n"), "{rest:?}");
    assert!(rest.ends_with("0\r\n\r\n"), "complete: {rest:?}");
}

#[test]
fn malformed_header_blocks_are_502_with_a_log_line() {
    let tmp = TempDir::new();
    let big = tmp.script(
        "big",
        "#!/bin/sh\nwhile :; do echo 'X-Filler: 0123456789012345678901234567890123456789'; done\n",
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a header", "echo hello world".into(), "is not a"),
        (
            "bad status",
            "printf 'Status: abc\\n\\nbody'".into(),
            "invalid Status",
        ),
        (
            "bad name",
            "printf 'Bad Name: x\\n\\nbody'".into(),
            "invalid header name",
        ),
        (
            "unterminated",
            "printf 'Content-Type: text/plain\\n'".into(),
            "output ended before the blank line",
        ),
        ("empty", "true".into(), "output ended before the blank line"),
        (
            "oversized",
            big.display().to_string(),
            "no blank line ending the header block within 65536 bytes",
        ),
    ];
    for mode in MODES {
        for (what, cmd, msg) in &cases {
            let w = watchdog()
                .mode(mode)
                .env("cgi", "true")
                .fprocess(format!("sh -c \"{cmd}\""))
                .env("exec_timeout", "10s")
                .start();
            let r = w.get("/");
            assert_eq!(r.status, 502, "{mode} {what}: {}", r.text());
            // The details quote the handler's output: the log has them, the client not.
            assert_eq!(
                r.text(),
                "malformed CGI response from the handler (details in the log)\n",
                "{mode} {what}"
            );
            assert!(
                w.wait_log(msg, Duration::from_secs(2)),
                "{mode} {what}: {}",
                w.log()
            );
        }
    }
}

#[test]
fn a_bad_first_line_fails_at_once_and_kills_the_handler() {
    let tmp = TempDir::new();
    let pidfile = tmp.path().join("pid");
    let w = watchdog()
        .env("cgi", "true")
        .fprocess(format!(
            "sh -c 'echo $$ > {}; echo \"<html>not cgi</html>\"; sleep 100'",
            pidfile.display()
        ))
        .start();
    let t = Instant::now();
    let r = w.get("/");
    assert_eq!(r.status, 502, "{}", r.text());
    // Long before the handler's 100 s sleep ends.
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    util::assert_handler_group_ends(&pidfile, Duration::from_secs(3), "CGI handler");
}

/// A handler's stray output may be a secret: the 502 does not echo it. Reproduction:
/// `cgi=true fprocess="echo DB_PASSWORD=hunter2 connection failed"` used to answer
/// `malformed CGI response from the handler: line "DB_PASSWORD=hunter2 connection
/// failed" is not a "Name: value" header`; now the client gets a fixed text and the line
/// is in the log only.
#[test]
fn the_502_for_a_malformed_response_does_not_echo_the_handlers_output() {
    for mode in MODES {
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .fprocess("echo DB_PASSWORD=hunter2 connection failed")
            .start();
        let r = w.get("/");
        assert_eq!(r.status, 502, "{mode}: {}", r.text());
        assert!(!r.text().contains("hunter2"), "{mode}: {}", r.text());
        assert!(
            w.wait_log("DB_PASSWORD=hunter2", Duration::from_secs(2)),
            "{mode}: the details are logged: {}",
            w.log()
        );
    }
}

#[test]
fn a_failing_handler_is_still_500_not_502() {
    for mode in MODES {
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .fprocess("sh -c 'printf \"Content-Type: text/plain\\n\"; exit 3'")
            .start();
        let r = w.get("/");
        assert_eq!(r.status, 500, "{mode}: {}", r.text());
        assert!(
            r.text().starts_with("exit status 3\n"),
            "{mode}: {}",
            r.text()
        );
    }
}

#[test]
fn lf_only_blocks_and_a_missing_content_type_use_the_configured_one() {
    for mode in MODES {
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .env("content_type", "text/x-default")
            .fprocess("printf 'X-A: 1\\nX-A: 2\\n\\nhello'")
            .start();
        let r = w.get("/");
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("text/x-default"), "{mode}");
        let xa: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-a"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(xa, ["1", "2"], "{mode}");
        assert_eq!(r.text(), "hello", "{mode}");
    }
}

#[test]
fn without_cgi_the_output_is_the_body_as_before() {
    let w = watchdog().fprocess("printf 'Status: 404\\n\\nx'").start();
    let r = w.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Status: 404\n\nx");
}

#[test]
fn cgi_outside_the_fork_modes_is_a_startup_error() {
    let tmp = TempDir::new();
    let (status, out) = watchdog()
        .mode("static")
        .env("static_path", tmp.path().display().to_string())
        .env("cgi", "true")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("cgi"), "{out}");
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("cgi", "maybe")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
}

#[test]
fn chunked_uploads_reach_a_cgi_script_in_serializing_mode_with_a_length() {
    let w = watchdog()
        .mode("serializing")
        .env("cgi", "true")
        .fprocess(
            "sh -c 'printf \"Content-Type: text/plain\\n\\n\"; echo \"$CONTENT_LENGTH\"; cat'",
        )
        .start();
    let mut s = connect(w.port);
    send_head(&mut s, "POST", "/", &[], None);
    s.write_all(b"5\r\nhello\r\n0\r\n\r\n")
        .expect("chunked body");
    let r = util::read_response(&mut s, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "5\nhello");
}

/// A CGI script's complete answer is kept whatever its exit status, as Apache mod_cgi
/// and nginx + fcgiwrap keep it: PHP's `http_response_code(503); echo '{"error":"busy"}';
/// exit(1);`. On old main serializing and classic answered 500 with `exit status 1` and
/// the raw header block as the body, and streaming sent the 503 and then aborted it
/// (curl exit 18).
#[test]
fn a_cgi_answer_is_kept_whatever_the_exit_status() {
    let tmp = TempDir::new();
    let script = tmp.script(
        "busy.cgi",
        "#!/bin/sh\nprintf 'Status: 503 Service Unavailable\\r\\nContent-Type: application/json\\r\\n\\r\\n'\nprintf '{\"error\":\"busy\"}'\nexit 1\n",
    );
    for mode in ["streaming", "serializing", "classic"] {
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .fprocess(script.display().to_string())
            .start();
        let r = request(w.port, "POST", "/", &[], b"");
        assert_eq!(r.status, 503, "{mode}: {}", r.text());
        assert!(r.complete, "{mode}: the answer was cut off");
        assert_eq!(r.text(), "{\"error\":\"busy\"}", "{mode}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{mode}");
        assert!(
            w.wait_log(
                "exit status 1 after its CGI header block",
                Duration::from_secs(10)
            ),
            "{mode}: exit status not logged:\n{}",
            w.log()
        );
    }
}
