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

    /// The module a file under `src/` is, as path segments: `runner/fastcgi/mod.rs` is
    /// `runner::fastcgi`, `lib.rs` the crate root (no segments).
    fn module_of(src: &Path, file: &Path) -> Vec<String> {
        let rel = file
            .strip_prefix(src)
            .expect("under src")
            .with_extension("");
        let mut segs: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if segs.last().is_some_and(|s| s == "mod") || segs == ["lib"] || segs == ["main"] {
            segs.pop();
        }
        segs
    }

    /// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e`.
    fn expand(tree: &str) -> Vec<String> {
        let tree = tree.trim();
        let Some(open) = tree.find('{') else {
            let path = tree.split(" as ").next().unwrap_or(tree);
            return vec![path.split_whitespace().collect()];
        };
        let (prefix, rest) = (&tree[..open], &tree[open + 1..]);
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(expand(&format!("{prefix}{}", rest[start..i].trim())));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand(&format!("{prefix}{}", rest[start..i].trim())));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out
    }

    /// The crate modules a file's code refers to (`use` trees and inline `crate::`,
    /// `super::`, `self::` paths, tests and comments left out): each path resolved from
    /// the file's module `at`, cut to the longest prefix that is a module in `known`.
    fn refers(
        at: &[String],
        file: &Path,
        known: &std::collections::BTreeSet<Vec<String>>,
    ) -> std::collections::BTreeSet<Vec<String>> {
        let text = std::fs::read_to_string(file).expect("read source");
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let is_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let mut paths = Vec::new();
        for (i, _) in code.match_indices("use ") {
            if code[..i].ends_with(|c: char| is_path(c)) {
                continue;
            }
            paths.extend(expand(code[i + 4..].split(';').next().unwrap_or_default()));
        }
        for root in ["crate::", "super::", "self::"] {
            for (i, _) in code.match_indices(root) {
                if !code[..i].ends_with(|c: char| is_path(c)) {
                    paths.push(code[i..].chars().take_while(|c| is_path(*c)).collect());
                }
            }
        }
        let mut found = std::collections::BTreeSet::new();
        for path in paths {
            let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let mut full: Vec<String> = at.to_vec();
            match segs.first() {
                Some(&"crate") => {
                    full.clear();
                    segs.remove(0);
                }
                Some(&"super") | Some(&"self") => {
                    while let Some(s @ (&"super" | &"self")) = segs.first() {
                        if *s == "super" {
                            full.pop();
                        }
                        segs.remove(0);
                    }
                }
                Some(first) if known.contains(&[at, &[first.to_string()]].concat()) => {}
                _ => continue, // std, a dependency, or a name in scope
            }
            full.extend(segs.iter().map(|s| s.to_string()));
            while !known.contains(&full) {
                full.pop();
            }
            found.insert(full);
        }
        found
    }

    /// No two modules side by side (the children of one module, each with everything
    /// inside it) import each other, directly or around a circle: a circle means neither
    /// can be read, tested or moved without the other.
    #[test]
    fn no_import_circles() {
        use std::collections::{BTreeMap, BTreeSet};
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut list = Vec::new();
        files(&src, &mut list);
        // `tests.rs` files are `#[cfg(test)] mod tests;`.
        list.retain(|f| !f.ends_with("tests.rs"));
        let modules: BTreeMap<Vec<String>, std::path::PathBuf> =
            list.into_iter().map(|f| (module_of(&src, &f), f)).collect();
        let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
        let edges: Vec<(Vec<String>, Vec<String>)> = modules
            .iter()
            .flat_map(|(m, f)| refers(m, f, &known).into_iter().map(|to| (m.clone(), to)))
            .collect();
        let mut circles = Vec::new();
        for parent in &known {
            // child of `parent` → the children of `parent` it imports
            let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            let child = |m: &'_ Vec<String>| -> Option<usize> {
                (m.len() > parent.len() && m.starts_with(parent)).then_some(parent.len())
            };
            for (from, to) in &edges {
                if let (Some(i), Some(j)) = (child(from), child(to)) {
                    if from[i] != to[j] {
                        graph.entry(&from[i]).or_default().insert(&to[j]);
                    }
                }
            }
            // A module that imports another that, step by step, imports it back.
            for &start in graph.keys() {
                let mut seen = BTreeSet::new();
                let mut todo: Vec<Vec<&str>> = vec![vec![start]];
                while let Some(trail) = todo.pop() {
                    let last = trail[trail.len() - 1];
                    for &next in graph.get(last).into_iter().flatten() {
                        // Each circle once, from its first module.
                        if next == start && trail.iter().all(|m| start <= *m) {
                            let mut circle = trail.clone();
                            circle.push(start);
                            circles.push(format!("{}: {}", parent.join("::"), circle.join(" → ")));
                        } else if next != start && seen.insert(next) {
                            todo.push([trail.clone(), vec![next]].concat());
                        }
                    }
                }
            }
        }
        assert!(circles.is_empty(), "import circles: {circles:#?}");
        assert!(edges.len() > 100, "only {} imports found", edges.len());
    }

    #[test]
    fn the_circle_check_sees_use_trees_and_paths() {
        assert_eq!(
            expand("super::{a, b::{c, D as E}}"),
            ["super::a", "super::b::c", "super::b::D"]
        );
        assert_eq!(expand("crate::x::Y as Z"), ["crate::x::Y"]);
    }
}
