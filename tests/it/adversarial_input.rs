//! Side doors an attacker (or a typo) can open around the main request path: settings
//! that look set but protect nothing, request variables a header can forge, proxy paths
//! that leave their prefix, credentials meant for a proxy, dotfiles, and secrets that are
//! not files. Each test's doc comment holds the reproduction that broke it.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::util::{self, eventually, eventually_ok, request, try_request, watchdog, TempDir};

/// Reproduction: `fprocess=cat api_key_secret=' ' fwatchdog` (also `','`, `' , '`, a tab)
/// served every request unprotected with no word, while `--api-key-secret ' '` exited 2.
/// Blank values of the other settings (`secrets_dir=' '`, `static_path=' '`) were taken
/// as they were, too.
#[test]
fn a_setting_that_names_nothing_is_exit_2_never_protection_off() {
    for v in [" ", ",", " , ", "\t", ",,", " ,\t, "] {
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("api_key_secret", v)
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "api_key_secret={v:?}: {out}");
        assert!(
            out.contains("api_key_secret") && out.contains("names no secret"),
            "{v:?}: {out}"
        );
        assert!(!out.contains("Listening on port"), "{v:?}: listened");
    }
    for v in ["", " ", ","] {
        let (status, out) = watchdog()
            .fprocess("cat")
            .arg("--api-key-secret")
            .arg(v)
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "--api-key-secret {v:?}: {out}");
        assert!(out.contains("--api-key-secret"), "{out}");
    }
    let keys = TempDir::new();
    std::fs::write(keys.path().join("k"), "key\n").expect("secret");
    for (k, v) in [
        ("secrets_dir", " "),
        ("api_key_header", " "),
        ("api_key_forward", "\t"),
        ("secret_reload_interval", " "),
        ("static_path", " "),
        ("content_type", " "),
        ("max_inflight", " "),
    ] {
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("api_key_secret", "k")
            .env("secrets_dir", keys.path().display().to_string())
            .env(k, v)
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{k}={v:?}: {out}");
        assert!(out.contains(&format!("invalid {k}=")), "{k}: {out}");
    }
}

/// Reproduction: `fprocess=env`, `curl -H 'Query: x' localhost:8080/` printed
/// `Http_Query=x` although the URL had no query (`Path:` and `Method:` likewise, where
/// only the order of the variables kept the real ones on top).
#[test]
fn headers_named_like_request_variables_never_reach_the_handler() {
    let w = watchdog().fprocess("env").start();
    let r = request(
        w.port,
        "GET",
        "/real/path",
        &[
            ("Query", "forged=1"),
            ("Path", "/forged"),
            ("Method", "FORGED"),
            ("Proxy", "http://forged"),
            ("X-Kept", "yes"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let env = r.text();
    let vars: Vec<&str> = env.lines().filter(|l| l.starts_with("Http_")).collect();
    assert!(
        !vars
            .iter()
            .any(|l| l.contains("forged") || l.contains("FORGED")),
        "{vars:#?}"
    );
    assert!(
        !vars.iter().any(|l| l.starts_with("Http_Query=")),
        "{vars:#?}"
    );
    assert!(vars.contains(&"Http_Path=/real/path"), "{vars:#?}");
    assert!(vars.contains(&"Http_Method=GET"), "{vars:#?}");
    assert!(vars.contains(&"Http_X_Kept=yes"), "{vars:#?}");

    // With a query, `Http_Query` is the URL's.
    let r = request(w.port, "GET", "/?a=1", &[("Query", "forged=1")], b"");
    assert!(
        r.text().lines().any(|l| l == "Http_Query=a=1"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("forged"), "{}", r.text());
}

/// An upstream that records every request line's path (one per line in `paths`) and
/// every `Proxy-Authorization` it gets (in `proxy_auth`); `/fn/auth` answers with a
/// `Proxy-Authenticate` header.
const RECORDER_PY: &str = r#"
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, work = int(sys.argv[1]), sys.argv[2]

def append(name, line):
    with open(os.path.join(work, name), "a") as f:
        f.write(line + "\n")

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def route(self):
        append("paths", self.path)
        if "Proxy-Authorization" in self.headers:
            append("proxy_auth", self.headers["Proxy-Authorization"])
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.path.endswith("/auth"):
            self.send_header("Proxy-Authenticate", 'Basic realm="upstream-proxy"')
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = route

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A recording upstream behind a watchdog with `upstream_url=http://127.0.0.1:<port>/fn`.
struct Recorder {
    work: TempDir,
    w: crate::util::Watchdog,
}

impl Recorder {
    fn start() -> Recorder {
        let work = TempDir::new();
        let script = work.path().join("recorder.py");
        std::fs::write(&script, RECORDER_PY).expect("write recorder.py");
        let port = util::child_port();
        let w = watchdog()
            .mode("http")
            .fprocess(format!(
                "python3 -u {} {port} {}",
                script.display(),
                work.path().display()
            ))
            .env("upstream_url", format!("http://127.0.0.1:{port}/fn"))
            .start();
        assert!(
            eventually_ok(Duration::from_secs(60), || Ok(w
                .try_get("/_/health")?
                .status
                == 200)),
            "upstream never ready:\n{}",
            w.log()
        );
        Recorder { work, w }
    }

    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.work.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Reproduction: with `upstream_url=http://127.0.0.1:5000/fn`, `GET /../secret` reached
/// the upstream as `/fn/../secret`, which a file server resolves to `/secret`; so did
/// `/%2e%2e/secret` and `/a/../../x`.
#[test]
fn http_mode_never_sends_a_path_outside_the_upstream_prefix() {
    if !crate::util::have("python3") {
        crate::util::skip(
            "http_mode_never_sends_a_path_outside_the_upstream_prefix",
            "no python3",
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required in CI"
        );
        return;
    }
    let r = Recorder::start();
    for path in [
        "/../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/.%2e/secret",
        "/a/../../x",
        "/a/b/../../../x",
        "/./../x",
        "/..",
        "/a/..%2f..%2fsecret",
        "/a/%2e%2e%2f%2e%2e%2fsecret",
        "/a/..;/../secret",
        "/..?q=1",
    ] {
        let resp = request(r.w.port, "GET", path, &[], b"");
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
    }
    // Dot-segments that stay inside are resolved before the join; `%2f` is kept.
    for (path, want) in [
        ("/a/../b", "/fn/b"),
        ("/a/%2e%2e/b?x=1", "/fn/b?x=1"),
        ("/a/./b/.", "/fn/a/b/"),
        ("/files/a%2Fb", "/fn/files/a%2Fb"),
        ("/", "/fn/"),
    ] {
        let resp = request(r.w.port, "GET", path, &[], b"");
        assert_eq!((resp.status, resp.text().as_str()), (200, want), "{path}");
    }
    let seen = r.lines("paths");
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for p in &seen {
        assert!(p.starts_with("/fn/"), "{p}");
        let segs: Vec<String> = p
            .split(['/', '?'])
            .map(|s| s.to_ascii_lowercase().replace("%2e", "."))
            .collect();
        assert!(!segs.iter().any(|s| s == ".." || s == "."), "{p}");
    }
}

/// Reproduction: `curl -H 'Proxy-Authorization: Basic dXNlcjpwYXNz' localhost:8080/` in
/// http mode handed the client's proxy credentials to the upstream; an upstream's
/// `Proxy-Authenticate` reached the client.
#[test]
fn proxy_credentials_are_hop_by_hop_both_ways() {
    if !crate::util::have("python3") {
        crate::util::skip("proxy_credentials_are_hop_by_hop_both_ways", "no python3");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required in CI"
        );
        return;
    }
    let r = Recorder::start();
    let resp = request(
        r.w.port,
        "GET",
        "/auth",
        &[
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("Connection", "close"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(r.lines("paths"), ["/fn/auth"]);
    assert!(
        r.lines("proxy_auth").is_empty(),
        "{:?}",
        r.lines("proxy_auth")
    );
    assert_eq!(
        resp.header("proxy-authenticate"),
        None,
        "{:?}",
        resp.headers
    );
}

/// `<tmp>/public` with dotfiles, and a watchdog serving it.
fn dotfile_site(extra: &[(&str, &str)]) -> (TempDir, crate::util::Watchdog) {
    let tmp = TempDir::new();
    let root = tmp.path().join("public");
    for (file, body) in [
        (".env", "DB_PASSWORD=hunter2\n"),
        (".git/config", "[remote \"origin\"]\n"),
        ("a/.hidden/x", "hidden\n"),
        (".well-known/x", "well known\n"),
        ("a/visible.txt", "visible\n"),
    ] {
        let p = root.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    let mut b = watchdog()
        .mode("static")
        .env("static_path", root.display().to_string());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (tmp, b.start())
}

/// Reproduction: `mode=static`, `curl localhost:8080/.env` and `/.git/config` answered 200
/// with the file.
#[test]
fn static_mode_hides_dotfiles_except_well_known() {
    let (_tmp, w) = dotfile_site(&[]);
    for path in [
        "/.env",
        "/%2eenv",
        "/.git/config",
        "/.git/",
        "/a/.hidden/x",
        "/a/%2Ehidden/x",
    ] {
        let r = w.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("hunter2") && !r.text().contains("origin"));
    }
    assert_eq!(w.get("/.well-known/x").text(), "well known\n");
    assert_eq!(w.get("/a/visible.txt").text(), "visible\n");
    assert!(w.log().contains("static_hidden_files=false"), "{}", w.log());

    let (_tmp, w) = dotfile_site(&[("static_hidden_files", "true")]);
    assert_eq!(w.get("/.env").text(), "DB_PASSWORD=hunter2\n");
    assert_eq!(w.get("/a/.hidden/x").text(), "hidden\n");
}

/// Reproduction: the seed's sample function compares `Http_X_Api_Key` with the secret
/// itself and answered "Access denied!" to the right key behind `--api-key-secret`
/// (the header is stripped), and nothing in the startup log hinted why.
#[test]
fn the_config_line_shows_how_keys_are_forwarded_found_and_reloaded() {
    let keys = TempDir::new();
    std::fs::write(keys.path().join("k"), "cfgline-secret-9a7e\n").expect("secret");
    let w = watchdog()
        .fprocess("cat")
        .env("api_key_secret", "k")
        .env("secrets_dir", keys.path().display().to_string())
        .env("secret_reload_interval", "3s")
        .start();
    let log = w.log();
    let config = log
        .lines()
        .find(|l| l.contains("Config:"))
        .expect("Config line");
    for want in [
        "api_key_forward=false".to_owned(),
        format!("secrets_dir={}", keys.path().display()),
        "secret_reload_interval=3s".to_owned(),
    ] {
        assert!(config.contains(&want), "{want} missing: {config}");
    }
    assert!(
        !log.contains("cfgline-secret-9a7e"),
        "the key reached the log"
    );
}

/// Reproduction: `fprocess=cat max_inflight=18446744073709551615 max_queue=1 fwatchdog`
/// panicked in tokio's semaphore (exit 101) instead of naming the setting.
#[test]
fn numbers_past_their_limit_are_exit_2_naming_the_setting_never_a_panic() {
    let huge = "18446744073709551615";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("max_inflight", huge), ("max_queue", "1")],
            "max_inflight",
        ),
        (
            &[("max_inflight", "2305843009213693952"), ("max_queue", "1")],
            "max_inflight",
        ),
        (&[("max_inflight", "1"), ("max_queue", huge)], "max_queue"),
        (&[("max_inflight", "1000001")], "max_inflight"),
        (&[("log_buffer_size", huge)], "log_buffer_size"),
        (&[("pool_max_requests", "4294967296")], "pool_max_requests"),
        (
            &[("exec_timeout", "2562047h47m16.854775808s")],
            "exec_timeout",
        ),
        (&[("queue_timeout", huge)], "queue_timeout"),
        (
            &[("max_body_bytes", "18446744073709551616")],
            "max_body_bytes",
        ),
        (&[("port", "65536")], "port"),
    ];
    for (env, name) in cases {
        let mut b = watchdog().fprocess("cat");
        for (k, v) in *env {
            b = b.env(k, v);
        }
        let (status, out) = b.run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{env:?}: {out}");
        assert!(out.contains(&format!("invalid {name}=")), "{env:?}: {out}");
    }
    // The largest accepted values start and serve.
    let w = watchdog()
        .fprocess("cat")
        .env("max_inflight", "1000000")
        .env("max_queue", "1000000")
        .env("log_buffer_size", (1u64 << 30).to_string())
        .env("exec_timeout", "2562047h47m16.854775807s")
        .env("write_timeout", "2562047h47m16.854775807s")
        .start();
    assert_eq!(w.post("/", b"hi").text(), "hi");
}

const OLD_KEY: &str = "old-key-4f1c9a7e2b";

fn secrets_dir(content: &str) -> TempDir {
    let d = TempDir::new();
    std::fs::write(d.path().join("api-key"), content).expect("write secret");
    d
}

fn keyed(dir: &TempDir, reload: &str) -> crate::util::Watchdog {
    watchdog()
        .fprocess("echo ok")
        .env("api_key_secret", "api-key")
        .env("secrets_dir", dir.path().display().to_string())
        .env("secret_reload_interval", reload)
        .start()
}

fn status_with(port: u16, key: &str) -> u16 {
    request(port, "POST", "/", &[("X-Api-Key", key)], b"x").status
}

/// [`status_with`] for retry loops.
fn try_status_with(port: u16, key: &str) -> std::io::Result<u16> {
    Ok(try_request(port, "POST", "/", &[("X-Api-Key", key)], b"x")?.status)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Makes a file (or FIFO, or link) at the path it is given.
type Maker = Box<dyn Fn(&std::path::Path)>;

/// Puts `what` at `dir/api-key` the atomic way (rename over it).
fn swap_in(dir: &TempDir, what: impl FnOnce(&std::path::Path)) {
    let tmp = dir.path().join(".incoming");
    let _ = std::fs::remove_file(&tmp);
    what(&tmp);
    std::fs::rename(&tmp, dir.path().join("api-key")).expect("rename over the secret");
}

fn mkfifo(p: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", p.display());
}

/// Reproduction: `secret_reload_interval=1ms`, a writer that rewrites the secret in place
/// with 8 bytes, pauses, then writes the rest: the 8-byte half key was accepted (249 of
/// 1,000 requests) until the next reload.
#[test]
fn a_slow_in_place_writer_never_gets_half_a_key_accepted() {
    let d = secrets_dir(&format!("{OLD_KEY}\n"));
    let w = keyed(&d, "1ms");
    let mut old = OLD_KEY.to_owned();
    for round in 0..3 {
        let new = format!("new-key-{round}-7d2e91c04a");
        let half = &new[..8];
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(d.path().join("api-key"))
            .expect("open in place");
        f.write_all(half.as_bytes()).expect("first 8 bytes");
        f.flush().expect("flush");
        // While the half key sits there unchanged for less than the settle time (1 s),
        // it is refused and the old key still works. A try that starts later than that
        // (a slow machine) proves nothing: the half key has legitimately settled.
        let written = Instant::now();
        let settle = Duration::from_secs(1);
        loop {
            let half_status = status_with(w.port, half);
            let fresh = written.elapsed() < settle;
            if !fresh {
                break;
            }
            assert_eq!(half_status, 401, "round {round}: half key accepted");
            let old_status = status_with(w.port, &old);
            if written.elapsed() < settle {
                assert_eq!(old_status, 200, "round {round}: old key lost");
            }
            if written.elapsed() >= Duration::from_millis(400) {
                break;
            }
        }
        f.write_all(&new.as_bytes()[8..]).expect("the rest");
        f.write_all(b"\n").expect("newline");
        drop(f);
        assert!(
            eventually_ok(Duration::from_secs(30), || Ok(try_status_with(
                w.port, &new
            )? == 200)),
            "round {round}: the complete key never applied:\n{}",
            w.log()
        );
        assert_eq!(status_with(w.port, half), 401);
        assert_eq!(
            status_with(w.port, &old),
            401,
            "round {round}: old key not revoked"
        );
        old = new;
    }
    assert!(!w.log().contains("new-key-"), "a key reached the log");
}

/// Reproduction: `secrets_dir=/dev api_key_secret=zero fwatchdog` never listened and grew
/// past 3.5 GB in 4 s; a FIFO as the secret blocked startup forever in `open()`; a 2 GiB
/// sparse file was read whole.
#[test]
fn a_secret_that_is_not_a_small_regular_file_stops_startup() {
    let d = TempDir::new();
    mkfifo(&d.path().join("fifo"));
    let sparse = std::fs::File::create(d.path().join("sparse")).expect("create");
    sparse.set_len(2 << 30).expect("2 GiB sparse");
    let cases: &[(&str, &str, &str)] = &[
        (
            d.path().to_str().expect("utf8"),
            "fifo",
            "not a regular file",
        ),
        ("/dev", "zero", "not a regular file"),
        (
            d.path().to_str().expect("utf8"),
            "sparse",
            "larger than 64 KiB",
        ),
    ];
    for (dir, name, why) in cases {
        let started = Instant::now();
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("secrets_dir", dir)
            .env("api_key_secret", name)
            .run(Duration::from_secs(5));
        assert_eq!(status.code(), Some(2), "{dir}/{name}: {out}");
        let path = format!("{dir}/{name}");
        assert!(out.contains(&path) && out.contains(why), "{path}: {out}");
        // Refused at once, not after reading gigabytes or blocking on a FIFO.
        assert!(started.elapsed() < Duration::from_secs(15), "{path}: slow");
    }
}

/// Reproduction: with `secret_reload_interval=100ms`, a FIFO renamed over the secret
/// blocked the reload thread in `open()` forever, silently, so a key revoked afterwards
/// kept working (6 s later the revoked key still got 200, the new one 401); `/dev/zero`
/// or a 2 GiB sparse file swapped in grew RSS by ~270 MB/s.
#[test]
fn hostile_files_swapped_in_keep_the_last_keys_and_memory_small() {
    let d = secrets_dir(&format!("{OLD_KEY}\n"));
    let w = keyed(&d, "100ms");
    let base = rss_kib(w.pid());
    let mut current = OLD_KEY.to_owned();
    let steps: Vec<(&str, Maker, &str)> = vec![
        ("fifo", Box::new(mkfifo), "not a regular file"),
        (
            "/dev/zero",
            Box::new(|p| std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")),
            "not a regular file",
        ),
        (
            "2 GiB sparse",
            Box::new(|p| {
                let f = std::fs::File::create(p).expect("create");
                f.set_len(2 << 30).expect("sparse");
            }),
            "larger than 64 KiB",
        ),
    ];
    for (i, (what, make, why)) in steps.into_iter().enumerate() {
        let warned = w.log().matches(why).count();
        swap_in(&d, make);
        assert!(
            eventually(Duration::from_secs(30), || w.log().matches(why).count()
                > warned),
            "{what}: no warning saying {why:?}:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            status_with(w.port, &current),
            200,
            "{what}: last good key lost"
        );
        let rss = rss_kib(w.pid());
        assert!(
            rss < base + 32 * 1024,
            "{what}: RSS grew from {base} KiB to {rss} KiB"
        );
        // Rotation still works afterwards, and the revoked key stops working.
        let next = format!("rotated-{i}-b83d0c51e6");
        swap_in(&d, |p| {
            std::fs::write(p, format!("{next}\n")).expect("write")
        });
        assert!(
            eventually_ok(Duration::from_secs(30), || Ok(try_status_with(
                w.port, &next
            )? == 200)),
            "{what}: the new key never applied:\n{}",
            w.log()
        );
        assert_eq!(
            status_with(w.port, &current),
            401,
            "{what}: revoked key still works"
        );
        current = next;
    }
}
