//! static mode: serves the files under `static_path`.
//!
//! tower-http's `ServeDir` does the HTTP work: `index.html` for folders (a folder asked
//! for without its trailing `/` is redirected to it), `Range`, `If-Modified-Since` and
//! `If-Unmodified-Since`, content types by extension, 404 for what is missing, 405 for
//! methods other than GET and HEAD. It refuses `..` (encoded or not) but follows
//! symlinks wherever they point, so before it runs we resolve the path ourselves and
//! answer 404 for anything, the folder's `index.html` included, that resolves outside
//! `static_path`. Hidden files (a path segment starting with `.`: `.env`, `.git/`) get
//! 404 too unless `static_hidden_files`; `/.well-known/` is always served.
//!
//! Only regular files are served. Opening a FIFO blocks until someone writes to it (and
//! a device or socket is no page either), so a name that resolves to anything else, or a
//! folder whose `index.html` does, is answered 404 from its metadata, before anything
//! opens it. A file asked for as a folder (`/a.txt/`) is 404 too (`ServeDir` would serve
//! the file).
//!
//! `ServeDir` serves one range only and answers a request for several (`bytes=0-1,3-4`)
//! with 416. Those are ours ([`byteranges`]): as Go's file server (and so of-watchdog)
//! does, a `GET` for several ranges of a regular file gets `206 multipart/byteranges`
//! (`ServeDir`, asked for the whole file, still decides the conditional requests, the
//! content type and a 404 first); ranges adding up to more than the file, or a syntax
//! we do not read, get the whole file (200).
//! And `ServeDir` sends a file as it reads it, to its end: a file that grows while it is sent
//! would yield more than the `Content-Length` it announced. The body is cut at that
//! length ([`Exact`]), so what is sent, and what the request log counts, is what was
//! announced.

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use tower_http::services::ServeDir;

use super::Ctx;
use crate::body::{self, Body, BoxError};
use crate::config::Config;

pub struct Files {
    dir: ServeDir,
    root: PathBuf,
    hidden_files: bool,
}

impl Files {
    pub fn new(cfg: &Config) -> Files {
        let root = cfg.static_files.path.clone();
        match root.canonicalize() {
            Ok(real) if real.is_dir() => {
                tracing::info!("Serving static files from {}", real.display())
            }
            _ => tracing::warn!(
                "static_path {} is not a readable folder (yet): requests get 404 until it is",
                root.display()
            ),
        }
        Files {
            dir: ServeDir::new(&root),
            root,
            hidden_files: cfg.static_files.hidden_files,
        }
    }

    /// Serves one request; the file's body is aborted if still being sent at the write
    /// deadline.
    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        if !self.hidden_files && hidden(req.uri().path()) {
            return not_found();
        }
        let rel = relative(req.uri().path());
        if let Some(rel) = rel.clone() {
            let root = self.root.clone();
            let as_folder = req.uri().path().ends_with('/');
            let found = tokio::task::spawn_blocking(move || resolve(&root, &rel, as_folder))
                .await
                .unwrap_or(Found::Outside);
            match found {
                Found::Outside => {
                    tracing::warn!(
                        "static: {} resolves outside static_path; answered 404",
                        req.uri().path()
                    );
                    return not_found();
                }
                Found::NotAFile => return not_found(),
                Found::Servable => {}
            }
        }
        // ServeDir never reads the body; dropping it here keeps its types simple.
        let mut req = req.map(|_| http_body_util::Empty::<bytes::Bytes>::new());
        let ranges = several_ranges(req.headers());
        if ranges.is_some() {
            req.headers_mut().remove(http::header::RANGE);
        }
        let multipart = ranges.filter(|_| {
            req.method() == http::Method::GET && !req.headers().contains_key(http::header::IF_RANGE)
        });
        match self.dir.clone().try_call(req).await {
            Ok(resp) => {
                if let (Some(spec), Some(rel)) = (multipart, rel) {
                    if resp.status() == StatusCode::OK {
                        let path = self.root.join(rel);
                        if let Some(parts) = byteranges(&spec, &path, resp.headers()).await {
                            return parts.map(|b| ctx.budget.response(b));
                        }
                    }
                }
                let announced = super::content_length(resp.headers());
                let resp = resp.map(|b| {
                    let b: Body = b.map_err(Into::into).boxed_unsync();
                    let b = match announced {
                        Some(len) => Exact {
                            inner: b,
                            left: len,
                        }
                        .boxed_unsync(),
                        None => b,
                    };
                    ctx.budget.response(b)
                });
                if resp.status() == StatusCode::NOT_FOUND {
                    return not_found();
                }
                resp
            }
            Err(e) if no_such_name(&e) => not_found(),
            Err(e) => {
                tracing::warn!("static: cannot serve the file: {e}");
                body::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
            }
        }
    }
}

/// Errors that say no file can have this name (a NUL byte from `%00`, a part longer
/// than NAME_MAX, a symlink loop): nothing is there, a 404 and not our failure.
/// (`ServeDir` itself answers 404 only for not-found, not-a-directory and permissions.)
fn no_such_name(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.kind() == std::io::ErrorKind::InvalidInput
        || [Errno::ENAMETOOLONG, Errno::ELOOP]
            .iter()
            .any(|n| e.raw_os_error() == Some(*n as i32))
}

/// The `Range` value when it asks for more than one range (`ServeDir` answers those
/// 416).
fn several_ranges(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(http::header::RANGE)?.to_str().ok()?;
    let specs = v.split(',').filter(|r| !r.trim().is_empty()).count();
    (specs > 1).then(|| v.to_owned())
}

/// The ranges of a `Range` value (`bytes=0-1,3-4`, `bytes=-5`, `bytes=10-`) in a file of
/// `size` bytes, as Go's `http.ServeContent` reads them: `(start, length)` each, those
/// starting past the end left out, ends past it cut to it. `Err(true)` when none is
/// satisfiable (416), `Err(false)` for a value we do not read (the whole file is sent).
fn parse_ranges(spec: &str, size: u64) -> Result<Vec<(u64, u64)>, bool> {
    let list = spec.trim().strip_prefix("bytes=").ok_or(false)?;
    let mut out = Vec::new();
    for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (start, end) = r.split_once('-').ok_or(false)?;
        let (start, end) = (start.trim(), end.trim());
        let num = |v: &str| -> Result<u64, bool> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(false);
            }
            v.parse().map_err(|_| false)
        };
        if start.is_empty() {
            // The last `end` bytes.
            let n = num(end)?.min(size);
            if n > 0 {
                out.push((size - n, n));
            }
            continue;
        }
        let first = num(start)?;
        if first >= size {
            continue;
        }
        let last = if end.is_empty() {
            size - 1
        } else {
            let last = num(end)?;
            if last < first {
                return Err(false);
            }
            last.min(size - 1)
        };
        out.push((first, last - first + 1));
    }
    if out.is_empty() {
        return Err(true);
    }
    Ok(out)
}

/// The answer for several ranges of the regular file at `path`, whose whole-file answer
/// from `ServeDir` had `headers`: `206 multipart/byteranges` (one range left: a plain
/// 206), or 416 when none is satisfiable. `None`: the whole file it is (not a regular
/// file, a value we do not read, or ranges adding up to more than the file).
async fn byteranges(spec: &str, path: &Path, headers: &HeaderMap) -> Option<Response<Body>> {
    use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LAST_MODIFIED};
    // Non-blocking, as resolve() found a regular file there and a FIFO swapped in since
    // must not hang us; read() on a regular file ignores the flag.
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .await
        .ok()?;
    let meta = file.metadata().await.ok()?;
    if !meta.is_file() {
        return None;
    }
    let size = meta.len();
    let ranges = match parse_ranges(spec, size) {
        Ok(r) => r,
        Err(true) => {
            let mut resp = body::text(StatusCode::RANGE_NOT_SATISFIABLE, "");
            resp.headers_mut().insert(
                CONTENT_RANGE,
                http::HeaderValue::from_str(&format!("bytes */{size}")).ok()?,
            );
            return Some(resp);
        }
        Err(false) => return None,
    };
    if ranges.iter().map(|(_, n)| n).sum::<u64>() > size {
        return None;
    }
    let mut builder = Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(ACCEPT_RANGES, "bytes");
    if let Some(m) = headers.get(LAST_MODIFIED) {
        builder = builder.header(LAST_MODIFIED, m);
    }
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let range_of = |(start, n): (u64, u64)| format!("bytes {start}-{}/{size}", start + n - 1);
    // Each part: its head, then its bytes of the file.
    let (parts, tail, ctype) = if let [one] = ranges[..] {
        builder = builder.header(CONTENT_RANGE, range_of(one));
        (vec![(Bytes::new(), one)], Bytes::new(), ctype.to_owned())
    } else {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).ok()?;
        let boundary: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let parts = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let sep = if i == 0 { "" } else { "\r\n" };
                let head = format!(
                    "{sep}--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: {}\r\n\r\n",
                    range_of(*r)
                );
                (Bytes::from(head), *r)
            })
            .collect();
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        (
            parts,
            tail,
            format!("multipart/byteranges; boundary={boundary}"),
        )
    };
    let total: u64 = parts
        .iter()
        .map(|(head, (_, n))| head.len() as u64 + n)
        .sum::<u64>()
        + tail.len() as u64;
    let (tx, rx) = body::Channel::new(body::RESPONSE_DEPTH);
    tokio::spawn(send_parts(file, parts, tail, tx));
    builder
        .header(CONTENT_TYPE, ctype)
        .header(CONTENT_LENGTH, total)
        .body(rx.boxed_unsync())
        .ok()
}

/// Sends each part's head and its bytes of `file`, then `tail`; a read that fails or
/// comes short (the file shrank) aborts the body.
async fn send_parts(
    mut file: tokio::fs::File,
    parts: Vec<(Bytes, (u64, u64))>,
    tail: Bytes,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const CHUNK: u64 = 64 * 1024;
    for (head, (start, n)) in parts {
        if !head.is_empty() && tx.send(Ok(Frame::data(head))).await.is_err() {
            return;
        }
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            let _ = tx
                .send(Err(Box::new(body::Abort("cannot seek".into()))))
                .await;
            return;
        }
        let mut left = n;
        while left > 0 {
            let mut buf = bytes::BytesMut::with_capacity(left.min(CHUNK) as usize);
            let got = (&mut file).take(left.min(CHUNK)).read_buf(&mut buf).await;
            match got {
                Ok(k) if k > 0 => {
                    left -= k as u64;
                    if tx.send(Ok(Frame::data(buf.freeze()))).await.is_err() {
                        return;
                    }
                }
                _ => {
                    let why = "the file shrank while it was sent";
                    let _ = tx.send(Err(Box::new(body::Abort(why.into())))).await;
                    return;
                }
            }
        }
    }
    if !tail.is_empty() {
        let _ = tx.send(Ok(Frame::data(tail))).await;
    }
}

/// A body cut at the length its response announced: whatever the file grew by while
/// it was read is not sent.
struct Exact {
    inner: Body,
    left: u64,
}

impl http_body::Body for Exact {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = poll else {
            return poll;
        };
        let Ok(mut data) = frame.into_data() else {
            return Poll::Ready(None); // a file body has no trailers
        };
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        if data.len() > n {
            data.truncate(n);
        }
        self.left -= data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower().min(self.left));
        hint.set_upper(inner.upper().unwrap_or(u64::MAX).min(self.left));
        hint
    }
}

fn not_found() -> Response<Body> {
    body::text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The request path as a relative file path, decoded as `ServeDir` decodes it. `None`
/// when it is not one `ServeDir` would serve (it answers those with 404 itself).
fn relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8()
        .ok()?;
    let mut rel = PathBuf::new();
    for c in Path::new(&*decoded).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(rel)
}

/// Whether the path, decoded, has a segment starting with `.` (other than `.` and `..`,
/// which the resolver handles) outside a leading `/.well-known/`.
fn hidden(path: &str) -> bool {
    let decoded = percent_decode_str(path);
    let decoded: Vec<u8> = decoded.collect();
    let mut segments = decoded
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty() && *s != b".");
    let mut first = true;
    segments.any(|seg| {
        let well_known = first && seg == b".well-known";
        first = false;
        seg.first() == Some(&b'.') && seg != b".." && !well_known
    })
}

/// What `root/rel` is, as far as serving it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A regular file or a folder (whose `index.html`, if any, is one), inside `root`;
    /// or nothing at all, which `ServeDir` answers with 404.
    Servable,
    /// It, or the `index.html` that would be served for it, resolves (through symlinks)
    /// outside `root`.
    Outside,
    /// A FIFO, socket or device (or such an `index.html`): never opened. Or a file
    /// asked for as a folder (`as_folder`).
    NotAFile,
}

/// Resolves `root/rel` and the `index.html` that would be served for a folder, by
/// metadata only (nothing is opened). `as_folder`: the path ended with `/`, so only a
/// folder can answer it.
fn resolve(root: &Path, rel: &Path, as_folder: bool) -> Found {
    let Ok(root) = root.canonicalize() else {
        return Found::Servable;
    };
    let Ok(real) = root.join(rel).canonicalize() else {
        return Found::Servable;
    };
    if !real.starts_with(&root) {
        return Found::Outside;
    }
    let Ok(meta) = real.metadata() else {
        return Found::Servable;
    };
    if meta.is_dir() {
        return match real.join("index.html").canonicalize() {
            Ok(index) if !index.starts_with(&root) => Found::Outside,
            Ok(index) => kind(&index),
            Err(_) => Found::Servable,
        };
    }
    if as_folder {
        return Found::NotAFile;
    }
    kind(&real)
}

fn kind(path: &Path) -> Found {
    match path.metadata() {
        Ok(m) if !m.is_file() && !m.is_dir() => Found::NotAFile,
        _ => Found::Servable,
    }
}

/// Whether `root/rel`, or the `index.html` that would be served for it, resolves outside
/// `root`.
#[cfg(test)]
fn escapes(root: &Path, rel: &Path) -> bool {
    resolve(root, rel, false) == Found::Outside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_refuses_parent_components_encoded_or_not() {
        assert_eq!(relative("/a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(relative("/"), Some(PathBuf::new()));
        assert_eq!(relative("/a/./b"), Some(PathBuf::from("a/b")));
        assert_eq!(relative("/%61"), Some(PathBuf::from("a")));
        assert_eq!(relative("/../etc/passwd"), None);
        assert_eq!(relative("/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(relative("/a/%2E%2E/b"), None);
        assert_eq!(relative("/%ff"), None);
    }

    #[test]
    fn ranges_are_read_as_go_reads_them() {
        assert_eq!(parse_ranges("bytes=0-1,3-4", 10), Ok(vec![(0, 2), (3, 2)]));
        assert_eq!(parse_ranges("bytes= -3 , 8-", 10), Ok(vec![(7, 3), (8, 2)]));
        assert_eq!(
            parse_ranges("bytes=5-100,-100", 10),
            Ok(vec![(5, 5), (0, 10)])
        );
        assert_eq!(parse_ranges("bytes=0-1,10-20", 10), Ok(vec![(0, 2)]));
        assert_eq!(parse_ranges("bytes=10-,20-30", 10), Err(true));
        assert_eq!(parse_ranges("bytes=-0,-0", 10), Err(true));
        for bad in [
            "items=0-1,2-3",
            "bytes=1,2",
            "bytes=3-1,4-5",
            "bytes=a-1,2-3",
            "bytes=+1-2,3-4",
        ] {
            assert_eq!(parse_ranges(bad, 10), Err(false), "{bad}");
        }
    }

    #[test]
    fn hidden_segments_are_found_in_any_encoding_except_well_known() {
        for p in [
            "/.env",
            "/.git/config",
            "/a/.hidden/x",
            "/%2eenv",
            "/%2Egit/HEAD",
            "/a/b/.htpasswd",
            "/./.env",
            "/.well-known/.secret",
            "/a/.well-known/x",
            "//.env",
        ] {
            assert!(hidden(p), "{p}");
        }
        for p in [
            "/",
            "/a.txt",
            "/a/b.c/d",
            "/.well-known/",
            "/.well-known/acme-challenge/t",
            "/./a",
            "/a/../b",
            "/a./b",
        ] {
            assert!(!hidden(p), "{p}");
        }
    }

    #[test]
    fn symlinks_out_of_the_folder_escape() {
        let base = std::env::temp_dir().join(format!("fwatchdog-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("public");
        let outside = base.join("secret");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("key"), "k").expect("write");
        std::fs::write(outside.join("index.html"), "x").expect("write");
        std::fs::write(root.join("sub/ok.txt"), "ok").expect("write");
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).expect("symlink")
        };
        link(&outside.join("key"), "key");
        link(&outside, "dir");
        link(&root.join("sub/ok.txt"), "inside");
        std::os::unix::fs::symlink(outside.join("index.html"), root.join("sub/index.html"))
            .expect("symlink");

        assert!(escapes(&root, Path::new("key")));
        assert!(escapes(&root, Path::new("dir")));
        assert!(escapes(&root, Path::new("dir/key")));
        assert!(escapes(&root, Path::new("sub")), "index.html points out");
        assert!(!escapes(&root, Path::new("inside")));
        assert!(!escapes(&root, Path::new("sub/ok.txt")));
        assert!(!escapes(&root, Path::new("missing")));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn fifos_and_sockets_are_not_files_even_as_index_html() {
        let base = std::env::temp_dir().join(format!("fwatchdog-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("sub")).expect("mkdir");
        std::fs::write(base.join("a.txt"), "a").expect("write");
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        nix::unistd::mkfifo(&base.join("fifo"), mode).expect("mkfifo");
        nix::unistd::mkfifo(&base.join("sub/index.html"), mode).expect("mkfifo");
        let _sock = std::os::unix::net::UnixListener::bind(base.join("sock")).expect("bind");
        std::os::unix::fs::symlink(base.join("fifo"), base.join("link")).expect("symlink");
        for name in ["fifo", "sub", "sock", "link"] {
            assert_eq!(
                resolve(&base, Path::new(name), false),
                Found::NotAFile,
                "{name}"
            );
        }
        for name in ["a.txt", "", "missing"] {
            assert_eq!(
                resolve(&base, Path::new(name), false),
                Found::Servable,
                "{name}"
            );
        }
        assert_eq!(resolve(&base, Path::new("a.txt"), true), Found::NotAFile);
        assert_eq!(resolve(&base, Path::new("missing"), true), Found::Servable);
        let _ = std::fs::remove_dir_all(&base);
    }
}
