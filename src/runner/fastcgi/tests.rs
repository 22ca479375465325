//! The runner against a scripted FastCGI server on a Unix socket: what a well-behaved
//! application sends, and what a hostile one could.

use super::*;
use std::collections::HashMap;
use tokio::net::UnixListener;

/// The id the first request on a connection gets; scripted replies are written with it
/// and renumbered by [`serve`] for later requests.
const REQUEST_ID: u16 = 1;

fn runner(sock: &std::path::Path, extra: &[(&str, &str)]) -> FastCgi {
    let sock = sock.display().to_string();
    let mut env = vec![
        ("mode", "fastcgi"),
        ("exec_timeout", "2s"),
        ("pool_size", "2"),
        ("fastcgi_address", sock.as_str()),
    ];
    env.extend_from_slice(extra);
    let cfg = Config::from_env_pairs(&env).expect("config");
    FastCgi::new(Arc::new(cfg), 8080, None)
}

fn sock_path(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fwatchdog-fcgi-unit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join("s")
}

/// A server that, for each connection, reads records until the empty STDIN and
/// answers with `reply(params)`, keeping the connection for the next request.
fn serve(listener: UnixListener, reply: Reply) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut dec = Decoder::new();
                let mut params = Vec::new();
                let mut id = REQUEST_ID;
                loop {
                    let rec = match dec.next_record() {
                        Ok(Some(r)) => r,
                        Ok(None) => match s.read_buf(dec.buf_mut()).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => continue,
                        },
                        Err(_) => return,
                    };
                    match rec.kind {
                        codec::BEGIN_REQUEST => id = rec.id,
                        codec::PARAMS => params.extend_from_slice(&rec.content),
                        codec::STDIN if rec.content.is_empty() => {
                            let map = decode_pairs(&params);
                            params.clear();
                            if s.write_all(&renumber(reply(&map), id)).await.is_err() {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
}

/// `out` with the id of each record written for [`REQUEST_ID`] set to `id`, as far as it
/// is made of whole version-1 records.
fn renumber(mut out: Vec<u8>, id: u16) -> Vec<u8> {
    let mut at = 0;
    while at + 8 <= out.len() && out[at] == 1 {
        if out[at + 2..at + 4] == REQUEST_ID.to_be_bytes() {
            out[at + 2..at + 4].copy_from_slice(&id.to_be_bytes());
        }
        at += 8
            + usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]))
            + usize::from(out[at + 6]);
    }
    out
}

fn decode_pairs(mut b: &[u8]) -> HashMap<String, String> {
    fn len(b: &mut &[u8]) -> usize {
        if b[0] < 0x80 {
            let n = usize::from(b[0]);
            *b = &b[1..];
            n
        } else {
            let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
            *b = &b[4..];
            n
        }
    }
    let mut out = HashMap::new();
    while !b.is_empty() {
        let (n, v) = (len(&mut b), len(&mut b));
        out.insert(
            String::from_utf8_lossy(&b[..n]).into_owned(),
            String::from_utf8_lossy(&b[n..n + v]).into_owned(),
        );
        b = &b[n + v..];
    }
    out
}

/// A scripted server's answer to one request's params.
type Reply = fn(&HashMap<String, String>) -> Vec<u8>;

fn stdout(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::push_stream(&mut out, codec::STDOUT, REQUEST_ID, data);
    out
}

fn end(status: u32, proto: u8) -> Vec<u8> {
    let mut out = codec::header(codec::END_REQUEST, REQUEST_ID, 8).to_vec();
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&[proto, 0, 0, 0]);
    out
}

fn ctx(r: &FastCgi) -> Ctx {
    Ctx {
        budget: crate::runner::Budget::new(&r.inner.cfg, Instant::now()),
        call_id: String::new(),
        slot: None,
    }
}

async fn get(r: &FastCgi, uri: &str) -> (StatusCode, HeaderMap, Result<Bytes, String>) {
    let req = Request::get(uri).body(body::empty()).expect("req");
    let resp = r.call(req, &ctx(r)).await;
    let (parts, b) = resp.into_parts();
    let body = b
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_cgi_response_in_records_becomes_the_http_response_and_the_connection_is_reused() {
    let path = sock_path("good");
    serve(UnixListener::bind(&path).expect("bind"), |p| {
        let mut out = stdout(b"Status: 418 I'm a teapot\r\nX-Uri: ");
        out.extend(stdout(p.get("REQUEST_URI").map_or("", |s| s).as_bytes()));
        out.extend(stdout(b"\r\nX-Script: "));
        out.extend(stdout(
            p.get("SCRIPT_FILENAME").map_or("-", |s| s).as_bytes(),
        ));
        out.extend(stdout(b"\r\n\r\nbody"));
        out.extend(codec::header(codec::STDERR, REQUEST_ID, 4));
        out.extend(b"oops");
        out.extend(stdout(b" more"));
        out.extend(stdout(b""));
        out.extend(end(0, codec::REQUEST_COMPLETE));
        out
    });
    let r = runner(&path, &[("script_filename", "/srv/index.php")]);
    for i in 0..3 {
        let (status, headers, body) = get(&r, &format!("/a?i={i}")).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(headers["x-uri"], format!("/a?i={i}").as_str());
        assert_eq!(headers["x-script"], "/srv/index.php");
        assert_eq!(body.expect("complete"), "body more");
    }
    assert_eq!(r.inner.conns.open(), 1, "one connection, reused");
}

#[tokio::test]
async fn hostile_records_are_502_never_a_panic() {
    let cases: &[(&str, Reply, StatusCode)] = &[
        (
            "version",
            |_| vec![9, 6, 0, 1, 0, 0, 0, 0],
            StatusCode::BAD_GATEWAY,
        ),
        (
            "other-id",
            |_| {
                let mut o = codec::header(codec::STDOUT, 7, 3).to_vec();
                o.extend(b"abc");
                o
            },
            StatusCode::BAD_GATEWAY,
        ),
        (
            "bad-type",
            |_| codec::header(99, REQUEST_ID, 0).to_vec(),
            StatusCode::BAD_GATEWAY,
        ),
        (
            "short-end",
            |_| {
                let mut o = stdout(b"\r\n\r\n");
                o.truncate(o.len());
                let mut e = codec::header(codec::END_REQUEST, REQUEST_ID, 2).to_vec();
                e.extend([0, 0]);
                o.extend(e);
                o
            },
            StatusCode::OK,
        ),
        (
            "not-cgi",
            |_| stdout(b"hello world\n\n"),
            StatusCode::BAD_GATEWAY,
        ),
        (
            "no-head",
            |_| {
                let mut o = stdout(b"X-A: 1\r\n");
                o.extend(end(0, codec::REQUEST_COMPLETE));
                o
            },
            StatusCode::BAD_GATEWAY,
        ),
        (
            "overloaded",
            |_| end(0, codec::OVERLOADED),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "unknown-role",
            |_| end(0, codec::UNKNOWN_ROLE),
            StatusCode::BAD_GATEWAY,
        ),
        (
            "truncated",
            |_| vec![1, 6, 0, 1, 0xff, 0xff],
            StatusCode::GATEWAY_TIMEOUT,
        ),
    ];
    for (name, reply, want) in cases {
        let path = sock_path(name);
        serve(UnixListener::bind(&path).expect("bind"), *reply);
        let r = runner(&path, &[("exec_timeout", "300ms")]);
        let (status, _, body) = get(&r, "/").await;
        assert_eq!(status, *want, "{name}: {body:?}");
        if *name == "short-end" {
            // The head was out: the response is cut, not ended cleanly.
            assert!(body.is_err(), "{name}: {body:?}");
        }
    }
}

#[tokio::test]
async fn a_worker_that_closes_mid_body_aborts_the_response() {
    let path = sock_path("close");
    let listener = UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(&stdout(b"Content-Type: text/plain\n\npartial"))
                .await;
            drop(s);
        }
    });
    let r = runner(&path, &[]);
    let (status, _, body) = get(&r, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_err(), "{body:?}");
    assert_eq!(r.inner.conns.open(), 0, "a broken connection is not kept");
}

#[tokio::test]
async fn no_server_is_a_502_naming_the_address() {
    let path = sock_path("none");
    let r = runner(&path, &[]);
    let (status, _, body) = get(&r, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body.expect("body")).contains("cannot connect"));
}

#[test]
fn fastcgi_addresses_parse() {
    use crate::config::FastCgiAddress;
    let r = |v: &str| {
        Config::from_env_pairs(&[("mode", "fastcgi"), ("fastcgi_address", v)])
            .map(|c| c.fastcgi.address)
    };
    assert_eq!(
        r("127.0.0.1:9000"),
        Ok(Some(FastCgiAddress::Tcp("127.0.0.1:9000".into())))
    );
    assert_eq!(
        r("/run/php/fpm.sock"),
        Ok(Some(FastCgiAddress::Unix("/run/php/fpm.sock".into())))
    );
    assert_eq!(
        r("unix:/x.sock"),
        Ok(Some(FastCgiAddress::Unix("/x.sock".into())))
    );
    for bad in ["nohost", ":9000", "host:0", "host:99999", "unix:"] {
        assert!(r(bad).is_err(), "{bad}");
    }
}
