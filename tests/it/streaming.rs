//! streaming mode: full-duplex piping and honest statuses.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::util::{
    random_bytes, read_response, request, send_head, watchdog, write_tolerant, TempDir,
};

/// Sends `body` while the response is read, as a real client would. A write that fails
/// because the server has answered and closed is the server's right (it reads only a
/// little past its answer): what the test checks is the answer.
fn echo(port: u16, body: &[u8], chunked: bool) -> crate::util::Resp {
    let mut s = crate::util::connect(port);
    send_head(
        &mut s,
        "POST",
        "/",
        &[],
        if chunked { None } else { Some(body.len()) },
    );
    let mut w = s.try_clone().expect("clone");
    let data = body.to_vec();
    // The server may answer (413) and close before it has read the whole body: the rest
    // then fails to send (EPIPE, ECONNRESET), and the answer it sent is what counts.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for piece in data.chunks(1 << 20) {
            let sent = if chunked {
                write_tolerant(&mut w, format!("{:x}\r\n", piece.len()).as_bytes())?
                    && write_tolerant(&mut w, piece)?
                    && write_tolerant(&mut w, b"\r\n")?
            } else {
                write_tolerant(&mut w, piece)?
            };
            if !sent {
                return Ok(());
            }
        }
        if chunked {
            write_tolerant(&mut w, b"0\r\n\r\n")?;
        }
        Ok(())
    });
    let resp = read_response(&mut s, false);
    writer.join().expect("writer").expect("writing the body");
    resp
}

#[test]
fn echo_of_64_mib_is_byte_exact_with_content_length_and_chunked() {
    let w = watchdog().fprocess("cat").start();
    let body = random_bytes(64 << 20);
    for chunked in [false, true] {
        let r = echo(w.port, &body, chunked);
        assert_eq!(r.status, 200, "chunked={chunked}");
        assert!(r.complete, "chunked={chunked}");
        assert_eq!(r.body.len(), body.len(), "chunked={chunked}");
        // Compared, not hashed: SHA-256 of 64 MiB in a debug build takes seconds.
        if r.body != body {
            let first = r.body.iter().zip(&body).position(|(a, b)| a != b);
            panic!("chunked={chunked}: bodies differ from byte {first:?}");
        }
    }
}

#[test]
fn handler_writing_before_reading_completes() {
    let w = watchdog()
        .fprocess("sh -c 'head -c 1048576 /dev/zero; cat >/dev/null; echo done'")
        .start();
    let r = echo(w.port, &random_bytes(4 << 20), false);
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.body.len(), (1 << 20) + 5);
}

#[test]
fn handler_that_never_reads_stdin_completes() {
    let w = watchdog().fprocess("echo hi").start();
    let r = echo(w.port, &random_bytes(8 << 20), false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hi\n");
}

#[test]
fn non_zero_exit_before_output_is_500() {
    let w = watchdog().fprocess("sh -c 'exit 3'").start();
    let r = w.post("/", b"x");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exit status 3\n");
    assert!(r.header("x-duration-seconds").is_some());
}

#[test]
fn command_that_cannot_start_is_500_naming_it() {
    // A missing program is refused at startup; one removed after startup is a 500.
    let tmp = TempDir::new();
    let handler = tmp.script("handler", "#!/bin/sh\ncat\n");
    let w = watchdog()
        .fprocess(format!("{} --flag", handler.display()))
        .start();
    std::fs::remove_file(&handler).expect("rm handler");
    let r = w.post("/", b"x");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains(&handler.display().to_string()),
        "{}",
        r.text()
    );
    // The server keeps serving.
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn timeout_before_output_is_504() {
    let w = watchdog()
        .fprocess("sleep 30")
        .env("exec_timeout", "500ms")
        .start();
    let t = Instant::now();
    let r = w.post("/", b"");
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "exec_timeout exceeded (500ms)\n");
    // At the deadline, long before the handler's 30 s.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn closing_stdout_without_output_then_hanging_is_504_with_its_duration() {
    // stdout reaches EOF at once, so the head waits for the exit, which never comes.
    let w = watchdog()
        .fprocess("sh -c 'exec 1>&-; sleep 10'")
        .env("exec_timeout", "500ms")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "exec_timeout exceeded (500ms)\n");
    let took: f64 = r
        .header("x-duration-seconds")
        .expect("a 504 carries X-Duration-Seconds")
        .parse()
        .expect("seconds");
    assert!((0.4..5.0).contains(&took), "{took}");
}

#[test]
fn failure_after_output_aborts_the_response() {
    let w = watchdog().fprocess("sh -c 'echo partial; exit 3'").start();
    let r = w.post("/", b"");
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "a failed handler must not look like a clean 200"
    );
    assert_eq!(r.text(), "partial\n");
}

#[test]
fn failure_after_output_with_te_trailers_sends_exit_code() {
    let w = watchdog().fprocess("sh -c 'echo partial; exit 3'").start();
    let r = request(w.port, "POST", "/", &[("TE", "trailers")], b"");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(
        r.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-exit-code"))
            .map(|(_, v)| v.as_str()),
        Some("3")
    );
}

#[test]
fn timeout_after_output_aborts_the_response() {
    let w = watchdog()
        .fprocess("sh -c 'echo started; sleep 30'")
        .env("exec_timeout", "700ms")
        .start();
    let t = Instant::now();
    let r = w.post("/", b"");
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    // At the deadline, long before the handler's 30 s.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn output_is_flushed_as_it_is_produced() {
    // The handler writes a line, then waits for the test: the line can only arrive now
    // if it was sent on as it was produced.
    let tmp = TempDir::new();
    let go = tmp.path().join("go");
    let w = watchdog()
        .fprocess(format!(
            "sh -c 'echo one; while [ ! -e {} ]; do sleep 0.01; done; echo two'",
            go.display()
        ))
        .start();
    let mut s = w.connect();
    send_head(&mut s, "POST", "/", &[], Some(0));
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .expect("the line \"one\" before the handler ends");
        assert!(n > 0, "the response ended before the line \"one\"");
        if line.trim() == "one" {
            break;
        }
    }
    std::fs::write(&go, "").expect("let the handler finish");
}

#[test]
fn successful_empty_output_is_200() {
    let w = watchdog().fprocess("true").start();
    let r = w.post("/", b"ignored");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[test]
fn max_body_bytes_with_content_length_is_413_before_the_handler_starts() {
    let tmp = TempDir::new();
    let marker = tmp.path().join("ran");
    let w = watchdog()
        .fprocess(format!("sh -c 'touch {}; cat'", marker.display()))
        .env("max_body_bytes", "1000")
        .start();
    let r = w.post("/", &[0u8; 1001]);
    assert_eq!(r.status, 413);
    assert!(!marker.exists(), "handler must not start");
    assert_eq!(w.post("/", &[1u8; 1000]).status, 200);
}

#[test]
fn max_body_bytes_cuts_a_chunked_upload() {
    let w = watchdog()
        .fprocess("sh -c 'cat >/dev/null; echo never'")
        .env("max_body_bytes", "100000")
        .start();
    let r = echo(w.port, &random_bytes(1 << 20), true);
    assert_eq!(r.status, 413);
    assert_eq!(w.get("/_/health").status, 200);
}

#[test]
fn content_type_setting_applies() {
    let w = watchdog()
        .fprocess("echo {}")
        .env("content_type", "application/json")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.header("content-type"), Some("application/json"));
}
