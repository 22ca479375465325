//! CGI/1.1 (RFC 3875) for the fork modes (`--cgi`): the meta-variables a handler is
//! given, and the parser for the header block it answers with.
//!
//! Both halves are pure: [`meta_variables`] reads a request's parts, [`HeadBuf`] reads
//! the bytes a handler wrote. Neither does I/O, so the fork runner uses them over pipes
//! and a FastCGI runner can use them unchanged over `FCGI_PARAMS` and `FCGI_STDOUT`
//! records. The parser checks each line as it completes, so a handler that does not
//! speak CGI fails on its first line instead of after 64 KiB or at exit.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// The largest header block a handler may write before its blank line.
pub const MAX_HEAD: usize = 64 * 1024;

/// What the meta-variables need besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The client (`REMOTE_ADDR`, `REMOTE_PORT`).
    pub remote: Option<SocketAddr>,
    /// The port the request arrived on (`SERVER_PORT`).
    pub server_port: u16,
    /// The bytes the handler will find on stdin, when known (`CONTENT_LENGTH`).
    pub content_length: Option<u64>,
    /// A header never passed on (the API key, unless forwarded).
    pub hidden: Option<&'a HeaderName>,
}

impl<'a> Meta<'a> {
    /// What the meta-variables need for `parts`: the client is the address the
    /// connection recorded in the request's extensions.
    pub fn for_request(
        parts: &Parts,
        server_port: u16,
        content_length: Option<u64>,
        hidden: Option<&'a HeaderName>,
    ) -> Meta<'a> {
        Meta {
            remote: parts.extensions.get::<SocketAddr>().copied(),
            server_port,
            content_length,
            hidden,
        }
    }
}

/// The RFC 3875 §4.1 meta-variables for one request, plus `REDIRECT_STATUS=200` (php-cgi
/// refuses to run without it) and `REMOTE_PORT`.
///
/// The script is mounted at the root: `SCRIPT_NAME` is empty and `PATH_INFO` is the whole
/// decoded path. Request headers become `HTTP_<NAME>` (RFC 3875 §4.1.18), several values joined by
/// `, ` (cookies by `; `), except: `Proxy` (httpoxy: never `HTTP_PROXY`), the hidden API
/// key header, `Content-Length` and `Content-Type` (they are `CONTENT_LENGTH` and
/// `CONTENT_TYPE`), and names with characters other than letters, digits and `-`, which
/// would otherwise collide (`X-Real-Ip` and `X_Real_Ip` are both `HTTP_X_REAL_IP`).
pub fn meta_variables(parts: &Parts, meta: &Meta<'_>) -> Vec<(String, OsString)> {
    let headers = &parts.headers;
    let mut env: Vec<(String, OsString)> = Vec::with_capacity(headers.keys_len() + 16);
    let mut set =
        |name: &str, value: Vec<u8>| env.push((name.to_owned(), OsString::from_vec(value)));

    set("GATEWAY_INTERFACE", b"CGI/1.1".to_vec());
    set(
        "SERVER_SOFTWARE",
        concat!("fwatchdog/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("SERVER_PROTOCOL", protocol(parts.version).into());
    set("SERVER_NAME", server_name(parts));
    set("SERVER_PORT", meta.server_port.to_string().into_bytes());
    set("REQUEST_METHOD", parts.method.as_str().into());
    set("SCRIPT_NAME", Vec::new());
    // Decoded like `Http_Path`: a NUL stays `%00`, as no environment string can hold one.
    set("PATH_INFO", super::env::decoded_path(parts.uri.path()));
    set("QUERY_STRING", parts.uri.query().unwrap_or("").into());
    if let Some(addr) = meta.remote {
        set(
            "REMOTE_ADDR",
            addr.ip().to_canonical().to_string().into_bytes(),
        );
        set("REMOTE_PORT", addr.port().to_string().into_bytes());
    }
    if let Some(n) = meta.content_length {
        set("CONTENT_LENGTH", n.to_string().into_bytes());
    }
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        set("CONTENT_TYPE", ct.as_bytes().to_vec());
    }
    set("REDIRECT_STATUS", b"200".to_vec());

    for name in headers.keys() {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::CONTENT_TYPE
            || name == "proxy"
            || Some(name) == meta.hidden
            || !name
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        let sep: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let mut value = Vec::new();
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(sep);
            }
            value.extend_from_slice(v.as_bytes());
        }
        env.push((http_var(name.as_str()), OsString::from_vec(value)));
    }
    env
}

/// `x-forwarded-for` → `HTTP_X_FORWARDED_FOR` (RFC 3875 §4.1.18).
pub fn http_var(header: &str) -> String {
    let mut name = String::with_capacity(header.len() + 5);
    name.push_str("HTTP_");
    name.extend(header.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The host the client asked for, without its port: `Host` (or the absolute URI's
/// authority), `[::1]` keeping its brackets; `localhost` when the client named none.
fn server_name(parts: &Parts) -> Vec<u8> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or(b"");
    let name = if host.first() == Some(&b'[') {
        match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    if name.is_empty() {
        b"localhost".to_vec()
    } else {
        name.to_vec()
    }
}

/// The head of a CGI response (RFC 3875 §6), ready to become an HTTP response head.
#[derive(Debug)]
pub struct Head {
    /// From `Status:`; else 302 when there is a `Location:`; else 200.
    pub status: StatusCode,
    /// Every other header field, in order, minus the ones that frame the HTTP message
    /// (`Content-Length`, `Transfer-Encoding`, `Connection` and the other hop-by-hop
    /// fields): the body is re-framed by the server.
    pub headers: HeaderMap,
}

/// What the client is told when a handler's output is not a CGI response; the details
/// ([`HeadError`]) quote that output and go to the log only.
pub const MALFORMED: &str = "malformed CGI response from the handler (details in the log)\n";

/// Why a handler's output is not a CGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// No blank line within this many bytes.
    TooLarge(usize),
    /// The output ended before the blank line that ends the header block.
    Unterminated,
    /// A line that is not `name: value`.
    NotAHeader(String),
    /// A header name that is not an HTTP token.
    BadName(String),
    /// A value with bytes HTTP does not allow (control characters).
    BadValue(String),
    /// A `Status:` that is not `NNN reason` with NNN in 200-599.
    BadStatus(String),
    DuplicateStatus,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge(n) => {
                write!(f, "no blank line ending the header block within {n} bytes")
            }
            HeadError::Unterminated => {
                f.write_str("output ended before the blank line ending the header block")
            }
            HeadError::NotAHeader(l) => write!(f, "line {l} is not a \"Name: value\" header"),
            HeadError::BadName(n) => write!(f, "invalid header name {n}"),
            HeadError::BadValue(n) => write!(f, "invalid value for header {n}"),
            HeadError::BadStatus(v) => {
                write!(
                    f,
                    "invalid Status {v} (expected e.g. \"Status: 404 Not Found\")"
                )
            }
            HeadError::DuplicateStatus => f.write_str("more than one Status header"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Reads a CGI header block from output as it arrives, in pieces of any size.
#[derive(Debug)]
pub struct HeadBuf {
    limit: usize,
    /// Bytes of header lines consumed so far, newlines included.
    size: usize,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    status: Option<StatusCode>,
    headers: HeaderMap,
}

impl HeadBuf {
    pub fn new(limit: usize) -> HeadBuf {
        HeadBuf {
            limit,
            size: 0,
            partial: Vec::new(),
            status: None,
            headers: HeaderMap::new(),
        }
    }

    /// Adds the next piece of output. Once the blank line (LF or CRLF) that ends the
    /// header block has arrived, returns the head and what followed it: the start of the
    /// body, a slice of `data` (possibly empty).
    pub fn push(&mut self, data: Bytes) -> Result<Option<(Head, Bytes)>, HeadError> {
        let mut at = 0;
        while let Some(i) = data[at..].iter().position(|&b| b == b'\n') {
            let piece = &data[at..at + i];
            // The line's start may have come in earlier pieces.
            self.size += self.partial.len() + i + 1;
            at += i + 1;
            let mut line = std::mem::take(&mut self.partial);
            let whole: &[u8] = if line.is_empty() {
                piece
            } else {
                line.extend_from_slice(piece);
                &line
            };
            if self.size > self.limit {
                return Err(HeadError::TooLarge(self.limit));
            }
            let whole = whole.strip_suffix(b"\r").unwrap_or(whole);
            if whole.is_empty() {
                return Ok(Some((self.head(), data.slice(at..))));
            }
            self.line(whole)?;
            line.clear();
            self.partial = line;
        }
        self.partial.extend_from_slice(&data[at..]);
        if self.size + self.partial.len() > self.limit {
            return Err(HeadError::TooLarge(self.limit));
        }
        Ok(None)
    }

    fn head(&mut self) -> Head {
        let status = self
            .status
            .unwrap_or(if self.headers.contains_key(http::header::LOCATION) {
                StatusCode::FOUND
            } else {
                StatusCode::OK
            });
        Head {
            status,
            headers: std::mem::take(&mut self.headers),
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), HeadError> {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| HeadError::NotAHeader(show(line)))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"status") {
            if self.status.is_some() {
                return Err(HeadError::DuplicateStatus);
            }
            self.status = Some(parse_status(value)?);
            return Ok(());
        }
        let name = HeaderName::from_bytes(name).map_err(|_| HeadError::BadName(show(name)))?;
        let value =
            HeaderValue::from_bytes(value).map_err(|_| HeadError::BadValue(show(name.as_ref())))?;
        if !frames_the_message(&name) {
            self.headers.append(name, value);
        }
        Ok(())
    }
}

/// `404 Not Found` or `404`. The reason phrase is not kept: the response carries the
/// standard one.
fn parse_status(v: &[u8]) -> Result<StatusCode, HeadError> {
    let code = v.split(|&b| b == b' ' || b == b'\t').next().unwrap_or(b"");
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadStatus(show(v)));
    }
    StatusCode::from_bytes(code)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| HeadError::BadStatus(show(v)))
}

fn frames_the_message(name: &HeaderName) -> bool {
    use http::header;
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]
    .contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A piece of handler output for a log line: quoted, escaped, at most 80 characters.
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let cut: String = s.chars().take(80).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn var<'a>(env: &'a [(String, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.to_str())
    }

    fn meta(remote: Option<&str>) -> Meta<'static> {
        Meta {
            remote: remote.map(|r| r.parse().expect("addr")),
            server_port: 8080,
            content_length: Some(5),
            hidden: None,
        }
    }

    #[test]
    fn rfc3875_meta_variables() {
        let p = parts(
            "POST",
            "/a%20b/c?x=1&y=%20",
            &[
                ("host", "fn.example:31112"),
                ("content-type", "text/plain"),
                ("content-length", "5"),
                ("x-forwarded-for", "10.0.0.1"),
                ("accept", "text/html"),
                ("accept", "*/*"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
        );
        let env = meta_variables(&p, &meta(Some("192.0.2.7:40000")));
        let want = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "fn.example"),
            ("SERVER_PORT", "8080"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", "/a b/c"),
            ("QUERY_STRING", "x=1&y=%20"),
            ("REMOTE_ADDR", "192.0.2.7"),
            ("REMOTE_PORT", "40000"),
            ("CONTENT_LENGTH", "5"),
            ("CONTENT_TYPE", "text/plain"),
            ("REDIRECT_STATUS", "200"),
            ("HTTP_HOST", "fn.example:31112"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.1"),
            ("HTTP_ACCEPT", "text/html, */*"),
            ("HTTP_COOKIE", "a=1; b=2"),
        ];
        for (k, v) in want {
            assert_eq!(var(&env, k), Some(v), "{k}");
        }
        assert!(var(&env, "SERVER_SOFTWARE").is_some_and(|s| s.starts_with("fwatchdog/")));
        assert!(var(&env, "HTTP_CONTENT_TYPE").is_none());
        assert!(var(&env, "HTTP_CONTENT_LENGTH").is_none());
    }

    #[test]
    fn never_http_proxy_nor_the_hidden_key_nor_ambiguous_names() {
        let key = HeaderName::from_static("x-api-key");
        let p = parts(
            "GET",
            "/",
            &[
                ("proxy", "http://evil:3128"),
                ("x-api-key", "s3cret"),
                ("x_real_ip", "6.6.6.6"),
                ("x-real-ip", "1.2.3.4"),
            ],
        );
        let env = meta_variables(
            &p,
            &Meta {
                hidden: Some(&key),
                ..meta(None)
            },
        );
        assert!(var(&env, "HTTP_PROXY").is_none());
        assert!(env.iter().all(|(_, v)| v != "s3cret" && v != "6.6.6.6"));
        assert_eq!(var(&env, "HTTP_X_REAL_IP"), Some("1.2.3.4"));
        assert_eq!(var(&env, "QUERY_STRING"), Some(""), "set even when empty");
        assert!(var(&env, "REMOTE_ADDR").is_none());
        assert!(var(&env, "CONTENT_TYPE").is_none());
    }

    #[test]
    fn server_name_and_remote_addr_forms() {
        let name = |host: &str| {
            let p = parts("GET", "/", &[("host", host)]);
            String::from_utf8(server_name(&p)).expect("utf8")
        };
        assert_eq!(name("example.com"), "example.com");
        assert_eq!(name("example.com:80"), "example.com");
        assert_eq!(name("[::1]:8080"), "[::1]");
        assert_eq!(name("[::1]"), "[::1]");
        assert_eq!(name(""), "localhost");
        let env = meta_variables(&parts("GET", "/", &[]), &meta(Some("[::ffff:10.1.2.3]:9")));
        assert_eq!(var(&env, "REMOTE_ADDR"), Some("10.1.2.3"));
        let env = meta_variables(&parts("GET", "/", &[]), &meta(Some("[2001:db8::1]:9")));
        assert_eq!(var(&env, "REMOTE_ADDR"), Some("2001:db8::1"));
        assert_eq!(http_var("x-b3-traceid"), "HTTP_X_B3_TRACEID");
        let env = meta_variables(&parts("GET", "/a%00b%2Fc", &[]), &meta(None));
        assert_eq!(var(&env, "PATH_INFO"), Some("/a%00b/c"));
    }

    /// Whole output split into its head and the body chunks after it.
    fn split_head(chunks: Vec<Bytes>, limit: usize) -> Result<(Head, Vec<Bytes>), HeadError> {
        let mut buf = HeadBuf::new(limit);
        let mut rest = chunks.into_iter();
        while let Some(chunk) = rest.next() {
            if let Some((head, first)) = buf.push(chunk)? {
                let mut body = Vec::with_capacity(rest.len() + 1);
                if !first.is_empty() {
                    body.push(first);
                }
                body.extend(rest);
                return Ok((head, body));
            }
        }
        Err(HeadError::Unterminated)
    }

    fn parse_all(out: &[u8]) -> Result<(Head, Vec<u8>), HeadError> {
        let (head, body) = split_head(vec![Bytes::copy_from_slice(out)], MAX_HEAD)?;
        Ok((head, body.concat()))
    }

    #[test]
    fn status_headers_and_body_with_lf_or_crlf() {
        for out in [
            &b"Status: 404 Not Found\nContent-Type: text/plain\nX-A: 1\nX-A: 2\n\nbody\n"[..],
            &b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody\n"
                [..],
            &b"status:404\r\ncontent-type:  text/plain  \nX-A:1\r\nx-a: 2\n\r\nbody\n"[..],
        ] {
            let (head, body) = parse_all(out).expect("parses");
            assert_eq!(head.status, StatusCode::NOT_FOUND);
            assert_eq!(head.headers["content-type"], "text/plain");
            let xa: Vec<_> = head.headers.get_all("x-a").iter().collect();
            assert_eq!(xa, ["1", "2"]);
            assert_eq!(body, b"body\n");
        }
    }

    #[test]
    fn location_without_status_is_302_and_defaults_are_200() {
        let (head, body) = parse_all(b"Location: https://example.com/\n\n").expect("parses");
        assert_eq!(head.status, StatusCode::FOUND);
        assert_eq!(head.headers["location"], "https://example.com/");
        assert!(body.is_empty());
        let (head, _) = parse_all(b"Status: 301\nLocation: /x\n\n").expect("parses");
        assert_eq!(head.status, StatusCode::MOVED_PERMANENTLY);
        let (head, body) = parse_all(b"\nno headers at all").expect("parses");
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.headers.is_empty());
        assert_eq!(body, b"no headers at all");
    }

    #[test]
    fn framing_headers_from_the_script_are_dropped() {
        let (head, _) = parse_all(
            b"Content-Length: 3\nTransfer-Encoding: chunked\nConnection: close\nKeep-Alive: 5\nSet-Cookie: a=1\n\nabc",
        )
        .expect("parses");
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers["set-cookie"], "a=1");
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let err = |out: &[u8]| parse_all(out).expect_err("malformed");
        assert!(matches!(err(b"hello world\n\n"), HeadError::NotAHeader(_)));
        assert!(matches!(err(b"Bad Name: x\n\n"), HeadError::BadName(_)));
        assert!(matches!(err(b": x\n\n"), HeadError::BadName(_)));
        assert!(matches!(err(b"X-A: a\x01b\n\n"), HeadError::BadValue(_)));
        assert!(matches!(err(b" folded: x\n\n"), HeadError::BadName(_)));
        for bad in [
            "Status: 99\n\n",
            "Status: 1000 x\n\n",
            "Status: abc\n\n",
            "Status: 101 Switching\n\n",
            "Status:\n\n",
            "Status: 700\n\n",
        ] {
            assert!(
                matches!(err(bad.as_bytes()), HeadError::BadStatus(_)),
                "{bad:?}"
            );
        }
        assert_eq!(
            err(b"Status: 200\nStatus: 404\n\n"),
            HeadError::DuplicateStatus
        );
        assert_eq!(err(b"Content-Type: text/plain\n"), HeadError::Unterminated);
        assert_eq!(err(b""), HeadError::Unterminated);
    }

    #[test]
    fn a_block_past_the_limit_is_too_large_even_without_newlines() {
        let mut buf = HeadBuf::new(100);
        let long = Bytes::from(vec![b'a'; 101]);
        assert_eq!(
            buf.push(long).expect_err("too large"),
            HeadError::TooLarge(100)
        );
        let mut buf = HeadBuf::new(100);
        for _ in 0..8 {
            assert!(buf
                .push(Bytes::from_static(b"X-Header: 1\n"))
                .expect("fine")
                .is_none());
        }
        assert_eq!(
            buf.push(Bytes::from_static(b"X-Header: 1\n\n"))
                .expect_err("too large"),
            HeadError::TooLarge(100)
        );
        let mut buf = HeadBuf::new(MAX_HEAD);
        let mut head = Vec::new();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        let pushed = head
            .chunks(4096)
            .map(|c| buf.push(Bytes::copy_from_slice(c)))
            .find(|r| r.is_err());
        assert_eq!(
            pushed.and_then(Result::err),
            Some(HeadError::TooLarge(MAX_HEAD))
        );
    }

    #[test]
    fn any_split_of_the_output_gives_the_same_result() {
        let out: &[u8] = b"Status: 201 Created\r\nContent-Type: application/json\r\nX-Id: 7\n\r\n{\"ok\":true}\n";
        for size in 1..out.len() {
            let chunks: Vec<Bytes> = out.chunks(size).map(Bytes::copy_from_slice).collect();
            let (head, body) = split_head(chunks, MAX_HEAD).expect("parses");
            assert_eq!(head.status, StatusCode::CREATED, "size {size}");
            assert_eq!(head.headers["x-id"], "7", "size {size}");
            assert_eq!(body.concat(), b"{\"ok\":true}\n", "size {size}");
        }
        // The first bad line fails at once, before the block ends.
        let mut buf = HeadBuf::new(MAX_HEAD);
        assert!(buf
            .push(Bytes::from_static(b"Content-Type: text/plain\nnot a hea"))
            .expect("ok")
            .is_none());
        assert!(matches!(
            buf.push(Bytes::from_static(b"der\n")),
            Err(HeadError::NotAHeader(l)) if l == "\"not a header\""
        ));
    }

    #[test]
    fn errors_read_well_in_a_log_line() {
        assert_eq!(
            HeadError::BadStatus(show(b"abc")).to_string(),
            "invalid Status \"abc\" (expected e.g. \"Status: 404 Not Found\")"
        );
        let long = show(&[b'x'; 200]);
        assert!(long.ends_with('…') && long.len() < 100);
    }
}
