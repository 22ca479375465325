//! static mode: files from `static_path` with index.html, Range, conditional
//! requests and content types — and never a byte from outside the folder.

use std::os::unix::fs::symlink;

use crate::util::{request, watchdog, TempDir, Watchdog};

const SECRET: &str = "TOPSECRET-outside-the-folder";

/// `<tmp>/public` served, `<tmp>/secret` beside it, symlinks from one to the other.
fn site() -> (TempDir, Watchdog) {
    let tmp = TempDir::new();
    let root = tmp.path().join("public");
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(root.join("sub")).expect("mkdir");
    std::fs::create_dir_all(root.join("evil")).expect("mkdir");
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").expect("write");
    std::fs::write(root.join("a.txt"), "hello text\n").expect("write");
    std::fs::write(root.join("style.css"), "body{}\n").expect("write");
    std::fs::write(root.join("data.json"), "{}\n").expect("write");
    std::fs::write(root.join("sub/index.html"), "sub index\n").expect("write");
    let bin: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    std::fs::write(root.join("range.bin"), bin).expect("write");
    std::fs::write(secret.join("key.txt"), SECRET).expect("write");
    std::fs::write(secret.join("index.html"), SECRET).expect("write");
    symlink(secret.join("key.txt"), root.join("leak")).expect("symlink");
    symlink(&secret, root.join("leakdir")).expect("symlink");
    symlink("../a.txt", root.join("sub/inside.txt")).expect("symlink");
    symlink(secret.join("index.html"), root.join("evil/index.html")).expect("symlink");
    let w = watchdog()
        .mode("static")
        .env("static_path", root.display().to_string())
        .start();
    (tmp, w)
}

#[test]
fn serves_files_with_index_html_and_content_types() {
    let (_tmp, w) = site();
    let r = w.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let r = w.get("/sub/");
    assert_eq!((r.status, r.text().as_str()), (200, "sub index\n"));
    let r = w.get("/sub");
    assert!(
        (301..=308).contains(&r.status),
        "folder without slash: {}",
        r.status
    );
    assert_eq!(r.header("location"), Some("/sub/"));
    for (path, ctype) in [
        ("/a.txt", "text/plain"),
        ("/style.css", "text/css"),
        ("/data.json", "application/json"),
    ] {
        let r = w.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with(ctype)),
            "{path}: {:?}",
            r.headers
        );
    }
    let r = request(w.port, "HEAD", "/a.txt", &[], b"");
    assert_eq!((r.status, r.header("content-length")), (200, Some("11")));
    assert!(r.body.is_empty());
    // A symlink that stays inside the folder is fine.
    assert_eq!(w.get("/sub/inside.txt").text(), "hello text\n");
}

#[test]
fn missing_files_are_404_and_other_methods_405() {
    let (_tmp, w) = site();
    assert_eq!(w.get("/nope.txt").status, 404);
    assert_eq!(w.get("/sub/nope/").status, 404);
    assert_eq!(w.post("/a.txt", b"x").status, 405);
}

#[test]
fn range_and_conditional_requests() {
    let (_tmp, w) = site();
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=10-13")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, [10, 11, 12, 13]);
    assert_eq!(r.header("content-range"), Some("bytes 10-13/4096"));
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=5000-6000")],
        b"",
    );
    assert_eq!(r.status, 416);

    let full = w.get("/a.txt");
    let modified = full
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let r = request(
        w.port,
        "GET",
        "/a.txt",
        &[("If-Modified-Since", &modified)],
        b"",
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = request(
        w.port,
        "GET",
        "/a.txt",
        &[("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
        b"",
    );
    assert_eq!(r.status, 412);
}

#[test]
fn never_serves_a_file_outside_the_folder() {
    let (_tmp, w) = site();
    let attempts = [
        "/../secret/key.txt",
        "/sub/../../secret/key.txt",
        "/%2e%2e/secret/key.txt",
        "/%2E%2E/secret/key.txt",
        "/sub/%2e%2e/%2e%2e/secret/key.txt",
        "/..%2fsecret%2fkey.txt",
        "/leak",
        "/leakdir/key.txt",
        "/leakdir/",
        "/leakdir",
        "/evil/",
        "/evil/index.html",
    ];
    for path in attempts {
        let r = w.get(path);
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.status);
    }
}

/// A FIFO, a socket, and a folder whose `index.html` is a FIFO, under `static_path`:
/// 404, and nothing ever opens them. Before, each `GET /fifo` blocked a thread in
/// `open()` until a writer came — for ever — and after ~512 of them every file request
/// hung while health still said 200 (this test then timed out on its first request).
#[test]
fn fifos_and_sockets_are_404_and_never_opened() {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = TempDir::new();
    let root = tmp.path().join("public");
    std::fs::create_dir_all(root.join("pipe-dir")).expect("mkdir");
    std::fs::write(root.join("a.txt"), "hello text\n").expect("write");
    let fifo = |p: &std::path::Path| {
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(p, mode).expect("mkfifo");
    };
    fifo(&root.join("fifo"));
    fifo(&root.join("pipe-dir/index.html"));
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind");
    symlink("fifo", root.join("to-fifo")).expect("symlink");
    let w = watchdog()
        .mode("static")
        .env("static_path", root.display().to_string())
        .start();
    for _ in 0..3 {
        for path in [
            "/fifo",
            "/to-fifo",
            "/sock",
            "/pipe-dir/",
            "/pipe-dir/index.html",
        ] {
            let mut s = crate::util::connect(w.port);
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .expect("timeout");
            crate::util::send_head(&mut s, "GET", path, &[], Some(0));
            let r = crate::util::read_response(&mut s, false);
            assert_eq!(r.status, 404, "{path}");
        }
    }
    assert_eq!(
        request(w.port, "GET", "/a.txt", &[], b"").text(),
        "hello text\n"
    );
    // No reader holds either FIFO open: a non-blocking writer finds none (ENXIO).
    for p in ["fifo", "pipe-dir/index.html"] {
        let open = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(root.join(p));
        assert_eq!(
            open.err().and_then(|e| e.raw_os_error()),
            Some(nix::libc::ENXIO),
            "{p} was opened"
        );
    }
}

/// Several ranges get `206 multipart/byteranges`, as Go's file server (of-watchdog)
/// answers them, never 416. Before: `Range: bytes=0-1,3-4` on a 4096-byte file answered
/// `416 Cannot serve multipart range requests` (ServeDir serves one range only), although
/// both ranges were satisfiable.
#[test]
fn several_ranges_get_206_multipart_byteranges() {
    let (_tmp, w) = site();
    let whole: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=0-1, 4000-,-5")],
        b"",
    );
    assert_eq!(r.status, 206, "{}", r.text());
    let ctype = r.header("content-type").expect("Content-Type").to_owned();
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ctype}"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // The parts, in the order asked, each with its Content-Range and its bytes.
    let want = [(0usize, 2usize), (4000, 96), (4091, 5)];
    let mut rest = r.body.as_slice();
    for (i, (start, n)) in want.iter().enumerate() {
        let sep = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{sep}--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{}/4096\r\n\r\n",
            start + n - 1
        );
        assert!(
            rest.starts_with(head.as_bytes()),
            "part {i}: {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(200)])
        );
        rest = &rest[head.len()..];
        assert_eq!(&rest[..*n], &whole[*start..start + n], "part {i}");
        rest = &rest[*n..];
    }
    assert_eq!(rest, format!("\r\n--{boundary}--\r\n").as_bytes());

    // One satisfiable range left: a plain 206. None: 416. More bytes than the file:
    // the whole file, as Go answers.
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=1-2,9000-")],
        b"",
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &[1u8, 2][..]));
    assert_eq!(r.header("content-range"), Some("bytes 1-2/4096"));
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=5000-,6000-7000")],
        b"",
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */4096"));
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=0-4000,10-4095")],
        b"",
    );
    assert_eq!((r.status, &r.body), (200, &whole));
    // A conditional range (If-Range) gets the whole file; If-Modified-Since still 304s.
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=0-1,3-4"), ("If-Range", "\"x\"")],
        b"",
    );
    assert_eq!((r.status, &r.body), (200, &whole));
    let modified = w
        .get("/range.bin")
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let r = request(
        w.port,
        "GET",
        "/range.bin",
        &[("Range", "bytes=0-1,3-4"), ("If-Modified-Since", &modified)],
        b"",
    );
    assert_eq!(r.status, 304);
    // One range is still ServeDir's 206.
    let r = request(w.port, "GET", "/range.bin", &[("Range", "bytes=1-2")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &[1u8, 2][..]));
}

/// A file asked for as a folder is 404. Before: `GET /a.txt/` served `a.txt` (200), as
/// did `/a.txt/.` (its dot-segment resolves to `/a.txt/`).
#[test]
fn a_file_asked_for_as_a_folder_is_404() {
    let (_tmp, w) = site();
    for path in ["/a.txt/", "/a.txt/.", "/sub/inside.txt/", "/%61.txt/"] {
        let r = w.get(path);
        assert_eq!(
            (r.status, r.text().as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
    assert_eq!(w.get("/a.txt").status, 200);
    assert_eq!(w.get("/sub/").text(), "sub index\n");
}

/// The request log counts the bytes sent, and no more than the `Content-Length`
/// announced is sent when the file grows while it is being sent. Before: a 20,000,000-byte
/// file that grew by 1 MiB after the head went out was logged with `"bytes":20054016`
/// for 20000000 sent: the log added up whole 64 KiB frames, the last of which ServeDir
/// read past the old end and hyper cut at the `Content-Length`.
#[test]
fn the_log_counts_the_bytes_sent_when_a_file_grows() {
    use std::io::{Read, Write};
    // Not a multiple of ServeDir's 64 KiB reads: the last one crosses the old end.
    const SIZE: usize = 20_000_000;
    let tmp = TempDir::new();
    let root = tmp.path().join("public");
    std::fs::create_dir_all(&root).expect("mkdir");
    let file = root.join("big.bin");
    std::fs::write(&file, vec![7u8; SIZE]).expect("write");
    let w = watchdog()
        .mode("static")
        .env("static_path", root.display().to_string())
        .env("log_format", "json")
        .start();

    let mut s = crate::util::connect(w.port);
    s.set_read_timeout(Some(crate::util::PATIENCE))
        .expect("timeout");
    crate::util::send_head(&mut s, "GET", "/big.bin", &[], Some(0));
    // The head, byte by byte, so nothing of the body is read yet: the server can have
    // sent only what the socket buffers hold, far less than the file.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {SIZE}\r\n")),
        "{head}"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open")
        .write_all(&vec![9u8; 1 << 20])
        .expect("grow");
    let (body, closed) = crate::util::read_to_close(&mut s, crate::util::PATIENCE);
    assert!(closed, "the connection stayed open");
    assert_eq!(body.len(), SIZE, "bytes received");
    assert!(
        body.iter().all(|b| *b == 7),
        "bytes past the announced length were sent"
    );
    w.expect_log("\"path\":\"/big.bin\"");
    let line = w
        .log()
        .lines()
        .find(|l| l.contains("\"path\":\"/big.bin\""))
        .expect("request line")
        .to_owned();
    assert!(line.contains(&format!("\"bytes\":{SIZE},")), "{line}");
}
