//! Handler processes: process groups, kills that reach grandchildren, a clean
//! inheritance (fds, signals), stderr that never stalls, the Http_* environment.

use std::time::{Duration, Instant};

use crate::util::{
    eventually, group_members, request, send_head, watchdog, zombie_children, TempDir,
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
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t.elapsed()
    );
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("int");
    assert!(
        eventually(Duration::from_secs(2), || group_members(pgid).is_empty()),
        "group {pgid} survived"
    );
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
    assert!(t.elapsed() < Duration::from_millis(2500));
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("int");
    assert!(eventually(Duration::from_secs(2), || group_members(pgid).is_empty()));
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
        assert!(
            eventually(Duration::from_secs(5), || pidfile.exists()),
            "{mode}: handler never started"
        );
        let pgid: i32 = eventually(Duration::from_secs(2), || {
            std::fs::read_to_string(&pidfile)
                .map(|s| !s.trim().is_empty())
                .unwrap_or(false)
        })
        .then(|| {
            std::fs::read_to_string(&pidfile)
                .expect("pid")
                .trim()
                .parse()
                .expect("int")
        })
        .expect("pid written");
        drop(s);
        assert!(
            eventually(Duration::from_secs(3), || group_members(pgid).is_empty()),
            "{mode}: group {pgid} survived the disconnect"
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
        for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR2):\n    signal.signal(s, signal.SIG_IGN)\n\
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
    assert!(t.elapsed() < Duration::from_secs(10));
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

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
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
            eventually(Duration::from_secs(3), || fd_count(pid) <= fds),
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
            eventually(Duration::from_secs(2), || zombie_children(pid).is_empty()),
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

#[test]
fn cgi_headers_false_passes_no_http_vars() {
    let w = watchdog()
        .fprocess("env")
        .env("cgi_headers", "false")
        .start();
    let r = request(w.port, "GET", "/?q=1", &[("X-A", "1")], b"");
    assert!(
        env_of(&r).iter().all(|(k, _)| !k.starts_with("Http_")),
        "{}",
        r.text()
    );
}

#[test]
fn handler_inherits_our_environment() {
    let w = watchdog().fprocess("env").env("MY_SETTING", "kept").start();
    let env = env_of(&w.post("/", b""));
    assert_eq!(var(&env, "MY_SETTING"), Some("kept"));
}
