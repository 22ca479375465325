//! http mode: the reverse proxy in front of one long-running handler that is
//! itself an HTTP server ([`crate::backend::upstream`] runs that handler).
//!
//! [`Proxy`] proxies each request over a pooled keep-alive client. Bodies are streamed in
//! both directions frame by frame, so SSE and NDJSON reach the client as the upstream
//! writes them; a request that came with a `Content-Length` goes out with the same one
//! (WSGI servers read nothing from a chunked body). The path's dot-segments were resolved
//! by the request chain ([`crate::head`]) before it is joined to `upstream_url`'s, so the
//! upstream never sees a path outside its prefix. Hop-by-hop headers are removed both
//! ways, `Host` is kept, `X-Forwarded-For` gets the client's address, and `Upgrade:
//! websocket` is tunnelled. The request is one future on the connection's task: no task
//! is spawned for it, and dropping it (the client hung up) cancels the upstream request.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::budget::BodyEnd;
use super::failure::{duration_header, X_DURATION};
use super::upstream_pool::{Pool, SendError};
use super::{content_length, Budget, Ctx, Deadline, Failure};
use crate::body::{self, Body};
use crate::config::{parse_duration, Config};
use crate::duration::format_duration;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_TIMEOUT: HeaderName = HeaderName::from_static("x-timeout");

/// The reverse proxy: what answers function requests in http mode.
pub struct Proxy {
    pool: Pool,
    /// `Host` for a request that came without one (HTTP/1.0): the upstream's.
    host: HeaderValue,
    /// The upstream URL's path without its trailing `/`; `None` when that leaves nothing.
    prefix: Option<String>,
    url: String,
    /// What `X-Timeout` may shorten.
    exec_timeout: Option<Duration>,
    buffer: bool,
    /// With API-key protection: the key header.
    key: Option<HeaderName>,
}

impl Proxy {
    pub fn new(cfg: &Config) -> Proxy {
        let upstream = cfg.proxy.upstream_url.clone().unwrap_or_default();
        let prefix = upstream.path().trim_end_matches('/');
        let authority = upstream
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        Proxy {
            host: HeaderValue::from_str(authority.as_str())
                .unwrap_or(HeaderValue::from_static("127.0.0.1")),
            pool: Pool::new(authority),
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            url: upstream.to_string(),
            exec_timeout: cfg.timeouts.exec,
            buffer: cfg.proxy.buffer_req_body,
            key: cfg.auth.api_keys.as_ref().map(|k| k.header().clone()),
        }
    }

    /// After the drain: closes the idle connections to the upstream.
    pub fn close_idle(&self) {
        self.pool.close_idle();
    }

    /// Proxies one request: the head made ready for the upstream, the body passed on
    /// within the budget (or read whole first, with `http_buffer_req_body`), the
    /// upstream's head awaited until the run's deadline, its answer streamed back.
    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let mut budget = ctx.budget.clone();
        let started = budget.started;
        let (mut parts, body) = req.into_parts();
        let prepared = match self.prepare(&mut parts, &mut budget) {
            Ok(p) => p,
            Err(f) => return f.answer(started),
        };
        let body = match self.request_body(&mut parts, body, &budget).await {
            Ok(b) => b,
            Err(f) => return f.answer(started),
        };
        let resp = match self.send(parts, body, &prepared, &budget).await {
            Ok(resp) => resp,
            Err(resp) => return resp,
        };
        respond(resp, prepared, ctx, &budget)
    }

    /// Checks the declared length, sets the run's deadline (`exec_timeout`, or a shorter
    /// `X-Timeout`), and turns the client's head into the upstream's: hop-by-hop headers
    /// out, `X-Forwarded-For` and `X-Deadline-Ms` in, the path resolved and joined to
    /// `upstream_url`. A websocket upgrade keeps what the tunnel needs.
    fn prepare(
        &self,
        parts: &mut http::request::Parts,
        budget: &mut Budget,
    ) -> Result<Prepared, Failure> {
        budget.check_declared(&parts.headers)?;
        if let Some(t) = x_timeout(&parts.headers, self.exec_timeout) {
            budget.shorten("X-Timeout", t);
        }
        let deadline = budget.run();
        let upgrade = websocket(&parts.headers);
        let tunnel = upgrade.as_ref().and_then(|_| {
            Some(Tunnel {
                client: parts.extensions.remove::<OnUpgrade>()?,
                conn: parts.extensions.remove::<crate::conn::Held>(),
            })
        });
        let peer = parts.extensions.get::<SocketAddr>().map(|a| a.ip());
        parts.extensions.clear();

        // `Expect` goes too: we stream the body as soon as the upstream reads it, and its
        // own 100 Continue would only be swallowed by hyper.
        strip_hop_by_hop(&mut parts.headers, Some(&header::EXPECT));
        if let Some(key) = &self.key {
            drop_key_lookalikes(&mut parts.headers, key);
        }
        if let Some(up) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, up.clone());
        }
        if let Some(ip) = peer {
            forwarded_for(&mut parts.headers, ip);
        }
        // When we stop waiting for the upstream's answer, in ms since the Unix epoch.
        // Always ours: a client's own X-Deadline-Ms is replaced.
        parts.headers.insert(
            HeaderName::from_static("x-deadline-ms"),
            super::deadline_ms(deadline.at).into(),
        );
        let method = parts.method.clone();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The request chain has resolved the path's dot-segments ([`crate::head`]).
        parts.uri = self
            .target(&path)
            .map_err(|e| Failure::BadRequest(format!("cannot build the upstream URL: {e}")))?;
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, self.host.clone());
        }
        parts.version = Version::HTTP_11;
        Ok(Prepared {
            deadline,
            tunnel,
            method,
            path,
        })
    }

    /// The body as it goes upstream: read whole within the budget and sent with a
    /// `Content-Length` (`http_buffer_req_body`), else passed on as it arrives, with the
    /// budget's byte cap and silence bound.
    async fn request_body(
        &self,
        parts: &mut http::request::Parts,
        body: Body,
        budget: &Budget,
    ) -> Result<Body, Failure> {
        if self.buffer {
            let (chunks, total) = budget.collect(body).await?;
            parts.headers.insert(header::CONTENT_LENGTH, total.into());
            return Ok(body::Chunks::new(chunks).boxed_unsync());
        }
        if content_length(&parts.headers).is_none() && !http_body::Body::is_end_stream(&body) {
            // hyper's client sends a GET or HEAD body of unknown length as no body at all
            // unless the request says chunked: say it, for every method.
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        Ok(budget.stream(body))
    }

    /// Sends the request and waits for the upstream's head until the run's deadline;
    /// nothing is sent once the request's own deadline has passed.
    async fn send(
        &self,
        parts: http::request::Parts,
        body: Body,
        prepared: &Prepared,
        budget: &Budget,
    ) -> Result<Response<Incoming>, Response<Body>> {
        let started = budget.started;
        budget.expired().map_err(|f| f.answer(started))?;
        let (method, path, deadline) = (&prepared.method, &prepared.path, prepared.deadline);
        let mut pending = Pending {
            started,
            method,
            path,
            armed: true,
        };
        let sent = tokio::time::timeout_at(
            deadline.at.into(),
            self.pool.send(Request::from_parts(parts, body)),
        )
        .await;
        pending.armed = false;
        match sent {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.failed(&e, method, path, started)),
            Err(_) => {
                tracing::info!(
                    "upstream did not answer {method} {path} within {} ({})",
                    deadline.what,
                    format_duration(deadline.limit)
                );
                Err(Failure::Timeout(deadline).answer(started))
            }
        }
    }

    /// The request target sent upstream (origin form): `upstream_url`'s path + the
    /// request's path and query, without a doubled `/`.
    fn target(&self, pq: &PathAndQuery) -> Result<Uri, http::Error> {
        let pq = match &self.prefix {
            None => pq.clone(),
            Some(prefix) => {
                let rest = pq.as_str();
                let mut joined = String::with_capacity(prefix.len() + rest.len() + 1);
                joined.push_str(prefix);
                if !rest.starts_with('/') {
                    joined.push('/');
                }
                joined.push_str(rest);
                PathAndQuery::from_maybe_shared(Bytes::from(joined))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq);
        Ok(Uri::from_parts(parts)?)
    }

    /// The answer when the upstream request failed before a response head.
    fn failed(
        &self,
        e: &SendError,
        method: &Method,
        path: &PathAndQuery,
        started: Instant,
    ) -> Response<Body> {
        let mut cause: &(dyn std::error::Error + 'static) = e;
        let mut client_body = None;
        while let Some(next) = cause.source() {
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                // A failing request body is the client's doing, not the upstream's.
                if h.is_user() {
                    client_body = Some(next);
                }
            }
            cause = next;
        }
        if let Some(why) = client_body {
            tracing::info!("{method} {path}: the request body failed: {cause}");
            return Failure::Body(BodyEnd::of(why)).answer(started);
        }
        let msg = if matches!(e, SendError::Connect(_)) {
            format!("cannot connect to upstream {}: {cause}", self.url)
        } else {
            format!(
                "upstream {} closed the connection without answering: {cause}",
                self.url
            )
        };
        tracing::warn!(
            "{method} {path}: {msg} (after {:.4}s)",
            started.elapsed().as_secs_f64()
        );
        Failure::BadGateway(msg).answer(started)
    }
}

/// Logs a client hang-up: the request future was dropped before the upstream answered,
/// which also dropped (cancelled) the upstream request.
struct Pending<'a> {
    started: Instant,
    method: &'a Method,
    path: &'a PathAndQuery,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                "client hung up after {:.4}s waiting for {} {}; upstream request cancelled",
                self.started.elapsed().as_secs_f64(),
                self.method,
                self.path
            );
        }
    }
}

/// What [`Proxy::prepare`] settled for the rest of the request.
struct Prepared {
    /// When the upstream's head must have come.
    deadline: Deadline,
    /// With a websocket upgrade: the client's side of it.
    tunnel: Option<Tunnel>,
    method: Method,
    path: PathAndQuery,
}

/// The client's side of a websocket upgrade, and its connection's share in
/// `max_connections` and the drain.
struct Tunnel {
    client: OnUpgrade,
    conn: Option<crate::conn::Held>,
}

/// The client's answer from the upstream's: a websocket tunnel once both sides agreed to
/// switch, else the upstream's body, aborted if still streaming at the write deadline.
fn respond(
    resp: Response<Incoming>,
    prepared: Prepared,
    ctx: &Ctx,
    budget: &Budget,
) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    let body = match (parts.status, prepared.tunnel) {
        (StatusCode::SWITCHING_PROTOCOLS, Some(tunnel)) => {
            let upstream = parts.extensions.remove::<OnUpgrade>();
            let up = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers, None);
            if let (Some(upstream), Some(up)) = (upstream, up) {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, up);
                // The tunnel keeps its connection counted (`max_connections`, the
                // drain) and the request's concurrency slot until it closes.
                if let Some(conn) = &tunnel.conn {
                    conn.lift_write_deadline();
                }
                let held = (tunnel.conn, ctx.slot.clone());
                tokio::spawn(async move {
                    let _held = held;
                    copy_tunnel(tunnel.client, upstream).await;
                });
            }
            body::empty()
        }
        _ => {
            strip_hop_by_hop(&mut parts.headers, None);
            budget.response(incoming)
        }
    };
    let reason = parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    parts.extensions.clear();
    if let Some(r) = reason {
        parts.extensions.insert(UpstreamReason(r));
    }
    // hyper writes the status line with this version; the upstream's own (often
    // HTTP/1.0) says nothing about our connection with the client.
    parts.version = Version::HTTP_11;
    parts
        .headers
        .insert(X_DURATION.clone(), duration_header(budget.started));
    Response::from_parts(parts, body)
}

/// Copies bytes both ways between an upgraded client connection and the upstream's,
/// until both sides have closed.
async fn copy_tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::info!("websocket upgrade failed: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::info!("websocket tunnel closed: {e}");
    }
}

/// The upstream's own reason phrase, when it was not the standard one. Kept for the
/// request log (of-watchdog logs the upstream's status line) but not sent on: the client
/// gets the standard phrase, as from of-watchdog.
#[derive(Debug, Clone)]
pub struct UpstreamReason(hyper::ext::ReasonPhrase);

/// The reason phrase of an http-mode answer's status line: the upstream's, else the
/// standard one for the code (empty for a code that has none).
pub fn reason<B>(resp: &Response<B>) -> &str {
    match resp.extensions().get::<UpstreamReason>() {
        Some(UpstreamReason(r)) => std::str::from_utf8(r.as_bytes()).unwrap_or(""),
        None => resp.status().canonical_reason().unwrap_or(""),
    }
}

/// The `Upgrade` value when the request asks for a websocket.
fn websocket(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(header::UPGRADE)?;
    v.to_str()
        .ok()?
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        .then(|| v.clone())
}

/// The fixed hop-by-hop list: RFC 9110 §7.6.1, plus `Proxy-Authorization` and
/// `Proxy-Authenticate`, which are meant for the proxy they reach first (RFC 9110 §11.7),
/// and the obsolete `Keep-Alive` and `Proxy-Connection`.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes the hop-by-hop headers: the fixed list ([`HOP_BY_HOP`]), every header named
/// in `Connection`, and `also`. One scan of the names finds those present, and only they
/// are removed (each removal is a hashed lookup): the usual head has none, or only
/// `Connection: keep-alive`.
fn strip_hop_by_hop(headers: &mut HeaderMap, also: Option<&HeaderName>) {
    // At most the nine fixed names and `also`: names are unique in `keys()`.
    let mut present: [Option<HeaderName>; 10] = Default::default();
    let mut n = 0;
    let mut connection = false;
    for k in headers.keys() {
        if is_hop_by_hop(k) || also.is_some_and(|a| a == k) {
            connection |= k == header::CONNECTION;
            if let Some(slot) = present.get_mut(n) {
                *slot = Some(k.clone());
                n += 1;
            }
        }
    }
    if n == 0 {
        return;
    }
    if connection {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                // Already on the fixed list, or (empty) no name at all.
                if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for name in present.into_iter().flatten() {
        headers.remove(name);
    }
}

/// Drops every header that a server reading `_` as `-` (WSGI's `HTTP_X_API_KEY`) would
/// take for the API-key header `key`: `X-Api_Key` must not reach the upstream as the key
/// beside, or instead of, the real one. The real header itself was already removed, or
/// kept when forwarded, by the auth check.
fn drop_key_lookalikes(headers: &mut HeaderMap, key: &HeaderName) {
    let key = key.as_str().as_bytes();
    let lookalike = |name: &HeaderName| {
        let n = name.as_str().as_bytes();
        n.contains(&b'_')
            && n.len() == key.len()
            && n.iter()
                .zip(key)
                .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
    };
    if !headers.keys().any(lookalike) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| lookalike(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For`.
fn forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let mut buf = [0u8; 48];
    let n = match ip {
        // Four numbers and dots by hand: `Display` goes through the formatter (with
        // padding support) for each of them, on every request.
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cur, "{ip}");
            cur.position() as usize
        }
    };
    let ip = &buf[..n];
    let value = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut joined = Vec::new();
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(ip);
        HeaderValue::from_maybe_shared(Bytes::from(joined))
    } else {
        HeaderValue::from_bytes(ip)
    };
    if let Ok(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// A valid `X-Timeout` that shortens `exec`: positive and not above it. Anything else
/// (zero, negative, unparsable, longer) is ignored, so it can never disable or extend
/// the limit.
pub(crate) fn x_timeout(headers: &HeaderMap, exec: Option<Duration>) -> Option<Duration> {
    let v = headers.get(&X_TIMEOUT)?.to_str().ok()?;
    let t = parse_duration(v.trim()).ok()?;
    (!t.is_zero() && exec.is_none_or(|e| t <= e)).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_in_connection() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-exit-code"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("expect", "100-continue"),
            ("host", "example"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, Some(&header::EXPECT));
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host", "x-kept"]);
    }

    #[test]
    fn connection_alone_goes_and_the_options_it_names_only() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("host", "a"),
            ("close", "not a hop"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["close", "host"]);
        let mut h = headers(&[
            ("connection", "Close, X-Hop"),
            ("x-hop", "1"),
            ("close", "2"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn proxy_authorization_and_authenticate_are_hop_by_hop() {
        let mut h = headers(&[
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic realm=x"),
            ("authorization", "Bearer kept"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["authorization"]);
    }

    #[test]
    fn heads_without_hop_by_hop_headers_are_left_alone() {
        let mut h = headers(&[("host", "a"), ("x-one", "1"), ("content-length", "0")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, Some(&header::EXPECT));
        assert_eq!(h, before);
        let mut h = headers(&[("host", "a"), ("expect", "100-continue")]);
        strip_hop_by_hop(&mut h, None);
        assert!(h.contains_key(header::EXPECT), "only removed when asked");
    }

    #[test]
    fn duration_has_six_decimals() {
        let v = duration_header(Instant::now() - Duration::from_millis(1500));
        let s = v.to_str().expect("ascii");
        let (int, frac) = s.split_once('.').expect("dot");
        assert_eq!((int, frac.len()), ("1", 6), "{s}");
    }

    #[test]
    fn forwarded_for_is_added_or_appended() {
        let mut h = HeaderMap::new();
        forwarded_for(&mut h, IpAddr::from([10, 1, 2, 3]));
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        forwarded_for(&mut h, "::1".parse().expect("ip"));
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "9.10.99.100",
            "255.255.255.255",
            "10.0.200.5",
        ] {
            let mut h = HeaderMap::new();
            forwarded_for(&mut h, ip.parse().expect("ip"));
            assert_eq!(h[&X_FORWARDED_FOR], ip);
        }
    }

    #[test]
    fn x_timeout_only_shortens() {
        let exec = Some(Duration::from_secs(10));
        let t = |v: &str, exec| x_timeout(&headers(&[("x-timeout", v)]), exec);
        assert_eq!(t("2s", exec), Some(Duration::from_secs(2)));
        assert_eq!(t("10s", exec), Some(Duration::from_secs(10)));
        assert_eq!(t("500ms", exec), Some(Duration::from_millis(500)));
        for ignored in ["0s", "0", "-1s", "11s", "1h", "soon", ""] {
            assert_eq!(t(ignored, exec), None, "{ignored}");
        }
        // No limit configured: any positive value is a shortening.
        assert_eq!(t("1h", None), Some(Duration::from_secs(3600)));
        assert_eq!(t("0s", None), None);
        assert_eq!(x_timeout(&HeaderMap::new(), exec), None);
    }

    #[test]
    fn websocket_upgrade_is_detected_in_any_case() {
        assert!(websocket(&headers(&[("upgrade", "WebSocket")])).is_some());
        assert!(websocket(&headers(&[("upgrade", "foo, websocket")])).is_some());
        assert!(websocket(&headers(&[("upgrade", "h2c")])).is_none());
        assert!(websocket(&HeaderMap::new()).is_none());
    }

    fn http(url: &str) -> Proxy {
        let env = [("fprocess", "cat"), ("mode", "http"), ("upstream_url", url)];
        Proxy::new(&Config::from_env_pairs(&env).expect("config"))
    }

    #[tokio::test]
    async fn target_joins_without_doubling_the_slash() {
        let cases = [
            (
                "http://127.0.0.1:5000",
                "/a/b?x=1",
                "http://127.0.0.1:5000/a/b?x=1",
            ),
            ("http://127.0.0.1:5000/", "/a", "http://127.0.0.1:5000/a"),
            (
                "http://127.0.0.1:5000/api/",
                "/a?q",
                "http://127.0.0.1:5000/api/a?q",
            ),
            (
                "http://127.0.0.1:5000/api",
                "/",
                "http://127.0.0.1:5000/api/",
            ),
            ("http://h", "//keep//this", "http://h//keep//this"),
        ];
        for (base, path, want) in cases {
            let h = http(base);
            let got = h.target(&PathAndQuery::from_static(path)).expect("uri");
            assert_eq!(got.authority(), None, "origin form");
            let base: Uri = base.parse().expect("base");
            let scheme = base.scheme_str().expect("scheme");
            let full = format!("{scheme}://{}{got}", base.authority().expect("authority"));
            assert_eq!(full, want, "{base} + {path}");
        }
    }
}
