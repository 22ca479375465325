//! The doors around the request path, tried as an attacker would: unauthenticated
//! probes, the metrics port, descriptor exhaustion, connection floods, startup races.
//! Each test names the reproduction it guards against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    connect, eventually_ok, have, read_response, read_to_close, request, send_head, skip,
    try_request, watchdog, TempDir, BIN, PATIENCE,
};

const KEY: &str = "adversarial-test-key-8f3e1";

/// A secrets folder holding `secret-api-key`.
fn secrets() -> TempDir {
    let d = TempDir::new();
    std::fs::write(d.path().join("secret-api-key"), KEY).expect("write secret");
    d
}

fn scrape(mport: u16) -> String {
    let r = request(mport, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    r.text()
}

/// [`scrape`] for retry loops: a refused or reset connection is the `Err`.
fn try_scrape(mport: u16) -> std::io::Result<String> {
    let r = try_request(mport, "GET", "/metrics", &[], b"")?;
    match r.status {
        200 => Ok(r.text()),
        s => Err(std::io::Error::other(format!("metrics answered {s}"))),
    }
}

/// The value of a metric line that starts with `series ` (name and labels).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(") ").expect("stat shape").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

/// CPU time used over `over`, as a share of one core.
fn cpu_share(pid: i32, over: Duration) -> f64 {
    let before = cpu_time(pid);
    let started = Instant::now();
    std::thread::sleep(over);
    (cpu_time(pid) - before).as_secs_f64() / started.elapsed().as_secs_f64()
}

/// Reproduction: `ready_path=/ready max_inflight=1 api_key_secret=…` and a `sleep 3`
/// handler; 100 concurrent unauthenticated `GET /_/ready` started 100 handlers (300 in
/// another run), nothing logged or counted. Now one readiness request goes to the
/// function at a time, the probes that arrive meanwhile share its answer, and each run
/// is counted in `fwatchdog_ready_probe_runs_total`.
#[test]
fn concurrent_ready_probes_share_one_request_to_the_function() {
    let tmp = TempDir::new();
    let starts = tmp.path().join("starts");
    let handler = tmp.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\necho \"$Http_Path\" >> '{}'\nsleep 2\necho ready\n",
            starts.display()
        ),
    );
    let dir = secrets();
    let w = watchdog()
        .fprocess(handler.display().to_string())
        .env("ready_path", "/ready")
        .env("max_inflight", "1")
        .env("metrics_port", "0")
        .arg("--api-key-secret")
        .arg("secret-api-key")
        .arg("--secrets-dir")
        .arg(dir.path().to_str().expect("utf8"))
        .start();
    let mport = w.metrics_port.expect("metrics port");
    let port = w.port;
    let probes: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || request(port, "GET", "/_/ready", &[], b"")))
        .collect();
    let answers: Vec<_> = probes
        .into_iter()
        .map(|t| t.join().expect("probe"))
        .collect();
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ready\n");
    }
    let ran = std::fs::read_to_string(&starts).unwrap_or_default();
    let runs = ran.lines().count();
    assert!(
        (1..=5).contains(&runs),
        "100 probes started {runs} handlers:\n{ran}"
    );
    assert!(ran.lines().all(|l| l == "/ready"), "{ran}");
    assert_eq!(
        metric(&scrape(mport), "fwatchdog_ready_probe_runs_total"),
        runs as u64
    );
    // The answer is shared while it runs, not cached: a later probe asks again.
    assert_eq!(w.get("/_/ready").status, 200);
    assert_eq!(
        metric(&scrape(mport), "fwatchdog_ready_probe_runs_total"),
        runs as u64 + 1
    );
    // Probes stay unauthenticated; the function itself does not.
    assert_eq!(w.post("/", b"").status, 401);
}

/// Reproduction: with `read_timeout=3s`, an idle connection and a half-sent head to the
/// metrics port (:8081) stayed open 40 s: the metrics server had no timer, so no
/// header-read deadline. It now shares the function port's connection settings.
#[test]
fn metrics_port_closes_idle_and_half_sent_heads_at_read_timeout() {
    let w = watchdog()
        .fprocess("cat")
        .env("metrics_port", "0")
        .env("read_timeout", "1s")
        .start();
    let mport = w.metrics_port.expect("metrics port");
    let idle = connect(mport);
    let mut half = connect(mport);
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        .expect("half head");
    // Keep-alive: idle after a whole request and its answer.
    let mut kept = connect(mport);
    send_head(
        &mut kept,
        "GET",
        "/metrics",
        &[("Connection", "keep-alive")],
        Some(0),
    );
    let started = Instant::now();
    let handles: Vec<_> = [
        ("idle", idle),
        ("half-sent head", half),
        ("keep-alive", kept),
    ]
    .into_iter()
    .map(|(what, mut s)| {
        std::thread::spawn(move || {
            let (got, closed) = read_to_close(&mut s, Duration::from_secs(20));
            (what, got, closed, started.elapsed())
        })
    })
    .collect();
    for h in handles {
        let (what, got, closed, took) = h.join().expect("reader");
        // Closed at read_timeout (1 s): not before it, and not left open.
        assert!(closed, "{what}: still open after {took:?}");
        assert!(
            took >= Duration::from_millis(900),
            "{what}: closed after {took:?}"
        );
        match what {
            "keep-alive" => assert!(got.starts_with(b"HTTP/1.1 200"), "{what}"),
            // A cut head may get hyper's 408 or nothing at all.
            _ => assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 408"), "{what}"),
        }
    }
    // The same head limits as the function port.
    let big = "a".repeat(200 * 1024);
    let r = request(mport, "GET", "/metrics", &[("X-Big", big.as_str())], b"");
    assert_eq!(r.status, 431);
    assert!(scrape(mport).contains("http_requests_total"));
}

/// Reproduction: under `prlimit --nofile=1024`, 1,100 idle connections to the metrics
/// port made its accept loop retry at once on EMFILE: fwatchdog sat at 100 % of a core
/// and stopped answering `/_/health` and authorised requests on the main port until the
/// attacker let go; the main port logged ~50 accept warnings a second. Now the metrics
/// port holds a few connections at most (the rest are closed at once), both ports back
/// off on accept errors, and the warning is written at most once a second.
#[test]
fn descriptor_exhaustion_backs_off_and_the_main_port_recovers() {
    if !have("prlimit") {
        skip(
            "descriptor_exhaustion_backs_off_and_the_main_port_recovers",
            "prlimit not installed",
        );
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "prlimit is required in CI"
        );
        return;
    }
    let dir = secrets();
    let w = watchdog()
        .wrap(&["prlimit", "--nofile=64:64"])
        .fprocess("cat")
        .env("metrics_port", "0")
        .env("read_timeout", "30s")
        .env("max_connections", "1000")
        .arg("--api-key-secret")
        .arg("secret-api-key")
        .arg("--secrets-dir")
        .arg(dir.path().to_str().expect("utf8"))
        .start();
    let mport = w.metrics_port.expect("metrics port");
    let pid = w.pid();
    let authorised = |port: u16| request(port, "POST", "/", &[("X-Api-Key", KEY)], b"hi");
    assert_eq!(authorised(w.port).text(), "hi");

    // 1. More idle connections to the metrics port than the process has descriptors.
    let attack: Vec<TcpStream> = (0..100).map(|_| connect(mport)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let share = cpu_share(pid, Duration::from_secs(2));
    let _ = writeln!(
        std::io::stderr(),
        "metrics-port flood: fwatchdog used {:.1} % of a core",
        share * 100.0
    );
    assert!(share < 0.5, "{:.0} % of a core", share * 100.0);
    assert_eq!(w.get("/_/health").status, 200, "main port during the flood");
    assert_eq!(authorised(w.port).text(), "hi");
    drop(attack);
    assert!(eventually_ok(Duration::from_secs(30), || {
        let m = try_scrape(mport)?;
        Ok(metric(&m, "fwatchdog_connections_rejected_total{port=\"metrics\"}") >= 50)
    }));

    // 2. More idle connections to the main port than descriptors: accept fails with
    // EMFILE until they go.
    let attack: Vec<TcpStream> = (0..100).map(|_| connect(w.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let warned_before = w.log().matches("accept failed").count();
    let counting = Instant::now();
    let share = cpu_share(pid, Duration::from_secs(2));
    let warned = w.log().matches("accept failed").count() - warned_before;
    // At most one warning a second, over however long the 2 s really took on this machine.
    let seconds = counting.elapsed().as_secs() + 1;
    let _ = writeln!(
        std::io::stderr(),
        "main-port flood: fwatchdog used {:.1} % of a core, {warned} accept warnings in {seconds} s",
        share * 100.0
    );
    assert!(share < 0.5, "{:.0} % of a core", share * 100.0);
    assert!(
        warned as u64 <= seconds + 1,
        "{warned} accept warnings in {seconds} s:\n{}",
        w.log()
    );
    w.expect_log("accept failed on the main port");
    drop(attack);
    assert!(
        eventually_ok(Duration::from_secs(30), || Ok(w
            .try_get("/_/health")?
            .status
            == 200)),
        "health after the flood"
    );
    assert_eq!(authorised(w.port).text(), "hi");
}

/// Reproduction: about one start in five, `/_/health` already answered 200 while
/// `Listening on port: N` was still queued in the log writer (which lingers 25 ms to
/// batch lines). Health now waits until the startup lines are written. stderr goes to a
/// file here, so what was written before the 200 is exactly what the file holds.
#[test]
fn startup_lines_are_written_before_health_first_answers() {
    for i in 0..30 {
        let tmp = TempDir::new();
        let port = crate::util::child_port();
        let log_path = tmp.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(BIN)
            .env("fprocess", "cat")
            .env("TMPDIR", tmp.path())
            .env("port", port.to_string())
            .env("bind_address", "127.0.0.1")
            .env("metrics_port", "off")
            .env("healthcheck_interval", "0")
            // Half the starts without a lock file: health can answer sooner there.
            .env("suppress_lock", if i % 2 == 0 { "true" } else { "false" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        let written = loop {
            assert!(
                Instant::now() < deadline,
                "start {i}: health never answered 200"
            );
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            if s.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .is_err()
            {
                continue;
            }
            let mut first = [0u8; 12];
            if s.read_exact(&mut first).is_ok() && &first == b"HTTP/1.1 200" {
                break std::fs::read_to_string(&log_path).expect("read log");
            }
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        assert!(
            written.contains(&format!("Listening on port: {port}")),
            "start {i}: health answered 200 before the startup lines were written:\n{written}"
        );
    }
}

/// Reproduction: 2,000 connections each holding a 90 KiB partial head took RSS to
/// 282 MiB (~125 KiB each), enough for clients without a key to get a 256 MiB function
/// container OOM-killed. Now at most `max_connections` are open; more are closed as
/// soon as they are accepted and counted, and the port serves again once they go.
#[test]
fn connections_over_max_connections_are_closed_at_once_and_counted() {
    let w = watchdog()
        .fprocess("cat")
        .env("max_connections", "4")
        .env("metrics_port", "0")
        .env("read_timeout", "30s")
        .start();
    let mport = w.metrics_port.expect("metrics port");
    let pad = "a".repeat(90 * 1024);
    let partial = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {pad}");
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = w.connect();
            s.write_all(partial.as_bytes()).expect("partial head");
            s
        })
        .collect();
    for i in 0..5 {
        let mut s = w.connect();
        let _ = s.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n");
        // Closed unanswered, long before read_timeout (30 s) could have ended it.
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(15));
        assert!(closed && got.is_empty(), "extra connection {i}: {got:?}");
    }
    // The held connections are still served.
    for mut s in held.into_iter().take(1) {
        s.write_all(b"\r\n\r\n").expect("end of head");
        assert_eq!(read_response(&mut s, false).status, 200);
    }
    let m = scrape(mport);
    assert_eq!(
        metric(&m, "fwatchdog_connections_rejected_total{port=\"main\"}"),
        5
    );
    assert!(
        w.wait_log(
            "4 connections open on the main port (max_connections)",
            PATIENCE
        ),
        "{}",
        w.log()
    );
    assert!(eventually_ok(Duration::from_secs(30), || Ok(w
        .try_post("/", b"back")?
        .text()
        == "back")));
}
