//! What the service-level targets share: a runtime, a static folder with traps, and
//! configurations built the way `main` builds them (env → `cli::parse` → `Config`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fwatchdog::cli::{parse, Action};
use fwatchdog::config::Config;
use fwatchdog::metrics::Metrics;
use fwatchdog::runner::{files::Files, fork::Fork};
use fwatchdog::service::{Runner, Shared};

/// Every file outside the served folder, and every hidden file inside it (`.env`,
/// `.git/config`), holds this; no response may ever contain it.
pub const SECRET: &[u8] = b"SECRET-7f3a9c-OUTSIDE-STATIC-PATH";
/// The API key of the protected configuration.
pub const KEY: &str = "fuzz-key-2b7e151628aed2a6";

/// One multi-thread runtime for the whole fuzzing process, with the reaper running.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async { fwatchdog::os::process::start_reaper().expect("reaper") });
        rt
    })
}

/// `<tmp>/fwatchdog-fuzz-<pid>/`: `public/` (served) and `secret/` beside it, linked to
/// from inside `public/` in every way that must not work.
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("fwatchdog-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let public = base.join("public");
        let secret = base.join("secret");
        for d in [
            public.join("sub/deeper"),
            public.join("empty"),
            secret.clone(),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for f in ["key", "index.html", "a.txt"] {
            std::fs::write(secret.join(f), SECRET).expect("write");
        }
        std::fs::write(base.join("beside.txt"), SECRET).expect("write");
        std::fs::write(public.join("index.html"), "<h1>home</h1>\n").expect("write");
        std::fs::write(public.join("a.txt"), "inside\n").expect("write");
        std::fs::write(public.join("sub/b.txt"), "b\n").expect("write");
        std::fs::write(public.join("sub/deeper/c.txt"), "c\n").expect("write");
        // Hidden files: 404 unless static_hidden_files (off here); .well-known is served.
        for d in [".git", "sub/.hidden", ".well-known"] {
            std::fs::create_dir_all(public.join(d)).expect("mkdir");
        }
        for f in [".env", ".git/config", "sub/.hidden/x", "sub/.htpasswd"] {
            std::fs::write(public.join(f), SECRET).expect("write");
        }
        std::fs::write(public.join(".well-known/x"), "well known\n").expect("write");
        let links: &[(&str, PathBuf)] = &[
            ("key", secret.join("key")),
            ("out", secret.clone()),
            ("rel", PathBuf::from("../secret")),
            ("up", PathBuf::from("..")),
            ("sub/deeper/back", PathBuf::from("../../../beside.txt")),
            ("empty/index.html", secret.join("index.html")),
            ("inside", public.join("a.txt")),
            ("loop", PathBuf::from("loop")),
        ];
        for (name, target) in links {
            symlink(target, public.join(name)).expect("symlink");
        }
        std::fs::write(base.join("api-key"), format!("{KEY}\n")).expect("write");
        base
    })
}

/// A configuration from environment variables, as `main` reads them.
pub fn config(env: &[(&str, String)]) -> Config {
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Ok(Action::Run(raw)) = parse(["fwatchdog".to_owned()], |k| {
        env.get(k).map(|v| v.to_string())
    }) else {
        panic!("env parsing never fails");
    };
    Config::from_raw(&raw).expect("fuzz configuration is valid")
}

/// The request chain for a configuration, with the runner `server::run` would pick.
pub fn shared(cfg: Config) -> Arc<Shared> {
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new();
    let runner = if cfg.mode.is_fork() {
        Runner::Fork(Fork::new(cfg.clone(), metrics.clone()))
    } else {
        Runner::Files(Files::new(&cfg))
    };
    Shared::new(cfg, metrics, runner)
}

pub fn static_config() -> Config {
    let public = fixture().join("public");
    config(&[
        ("mode", "static".into()),
        ("static_path", public.display().to_string()),
        ("suppress_lock", "true".into()),
    ])
}
