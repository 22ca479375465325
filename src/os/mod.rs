//! The operating-system layer: starting handlers, process groups, reaping, signals.
//!
//! This is the only module allowed `unsafe` (the crate denies it everywhere else, and a
//! test fails if an `allow(unsafe_code)` appears outside this folder): the few calls
//! that the safe wrappers of `nix` and the standard library do not cover — `posix_spawn`
//! with every signal reset, `sigaction` at startup, the raw `rt_sigaction` for the
//! real-time signals, the `sock_diag` query that tells which FastCGI worker holds a
//! connection, mimalloc's `mi_collect` in the static builds — live here, each behind a
//! safe function whose arguments cannot make it unsound.

#![allow(unsafe_code)]

pub mod limits;
pub mod memory;
pub mod peer;
pub mod process;
pub mod signal;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The crate denies `unsafe_code`; only this folder may lift that.
    #[test]
    fn unsafe_code_is_allowed_only_in_os() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            manifest.contains("unsafe_code = \"deny\"")
                || manifest.contains("unsafe_code = \"forbid\""),
            "Cargo.toml no longer denies unsafe_code"
        );
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let os = root.join("src").join("os");
        let offenders: Vec<_> = files
            .iter()
            .filter(|f| !f.starts_with(&os))
            .filter(|f| {
                std::fs::read_to_string(f)
                    .expect("read source")
                    .contains("unsafe_code")
            })
            .collect();
        assert!(files.len() > 10, "walked too few files: {files:?}");
        assert!(
            offenders.is_empty(),
            "unsafe_code is lifted outside src/os: {offenders:?}"
        );
    }
}
