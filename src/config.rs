//! The validated configuration: the only place that says "invalid".
//!
//! [`Config::from_raw`] turns what the user typed ([`crate::cli::Raw`]) into typed
//! settings, reads the API-key secrets, and fails with an error that names the setting
//! the way the user spelled it (`port` or `--port`) and the bad value. The peers silently
//! fall back to defaults on bad input; we refuse to start instead (exit 2).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::ApiKeys;
use crate::cli::{Raw, RawValue};

/// Fork-per-request and long-running modes (§1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Streaming,
    Serializing,
    Classic,
    Http,
    Static,
    /// A pool of warm FastCGI workers (issue 11).
    FastCgi,
}

impl Mode {
    const ALL: &'static [(&'static str, Mode)] = &[
        ("streaming", Mode::Streaming),
        ("serializing", Mode::Serializing),
        ("classic", Mode::Classic),
        ("http", Mode::Http),
        ("static", Mode::Static),
        ("fastcgi", Mode::FastCgi),
    ];

    pub fn name(self) -> &'static str {
        Mode::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Modes that start one handler process per request.
    pub fn is_fork(self) -> bool {
        matches!(self, Mode::Streaming | Mode::Serializing | Mode::Classic)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error. Its message names the setting and the value; it never holds a
/// secret's content.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Everything the server needs, already checked.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    /// argv of the handler (fork modes) or of the upstream (http mode).
    pub fprocess: Vec<String>,
    pub upstream_url: Option<http::Uri>,
    pub port: u16,
    pub bind: IpAddr,
    /// `None` when metrics are off.
    pub metrics_port: Option<u16>,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// `None` = no limit.
    pub exec_timeout: Option<Duration>,
    /// On timeout, SIGTERM then SIGKILL this much later; zero = SIGKILL at once.
    pub exec_kill_grace: Duration,
    pub healthcheck_interval: Duration,
    /// `None` = classic's echo of the request's Content-Type.
    pub content_type: Option<String>,
    pub static_path: PathBuf,
    pub suppress_lock: bool,
    pub lock_path: PathBuf,
    pub http_buffer_req_body: bool,
    /// 0 = no limit.
    pub max_inflight: usize,
    /// Requests that may wait for a slot when `max_inflight` is reached; 0 = no queue.
    pub max_queue: usize,
    /// The longest such wait.
    pub queue_timeout: Duration,
    /// Runtime worker threads; 1 = everything on the main thread.
    pub threads: usize,
    pub prefix_logs: bool,
    /// `None` = no limit.
    pub log_buffer_size: Option<usize>,
    pub log_callid: bool,
    pub log_format: LogFormat,
    pub ready_path: Option<String>,
    pub cgi_headers: bool,
    /// CGI/1.1 meta-variables in, a CGI response out (fork modes).
    pub cgi: bool,
    pub marshal_request: bool,
    pub combine_output: bool,
    pub write_debug: bool,
    pub max_body_bytes: Option<u64>,
    pub api_keys: Option<ApiKeys>,
    pub secret_reload_interval: Option<Duration>,
    /// fastcgi mode: the workers and how to reach them.
    pub fastcgi: FastCgiConfig,
}

/// Where an external FastCGI server listens (`fastcgi_address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastCgiAddress {
    /// `host:port`.
    Tcp(String),
    /// `/path/to.sock` (or `unix:/path/to.sock`).
    Unix(PathBuf),
}

/// The fastcgi-mode settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCgiConfig {
    /// `None`: spawn `pool_size` workers from `fprocess` on a private socket.
    pub address: Option<FastCgiAddress>,
    /// Workers spawned, and the most connections open to the server at once.
    pub pool_size: usize,
    /// Given to workers as `PHP_FCGI_MAX_REQUESTS`; 0 = never recycle.
    pub max_requests: u64,
    /// The `SCRIPT_FILENAME` param, when set.
    pub script_filename: Option<String>,
}

const DEFAULT_SERIALIZING_BODY_LIMIT: u64 = 64 * 1024 * 1024;
pub const DEFAULT_SECRETS_DIRS: &[&str] = &["/var/openfaas/secrets", "/run/secrets"];

impl Config {
    /// Validates every setting and loads the API-key secrets.
    pub fn from_raw(raw: &Raw) -> Result<Config, ConfigError> {
        let s = Settings(raw);
        let mode = match s.get("mode") {
            None => Mode::Streaming,
            Some((v, src)) => Mode::ALL
                .iter()
                .find(|(n, _)| *n == v.trim())
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    let names: Vec<&str> = Mode::ALL.iter().map(|(n, _)| *n).collect();
                    ConfigError(format!(
                        "invalid {src}={v:?}: unknown mode, valid modes are {}",
                        names.join(", ")
                    ))
                })?,
        };
        let classic = mode == Mode::Classic;

        let fprocess = match s.get("fprocess") {
            Some((v, src)) => {
                let words = shell_words::split(v)
                    .map_err(|e| ConfigError(format!("invalid {src}={v:?}: {e}")))?;
                if words.is_empty() {
                    return Err(ConfigError(format!("invalid {src}={v:?}: no command")));
                }
                words
            }
            None if mode == Mode::Static => Vec::new(),
            // An external FastCGI server needs no command of ours.
            None if mode == Mode::FastCgi && s.get("fastcgi_address").is_some() => Vec::new(),
            None => {
                return Err(ConfigError(format!(
                    "fprocess is required in {} mode (env fprocess or --fprocess)",
                    mode.name()
                )))
            }
        };

        let upstream_url =
            match s.get("upstream_url") {
                Some((v, src)) => Some(parse_upstream(v).map_err(|e| invalid(src, v, &e))?),
                None if mode == Mode::Http => return Err(ConfigError(
                    "upstream_url is required in http mode (env upstream_url or --upstream-url)"
                        .into(),
                )),
                None => None,
            };

        let port = s.parse("port", 8080, |v| {
            v.parse::<u16>()
                .map_err(|_| "expected a port number 0-65535".into())
        })?;
        let bind = s.parse("bind", IpAddr::from([0, 0, 0, 0]), |v| {
            v.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .map_err(|_| "expected an IP address such as 0.0.0.0 or ::".into())
        })?;
        let metrics_port = s.parse("metrics_port", Some(8081), |v| {
            if v.eq_ignore_ascii_case("off") {
                Ok(None)
            } else {
                v.parse::<u16>()
                    .map(Some)
                    .map_err(|_| "expected a port number 0-65535 or off".into())
            }
        })?;

        let read_timeout = s.parse("read_timeout", Duration::from_secs(30), parse_duration)?;
        let write_timeout = s.parse("write_timeout", Duration::from_secs(30), parse_duration)?;
        if write_timeout.is_zero() {
            let (v, src) = s
                .get("write_timeout")
                .unwrap_or(("0", crate::cli::Source::Env("write_timeout")));
            return Err(invalid(src, v, "must be greater than 0"));
        }
        let exec_default = if classic {
            Duration::ZERO
        } else {
            Duration::from_secs(30)
        };
        let exec_timeout =
            Some(s.parse("exec_timeout", exec_default, parse_duration)?).filter(|d| !d.is_zero());
        let healthcheck_interval =
            s.parse("healthcheck_interval", write_timeout, parse_duration)?;
        let exec_kill_grace = s.parse("exec_kill_grace", Duration::ZERO, parse_duration)?;

        let content_type = s.get("content_type").map(|(v, _)| v.to_owned());
        let content_type = match (content_type, classic) {
            (Some(ct), _) => {
                http::HeaderValue::from_str(&ct).map_err(|_| {
                    let (v, src) = s.get("content_type").expect("content_type was set");
                    invalid(src, v, "not a valid header value")
                })?;
                Some(ct)
            }
            (None, true) => None,
            (None, false) => Some("application/octet-stream".to_owned()),
        };

        let static_path = PathBuf::from(
            s.get("static_path")
                .map(|(v, _)| v)
                .unwrap_or("/home/app/public"),
        );
        let suppress_lock = s.parse("suppress_lock", false, parse_bool)?;
        let http_buffer_req_body = s.parse("http_buffer_req_body", false, parse_bool)?;
        let max_inflight = s.parse("max_inflight", 0usize, |v| {
            v.parse::<usize>()
                .map_err(|_| "expected a non-negative integer".into())
        })?;
        let max_queue = s.parse("max_queue", 0usize, |v| {
            v.parse::<usize>()
                .map_err(|_| "expected a non-negative integer".into())
        })?;
        if max_queue > 0 && max_inflight == 0 {
            let (v, src) = s
                .get("max_queue")
                .unwrap_or(("?", crate::cli::Source::Env("max_queue")));
            return Err(invalid(
                src,
                v,
                "a queue needs a limit: set max_inflight too",
            ));
        }
        let queue_timeout = s.parse("queue_timeout", Duration::from_secs(10), parse_positive)?;
        let threads = s.parse("threads", 1usize, parse_threads)?;
        let prefix_logs = s.parse("prefix_logs", true, parse_bool)?;
        let log_buffer_size = s.parse("log_buffer_size", Some(65536usize), |v| {
            if v == "-1" {
                return Ok(None);
            }
            match v.parse::<usize>() {
                Ok(0) | Err(_) => {
                    Err("expected a positive number of bytes, or -1 for no limit".into())
                }
                Ok(n) => Ok(Some(n)),
            }
        })?;
        let log_callid = s.parse("log_callid", false, parse_bool)?;
        let log_format = s.parse("log_format", LogFormat::Text, |v| {
            match v.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            }
        })?;
        let ready_path = match s.get("ready_path") {
            Some((v, src)) if !v.starts_with('/') => {
                return Err(invalid(src, v, "must start with /"))
            }
            other => other.map(|(v, _)| v.to_owned()),
        };
        let cgi_headers = s.parse("cgi_headers", true, parse_bool)?;
        let cgi = s.parse("cgi", false, parse_bool)?;
        let fastcgi = fastcgi_settings(&s, mode)?;
        if cgi && !mode.is_fork() {
            let (v, src) = s
                .get("cgi")
                .unwrap_or(("true", crate::cli::Source::Env("cgi")));
            let why = format!(
                "CGI is for the fork modes (streaming, serializing, classic), not {}",
                mode.name()
            );
            return Err(invalid(src, v, &why));
        }
        let marshal_request = s.parse("marshal_request", false, parse_bool)?;
        // stderr in the body would corrupt a CGI header block.
        let combine_output = s.parse("combine_output", classic && !cgi, parse_bool)?;
        let write_debug = s.parse("write_debug", false, parse_bool)?;
        let body_default = matches!(mode, Mode::Serializing | Mode::Classic)
            .then_some(DEFAULT_SERIALIZING_BODY_LIMIT);
        let max_body_bytes =
            s.parse("max_body_bytes", body_default, |v| parse_size(v).map(Some))?;

        let secret_reload_interval = Some(s.parse(
            "secret_reload_interval",
            Duration::from_secs(2),
            parse_duration,
        )?)
        .filter(|d| !d.is_zero());
        let api_key_header = s.parse(
            "api_key_header",
            http::HeaderName::from_static("x-api-key"),
            |v| {
                http::HeaderName::from_bytes(v.as_bytes())
                    .map_err(|_| "not a valid header name".into())
            },
        )?;
        let api_key_forward = s.parse("api_key_forward", false, parse_bool)?;
        let secrets_dirs: Vec<PathBuf> = match s.get("secrets_dir") {
            Some((v, _)) => vec![PathBuf::from(v)],
            None => DEFAULT_SECRETS_DIRS.iter().map(PathBuf::from).collect(),
        };
        let api_keys = match raw.get("api_key_secret") {
            Some(RawValue { values, source }) if !values.is_empty() => {
                for name in values {
                    if name.contains('/') || name == ".." || name == "." {
                        return Err(invalid(
                            source.clone(),
                            name,
                            "a secret name is a file name, not a path",
                        ));
                    }
                }
                Some(ApiKeys::load(
                    values,
                    &secrets_dirs,
                    api_key_header,
                    api_key_forward,
                )?)
            }
            _ => None,
        };

        Ok(Config {
            mode,
            fprocess,
            upstream_url,
            port,
            bind,
            metrics_port,
            read_timeout,
            write_timeout,
            exec_timeout,
            exec_kill_grace,
            healthcheck_interval,
            content_type,
            static_path,
            suppress_lock,
            lock_path: std::env::temp_dir().join(".lock"),
            http_buffer_req_body,
            max_inflight,
            max_queue,
            queue_timeout,
            threads,
            prefix_logs,
            log_buffer_size,
            log_callid,
            log_format,
            ready_path,
            cgi_headers,
            cgi,
            marshal_request,
            combine_output,
            write_debug,
            max_body_bytes,
            api_keys,
            secret_reload_interval,
            fastcgi,
        })
    }

    /// Settings for the startup log line; secrets appear by name only.
    pub fn summary(&self) -> String {
        let d = |d: Option<Duration>| {
            d.map(format_duration)
                .unwrap_or_else(|| "0 (no limit)".into())
        };
        let mut out = format!(
            "mode={} fprocess={:?} read_timeout={} write_timeout={} exec_timeout={} healthcheck_interval={} max_inflight={} lock_file={}",
            self.mode.name(),
            shell_words::join(&self.fprocess),
            format_duration(self.read_timeout),
            format_duration(self.write_timeout),
            d(self.exec_timeout),
            format_duration(self.healthcheck_interval),
            self.max_inflight,
            if self.suppress_lock { "off".to_owned() } else { self.lock_path.display().to_string() },
        );
        let limit = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            " port={} bind={} metrics_port={} content_type={} max_body_bytes={} log_format={} prefix_logs={} log_callid={} log_buffer_size={} write_debug={}",
            self.port,
            self.bind,
            self.metrics_port.map_or_else(|| "off".to_owned(), |p| p.to_string()),
            self.content_type.as_deref().unwrap_or("(request's)"),
            limit(self.max_body_bytes),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            self.prefix_logs,
            self.log_callid,
            limit(self.log_buffer_size.map(|n| n as u64)),
            self.write_debug,
        ));
        if self.mode.is_fork() {
            out.push_str(&format!(
                " cgi_headers={} combine_output={} marshal_request={}",
                self.cgi_headers, self.combine_output, self.marshal_request
            ));
        }
        if self.mode == Mode::Static {
            out.push_str(&format!(" static_path={}", self.static_path.display()));
        }
        if let Some(url) = &self.upstream_url {
            out.push_str(&format!(" upstream_url={url}"));
        }
        if self.max_queue > 0 {
            out.push_str(&format!(
                " max_queue={} queue_timeout={}",
                self.max_queue,
                format_duration(self.queue_timeout)
            ));
        }
        if self.threads > 1 {
            out.push_str(&format!(" threads={}", self.threads));
        }
        if !self.exec_kill_grace.is_zero() {
            out.push_str(&format!(
                " exec_kill_grace={}",
                format_duration(self.exec_kill_grace)
            ));
        }
        if self.mode == Mode::FastCgi {
            let f = &self.fastcgi;
            match &f.address {
                Some(FastCgiAddress::Tcp(a)) => out.push_str(&format!(" fastcgi_address={a}")),
                Some(FastCgiAddress::Unix(p)) => {
                    out.push_str(&format!(" fastcgi_address={}", p.display()))
                }
                None => out.push_str(" fastcgi_address=(spawned)"),
            }
            out.push_str(&format!(
                " pool_size={} pool_max_requests={}",
                f.pool_size, f.max_requests
            ));
            if let Some(sf) = &f.script_filename {
                out.push_str(&format!(" script_filename={sf}"));
            }
        }
        if self.cgi {
            out.push_str(" cgi=true");
        }
        if let Some(keys) = &self.api_keys {
            out.push_str(&format!(
                " api_key_secret={} api_key_header={}",
                keys.names().join(","),
                crate::runner::env::canonical_header(keys.header().as_str())
            ));
        }
        out
    }
}

/// Typed access to the raw settings, producing errors that name the source.
struct Settings<'a>(&'a Raw);

impl<'a> Settings<'a> {
    fn get(&self, id: &str) -> Option<(&'a str, crate::cli::Source)> {
        self.0
            .get(id)
            .and_then(|v| v.values.last().map(|s| (s.as_str(), v.source.clone())))
    }

    fn parse<T>(
        &self,
        id: &str,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(id) {
            None => Ok(default),
            Some((v, src)) => f(v.trim()).map_err(|e| invalid(src, v, &e)),
        }
    }
}

/// `fastcgi_address`, `pool_size`, `pool_max_requests`, `script_filename` (issue 11).
fn fastcgi_settings(s: &Settings<'_>, mode: Mode) -> Result<FastCgiConfig, ConfigError> {
    let address = match s.get("fastcgi_address") {
        None => None,
        Some((v, src)) => Some(parse_fastcgi_address(v.trim()).map_err(|e| invalid(src, v, &e))?),
    };
    // The CPU count reads cgroup files: only fastcgi mode needs it.
    let cpus = if mode == Mode::FastCgi {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    };
    let pool_size = s.parse("pool_size", cpus, |v| match v.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("expected a number of workers from 1 to 1024".into()),
    })?;
    let max_requests = s.parse("pool_max_requests", 0u64, |v| {
        v.parse::<u64>()
            .map_err(|_| "expected a non-negative integer (0 = never recycle)".into())
    })?;
    let script_filename = s.get("script_filename").map(|(v, _)| v.to_owned());
    Ok(FastCgiConfig {
        address,
        pool_size,
        max_requests,
        script_filename,
    })
}

/// `host:port`, `/path.sock` or `unix:/path.sock`.
fn parse_fastcgi_address(v: &str) -> Result<FastCgiAddress, String> {
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

/// Most worker threads accepted.
const MAX_THREADS: usize = 256;

/// `threads`: a count, or `auto` for what the process may use: the cgroup CPU quota
/// (`cpu.max`) rounded down, else the CPUs it may run on (the standard library reads
/// both).
fn parse_threads(v: &str) -> Result<usize, String> {
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

fn invalid(src: crate::cli::Source, value: &str, why: &str) -> ConfigError {
    ConfigError(format!("invalid {src}={value:?}: {why}"))
}

fn parse_upstream(v: &str) -> Result<http::Uri, String> {
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
fn parse_positive(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be greater than 0 (max_queue=0 turns the queue off)".into()),
        d => Ok(d),
    }
}

/// A byte count: a plain integer, optionally with a binary suffix (`64Mi`, `1Gi`, `512Ki`).
fn parse_size(v: &str) -> Result<u64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Action};
    use std::collections::HashMap;

    fn config(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(["fwatchdog".to_owned()], |k| env.get(k).cloned()).expect("parse") {
            Action::Run(raw) => Config::from_raw(&raw),
            _ => unreachable!(),
        }
    }

    #[test]
    fn durations_follow_go_grammar() {
        let ok = [
            ("10", 10_000),
            ("0", 0),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("2s500ms", 2_500),
            (".5s", 500),
            ("1500us", 1),
            ("3µs", 0),
        ];
        for (v, ms) in ok {
            assert_eq!(parse_duration(v).map(|d| d.as_millis()), Ok(ms), "{v}");
        }
        for v in ["-1s", "-5", "abc", "10x", "1.2.3s", "s", "", "1 s", "."] {
            assert!(parse_duration(v).is_err(), "{v} should be refused");
        }
    }

    #[test]
    fn durations_past_gos_limit_are_refused_so_deadlines_cannot_overflow() {
        let max = Duration::from_nanos(i64::MAX as u64);
        assert_eq!(parse_duration("2562047h47m16.854775807s"), Ok(max));
        assert_eq!(
            parse_duration("9223372036"),
            Ok(Duration::from_secs(9223372036))
        );
        for v in [
            "2562047h47m16.854775808s",
            "9223372037",
            "18446744073709551615",
            "77777777777777",
        ] {
            assert!(parse_duration(v).is_err(), "{v} should be refused");
        }
        // Found by fuzz/duration: what the startup log prints must read back.
        let shown = format_duration(parse_duration("9223372036").expect("max seconds"));
        assert_eq!(parse_duration(&shown), parse_duration("9223372036"));
    }

    #[test]
    fn durations_format_like_go() {
        let cases = [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_micros(3), "3µs"),
        ];
        for (d, s) in cases {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s), Ok(d), "round trip {s}");
        }
    }

    #[test]
    fn threads_are_a_count_or_auto() {
        assert_eq!(parse_threads("1"), Ok(1));
        assert_eq!(parse_threads("4"), Ok(4));
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(parse_threads("auto"), Ok(cpus.min(MAX_THREADS)));
        assert_eq!(parse_threads("AUTO"), Ok(cpus.min(MAX_THREADS)));
        for v in ["0", "-1", "257", "two", "", "1.5"] {
            assert!(parse_threads(v).is_err(), "{v:?} should be refused");
        }
    }

    #[test]
    fn booleans_accept_the_documented_words_only() {
        for v in ["true", "TRUE", "1", "yes", "On"] {
            assert_eq!(parse_bool(v), Ok(true));
        }
        for v in ["false", "0", "No", "OFF"] {
            assert_eq!(parse_bool(v), Ok(false));
        }
        for v in ["t", "2", "enabled", ""] {
            assert!(parse_bool(v).is_err());
        }
    }

    #[test]
    fn invalid_values_name_the_variable_and_value() {
        let cases: &[(&str, &str)] = &[
            ("port", "abc"),
            ("cgi_headers", "maybe"),
            ("exec_timeout", "-3s"),
            ("write_timeout", "0"),
            ("max_inflight", "-1"),
            ("threads", "0"),
            ("log_format", "xml"),
            ("mode", "fastest"),
            ("metrics_port", "70000"),
        ];
        for (k, v) in cases {
            let err = config(&[("fprocess", "cat"), (k, v)]).expect_err(k);
            assert!(err.0.contains(k) && err.0.contains(v), "{k}: {err}");
        }
    }

    #[test]
    fn unknown_mode_lists_the_valid_ones() {
        let err = config(&[("fprocess", "cat"), ("mode", "fast")]).expect_err("mode");
        assert!(
            err.0
                .contains("streaming, serializing, classic, http, static"),
            "{err}"
        );
    }

    #[test]
    fn fprocess_is_required_except_static() {
        assert!(config(&[]).expect_err("fprocess").0.contains("fprocess"));
        assert!(config(&[("mode", "static")]).is_ok());
    }

    #[test]
    fn fprocess_splits_like_a_shell() {
        let c = config(&[("fprocess", r#"sh -c 'echo "a b"' x\ y"#)]).expect("config");
        assert_eq!(c.fprocess, ["sh", "-c", r#"echo "a b""#, "x y"]);
        assert!(config(&[("fprocess", "sh -c 'unterminated")]).is_err());
    }

    #[test]
    fn classic_defaults_differ() {
        let c = config(&[("fprocess", "cat"), ("mode", "classic")]).expect("config");
        assert!(c.combine_output);
        assert_eq!(c.exec_timeout, None);
        assert_eq!(c.content_type, None);
        assert_eq!(c.max_body_bytes, Some(64 << 20));
        let c = config(&[("fprocess", "cat")]).expect("config");
        assert!(!c.combine_output);
        assert_eq!(c.exec_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.max_body_bytes, None);
        assert_eq!(c.healthcheck_interval, c.write_timeout);
    }

    #[test]
    fn http_mode_needs_a_valid_upstream() {
        assert!(config(&[("fprocess", "x"), ("mode", "http")]).is_err());
        let err = config(&[
            ("fprocess", "x"),
            ("mode", "http"),
            ("upstream_url", "ftp://x"),
        ])
        .expect_err("ftp");
        assert!(err.0.contains("upstream_url"));
        assert!(config(&[
            ("fprocess", "x"),
            ("mode", "http"),
            ("http_upstream_url", "http://127.0.0.1:5000")
        ])
        .is_ok());
    }
}
