//! Handler processes: process groups, kills that reach grandchildren, a clean
//! inheritance (fds, signals), stderr that never stalls, the Http_* environment.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::{
    self, assert_handler_group_ends, eventually, fd_count, read_pid, request, send_head, watchdog,
    zombie_children, TempDir,
};

fn env_of(r: &crate::util::Resp) -> Vec<(String, String)> {
    r.text()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn var<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn handler_runs_in_its_own_process_group() {
    let w = watchdog()
        .fprocess("sh -c 'echo $$; cut -d\" \" -f5 /proc/$$/stat'")
        .start();
    let r = w.post("/", b"");
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.text());
    assert_eq!(lines[0], lines[1], "pgid must equal the handler's pid");
    assert_ne!(lines[1], w.pid().to_string());
}

#[test]
fn timeout_kills_the_whole_group_even_when_a_grandchild_holds_stdout() {
    let tmp = TempDir::new();
    let pidfile = tmp.path().join("pid");
    let w = watchdog()
        .fprocess(format!(
            "sh -c 'echo $$ > {}; sleep 100 & sleep 100'",
            pidfile.display()
        ))
        .env("exec_timeout", "1s")
        .start();
    let t = Instant::now();
    let r = w.post("/", b"");
    assert_eq!(r.status, 504);
    // At the deadline, long before the handler's 100 s.
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert_handler_group_ends(&pidfile, Duration::from_secs(2), "timed-out handler");
}

#[test]
fn streaming_timeout_after_output_kills_grandchildren_too() {
    let tmp = TempDir::new();
    let pidfile = tmp.path().join("pid");
    let w = watchdog()
        .fprocess(format!(
            "sh -c 'echo $$ > {}; echo hi; sleep 100 & sleep 100'",
            pidfile.display()
        ))
        .env("exec_timeout", "800ms")
        .start();
    let t = Instant::now();
    let r = w.post("/", b"");
    assert!(!r.complete);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_handler_group_ends(&pidfile, Duration::from_secs(2), "timed-out handler");
}

#[test]
fn client_disconnect_kills_the_handler_group() {
    for mode in ["streaming", "serializing"] {
        let tmp = TempDir::new();
        let pidfile = tmp.path().join("pid");
        let w = watchdog()
            .mode(mode)
            .fprocess(format!(
                "sh -c 'echo $$ > {}; sleep 100 & sleep 100'",
                pidfile.display()
            ))
            .start();
        let mut s = w.connect();
        send_head(&mut s, "POST", "/", &[], Some(0));
        read_pid(&pidfile); // the handler runs
        drop(s);
        assert_handler_group_ends(
            &pidfile,
            Duration::from_secs(3),
            &format!("{mode}: after the disconnect"),
        );
        assert_eq!(w.get("/_/health").status, 200);
    }
}

#[test]
fn handler_gets_exactly_fds_0_1_2_even_when_we_inherited_more() {
    let w = watchdog()
        .wrap(&["sh", "-c", "exec 7</etc/hostname 9>/dev/null; exec \"$0\""])
        .fprocess("sh -c 'ls /proc/$$/fd; true'")
        .start();
    let r = w.post("/", b"");
    assert_eq!(r.text(), "0\n1\n2\n");
}

#[test]
fn handler_signal_mask_and_dispositions_are_clean() {
    let wrapper = "import os, signal, sys\n\
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGTERM, signal.SIGCHLD])\n\
        for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR2, signal.SIGRTMIN + 1):\n    signal.signal(s, signal.SIG_IGN)\n\
        os.execv(sys.argv[1], sys.argv[1:])\n";
    let w = watchdog()
        .wrap(&["python3", "-c", wrapper])
        .fprocess("grep -E '^Sig(Blk|Ign)' /proc/self/status")
        .start();
    let r = w.post("/", b"");
    assert_eq!(
        r.text(),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

#[test]
fn stderr_flood_and_a_one_mib_line_never_stall() {
    let w = watchdog()
        .fprocess("sh -c 'head -c 1048576 /dev/zero | tr \"\\0\" a >&2; echo >&2; seq 1 20000 >&2; echo ok'")
        .start();
    let t = Instant::now();
    let r = w.post("/", b"");
    assert_eq!(r.text(), "ok\n");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(w.wait_log("stderr: 20000", Duration::from_secs(5)));
    let log = w.log();
    let long: Vec<usize> = log
        .lines()
        .filter(|l| l.ends_with('a') && l.contains("stderr: aaaa"))
        .map(|l| l.split("stderr: ").nth(1).map_or(0, str::len))
        .collect();
    assert_eq!(
        long.iter().sum::<usize>(),
        1 << 20,
        "the whole line is logged"
    );
    assert!(
        long.iter().all(|n| *n <= 65536) && long.len() == 16,
        "split at log_buffer_size: {long:?}"
    );
}

#[test]
fn log_buffer_size_splits_lines_there() {
    let w = watchdog()
        .fprocess("sh -c 'echo abcdefghij >&2'")
        .env("log_buffer_size", "4")
        .start();
    w.post("/", b"");
    assert!(
        w.wait_log("stderr: ij", Duration::from_secs(5)),
        "{}",
        w.log()
    );
    assert!(w.log().contains("stderr: abcd\n") && w.log().contains("stderr: efgh\n"));
}

fn status_field(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("field")
}

#[test]
fn thousands_of_requests_leave_no_fd_thread_or_zombie_growth() {
    for mode in ["streaming", "serializing"] {
        let w = watchdog()
            .mode(mode)
            .fprocess("sh -c 'cat; echo err >&2; exit $(($$ % 2))'")
            .start();
        let pid = w.pid();
        let port = w.port;
        let run = |n: usize| {
            for _ in 0..n {
                // Odd pids exit 1 after output: streaming aborts those responses.
                let r = request(port, "POST", "/", &[], b"hello");
                assert!(r.status == 200 || r.status == 500, "{}", r.status);
            }
        };
        run(200);
        std::thread::sleep(Duration::from_millis(200));
        let (fds, threads, rss) = (
            fd_count(pid),
            status_field(pid, "Threads:"),
            status_field(pid, "VmRSS:"),
        );
        run(1500);
        assert!(
            eventually(Duration::from_secs(30), || fd_count(pid) <= fds),
            "{mode}: fds {fds} → {}",
            fd_count(pid)
        );
        assert!(
            status_field(pid, "Threads:") <= threads + 2,
            "{mode}: threads grew"
        );
        let rss_after = status_field(pid, "VmRSS:");
        assert!(
            rss_after < rss + 4096,
            "{mode}: RSS {rss} kB → {rss_after} kB"
        );
        assert!(
            eventually(Duration::from_secs(30), || zombie_children(pid).is_empty()),
            "{mode}: zombies left"
        );
    }
}

#[test]
fn http_env_follows_the_canonical_rule() {
    let w = watchdog().fprocess("env").start();
    let r = request(
        w.port,
        "POST",
        "/some%20path/x?a=1&b=two",
        &[
            ("X-ODD-name", "odd"),
            ("x-api-key", "passes-when-auth-is-off"),
            ("a_b", "under"),
            ("Proxy", "http://evil.example"),
            ("Method", "FAKE"),
            ("Content-Type", "text/plain"),
            ("X-Multi", "first"),
            ("X-Multi", "second"),
        ],
        b"body",
    );
    let env = env_of(&r);
    assert_eq!(var(&env, "Http_X_Odd_Name"), Some("odd"));
    assert_eq!(var(&env, "Http_X_Api_Key"), Some("passes-when-auth-is-off"));
    assert_eq!(var(&env, "Http_A_b"), Some("under"));
    assert_eq!(var(&env, "Http_Content_Type"), Some("text/plain"));
    assert_eq!(var(&env, "Http_X_Multi"), Some("first"));
    assert_eq!(var(&env, "Http_Proxy"), None, "httpoxy");
    assert_eq!(var(&env, "Http_Method"), Some("POST"));
    assert_eq!(var(&env, "Http_Path"), Some("/some path/x"));
    assert_eq!(var(&env, "Http_Query"), Some("a=1&b=two"));
    assert_eq!(var(&env, "Http_Host"), Some("127.0.0.1"));
    assert_eq!(var(&env, "Http_ContentLength"), None, "classic only");
}

/// With an absolute-form target the target's authority is the host, and CONNECT is not
/// run. Reproduction: `GET http://evil.example:9999/admin?x=1` with `Host: legit.example`
/// gave the handler `Http_Host=legit.example` (and, with `cgi=true`, `HTTP_HOST` and
/// `SERVER_NAME` from the header); `CONNECT evil.example:443` ran the handler. Now the
/// handler sees `evil.example:9999` everywhere and CONNECT is a 405 that runs nothing.
#[test]
fn absolute_form_target_sets_the_host_and_connect_is_405() {
    let raw = |port: u16, head: &str| {
        let mut s = util::connect(port);
        s.write_all(head.as_bytes()).expect("write");
        util::read_response(&mut s, false)
    };
    let get = "GET http://evil.example:9999/admin?x=1 HTTP/1.1\r\nHost: legit.example\r\nConnection: close\r\n\r\n";
    for mode in ["streaming", "serializing"] {
        let w = watchdog().mode(mode).fprocess("env").start();
        let r = raw(w.port, get);
        let env = env_of(&r);
        assert_eq!(var(&env, "Http_Host"), Some("evil.example:9999"), "{mode}");
        assert_eq!(var(&env, "Http_Path"), Some("/admin"), "{mode}");

        let tmp = TempDir::new();
        let ran = tmp.path().join("ran");
        let w = watchdog()
            .mode(mode)
            .env("cgi", "true")
            .fprocess(format!(
                "sh -c 'echo x >> {}; printf \"Content-Type: text/plain\\n\\n\"; env'",
                ran.display()
            ))
            .start();
        let r = raw(w.port, get);
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let env = env_of(&r);
        assert_eq!(var(&env, "HTTP_HOST"), Some("evil.example:9999"), "{mode}");
        assert_eq!(var(&env, "SERVER_NAME"), Some("evil.example"), "{mode}");
        let _ = std::fs::remove_file(&ran);
        let r = raw(
            w.port,
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        );
        assert_eq!(r.status, 405, "{mode}: {}", r.text());
        assert!(!ran.exists(), "{mode}: CONNECT ran the handler");
    }
}

#[test]
fn cgi_headers_false_passes_no_http_vars() {
    let w = watchdog()
        .fprocess("env")
        .env("cgi_headers", "false")
        .start();
    let r = request(w.port, "GET", "/?q=1", &[("X-A", "1")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let env = env_of(&r);
    // The handler's environment was there to look at...
    assert!(var(&env, "PATH").is_some(), "{}", r.text());
    // ...and holds none of the request.
    let http: Vec<_> = env.iter().filter(|(k, _)| k.starts_with("Http_")).collect();
    assert!(http.is_empty(), "{http:?}");
}

#[test]
fn handler_inherits_our_environment() {
    let w = watchdog().fprocess("env").env("MY_SETTING", "kept").start();
    let env = env_of(&w.post("/", b""));
    assert_eq!(var(&env, "MY_SETTING"), Some("kept"));
}
