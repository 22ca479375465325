use std::time::Duration;

use super::grammar::{parse_threads, MAX_THREADS};
use super::*;
use crate::duration::format_duration;

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
        "startup_timeout",
        "upstream_stop_grace",
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
                    let l = &c.limits;
                    let max = l.max_inflight.unwrap_or(0);
                    prop_assert!(max <= MAX_SLOTS && l.max_queue <= MAX_SLOTS);
                    let _ = crate::queue::Queue::new(max, l.max_queue, l.queue_timeout);
                    let now = std::time::Instant::now();
                    for d in [
                        c.timeouts.read,
                        c.timeouts.write,
                        c.timeouts.exec.unwrap_or_default(),
                        c.timeouts.exec_kill_grace,
                        c.timeouts.healthcheck_interval,
                        c.timeouts.startup.unwrap_or_default(),
                        c.timeouts.upstream_stop_grace,
                        c.limits.queue_timeout,
                        c.auth.secret_reload_interval.unwrap_or_default(),
                    ] {
                        let _ = now + d + d;
                        let _ = tokio::time::Instant::now() + d;
                    }
                    prop_assert!(c.logs.buffer_size.is_none_or(|n| n <= MAX_LOG_LINE));
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
    assert_eq!(c.listen.max_connections, 7);
    let c = config(&[("fprocess", "cat")]).expect("default");
    assert_eq!(c.listen.max_connections, DEFAULT_MAX_CONNECTIONS);
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
    assert_eq!(c.auth.secret_reload_interval, None);
    let c = config(&[("fprocess", "cat"), ("secret_reload_interval", "1ms")]).expect("1ms");
    assert_eq!(
        c.auth.secret_reload_interval,
        Some(Duration::from_millis(1))
    );
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
    assert!(c.fork_io.combine_output);
    assert_eq!(c.timeouts.exec, None);
    assert_eq!(c.fork_io.content_type, None);
    assert_eq!(c.limits.max_body_bytes, Some(64 << 20));
    let c = config(&[("fprocess", "cat")]).expect("config");
    assert!(!c.fork_io.combine_output);
    assert_eq!(c.timeouts.exec, Some(Duration::from_secs(30)));
    assert_eq!(c.limits.max_body_bytes, None);
    assert_eq!(c.timeouts.healthcheck_interval, c.timeouts.write);
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

/// The value `--help` shows as a setting's default in `mode`: `A (m1/m2: B)` is B in
/// modes m1 and m2, A elsewhere. `None` when what it shows cannot be typed as a value.
fn shown_default(setting: &crate::cli::Setting, mode: &str) -> Option<String> {
    let shown = match setting.default.split_once(" (") {
        None => setting.default,
        Some((general, rest)) => match rest.trim_end_matches(')').split_once(": ") {
            Some((modes, v)) if modes.split('/').any(|m| m == mode) => v,
            _ => general,
        },
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    match shown {
        "—" | "unlimited" | "the request's" => None,
        "number of CPUs" => Some(cpus.to_string()),
        // Another setting's value: its default here.
        "write_timeout" => Some("30s".to_owned()),
        "healthcheck_interval + 5s" => Some("35s".to_owned()),
        v => Some(v.replace(" MiB", "Mi")),
    }
}

/// A configuration with the `warnings` left out: a setting given at its default may
/// be worth a warning (a jwt_auth companion without jwt_auth) yet changes nothing.
fn effective(env: &[(&str, &str)]) -> String {
    let mut c = config(env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
    c.warnings.clear();
    // Whether `mode` was given only adds a startup line; the mode is what counts.
    c.mode_set = true;
    format!("{c:?} {}", c.summary())
}

#[test]
fn every_default_help_shows_is_the_default_a_configuration_gets() {
    let secrets = std::env::temp_dir().join(format!("fwatchdog-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("key"), "k3y-for-the-defaults-test").expect("secret");
    let secrets_dir = secrets.display().to_string();
    let auth: &[(&str, &str)] = &[
        ("api_key_secret", "key"),
        ("secrets_dir", &secrets_dir),
        ("jwt_auth", "true"),
        ("OPENFAAS_NAME", "fn"),
        ("OPENFAAS_NAMESPACE", "ns"),
    ];
    let mut checked = 0;
    for (mode, _) in Mode::ALL {
        let mut plain: Vec<(&str, &str)> = vec![("fprocess", "cat")];
        match *mode {
            "streaming" => {}
            "http" => plain.extend([("mode", "http"), ("upstream_url", "http://127.0.0.1:1")]),
            m => plain.push(("mode", m)),
        }
        let with_auth: Vec<(&str, &str)> = plain.iter().chain(auth).copied().collect();
        for base in [&plain, &with_auth] {
            let unset = effective(base);
            for setting in crate::cli::SETTINGS {
                if base.iter().any(|(k, _)| *k == setting.id)
                    || (setting.id == "pool_size" && *mode != "fastcgi")
                {
                    continue; // set by the base, or used (and defaulted) in fastcgi only
                }
                if setting.id == "secrets_dir" {
                    let dirs = DEFAULT_SECRETS_DIRS.join(", then ");
                    assert_eq!(setting.default, dirs);
                    continue;
                }
                let Some(value) = shown_default(setting, mode) else {
                    continue;
                };
                let mut env = base.clone();
                env.push((setting.id, &value));
                assert_eq!(
                    effective(&env),
                    unset,
                    "{mode} mode: {}={value:?} (the default --help shows) differs from unset",
                    setting.id
                );
                checked += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&secrets);
    assert!(checked > 200, "only {checked} defaults checked");
}
