//! The static-mode path resolver, end to end through `runner::files::Files`:
//! percent-decoding, `..` handling, symlink resolution and `ServeDir`.
//!
//! Input: the request target (`/path?query`) as raw bytes; anything `http` would not
//! accept as a URI is skipped. The served folder holds symlinks out of it in every shape
//! (absolute, relative, to a folder, to `..`, an `index.html` pointing out, a loop).
//!
//! Invariant: no response ever contains a byte of a file outside `static_path` or of a
//! hidden file inside it (`.env`, `.git/config`: a segment starting with `.`), and every
//! answer is one of 200, 206, 3xx, 304, 404, 405, 416 (never a 500 or a panic).
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use fwatchdog::config::Config;
use fwatchdog::runner::budget::Budget;
use fwatchdog::runner::files::Files;
use fwatchdog::runner::Ctx;
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(common::static_config)
}

fn files() -> &'static Arc<Files> {
    static FILES: OnceLock<Arc<Files>> = OnceLock::new();
    FILES.get_or_init(|| Arc::new(Files::new(config())))
}

fuzz_target!(|data: &[u8]| {
    let (method, target) = match data.split_first() {
        Some((b, rest)) if b % 4 == 0 => (Method::HEAD, rest),
        Some((_, rest)) => (Method::GET, rest),
        None => return,
    };
    let mut target = target.to_vec();
    if target.first() != Some(&b'/') {
        target.insert(0, b'/');
    }
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let files = files().clone();
    let req = Request::builder()
        .method(method)
        .uri(uri.clone())
        .body(fwatchdog::body::empty())
        .expect("request");
    let (status, body) = common::runtime().block_on(async move {
        let ctx = Ctx {
            budget: Budget::new(config(), Instant::now()),
            call_id: String::new(),
            slot: None,
        };
        let resp = files.call(req, &ctx).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    });
    assert!(
        matches!(status.as_u16(), 200 | 206 | 300..=399 | 404 | 405 | 416),
        "{uri} -> {status}"
    );
    assert!(
        !body
            .windows(common::SECRET.len())
            .any(|w| w == common::SECRET),
        "{uri} served a file from outside static_path, or a hidden one"
    );
});
