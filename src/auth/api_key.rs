//! API keys from orchestrator-mounted secrets, checked in constant time.
//!
//! The pattern this replaces: every OpenFaaS function read
//! `/var/openfaas/secrets/<name>` and compared the header with `==`, which leaks timing
//! and lets an empty header through when the secret file is empty. Here the watchdog
//! loads the keys once at startup (refusing to start when any is missing), re-reads the
//! files on an interval so a rotated secret applies without a restart, and keeps only
//! HMAC-SHA-256 digests of the keys under a per-process random key. A presented value is
//! digested the same way and compared against every digest with `subtle`, so the time
//! taken depends neither on where the values differ nor on the key's length.
//!
//! A secret file is read the careful way, because whoever can put a file there can
//! otherwise hang or bloat us: opened without blocking (a FIFO cannot stall the open),
//! required to be a regular file (not `/dev/zero`), at most 64 KiB, unchanged in size and
//! mtime across the read, and within a deadline. A file rewritten in place is used only
//! once it has read the same for [`SETTLE`], so a half-written key is never accepted;
//! a file replaced by a rename (the Kubernetes `..data` swap) is complete when it appears
//! and is used at once. Whatever goes wrong, the last good keys stay in force.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

type Digest = [u8; 32];

/// Why the secrets could not be loaded at startup: every path tried, never a key.
/// Configuration turns it into its own error (exit 2); auth knows nothing of that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// A key as read from a secret file. It is digested at once and its bytes are zeroed when
/// it is dropped, as is the buffer the file was read into (the hasher's own copy of a
/// block is not); its `Debug` never prints it.
pub struct Key(Zeroizing<Vec<u8>>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Splits a secret file into keys: one per line, trimmed, empty lines ignored.
pub fn parse_keys(content: &[u8]) -> Vec<Key> {
    content
        .split(|b| *b == b'\n')
        .map(|line| line.trim_ascii())
        .filter(|line| !line.is_empty())
        .map(|line| Key(Zeroizing::new(line.to_vec())))
        .collect()
}

/// The largest secret file read. Keys are a few dozen bytes; anything this big is a
/// mistake, and reading it would cost memory an attacker may be counting on.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// How long one read of the secrets may take, at startup and for each reload.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// A file rewritten in place is used once it has read the same for this long (the default
/// of [`ApiKeys::load_settling`]).
pub const SETTLE: Duration = Duration::from_secs(1);

/// One named secret and where it was found.
struct Secret {
    name: String,
    path: PathBuf,
    digests: Vec<Digest>,
    /// `(dev, ino)` of the file the keys came from: the same file changed in place must
    /// settle; a file renamed over it is used at once.
    file: (u64, u64),
    state: SecretState,
}

/// What the last reload made of a secret's file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SecretState {
    /// Its keys are the ones in force.
    Good,
    /// It changed and the change is not used yet: `seen` is the new content's digest,
    /// read that way since `since`. After a problem (`after_problem`) whatever appears
    /// may be half written, even a new file, so it must settle too. `since` is on tokio's
    /// clock, so a paused test clock governs it.
    Settling {
        seen: Digest,
        since: tokio::time::Instant,
        after_problem: bool,
    },
    /// It cannot be used, for this reason (logged once); the last good keys stay.
    Broken { why: String },
}

/// What reloading one secret did.
#[derive(PartialEq, Eq)]
enum Reloaded {
    /// Its keys in force are unchanged.
    Same,
    /// It has new keys in force.
    Changed,
    /// A change is waiting (to settle, or for the file to stop changing): look again soon.
    Waiting,
}

impl Secret {
    /// Re-reads the file and applies what it says to this secret (see
    /// [`ApiKeys::reload`]).
    fn reload(&mut self, mac_key: &[u8; 32], settle: Duration) -> Reloaded {
        let snap = match read_secret(&self.path) {
            Ok(snap) => snap,
            Err(Unread::Changing) => return Reloaded::Waiting,
            Err(Unread::Refused(why)) => {
                if !matches!(&self.state, SecretState::Broken { why: w } if *w == why) {
                    tracing::warn!(
                        "API key secret {} could not be reloaded from {}: {why}; keeping the last good keys",
                        self.name,
                        self.path.display()
                    );
                }
                self.state = SecretState::Broken { why };
                return Reloaded::Same;
            }
        };
        let must_settle = match &self.state {
            SecretState::Good => false,
            SecretState::Settling { after_problem, .. } => *after_problem,
            SecretState::Broken { .. } => {
                tracing::info!(
                    "API key secret {} is readable again at {}",
                    self.name,
                    self.path.display()
                );
                true
            }
        };
        let digests = digests(mac_key, &snap.keys);
        if digests == self.digests {
            self.file = snap.file;
            self.state = SecretState::Good;
            return Reloaded::Same;
        }
        // A new file put in place of a good one was complete before it got there.
        // The same file changed (or a file back after a problem) may still be
        // being written: it must read the same for the settle time first.
        let seen = mac(mac_key, &snap.content.0);
        let replaced = snap.file != self.file && !must_settle;
        match self.state {
            SecretState::Settling { seen: p, since, .. } if p == seen => {
                let settled = replaced || since.elapsed() >= settle;
                if !settled {
                    return Reloaded::Waiting;
                }
            }
            _ if !replaced => {
                self.state = SecretState::Settling {
                    seen,
                    since: tokio::time::Instant::now(),
                    after_problem: must_settle,
                };
                return Reloaded::Waiting;
            }
            _ => {}
        }
        tracing::info!(
            "API key secret {} reloaded from {}",
            self.name,
            self.path.display()
        );
        self.digests = digests;
        self.file = snap.file;
        self.state = SecretState::Good;
        Reloaded::Changed
    }
}

/// The digest of each key, under `mac_key`.
fn digests(mac_key: &[u8; 32], keys: &[Key]) -> Vec<Digest> {
    keys.iter().map(|k| mac(mac_key, &k.0)).collect()
}

/// Every digest of every secret: the keys in force.
fn in_force(secrets: &[Secret]) -> Arc<Vec<Digest>> {
    Arc::new(
        secrets
            .iter()
            .flat_map(|s| s.digests.iter().copied())
            .collect(),
    )
}

/// Why a named secret was not found: every path tried and why, and whether one of them
/// existed but could not be used (which needs other advice than a missing one).
struct Missing {
    tried: Vec<String>,
    unusable: bool,
}

/// Finds secret `name` in the first of `dirs` that has it and reads it. A file that
/// exists is the one, usable or not: the folders after it are not tried.
fn locate(name: &str, dirs: &[PathBuf]) -> Result<(PathBuf, Snapshot), Missing> {
    let mut tried = Vec::new();
    for dir in dirs {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tried.push(format!("{} (not found)", path.display()));
            }
            _ => match read_at_startup(&path) {
                Ok(snap) => return Ok((path, snap)),
                Err(why) => {
                    tried.push(format!("{} ({why})", path.display()));
                    return Err(Missing {
                        tried,
                        unusable: true,
                    });
                }
            },
        }
    }
    Err(Missing {
        tried,
        unusable: false,
    })
}

struct Inner {
    header: HeaderName,
    forward: bool,
    mac_key: [u8; 32],
    /// A file rewritten in place is used once it has read the same for this long.
    settle: Duration,
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

/// What one careful read of a secret file found.
struct Snapshot {
    keys: Vec<Key>,
    /// The whole content, to tell an unchanged file from a changed one.
    content: Key,
    file: (u64, u64),
}

/// Why a read gave no keys; never includes the file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unread {
    /// Missing, unreadable, not a regular file, too big or empty: the message says which.
    Refused(String),
    /// Its size or mtime changed while it was read: try again soon.
    Changing,
}

/// Reads a secret file without trusting it: a non-blocking open (a FIFO cannot stall
/// it), `fstat` on the open file (a regular file, at most [`MAX_SECRET_BYTES`]), a
/// capped read, and the same size and mtime after the read as before.
fn read_secret(path: &Path) -> Result<Snapshot, Unread> {
    let refused = |e: std::io::Error| Unread::Refused(e.to_string());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(refused)?;
    let before = file.metadata().map_err(refused)?;
    if !before.file_type().is_file() {
        return Err(Unread::Refused(
            "not a regular file (a device, FIFO, socket or folder)".into(),
        ));
    }
    let too_big = || {
        Unread::Refused(format!(
            "larger than {} KiB: a key file holds a few keys",
            MAX_SECRET_BYTES / 1024
        ))
    };
    if before.len() > MAX_SECRET_BYTES {
        return Err(too_big());
    }
    let mut content = Key(Zeroizing::new(Vec::with_capacity(before.len() as usize)));
    (&file)
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut content.0)
        .map_err(refused)?;
    if content.0.len() as u64 > MAX_SECRET_BYTES {
        return Err(too_big());
    }
    let after = file.metadata().map_err(refused)?;
    if after.len() != before.len()
        || content.0.len() as u64 != after.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
    {
        return Err(Unread::Changing);
    }
    let keys = parse_keys(&content.0);
    if keys.is_empty() {
        return Err(Unread::Refused(
            "holds no key (empty or whitespace only)".into(),
        ));
    }
    Ok(Snapshot {
        keys,
        content,
        file: (after.dev(), after.ino()),
    })
}

/// [`read_secret`] at startup: on its own thread, so a file system that hangs the read
/// cannot hang the start, retried while the file is changing, all within
/// [`READ_DEADLINE`].
fn read_at_startup(path: &Path) -> Result<Snapshot, String> {
    let give_up = Instant::now() + READ_DEADLINE;
    loop {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read_secret(&p));
        });
        let left = give_up.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(snap)) => return Ok(snap),
            Ok(Err(Unread::Refused(why))) => return Err(why),
            Ok(Err(Unread::Changing)) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Err(Unread::Changing)) => {
                return Err(format!(
                    "kept changing while being read for {}",
                    crate::duration::format_duration(READ_DEADLINE)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "could not be read within {}",
                    crate::duration::format_duration(READ_DEADLINE)
                ))
            }
        }
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
    ) -> Result<ApiKeys, LoadError> {
        ApiKeys::load_settling(names, dirs, header, forward, SETTLE)
    }

    /// Like [`ApiKeys::load`], with a file rewritten in place used once it has read the
    /// same for `settle`.
    pub fn load_settling(
        names: &[String],
        dirs: &[PathBuf],
        header: HeaderName,
        forward: bool,
        settle: Duration,
    ) -> Result<ApiKeys, LoadError> {
        let mut mac_key = [0u8; 32];
        getrandom::getrandom(&mut mac_key).map_err(|e| {
            LoadError(format!(
                "cannot get random bytes for the API key check: {e}"
            ))
        })?;
        let mut secrets = Vec::new();
        let mut failures = Vec::new();
        let mut unusable = false;
        for name in names {
            match locate(name, dirs) {
                Ok((path, snap)) => secrets.push(Secret {
                    name: name.clone(),
                    path,
                    digests: digests(&mac_key, &snap.keys),
                    file: snap.file,
                    state: SecretState::Good,
                }),
                Err(missing) => {
                    unusable |= missing.unusable;
                    let tried = missing.tried.join(", ");
                    failures.push(format!("API key secret {name:?}: tried {tried}"));
                }
            }
        }
        if !failures.is_empty() {
            let advice = if unusable {
                "each named secret must be a readable file holding at least one key"
            } else {
                "secrets must exist when the function is deployed"
            };
            return Err(LoadError(format!(
                "{}; {advice} (refusing to start unprotected)",
                failures.join("; ")
            )));
        }
        let inner = Inner {
            header,
            forward,
            mac_key,
            settle,
            current: RwLock::new(in_force(&secrets)),
            secrets: Mutex::new(secrets),
        };
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

    /// The key header when it is not forwarded: removed from each request once checked,
    /// and never passed to a handler, whatever the spelling.
    pub fn hidden(&self) -> Option<&HeaderName> {
        (!self.inner.forward).then_some(&self.inner.header)
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
    /// swap is seen). A file that is now missing, unreadable, empty, not a regular file
    /// or too big keeps its last good keys and is warned about once per problem; a file
    /// changed in place is used once it has read the same for the settle time. Returns true
    /// when a change is waiting to settle, so the caller looks again soon.
    pub fn reload(&self) -> bool {
        let mut secrets = lock(&self.inner.secrets);
        let results: Vec<Reloaded> = secrets
            .iter_mut()
            .map(|s| s.reload(&self.inner.mac_key, self.inner.settle))
            .collect();
        if results.contains(&Reloaded::Changed) {
            *self
                .inner
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner()) = in_force(&secrets);
        }
        results.contains(&Reloaded::Waiting)
    }

    /// Re-reads the secrets every `interval` for as long as the process lives.
    pub fn spawn_reloader(&self, interval: Duration) {
        let keys = self.clone();
        let soon = interval.min(self.inner.settle / 4);
        tokio::spawn(reload_loop(interval, soon, READ_DEADLINE, move || {
            keys.reload()
        }));
    }
}

/// Calls `reload` (on a blocking thread: file reads block) every `interval`, every `soon`
/// while a change is settling. A reload still running after `deadline` is reported once as
/// stuck, and no other is started until it returns: the last good keys stay in force, and
/// a file that hangs its reader costs one thread, not one per interval.
async fn reload_loop<F>(interval: Duration, soon: Duration, deadline: Duration, reload: F)
where
    F: Fn() -> bool + Clone + Send + 'static,
{
    let mut wait = interval;
    let mut stuck: Option<tokio::task::JoinHandle<bool>> = None;
    loop {
        tokio::time::sleep(wait).await;
        let was_stuck = stuck.is_some();
        let mut job = stuck.take().unwrap_or_else(|| {
            let r = reload.clone();
            tokio::task::spawn_blocking(r)
        });
        match tokio::time::timeout(deadline, &mut job).await {
            Ok(done) => {
                if was_stuck {
                    tracing::info!("Reloading the API key secrets finished again");
                }
                wait = if done.unwrap_or(false) {
                    soon
                } else {
                    interval
                };
            }
            Err(_) => {
                if !was_stuck {
                    tracing::warn!(
                        "reloading the API key secrets has not finished within {} (a file that blocks its reader?); keeping the last good keys",
                        crate::duration::format_duration(deadline)
                    );
                }
                stuck = Some(job);
                wait = interval;
            }
        }
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

    fn keys(dir: &Path, names: &[&str]) -> Result<ApiKeys, LoadError> {
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

    /// Puts `content` at `dir/name` the atomic way: a new file renamed over the old.
    fn swap_in(dir: &Path, name: &str, content: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }

    #[test]
    fn reload_applies_new_keys_and_keeps_old_on_failure() {
        let dir = dir_with(&[("s", "old")]);
        let k = keys(&dir, &["s"]).expect("load");
        swap_in(&dir, "s", "new\n");
        assert!(!k.reload(), "a file renamed into place is complete");
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
        // After a problem even a new file may still be being written: it settles first.
        swap_in(&dir, "s", "newer\n");
        assert!(k.reload(), "waiting");
        assert!(k.check(&headers(&["new"])) && !k.check(&headers(&["newer"])));
    }

    /// On tokio's paused clock, so the settle time is crossed to the millisecond with
    /// `advance` instead of slept through.
    #[tokio::test(start_paused = true)]
    async fn a_file_changed_in_place_is_used_only_once_it_has_settled() {
        let settle = Duration::from_secs(30);
        let dir = dir_with(&[("s", "old-key")]);
        let k = ApiKeys::load_settling(
            &["s".into()],
            std::slice::from_ref(&dir),
            HeaderName::from_static("x-api-key"),
            false,
            settle,
        )
        .expect("load");
        // A slow writer, half way: the first 8 bytes of the new key, unchanged for most
        // of the settle time.
        std::fs::write(dir.join("s"), "new-key-").expect("half");
        for _ in 0..4 {
            assert!(k.reload(), "a change is waiting");
            assert!(!k.check(&headers(&["new-key-"])), "half a key accepted");
            assert!(k.check(&headers(&["old-key"])));
            tokio::time::advance(settle / 5).await;
        }
        std::fs::write(dir.join("s"), "new-key-complete\n").expect("whole");
        assert!(k.reload());
        tokio::time::advance(settle - Duration::from_millis(1)).await;
        assert!(k.reload(), "still settling");
        assert!(!k.check(&headers(&["new-key-complete"])), "not settled yet");
        assert!(k.check(&headers(&["old-key"])));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!k.reload(), "settled");
        assert!(k.check(&headers(&["new-key-complete"])));
        assert!(!k.check(&headers(&["old-key"])) && !k.check(&headers(&["new-key-"])));
    }

    #[test]
    fn the_default_settle_time_is_one_second() {
        assert_eq!(SETTLE, Duration::from_secs(1));
        let dir = dir_with(&[("s", "old-key")]);
        let k = keys(&dir, &["s"]).expect("load");
        assert_eq!(k.inner.settle, SETTLE);
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = dir_with(&[("ok", "k\n")]);
        assert!(read_secret(&dir.join("ok")).is_ok());
        let refused = |p: &Path| match read_secret(p) {
            Err(Unread::Refused(why)) => why,
            Ok(_) => panic!("{} was read", p.display()),
            Err(e) => panic!("{}: {e:?}", p.display()),
        };
        assert!(refused(Path::new("/dev/zero")).contains("not a regular file"));
        assert!(refused(&dir).contains("not a regular file"));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // Would block forever in open() without O_NONBLOCK (no writer).
        assert!(refused(&fifo).contains("not a regular file"));
        let big = std::fs::File::create(dir.join("sparse")).expect("create");
        big.set_len(2 << 30).expect("sparse 2 GiB");
        assert!(refused(&dir.join("sparse")).contains("larger than 64 KiB"));
        let edge = format!("{}\n", "k".repeat(MAX_SECRET_BYTES as usize - 1));
        std::fs::write(dir.join("edge"), &edge).expect("64 KiB");
        assert!(
            read_secret(&dir.join("edge")).is_ok(),
            "exactly 64 KiB is fine"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_reload_is_not_piled_up_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let c = calls.clone();
        let reload = move || {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first reload hangs, as on a file system that never answers.
                let _ = lock(&gate).recv();
            }
            false
        };
        let task = tokio::spawn(reload_loop(
            Duration::from_millis(5),
            Duration::from_millis(5),
            Duration::from_millis(20),
            reload,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no reload while one is stuck"
        );
        release.send(()).expect("release");
        let t = Instant::now();
        while calls.load(Ordering::SeqCst) < 3 && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(calls.load(Ordering::SeqCst) >= 3, "reloads resume");
        task.abort();
    }
}
