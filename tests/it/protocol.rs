//! Protocol fidelity: request heads RFC 9112 says a server must refuse, refused before
//! auth and before any handler, in every mode; the paths handlers are given.

use std::io::Write;

use crate::util::{self, watchdog, TempDir};

/// Sends `raw` as is and reads one response.
fn raw(port: u16, raw: &str) -> util::Resp {
    let mut s = util::connect(port);
    // The watchdog may answer and close before it has read everything.
    let _ = s.write_all(raw.as_bytes());
    util::read_response(&mut s, false)
}

/// The heads that must be refused, and with what. All of them were answered 200 on old
/// main, the handler run (or the request proxied): e.g.
/// `printf 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n' | nc 127.0.0.1 8080`.
const REFUSED: &[(&str, u16)] = &[
    ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: a b/c@d\r\n\r\n", 400),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
    ),
    ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET 127.0.0.1:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /a/../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400),
];

/// Strict heads in a fork mode, with API-key protection on: each bad head gets its
/// 400/501 (not the 401 that auth would give), and the handler never starts.
#[test]
fn bad_request_heads_are_refused_before_auth_and_the_handler() {
    let work = TempDir::new();
    let secrets = TempDir::new();
    std::fs::write(secrets.path().join("k"), "key\n").expect("secret");
    let ran = work.path().join("ran");
    let w = watchdog()
        .fprocess(format!("sh -c 'echo run >> {}; cat'", ran.display()))
        .env("api_key_secret", "k")
        .env("secrets_dir", secrets.path().display().to_string())
        .start();
    for (head, want) in REFUSED {
        let r = raw(w.port, head);
        assert_eq!(r.status, *want, "{head:?}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
    }
    assert!(!ran.exists(), "a handler ran:\n{}", w.log());
    // Good heads still reach auth, and with the key the handler.
    let ok = raw(
        w.port,
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.status, 401, "{}", ok.text());
    let ok = raw(
        w.port,
        "GET /x/../y HTTP/1.1\r\nHost: a:8080\r\nX-Api-Key: key\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ran.exists());
}

/// The same check in static mode, which has no handler: the chain refuses first.
#[test]
fn bad_request_heads_are_refused_in_static_mode() {
    let root = TempDir::new();
    std::fs::write(root.path().join("index.html"), "hi").expect("index");
    let w = watchdog()
        .mode("static")
        .env("static_path", root.path().display().to_string())
        .start();
    for (head, want) in REFUSED {
        let r = raw(w.port, head);
        assert_eq!(r.status, *want, "{head:?}: {}", r.text());
    }
    let ok = raw(
        w.port,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((ok.status, ok.text().as_str()), (200, "hi"));
}

/// Paths handed to handlers: `Http_Path` and CGI's `PATH_INFO` have their dot-segments
/// resolved (as http mode's upstream path is), a path above `/` is 400 before any
/// handler starts, and `%2500x` (a literal `%00x`) stays distinct from `%00x` (400).
/// On old main `/a/../../etc/passwd` reached both variables as is, `/%2e%2e/x` became
/// `/../x`, and `/%2500x` and `/%00x` both gave `PATH_INFO=/%00x`.
#[test]
fn handler_paths_have_dot_segments_resolved_and_never_climb() {
    let script = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n%s|%s' "$PATH_INFO" "$Http_Path""#;
    let work = TempDir::new();
    let cgi = work.script("cgi.sh", script);
    let w = watchdog()
        .env("cgi", "true")
        .fprocess(cgi.display().to_string())
        .start();
    for (path, want) in [
        ("/a/b/../c", "/a/c|/a/c"),
        ("/a/%2e%2e/b/./c", "/b/c|/b/c"),
        ("/%2500x", "/%00x|/%00x"),
        ("/x%20y", "/x y|/x y"),
    ] {
        let r = util::request(w.port, "GET", path, &[], b"");
        assert_eq!((r.status, r.text().as_str()), (200, want), "{path}");
    }
    for path in [
        "/a/../../etc/passwd",
        "/%2e%2e/x",
        "/%00x",
        "/..",
        "/a/..%2f..%2fx",
    ] {
        let r = util::request(w.port, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
}
