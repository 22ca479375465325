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
