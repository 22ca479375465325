//! API-key protection through the real binary, with temp secrets folders.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use crate::util::{eventually, request, send_head, watchdog, TempDir, PATIENCE};

const KEY: &str = "R^YqzKzSJw51K9zPpQ3R3N";

fn secrets(files: &[(&str, &str)]) -> TempDir {
    let d = TempDir::new();
    for (name, content) in files {
        std::fs::write(d.path().join(name), content).expect("write secret");
    }
    d
}

fn protected(dir: &TempDir, fprocess: &str) -> crate::util::Builder {
    watchdog()
        .fprocess(fprocess)
        .arg("--api-key-secret")
        .arg("secret-api-key")
        .arg("--secrets-dir")
        .arg(dir.path().to_str().expect("utf8"))
}

fn call(port: u16, key: Option<&str>) -> crate::util::Resp {
    match key {
        Some(k) => request(port, "POST", "/", &[("X-Api-Key", k)], b"x"),
        None => request(port, "POST", "/", &[], b"x"),
    }
}

fn assert_denied(r: &crate::util::Resp) {
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "Access denied!\n");
    assert_eq!(
        r.header("www-authenticate"),
        Some("ApiKey header=\"X-Api-Key\"")
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[test]
fn right_key_passes_and_every_wrong_one_gets_the_same_401() {
    let d = secrets(&[("secret-api-key", &format!("{KEY}\n"))]);
    let w = protected(&d, "echo Unlocked the function!").start();
    let r = call(w.port, Some(KEY));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Unlocked the function!\n")
    );
    for bad in [
        None,
        Some(""),
        Some("thisiswrong"),
        Some(&KEY[..KEY.len() - 1]),
        Some(&format!("{KEY}x")),
    ] {
        assert_denied(&call(w.port, bad));
    }
    // Twice is not once.
    let r = request(
        w.port,
        "POST",
        "/",
        &[("X-Api-Key", KEY), ("X-Api-Key", KEY)],
        b"",
    );
    assert_denied(&r);
    // Probes are never protected.
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(w.get("/_/ready").status, 200);
    let log = w.log();
    assert!(!log.contains(KEY) && !log.contains("thisiswrong"), "{log}");
    assert!(log.contains(&format!(
        "API key secret secret-api-key: loaded from {}",
        d.path().join("secret-api-key").display()
    )));
}

#[test]
fn several_secrets_and_several_keys_per_file() {
    let d = secrets(&[("a", "  one \n\n two\n"), ("b", "three")]);
    let w = watchdog()
        .fprocess("echo ok")
        .env("api_key_secret", "a,b")
        .env("secrets_dir", d.path().to_str().expect("utf8"))
        .start();
    for k in ["one", "two", "three"] {
        assert_eq!(call(w.port, Some(k)).status, 200, "{k}");
    }
    assert_eq!(call(w.port, Some("one two")).status, 401);
}

#[test]
fn custom_header_name() {
    let d = secrets(&[("secret-api-key", KEY)]);
    let w = protected(&d, "echo ok")
        .env("api_key_header", "X-Token")
        .start();
    assert_eq!(
        request(w.port, "GET", "/", &[("X-Token", KEY)], b"").status,
        200
    );
    let r = request(w.port, "GET", "/", &[("X-Api-Key", KEY)], b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("ApiKey header=\"X-Token\"")
    );
}

#[test]
fn fails_closed_on_missing_empty_or_unreadable_secrets() {
    let d = secrets(&[("empty", " \n\t\n")]);
    std::fs::create_dir(d.path().join("a-dir")).expect("mkdir");
    for name in ["missing", "empty", "a-dir"] {
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("api_key_secret", name)
            .env("secrets_dir", d.path().to_str().expect("utf8"))
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{name}: {out}");
        assert!(
            out.contains(&d.path().join(name).display().to_string()),
            "{name}: {out}"
        );
        assert!(!out.contains("Listening on port"));
        // The advice fits the case: an empty file exists already.
        let advice_missing = out.contains("secrets must exist");
        assert_eq!(advice_missing, name == "missing", "{name}: {out}");
        if name == "empty" {
            assert!(out.contains("(holds no key"), "{out}");
            assert!(out.contains("at least one key"), "{out}");
        }
    }
}

#[test]
fn default_lookup_lists_both_paths_and_falls_back_to_run_secrets() {
    if !has_unshare_mount() {
        return crate::util::skip(
            "default_lookup_lists_both_paths_and_falls_back_to_run_secrets",
            "unshare --mount not available (needs root)",
        );
    }
    // A private mount namespace with empty /var/openfaas and /run: the real ones are untouched.
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("api_key_secret", "nope")
        .wrap(&["unshare", "--mount", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs t /run && mkdir -p /var/openfaas && mount -t tmpfs t /var/openfaas && exec \"$0\""])
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("/var/openfaas/secrets/nope") && out.contains("/run/secrets/nope"),
        "{out}"
    );

    let w = watchdog()
        .fprocess("echo ok")
        .env("api_key_secret", "secret-api-key")
        .wrap(&["unshare", "--mount", "--propagation", "private", "sh", "-c",
            &format!("mount -t tmpfs t /run && mkdir -p /var/openfaas && mount -t tmpfs t /var/openfaas && mkdir /run/secrets && printf '%s' '{KEY}' > /run/secrets/secret-api-key && exec \"$0\"")])
        .start();
    assert!(
        w.log().contains("loaded from /run/secrets/secret-api-key"),
        "{}",
        w.log()
    );
    assert_eq!(call(w.port, Some(KEY)).status, 200);
}

fn has_unshare_mount() -> bool {
    std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn expect_100_continue_with_a_wrong_key_gets_401_and_no_handler() {
    let d = secrets(&[("secret-api-key", KEY)]);
    let marker = d.path().join("ran");
    let w = protected(&d, &format!("sh -c 'touch {}; cat'", marker.display())).start();
    let mut s = w.connect();
    send_head(
        &mut s,
        "POST",
        "/",
        &[("X-Api-Key", "wrong"), ("Expect", "100-continue")],
        Some(1 << 20),
    );
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut status = String::new();
    r.read_line(&mut status).expect("status");
    assert!(
        status.starts_with("HTTP/1.1 401"),
        "got {status:?} (must not be 100 Continue)"
    );
    assert!(!marker.exists(), "no handler for a rejected request");
    // The right key gets 100 Continue and a handler.
    let mut s = w.connect();
    send_head(
        &mut s,
        "POST",
        "/",
        &[("X-Api-Key", KEY), ("Expect", "100-continue")],
        Some(5),
    );
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("status");
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    s.write_all(b"hello").expect("body");
    drop(r);
    let resp = crate::util::read_response(&mut s, false);
    assert_eq!(resp.text(), "hello");
}

#[test]
fn the_handler_never_sees_the_key_unless_forwarded() {
    let d = secrets(&[("secret-api-key", KEY)]);
    let w = protected(&d, "env").start();
    let r = call(w.port, Some(KEY));
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(KEY), "key leaked into the handler env");
    assert!(!r.text().contains("Http_X_Api_Key"));
    assert!(!w.log().contains(KEY));

    // Nor through a descriptor: the handler inherits none open on the secret.
    let fds = protected(&d, "sh -c 'for f in /proc/$$/fd/*; do readlink $f; done'").start();
    let r = call(fds.port, Some(KEY));
    assert_eq!(r.status, 200, "{}", r.text());
    let targets = r.text();
    assert_eq!(
        targets.lines().count(),
        3,
        "stdin, stdout, stderr only:\n{targets}"
    );
    assert!(
        !targets.contains(&d.path().display().to_string()),
        "the secret is open in the handler:\n{targets}"
    );

    let w = protected(&d, "env").env("api_key_forward", "true").start();
    let r = call(w.port, Some(KEY));
    assert!(
        r.text().contains(&format!("Http_X_Api_Key={KEY}")),
        "{}",
        r.text()
    );
}

/// `--help` shows each setting's env var names and defaults, never the values the
/// environment holds: not even when every setting's env var holds the key itself (a
/// user who put the key where its secret's name belongs).
#[test]
fn help_never_shows_a_key() {
    let help = |env: &[String]| {
        let out = std::process::Command::new(crate::util::BIN)
            .arg("--help")
            .envs(env.iter().map(|k| (k, KEY)))
            .output()
            .expect("help");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let names: Vec<String> = help(&[])
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split_once(']'))
        .flat_map(|(names, _)| names.split(", ").map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(names.iter().any(|n| n == "api_key_secret"), "{names:?}");
    let text = help(&names);
    assert!(text.contains("--api-key-secret"), "{text}");
    assert!(!text.contains(KEY), "{text}");
}

/// Polls (every 50 ms) until `key` gets `want`; every answer meanwhile must be 200 or 401. `within` is
/// how long to wait before failing (generous: a reload is due every interval, and a
/// loaded machine may run it late).
fn until_status(port: u16, key: &str, want: u16, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let s = call(port, Some(key)).status;
        assert!(s == 200 || s == 401, "unexpected {s} during rotation");
        if s == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{key} did not become {want} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotation_kubernetes_style_data_symlink_swap() {
    let d = TempDir::new();
    let p = d.path();
    std::fs::create_dir(p.join("..2026_01_01_v1")).expect("v1");
    std::fs::write(p.join("..2026_01_01_v1/secret-api-key"), "old-key\n").expect("v1 key");
    symlink("..2026_01_01_v1", p.join("..data")).expect("..data");
    symlink("..data/secret-api-key", p.join("secret-api-key")).expect("link");
    let w = protected(&d, "echo ok")
        .env("secret_reload_interval", "500ms")
        .start();
    assert_eq!(call(w.port, Some("old-key")).status, 200);

    // What the kubelet does: write a new timestamped folder, swap ..data atomically.
    std::fs::create_dir(p.join("..2026_01_02_v2")).expect("v2");
    std::fs::write(p.join("..2026_01_02_v2/secret-api-key"), "new-key\n").expect("v2 key");
    symlink("..2026_01_02_v2", p.join("..data_tmp")).expect("tmp link");
    std::fs::rename(p.join("..data_tmp"), p.join("..data")).expect("swap");
    std::fs::remove_dir_all(p.join("..2026_01_01_v1")).expect("old gone");
    until_status(w.port, "new-key", 200, PATIENCE);
    assert_eq!(call(w.port, Some("old-key")).status, 401);
    assert!(!w.log().contains("new-key") && !w.log().contains("old-key"));
}

#[test]
fn rotation_by_rename_over_and_in_place_rewrite() {
    let d = secrets(&[("secret-api-key", "k1")]);
    let w = protected(&d, "echo ok")
        .env("secret_reload_interval", "300ms")
        .start();
    std::fs::write(d.path().join("tmp"), "k2").expect("tmp");
    std::fs::rename(d.path().join("tmp"), d.path().join("secret-api-key")).expect("rename");
    until_status(w.port, "k2", 200, PATIENCE);
    assert_eq!(call(w.port, Some("k1")).status, 401);
    // Rewritten in place: used once it has read the same for a second.
    std::fs::write(d.path().join("secret-api-key"), "k3\n").expect("rewrite");
    until_status(w.port, "k3", 200, PATIENCE);
    assert_eq!(call(w.port, Some("k2")).status, 401);
}

#[test]
fn a_broken_reload_keeps_the_last_good_keys_and_warns_once() {
    let d = secrets(&[("secret-api-key", "good")]);
    let w = protected(&d, "echo ok")
        .env("secret_reload_interval", "100ms")
        .start();
    std::fs::remove_file(d.path().join("secret-api-key")).expect("rm");
    w.expect_log("could not be reloaded");
    // Several more reloads (100 ms apart) find it still missing: still one warning.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.log().matches("could not be reloaded").count(),
        1,
        "{}",
        w.log()
    );
    assert_eq!(call(w.port, Some("good")).status, 200);
    std::fs::write(d.path().join("secret-api-key"), "").expect("empty");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        call(w.port, Some("good")).status,
        200,
        "an empty file does not open the door or lock it"
    );
    std::fs::write(d.path().join("secret-api-key"), "better").expect("fixed");
    assert!(eventually(Duration::from_secs(30), || call(
        w.port,
        Some("better")
    )
    .status
        == 200));
}

#[test]
fn auth_failures_are_counted() {
    let d = secrets(&[("secret-api-key", KEY)]);
    let w = protected(&d, "echo ok").env("metrics_port", "0").start();
    for _ in 0..3 {
        call(w.port, Some("nope"));
    }
    call(w.port, Some(KEY));
    let m = request(
        w.metrics_port.expect("metrics port"),
        "GET",
        "/metrics",
        &[],
        b"",
    )
    .text();
    assert!(m.contains("fwatchdog_auth_failures_total 3"), "{m}");
    assert!(
        m.contains("http_requests_total{code=\"401\",method=\"post\"} 3"),
        "{m}"
    );
}
