//! Booleans (`cgi_headers`, `suppress_lock`, ...).
//!
//! Invariant: `parse_bool` accepts exactly true/false, 1/0, yes/no, on/off in any case
//! and nothing else (the peers read typos as false). Through the whole configuration, a
//! value is either taken with that meaning or refused with a message that names the
//! variable and quotes the value; it never panics.
#![no_main]

use std::collections::HashMap;

use fwatchdog::cli::{parse, Action};
use fwatchdog::config::{parse_bool, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let want = match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    };
    assert_eq!(parse_bool(s).ok(), want, "{s:?}");

    let env: HashMap<&str, &str> = [("fprocess", "cat"), ("cgi_headers", s)].into();
    let Ok(Action::Run(raw)) = parse(["fwatchdog".to_owned()], |k| {
        env.get(k).map(|v| v.to_string())
    }) else {
        panic!("env parsing never fails");
    };
    match Config::from_raw(&raw) {
        Ok(cfg) => {
            // Config trims; an empty (or blank-free empty) value is unset: the default.
            let want = if s.is_empty() {
                Some(true)
            } else {
                parse_bool(s.trim()).ok()
            };
            assert_eq!(Some(cfg.fork_io.cgi_headers), want, "{s:?}");
        }
        Err(e) => {
            assert!(e.0.contains("cgi_headers"), "{e}");
            assert!(e.0.contains(&format!("{s:?}")), "{e}");
            assert!(parse_bool(s.trim()).is_err(), "{s:?} refused: {e}");
        }
    }
});
