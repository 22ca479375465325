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
//! `ServeDir` answers a request for several ranges (`bytes=0-1,3-4`) with 416; we ask it
//! for the whole file instead (200), which RFC 9110 allows and every client handles.
//! And it sends a file as it reads it, to its end: a file that grows while it is sent
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
        if let Some(rel) = relative(req.uri().path()) {
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
        if several_ranges(req.headers()) {
            req.headers_mut().remove(http::header::RANGE);
        }
        match self.dir.clone().try_call(req).await {
            Ok(resp) => {
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

/// Whether `Range` asks for more than one range: `ServeDir` answers those 416.
fn several_ranges(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').filter(|r| !r.trim().is_empty()).count() > 1)
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
