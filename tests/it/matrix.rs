//! The hostile matrix: every mode × every hostile behaviour, against the real binary.
//!
//! For each cell a watchdog of that mode (its own process, so its peak memory and CPU
//! are the cell's) gets one hostile request, and the test asserts:
//! - the request is over (the connection closed, `http_requests_in_flight` back to 0)
//!   within the configured deadline (`write_timeout`) + 3 s;
//! - the watchdog's peak resident memory (`VmHWM`) stays under [`RSS_MAX_MIB`];
//! - the CPU it used for the cell stays under [`CPU_MAX`], and it is idle once the
//!   request is over (under [`CPU_IDLE_MAX`] in the next half second).
//!
//! Each cell prints one line (`cargo test matrix -- --nocapture` shows the table).
//! Cells run a few at a time to keep the test short; the bounds leave room for a
//! loaded machine, and are far from what an unbounded path costs (gigabytes read,
//! held or sent, a connection kept for as long as the client likes).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::budget::raw_upstream;
use crate::util::{self, have, request, send_head, skip, watchdog, TempDir, Watchdog};

/// The request's deadline in every cell (`write_timeout`); `exec_timeout` and
/// `read_timeout` are shorter.
const DEADLINE: Duration = Duration::from_secs(3);
/// Every request must be over within the deadline and this much more: time to close
/// the connection and for the test to see it (metrics polled, descriptors counted)
/// with six cells at once on a loaded machine (4.04 s was seen against 3 s + 1 s).
/// A path the deadline does not cut is never over: its client reads or writes until
/// the test stops it.
const SLACK: Duration = Duration::from_secs(3);
/// Peak resident memory of the watchdog: what it may hold whole (64 MiB by default)
/// plus the runtime, the connection buffers and the allocator's slack.
const RSS_MAX_MIB: u64 = 192;
/// CPU the watchdog may use for one cell (copying at full speed until the deadline).
const CPU_MAX: Duration = Duration::from_secs(4);
/// CPU it may use in the half second after the request is over.
const CPU_IDLE_MAX: Duration = Duration::from_millis(250);
/// How many cells run at once.
const PARALLEL: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Streaming,
    Serializing,
    Classic,
    Cgi,
    Http,
    HttpBuffer,
    Static,
    FastCgi,
    /// A Python function under awslambdaric: buffered results.
    Lambda,
    /// The Rust function of tests/lambda-rs under lambda_runtime, through Function URL
    /// events: streamed results.
    LambdaStream,
}

const MODES: [Mode; 10] = [
    Mode::Streaming,
    Mode::Serializing,
    Mode::Classic,
    Mode::Cgi,
    Mode::Http,
    Mode::HttpBuffer,
    Mode::Static,
    Mode::FastCgi,
    Mode::Lambda,
    Mode::LambdaStream,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// A chunked upload that never ends, to a handler that answers without reading it.
    EndlessUpload,
    /// A 1000-byte body sent one byte a second.
    TrickleUpload,
    /// A handler whose output never ends, read as fast as it comes.
    EndlessOutput,
    /// The same output, read 4 KiB every 50 ms.
    SlowReader,
    /// The same output; the client reads a little and hangs up.
    ClientGone,
}

const HOSTILE: [Hostile; 5] = [
    Hostile::EndlessUpload,
    Hostile::TrickleUpload,
    Hostile::EndlessOutput,
    Hostile::SlowReader,
    Hostile::ClientGone,
];

/// Cells that do not apply, and why. Every cell applies today: static mode ignores a
/// request body, but must still not read one after its answer, and a 64 GiB sparse
/// file is its endless output. A new mode states its exceptions here.
const NOT_APPLICABLE: &[(Mode, Hostile, &str)] = &[];

/// The fork modes' handler: `/hi` answers without reading, `/cat` echoes, `/zero`
/// never stops writing.
const FORK_HANDLER: &str = r#"#!/bin/sh
case "$Http_Path" in
  /hi) echo hi ;;
  /cat) exec cat ;;
  *) exec cat /dev/zero ;;
esac
"#;

const CGI_HANDLER: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
case "$Http_Path" in
  /hi) echo hi ;;
  /cat) exec cat ;;
  *) exec cat /dev/zero ;;
esac
"#;

const PHP_HANDLER: &str = r#"<?php
$u = $_SERVER["REQUEST_URI"];
if ($u == "/hi") {
    echo "hi\n";
} elseif ($u == "/cat") {
    echo file_get_contents("php://input");
} else {
    $y = str_repeat("y", 65536);
    while (true) { echo $y; flush(); }
}
"#;

/// The Lambda function (under AWS's runtime client): `/hi` answers, `/cat` returns the
/// body, `/zero` returns 64 MiB, far over the 6 MiB a buffered result may hold (a Lambda
/// result is finite: the largest one is its endless output).
const LAMBDA_APP: &str = r#"
def handler(event, context):
    path = event.get("rawPath") if isinstance(event, dict) else None
    if path == "/zero":
        return "y" * (64 << 20)
    if path == "/cat":
        return event.get("body") or ""
    return "hi\n"
"#;

/// What one cell saw.
#[derive(Debug)]
struct Seen {
    status: Option<u16>,
    took: Duration,
    closed: bool,
    rss_mib: u64,
    cpu: Duration,
    idle_cpu: Duration,
}

fn start(mode: Mode, tmp: &TempDir) -> Watchdog {
    let timeouts = |b: util::Builder| {
        b.env("write_timeout", format!("{}s", DEADLINE.as_secs()))
            .env("exec_timeout", "2s")
            .env("read_timeout", "2s")
            .env("metrics_port", "0")
    };
    let fork = |m: &str, script: &str| {
        let path = tmp.script("handler.sh", script);
        watchdog().mode(m).fprocess(path.display().to_string())
    };
    let b = match mode {
        Mode::Streaming => fork("streaming", FORK_HANDLER),
        Mode::Serializing => fork("serializing", FORK_HANDLER),
        Mode::Classic => fork("classic", FORK_HANDLER),
        Mode::Cgi => fork("streaming", CGI_HANDLER).env("cgi", "true"),
        Mode::Http => raw_upstream(tmp),
        Mode::HttpBuffer => raw_upstream(tmp).env("http_buffer_req_body", "true"),
        Mode::Static => {
            std::fs::write(tmp.path().join("hi"), "hi\n").expect("small file");
            std::fs::write(tmp.path().join("cat"), "cat\n").expect("small file");
            let f = std::fs::File::create(tmp.path().join("zero")).expect("big file");
            f.set_len(64 << 30).expect("sparse file");
            watchdog()
                .mode("static")
                .env("static_path", tmp.path().display().to_string())
        }
        Mode::Lambda => {
            std::fs::write(tmp.path().join("app.py"), LAMBDA_APP).expect("app.py");
            watchdog()
                .mode("lambda")
                .fprocess("python3 -m awslambdaric app.handler")
                .env("PYTHONPATH", tmp.path().display().to_string())
                .env("PYTHONDONTWRITEBYTECODE", "1")
        }
        Mode::LambdaStream => {
            let bin = crate::lambda::rust_function().expect("built");
            watchdog()
                .mode("lambda")
                .fprocess(bin.display().to_string())
        }
        Mode::FastCgi => {
            let path = tmp.path().join("index.php");
            std::fs::write(&path, PHP_HANDLER).expect("php script");
            watchdog()
                .mode("fastcgi")
                .fprocess("php-cgi -d post_max_size=0 -d memory_limit=64M")
                .env("script_filename", path.display().to_string())
                .env("pool_size", "1")
        }
    };
    timeouts(b).start()
}

/// Reads until the server closes the connection, or `stop` is set (the server is
/// done with the request: what is still buffered on our side does not matter); the
/// status of the answer, if one came. `pace`: a pause after each read of `chunk` bytes.
fn read_until_closed(
    s: &mut TcpStream,
    chunk: usize,
    pace: Option<Duration>,
    stop: &AtomicBool,
) -> Option<u16> {
    let mut head = Vec::new();
    let mut buf = vec![0u8; chunk];
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    while !stop.load(Ordering::Acquire) {
        match s.read(&mut buf) {
            Ok(0) => return status_of(&head),
            Ok(n) => {
                if head.len() < 64 {
                    head.extend_from_slice(&buf[..n.min(64)]);
                }
                if let Some(p) = pace {
                    std::thread::sleep(p);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return status_of(&head),
        }
    }
    status_of(&head)
}

fn status_of(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// The hostile client, until the server closes or `stop` is set; returns the status
/// seen. Static mode gets its uploads as GETs (it refuses other methods at once).
fn hostile_client(port: u16, what: Hostile, get_only: bool, stop: &AtomicBool) -> Option<u16> {
    let mut s = util::connect(port);
    let upload = if get_only { "GET" } else { "POST" };
    match what {
        Hostile::EndlessUpload => {
            // Keep-alive: with `Connection: close` hyper ends the connection after the
            // answer anyway, which hides a server that would read on.
            send_head(&mut s, upload, "/hi", &[("Connection", "keep-alive")], None);
            let mut w = s.try_clone().expect("clone");
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    // Blocks while the server does not read; ends when it closes, or
                    // when the reader below shuts the socket down.
                    let chunk = vec![b'u'; 64 * 1024];
                    while !stop.load(Ordering::Acquire) {
                        let ok = write!(w, "{:x}\r\n", chunk.len()).is_ok()
                            && w.write_all(&chunk).is_ok()
                            && w.write_all(b"\r\n").is_ok();
                        if !ok {
                            break;
                        }
                    }
                });
                let status = read_until_closed(&mut s, 64 * 1024, None, stop);
                let _ = s.shutdown(Shutdown::Both);
                status
            })
        }
        Hostile::TrickleUpload => {
            send_head(
                &mut s,
                upload,
                "/cat",
                &[("Connection", "keep-alive")],
                Some(1000),
            );
            let mut w = s.try_clone().expect("clone");
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        if Instant::now() >= next {
                            if w.write_all(b"x").is_err() {
                                break;
                            }
                            next += Duration::from_secs(1);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                });
                let status = read_until_closed(&mut s, 64 * 1024, None, stop);
                let _ = s.shutdown(Shutdown::Both);
                status
            })
        }
        Hostile::EndlessOutput => {
            send_head(&mut s, "GET", "/zero", &[], Some(0));
            read_until_closed(&mut s, 256 * 1024, None, stop)
        }
        Hostile::SlowReader => {
            send_head(&mut s, "GET", "/zero", &[], Some(0));
            read_until_closed(&mut s, 4096, Some(Duration::from_millis(50)), stop)
        }
        Hostile::ClientGone => {
            send_head(&mut s, "GET", "/zero", &[], Some(0));
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let n = s.read(&mut buf).unwrap_or(0);
            status_of(&buf[..n])
        }
    }
}

fn scrape(mport: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", mport)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn in_flight(mport: u16) -> Option<u64> {
    requests(mport).map(|(now, _)| now)
}

/// Requests in flight, and requests over (every `http_requests_total` series summed).
fn requests(mport: u16) -> Option<(u64, u64)> {
    let text = scrape(mport)?;
    let value = |l: &str| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok();
    let now = text
        .lines()
        .find(|l| l.starts_with("http_requests_in_flight "))
        .and_then(value)?;
    let done = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(value)
        .sum();
    Some((now, done))
}

fn vm_hwm_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(") ") else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `after` starts at field 3.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // CLK_TCK is 100 on every Linux the tests run on.
    Duration::from_millis(ticks * 10)
}

/// One cell: the hostile request on its own watchdog. The request is over when the
/// watchdog counts no request in flight and has closed the connection (its descriptors
/// are back to what they were before).
fn run_cell(mode: Mode, what: Hostile) -> Seen {
    let tmp = TempDir::new();
    let w = start(mode, &tmp);
    let mport = w.metrics_port.expect("metrics port");
    // Warm: one plain request, so the cell measures the hostile one only.
    let _ = request(w.port, "GET", "/hi", &[], b"");
    let pid = w.pid();
    util::eventually(Duration::from_secs(5), || in_flight(mport) == Some(0));
    let fds = util::fd_count(pid);
    let done_before = requests(mport).map_or(0, |(_, done)| done);
    let cpu_before = cpu_time(pid);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let limit = DEADLINE + SLACK + Duration::from_secs(5);
    let (status, took) = std::thread::scope(|scope| {
        let client = scope.spawn(|| hostile_client(w.port, what, mode == Mode::Static, &stop));
        // Until the request has begun, in_flight may still read 0; a request already
        // over has been counted.
        util::eventually(limit, || {
            requests(mport).is_some_and(|(now, done)| now > 0 || done > done_before)
        });
        let over = util::eventually(limit, || {
            in_flight(mport) == Some(0) && util::fd_count(pid) <= fds
        });
        let took = started.elapsed();
        stop.store(true, Ordering::Release);
        let status = client.join().expect("client");
        (status, if over { took } else { Duration::MAX })
    });
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let before_idle = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(500));
    let idle_cpu = cpu_time(pid).saturating_sub(before_idle);
    Seen {
        status,
        took,
        closed: took != Duration::MAX,
        rss_mib: vm_hwm_mib(pid),
        cpu,
        idle_cpu,
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Streaming => "streaming",
        Mode::Serializing => "serializing",
        Mode::Classic => "classic",
        Mode::Cgi => "cgi",
        Mode::Http => "http",
        Mode::HttpBuffer => "http+buffer",
        Mode::Static => "static",
        Mode::FastCgi => "fastcgi",
        Mode::Lambda => "lambda",
        Mode::LambdaStream => "lambda-strm",
    }
}

fn hostile_name(h: Hostile) -> &'static str {
    match h {
        Hostile::EndlessUpload => "endless upload",
        Hostile::TrickleUpload => "1-byte/s upload",
        Hostile::EndlessOutput => "endless output",
        Hostile::SlowReader => "slow reader",
        Hostile::ClientGone => "client gone",
    }
}

#[test]
fn every_mode_bounds_every_hostile_client_and_handler() {
    let mut cells = Vec::new();
    for mode in MODES {
        if mode == Mode::Lambda && !crate::lambda::have_awslambdaric() {
            skip(
                "every_mode_bounds_every_hostile_client_and_handler (lambda cells)",
                "awslambdaric not installed (pip install awslambdaric==4.2.2)",
            );
            continue;
        }
        if mode == Mode::LambdaStream && crate::lambda::rust_function().is_none() {
            skip(
                "every_mode_bounds_every_hostile_client_and_handler (lambda stream cells)",
                crate::lambda::NO_RUST_FN,
            );
            continue;
        }
        if mode == Mode::FastCgi && !have("php-cgi") {
            skip(
                "every_mode_bounds_every_hostile_client_and_handler (fastcgi cells)",
                "php-cgi not installed (apt-get install php-cgi)",
            );
            continue;
        }
        for what in HOSTILE {
            match NOT_APPLICABLE
                .iter()
                .find(|(m, h, _)| *m == mode && *h == what)
            {
                Some((_, _, why)) => println!(
                    "matrix | {:<11} | {:<15} | n/a: {why}",
                    mode_name(mode),
                    hostile_name(what)
                ),
                None => cells.push((mode, what)),
            }
        }
    }
    let queue = Mutex::new(cells.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let next = queue.lock().expect("queue").next();
                let Some((mode, what)) = next else { return };
                let seen = run_cell(mode, what);
                results.lock().expect("results").push((mode, what, seen));
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(m, h, _)| {
        (
            MODES.iter().position(|x| x == m),
            HOSTILE.iter().position(|x| x == h),
        )
    });
    let mut broken = Vec::new();
    println!(
        "matrix | mode        | behaviour       | status | time (s) | peak RSS (MiB) | CPU (s) | CPU after (s)"
    );
    for (mode, what, s) in &results {
        let line = format!(
            "matrix | {:<11} | {:<15} | {:>6} | {:>8} | {:>14} | {:>7.2} | {:>6.2}",
            mode_name(*mode),
            hostile_name(*what),
            s.status.map_or("-".to_owned(), |c| c.to_string()),
            if s.took == Duration::MAX {
                "never".to_owned()
            } else {
                format!("{:.2}", s.took.as_secs_f64())
            },
            s.rss_mib,
            s.cpu.as_secs_f64(),
            s.idle_cpu.as_secs_f64(),
        );
        println!("{line}");
        let mut why = Vec::new();
        if s.took > DEADLINE + SLACK {
            why.push("not over within the deadline + 3 s");
        }
        if !s.closed {
            why.push("connection still open");
        }
        if s.rss_mib > RSS_MAX_MIB {
            why.push("peak RSS over the bound");
        }
        if s.cpu > CPU_MAX {
            why.push("CPU over the bound");
        }
        if s.idle_cpu > CPU_IDLE_MAX {
            why.push("still busy after the request");
        }
        if !why.is_empty() {
            broken.push(format!("{line}: {}", why.join(", ")));
        }
    }
    assert!(
        broken.is_empty(),
        "cells out of bounds:\n{}",
        broken.join("\n")
    );
}
