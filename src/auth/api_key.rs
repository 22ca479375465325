//! API keys from orchestrator-mounted secrets, checked in constant time (§7).
//!
//! The pattern this replaces: every OpenFaaS function read
//! `/var/openfaas/secrets/<name>` and compared the header with `==`, which leaks timing
//! and lets an empty header through when the secret file is empty. Here the watchdog
//! loads the keys once at startup (refusing to start when any is missing), re-reads the
//! files on an interval so a rotated secret applies without a restart, and keeps only
//! HMAC-SHA-256 digests of the keys under a per-process random key. A presented value is
//! digested the same way and compared against every digest with `subtle`, so the time
//! taken depends neither on where the values differ nor on the key's length.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::config::ConfigError;

type Digest = [u8; 32];

/// A key as read from a secret file. It is digested at once and its bytes wiped; its
/// `Debug` never prints it.
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // A volatile write so the wipe is not optimised away.
            let p: *mut u8 = b;
            #[allow(unsafe_code)]
            // SAFETY: `p` comes from a live `&mut u8`.
            unsafe {
                std::ptr::write_volatile(p, 0)
            };
        }
    }
}

/// Splits a secret file into keys: one per line, trimmed, empty lines ignored.
pub fn parse_keys(content: &[u8]) -> Vec<Key> {
    content
        .split(|b| *b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty())
        .map(|line| Key(line.to_vec()))
        .collect()
}

/// One named secret and where it was found.
struct Secret {
    name: String,
    path: PathBuf,
    digests: Vec<Digest>,
    /// Set after a failed reload has been logged, so it is logged once.
    warned: bool,
}

struct Inner {
    header: HeaderName,
    forward: bool,
    mac_key: [u8; 32],
    secrets: Mutex<Vec<Secret>>,
    /// The digests of every key of every secret; swapped whole on reload.
    current: RwLock<Arc<Vec<Digest>>>,
}

/// The set of valid API keys and the header they arrive in. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("header", &self.inner.header)
            .field("secrets", &self.names())
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Why a secret could not be used; never includes its content.
fn read_secret(path: &Path) -> Result<Vec<Key>, String> {
    match std::fs::read(path) {
        Ok(content) => {
            let keys = parse_keys(&content);
            if keys.is_empty() {
                Err("holds no key (empty or whitespace only)".into())
            } else {
                Ok(keys)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

impl ApiKeys {
    /// Finds and reads every named secret. Fails closed: any secret missing, unreadable
    /// or empty is an error that lists every path tried.
    pub fn load(
        names: &[String],
        dirs: &[PathBuf],
        header: HeaderName,
        forward: bool,
    ) -> Result<ApiKeys, ConfigError> {
        let mut mac_key = [0u8; 32];
        getrandom::getrandom(&mut mac_key).map_err(|e| {
            ConfigError(format!(
                "cannot get random bytes for the API key check: {e}"
            ))
        })?;
        let mut inner = Inner {
            header,
            forward,
            mac_key,
            secrets: Mutex::new(Vec::new()),
            current: RwLock::new(Arc::new(Vec::new())),
        };
        let mut secrets = Vec::new();
        let mut failures = Vec::new();
        for name in names {
            let mut tried = Vec::new();
            let mut found = None;
            for dir in dirs {
                let path = dir.join(name);
                match std::fs::symlink_metadata(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tried.push(format!("{} (not found)", path.display()));
                    }
                    _ => {
                        // It exists: this is the one, usable or not.
                        match read_secret(&path) {
                            Ok(keys) => found = Some((path, keys)),
                            Err(why) => tried.push(format!("{} ({why})", path.display())),
                        }
                        break;
                    }
                }
            }
            match found {
                Some((path, keys)) => {
                    let digests = keys.iter().map(|k| mac(&inner.mac_key, &k.0)).collect();
                    secrets.push(Secret {
                        name: name.clone(),
                        path,
                        digests,
                        warned: false,
                    });
                }
                None => failures.push(format!(
                    "API key secret {name:?}: tried {}",
                    tried.join(", ")
                )),
            }
        }
        if !failures.is_empty() {
            return Err(ConfigError(format!(
                "{}; secrets must exist when the function is deployed (refusing to start unprotected)",
                failures.join("; ")
            )));
        }
        let all: Vec<Digest> = secrets
            .iter()
            .flat_map(|s| s.digests.iter().copied())
            .collect();
        inner.current = RwLock::new(Arc::new(all));
        inner.secrets = Mutex::new(secrets);
        Ok(ApiKeys {
            inner: Arc::new(inner),
        })
    }

    pub fn header(&self) -> &HeaderName {
        &self.inner.header
    }

    pub fn forward(&self) -> bool {
        self.inner.forward
    }

    pub fn names(&self) -> Vec<String> {
        lock(&self.inner.secrets)
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// `(name, path)` of each secret, for the startup log.
    pub fn sources(&self) -> Vec<(String, PathBuf)> {
        lock(&self.inner.secrets)
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect()
    }

    /// True when the key header is present exactly once, non-empty, and equal to one of
    /// the keys. Every key is compared; the result is read once, at the end.
    pub fn check(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.inner.header).iter();
        let value = match (values.next(), values.next()) {
            (Some(v), None) if !v.is_empty() => v,
            _ => return false,
        };
        let presented = mac(&self.inner.mac_key, value.as_bytes());
        let keys = self
            .inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut ok = Choice::from(0u8);
        for key in keys.iter() {
            ok |= presented.ct_eq(key);
        }
        bool::from(ok)
    }

    /// Re-reads every secret file (following symlinks, so Kubernetes' atomic `..data`
    /// swap is seen). A file that is now missing, unreadable or empty keeps its last good
    /// keys and is warned about once until it recovers.
    pub fn reload(&self) {
        let mut secrets = lock(&self.inner.secrets);
        let mut changed = false;
        for s in secrets.iter_mut() {
            match read_secret(&s.path) {
                Ok(keys) => {
                    let digests: Vec<Digest> = keys
                        .iter()
                        .map(|k| mac(&self.inner.mac_key, &k.0))
                        .collect();
                    if digests != s.digests {
                        tracing::info!(
                            "API key secret {} reloaded from {}",
                            s.name,
                            s.path.display()
                        );
                        s.digests = digests;
                        changed = true;
                    }
                    s.warned = false;
                }
                Err(why) => {
                    if !s.warned {
                        tracing::warn!(
                            "API key secret {} could not be reloaded from {}: {why}; keeping the last good keys",
                            s.name,
                            s.path.display()
                        );
                        s.warned = true;
                    }
                }
            }
        }
        if changed {
            let all: Vec<Digest> = secrets
                .iter()
                .flat_map(|s| s.digests.iter().copied())
                .collect();
            *self
                .inner
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
        }
    }

    /// Re-reads the secrets every `interval` for as long as the process lives.
    pub fn spawn_reloader(&self, interval: Duration) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let k = keys.clone();
                // File reads block; keep them off the request threads' hot path.
                let _ = tokio::task::spawn_blocking(move || k.reload()).await;
            }
        });
    }
}

fn mac(key: &[u8; 32], value: &[u8]) -> Digest {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(value);
    m.finalize().into_bytes().into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fwatchdog-auth-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write");
        }
        dir
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("random");
        u64::from_le_bytes(b)
    }

    fn keys(dir: &Path, names: &[&str]) -> Result<ApiKeys, ConfigError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        ApiKeys::load(
            &names,
            &[dir.to_path_buf()],
            HeaderName::from_static("x-api-key"),
            false,
        )
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-api-key", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = parse_keys(b"hunter2\n");
        let shown = format!("{k:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn api_keys_debug_shows_names_not_keys() {
        let dir = dir_with(&[("s", "topsecretvalue\n")]);
        let k = keys(&dir, &["s"]).expect("load");
        let shown = format!("{k:?}");
        assert!(
            shown.contains("\"s\"") && !shown.contains("topsecretvalue"),
            "{shown}"
        );
    }

    #[test]
    fn parses_one_key_per_line_trimmed() {
        let k = parse_keys(b"  a1 \n\n\tb2\r\n   \n");
        let v: Vec<&[u8]> = k.iter().map(|k| k.0.as_slice()).collect();
        assert_eq!(v, [b"a1".as_slice(), b"b2".as_slice()]);
    }

    #[test]
    fn accepts_any_of_several_keys() {
        let dir = dir_with(&[("a", "one\ntwo\n"), ("b", "three")]);
        let k = keys(&dir, &["a", "b"]).expect("load");
        for good in ["one", "two", "three"] {
            assert!(k.check(&headers(&[good])), "{good}");
        }
        for bad in ["on", "one ", "onetwo", "x", "ONE"] {
            assert!(!k.check(&headers(&[bad])), "{bad:?}");
        }
    }

    #[test]
    fn rejects_missing_empty_and_duplicate_headers() {
        let dir = dir_with(&[("a", "one")]);
        let k = keys(&dir, &["a"]).expect("load");
        assert!(!k.check(&headers(&[])));
        assert!(!k.check(&headers(&[""])));
        assert!(!k.check(&headers(&["one", "one"])));
    }

    #[test]
    fn fails_closed_listing_every_path() {
        let a = dir_with(&[("empty", "  \n\n"), ("ok", "k")]);
        let b = dir_with(&[]);
        let names: Vec<String> = vec!["ok".into(), "missing".into(), "empty".into()];
        let err = ApiKeys::load(
            &names,
            &[a.clone(), b.clone()],
            HeaderName::from_static("x-api-key"),
            false,
        )
        .expect_err("must fail");
        let msg = err.0;
        assert!(
            msg.contains(&a.join("missing").display().to_string()),
            "{msg}"
        );
        assert!(
            msg.contains(&b.join("missing").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("holds no key"), "{msg}");
    }

    #[test]
    fn falls_back_to_the_second_directory() {
        let a = dir_with(&[]);
        let b = dir_with(&[("s", "k2")]);
        let k = ApiKeys::load(
            &["s".into()],
            &[a, b.clone()],
            HeaderName::from_static("x-api-key"),
            false,
        )
        .expect("load");
        assert_eq!(k.sources()[0].1, b.join("s"));
        assert!(k.check(&headers(&["k2"])));
    }

    #[test]
    fn reload_applies_new_keys_and_keeps_old_on_failure() {
        let dir = dir_with(&[("s", "old")]);
        let k = keys(&dir, &["s"]).expect("load");
        std::fs::write(dir.join("s"), "new\n").expect("write");
        k.reload();
        assert!(k.check(&headers(&["new"])));
        assert!(!k.check(&headers(&["old"])));
        std::fs::remove_file(dir.join("s")).expect("rm");
        k.reload();
        assert!(k.check(&headers(&["new"])), "last good keys stay");
        std::fs::write(dir.join("s"), "").expect("write");
        k.reload();
        assert!(
            k.check(&headers(&["new"])),
            "empty file keeps last good keys"
        );
    }
}
