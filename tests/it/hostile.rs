//! Slow and hostile clients (the timeouts and limits): a client can cost us a connection for a
//! bounded time only, never a handler, a descriptor or the server.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{
    assert_group_ends, assert_handler_group_ends, eventually, fd_count, pid_in, read_response,
    read_to_close, request, send_head, watchdog, zombie_children, Rng, TempDir, Watchdog,
};

/// Descriptors of an idle watchdog: counted before any connection, then checked to be
/// what a served request leaves behind too.
fn baseline_fds(w: &Watchdog) -> usize {
    let before = fd_count(w.pid());
    assert_eq!(w.get("/_/health").status, 200);
    let r = request(w.port, "POST", "/ok", &[], b"warm");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(30), || fd_count(w.pid()) <= before),
        "a served request left descriptors: {} after, {before} before",
        fd_count(w.pid())
    );
    before
}

/// Whether a chunked response (head included) ends with its final chunk.
fn chunked_is_complete(raw: &[u8]) -> bool {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let mut rest = &raw[head_end + 4..];
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let Ok(size) = usize::from_str_radix(&String::from_utf8_lossy(&rest[..eol]), 16) else {
            return false;
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return rest.starts_with(b"\r\n");
        }
        if rest.len() < size + 2 {
            return false;
        }
        rest = &rest[size + 2..];
    }
}

/// A handler that records its pid (= its process group) and then does `rest`.
fn recording(tmp: &TempDir, rest: &str) -> String {
    let script = tmp.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\ncase \"$Http_Path\" in /ok) exec cat ;; esac\necho $$ > '{}/pid'\n{rest}\n",
            tmp.path().display()
        ),
    );
    script.display().to_string()
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_read_timeout() {
    let w = watchdog().fprocess("cat").env("read_timeout", "1s").start();
    let mut s = w.connect();
    let started = Instant::now();
    // Closed at read_timeout: not before it, and not left open.
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(30));
    let took = started.elapsed();
    assert!(closed && got.is_empty(), "{got:?} after {took:?}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[test]
fn slowloris_headers_are_cut_at_read_timeout() {
    let w = watchdog().fprocess("cat").env("read_timeout", "1s").start();
    let mut s = w.connect();
    let head =
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let started = Instant::now();
    let mut cut = None;
    let mut buf = [0u8; 1024];
    // One byte every 250 ms would take 20 s to send the head.
    for b in head {
        if s.write_all(&[*b]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        match s.read(&mut buf) {
            Ok(_) => {
                cut = Some(started.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                cut = Some(started.elapsed());
                break;
            }
        }
    }
    // Cut at read_timeout: not before it, and long before the 20 s the whole head takes.
    let cut = cut.expect("the drip-fed head was never cut");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(15),
        "cut after {cut:?}"
    );
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn a_silent_body_sender_is_cut_at_read_timeout_and_its_handler_killed() {
    for mode in ["streaming", "serializing", "classic"] {
        let tmp = TempDir::new();
        let w = watchdog()
            .mode(mode)
            .fprocess(recording(&tmp, "cat >/dev/null; echo done"))
            .env("read_timeout", "1s")
            .env("exec_timeout", "30s")
            .start();
        let mut s = w.connect();
        let started = Instant::now();
        send_head(&mut s, "POST", "/slow", &[], Some(100_000));
        s.write_all(&[b'x'; 1000]).expect("first bytes");
        // ...and then silence.
        let r = read_response(&mut s, false);
        let took = started.elapsed();
        assert_eq!(r.status, 408, "{mode}: {}", r.text());
        // At read_timeout: not before it, and well before exec_timeout (30 s).
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(20),
            "{mode}: {took:?}"
        );
        let (_, closed) = read_to_close(&mut s, Duration::from_secs(30));
        assert!(closed, "{mode}: connection kept after a cut body");
        match pid_in(&tmp.path().join("pid")) {
            Some(pgid) => assert_group_ends(pgid, Duration::from_secs(2), mode),
            // serializing and classic read the body before they start the handler.
            None => assert_ne!(mode, "streaming", "handler never started"),
        }
        assert_eq!(request(w.port, "POST", "/ok", &[], b"next").text(), "next");
    }
}

/// hyper never polls a response body again while the socket is full, so only the
/// connection's write-stall bound (crate::conn) can end this, in either kind of body.
#[test]
fn a_client_that_stops_reading_is_cut_at_write_timeout_and_its_handler_killed() {
    let cases = [
        // An endless stream: the handler is still writing when the client stops.
        ("streaming", "exec head -c 400000000 /dev/zero"),
        // Fully buffered: the handler is done, hyper holds 48 MB for the client.
        ("serializing", "head -c 48000000 /dev/zero"),
    ];
    for (mode, rest) in cases {
        let tmp = TempDir::new();
        // write_timeout must leave the serializing handler time to finish on a loaded
        // machine (else the answer is an honest 504 and nothing stalls): 4 s, not 1 s.
        let w = watchdog()
            .mode(mode)
            .fprocess(recording(&tmp, rest))
            .env("write_timeout", "4s")
            .env("exec_timeout", "30s")
            .start();
        let fds = baseline_fds(&w);
        let mut s = w.connect();
        let started = Instant::now();
        send_head(&mut s, "POST", "/big", &[], Some(0));
        // Never read: the server's writes stall once the socket buffers are full.
        let pid_file = tmp.path().join("pid");
        assert!(
            eventually(Duration::from_secs(30), || pid_in(&pid_file).is_some()),
            "{mode}: handler never started"
        );
        // Cut at write_timeout (4 s), long before exec_timeout (30 s) would end it.
        assert!(
            eventually(Duration::from_secs(20), || fd_count(w.pid()) <= fds),
            "{mode}: connection still open after {:?} ({} fds, baseline {fds})",
            started.elapsed(),
            fd_count(w.pid())
        );
        assert_handler_group_ends(&pid_file, Duration::from_secs(2), mode);
        // What the client finds when it finally reads: a cut response, not a whole one.
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(30));
        assert!(closed, "{mode}");
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{mode}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
        assert!(got.len() < 40_000_000, "{mode}: {} bytes", got.len());
        assert_eq!(request(w.port, "POST", "/ok", &[], b"next").text(), "next");
    }
}

/// Regression: when the write deadline passed while a slow reader kept the body channel
/// full, the abort could not be queued and the stream ended with a clean final chunk: a
/// truncated 200 that looked whole (never allowed).
#[test]
fn a_slow_reader_cut_by_write_timeout_never_sees_a_clean_end() {
    let w = watchdog()
        .fprocess("head -c 400000000 /dev/zero")
        .env("write_timeout", "1s")
        .env("exec_timeout", "30s")
        .start();
    let mut s = w.connect();
    send_head(&mut s, "POST", "/", &[], Some(0));
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Steady but slow (about 3 MB/s): never stalled long enough to trip the stall bound.
    while started.elapsed() < Duration::from_secs(15) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(started.elapsed() < Duration::from_secs(15), "never ended");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        !chunked_is_complete(&got),
        "a stream cut at write_timeout ended cleanly after {} bytes",
        got.len()
    );
}

/// Garbage of several shapes: noise, a method or a request line then noise, a head cut
/// short, a bad chunk size, an HTTP/2 preface, a smuggling shape and, now and then, a
/// header over the size limit.
fn garbage(rng: &mut Rng, i: usize) -> Vec<u8> {
    let len = 1 + (rng.next() % 300) as usize;
    let noise = rng.bytes(len);
    let prefix: &[u8] = match i % 10 {
        0..=2 => b"",
        3 => b"POST ",
        4 => b"GET /x HTTP/1.1\r\n",
        5 => return b"GET / HTTP/1.1\r\nHost: a\r\nX-Cut: ".to_vec(),
        6 => b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        7 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        8 => b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        _ if i % 100 == 9 => {
            let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
            big.resize(big.len() + 100_000, b'a');
            big.extend_from_slice(b"\r\n\r\n");
            return big;
        }
        _ => b"GET /",
    };
    let mut out = prefix.to_vec();
    out.extend_from_slice(&noise);
    out
}

#[test]
fn ten_thousand_garbage_connections_leave_the_server_healthy() {
    let w = watchdog().fprocess("cat").env("read_timeout", "2s").start();
    let fds = baseline_fds(&w);
    let port = w.port;
    let started = Instant::now();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut answered = 0usize;
                for i in 0..2500 {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(&garbage(&mut rng, i));
                    // Half the time hang up at once; else say we are done and read.
                    if i % 2 == 0 {
                        continue;
                    }
                    let _ = s.shutdown(Shutdown::Write);
                    let (got, _) = read_to_close(&mut s, Duration::from_secs(10));
                    if got.starts_with(b"HTTP/1.1 ") {
                        answered += 1;
                    }
                }
                (2500usize, answered)
            })
        })
        .collect();
    let mut sent = 0;
    let mut answered = 0;
    for t in threads {
        let (n, a) = t.join().expect("client thread");
        sent += n;
        answered += a;
    }
    let took = started.elapsed();
    assert_eq!(sent, 10_000, "only {sent} connections in {took:?}");
    assert!(answered > 1000, "only {answered} answers");
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(request(w.port, "POST", "/ok", &[], b"fine").text(), "fine");
    assert!(
        eventually(Duration::from_secs(30), || fd_count(w.pid()) <= fds),
        "fds {} after, {fds} before",
        fd_count(w.pid())
    );
    assert!(zombie_children(w.pid()).is_empty());
    assert!(!w.log().contains("panicked"));
}

#[test]
fn an_h2c_prior_knowledge_preface_is_refused_cleanly() {
    let w = watchdog().fprocess("cat").start();
    let mut s = w.connect();
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("preface");
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(15));
    assert!(closed, "connection left open");
    // Either nothing (hyper closes) or an HTTP/1.1 error; never a 2xx.
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // An h2c upgrade request is just an HTTP/1.1 request.
    let r = request(
        w.port,
        "POST",
        "/",
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        b"plain",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_eq!(w.get("/_/health").status, 200);
}

/// What a server must do with each ambiguous framing: refuse it (400), or read it by
/// `Transfer-Encoding` and close the connection, so the bytes after it are never taken
/// for a second request.
#[test]
fn smuggling_shapes_get_400_or_are_parsed_safely_and_closed() {
    let w = watchdog().fprocess("cat").start();
    let smuggled = "GET /_/health HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: &[(&str, String)] = &[
        (
            "CL then TE",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "TE then CL",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "conflicting CL",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde{smuggled}"),
        ),
        (
            "conflicting CL list",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 5\r\n\r\nabcde{smuggled}"),
        ),
        (
            "negative CL",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\nabc{smuggled}"),
        ),
        (
            "signed CL",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc{smuggled}"),
        ),
        (
            "space before colon",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc{smuggled}"),
        ),
        (
            "obs-fold",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\nContent-Length: 3\r\n\r\nabc{smuggled}"),
        ),
        (
            "folded TE",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc{smuggled}"),
        ),
        (
            "TE not ending in chunked",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "TE in HTTP/1.0",
            format!("POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunk size overflow",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "bare LF chunk line",
            format!("POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, raw) in cases {
        let mut s = w.connect();
        s.write_all(raw.as_bytes()).expect("send");
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(15));
        let text = String::from_utf8_lossy(&got);
        assert!(closed, "{name}: connection left open: {text:?}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            usize::from(!got.is_empty()),
            "{name}: the smuggled request was answered: {text:?}"
        );
        let ok_by_te =
            text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert!(
            text.starts_with("HTTP/1.1 400") || ok_by_te || got.is_empty(),
            "{name}: {text:?}"
        );
    }
    assert_eq!(w.get("/_/health").status, 200);
}

/// Regression (found by fuzz/header_env and fuzz/static_path): `%00` decoded to a NUL
/// byte, which no environment string or file name can hold, and a name past NAME_MAX or
/// through a symlink loop cannot be opened either; the client got a 500 as if the
/// function (or we) were broken. A NUL in the path is now refused (400) before any mode
/// sees it; `%2500` still reaches the handler as `%00`.
#[test]
fn impossible_names_in_the_path_are_a_400_or_404_or_reach_the_handler_never_a_500() {
    let w = watchdog().fprocess("sh -c 'echo \"$Http_Path\"'").start();
    let r = request(w.port, "GET", "/a%00b", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(w.port, "GET", "/a%2500b", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "/a%00b\n"));

    let tmp = TempDir::new();
    std::fs::write(tmp.path().join("a"), "file a").expect("write");
    let w = watchdog()
        .mode("static")
        .env("static_path", tmp.path().display().to_string())
        .start();
    assert_eq!(w.get("/a").text(), "file a");
    std::os::unix::fs::symlink("loop", tmp.path().join("loop")).expect("symlink");
    let long = format!("/{}", "n".repeat(300));
    for path in ["/a%00", "/%00", "/a%00/../a"] {
        assert_eq!(w.get(path).status, 400, "{path}");
    }
    for path in ["/loop", "/loop/x", long.as_str()] {
        assert_eq!(w.get(path).status, 404, "{path}");
    }
}
