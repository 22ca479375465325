//! The connection pool: connections to the FastCGI server kept open between requests,
//! never more than `pool_size` at once, each with its own request ids. A request checks
//! a connection out ([`Connections::checkout`]) and gives it back ([`Lease::keep`]) only
//! when its exchange ended cleanly; anything else drops it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

use super::Interrupt;
use crate::config::FastCgiAddress;

/// The connections to one FastCGI server.
pub(super) struct Connections {
    target: FastCgiAddress,
    /// `pool_size`: the most connections open at once.
    max: usize,
    state: Mutex<State>,
    /// A connection went idle or closed.
    freed: Notify,
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Connections open, idle or in use.
    open: usize,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection to the FastCGI server, and the id of its last request: each exchange on
/// a connection has its own id, so a record left over from an earlier one is told apart
/// (and the connection dropped) instead of being taken for the answer to this one.
pub(super) struct Conn {
    pub(super) io: Io,
    last_id: u16,
}

pub(super) enum Io {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    async fn connect(target: &FastCgiAddress) -> std::io::Result<Conn> {
        let io = match target {
            FastCgiAddress::Unix(p) => Io::Unix(UnixStream::connect(p).await?),
            FastCgiAddress::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                let _ = s.set_nodelay(true);
                Io::Tcp(s)
            }
        };
        Ok(Conn { io, last_id: 0 })
    }

    /// The id for the next exchange: 1, 2, ... 65535, 1, ... (0 is for management
    /// records).
    pub(super) fn next_id(&mut self) -> u16 {
        self.last_id = self.last_id.checked_add(1).unwrap_or(1);
        self.last_id
    }

    /// Whether an idle connection still looks usable: nothing to read, not closed.
    fn usable(&self) -> bool {
        let mut b = [0u8; 1];
        let r = match &self.io {
            Io::Unix(s) => s.try_read(&mut b),
            Io::Tcp(s) => s.try_read(&mut b),
        };
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// A place in the pool, with its connection once connected. Dropped, the connection is
/// closed and the place freed (also when dropped half-way through connecting);
/// [`Lease::keep`] puts the connection back for the next request instead.
pub(super) struct Lease {
    pub(super) conn: Option<Conn>,
    pool: Arc<Connections>,
    pub(super) reused: bool,
    /// Back in the pool: dropping frees nothing.
    kept: bool,
}

impl Lease {
    pub(super) fn keep(mut self) {
        if let Some(c) = self.conn.take() {
            // Counted as open while idle: the place stays taken.
            lock(&self.pool.state).idle.push(c);
            self.kept = true;
            self.pool.freed.notify_one();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.kept {
            drop(self.conn.take());
            lock(&self.pool.state).open -= 1;
            self.pool.freed.notify_one();
        }
    }
}

impl Connections {
    /// At most `max` connections to `target`.
    pub(super) fn new(target: FastCgiAddress, max: usize) -> Connections {
        Connections {
            target,
            max,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        }
    }

    /// Closes the idle connections (those in use are closed when their request ends).
    pub(super) fn close_idle(&self) {
        let idle = std::mem::take(&mut lock(&self.state).idle);
        drop(idle);
    }

    /// Connections open, idle or in use.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        lock(&self.state).open
    }

    /// An idle connection, or a new one while fewer than `pool_size` are open; else
    /// waits for one to be freed, until `deadline`.
    pub(super) async fn checkout(self: &Arc<Self>, deadline: Instant) -> Result<Lease, Interrupt> {
        let max = self.max;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let fresh = {
                let mut pool = lock(&self.state);
                let mut found = None;
                while let Some(c) = pool.idle.pop() {
                    if c.usable() {
                        found = Some(c);
                        break;
                    }
                    pool.open -= 1;
                }
                match found {
                    Some(c) => {
                        return Ok(Lease {
                            conn: Some(c),
                            pool: self.clone(),
                            reused: true,
                            kept: false,
                        })
                    }
                    None if pool.open < max => {
                        pool.open += 1;
                        true
                    }
                    None => false,
                }
            };
            if fresh {
                // Dropped on any failure (or if this future is dropped), it frees the place.
                let mut lease = Lease {
                    conn: None,
                    pool: self.clone(),
                    reused: false,
                    kept: false,
                };
                let connect = tokio::time::timeout_at(deadline.into(), Conn::connect(&self.target));
                return match connect.await {
                    Ok(Ok(c)) => {
                        lease.conn = Some(c);
                        Ok(lease)
                    }
                    Ok(Err(e)) => Err(Interrupt::Worker(format!(
                        "cannot connect to the FastCGI server at {}: {e}",
                        self.target
                    ))),
                    Err(_) => Err(Interrupt::TimedOut),
                };
            }
            if tokio::time::timeout_at(deadline.into(), freed)
                .await
                .is_err()
            {
                return Err(Interrupt::TimedOut);
            }
        }
    }
}
