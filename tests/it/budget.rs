//! One budget per request: what one client or one handler may make the watchdog spend,
//! in every mode. Each test here failed on the code before the budget; its doc comment
//! says what that code did.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{
    self, eventually, read_response, read_to_close, request, send_head, watchdog, TempDir,
};

/// A raw upstream for http mode, served by this test process on a listener bound
/// before the watchdog starts (so it is ready at once and no port can be taken in
/// between): a websocket upgrade gets 101 and then an echo of every byte; `/forever`
/// streams a chunked body that never ends; `/hi` answers at once without reading the
/// body and closes; anything else reads its whole `Content-Length` body first.
pub fn raw_upstream(_tmp: &TempDir) -> util::Builder {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve_raw(conn));
        }
    });
    // The watchdog needs a process to supervise; the upstream itself is ours.
    watchdog()
        .mode("http")
        .fprocess("sleep 3600")
        .env("upstream_url", format!("http://127.0.0.1:{port}"))
}

fn serve_raw(mut c: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let rest = buf[head_end + 4..].to_vec();
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    if head.contains("upgrade: websocket") {
        let _ = c.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        let _ = c.write_all(&rest);
        while let Ok(n) = c.read(&mut chunk) {
            if n == 0 || c.write_all(&chunk[..n]).is_err() {
                return;
            }
        }
        return;
    }
    if path == "/forever" || path == "/zero" {
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&vec![b'y'; chunk.len()]);
        piece.extend_from_slice(b"\r\n");
        while c.write_all(&piece).is_ok() {}
        return;
    }
    if path != "/hi" {
        let want: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut got = rest.len();
        while got < want {
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    }
    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n");
}

/// Writes chunks of a never-ending chunked body until the server stops taking them;
/// returns how many bytes went out.
fn endless_chunks(mut s: TcpStream, limit: Duration) -> u64 {
    let chunk = vec![b'u'; 16 * 1024];
    let mut sent = 0u64;
    let until = Instant::now() + limit;
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    while Instant::now() < until {
        let ok = write!(s, "{:x}\r\n", chunk.len()).is_ok()
            && s.write_all(&chunk).is_ok()
            && s.write_all(b"\r\n").is_ok();
        if !ok {
            break;
        }
        sent += chunk.len() as u64;
    }
    sent
}

/// Sends one byte of the body every `every`, until the server closes or `limit`.
fn trickle(mut s: TcpStream, every: Duration, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if s.write_all(b"x").is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

/// Before: `fprocess="echo hi"` and a chunked POST that never ends got its 200, and then
/// the watchdog read and discarded the upload for as long as the client sent it (the
/// body pump was detached): the connection never closed.
#[test]
fn an_endless_upload_is_not_read_after_the_answer() {
    let w = watchdog().fprocess("echo hi").start();
    let mut s = w.connect();
    send_head(&mut s, "POST", "/", &[], None);
    let writer = {
        let s = s.try_clone().expect("clone");
        std::thread::spawn(move || endless_chunks(s, Duration::from_secs(30)))
    };
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hi\n");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed, "the connection stays open while the upload goes on");
    drop(s);
    let sent = writer.join().expect("writer");
    // What the kernel buffers on both sides plus the 256 KiB allowance: far from the
    // gigabytes an endless upload reached before.
    assert!(sent < 64 << 20, "{sent} bytes of the upload were taken");
}

/// Before: `http_buffer_req_body` collected a body of any size (a 1.5 GB chunked PUT
/// held 1.47 GB). Whatever is held whole is capped, by default at 64 MiB.
#[test]
fn a_buffered_proxy_body_is_capped_by_default() {
    let tmp = TempDir::new();
    let w = raw_upstream(&tmp)
        .env("http_buffer_req_body", "true")
        .start();
    let mut s = w.connect();
    send_head(&mut s, "PUT", "/", &[], None);
    let writer = {
        let s = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut s = s;
            let chunk = vec![b'b'; 1 << 20];
            for _ in 0..65 {
                let ok = write!(s, "{:x}\r\n", chunk.len()).is_ok()
                    && s.write_all(&chunk).is_ok()
                    && s.write_all(b"\r\n").is_ok();
                if !ok {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n");
        })
    };
    let r = read_response(&mut s, false);
    let _ = writer.join();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("67108864"), "{}", r.text());
}

/// Before: serializing and classic held all of a handler's stdout (`head -c 2G
/// /dev/zero`: 2.1 GB peak). Past `max_response_bytes` the handler is killed and the
/// request gets 500.
#[test]
fn a_buffered_answer_over_max_response_bytes_is_500_and_the_handler_killed() {
    for mode in ["serializing", "classic"] {
        let tmp = TempDir::new();
        let pid = tmp.path().join("pid");
        let w = watchdog()
            .mode(mode)
            .fprocess(format!(
                "sh -c 'echo $$ > {}; exec cat /dev/zero'",
                pid.display()
            ))
            .env("max_response_bytes", "1Mi")
            .start();
        let r = w.post("/", b"");
        assert_eq!(r.status, 500, "{mode}");
        assert_eq!(
            r.text(),
            "response exceeds max_response_bytes (1048576)\n",
            "{mode}"
        );
        util::assert_handler_group_ends(&pid, Duration::from_secs(5), mode);
    }
}

/// Before: a collected body was bounded only per silence: a client sending a byte
/// every 200 ms with `read_timeout=1s` kept the body (and its connection, and with
/// `max_inflight` its slot) for as long as it liked. It must arrive whole within
/// `read_timeout` of the request's start: 408, and the handler never starts.
#[test]
fn a_collected_body_must_arrive_within_read_timeout() {
    for mode in ["serializing", "classic"] {
        let tmp = TempDir::new();
        let marker = tmp.path().join("ran");
        let w = watchdog()
            .mode(mode)
            .fprocess(format!("sh -c 'touch {}; cat'", marker.display()))
            .env("read_timeout", "1s")
            .start();
        let mut s = w.connect();
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        send_head(&mut s, "POST", "/", &[], Some(1000));
        let writer = {
            let s = s.try_clone().expect("clone");
            std::thread::spawn(move || {
                trickle(s, Duration::from_millis(200), Duration::from_secs(20))
            })
        };
        let started = Instant::now();
        let r = read_response(&mut s, false);
        let took = started.elapsed();
        drop(s);
        let _ = writer.join();
        assert_eq!(r.status, 408, "{mode}: {}", r.text());
        assert!(took < Duration::from_secs(10), "{mode}: {took:?}");
        assert!(!marker.exists(), "{mode}: the handler started");
    }
}

/// Before: with `write_timeout` shorter than the upload took, the handler was started
/// after the request's deadline and killed at once (`handler_starts_total 1`,
/// `handler_timeouts_total 1`). Nothing starts once the deadline has passed.
#[test]
fn nothing_starts_after_the_request_deadline() {
    let tmp = TempDir::new();
    let marker = tmp.path().join("ran");
    let w = watchdog()
        .mode("serializing")
        .fprocess(format!("sh -c 'touch {}; cat'", marker.display()))
        .env("read_timeout", "30s")
        .env("write_timeout", "1s")
        .start();
    let mut s = w.connect();
    send_head(&mut s, "POST", "/", &[], Some(12));
    let writer = {
        let s = s.try_clone().expect("clone");
        std::thread::spawn(move || trickle(s, Duration::from_millis(150), Duration::from_secs(5)))
    };
    let r = read_response(&mut s, false);
    drop(s);
    let _ = writer.join();
    assert!(
        r.status == 408 || r.status == 504,
        "{}: {}",
        r.status,
        r.text()
    );
    assert!(!marker.exists(), "a handler started after the deadline");
}

/// Before: a handler in its `exec_kill_grace` gave its `max_inflight` slot back, so
/// `max_inflight=2` with a handler that ignores SIGTERM left 12 live handler groups. A
/// slot is held until its handler group is gone.
#[test]
fn a_handler_in_its_kill_grace_keeps_its_slot() {
    let tmp = TempDir::new();
    let script = tmp.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\ntrap '' TERM\necho $$ > '{}/pid.'$$\nsleep 30\n",
            tmp.path().display()
        ),
    );
    let w = watchdog()
        .mode("serializing")
        .fprocess(script.display().to_string())
        .env("max_inflight", "2")
        .env("exec_timeout", "300ms")
        .env("exec_kill_grace", "20s")
        .start();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(w.post("/", b"").status);
    }
    let live: Vec<i32> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("pid.")?.parse().ok()
        })
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(
        live.len() <= 2,
        "{} live handler groups with max_inflight=2: {statuses:?}",
        live.len()
    );
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Before: once the head reached the upstream, nothing of ours bounded a streamed
/// request body: a client silent after 10 of 1000 bytes held the upstream request
/// until `exec_timeout`. Its silence is bounded by `read_timeout` (408).
#[test]
fn a_silent_proxied_body_is_cut_at_read_timeout() {
    let tmp = TempDir::new();
    let w = raw_upstream(&tmp)
        .env("read_timeout", "1s")
        .env("exec_timeout", "30s")
        .env("write_timeout", "30s")
        .start();
    let mut s = w.connect();
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    send_head(&mut s, "POST", "/slow", &[], Some(1000));
    s.write_all(&[b'x'; 10]).expect("first bytes");
    let started = Instant::now();
    let r = read_response(&mut s, false);
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Before: a websocket tunnel gave back its connection's place and its `max_inflight`
/// slot as soon as the upgrade resolved, escaping both limits and the drain. It keeps
/// both until it closes.
#[test]
fn a_websocket_tunnel_keeps_its_slot_until_it_closes() {
    let tmp = TempDir::new();
    let w = raw_upstream(&tmp).env("max_inflight", "1").start();
    let ws = open_tunnel(w.port);
    let r = request(w.port, "POST", "/ok", &[], b"");
    assert_eq!(
        r.status,
        429,
        "the open tunnel holds the only slot: {}",
        r.text()
    );
    drop(ws);
    assert!(
        eventually(Duration::from_secs(10), || {
            request(w.port, "POST", "/ok", &[], b"").status == 200
        }),
        "the slot is given back when the tunnel closes"
    );
}

/// A websocket tunnel through http mode, its upgrade answered and one echo seen.
fn open_tunnel(port: u16) -> TcpStream {
    let mut ws = util::connect(port);
    ws.set_read_timeout(Some(util::PATIENCE)).expect("timeout");
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    echo(&mut ws, b"ping");
    ws
}

/// Sends `data` through a tunnel and reads its echo.
fn echo(ws: &mut TcpStream, data: &[u8]) {
    ws.write_all(data).expect("write through the tunnel");
    let mut back = vec![0u8; data.len()];
    ws.read_exact(&mut back).expect("echo");
    assert_eq!(back, data);
}

/// An open websocket tunnel counts as an open connection for `max_connections`.
/// Before: the tunnel gave its connection's place back when the upgrade resolved, so
/// with `max_connections=1` and a tunnel open, a second connection was served (`POST
/// /ok` → 200) instead of being closed at once.
#[test]
fn a_websocket_tunnel_counts_against_max_connections() {
    let tmp = TempDir::new();
    let w = raw_upstream(&tmp).env("max_connections", "1").start();
    let ws = open_tunnel(w.port);
    let second = util::try_request(w.port, "POST", "/ok", &[], b"");
    assert!(
        second.is_err(),
        "a second connection was served while the tunnel held the only place: {:?}",
        second.map(|r| r.status)
    );
    drop(ws);
    assert!(
        eventually(Duration::from_secs(10), || {
            util::try_request(w.port, "POST", "/ok", &[], b"").is_ok_and(|r| r.status == 200)
        }),
        "the place is given back when the tunnel closes"
    );
}

/// On SIGTERM an open websocket tunnel is drained like any open connection: it keeps
/// working, and the watchdog exits once it closes (or at `write_timeout`). Before: the
/// drain did not count it (`draining 0 open connection(s)`) and the watchdog exited at
/// once, cutting the tunnel.
#[test]
fn a_websocket_tunnel_is_drained_on_shutdown() {
    let tmp = TempDir::new();
    let mut w = raw_upstream(&tmp)
        .env("healthcheck_interval", "0")
        .env("write_timeout", "600s")
        .env("exec_timeout", "10s")
        .start();
    let mut ws = open_tunnel(w.port);
    w.signal(15);
    w.expect_log("draining 1 open connection(s)");
    // The tunnel still works during the drain.
    echo(&mut ws, b"still open");
    drop(ws);
    // Exiting within PATIENCE, far less than write_timeout, means the close ended it.
    let status = w
        .wait_exit(util::PATIENCE)
        .expect("exits once the tunnel closes");
    assert_eq!(status.code(), Some(0), "{}", w.log());
}

/// Before: a static file's body had no deadline (`Files::call` got no budget): a
/// client reading slowly but steadily kept its connection for as long as the file
/// lasted. The body is aborted at the write deadline.
#[test]
fn a_static_file_gets_the_write_deadline() {
    let tmp = TempDir::new();
    let file = vec![b's'; 64 << 20];
    std::fs::write(tmp.path().join("big.bin"), &file).expect("write file");
    let w = watchdog()
        .mode("static")
        .env("static_path", tmp.path().display().to_string())
        .env("write_timeout", "1s")
        .start();
    let mut s = w.connect();
    send_head(&mut s, "GET", "/big.bin", &[], Some(0));
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(n) => got += n,
        }
        // About 2.5 MB/s: steady enough for the write-stall bound, too slow to fetch
        // 64 MiB within the second `write_timeout` allows.
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(closed, "still reading after a minute");
    assert!(got < file.len(), "the whole file came, {got} bytes");
}
