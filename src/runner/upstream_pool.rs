//! http mode's keep-alive connections to the upstream: HTTP/1.1 connections of hyper's
//! own (`client::conn::http1`), kept in one list.
//!
//! This replaces hyper-util's general client, whose pool keys every connection by
//! scheme and authority (hashed with SipHash three times per request), boxes its
//! futures and moves them about, and spawns a task per request to learn when a
//! connection may go back: about a tenth of a proxied request's instructions went
//! there. Here there is one upstream, so the pool is a list. A connection goes back into
//! it as soon as its response head came; hyper reports it ready again only once that
//! response has been read to its end (HTTP/1.1 without pipelining), so a checkout takes
//! the newest idle connection that is ready, and leaves those still streaming.
//!
//! A connection idle for [`POOL_IDLE`] is closed (at the next checkout, or by a sweep
//! that runs while the list is not empty), because upstream servers close idle
//! keep-alive connections early and a request sent on a connection the upstream is
//! closing would fail. If it fails all the same before anything of it was sent, it is
//! sent once more on a new connection.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::Body;

/// Idle pooled connections are closed after this. Short, because upstream servers close
/// idle keep-alive connections early (gunicorn after 2 s, node after 5 s) and a request
/// sent on a connection the upstream is closing fails; under load no connection idles
/// this long, so the pool still does its job.
pub const POOL_IDLE: Duration = Duration::from_secs(1);

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the upstream could be made.
    Connect(std::io::Error),
    /// The exchange failed: the upstream closed the connection, or the request body
    /// failed (`is_user`).
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(e),
            SendError::Http(e) => Some(e),
        }
    }
}

/// The upstream's connections.
pub struct Pool {
    authority: Authority,
    shared: Arc<Mutex<Idle>>,
}

#[derive(Default)]
struct Idle {
    /// Newest last.
    conns: Vec<(SendRequest<Body>, Instant)>,
    /// A sweep task is running.
    sweeping: bool,
}

impl Pool {
    pub fn new(authority: Authority) -> Pool {
        Pool {
            authority,
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        lock(&self.shared)
    }

    /// Sends `req` on a pooled connection, or on a new one, and returns the response
    /// head. The connection is pooled again at once; see the module's notes.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let (mut conn, pooled) = match self.checkout() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let sent = match conn.try_send_request(req).await {
            Err(mut e) if pooled => match e.take_message() {
                // Not sent: the pooled connection was closing. Once more on a new one.
                Some(req) => {
                    conn = self.connect().await?;
                    conn.send_request(req).await
                }
                None => return Err(SendError::Http(e.into_error())),
            },
            Err(e) => return Err(SendError::Http(e.into_error())),
            Ok(resp) => Ok(resp),
        };
        let resp = sent.map_err(SendError::Http)?;
        self.checkin(conn);
        Ok(resp)
    }

    /// The newest idle connection that is ready; closes the expired and the closed.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let now = Instant::now();
        let mut i = idle.conns.len();
        while i > 0 {
            i -= 1;
            let (conn, since) = &idle.conns[i];
            if conn.is_closed() || now.duration_since(*since) >= POOL_IDLE {
                idle.conns.swap_remove(i);
            } else if conn.is_ready() {
                return Some(idle.conns.swap_remove(i).0);
            }
        }
        None
    }

    fn checkin(&self, conn: SendRequest<Body>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.lock();
        idle.conns.push((conn, Instant::now()));
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(&self.shared)));
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let port = self.authority.port_u16().unwrap_or(80);
        // An IPv6 address comes in brackets, as in URLs.
        let host = self.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            // Its end (the upstream closed it, or every sender is gone) is no one's error.
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Closes every idle connection (after the drain, before the upstream is stopped).
    pub fn close_idle(&self) {
        self.lock().conns.clear();
    }
}

fn lock(m: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the connections that have been idle for [`POOL_IDLE`], every [`POOL_IDLE`],
/// until none is left (or the pool is gone).
async fn sweep(pool: std::sync::Weak<Mutex<Idle>>) {
    loop {
        tokio::time::sleep(POOL_IDLE).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = lock(&pool);
        let now = Instant::now();
        idle.conns
            .retain(|(c, since)| !c.is_closed() && now.duration_since(*since) < POOL_IDLE);
        if idle.conns.is_empty() {
            idle.sweeping = false;
            return;
        }
    }
}
