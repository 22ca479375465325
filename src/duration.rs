//! How durations are written in logs and messages: Go's `time.Duration` form, which the
//! OpenFaaS watchdogs print and their users read (`30s`, `1m30s`, `500ms`).

use std::time::Duration;

/// Formats like Go's `time.Duration.String()`: `30s`, `1m30s`, `500ms`, `1.5s`, `2h0m0s`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    fn frac(v: u128, unit: u128) -> String {
        let int = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return int.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs_ns = ns % 60_000_000_000;
    let mins = ns / 60_000_000_000;
    let s = format!("{}s", frac(secs_ns, 1_000_000_000));
    if mins == 0 {
        s
    } else if mins < 60 {
        format!("{mins}m{s}")
    } else {
        format!("{}h{}m{s}", mins / 60, mins % 60)
    }
}
