//! The whole request path: arbitrary bytes from a client, through hyper's HTTP/1.1
//! parser (`server::serve_io`, the settings of a real connection) and the request chain
//! (health, API key, concurrency limit, runner), over an in-memory stream.
//!
//! Input: one byte picks a configuration (static mode on a folder with symlink traps;
//! streaming `cat` behind an API key with `max_inflight=2`; serializing `cat`), the rest
//! is what the client sends. The client then waits for a pause in the answer, closes its
//! side and reads to the end.
//!
//! Invariant: nothing panics (libFuzzer's hook aborts even on a panic the server would
//! contain); after the client closes, the connection ends within 10 s; the server writes
//! only well-formed HTTP/1.x responses (the last may be cut short, an aborted stream);
//! no response ever carries a byte of a file outside `static_path`.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fwatchdog::service::Shared;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn configs() -> &'static [Arc<Shared>; 3] {
    static SHARED: OnceLock<[Arc<Shared>; 3]> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = common::fixture();
        let common = |mode: &str| {
            vec![
                ("mode", mode.to_owned()),
                ("fprocess", "cat".to_owned()),
                ("suppress_lock", "true".to_owned()),
                ("read_timeout", "2s".to_owned()),
                ("write_timeout", "3s".to_owned()),
                ("exec_timeout", "2s".to_owned()),
                ("max_body_bytes", "65536".to_owned()),
            ]
        };
        let mut protected = common("streaming");
        protected.extend([
            ("api_key_secret", "api-key".to_owned()),
            ("secrets_dir", dir.display().to_string()),
            ("max_inflight", "2".to_owned()),
        ]);
        common::runtime().block_on(async {
            [
                common::shared(common::static_config()),
                common::shared(common::config(&protected)),
                common::shared(common::config(&common("serializing"))),
            ]
        })
    })
}

/// Checks that `out` is a sequence of HTTP/1.x responses; only the last may be cut.
fn check_responses(out: &[u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return,
            Err(e) => panic!(
                "not an HTTP response ({e}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let code = resp.code.expect("status");
        assert!((100..600).contains(&code), "status {code}");
        // HTTP/1.0 requests are answered in HTTP/1.0.
        assert!(matches!(resp.version, Some(0 | 1)), "not HTTP/1.x");
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        rest = &rest[head_len..];
        if (100..200).contains(&code) || code == 204 || code == 304 {
            continue;
        }
        if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return; // cut inside a chunk size line
                };
                let size = std::str::from_utf8(&rest[..eol]).expect("chunk size is text");
                let size = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
                rest = &rest[eol + 2..];
                if size == 0 {
                    // Trailers, then an empty line.
                    match rest.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => rest = &rest[2..],
                        Some(_) => match rest.windows(4).position(|w| w == b"\r\n\r\n") {
                            Some(end) => rest = &rest[end + 4..],
                            None => return,
                        },
                        None => return,
                    }
                    break;
                }
                if rest.len() < size + 2 {
                    return; // cut inside a chunk: an aborted stream
                }
                assert_eq!(&rest[size..size + 2], b"\r\n", "chunk not terminated");
                rest = &rest[size + 2..];
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            if rest.len() < len {
                return;
            }
            rest = &rest[len..];
        } else {
            return; // delimited by close
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let shared = configs()[usize::from(pick % 3)].clone();
    let input = input.to_vec();
    let out = common::runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let peer = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)));
        let conn = tokio::spawn(fwatchdog::server::serve_io(server, shared, peer));
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async {
            let _ = wr.write_all(&input).await;
            wr
        };
        // Read while writing, so a server that answers early never blocks us.
        tokio::pin!(write);
        let mut wr = loop {
            tokio::select! {
                w = &mut write => break w,
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break write.await,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                },
            }
        };
        // Give complete requests their answers before the client goes away.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(10), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = wr.shutdown().await;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "connection still open 10 s after the client closed"
        );
        drop((rd, wr));
        drop(client);
        let done = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(
            done.is_ok(),
            "connection task still running 10 s after the client left"
        );
        out
    });
    check_responses(&out);
    assert!(
        !out.windows(common::SECRET.len())
            .any(|w| w == common::SECRET),
        "served a file from outside static_path"
    );
});
