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

pub use crate::auth::jwt::JwtSettings;
use crate::auth::ApiKeys;
use crate::cli::{Raw, RawValue};
pub use crate::duration::format_duration;

/// Fork-per-request and long-running modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Streaming,
    Serializing,
    Classic,
    Http,
    Static,
    /// A pool of warm FastCGI workers.
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

impl LogFormat {
    /// The grammar of `log_format`: `text` or `json`, in any case.
    pub fn parse(v: &str) -> Result<LogFormat, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        }
    }

    /// The format to log in before the configuration is validated, so that its errors
    /// already come in the format asked for: the setting's when it parses, else text.
    pub fn requested(raw: &Raw) -> LogFormat {
        raw.get("log_format")
            .and_then(|v| v.values.last())
            .and_then(|v| LogFormat::parse(v).ok())
            .unwrap_or(LogFormat::Text)
    }
}

/// The lock file that exists exactly while the watchdog is ready: `.lock` in the temp
/// directory (what `--run-healthcheck` and the of-watchdog HEALTHCHECK look for).
pub fn lock_path() -> PathBuf {
    std::env::temp_dir().join(".lock")
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
    /// static mode: serve path segments starting with `.` (`/.well-known/` always is).
    pub static_hidden_files: bool,
    pub suppress_lock: bool,
    pub lock_path: PathBuf,
    pub http_buffer_req_body: bool,
    /// 0 = no limit.
    pub max_inflight: usize,
    /// Requests that may wait for a slot when `max_inflight` is reached; 0 = no queue.
    pub max_queue: usize,
    /// The longest such wait.
    pub queue_timeout: Duration,
    /// Client connections open at once on the function port; more are closed at once.
    pub max_connections: usize,
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
    /// Where the API-key secrets are looked up, in order.
    pub secrets_dirs: Vec<PathBuf>,
    pub secret_reload_interval: Option<Duration>,
    /// OpenFaaS IAM function tokens, when `jwt_auth` is on.
    pub jwt: Option<JwtSettings>,
    /// Settings that were given but have no effect; logged at startup.
    pub warnings: Vec<String>,
    /// fastcgi mode: the workers and how to reach them.
    pub fastcgi: FastCgiConfig,
}

/// Where OpenFaaS on Kubernetes puts the function's namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

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
/// Open connections allowed by default. A connection holding the largest head we
/// accept costs about 130 KiB of memory (bench/connections), so 512 of them stay near
/// 64 MiB: well under a 128 MiB function container.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_SECRETS_DIRS: &[&str] = &["/var/openfaas/secrets", "/run/secrets"];

impl Config {
    /// Validates every setting and loads the API-key secrets.
    pub fn from_raw(raw: &Raw) -> Result<Config, ConfigError> {
        refuse_blank(raw)?;
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
                // Found now, not as a 500 on every request. Unused (static mode, an
                // external FastCGI server), it need not exist.
                let used = mode != Mode::Static
                    && !(mode == Mode::FastCgi && s.get("fastcgi_address").is_some());
                if used {
                    find_program(&words[0]).map_err(|e| invalid(src, v, &e))?;
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
        let static_hidden_files = s.parse("static_hidden_files", false, parse_bool)?;
        let suppress_lock = s.parse("suppress_lock", false, parse_bool)?;
        let http_buffer_req_body = s.parse("http_buffer_req_body", false, parse_bool)?;
        let max_inflight = s.parse("max_inflight", 0usize, |v| parse_count(v, MAX_SLOTS))?;
        let max_queue = s.parse("max_queue", 0usize, |v| parse_count(v, MAX_SLOTS))?;
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
        let max_connections =
            s.parse(
                "max_connections",
                DEFAULT_MAX_CONNECTIONS,
                |v| match v.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err("expected a number of connections, at least 1".into()),
                },
            )?;
        let threads = s.parse("threads", 1usize, parse_threads)?;
        let prefix_logs = s.parse("prefix_logs", true, parse_bool)?;
        let log_buffer_size = s.parse("log_buffer_size", Some(65536usize), |v| {
            if v == "-1" {
                return Ok(None);
            }
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LOG_LINE).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "expected a number of bytes from 1 to {MAX_LOG_LINE}, or -1 for no limit"
                )),
            }
        })?;
        let log_callid = s.parse("log_callid", false, parse_bool)?;
        let log_format = s.parse("log_format", LogFormat::Text, LogFormat::parse)?;
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

        // A reload reads every secret file on a blocking thread: an interval of a few
        // nanoseconds would keep a core busy re-reading them, so 0 (never) or ≥ 1 ms.
        let secret_reload_interval = Some(s.parse(
            "secret_reload_interval",
            Duration::from_secs(2),
            |v| match parse_duration(v)? {
                d if !d.is_zero() && d < Duration::from_millis(1) => {
                    Err("expected 0 (never) or at least 1ms".to_owned())
                }
                d => Ok(d),
            },
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
            Some(RawValue { values, source }) => {
                check_secret_names(values, source)?;
                Some(
                    ApiKeys::load(values, &secrets_dirs, api_key_header, api_key_forward)
                        .map_err(|e| ConfigError(e.0))?,
                )
            }
            None => None,
        };

        let mut warnings: Vec<String> = raw
            .ignored()
            .iter()
            .map(|(name, advice)| format!("{name} is set but not read by fwatchdog: {advice}"))
            .collect();
        let jwt = jwt_settings(&s, raw, &mut warnings)?;

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
            static_hidden_files,
            suppress_lock,
            lock_path: lock_path(),
            http_buffer_req_body,
            max_inflight,
            max_queue,
            queue_timeout,
            max_connections,
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
            secrets_dirs,
            secret_reload_interval,
            jwt,
            warnings,
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
            " port={} bind={} metrics_port={} max_connections={} content_type={} max_body_bytes={} log_format={} prefix_logs={} log_callid={} log_buffer_size={} write_debug={}",
            self.port,
            self.bind,
            self.metrics_port.map_or_else(|| "off".to_owned(), |p| p.to_string()),
            self.max_connections,
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
            out.push_str(&format!(
                " static_path={} static_hidden_files={}",
                self.static_path.display(),
                self.static_hidden_files
            ));
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
            let dirs: Vec<String> = self
                .secrets_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            out.push_str(&format!(
                " api_key_secret={} api_key_header={} api_key_forward={} secrets_dir={} secret_reload_interval={}",
                keys.names().join(","),
                crate::header::canonical(keys.header().as_str()),
                keys.forward(),
                dirs.join(","),
                self.secret_reload_interval
                    .map_or_else(|| "0 (never)".to_owned(), format_duration),
            ));
        }
        if let Some(jwt) = &self.jwt {
            out.push_str(&format!(
                " jwt_auth=true jwt_auth_url={} jwt_auth_timeout={} function={}",
                jwt.url,
                format_duration(jwt.timeout),
                jwt.function
            ));
        }
        out
    }
}

/// `jwt_auth` and its companions. With `jwt_auth` on, the function's name must be known
/// (exit 2 otherwise: a token check that cannot tell which function it guards cannot
/// grant anything). Without it, its companions are warned about, not silently dropped.
fn jwt_settings(
    s: &Settings<'_>,
    raw: &Raw,
    warnings: &mut Vec<String>,
) -> Result<Option<JwtSettings>, ConfigError> {
    let on = s.parse("jwt_auth", false, parse_bool)?;
    let local = s.parse("jwt_auth_local", false, parse_bool)?;
    let debug = s.parse("jwt_auth_debug", false, parse_bool)?;
    let timeout = s.parse("jwt_auth_timeout", Duration::from_secs(30), parse_positive)?;
    let url = match s.get("jwt_auth_url") {
        Some((v, src)) => Some(parse_jwt_url(v.trim()).map_err(|e| invalid(src, v, &e))?),
        None => None,
    };
    if !on {
        for id in [
            "jwt_auth_local",
            "jwt_auth_debug",
            "jwt_auth_url",
            "jwt_auth_timeout",
        ] {
            if let Some((_, src)) = s.get(id) {
                warnings.push(format!("{src} has no effect without jwt_auth=true"));
            }
        }
        return Ok(None);
    }
    let url = url.unwrap_or_else(|| {
        if local {
            "http://127.0.0.1:8000/.well-known/openid-configuration".to_owned()
        } else {
            "http://gateway.openfaas:8080/.well-known/openid-configuration".to_owned()
        }
    });
    let Some(name) = raw.context("OPENFAAS_NAME") else {
        return Err(ConfigError(
            "jwt_auth=true needs the function's name in OPENFAAS_NAME (OpenFaaS sets it; set it yourself elsewhere)".into(),
        ));
    };
    let namespace = match raw.context("OPENFAAS_NAMESPACE") {
        Some(ns) => ns.to_owned(),
        None => match std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE) {
            Ok(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
            Ok(_) => {
                return Err(ConfigError(format!(
                    "jwt_auth=true needs the function's namespace: OPENFAAS_NAMESPACE is not set and {SERVICE_ACCOUNT_NAMESPACE} is empty"
                )))
            }
            Err(e) => {
                return Err(ConfigError(format!(
                    "jwt_auth=true needs the function's namespace: OPENFAAS_NAMESPACE is not set and {SERVICE_ACCOUNT_NAMESPACE} cannot be read: {e}"
                )))
            }
        },
    };
    Ok(Some(JwtSettings {
        url,
        timeout,
        debug,
        function: format!("{namespace}:{name}"),
    }))
}

fn parse_jwt_url(v: &str) -> Result<String, String> {
    let uri: http::Uri = v.parse().map_err(|_| "not a URL".to_owned())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(v.to_owned()),
        (Some("https"), _) => Err(
            "https is not supported: fwatchdog fetches the issuer's keys over plain http inside the cluster".into(),
        ),
        _ => Err("expected an http:// URL, e.g. http://gateway.openfaas:8080/.well-known/openid-configuration".into()),
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

/// `fastcgi_address`, `pool_size`, `pool_max_requests`, `script_filename`.
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
    // php-cgi reads PHP_FCGI_MAX_REQUESTS into a C int.
    let max_requests = s.parse("pool_max_requests", 0u64, |v| match v.parse::<u64>() {
        Ok(n) if n <= i32::MAX as u64 => Ok(n),
        _ => Err(format!("expected 0 (never recycle) to {}", i32::MAX)),
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

/// The most `max_inflight` slots and `max_queue` places: far above what one container
/// can run or hold, far below what tokio's semaphore accepts (it panics past
/// `usize::MAX >> 3`).
pub const MAX_SLOTS: usize = 1_000_000;
/// The longest `log_buffer_size` line, 1 GiB; `-1` is the way to say "no limit".
pub const MAX_LOG_LINE: usize = 1 << 30;

/// A count from 0 to `max`.
fn parse_count(v: &str, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected an integer from 0 to {max}")),
    }
}

/// A setting that is present but blank (`port=" "`, `--secrets-dir ''`) is a mistake,
/// not a request for the default: for a security setting, "unset" can mean "off". An
/// environment variable that is empty (`port=`) still counts as unset.
fn refuse_blank(raw: &Raw) -> Result<(), ConfigError> {
    for (id, value) in raw.iter() {
        if id == "api_key_secret" {
            continue; // checked by name, with its own message
        }
        if let Some(v) = value.values.iter().find(|v| v.trim().is_empty()) {
            return Err(invalid(
                value.source.clone(),
                v,
                "blank: give a value, or leave the setting unset",
            ));
        }
    }
    Ok(())
}

/// Each `api_key_secret` name is a file name; a value that names no file (`" "`, `","`,
/// `--api-key-secret ''`) is refused, never read as "protection off".
fn check_secret_names(names: &[String], source: &crate::cli::Source) -> Result<(), ConfigError> {
    if names.is_empty() {
        return Err(invalid(source.clone(), "", NAMES_NO_SECRET));
    }
    for name in names {
        let trimmed = name.trim();
        if trimmed.is_empty()
            || trimmed
                .bytes()
                .all(|b| b == b',' || b.is_ascii_whitespace())
        {
            return Err(invalid(source.clone(), name, NAMES_NO_SECRET));
        }
        if name.contains('/') || name == ".." || name == "." {
            return Err(invalid(
                source.clone(),
                name,
                "a secret name is a file name, not a path",
            ));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(invalid(
                source.clone(),
                name,
                "a secret name is a file name such as api-key (no spaces, commas or control characters)",
            ));
        }
    }
    Ok(())
}

const NAMES_NO_SECRET: &str = "names no secret: give the name of a mounted secret file, or unset the setting to run without API-key protection";

/// Where `program` would be run from: itself when it names a path (it has a `/`), else
/// the first executable of that name in a `PATH` folder, as `execvp` looks it up.
fn find_program(program: &str) -> Result<PathBuf, String> {
    fn executable(p: &std::path::Path) -> bool {
        p.metadata().is_ok_and(|m| m.is_file())
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match p.metadata() {
            Err(e) => Err(format!("program {program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("program {program} is not a file")),
            Ok(_) if !executable(&p) => Err(format!("program {program} is not executable")),
            Ok(_) => Ok(p),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            format!(
                "program {program} not found (or not executable) on PATH={}",
                path.to_string_lossy()
            )
        })
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

#[cfg(test)]
impl Config {
    /// The configuration these environment variables give, as if the binary had been
    /// started with them and no flags; a later pair overrides an earlier one.
    pub(crate) fn from_env_pairs(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: std::collections::HashMap<&str, &str> = env.iter().copied().collect();
        match crate::cli::parse(["fwatchdog".to_owned()], |k| {
            env.get(k).map(|v| v.to_string())
        })
        .expect("parse")
        {
            crate::cli::Action::Run(raw) => Config::from_raw(&raw),
            _ => unreachable!("no flags were given"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_env_pairs(env)
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

    /// Every numeric setting, fed any number (or near-number): a configuration error
    /// naming the setting, or values the runtime can use without a panic (tokio's
    /// semaphore, `Instant` arithmetic, the line splitter).
    mod numeric_bounds {
        use super::*;
        use proptest::prelude::*;

        const NUMERIC: &[&str] = &[
            "port",
            "metrics_port",
            "read_timeout",
            "write_timeout",
            "exec_timeout",
            "exec_kill_grace",
            "healthcheck_interval",
            "max_inflight",
            "max_queue",
            "queue_timeout",
            "log_buffer_size",
            "max_body_bytes",
            "secret_reload_interval",
            "pool_size",
            "pool_max_requests",
        ];

        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<u128>().prop_map(|n| n.to_string()),
                (0u32..64).prop_map(|b| (1u128 << b).to_string()),
                (0u32..64).prop_map(|b| ((1u128 << b) + 1).to_string()),
                Just((usize::MAX >> 3).to_string()),
                Just(((usize::MAX >> 3) + 1).to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                (
                    any::<u64>(),
                    prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "Ki", "Mi", "Gi"])
                )
                    .prop_map(|(n, u)| format!("{n}{u}")),
                "[0-9]{1,40}",
            ]
        }

        proptest! {
            #[test]
            fn any_number_is_refused_by_name_or_usable(
                i in 0..NUMERIC.len(),
                v in number(),
                j in 0..NUMERIC.len(),
                w in number(),
            ) {
                let env = [
                    ("fprocess", "cat"),
                    ("max_inflight", "1"),
                    (NUMERIC[i], v.as_str()),
                    (NUMERIC[j], w.as_str()),
                ];
                match config(&env) {
                    Err(e) => prop_assert!(
                        e.0.contains(NUMERIC[i]) || e.0.contains(NUMERIC[j])
                            || e.0.contains("max_queue") || e.0.contains("write_timeout"),
                        "{e}"
                    ),
                    Ok(c) => {
                        prop_assert!(c.max_inflight <= MAX_SLOTS && c.max_queue <= MAX_SLOTS);
                        let _ = crate::queue::Queue::new(c.max_inflight, c.max_queue, c.queue_timeout);
                        let now = std::time::Instant::now();
                        for d in [
                            c.read_timeout,
                            c.write_timeout,
                            c.exec_timeout.unwrap_or_default(),
                            c.exec_kill_grace,
                            c.healthcheck_interval,
                            c.queue_timeout,
                            c.secret_reload_interval.unwrap_or_default(),
                        ] {
                            let _ = now + d + d;
                            let _ = tokio::time::Instant::now() + d;
                        }
                        prop_assert!(c.log_buffer_size.is_none_or(|n| n <= MAX_LOG_LINE));
                        prop_assert!(c.fastcgi.max_requests <= i32::MAX as u64);
                        prop_assert!((1..=1024).contains(&c.fastcgi.pool_size));
                    }
                }
            }
        }
    }

    #[test]
    fn max_connections_is_at_least_one_and_defaults_as_help_says() {
        for v in ["0", "-1", "many", "1.5"] {
            let err = config(&[("fprocess", "cat"), ("max_connections", v)]).expect_err(v);
            assert!(err.0.contains("max_connections"), "{v}: {err}");
        }
        let c = config(&[("fprocess", "cat"), ("max_connections", "7")]).expect("7");
        assert_eq!(c.max_connections, 7);
        let c = config(&[("fprocess", "cat")]).expect("default");
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        let shown = crate::cli::SETTINGS
            .iter()
            .find(|s| s.id == "max_connections")
            .expect("in SETTINGS")
            .default;
        assert_eq!(shown, DEFAULT_MAX_CONNECTIONS.to_string());
    }

    #[test]
    fn secret_reload_interval_is_never_or_at_least_a_millisecond() {
        for v in ["1ns", "999us", "500µs"] {
            let err = config(&[("fprocess", "cat"), ("secret_reload_interval", v)]).expect_err(v);
            assert!(err.0.contains("secret_reload_interval"), "{v}: {err}");
        }
        let c = config(&[("fprocess", "cat"), ("secret_reload_interval", "0")]).expect("0");
        assert_eq!(c.secret_reload_interval, None);
        let c = config(&[("fprocess", "cat"), ("secret_reload_interval", "1ms")]).expect("1ms");
        assert_eq!(c.secret_reload_interval, Some(Duration::from_millis(1)));
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
        assert!(config(&[("fprocess", "cat"), ("mode", "http")]).is_err());
        let err = config(&[
            ("fprocess", "cat"),
            ("mode", "http"),
            ("upstream_url", "ftp://x"),
        ])
        .expect_err("ftp");
        assert!(err.0.contains("upstream_url"));
        assert!(config(&[
            ("fprocess", "cat"),
            ("mode", "http"),
            ("http_upstream_url", "http://127.0.0.1:5000")
        ])
        .is_ok());
    }
}
