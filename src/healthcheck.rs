//! `fwatchdog --run-healthcheck`: a HEALTHCHECK for images without a shell or curl.
//!
//! Normally the lock file says it all: it exists exactly while the watchdog is ready.
//! With `suppress_lock` there is no lock file, so we ask `/_/health` on the configured
//! port instead.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::Raw;
use crate::config::parse_bool;
use crate::exit::Exit;

pub fn run(raw: &Raw) -> Exit {
    let value = |id: &str| raw.get(id).and_then(|v| v.values.last().cloned());
    let suppress = value("suppress_lock")
        .map(|v| parse_bool(&v).unwrap_or(false))
        .unwrap_or(false);
    if !suppress {
        let lock = crate::config::lock_path();
        return if lock.exists() {
            Exit::Clean
        } else {
            eprintln!(
                "unhealthy: lock file {} does not exist (not ready yet, or shutting down)",
                lock.display()
            );
            Exit::Runtime
        };
    }
    let port: u16 = value("port").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match probe(addr) {
        Ok(200) => Exit::Clean,
        Ok(code) => {
            eprintln!("unhealthy: GET http://{addr}/_/health answered {code}");
            Exit::Runtime
        }
        Err(e) => {
            eprintln!("unhealthy: GET http://{addr}/_/health failed: {e}");
            Exit::Runtime
        }
    }
}

fn probe(addr: SocketAddr) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /_/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}
