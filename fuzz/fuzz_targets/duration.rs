//! Durations (`read_timeout`, `exec_timeout`, ...).
//!
//! Invariant: `parse_duration` never panics. Whatever it accepts, `format_duration`
//! prints (as the startup log does) in a form `parse_duration` reads back as exactly the
//! same value; a bare run of digits is that many seconds; nothing negative is accepted.
#![no_main]

use fwatchdog::config::parse_duration;
use fwatchdog::duration::format_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = parse_duration(s) else {
        return;
    };
    assert!(!s.starts_with('-'), "accepted a negative duration {s:?}");
    let shown = format_duration(d);
    assert_eq!(parse_duration(&shown), Ok(d), "{s:?} printed as {shown:?}");
    if s.bytes().all(|b| b.is_ascii_digit()) {
        assert_eq!(d.subsec_nanos(), 0, "{s:?}");
        assert_eq!(s.parse::<u64>().ok(), Some(d.as_secs()), "{s:?}");
    }
});
