//! fwatchdog: the function watchdog that sits as a container's ENTRYPOINT.
//!
//! The life of a request: [`server`] accepts a connection and hands each request to
//! [`service::Shared::handle`], which answers health probes itself, checks the API key
//! ([`auth`]), takes a concurrency slot ([`queue`]), and passes the request to a runner
//! ([`runner`]: `fork`, `proxy`, `files`, `fastcgi`). A runner that cannot give the
//! function's answer gives a [`runner::Failure`]'s, which always says how long it took.
//! In the fork modes the runner starts the handler through [`os::process`], which owns
//! every `wait` so that exit statuses are exact even when we are PID 1.
//!
//! The life of the process: `main` parses [`cli`] into a validated [`config::Config`]
//! (exit 2 on anything invalid); [`server::run`] binds, starts the mode's
//! [`backend::Backend`] (http mode's upstream, the FastCGI workers or server) and waits
//! until it is ready, writes the lock file, serves, and on SIGTERM ([`os::signal`]) or the
//! backend's death drains, stops the backend, and returns an [`exit::Exit`] code.
//!
//! Imports run one way: [`server`] → [`service`] → [`runner`] → the leaf modules
//! ([`body`], [`header`], [`os`], [`queue`], [`config`] → [`auth`]'s key loader, ...),
//! and [`server`] →
//! [`backend`] → [`runner`]'s pipes and its [`runner::fastcgi::Pool`] view of the
//! workers. Nothing below `service` knows it, and no runner knows the backend: health
//! learns that the backend is ready through a [`backend::Ready`] handle whose receiver
//! the server gives the chain.

pub mod auth;
pub mod backend;
pub mod body;
pub mod cli;
pub mod config;
pub mod conn;
pub mod duration;
pub mod exit;
pub mod head;
pub mod header;
pub mod healthcheck;
pub mod logging;
pub mod metrics;
pub mod os;
pub mod queue;
pub mod runner;
pub mod server;
pub mod service;

/// Imports run one way: a test, so a new circle fails here instead of in a review.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// The `crate::<module>` paths a file under `src/` uses, comments and tests left out.
    fn uses(file: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        code.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(|l| l.match_indices("crate::").map(move |(i, _)| &l[i + 7..]))
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect()
            })
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn lower_modules_never_import_the_ones_above_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // module (file or folder) → modules it must not import
        let rules: &[(&str, &[&str])] = &[
            (
                "auth",
                &["config", "service", "server", "runner", "backend"],
            ),
            ("runner", &["service", "server", "backend"]),
            ("backend", &["service", "server"]),
            ("os", &["service", "server", "runner", "backend", "auth"]),
            // config may ask os::process where a program is (the same lookup as the
            // one that runs it), nothing above it.
            ("config", &["service", "server", "runner", "backend"]),
            ("queue.rs", &["service", "server"]),
            ("header.rs", &["service", "server", "runner", "config"]),
            (
                "head.rs",
                &["service", "server", "runner", "config", "backend"],
            ),
            ("duration.rs", &["config"]),
        ];
        let mut broken = Vec::new();
        for (module, banned) in rules {
            let mut list = Vec::new();
            let path = src.join(module);
            if path.is_dir() {
                files(&path, &mut list);
            } else if path.exists() {
                list.push(path);
            } else {
                list.push(src.join(format!("{module}.rs")));
            }
            for file in list {
                for used in uses(&file) {
                    if banned.contains(&used.as_str()) {
                        broken.push(format!("{} uses crate::{used}", file.display()));
                    }
                }
            }
        }
        assert!(
            broken.is_empty(),
            "imports against the layering: {broken:#?}"
        );
    }
}
