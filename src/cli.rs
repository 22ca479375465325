//! What the user typed: flags and environment variables, before any validation.
//!
//! Every setting lives in one table, [`SETTINGS`]. The clap command, the `--help` text
//! (with each setting's env vars and default) and the lookup of OpenFaaS env var aliases
//! are all generated from it, so they cannot drift apart. Values stay strings here;
//! [`crate::config`] is the one place that decides whether a value is valid, and it
//! needs to know where a value came from (`--port` or `port=`) to say so.

use clap::{Arg, ArgAction, Command};

/// How a setting takes its value on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`
    Value,
    /// `--flag` (means true) or `--flag=false`
    Bool,
    /// `--flag A --flag B`; the env var holds `A,B`
    List,
}

/// The group a setting is listed under in `--help` and in the configuration reference,
/// in the order of [`Heading::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heading {
    /// What runs: the mode and the function.
    Handler,
    /// Listening, threads, health and shutdown.
    Server,
    /// Deadlines, sizes and counts that bound every request.
    Limits,
    /// API keys, secrets and OpenFaaS IAM tokens.
    Security,
    Logging,
    /// streaming, serializing and classic.
    Fork,
    Http,
    Static,
    FastCgi,
    Lambda,
}

impl Heading {
    pub const ALL: &'static [Heading] = &[
        Heading::Handler,
        Heading::Server,
        Heading::Limits,
        Heading::Security,
        Heading::Logging,
        Heading::Fork,
        Heading::Http,
        Heading::Static,
        Heading::FastCgi,
        Heading::Lambda,
    ];

    /// The title shown above the group.
    pub fn title(self) -> &'static str {
        match self {
            Heading::Server => "Server",
            Heading::Handler => "Handler",
            Heading::Limits => "Limits",
            Heading::Security => "Security",
            Heading::Logging => "Logging",
            Heading::Fork => "Fork modes (streaming, serializing, classic)",
            Heading::Http => "http mode",
            Heading::Static => "static mode",
            Heading::FastCgi => "fastcgi mode",
            Heading::Lambda => "lambda mode",
        }
    }

    /// The settings under this heading, in table order.
    pub fn settings(self) -> impl Iterator<Item = &'static Setting> {
        SETTINGS.iter().filter(move |s| s.heading == self)
    }
}

/// One configuration setting: its flag, its env vars, its default and its meaning.
#[derive(Debug)]
pub struct Setting {
    pub heading: Heading,
    pub id: &'static str,
    /// Long flag without the leading `--`.
    pub flag: &'static str,
    /// OpenFaaS env var names; when several are set, the last one listed wins.
    pub env: &'static [&'static str],
    /// The default as shown to users (`—` for none).
    pub default: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! setting {
    ($heading:ident, $id:literal, $flag:literal, [$($env:literal),*], $default:literal, $kind:ident, $help:literal) => {
        Setting { heading: Heading::$heading, id: $id, flag: $flag, env: &[$($env),*], default: $default, kind: Kind::$kind, help: $help }
    };
}

/// Every setting. `--help` and the configuration reference (docs/src/configuration.md,
/// generated from this table: see tests/it/docs.rs) list them by [`Heading`], in this
/// order within each heading. Adding one: pick its heading, then regenerate the page with
/// `FWATCHDOG_UPDATE_DOCS=1 cargo test --test it docs::` (the docs test says so too).
pub const SETTINGS: &[Setting] = &[
    setting!(Handler, "mode", "mode", ["mode"], "streaming", Value,
        "streaming, serializing, classic, http, static, fastcgi or lambda"),
    setting!(Handler, "fprocess", "fprocess", ["fprocess", "function_process"], "—", Value,
        "handler command line, split like a POSIX shell (required except in static mode; lambda: the runtime, else the image's bootstrap)"),
    setting!(Http, "upstream_url", "upstream-url", ["upstream_url", "http_upstream_url"], "—", Value,
        "http mode: where requests are proxied, e.g. http://127.0.0.1:5000"),
    setting!(Server, "port", "port", ["PORT", "port"], "8080", Value,
        "listen port; 0 picks a free port (reported in the startup log); PORT (Knative, Cloud Run) counts when port is unset"),
    setting!(Server, "bind", "bind", ["bind_address"], "0.0.0.0", Value,
        "listen address (:: for dual stack)"),
    setting!(Server, "metrics_port", "metrics-port", ["metrics_port"], "8081", Value,
        "Prometheus metrics port; 0 picks a free port; off disables"),
    setting!(Limits, "read_timeout", "read-timeout", ["read_timeout"], "30s", Value,
        "deadline for the request head, longest silence while reading a body, keep-alive idle timeout"),
    setting!(Limits, "write_timeout", "write-timeout", ["write_timeout"], "30s", Value,
        "the whole response must be written within this, from the end of the request head; > 0"),
    setting!(Limits, "exec_timeout", "exec-timeout", ["exec_timeout"], "30s (classic: 0)", Value,
        "how long one handler run or upstream request may take; 0 = no limit, else at least 1ms"),
    setting!(Server, "startup_timeout", "startup-timeout", ["startup_timeout"], "0", Value,
        "how long the backend (http upstream, FastCGI server, Lambda runtimes) may take to become ready at startup, past it exit 1; 0 = as long as it takes"),
    setting!(Fork, "exec_kill_grace", "exec-kill-grace", ["exec_kill_grace"], "0", Value,
        "fork modes: on timeout SIGTERM the handler group, SIGKILL it this much later; 0 = SIGKILL at once"),
    setting!(Server, "healthcheck_interval", "healthcheck-interval", ["healthcheck_interval"], "write_timeout", Value,
        "on SIGTERM, how long to keep serving with health failing before draining; 0 = no wait"),
    setting!(Http, "upstream_stop_grace", "upstream-stop-grace", ["upstream_stop_grace"], "healthcheck_interval + 5s", Value,
        "http mode, on shutdown after the drain: how long the upstream may take to exit after SIGTERM before SIGKILL"),
    setting!(Fork, "content_type", "content-type", ["content_type"], "application/octet-stream (classic: the request's)", Value,
        "Content-Type of fork-mode responses (classic: echo the request's when unset, else sniff the output)"),
    setting!(Static, "static_path", "static-path", ["static_path"], "/home/app/public", Value,
        "folder served in static mode"),
    setting!(Static, "static_hidden_files", "static-hidden-files", ["static_hidden_files"], "false", Bool,
        "static mode: serve path segments starting with . (/.well-known/ always is)"),
    setting!(Server, "suppress_lock", "suppress-lock", ["suppress_lock"], "false", Bool,
        "do not write the lock file; health then does not require it"),
    setting!(Http, "http_buffer_req_body", "http-buffer-req-body", ["buffer_http", "http_buffer_req_body"], "false", Bool,
        "http mode: read the whole request body first and send it with a Content-Length"),
    setting!(Limits, "max_inflight", "max-inflight", ["max_inflight"], "0", Value,
        "concurrent function requests allowed (up to 1000000), more get 429; 0 = no limit"),
    setting!(Limits, "max_queue", "max-queue", ["max_queue"], "0", Value,
        "with max_inflight reached, up to this many requests (at most 1000000) wait in line (FIFO) for a slot instead of a 429; 0 = no queue"),
    setting!(Limits, "queue_timeout", "queue-timeout", ["queue_timeout"], "10s", Value,
        "longest wait in the max_queue line before a 429; > 0"),
    setting!(Limits, "max_connections", "max-connections", ["max_connections"], "512", Value,
        "open client connections allowed on the function port (at least 1); more are closed at once and counted (fwatchdog_connections_rejected_total); the default keeps the worst case near 64 MiB"),
    setting!(Server, "threads", "threads", ["threads"], "1", Value,
        "threads serving requests; auto = the CPU quota of the container (cgroup cpu.max), else the CPU count; more than 1 helps http mode on several cores"),
    setting!(Logging, "prefix_logs", "prefix-logs", ["prefix_logs"], "true", Bool,
        "prefix handler output lines with date, time and stdout:/stderr:"),
    setting!(Logging, "log_buffer_size", "log-buffer-size", ["log_buffer_size"], "65536", Value,
        "longest handler log line in bytes, longer lines are split; -1 (or more than 8 MiB) = 8 MiB"),
    setting!(Logging, "log_callid", "log-callid", ["log_callid", "log_call_id"], "false", Bool,
        "append [<X-Call-Id>] to request log lines"),
    setting!(Logging, "log_format", "log-format", ["log_format"], "text", Value,
        "text (OpenFaaS-compatible lines) or json (one object per line)"),
    setting!(Handler, "ready_path", "ready-path", ["ready_path"], "—", Value,
        "if set, /_/ready also asks the function at this path"),
    setting!(Fork, "cgi_headers", "cgi-headers", ["cgi_headers"], "true", Bool,
        "fork modes: pass request headers to the handler as Http_* env vars"),
    setting!(Fork, "cgi", "cgi", ["cgi"], "false", Bool,
        "fork modes: CGI/1.1 (RFC 3875): meta-variables in the env, stdout parsed as a CGI response"),
    setting!(Fork, "marshal_request", "marshal-request", ["marshal_request"], "false", Bool,
        "serializing/classic: stdin is a JSON envelope of headers and base64 body"),
    setting!(Fork, "combine_output", "combine-output", ["combine_output"], "false (classic: true)", Bool,
        "serializing/classic: stderr joins stdout in the response body"),
    setting!(Logging, "write_debug", "write-debug", ["write_debug"], "false", Bool,
        "log handler stdout as well"),
    setting!(Limits, "max_body_bytes", "max-body-bytes", ["max_body_bytes"], "unlimited (serializing, classic, http_buffer_req_body: 64 MiB; lambda: 6291456)", Value,
        "largest request body accepted, larger gets 413"),
    setting!(Limits, "max_response_bytes", "max-response-bytes", ["max_response_bytes"], "unlimited (serializing, classic: 64 MiB; lambda: 6291556)", Value,
        "largest answer held in memory; a handler writing more is killed and the request gets 500 (lambda: a buffered result, the runtime gets 413)"),
    setting!(Security, "api_key_secret", "api-key-secret", ["api_key_secret"], "— (auth off)", List,
        "name of a mounted secret holding valid API keys; repeatable (env: comma-separated)"),
    setting!(Security, "secrets_dir", "secrets-dir", ["secrets_dir"], "/var/openfaas/secrets, then /run/secrets", Value,
        "where secrets are looked up"),
    setting!(Security, "api_key_header", "api-key-header", ["api_key_header"], "X-Api-Key", Value,
        "request header that carries the API key"),
    setting!(Security, "api_key_forward", "api-key-forward", ["api_key_forward"], "false", Bool,
        "also pass the API key header on to the handler"),
    setting!(Security, "secret_reload_interval", "secret-reload-interval", ["secret_reload_interval"], "2s", Value,
        "how often secret files are re-read for rotation; 0 = never, else at least 1ms"),
    setting!(Security, "jwt_auth", "jwt-auth", ["jwt_auth"], "false", Bool,
        "OpenFaaS IAM: every function request needs a function token (Authorization: Bearer) from the gateway"),
    setting!(Security, "jwt_auth_local", "jwt-auth-local", ["jwt_auth_local"], "false", Bool,
        "the token issuer is a gateway at http://127.0.0.1:8000 (port-forwarded)"),
    setting!(Security, "jwt_auth_debug", "jwt-auth-debug", ["jwt_auth_debug"], "false", Bool,
        "log key ids and each token's issuer and audience (never a token)"),
    setting!(Security, "jwt_auth_url", "jwt-auth-url", ["jwt_auth_url"], "—", Value,
        "the issuer's OpenID configuration URL (http://); overrides jwt_auth_local and the in-cluster gateway"),
    setting!(Security, "jwt_auth_timeout", "jwt-auth-timeout", ["jwt_auth_timeout"], "30s", Value,
        "how long startup waits for the token issuer's keys before exit 1; > 0"),
    setting!(FastCgi, "fastcgi_address", "fastcgi-address", ["fastcgi_address"], "— (spawn workers)", Value,
        "fastcgi mode: host:port or /path.sock (unix:/path.sock) of an external FastCGI server (e.g. php-fpm) instead of spawning fprocess"),
    setting!(FastCgi, "pool_size", "pool-size", ["pool_size"], "number of CPUs (lambda: 1)", Value,
        "fastcgi mode: workers spawned from fprocess, and the most connections open to the FastCGI server at once (1-1024); lambda mode: runtime processes"),
    setting!(FastCgi, "pool_max_requests", "pool-max-requests", ["pool_max_requests"], "0", Value,
        "fastcgi mode: workers get PHP_FCGI_MAX_REQUESTS=N (up to 2147483647) and exit after N requests, then are replaced; 0 = never"),
    setting!(FastCgi, "script_filename", "script-filename", ["script_filename", "SCRIPT_FILENAME"], "—", Value,
        "fastcgi mode: the SCRIPT_FILENAME param (the script php-cgi or php-fpm runs)"),
];

/// Environment variables that are not settings but that a setting needs: the function's
/// name and namespace, which OpenFaaS gives every function (`jwt_auth` checks tokens
/// against them).
pub const CONTEXT_ENV: &[&str] = &["OPENFAAS_NAME", "OPENFAAS_NAMESPACE"];

/// Settings the OpenFaaS watchdogs read (or document) that fwatchdog does not honour,
/// with what to do instead. None of them would weaken protection when ignored; each is
/// warned about at startup when set, never silently dropped.
pub const IGNORED_ENV: &[(&str, &str)] = &[
    (
        "debug_headers",
        "the classic watchdog's header dump is not implemented (it would log Authorization and API key headers); use log_format=json and the request log",
    ),
    (
        "read_debug",
        "request bodies are never logged; write_debug logs handler stdout",
    ),
    (
        "shutdown_timeout",
        "never part of a watchdog release; the drain is healthcheck_interval, then up to write_timeout",
    ),
];

/// Where a raw value came from, so an error can name it the way the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "--{flag}"),
            Source::Env(name) => write!(f, "{name}"),
        }
    }
}

/// One raw value and its source.
#[derive(Debug, Clone)]
pub struct RawValue {
    pub values: Vec<String>,
    pub source: Source,
}

/// The settings the user gave, by id, still unvalidated.
#[derive(Debug, Default)]
pub struct Raw {
    values: Vec<(&'static str, RawValue)>,
    /// Set, non-empty [`CONTEXT_ENV`] variables.
    context: Vec<(&'static str, String)>,
    /// Set, non-empty [`IGNORED_ENV`] variables, with the advice for each.
    ignored: Vec<(&'static str, &'static str)>,
}

impl Raw {
    pub fn get(&self, id: &str) -> Option<&RawValue> {
        self.values.iter().find(|(k, _)| *k == id).map(|(_, v)| v)
    }

    /// Every setting given, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &RawValue)> {
        self.values.iter().map(|(k, v)| (*k, v))
    }

    /// A [`CONTEXT_ENV`] variable, when set and non-empty.
    pub fn context(&self, name: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The peers' settings that were set but are not honoured, with advice.
    pub fn ignored(&self) -> &[(&'static str, &'static str)] {
        &self.ignored
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Run(Raw),
    Version,
    RunHealthcheck(Raw),
}

/// Builds the clap command from [`SETTINGS`].
pub fn command() -> Command {
    let mut cmd = Command::new("fwatchdog")
        .about("A function watchdog: serves HTTP and runs the function for each request")
        .long_about(
            "A function watchdog: serves HTTP and runs the function for each request.\n\
             Every setting is a flag or an environment variable (the OpenFaaS names); a flag \
             beats its env var, an empty env var counts as unset.",
        )
        .disable_version_flag(true)
        .max_term_width(100)
        .arg(
            Arg::new("version")
                .long("version")
                .short('V')
                .action(ArgAction::SetTrue)
                .help("print the version and exit (also -version)"),
        )
        .arg(
            Arg::new("run_healthcheck")
                .long("run-healthcheck")
                .action(ArgAction::SetTrue)
                .help("exit 0 if the lock file exists (or, with suppress_lock, /_/health answers 200), else 1 (also -run-healthcheck)"),
        );
    for s in Heading::ALL.iter().flat_map(|h| h.settings()) {
        let help = format!(
            "{} [env: {}] [default: {}]",
            s.help,
            s.env.join(", "),
            s.default
        );
        let arg = Arg::new(s.id)
            .long(s.flag)
            .help(help)
            .help_heading(s.heading.title());
        let arg = match s.kind {
            // Hyphen values reach config, which names the setting (`--exec-timeout -1`).
            Kind::Value => arg
                .value_name("VALUE")
                .allow_hyphen_values(true)
                .action(ArgAction::Set),
            Kind::Bool => arg
                .value_name("BOOL")
                .num_args(0..=1)
                .default_missing_value("true")
                .action(ArgAction::Set),
            Kind::List => arg.value_name("NAME").action(ArgAction::Append),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Flags that take a value of their own, so the argument after them is that value.
fn takes_value(name: &str) -> Option<Kind> {
    SETTINGS.iter().find(|s| s.flag == name).map(|s| s.kind)
}

/// Whether `name` is one of our long flags (without dashes).
fn is_long_flag(name: &str) -> bool {
    name == "version" || name == "run-healthcheck" || name == "help" || takes_value(name).is_some()
}

/// Rewrites Go-style single-dash long flags (`-fprocess cat`, `-port=8080`, `-version`:
/// how the OpenFaaS watchdogs spell them) to `--`, leaving values and short flags
/// alone. Returns the first bare word that is no flag's value: fwatchdog takes no
/// positional arguments, and someone who typed `fwatchdog "wc -c"` meant `--fprocess`.
fn normalise(args: Vec<String>) -> (Vec<String>, Option<String>) {
    let mut out = Vec::with_capacity(args.len());
    let mut positional = None;
    // What the previous flag expects of the next argument.
    let mut pending: Option<Kind> = None;
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    for arg in iter {
        match pending.take() {
            // `--port 8080`, `--exec-timeout -1`: the value, whatever it looks like.
            Some(Kind::Value | Kind::List) => {
                out.push(arg);
                continue;
            }
            // `--suppress-lock true`: clap takes a following non-flag word as the value.
            Some(Kind::Bool) if !arg.starts_with('-') => {
                out.push(arg);
                continue;
            }
            _ => {}
        }
        let long = if let Some(rest) = arg.strip_prefix("--") {
            Some(rest)
        } else if let Some(rest) = arg.strip_prefix('-') {
            let name = rest.split('=').next().unwrap_or(rest);
            (name.len() > 1 && is_long_flag(name)).then_some(rest)
        } else {
            None
        };
        match long {
            Some(rest) => {
                let name = rest.split('=').next().unwrap_or(rest);
                if !rest.contains('=') && name != "help" {
                    // An unknown flag (`--prot 9000`) is clap's to report, with its
                    // suggestion; its value is not a stray word.
                    pending = Some(takes_value(name).unwrap_or(Kind::Value))
                        .filter(|_| !matches!(name, "version" | "run-healthcheck"));
                }
                out.push(format!("--{rest}"));
            }
            None => {
                if !arg.starts_with('-') && positional.is_none() {
                    positional = Some(arg.clone());
                }
                out.push(arg);
            }
        }
    }
    (out, positional)
}

/// `a, b,,c` → `[a, b, c]`. A value that names nothing (`" "`, `","`) stays whole, so
/// that config can refuse it by its spelling instead of reading it as "unset".
fn split_list(v: String) -> Vec<String> {
    let names: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        vec![v]
    } else {
        names
    }
}

/// Parses the command line and the environment (through `env`, so tests need not touch
/// the process environment).
pub fn parse<I>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Action, clap::Error>
where
    I: IntoIterator<Item = String>,
{
    let (args, positional) = normalise(args.into_iter().collect());
    if let Some(word) = positional {
        return Err(command().error(
            clap::error::ErrorKind::UnknownArgument,
            format!(
                "unexpected argument '{word}': fwatchdog takes the function with --fprocess \
                 (fwatchdog --fprocess '{word}') or the environment variable fprocess"
            ),
        ));
    }
    // No flags at all, as in most images (settings come from the environment): the
    // parser, a third of the instructions of a start, has nothing to say.
    let matches = match args.len() {
        0 | 1 => None,
        _ => Some(command().try_get_matches_from(args)?),
    };
    let flag = |id: &str| matches.as_ref().is_some_and(|m| m.get_flag(id));
    if flag("version") {
        return Ok(Action::Version);
    }
    let mut raw = Raw::default();
    for s in SETTINGS {
        let from_flag: Option<Vec<String>> = matches
            .as_ref()
            .and_then(|m| m.get_many::<String>(s.id))
            .map(|vals| vals.cloned().collect());
        let value = match from_flag {
            Some(values) => Some(RawValue {
                values,
                source: Source::Flag(s.flag),
            }),
            None => s
                .env
                .iter()
                .rev()
                .find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
                .map(|(name, v)| RawValue {
                    values: match s.kind {
                        Kind::List => split_list(v),
                        _ => vec![v],
                    },
                    source: Source::Env(name),
                }),
        };
        if let Some(v) = value {
            raw.values.push((s.id, v));
        }
    }
    for name in CONTEXT_ENV {
        if let Some(v) = env(name).filter(|v| !v.is_empty()) {
            raw.context.push((name, v));
        }
    }
    for (name, advice) in IGNORED_ENV {
        if env(name).is_some_and(|v| !v.is_empty()) {
            raw.ignored.push((name, advice));
        }
    }
    if flag("run_healthcheck") {
        Ok(Action::RunHealthcheck(raw))
    } else {
        Ok(Action::Run(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `parse` skips the parser when there are no arguments: that is only right while
    /// the parser, given none, sets no flag and no value (no `default_value` on an arg).
    #[test]
    fn no_arguments_is_what_the_parser_makes_of_none() {
        let m = command()
            .try_get_matches_from(["fwatchdog"])
            .expect("no arguments parse");
        assert!(!m.get_flag("version") && !m.get_flag("run_healthcheck"));
        for s in SETTINGS {
            assert!(m.get_many::<String>(s.id).is_none(), "{} has a value", s.id);
        }
        let raw = run(&[], &[("port", "9000")]);
        let port = raw.get("port").expect("port from the environment");
        assert_eq!(port.values, ["9000"]);
        assert!(matches!(port.source, Source::Env("port")));
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Raw {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args =
            std::iter::once("fwatchdog".to_owned()).chain(args.iter().map(|a| a.to_string()));
        match parse(args, |k| env.get(k).cloned()).expect("parse") {
            Action::Run(raw) => raw,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn flag_beats_env() {
        let raw = run(&["--port", "9000"], &[("port", "7000")]);
        let v = raw.get("port").expect("port");
        assert_eq!(v.values, ["9000"]);
        assert_eq!(v.source, Source::Flag("port"));
    }

    #[test]
    fn last_listed_alias_wins() {
        let raw = run(&[], &[("fprocess", "cat"), ("function_process", "wc -c")]);
        let v = raw.get("fprocess").expect("fprocess");
        assert_eq!(v.values, ["wc -c"]);
        assert_eq!(v.source, Source::Env("function_process"));
    }

    #[test]
    fn openfaas_port_beats_the_platform_port() {
        let raw = run(&[], &[("PORT", "9000")]);
        let v = raw.get("port").expect("PORT");
        assert_eq!(
            (v.values.as_slice(), &v.source),
            (&["9000".to_owned()][..], &Source::Env("PORT"))
        );
        let raw = run(&[], &[("PORT", "9000"), ("port", "7000")]);
        assert_eq!(raw.get("port").expect("port").values, ["7000"]);
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let raw = run(
            &[],
            &[("port", ""), ("function_process", ""), ("fprocess", "cat")],
        );
        assert!(raw.get("port").is_none());
        assert_eq!(raw.get("fprocess").expect("fprocess").values, ["cat"]);
    }

    #[test]
    fn bare_bool_flag_means_true() {
        let raw = run(&["--suppress-lock"], &[]);
        assert_eq!(raw.get("suppress_lock").expect("set").values, ["true"]);
        let raw = run(&["--suppress-lock=false"], &[]);
        assert_eq!(raw.get("suppress_lock").expect("set").values, ["false"]);
    }

    #[test]
    fn list_from_flags_and_env() {
        let raw = run(&["--api-key-secret", "a", "--api-key-secret", "b"], &[]);
        assert_eq!(raw.get("api_key_secret").expect("set").values, ["a", "b"]);
        let raw = run(&[], &[("api_key_secret", "a, b,,c")]);
        assert_eq!(
            raw.get("api_key_secret").expect("set").values,
            ["a", "b", "c"]
        );
        for names_nothing in [" ", ",", " , ", "\t"] {
            let raw = run(&[], &[("api_key_secret", names_nothing)]);
            assert_eq!(
                raw.get("api_key_secret").expect("present").values,
                [names_nothing],
                "kept whole so config can refuse it"
            );
        }
    }

    #[test]
    fn go_style_single_dash_flags() {
        let args = ["fwatchdog".to_owned(), "-version".to_owned()];
        assert!(matches!(parse(args, |_| None), Ok(Action::Version)));
        let args = ["fwatchdog".to_owned(), "-run-healthcheck".to_owned()];
        assert!(matches!(
            parse(args, |_| None),
            Ok(Action::RunHealthcheck(_))
        ));
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        let args = |a: &[&str]| -> Vec<String> {
            std::iter::once("fwatchdog")
                .chain(a.iter().copied())
                .map(str::to_owned)
                .collect()
        };
        let (out, stray) = normalise(args(&[
            "-fprocess",
            "-port",
            "-port",
            "8080",
            "-suppress-lock",
            "-h",
            "-V",
            "-x",
        ]));
        // `-port` after -fprocess is fprocess's value, left alone.
        assert_eq!(
            out[1..],
            [
                "--fprocess",
                "-port",
                "--port",
                "8080",
                "--suppress-lock",
                "-h",
                "-V",
                "-x"
            ]
        );
        assert_eq!(stray, None);
        let (out, _) = normalise(args(&["--exec-timeout", "-1", "-mode=http"]));
        assert_eq!(out[1..], ["--exec-timeout", "-1", "--mode=http"]);
        let (_, stray) = normalise(args(&["--suppress-lock", "true", "wc -c"]));
        assert_eq!(stray.as_deref(), Some("wc -c"));
        let (_, stray) = normalise(args(&["--no-such", "9000"]));
        assert_eq!(stray, None, "an unknown flag's value is clap's to report");
    }

    #[test]
    fn help_names_every_env_var_and_default() {
        let help = command().render_long_help().to_string();
        for s in SETTINGS {
            assert!(
                help.contains(&format!("--{}", s.flag)),
                "{} missing",
                s.flag
            );
            for e in s.env {
                assert!(help.contains(e), "env {e} missing");
            }
            assert!(
                help.contains(&format!("[default: {}]", s.default)),
                "default of {}",
                s.id
            );
        }
    }
}
