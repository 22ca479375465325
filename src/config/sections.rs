//! One parser per section of [`Config`]: each reads its settings, applies the defaults
//! `--help` shows (some depend on the mode) and refuses a bad value by name. Checks
//! that span sections live in [`Config::from_raw`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::grammar::{
    parse_bool, parse_count, parse_duration, parse_fastcgi_address, parse_jwt_url, parse_positive,
    parse_size, parse_threads, parse_upstream,
};
use super::settings::{check_secret_names, invalid, Settings};
use super::{
    Auth, ConfigError, FastCgiConfig, ForkIo, JwtSettings, LambdaConfig, Limits, Listen, LogFormat,
    Logs, Mode, Proxy, StaticFiles, Timeouts, DEFAULT_MAX_CONNECTIONS, DEFAULT_SECRETS_DIRS,
    LAMBDA_BOOTSTRAPS, MAX_LOG_LINE, MAX_SLOTS, SERVICE_ACCOUNT_NAMESPACE,
};
use crate::auth::ApiKeys;
use crate::cli::{Raw, RawValue};

/// What fwatchdog holds whole in memory is capped at this by default (a collected
/// request body, a buffered answer).
pub const HELD_WHOLE_DEFAULT: u64 = 64 * 1024 * 1024;
/// Lambda's own limits: a request body (the event), and a buffered result.
pub const LAMBDA_BODY_DEFAULT: u64 = 6_291_456;
pub const LAMBDA_RESPONSE_DEFAULT: u64 = 6_291_556;

/// The defaults of `max_body_bytes` and `max_response_bytes` in `mode` (`buffer`:
/// `http_buffer_req_body`): unlimited where fwatchdog streams the body or the answer, a
/// cap wherever it holds one whole. The one place a mode's default limits are decided;
/// a new mode adds its arm here (lambda: [`LAMBDA_BODY_DEFAULT`],
/// [`LAMBDA_RESPONSE_DEFAULT`]).
pub fn default_limits(mode: Mode, buffer: bool) -> (Option<u64>, Option<u64>) {
    match mode {
        Mode::Serializing | Mode::Classic => (Some(HELD_WHOLE_DEFAULT), Some(HELD_WHOLE_DEFAULT)),
        Mode::Http if buffer => (Some(HELD_WHOLE_DEFAULT), None),
        // A chunked FastCGI body is held whole, a Content-Length one streamed: the runner
        // caps what it holds (runner::budget::HOLD_DEFAULT) without refusing a large
        // streamed upload.
        Mode::Streaming | Mode::Http | Mode::Static | Mode::FastCgi => (None, None),
        // The event is held whole, and so is a buffered result; a streamed one is not
        // capped.
        Mode::Lambda => (Some(LAMBDA_BODY_DEFAULT), Some(LAMBDA_RESPONSE_DEFAULT)),
    }
}

/// `mode`.
pub(super) fn mode(s: &Settings<'_>) -> Result<Mode, ConfigError> {
    let Some((v, src)) = s.get("mode") else {
        return Ok(Mode::Streaming);
    };
    Mode::ALL
        .iter()
        .find(|(n, _)| *n == v.trim())
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            let names: Vec<&str> = Mode::ALL.iter().map(|(n, _)| *n).collect();
            ConfigError(format!(
                "invalid {src}={v:?}: unknown mode, valid modes are {}",
                names.join(", ")
            ))
        })
}

/// `fprocess`, split like a shell; its program is found now, not as a 500 on every
/// request. Unused (static mode, an external FastCGI server), it may be absent and its
/// program need not exist.
pub(super) fn fprocess(s: &Settings<'_>, mode: Mode) -> Result<Vec<String>, ConfigError> {
    let unused = mode == Mode::Static || (mode == Mode::FastCgi && s.is_set("fastcgi_address"));
    let Some((v, src)) = s.get("fprocess") else {
        if unused {
            return Ok(Vec::new());
        }
        if mode == Mode::Lambda {
            return lambda_bootstrap();
        }
        return Err(ConfigError(format!(
            "fprocess is required in {} mode (env fprocess or --fprocess)",
            mode.name()
        )));
    };
    let words =
        shell_words::split(v).map_err(|e| ConfigError(format!("invalid {src}={v:?}: {e}")))?;
    if words.is_empty() {
        return Err(ConfigError(format!("invalid {src}={v:?}: no command")));
    }
    if !unused {
        crate::os::process::find_program(&words[0]).map_err(|e| invalid(src, v, &e))?;
    }
    Ok(words)
}

/// lambda mode without `fprocess`: the image's `bootstrap`, where RIE looks for it.
fn lambda_bootstrap() -> Result<Vec<String>, ConfigError> {
    let task_root = std::env::var_os("LAMBDA_TASK_ROOT")
        .filter(|v| !v.is_empty())
        .map(|r| PathBuf::from(r).join("bootstrap"));
    let candidates: Vec<PathBuf> = task_root
        .into_iter()
        .chain(LAMBDA_BOOTSTRAPS.iter().map(PathBuf::from))
        .collect();
    let Some(found) = candidates.iter().find(|p| p.exists()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(ConfigError(format!(
            "fprocess is required in lambda mode (env fprocess or --fprocess), or a runtime at one of {}",
            tried.join(", ")
        )));
    };
    let path = found.display().to_string();
    crate::os::process::find_program(&path)
        .map_err(|e| ConfigError(format!("invalid Lambda bootstrap {path}: {e}")))?;
    Ok(vec![path])
}

/// `upstream_url` (required in http mode), `http_buffer_req_body`.
pub(super) fn proxy(s: &Settings<'_>, mode: Mode) -> Result<Proxy, ConfigError> {
    let upstream_url = match s.get("upstream_url") {
        Some((v, src)) => Some(parse_upstream(v).map_err(|e| invalid(src, v, &e))?),
        None if mode == Mode::Http => {
            return Err(ConfigError(
                "upstream_url is required in http mode (env upstream_url or --upstream-url)".into(),
            ))
        }
        None => None,
    };
    Ok(Proxy {
        upstream_url,
        buffer_req_body: s.parse("http_buffer_req_body", false, parse_bool)?,
    })
}

/// `port`, `bind`, `metrics_port`, `max_connections`, `threads`.
pub(super) fn listen(s: &Settings<'_>) -> Result<Listen, ConfigError> {
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
    let max_connections = s.parse("max_connections", DEFAULT_MAX_CONNECTIONS, |v| match v
        .parse::<usize>()
    {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a number of connections, at least 1".into()),
    })?;
    Ok(Listen {
        port,
        bind,
        metrics_port,
        max_connections,
        threads: s.parse("threads", 1usize, parse_threads)?,
    })
}

/// What `upstream_stop_grace` adds to `healthcheck_interval` by default: time for an
/// upstream that waits that long after SIGTERM to finish and exit.
const UPSTREAM_STOP_MARGIN: Duration = Duration::from_secs(5);

/// `read_timeout`, `write_timeout` (> 0), `exec_timeout` (classic: none by default),
/// `exec_kill_grace`, `healthcheck_interval` (write_timeout by default),
/// `startup_timeout` (none by default), `upstream_stop_grace` (healthcheck_interval + 5s).
pub(super) fn timeouts(s: &Settings<'_>, mode: Mode) -> Result<Timeouts, ConfigError> {
    let read = s.parse("read_timeout", Duration::from_secs(30), parse_duration)?;
    let write = s.parse(
        "write_timeout",
        Duration::from_secs(30),
        |v| match parse_duration(v)? {
            d if d.is_zero() => Err("must be greater than 0".into()),
            d => Ok(d),
        },
    )?;
    let exec_default = if mode == Mode::Classic {
        Duration::ZERO
    } else {
        Duration::from_secs(30)
    };
    // A timer cannot keep a limit under 1 ms: with `1ns`, some requests still ran.
    let exec = s.parse("exec_timeout", exec_default, |v| match parse_duration(v)? {
        d if !d.is_zero() && d < Duration::from_millis(1) => {
            Err("must be 0 (no limit) or at least 1ms".into())
        }
        d => Ok(d),
    })?;
    let exec = Some(exec).filter(|d| !d.is_zero());
    let healthcheck_interval = s.parse("healthcheck_interval", write, parse_duration)?;
    let exec_kill_grace = s.parse("exec_kill_grace", Duration::ZERO, parse_duration)?;
    let startup =
        Some(s.parse("startup_timeout", Duration::ZERO, parse_duration)?).filter(|d| !d.is_zero());
    // The official Go templates keep serving for their healthcheck_interval after
    // SIGTERM (read from the same environment, or less when it is unset), then drain.
    let upstream_stop_grace = s.parse(
        "upstream_stop_grace",
        healthcheck_interval.saturating_add(UPSTREAM_STOP_MARGIN),
        parse_duration,
    )?;
    Ok(Timeouts {
        read,
        write,
        exec,
        exec_kill_grace,
        healthcheck_interval,
        startup,
        upstream_stop_grace,
    })
}

/// `max_body_bytes` and `max_response_bytes` (defaults: [`default_limits`]),
/// `max_inflight`, `max_queue`, `queue_timeout`.
pub(super) fn limits(s: &Settings<'_>, mode: Mode, buffer: bool) -> Result<Limits, ConfigError> {
    let max_inflight = s.parse("max_inflight", 0usize, |v| parse_count(v, MAX_SLOTS))?;
    let max_queue = s.parse("max_queue", 0usize, |v| parse_count(v, MAX_SLOTS))?;
    let queue_timeout = s.parse("queue_timeout", Duration::from_secs(10), parse_positive)?;
    let (body_default, response_default) = default_limits(mode, buffer);
    let max_body_bytes = s.parse("max_body_bytes", body_default, |v| parse_size(v).map(Some))?;
    let max_response_bytes = s.parse("max_response_bytes", response_default, |v| {
        parse_size(v).map(Some)
    })?;
    Ok(Limits {
        max_body_bytes,
        max_response_bytes,
        max_inflight: Some(max_inflight).filter(|n| *n > 0),
        max_queue,
        queue_timeout,
    })
}

/// `log_format`, `prefix_logs`, `log_buffer_size` (-1 = no limit), `log_callid`.
pub(super) fn logs(s: &Settings<'_>) -> Result<Logs, ConfigError> {
    let prefix = s.parse("prefix_logs", true, parse_bool)?;
    let buffer_size = s.parse("log_buffer_size", Some(65536usize), |v| {
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
    Ok(Logs {
        prefix,
        buffer_size,
        callid: s.parse("log_callid", false, parse_bool)?,
        format: s.parse("log_format", LogFormat::Text, LogFormat::parse)?,
    })
}

/// `content_type`, `cgi_headers`, `cgi`, `marshal_request`, `combine_output`,
/// `write_debug`. Classic echoes the request's Content-Type and combines stderr into the
/// body by default.
pub(super) fn fork_io(s: &Settings<'_>, mode: Mode) -> Result<ForkIo, ConfigError> {
    let classic = mode == Mode::Classic;
    let content_type = match s.get("content_type") {
        Some((v, src)) => {
            http::HeaderValue::from_str(v)
                .map_err(|_| invalid(src, v, "not a valid header value"))?;
            Some(v.to_owned())
        }
        None if classic => None,
        None => Some("application/octet-stream".to_owned()),
    };
    let cgi_headers = s.parse("cgi_headers", true, parse_bool)?;
    let cgi = s.parse("cgi", false, parse_bool)?;
    let marshal_request = s.parse("marshal_request", false, parse_bool)?;
    // stderr in the body would corrupt a CGI header block.
    let combine_output = s.parse("combine_output", classic && !cgi, parse_bool)?;
    Ok(ForkIo {
        content_type,
        cgi_headers,
        cgi,
        marshal_request,
        combine_output,
        write_debug: s.parse("write_debug", false, parse_bool)?,
    })
}

/// `static_path`, `static_hidden_files`.
pub(super) fn static_files(s: &Settings<'_>) -> Result<StaticFiles, ConfigError> {
    Ok(StaticFiles {
        path: PathBuf::from(s.get("static_path").map_or("/home/app/public", |(v, _)| v)),
        hidden_files: s.parse("static_hidden_files", false, parse_bool)?,
    })
}

/// `suppress_lock`: the lock file's path, or `None` without one.
pub(super) fn lock_file(s: &Settings<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let suppress = s.parse("suppress_lock", false, parse_bool)?;
    Ok((!suppress).then(super::lock_path))
}

/// `ready_path`, which must be a path.
pub(super) fn ready_path(s: &Settings<'_>) -> Result<Option<String>, ConfigError> {
    match s.get("ready_path") {
        Some((v, src)) if !v.starts_with('/') => Err(invalid(src, v, "must start with /")),
        other => Ok(other.map(|(v, _)| v.to_owned())),
    }
}

/// `api_key_secret` and its companions (the secrets are read now), and `jwt_auth`.
pub(super) fn auth(
    s: &Settings<'_>,
    raw: &Raw,
    warnings: &mut Vec<String>,
) -> Result<Auth, ConfigError> {
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
            http::HeaderName::from_bytes(v.as_bytes()).map_err(|_| "not a valid header name".into())
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
    Ok(Auth {
        api_keys,
        secrets_dirs,
        secret_reload_interval,
        jwt: jwt(s, raw, warnings)?,
    })
}

/// `jwt_auth` and its companions. With `jwt_auth` on, the function's name must be known
/// (exit 2 otherwise: a token check that cannot tell which function it guards cannot
/// grant anything). Without it, its companions are warned about, not silently dropped.
fn jwt(
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

/// `fastcgi_address`, `pool_size`, `pool_max_requests`, `script_filename`.
pub(super) fn fastcgi(s: &Settings<'_>, mode: Mode) -> Result<FastCgiConfig, ConfigError> {
    let address = match s.get("fastcgi_address") {
        None => None,
        Some((v, src)) => Some(parse_fastcgi_address(v.trim()).map_err(|e| invalid(src, v, &e))?),
    };
    // The CPU count reads cgroup files: only fastcgi mode needs it (lambda mode starts
    // one runtime unless told otherwise: a Lambda function expects to be alone).
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

/// `pool_size` in lambda mode (default 1), and the function's name.
pub(super) fn lambda(s: &Settings<'_>, raw: &Raw, mode: Mode) -> Result<LambdaConfig, ConfigError> {
    let pool_size = if mode == Mode::Lambda {
        s.parse("pool_size", 1usize, |v| match v.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err("expected a number of runtimes from 1 to 1024".into()),
        })?
    } else {
        1
    };
    Ok(LambdaConfig {
        pool_size,
        function_name: raw
            .context("OPENFAAS_NAME")
            .unwrap_or("function")
            .to_owned(),
    })
}
