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

use crate::auth::jwt::JwtSettings;
use crate::auth::ApiKeys;
use crate::cli::Raw;
pub use grammar::{parse_bool, parse_duration};
pub use sections::{
    default_limits, HELD_WHOLE_DEFAULT, LAMBDA_BODY_DEFAULT, LAMBDA_RESPONSE_DEFAULT,
};
use settings::Settings;

mod grammar;
mod sections;
mod settings;
mod summary;

impl Config {
    /// Validates every setting and loads the API-key secrets.
    pub fn from_raw(raw: &Raw) -> Result<Config, ConfigError> {
        settings::refuse_blank(raw)?;
        let s = Settings(raw);
        let mode = sections::mode(&s)?;
        let proxy = sections::proxy(&s, mode)?;
        let config = Config {
            mode,
            mode_set: s.is_set("mode"),
            fprocess: sections::fprocess(&s, mode)?,
            ready_path: sections::ready_path(&s)?,
            listen: sections::listen(&s)?,
            timeouts: sections::timeouts(&s, mode)?,
            limits: sections::limits(&s, mode, proxy.buffer_req_body)?,
            logs: sections::logs(&s)?,
            fork_io: sections::fork_io(&s, mode)?,
            proxy,
            static_files: sections::static_files(&s)?,
            fastcgi: sections::fastcgi(&s, mode)?,
            lambda: sections::lambda(&s, raw, mode)?,
            lock_file: sections::lock_file(&s)?,
            // Filled in below, once the settings that cannot go together are refused.
            auth: Auth::default(),
            warnings: Vec::new(),
        };
        config.cross_check(&s)?;
        let mut warnings: Vec<String> = raw
            .ignored()
            .iter()
            .map(|(name, advice)| format!("{name} is set but not read by fwatchdog: {advice}"))
            .collect();
        let auth = sections::auth(&s, raw, &mut warnings)?;
        Ok(Config {
            auth,
            warnings,
            ..config
        })
    }

    /// The settings that are valid alone but not together.
    fn cross_check(&self, s: &Settings<'_>) -> Result<(), ConfigError> {
        if self.limits.max_queue > 0 && self.limits.max_inflight.is_none() {
            return Err(s.invalid("max_queue", "a queue needs a limit: set max_inflight too"));
        }
        if self.fork_io.cgi && !self.mode.is_fork() {
            let why = format!(
                "CGI is for the fork modes (streaming, serializing, classic), not {}",
                self.mode.name()
            );
            return Err(s.invalid("cgi", &why));
        }
        Ok(())
    }
}

/// The `mode` setting: which runner answers function requests, and what the backend
/// keeps running for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One handler per request, its output streamed ([`crate::runner::fork::Fork`]).
    Streaming,
    /// One handler per request, body and answer held whole (`fork::Fork`).
    Serializing,
    /// Serializing with the classic watchdog's headers and limits (`fork::Fork`).
    Classic,
    /// A reverse proxy ([`crate::runner::proxy::Proxy`]) in front of one long-running
    /// HTTP server (`backend::upstream::Upstream`).
    Http,
    /// A folder served as it is ([`crate::runner::files::Files`]).
    Static,
    /// A pool of warm FastCGI workers (`backend::workers::Workers`) or an external
    /// FastCGI server, spoken to by [`crate::runner::fastcgi::FastCgi`].
    FastCgi,
    /// AWS Lambda runtimes, talking the Lambda Runtime API to us.
    Lambda,
}

impl Mode {
    const ALL: &'static [(&'static str, Mode)] = &[
        ("streaming", Mode::Streaming),
        ("serializing", Mode::Serializing),
        ("classic", Mode::Classic),
        ("http", Mode::Http),
        ("static", Mode::Static),
        ("fastcgi", Mode::FastCgi),
        ("lambda", Mode::Lambda),
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

/// Everything the server needs, already checked, grouped the way the code uses it so
/// that each part takes only its section.
///
/// One convention for limits that can be switched off: an `Option`, `None` meaning
/// "no limit" (`timeouts.exec`, `limits.max_inflight`, `limits.max_body_bytes`,
/// `logs.buffer_size`, `auth.secret_reload_interval`). Counts of things that may be
/// none are plain numbers (`limits.max_queue` places, `fastcgi.max_requests`).
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    /// Whether `mode` was given. When it was not, the startup log names the mode that
    /// runs: images built for the classic watchdog (which has no modes) need `classic`.
    pub mode_set: bool,
    /// argv of the handler (fork modes), of the upstream (http mode) or of the FastCGI
    /// workers; empty when nothing is started (static mode, an external FastCGI server).
    pub fprocess: Vec<String>,
    /// When set, `/_/ready` also asks the function at this path.
    pub ready_path: Option<String>,
    pub listen: Listen,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub logs: Logs,
    /// How fork modes talk to their handler.
    pub fork_io: ForkIo,
    /// http mode.
    pub proxy: Proxy,
    /// static mode.
    pub static_files: StaticFiles,
    /// fastcgi mode: the workers and how to reach them.
    pub fastcgi: FastCgiConfig,
    /// lambda mode: the runtimes.
    pub lambda: LambdaConfig,
    pub auth: Auth,
    /// The file that exists while we are ready; `None` with `suppress_lock`.
    pub lock_file: Option<PathBuf>,
    /// Settings that were given but have no effect; logged at startup.
    pub warnings: Vec<String>,
}

/// Where requests and scrapes come in.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The function port (`port`); 0 picks a free one.
    pub port: u16,
    /// The address both ports listen on (`bind`).
    pub bind: IpAddr,
    /// The Prometheus port; `None` when metrics are off.
    pub metrics_port: Option<u16>,
    /// Client connections open at once on the function port; more are closed at once.
    pub max_connections: usize,
    /// Runtime worker threads; 1 = everything on the main thread.
    pub threads: usize,
}

/// How long each phase of a request, and of the shutdown, may take.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// `read_timeout`: the request head, the longest silence inside a body, keep-alive
    /// idle.
    pub read: Duration,
    /// `write_timeout`: the whole response, from the end of the request head; never 0.
    pub write: Duration,
    /// `exec_timeout`: one handler run or upstream request; `None` = no limit.
    pub exec: Option<Duration>,
    /// On timeout, SIGTERM then SIGKILL this much later; zero = SIGKILL at once.
    pub exec_kill_grace: Duration,
    /// On SIGTERM, how long to keep serving with health failing before draining.
    pub healthcheck_interval: Duration,
    /// `startup_timeout`: how long the backend may take to become ready; `None` = as
    /// long as it takes.
    pub startup: Option<Duration>,
    /// `upstream_stop_grace`: after the drain, SIGTERM to the http upstream and SIGKILL
    /// this much later.
    pub upstream_stop_grace: Duration,
}

/// How much may be asked at once.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request body bytes accepted; `None` = no limit (a body held whole is still
    /// capped: `runner::budget::HOLD_DEFAULT`).
    pub max_body_bytes: Option<u64>,
    /// The largest answer held whole in memory (serializing, classic); `None` = no limit
    /// (an answer held whole is still capped: `runner::budget::HOLD_DEFAULT`).
    pub max_response_bytes: Option<u64>,
    /// Function requests running at once; `None` = no limit.
    pub max_inflight: Option<usize>,
    /// Requests that may wait for a slot when `max_inflight` is reached; 0 = no queue.
    pub max_queue: usize,
    /// The longest such wait.
    pub queue_timeout: Duration,
}

/// Our log lines and the handler's.
#[derive(Debug, Clone)]
pub struct Logs {
    pub format: LogFormat,
    /// `prefix_logs`: handler lines start with date, time and `stdout:`/`stderr:`.
    pub prefix: bool,
    /// `log_buffer_size`: the longest handler line kept whole; `None` = no limit.
    pub buffer_size: Option<usize>,
    /// `log_callid`: request log lines end with `[<X-Call-Id>]`.
    pub callid: bool,
}

/// How the fork modes hand a request to their handler and read its answer.
#[derive(Debug, Clone)]
pub struct ForkIo {
    /// The response's Content-Type; `None` = classic's echo of the request's.
    pub content_type: Option<String>,
    /// Request headers as `Http_*` environment variables.
    pub cgi_headers: bool,
    /// CGI/1.1 meta-variables in, a CGI response out.
    pub cgi: bool,
    /// stdin is a JSON envelope of headers and base64 body (serializing, classic).
    pub marshal_request: bool,
    /// The handler's stderr joins stdout in the response body.
    pub combine_output: bool,
    /// The handler's stdout is also logged.
    pub write_debug: bool,
}

/// http mode: where requests go.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `upstream_url`; always set in http mode.
    pub upstream_url: Option<http::Uri>,
    /// `http_buffer_req_body`: read the whole body first, send it with a length.
    pub buffer_req_body: bool,
}

/// static mode: what is served.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// The folder served.
    pub path: PathBuf,
    /// Serve path segments starting with `.` (`/.well-known/` always is).
    pub hidden_files: bool,
}

/// Who may call the function.
#[derive(Debug, Default)]
pub struct Auth {
    /// API keys, when `api_key_secret` is set.
    pub api_keys: Option<ApiKeys>,
    /// Where the API-key secrets are looked up, in order.
    pub secrets_dirs: Vec<PathBuf>,
    /// How often the secrets are re-read; `None` = never.
    pub secret_reload_interval: Option<Duration>,
    /// OpenFaaS IAM function tokens, when `jwt_auth` is on.
    pub jwt: Option<JwtSettings>,
}

impl Auth {
    /// The API-key header handlers never see ([`ApiKeys::hidden`]).
    pub fn hidden_header(&self) -> Option<&http::HeaderName> {
        self.api_keys.as_ref().and_then(ApiKeys::hidden)
    }
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

impl fmt::Display for FastCgiAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FastCgiAddress::Tcp(a) => f.write_str(a),
            FastCgiAddress::Unix(p) => write!(f, "{}", p.display()),
        }
    }
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

/// The lambda-mode settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// Runtime processes started from `fprocess` (`pool_size`, default 1).
    pub pool_size: usize,
    /// The function's name when `AWS_LAMBDA_FUNCTION_NAME` is not set: `OPENFAAS_NAME`,
    /// else `function`.
    pub function_name: String,
}

/// Where a Lambda image keeps its runtime when no command is given, in the order RIE
/// looks (`$LAMBDA_TASK_ROOT/bootstrap` first, when that variable is set).
pub const LAMBDA_BOOTSTRAPS: &[&str] = &[
    "/var/task/bootstrap",
    "/opt/bootstrap",
    "/var/runtime/bootstrap",
];

/// Open connections allowed by default. A connection holding the largest head we
/// accept costs about 130 KiB of memory (bench/connections), so 512 of them stay near
/// 64 MiB: well under a 128 MiB function container.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_SECRETS_DIRS: &[&str] = &["/var/openfaas/secrets", "/run/secrets"];

/// The most `max_inflight` slots and `max_queue` places: far above what one container
/// can run or hold, far below what tokio's semaphore accepts (it panics past
/// `usize::MAX >> 3`).
pub const MAX_SLOTS: usize = 1_000_000;
/// The longest `log_buffer_size` line, 1 GiB; `-1` is the way to say "no limit".
pub const MAX_LOG_LINE: usize = 1 << 30;

#[cfg(test)]
mod tests;
