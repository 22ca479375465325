//! serializing and classic modes: buffered body, collected output, classic
//! conventions, bounded memory.

use std::time::Duration;

use crate::util::{
    connect, random_bytes, read_response, request, send_head, sha256, watchdog, TempDir,
};

#[test]
fn serializing_echo_is_exact() {
    let w = watchdog().mode("serializing").fprocess("cat").start();
    let body = random_bytes(3 << 20);
    let r = w.post("/", &body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(sha256(&r.body), sha256(&body));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("x-duration-seconds").is_some());
}

#[test]
fn serializing_failure_is_500_with_output() {
    let w = watchdog()
        .mode("serializing")
        .fprocess("sh -c 'echo oops; echo hidden >&2; exit 2'")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exit status 2\noops\n");
    assert!(
        w.wait_log("stderr: hidden", Duration::from_secs(5)),
        "{}",
        w.log()
    );
}

#[test]
fn serializing_timeout_is_504() {
    let w = watchdog()
        .mode("serializing")
        .fprocess("sleep 30")
        .env("exec_timeout", "300ms")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "exec_timeout exceeded (300ms)\n");
}

#[test]
fn combine_output_puts_stderr_in_the_body() {
    let w = watchdog()
        .mode("serializing")
        .env("combine_output", "true")
        .fprocess("sh -c 'echo out; echo err >&2; echo out2'")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "out\nerr\nout2\n");
}

#[test]
fn classic_defaults_combine_output_and_no_exec_timeout() {
    let w = watchdog()
        .mode("classic")
        .fprocess("sh -c 'echo out; echo err >&2'")
        .start();
    assert!(w.log().contains("exec_timeout=0 (no limit)"), "{}", w.log());
    let r = w.post("/", b"");
    assert_eq!(r.text(), "out\nerr\n");
}

#[test]
fn classic_echoes_the_request_content_type() {
    let w = watchdog().mode("classic").fprocess("cat").start();
    let r = request(
        w.port,
        "POST",
        "/",
        &[("Content-Type", "application/x-thing")],
        b"abc",
    );
    assert_eq!(r.header("content-type"), Some("application/x-thing"));
    assert_eq!(r.text(), "abc");
    let w2 = watchdog()
        .mode("classic")
        .fprocess("cat")
        .env("content_type", "text/csv")
        .start();
    let r = request(
        w2.port,
        "POST",
        "/",
        &[("Content-Type", "application/x-thing")],
        b"abc",
    );
    assert_eq!(r.header("content-type"), Some("text/csv"));
}

/// A classic handler that prints HTML, XML, a PNG or nothing, asked by a browser-like
/// GET (no Content-Type): the answer is labelled as the classic watchdog labels it, by
/// Go's `http.DetectContentType`, and an empty answer gets no Content-Type. On the old
/// code every text answer was `text/plain; charset=utf-8`, the PNG
/// `application/octet-stream`, and the empty one `text/plain; charset=utf-8`.
#[test]
fn classic_sniffs_the_output_type_as_the_classic_watchdog_does() {
    let work = TempDir::new();
    let handler = work.script(
        "handler.sh",
        r#"#!/bin/sh
case "$Http_Path" in
/html) printf '<!DOCTYPE html>\n<html><body>hi</body></html>\n' ;;
/xml) printf '  <?xml version="1.0"?>\n<feed/>\n' ;;
/png) printf '\211PNG\r\n\032\n\000\000\000\rIHDR' ;;
/text) echo 'plain words' ;;
/empty) ;;
esac
"#,
    );
    let w = watchdog()
        .mode("classic")
        .fprocess(handler.display().to_string())
        .start();
    let cases = [
        ("/html", Some("text/html; charset=utf-8")),
        ("/xml", Some("text/xml; charset=utf-8")),
        ("/png", Some("image/png")),
        ("/text", Some("text/plain; charset=utf-8")),
        ("/empty", None),
    ];
    for (path, want) in cases {
        let r = request(w.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), want, "{path}");
    }
    // The PNG's bytes pass untouched.
    let png = request(w.port, "GET", "/png", &[], b"");
    assert_eq!(png.body, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
}

#[test]
fn classic_allows_only_the_classic_methods() {
    let w = watchdog().mode("classic").fprocess("echo ok").start();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(request(w.port, m, "/", &[], b"").status, 200, "{m}");
    }
    for m in ["OPTIONS", "TRACE", "PROPFIND"] {
        assert_eq!(request(w.port, m, "/", &[], b"").status, 405, "{m}");
    }
}

#[test]
fn classic_sets_http_content_length() {
    let w = watchdog()
        .mode("classic")
        .fprocess("sh -c 'echo $Http_ContentLength'")
        .start();
    assert_eq!(w.post("/", b"12345").text(), "5\n");
}

#[test]
fn marshal_request_sends_a_json_envelope() {
    let w = watchdog()
        .mode("serializing")
        .env("marshal_request", "true")
        .fprocess("cat")
        .start();
    let r = request(w.port, "POST", "/", &[("X-Thing", "a")], b"hello");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["body"]["raw"], "aGVsbG8=");
    assert_eq!(v["header"]["X-Thing"], serde_json::json!(["a"]));
}

#[test]
fn default_cap_is_64_mib_and_answers_413() {
    let w = watchdog().mode("serializing").fprocess("cat").start();
    let mut s = connect(w.port);
    send_head(&mut s, "POST", "/", &[], Some((64 << 20) + 1));
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 413);
    // A chunked body that grows past the cap is refused too.
    let mut s = connect(w.port);
    send_head(&mut s, "POST", "/", &[], None);
    let mut ws = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..70 {
            if write!(ws, "{:x}\r\n", chunk.len()).is_err()
                || ws.write_all(&chunk).is_err()
                || ws.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = ws.write_all(b"0\r\n\r\n");
    });
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 413);
    drop(s);
    let _ = writer.join();
}
