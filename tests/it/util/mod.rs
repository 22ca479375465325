//! Test support: start the real binary on port 0, talk raw HTTP/1.1 to it.
//!
//! Every watchdog gets its own temp folder as `TMPDIR` (so its lock file is its own),
//! binds 127.0.0.1 on port 0 and reports the port in its startup line, so tests run in
//! parallel without touching each other or the global environment.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_fwatchdog");

/// The binary [`watchdog`] starts: `FWATCHDOG_BIN` when set (to measure another build,
/// e.g. the static release one: `FWATCHDOG_BIN=target/x86_64-unknown-linux-musl/release/fwatchdog
/// cargo test --test it matrix -- --nocapture`), else the one cargo built for the tests.
fn bin() -> String {
    std::env::var("FWATCHDOG_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// The least time a wait for something that must happen (a log line, an exit, a process
/// group gone) allows. A loaded machine can take seconds where an idle one takes
/// milliseconds, and a wait that comes true returns at once, so patience costs a passing
/// test nothing; only a failing one waits this long before it says so.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "fwatchdog-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes an executable script and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, body).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start a watchdog.
pub struct Builder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    tmp: Option<TempDir>,
    wrapper: Vec<String>,
}

pub fn watchdog() -> Builder {
    Builder {
        env: Vec::new(),
        args: Vec::new(),
        tmp: None,
        wrapper: Vec::new(),
    }
}

impl Builder {
    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Self {
        self.env.push((k.to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn fprocess(self, cmd: impl AsRef<str>) -> Self {
        self.env("fprocess", cmd)
    }

    pub fn mode(self, m: &str) -> Self {
        self.env("mode", m)
    }

    /// Use this folder as TMPDIR (for the lock file).
    pub fn tmp(mut self, t: TempDir) -> Self {
        self.tmp = Some(t);
        self
    }

    /// Run the binary under another program, e.g. `unshare --pid --fork`.
    pub fn wrap(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    fn command(&self, tmp: &Path) -> Command {
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(bin())
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(bin());
            c
        };
        cmd.args(&self.args)
            .env_remove("fprocess")
            .env_remove("mode")
            .env("TMPDIR", tmp)
            .env("port", "0")
            .env("metrics_port", "off")
            .env("bind_address", "127.0.0.1")
            .env("healthcheck_interval", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts it and waits for `Listening on port: N`.
    pub fn start(mut self) -> Watchdog {
        let tmp = self.tmp.take().unwrap_or_else(TempDir::new);
        let mut child = self.command(tmp.path()).spawn().expect("spawn fwatchdog");
        let log = Arc::new(Mutex::new(String::new()));
        let open_streams = Arc::new(AtomicUsize::new(2));
        for stream in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        ] {
            let log = log.clone();
            let open_streams = open_streams.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = Vec::new();
                while r
                    .read_until(b'\n', &mut line)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    log.lock()
                        .expect("log")
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
                open_streams.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let mut w = Watchdog {
            child: Some(child),
            port: 0,
            metrics_port: None,
            log,
            open_streams,
            tmp,
        };
        // Generous: a loaded machine can take seconds to start a process.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = w.log_value("Listening on port: ") {
                w.port = p.parse().expect("port");
                break;
            }
            if let Some(status) = w.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("fwatchdog exited early ({status}):\n{}", w.log());
            }
            assert!(
                Instant::now() < deadline,
                "fwatchdog did not start:\n{}",
                w.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        w.metrics_port = w
            .log_value("Metrics listening on port: ")
            .and_then(|p| p.parse().ok());
        w
    }

    /// Runs it to completion (for startup errors), for `timeout` but at least
    /// [`PATIENCE`]; returns the exit status and output.
    pub fn run(self, timeout: Duration) -> (ExitStatus, String) {
        let tmp = TempDir::new();
        let mut child = self.command(tmp.path()).spawn().expect("spawn fwatchdog");
        let deadline = Instant::now() + timeout.max(PATIENCE);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut out = String::new();
                let _ = child
                    .stdout
                    .take()
                    .expect("stdout")
                    .read_to_string(&mut out);
                let _ = child
                    .stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut out);
                return (status, out);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fwatchdog did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A running watchdog, killed (by PID) on drop.
pub struct Watchdog {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: Option<u16>,
    log: Arc<Mutex<String>>,
    /// Output streams not yet read to their end.
    open_streams: Arc<AtomicUsize>,
    pub tmp: TempDir,
}

impl Watchdog {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn log_value(&self, prefix: &str) -> Option<String> {
        let log = self.log();
        let at = log.find(prefix)?;
        let rest = &log[at + prefix.len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        Some(rest[..end].to_owned())
    }

    /// Waits until the log contains `needle`, for `timeout` but at least [`PATIENCE`].
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.max(PATIENCE);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: the test only signals the child it started.
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the exit (for `timeout` but at least [`PATIENCE`]), then (briefly) for
    /// the log to be read to its end, so that `log()` afterwards holds the last lines too.
    /// A test that must prove an exit came quickly compares with a longer timer the
    /// process would otherwise have waited for (an interval, a sleeping handler).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout.max(PATIENCE);
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().expect("wait") {
                // A process that inherited the output may hold it open: bounded wait.
                eventually(Duration::from_secs(2), || {
                    self.open_streams.load(Ordering::SeqCst) == 0
                });
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn lock_file(&self) -> PathBuf {
        self.tmp.path().join(".lock")
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.port)
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.port, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Resp {
        request(self.port, "POST", path, &[], body)
    }

    /// [`Watchdog::get`] that returns an error instead of panicking (for retry loops).
    pub fn try_get(&self, path: &str) -> io::Result<Resp> {
        try_request(self.port, "GET", path, &[], b"")
    }

    /// [`Watchdog::post`] that returns an error instead of panicking (for retry loops).
    pub fn try_post(&self, path: &str, body: &[u8]) -> io::Result<Resp> {
        try_request(self.port, "POST", path, &[], body)
    }

    /// Waits until the log holds `needle` (a marker line), panicking with the log if it
    /// never comes within a minute: for "the request reached its handler" and the like,
    /// instead of a sleep.
    pub fn expect_log(&self, needle: &str) {
        assert!(
            self.wait_log(needle, Duration::from_secs(60)),
            "{needle:?} never appeared in the log:\n{}",
            self.log()
        );
    }
}

impl Drop for Watchdog {
    /// SIGTERM first, so the watchdog stops what it started (an http upstream, fastcgi
    /// workers, handler groups) the way it would in production; SIGKILL only if it has
    /// not exited within a few seconds. A bare SIGKILL would orphan its upstreams.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(8);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn connect(port: u16) -> TcpStream {
    try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

/// [`connect`] that returns the error.
pub fn try_connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    // Head and body go out as separate writes; without this, Nagle plus delayed ACKs
    // add 40 ms to each request.
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// Whether a write failed because the peer closed or reset the connection: a server
/// that answers early (413, 401, 504…) and closes does that to a client still sending.
pub fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Writes `data`, unless the peer has closed or reset the connection (it answered
/// early): then stops and returns `Ok(false)`, so the caller reads the answer it sent.
pub fn write_tolerant(s: &mut impl Write, data: &[u8]) -> io::Result<bool> {
    match s.write_all(data) {
        Ok(()) => Ok(true),
        Err(e) if peer_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A parsed response. `complete` is false when the body ended early (connection closed
/// before Content-Length bytes or before the final chunk).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with a Content-Length body and `Connection: close`; panics if there
/// is no answer. Inside `eventually`, use [`try_request`].
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// Sends one request with a Content-Length body and `Connection: close` and reads the
/// answer. A server that answers before it has read the whole body and closes may make
/// the rest of the body fail to send (EPIPE, ECONNRESET): that is not an error here, the
/// answer it sent is read. Any other failure (refused, reset before an answer, no status
/// line) is the `Err`.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    let mut s = try_connect(port)?;
    let head = head(method, path, headers, Some(body.len()));
    if write_tolerant(&mut s, head.as_bytes())? {
        write_tolerant(&mut s, body)?;
    }
    try_read_response(&mut s, method == "HEAD")
}

pub fn send_head(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: Option<usize>,
) {
    s.write_all(head(method, path, headers, len).as_bytes())
        .expect("write head");
}

/// A request head (`Connection: close` unless `headers` name a Connection).
pub fn head(method: &str, path: &str, headers: &[(&str, &str)], len: Option<usize>) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match len {
        Some(n) if n > 0 || method != "GET" => head.push_str(&format!("Content-Length: {n}\r\n")),
        Some(_) => {}
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    head
}

/// Reads a response head and body from the stream; panics if there is none.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Resp {
    try_read_response(s, head_only).unwrap_or_else(|e| panic!("reading the response: {e}"))
}

/// Reads a response head and body from the stream. No status line (the connection
/// closed or was reset first, or something else came) is the `Err`; a body cut short
/// is `complete: false`.
pub fn try_read_response(s: &mut TcpStream, head_only: bool) -> io::Result<Resp> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a status line",
            ));
        }
        // Skip interim 1xx responses.
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                io::Error::new(ErrorKind::InvalidData, format!("bad status line {line:?}"))
            })?;
        let headers = read_headers(&mut r);
        if (100..200).contains(&status) {
            continue;
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        let mut complete = true;
        if head_only || status == 204 || status == 304 {
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            complete = false;
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                else {
                    break;
                };
                if n == 0 {
                    trailers = read_headers(&mut r);
                    complete = true;
                    break;
                }
                let mut chunk = vec![0u8; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    break;
                }
                chunk.truncate(n);
                body.extend_from_slice(&chunk);
            }
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            if r.read_exact(&mut body).is_err() {
                complete = false;
            }
        } else {
            let _ = r.read_to_end(&mut body);
        }
        return Ok(Resp {
            status,
            headers,
            body,
            trailers,
            complete,
        });
    }
}

fn read_headers(r: &mut impl BufRead) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    headers
}

/// Random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .read_exact(&mut v)
        .expect("read");
    v
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One line of `/proc/<pid>/stat`, the fields the tests look at.
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
}

/// Every process visible in `/proc`.
pub fn processes() -> Vec<ProcStat> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses; the fields follow the last ")".
        let Some((_, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<i32>().ok()).unwrap_or(0);
        let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
        out.push(ProcStat {
            pid,
            state,
            ppid: num(1),
            pgid: num(2),
        });
    }
    out
}

/// Processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.pgid == pgid)
        .map(|p| p.pid)
        .collect()
}

/// Children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// Children of `pid` that are zombies.
pub fn zombie_children(pid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state == 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says a test skipped because a tool it needs is missing: one `SKIPPED <test>: <why>`
/// line on the real stderr (the harness swallows `eprintln!` for a passing test), which
/// `.ci/run` counts as skipped, not passed. With `CI=true` a missing tool is a failure:
/// this panics with the reason instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run (CI=true, so this is a failure, not a skip): {why}");
    }
    // One write, so the line is not interleaved with other tests' output.
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The response body as JSON.
pub fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.text()))
}

/// The pid a handler wrote to `file` (`echo $$ > file`), once the whole line is there.
pub fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()
        .filter(|s| s.ends_with('\n'))
        .and_then(|s| s.trim().parse().ok())
}

/// Waits (up to [`PATIENCE`]) for the pid a handler writes to `file`; panics if it never
/// comes.
pub fn read_pid(file: &Path) -> i32 {
    let mut pid = None;
    eventually(PATIENCE, || {
        pid = pid_in(file);
        pid.is_some()
    });
    pid.unwrap_or_else(|| panic!("no pid written to {}", file.display()))
}

/// Asserts that nothing is left of process group `pgid` within `within` (at least
/// [`PATIENCE`]).
pub fn assert_group_ends(pgid: i32, within: Duration, what: &str) {
    assert!(
        eventually(within.max(PATIENCE), || group_members(pgid).is_empty()),
        "{what}: process group {pgid} survived: {:?}",
        group_members(pgid)
    );
}

/// A handler that wrote its pid (= its process group, as the watchdog starts each
/// handler in a group of its own) to `pidfile` must be gone, group and all, within
/// `within`. Returns the group id.
pub fn assert_handler_group_ends(pidfile: &Path, within: Duration, what: &str) -> i32 {
    let pgid = read_pid(pidfile);
    assert_group_ends(pgid, within, what);
    pgid
}

/// Open file descriptors of `pid` (0 once it is gone).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A small xorshift generator: reproducible noise without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Polls `f` until it returns true or `timeout` passes. `f` must not panic on what a
/// retry could fix: use the `try_` helpers and [`eventually_ok`].
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns `Ok(true)` or `timeout` passes; an `Err` (a refused or reset
/// connection, no answer yet) is retried like `Ok(false)`. The last error, if the last
/// try was one, is printed when it gives up, so a failing test says why.
pub fn eventually_ok(timeout: Duration, mut f: impl FnMut() -> io::Result<bool>) -> bool {
    let mut last = None;
    let passed = eventually(timeout, || match f() {
        Ok(done) => {
            last = None;
            done
        }
        Err(e) => {
            last = Some(e);
            false
        }
    });
    if let Some(e) = last.filter(|_| !passed) {
        let _ = writeln!(io::stderr(), "eventually_ok: last try failed: {e}");
    }
    passed
}

/// A listener on 127.0.0.1, port chosen by the kernel and held: hand it (or its port,
/// while it stays bound) to whatever must listen, instead of a `free_port()` that another
/// test can take between the check and the use.
pub fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// A port for a program that must be told its port before it listens (an http upstream,
/// the jwt issuer, a watchdog whose port is probed before it is ready): free when
/// checked, and outside the kernel's ephemeral range, so neither a connection's local
/// port nor a `bind(0)` anywhere on the machine can take it before the program binds
/// it. Ports are handed out in turn from a start of this process's own, so concurrent
/// test runs rarely meet; one that is taken is skipped. Where the kernel leaves no
/// room outside its range, a port from `bind(0)` (racy, as before).
pub fn child_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            let mut it = r.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // The larger stretch outside [low, high], above the well-known ports.
    let (first, len) = if low.saturating_sub(10_000) >= 65_535u32.saturating_sub(high) {
        (10_000u32, low.saturating_sub(10_000))
    } else {
        (high + 1, 65_535 - high)
    };
    if len >= 1_000 {
        let offset = u32::from(std::process::id() as u16) * 7919 % len;
        for _ in 0..len {
            let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
            let port = (first + (offset + n) % len) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    listener().local_addr().expect("addr").port()
}

/// Waits (up to a minute) for the file a handler touches as its first act, the marker
/// that the request reached it; panics if it never appears.
pub fn wait_for_marker(marker: &Path) {
    assert!(
        eventually(Duration::from_secs(60), || marker.exists()),
        "{} never appeared: the request did not reach its handler",
        marker.display()
    );
}

/// Reads until EOF, an error, or `limit`. Returns what came and whether it ended.
pub fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}
