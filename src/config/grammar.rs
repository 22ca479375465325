//! The grammar of setting values: pure functions from the text the user typed to a
//! value or a reason it is refused. No I/O beyond `threads=auto` asking for the CPU
//! count, and no knowledge of which setting is being read (the caller names it).

use std::path::PathBuf;
use std::time::Duration;

use super::FastCgiAddress;

pub(super) fn parse_jwt_url(v: &str) -> Result<String, String> {
    let uri: http::Uri = v.parse().map_err(|_| "not a URL".to_owned())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(v.to_owned()),
        (Some("https"), _) => Err(
            "https is not supported: fwatchdog fetches the issuer's keys over plain http inside the cluster".into(),
        ),
        _ => Err("expected an http:// URL, e.g. http://gateway.openfaas:8080/.well-known/openid-configuration".into()),
    }
}

/// `host:port`, `/path.sock` or `unix:/path.sock`.
pub(super) fn parse_fastcgi_address(v: &str) -> Result<FastCgiAddress, String> {
    if let Some(path) = v.strip_prefix("unix:").or(v.starts_with('/').then_some(v)) {
        if path.is_empty() || path.len() > 107 {
            return Err("a Unix socket path must have 1 to 107 bytes".into());
        }
        return Ok(FastCgiAddress::Unix(PathBuf::from(path)));
    }
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(FastCgiAddress::Tcp(v.to_owned()))
        }
        _ => Err("expected host:port (e.g. 127.0.0.1:9000) or a Unix socket path".into()),
    }
}

/// A count from 0 to `max`.
pub(super) fn parse_count(v: &str, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected an integer from 0 to {max}")),
    }
}

/// Most worker threads accepted.
pub(super) const MAX_THREADS: usize = 256;

/// `threads`: a count, or `auto` for what the process may use: the cgroup CPU quota
/// (`cpu.max`) rounded down, else the CPUs it may run on (the standard library reads
/// both).
pub(super) fn parse_threads(v: &str) -> Result<usize, String> {
    if v.eq_ignore_ascii_case("auto") {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        return Ok(n.clamp(1, MAX_THREADS));
    }
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to {MAX_THREADS}, or auto"
        )),
    }
}

pub(super) fn parse_upstream(v: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = v.parse().map_err(|_| "not a URL".to_owned())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        _ => Err("expected an http:// URL with a host, e.g. http://127.0.0.1:5000".into()),
    }
}

/// Booleans as the OpenFaaS watchdogs take them, minus their silent "false" for typos.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true/false, 1/0, yes/no or on/off".into()),
    }
}

/// A duration that must not be zero (`queue_timeout`).
pub(super) fn parse_positive(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be greater than 0 (max_queue=0 turns the queue off)".into()),
        d => Ok(d),
    }
}

/// A byte count: a plain integer, optionally with a binary suffix (`64Mi`, `1Gi`, `512Ki`).
pub(super) fn parse_size(v: &str) -> Result<u64, String> {
    let (digits, mult) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(suf, m)| v.strip_suffix(suf).map(|d| (d, *m)))
        .unwrap_or((v, 1));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| "expected a number of bytes (optionally with Ki, Mi or Gi)".into())
}

/// The longest duration Go's grammar can say (`2562047h47m16.854775807s`, about 292
/// years). Also what keeps `Instant::now() + d` from overflowing, which panics.
const MAX_DURATION_NS: u128 = i64::MAX as u128;

/// Durations: a bare non-negative integer is seconds; otherwise Go's grammar
/// (`1m30s`, `1.5h`, `500ms`; units ns, us, µs, ms, s, m, h). Negative values are refused,
/// and so is anything longer than Go's longest duration.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    const BAD: &str = "expected a duration such as 10s, 500ms or 1m30s (a bare number is seconds)";
    if v.is_empty() {
        return Err(BAD.into());
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return match v.parse::<u64>() {
            Ok(n) if u128::from(n) * 1_000_000_000 <= MAX_DURATION_NS => Ok(Duration::from_secs(n)),
            Ok(_) => Err("duration out of range".into()),
            Err(_) => Err(BAD.into()),
        };
    }
    if v.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    let s = v.strip_prefix('+').unwrap_or(v);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u128 = 0; // nanoseconds
    if rest.is_empty() {
        return Err(BAD.into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(BAD)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(BAD.into());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(BAD.into()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| BAD)?
        };
        let mut frac_ns: u128 = 0;
        let mut div: u128 = 1;
        for d in frac.bytes().take(18) {
            frac_ns = frac_ns * 10 + u128::from(d - b'0');
            div *= 10;
        }
        total = int
            .checked_mul(scale)
            .and_then(|t| t.checked_add(frac_ns * scale / div))
            .and_then(|t| total.checked_add(t))
            .filter(|t| *t <= MAX_DURATION_NS)
            .ok_or("duration out of range")?;
        rest = tail;
    }
    Ok(Duration::from_nanos(total as u64))
}
