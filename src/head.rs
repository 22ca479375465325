//! Strict request heads: what RFC 9112 says a server must refuse, refused once, first
//! in the request chain (before health, auth and any runner), for every mode.
//!
//! More than one `Host`, none on HTTP/1.1, or one that is not a valid authority → 400;
//! a `Transfer-Encoding` other than exactly `chunked` → 501 (hyper reads `gzip,
//! chunked` as chunked and would hand the function gzip bytes as if plain); the
//! asterisk form (`*`) for anything but OPTIONS, the authority form (`host:80`) for
//! anything but CONNECT → 400; a NUL (`%00`) in the path → 400. Then the path's
//! dot-segments are resolved ([`resolve_dots`]), so handlers (`Http_Path`, CGI's
//! `PATH_INFO`), upstreams and the static files all see one path that stays under `/`;
//! one that climbs above it is 400.

use std::borrow::Cow;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};

use crate::body::{self, Body};

/// Checks a request's head and resolves its path's dot-segments in place; or the 400 or
/// 501 that answers it. The answer closes the connection: after a head this wrong, what
/// follows on it cannot be trusted to be framed as we read it.
pub fn check<B>(req: &mut Request<B>) -> Result<(), Response<Body>> {
    let refused = |status: StatusCode, why: &str| {
        tracing::info!(
            "{} {}: {why}; answered {}",
            req.method(),
            req.uri(),
            status.as_u16()
        );
        let mut resp = body::text(status, format!("{why}\n"));
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        resp
    };
    if let Err(why) = host(req) {
        return Err(refused(StatusCode::BAD_REQUEST, why));
    }
    if let Err(why) = transfer_encoding(req) {
        return Err(refused(StatusCode::NOT_IMPLEMENTED, why));
    }
    if let Err(why) = target_form(req) {
        return Err(refused(StatusCode::BAD_REQUEST, why));
    }
    match resolved_uri(req.uri()) {
        Ok(Some(uri)) => *req.uri_mut() = uri,
        Ok(None) => {}
        Err(why) => return Err(refused(StatusCode::BAD_REQUEST, &why)),
    }
    Ok(())
}

/// Exactly one `Host` on HTTP/1.1 (at most one before), holding `host[:port]`.
fn host<B>(req: &Request<B>) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let Some(value) = hosts.next() else {
        return match req.version() {
            Version::HTTP_10 | Version::HTTP_09 => Ok(()),
            _ => Err("missing required Host header"),
        };
    };
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if valid_host(value.as_bytes()) {
        Ok(())
    } else {
        Err("malformed Host header")
    }
}

/// RFC 9110 §7.2: `uri-host [ ":" port ]` (port digits only, no `user@`); empty when
/// the target has no authority.
fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    if value.contains(&b'@') || Authority::try_from(value).is_err() {
        return false;
    }
    let (host, port) = match value.iter().rposition(|b| *b == b':') {
        // `[::1]` alone: the colons are inside the brackets.
        Some(i) if !value[i..].contains(&b']') => (&value[..i], &value[i + 1..]),
        _ => (value, &b""[..]),
    };
    let host_ok = if host.starts_with(b"[") {
        host.len() > 2 && host.ends_with(b"]")
    } else {
        !host.is_empty() && !host.contains(&b':')
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// `Transfer-Encoding`, when present, is one field that says exactly `chunked`: no other
/// coding is implemented.
fn transfer_encoding<B>(req: &Request<B>) -> Result<(), &'static str> {
    let mut codings = req
        .headers()
        .get_all(http::header::TRANSFER_ENCODING)
        .iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let chunked = first
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked");
    if chunked && codings.next().is_none() {
        Ok(())
    } else {
        Err("unsupported Transfer-Encoding: only chunked is implemented")
    }
}

/// The asterisk form is for OPTIONS only, the authority form for CONNECT only (RFC 9112
/// §3.2); a NUL (`%00`) in the path is refused, as no handler can be given it.
fn target_form<B>(req: &Request<B>) -> Result<(), &'static str> {
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_some() && req.method() != Method::CONNECT {
        return Err("the authority form of a request target is for CONNECT only");
    }
    if uri.path() == "*" && uri.authority().is_none() && req.method() != Method::OPTIONS {
        return Err("the asterisk form of a request target is for OPTIONS only");
    }
    if uri.path().contains("%00") {
        return Err("the request path holds a NUL (%00)");
    }
    Ok(())
}

/// The target with its path's dot-segments resolved; `None` when nothing changes.
fn resolved_uri(uri: &Uri) -> Result<Option<Uri>, String> {
    let Some(pq) = uri.path_and_query() else {
        return Ok(None);
    };
    let new = match resolve_dots(pq.path()).map_err(|e| e.to_string())? {
        Cow::Borrowed(_) => return Ok(None),
        Cow::Owned(mut path) => {
            if let Some(q) = pq.query() {
                path.push('?');
                path.push_str(q);
            }
            // Only segments of a valid path were removed: still valid.
            PathAndQuery::from_maybe_shared(Bytes::from(path))
                .map_err(|_| BadPath::Ambiguous.to_string())?
        }
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(new);
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| BadPath::Ambiguous.to_string())
}

/// Why a request path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// More `..` than segments before them: the path leaves `/`.
    Climbs,
    /// A segment that is `.` or `..` only to a server that also decodes `%2f` or `\` as a
    /// separator, or drops `;params` (Tomcat reads `..;x` as `..`).
    Ambiguous,
}

impl std::fmt::Display for BadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadPath::Climbs => "the request path climbs above /",
            BadPath::Ambiguous => "the request path has a dot-segment hidden behind %2f, \\ or ;",
        })
    }
}

/// A path segment's meaning for dot-segment removal, with `%2e` read as `.`.
enum Dot {
    One,
    Two,
    Other,
}

fn dot_kind(seg: &str) -> Result<Dot, BadPath> {
    let dots = |s: &str| -> Option<Dot> {
        let mut rest = s.as_bytes();
        let mut n = 0;
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && rest[2] | 0x20 == b'e'
            {
                rest = &rest[3..];
            } else {
                return None;
            }
            n += 1;
        }
        match n {
            1 => Some(Dot::One),
            2 => Some(Dot::Two),
            _ => None,
        }
    };
    if let Some(d) = dots(seg) {
        return Ok(d);
    }
    // What other servers might still read as a dot-segment: the part before `;`, and
    // the pieces of a fully decoded segment split at `/` and `\`.
    if seg.contains(';') && seg.split(';').next().and_then(dots).is_some() {
        return Err(BadPath::Ambiguous);
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
    if decoded.split(|b| *b == b'/' || *b == b'\\').any(|piece| {
        let piece = piece.split(|b| *b == b';').next().unwrap_or_default();
        piece == b"." || piece == b".."
    }) {
        return Err(BadPath::Ambiguous);
    }
    Ok(Dot::Other)
}

/// Removes the dot-segments of an origin-form path (RFC 3986 §5.2.4), reading `%2e` and
/// `%2E` as `.`; everything else, `%2f` included, stays as it was (an encoded slash is not
/// a separator). A `..` with nothing left to remove is [`BadPath::Climbs`], where RFC 3986
/// would quietly stop at `/`. Empty segments (`//`) are kept. A path that does not start
/// with `/` (`*`) is returned as it is.
pub fn resolve_dots(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(Cow::Borrowed(path));
    };
    if !path.bytes().any(|b| b == b'.' || b == b'%' || b == b'\\') {
        return Ok(Cow::Borrowed(path));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let last = segs.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let mut changed = false;
    for (i, seg) in segs.iter().enumerate() {
        match dot_kind(seg)? {
            Dot::Other => out.push(seg),
            Dot::One => {
                changed = true;
                if i == last {
                    out.push("");
                }
            }
            Dot::Two => {
                changed = true;
                if out.pop().is_none() {
                    return Err(BadPath::Climbs);
                }
                if i == last {
                    out.push("");
                }
            }
        }
    }
    if !changed {
        return Ok(Cow::Borrowed(path));
    }
    let mut joined = String::with_capacity(path.len());
    for seg in &out {
        joined.push('/');
        joined.push_str(seg);
    }
    if joined.is_empty() {
        joined.push('/');
    }
    Ok(Cow::Owned(joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    fn status(mut r: Request<()>) -> u16 {
        match check(&mut r) {
            Ok(()) => 200,
            Err(resp) => resp.status().as_u16(),
        }
    }

    #[test]
    fn hosts_must_be_one_valid_authority() {
        let v11 = Version::HTTP_11;
        assert_eq!(status(req("GET", "/", v11, &[("host", "a")])), 200);
        assert_eq!(status(req("GET", "/", v11, &[("host", "a:8080")])), 200);
        assert_eq!(status(req("GET", "/", v11, &[("host", "[::1]:80")])), 200);
        assert_eq!(status(req("GET", "/", v11, &[("host", "")])), 200);
        assert_eq!(status(req("GET", "/", v11, &[("host", "a:")])), 200);
        assert_eq!(status(req("GET", "/", Version::HTTP_10, &[])), 200);
        assert_eq!(status(req("GET", "/", v11, &[])), 400);
        assert_eq!(
            status(req("GET", "/", v11, &[("host", "a"), ("host", "a")])),
            400
        );
        for bad in ["a b/c@d", "u@a", "a:b", "a/b", "a:1:2", ":80", "[::1"] {
            assert_eq!(status(req("GET", "/", v11, &[("host", bad)])), 400, "{bad}");
        }
    }

    #[test]
    fn only_plain_chunked_is_a_transfer_encoding() {
        let te = |v: &[&str]| {
            let mut h = vec![("host", "a")];
            h.extend(v.iter().map(|v| ("transfer-encoding", *v)));
            status(req("POST", "/", Version::HTTP_11, &h))
        };
        assert_eq!(te(&["chunked"]), 200);
        assert_eq!(te(&["Chunked "]), 200);
        assert_eq!(te(&["gzip, chunked"]), 501);
        assert_eq!(te(&["identity", "chunked"]), 501);
        assert_eq!(te(&["chunked", "chunked"]), 501);
    }

    #[test]
    fn target_forms_and_nul() {
        let h = [("host", "a")];
        let v11 = Version::HTTP_11;
        assert_eq!(status(req("OPTIONS", "*", v11, &h)), 200);
        assert_eq!(status(req("GET", "*", v11, &h)), 400);
        assert_eq!(status(req("CONNECT", "a:80", v11, &h)), 200);
        assert_eq!(status(req("GET", "a:80", v11, &h)), 400);
        assert_eq!(status(req("GET", "http://a/x", v11, &h)), 200);
        assert_eq!(status(req("GET", "/a%00b", v11, &h)), 400);
        assert_eq!(status(req("GET", "/a?q=%00", v11, &h)), 200);
        assert_eq!(status(req("GET", "/a%2500b", v11, &h)), 200);
    }

    #[test]
    fn the_path_is_resolved_in_place_and_climbing_is_400() {
        let mut r = req(
            "GET",
            "/a/../b/./c?x=/../y",
            Version::HTTP_11,
            &[("host", "a")],
        );
        assert!(check(&mut r).is_ok());
        assert_eq!(r.uri(), "/b/c?x=/../y");
        let mut r = req(
            "GET",
            "http://h:1/a/%2e%2e/b",
            Version::HTTP_11,
            &[("host", "a")],
        );
        assert!(check(&mut r).is_ok());
        assert_eq!(r.uri(), "http://h:1/b");
        assert_eq!(
            status(req(
                "GET",
                "/a/../../etc/passwd",
                Version::HTTP_11,
                &[("host", "a")]
            )),
            400
        );
        assert_eq!(
            status(req("GET", "/%2e%2e/", Version::HTTP_11, &[("host", "a")])),
            400
        );
    }

    #[test]
    fn dot_segments_are_resolved_and_climbing_is_refused() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2e/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a//../b", "/a/b"),
            ("//keep//this", "//keep//this"),
            ("/a%2fb/../c", "/c"),
            ("/files/a%2Fb", "/files/a%2Fb"),
            ("/.../x", "/.../x"),
            ("/a.b/..c/d..", "/a.b/..c/d.."),
            ("/%2e%2e%2e", "/%2e%2e%2e"),
            ("*", "*"),
        ];
        for (path, want) in ok {
            assert_eq!(resolve_dots(path).as_deref(), Ok(want), "{path}");
        }
        for path in [
            "/..",
            "/../secret",
            "/%2e%2e/secret",
            "/%2E%2E/secret",
            "/a/../../x",
            "/a/b/../../..",
            "/./../x",
        ] {
            assert_eq!(resolve_dots(path), Err(BadPath::Climbs), "{path}");
        }
        for path in [
            "/a/..%2fsecret",
            "/a/%2e%2e%2fsecret",
            "/a/..%5csecret",
            "/a/..;x/secret",
            "/a/%2e%2e;/secret",
            "/a/x%2f..%2f..%2fsecret",
        ] {
            assert_eq!(resolve_dots(path), Err(BadPath::Ambiguous), "{path}");
        }
    }

    /// Every segment of the output is one of the input's segments, in order, and none is
    /// a dot-segment; resolving again changes nothing; `..` never climbs above `/`.
    mod resolve_dots_properties {
        use super::super::{resolve_dots, BadPath};
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just(".%2e".to_owned()),
                Just(String::new()),
                Just("%2f".to_owned()),
                "[a-z.%;0-9]{1,6}",
            ]
        }

        proptest! {
            #[test]
            fn resolving_is_idempotent_and_stays_under_the_root(
                segs in proptest::collection::vec(segment(), 0..10)
            ) {
                let path = format!("/{}", segs.join("/"));
                match resolve_dots(&path) {
                    Ok(out) => {
                        prop_assert!(out.starts_with('/'), "{out}");
                        prop_assert!(out.len() <= path.len() + 1);
                        for seg in out[1..].split('/') {
                            let d = seg.replace("%2e", ".").replace("%2E", ".");
                            prop_assert!(d != "." && d != "..", "{path} -> {out}");
                        }
                        let again = resolve_dots(&out);
                        prop_assert_eq!(again.as_deref(), Ok(&*out));
                        // Depth never goes below the root.
                        let mut depth: i64 = 0;
                        for seg in &segs {
                            let d = seg.replace("%2e", ".").replace("%2E", ".");
                            if d == ".." { depth -= 1 } else if d != "." { depth += 1 }
                            prop_assert!(depth >= 0, "{path} climbs but was accepted");
                        }
                    }
                    Err(BadPath::Climbs) => {
                        let mut depth: i64 = 0;
                        let mut below = false;
                        for seg in &segs {
                            let d = seg.replace("%2e", ".").replace("%2E", ".");
                            if d == ".." { depth -= 1 } else if d != "." { depth += 1 }
                            below |= depth < 0;
                        }
                        prop_assert!(below, "{path} refused as climbing");
                    }
                    Err(BadPath::Ambiguous) => {}
                }
            }
        }
    }
}
