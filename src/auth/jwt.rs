//! OpenFaaS IAM function tokens (`jwt_auth`).
//!
//! With OpenFaaS IAM the gateway issues short-lived tokens that name the functions their
//! bearer may invoke, and publishes the keys that sign them as an OpenID configuration
//! and a JWKS. A function request must carry `Authorization: Bearer <token>`; the token
//! must be signed with an asymmetric algorithm by a key of that set, be issued by and for
//! the gateway, be within its validity window, and grant `<namespace>:<name>`.
//!
//! The keys are fetched in the background over the hyper client the http mode already
//! uses: at startup (retrying until `jwt_auth_timeout`; function requests get 503 until
//! then), every ten minutes, and when a token names a key id we have not seen, at most
//! once every ten seconds, so a key the gateway adds later works without a restart and a
//! flood of made-up key ids cannot turn into a flood of fetches. Requests that need a
//! refetch share the one in flight (it runs on its own task, so a request that gives up
//! does not cancel it for the others) and wait for it no longer than their own deadline:
//! a slow or unreachable issuer costs one fetch per ten seconds and never lines requests
//! up behind each other. A failed refresh keeps the last good keys. Nothing of a token is
//! ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::body::Body;

/// Where the token issuer is and which function we are (`jwt_auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The issuer's OpenID configuration, an http:// URL.
    pub url: String,
    /// How long startup waits for the keys.
    pub timeout: Duration,
    /// Log key ids and token issuer/audience.
    pub debug: bool,
    /// `<namespace>:<name>`, what a token's permissions must grant.
    pub function: String,
}

/// The algorithms a function token may use: asymmetric only, so a public key can never
/// be used as an HMAC secret, and never `none`.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Each issuer document (configuration, key set) may be this large.
const MAX_DOCUMENT: usize = 1 << 20;
/// One fetch of one document may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the issuer may take this long (a black-holed address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A token naming an unknown key id refetches the set at most this often (the default of
/// [`Jwt::with_refetch_window`]).
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
/// The set is refetched this often anyway, so removed keys stop working.
const REFRESH: Duration = Duration::from_secs(600);
/// Seconds of clock skew allowed on `exp` and `nbf`, as the peers allow.
const LEEWAY: u64 = 1;
/// Verified tokens remembered per key set (see [`KeySet::verified`]).
const VERIFIED_MAX: usize = 1024;

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer …` at all.
    NoBearer,
    /// A token that does not verify, for whatever reason (never told to the client).
    Invalid,
    /// A valid token that does not grant this function.
    Forbidden,
    /// The keys have not been fetched yet.
    NotReady,
}

/// The issuer's keys as last fetched.
struct KeySet {
    issuer: String,
    keys: Vec<(String, Algorithmic)>,
    /// One per key family: the library insists that every algorithm a `Validation`
    /// allows belongs to the key's family.
    rsa: Validation,
    ec: Validation,
    ed: Validation,
    /// Tokens this set has verified, by SHA-256 of the token, with their `exp` and
    /// whether they grant this function: a client sends the same token until it expires,
    /// and a signature check costs more than the rest of a proxied request. Bounded;
    /// an entry ends at its token's `exp`; a refetched set starts empty, so a removed or
    /// replaced key stops counting at once.
    verified: Mutex<HashMap<[u8; 32], (u64, bool)>>,
}

impl KeySet {
    /// Whether the token with this digest grants the function, when this set verified
    /// it before and it has not expired since.
    fn cached_verdict(&self, digest: &[u8; 32], now: u64) -> Option<bool> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let (exp, granted) = verified.get(digest).copied()?;
        (now <= exp.saturating_add(LEEWAY)).then_some(granted)
    }

    /// The key `kid` and the validation for it, when the token's algorithm is one we
    /// accept, of the key's family, and the one the key names (if it names one).
    fn key_for(
        &self,
        header: &jsonwebtoken::Header,
        kid: &str,
    ) -> Result<(&DecodingKey, &Validation), Denied> {
        let Some((_, key)) = self.keys.iter().find(|(id, _)| id == kid) else {
            return Err(Denied::Invalid);
        };
        if !ALGORITHMS.contains(&header.alg)
            || key.key.family() != header.alg.family()
            || key
                .alg
                .as_deref()
                .is_some_and(|a| a != format!("{:?}", header.alg))
        {
            return Err(Denied::Invalid);
        }
        let validation = self.validation(key.key.family()).ok_or(Denied::Invalid)?;
        Ok((&key.key, validation))
    }

    /// Remembers a verified token until its `exp`. Bounded: at the cap, expired
    /// entries go, and if that is not enough, all of them.
    fn remember(&self, digest: [u8; 32], exp: u64, granted: bool, now: u64) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, (e, _)| now <= e.saturating_add(LEEWAY));
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, (exp, granted));
    }

    fn validation(&self, family: AlgorithmFamily) -> Option<&Validation> {
        match family {
            AlgorithmFamily::Rsa => Some(&self.rsa),
            AlgorithmFamily::Ec => Some(&self.ec),
            AlgorithmFamily::Ed => Some(&self.ed),
            _ => None,
        }
    }
}

/// A verification key and what it may verify.
struct Algorithmic {
    key: DecodingKey,
    /// The JWK's own `alg`, when it names one: the token must use exactly that.
    alg: Option<String>,
}

struct Inner {
    settings: JwtSettings,
    /// The same client type as the http mode's, so the binary carries one copy of it.
    client: Client<HttpConnector, Body>,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// An unknown key id refetches at most this often.
    refetch_window: Duration,
    gate: Mutex<Gate>,
}

/// The refetches after startup (unknown key ids, the periodic refresh).
#[derive(Default)]
struct Gate {
    /// When the last one started; on tokio's clock, so a paused test clock governs it.
    started: Option<tokio::time::Instant>,
    /// The one in flight: its sender is dropped when it ends.
    in_flight: Option<tokio::sync::watch::Receiver<()>>,
}

/// The token check. Cheap to clone.
#[derive(Clone)]
pub struct Jwt {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("url", &self.inner.settings.url)
            .field("function", &self.inner.settings.function)
            .finish()
    }
}

/// The OpenID configuration fields we use.
#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: String,
    jwks_uri: String,
}

/// The claims we read beyond the registered ones the library checks.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    function: FunctionClaim,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<f64>,
}

#[derive(Deserialize, Default)]
struct FunctionClaim {
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    audience: Vec<String>,
}

impl Jwt {
    pub fn new(settings: JwtSettings) -> Jwt {
        Jwt::with_refetch_window(settings, UNKNOWN_KID_REFETCH)
    }

    /// Like [`Jwt::new`], with tokens naming an unknown key id refetching the set at most
    /// once per `refetch_window`.
    pub fn with_refetch_window(settings: JwtSettings, refetch_window: Duration) -> Jwt {
        verify::install();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Jwt {
            inner: Arc::new(Inner {
                settings,
                client,
                keys: RwLock::new(None),
                refetch_window,
                gate: Mutex::new(Gate::default()),
            }),
        }
    }

    /// The OpenID configuration URL, for messages.
    pub fn url(&self) -> &str {
        &self.inner.settings.url
    }

    /// `<namespace>:<name>`.
    pub fn function(&self) -> &str {
        &self.inner.settings.function
    }

    /// True once a key set has been fetched.
    pub fn ready(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetches the keys, retrying with backoff until `jwt_auth_timeout`; then keeps them
    /// fresh in the background. The error names the URL and the last failure.
    pub async fn start(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.inner.settings.timeout;
        let mut wait = Duration::from_millis(100);
        let mut attempts = 0u32;
        let mut last: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "jwt_auth: no keys from the token issuer at {} within jwt_auth_timeout={} ({attempts} attempts); last error: {}",
                    self.url(),
                    crate::duration::format_duration(self.inner.settings.timeout),
                    last.as_deref().unwrap_or("none finished")
                ));
            }
            attempts += 1;
            let limit = left.min(FETCH_TIMEOUT);
            match tokio::time::timeout(limit, self.fetch()).await {
                Ok(Ok(set)) => {
                    self.store(set);
                    break;
                }
                Ok(Err(why)) => last = Some(why),
                // An attempt cut short by the deadline says less than the one before it.
                Err(_) if limit < FETCH_TIMEOUT && last.is_some() => {}
                Err(_) => {
                    last = Some(format!(
                        "{}: no answer within {}",
                        self.url(),
                        crate::duration::format_duration(limit)
                    ))
                }
            }
            if attempts == 1 {
                if let Some(why) = &last {
                    tracing::info!("jwt_auth: waiting for the token issuer: {why}");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait.min(left)).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                if let Some(mut done) = me.refetch(true) {
                    let _ = done.changed().await;
                }
            }
        });
        Ok(())
    }

    /// One refetch; a failure keeps the last good keys.
    async fn refresh(&self) {
        match tokio::time::timeout(FETCH_TIMEOUT * 2, self.fetch()).await {
            Ok(Ok(set)) => self.store(set),
            Ok(Err(why)) => tracing::warn!(
                "jwt_auth: refreshing the keys from {} failed: {why}; keeping the last good keys",
                self.url()
            ),
            Err(_) => tracing::warn!(
                "jwt_auth: refreshing the keys from {} timed out; keeping the last good keys",
                self.url()
            ),
        }
    }

    fn store(&self, set: KeySet) {
        let ids: Vec<&str> = set.keys.iter().map(|(k, _)| k.as_str()).collect();
        let previous = self.current();
        let changed = previous.as_ref().is_none_or(|p| {
            p.issuer != set.issuer
                || p.keys
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .ne(ids.iter().copied())
        });
        if changed {
            tracing::info!(
                "jwt_auth: {} key(s) from issuer {} for function {} (key ids: {})",
                ids.len(),
                set.issuer,
                self.function(),
                ids.join(", ")
            );
        }
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let url: Uri = self
            .inner
            .settings
            .url
            .parse()
            .map_err(|e| format!("{e}"))?;
        let body = self.get(&url).await?;
        let config: OpenIdConfiguration = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: not an OpenID configuration: {e}"))?;
        let jwks_uri: Uri = config
            .jwks_uri
            .parse()
            .map_err(|_| format!("{url}: jwks_uri {:?} is not a URL", config.jwks_uri))?;
        if jwks_uri.scheme_str() != Some("http") {
            return Err(format!(
                "{url}: jwks_uri {jwks_uri} is not an http:// URL (keys are fetched over plain http inside the cluster)"
            ));
        }
        if self.inner.settings.debug {
            tracing::info!("jwt_auth: issuer {} jwks_uri {jwks_uri}", config.issuer);
        }
        let body = self.get(&jwks_uri).await?;
        let keys = parse_jwks(&body).map_err(|e| format!("{jwks_uri}: {e}"))?;
        if keys.is_empty() {
            return Err(format!("{jwks_uri}: no usable signing key"));
        }
        let validation = |family: AlgorithmFamily| {
            let mut v = Validation::new(Algorithm::RS256);
            v.algorithms = ALGORITHMS
                .iter()
                .copied()
                .filter(|a| a.family() == family)
                .collect();
            v.leeway = LEEWAY;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_issuer(&[&config.issuer]);
            v.set_audience(&[&config.issuer]);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v
        };
        Ok(KeySet {
            rsa: validation(AlgorithmFamily::Rsa),
            ec: validation(AlgorithmFamily::Ec),
            ed: validation(AlgorithmFamily::Ed),
            issuer: config.issuer,
            keys,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// GET one document: 200, at most `MAX_DOCUMENT` bytes, within `FETCH_TIMEOUT`.
    async fn get(&self, url: &Uri) -> Result<Bytes, String> {
        let req = Request::get(url.clone())
            .header(http::header::USER_AGENT, "fwatchdog")
            .header(http::header::ACCEPT, "application/json")
            .body(crate::body::empty())
            .map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let resp = self
                .inner
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {}", client_error(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the body: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("{url}: status {status}"));
            }
            Ok(body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                format!(
                    "{url}: no answer within {}",
                    crate::duration::format_duration(FETCH_TIMEOUT)
                )
            })?
    }

    /// Checks a function request's token. `Ok` means the request may go on; a refetch of
    /// the keys is waited for until `deadline` at most.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        deadline: tokio::time::Instant,
    ) -> Result<(), Denied> {
        let Some(set) = self.current() else {
            return Err(Denied::NotReady);
        };
        let token = bearer(headers)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(granted) = set.cached_verdict(&digest, now) {
            return verdict(granted);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Invalid)?;
        let kid = header.kid.as_deref().ok_or(Denied::Invalid)?;
        let set = match find(&set, kid) {
            true => set,
            false => self
                .refetch_for(kid, deadline)
                .await
                .ok_or(Denied::Invalid)?,
        };
        let (key, validation) = set.key_for(&header, kid)?;
        let claims = match jsonwebtoken::decode::<Claims>(token, key, validation) {
            Ok(d) => d.claims,
            Err(e) => {
                if self.inner.settings.debug {
                    tracing::info!(
                        "jwt_auth: token rejected: {} (key id {kid})",
                        reason(e.kind())
                    );
                }
                return Err(Denied::Invalid);
            }
        };
        if self.inner.settings.debug {
            tracing::info!(
                "jwt_auth: token: issuer {} audience {} key id {kid}",
                claims.iss.as_deref().unwrap_or("-"),
                claims
                    .aud
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into())
            );
        }
        let granted = granted(&claims.function, self.function());
        if let Some(exp) = claims.exp.filter(|e| e.is_finite() && *e >= 0.0) {
            set.remember(digest, exp as u64, granted, now);
        }
        verdict(granted)
    }

    /// A token named a key id we do not have: the keys once the refetch in flight, or one
    /// started now (at most once per refetch window), has ended, if that is before
    /// `deadline`.
    async fn refetch_for(&self, kid: &str, deadline: tokio::time::Instant) -> Option<Arc<KeySet>> {
        if let Some(set) = self.current().filter(|s| find(s, kid)) {
            return Some(set);
        }
        let mut done = self.refetch(false)?;
        // `changed` fails when the fetch's sender is dropped: the fetch has ended.
        let _ = tokio::time::timeout_at(deadline, done.changed()).await;
        self.current().filter(|s| find(s, kid))
    }

    /// The refetch in flight, or a new one on its own task unless one started within the
    /// refetch window (`always`: the periodic refresh, which ignores the window). `None`:
    /// no fetch to wait for.
    fn refetch(&self, always: bool) -> Option<tokio::sync::watch::Receiver<()>> {
        let mut gate = self.inner.gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = &gate.in_flight {
            return Some(done.clone());
        }
        let now = tokio::time::Instant::now();
        if !always
            && gate
                .started
                .is_some_and(|t| now.duration_since(t) < self.inner.refetch_window)
        {
            return None;
        }
        let (tx, rx) = tokio::sync::watch::channel(());
        gate.started = Some(now);
        gate.in_flight = Some(rx.clone());
        let me = self.clone();
        tokio::spawn(async move {
            me.refresh().await;
            me.inner
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .in_flight = None;
            drop(tx);
        });
        Some(rx)
    }
}

/// Why the library refused a token, without any of the token's content (a JSON error
/// would quote the claim it choked on).
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        Json(_) | InvalidClaimFormat(_) => "malformed claims".into(),
        Base64(_) | Utf8(_) => "malformed encoding".into(),
        MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        other => format!("{other:?}"),
    }
}

/// A token's verdict: granted, or forbidden to this function.
fn verdict(granted: bool) -> Result<(), Denied> {
    if granted {
        Ok(())
    } else {
        Err(Denied::Forbidden)
    }
}

fn find(set: &KeySet, kid: &str) -> bool {
    set.keys.iter().any(|(id, _)| id == kid)
}

/// The token of `Authorization: Bearer <token>` (scheme in any case). A missing header
/// or another scheme is `NoBearer`; a repeated header is `Invalid`.
fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Denied::NoBearer),
        (Some(v), None) => v,
        (Some(_), Some(_)) => return Err(Denied::Invalid),
    };
    let bytes = value.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if bytes.len() <= SCHEME.len() || !bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(Denied::NoBearer);
    }
    let token = std::str::from_utf8(&bytes[SCHEME.len()..])
        .map_err(|_| Denied::Invalid)?
        .trim();
    if token.is_empty() {
        return Err(Denied::NoBearer);
    }
    Ok(token)
}

/// The signing keys of a JWKS document: keys with a `kid`, not marked for encryption,
/// of a type we verify. Keys we cannot use are skipped, not fatal, so one exotic key
/// does not take the others down.
fn parse_jwks(body: &[u8]) -> Result<Vec<(String, Algorithmic)>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if key.family() == AlgorithmFamily::Hmac {
            continue;
        }
        let alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        out.push((kid, Algorithmic { key, alg }));
    }
    Ok(out)
}

/// Whether the token's `function` claim grants `function` (`<namespace>:<name>`): one of
/// its permissions must match, and so must one of its audiences when it lists any.
fn granted(claim: &FunctionClaim, function: &str) -> bool {
    let any = |patterns: &[String]| patterns.iter().any(|p| matches(p, function));
    any(&claim.permissions) && (claim.audience.is_empty() || any(&claim.audience))
}

/// `*` matches any run of characters; everything else matches itself; the whole value
/// must match.
fn matches(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: an exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Signature verification for jsonwebtoken, on RustCrypto, and nothing else.
///
/// jsonwebtoken's bundled RustCrypto provider links every signer too (RSA private-key
/// operations, ECDSA and Ed25519 signing, HMAC), about half a megabyte of the static
/// binary that a watchdog never calls. This provider verifies the asymmetric algorithms
/// with the same crates and refuses everything else; it is installed as the process
/// default before the first token is checked.
mod verify {
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{Error, ErrorKind};
    use jsonwebtoken::signature::{self, Verifier};
    use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
    use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
    use rsa::{BoxedUint, Pkcs1v15Sign, Pss};

    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: no_signer,
        verifier_factory: verifier,
        key_utils: KeyUtils::new_unimplemented(),
    };

    /// Makes this the provider jsonwebtoken uses; later calls are no-ops.
    pub fn install() {
        let _ = PROVIDER.install_default();
    }

    fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
        Err(ErrorKind::InvalidAlgorithm.into())
    }

    enum Key {
        Rsa(rsa::PublicKey),
        P256(p256::ecdsa::VerifyingKey),
        P384(p384::ecdsa::VerifyingKey),
        Ed25519(ed25519_dalek::VerifyingKey),
    }

    struct Checker {
        alg: Algorithm,
        key: Key,
    }

    fn bad_key() -> Error {
        ErrorKind::InvalidKeyFormat.into()
    }

    fn raw(key: &DecodingKey) -> Result<&[u8], Error> {
        match key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => Ok(bytes),
            DecodingKeyKind::RsaModulusExponent { .. } => Err(bad_key()),
        }
    }

    fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
        use Algorithm::*;
        let key = match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => match key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, e } => Key::Rsa(
                    rsa::PublicKey::new(
                        BoxedUint::from_be_slice_vartime(n),
                        BoxedUint::from_be_slice_vartime(e),
                    )
                    .map_err(|_| bad_key())?,
                ),
                DecodingKeyKind::SecretOrDer(_) => return Err(bad_key()),
            },
            ES256 => Key::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(raw(key)?).map_err(|_| bad_key())?,
            ),
            ES384 => Key::P384(
                p384::ecdsa::VerifyingKey::from_sec1_bytes(raw(key)?).map_err(|_| bad_key())?,
            ),
            EdDSA => {
                let bytes: &[u8; 32] = raw(key)?.try_into().map_err(|_| bad_key())?;
                Key::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| bad_key())?)
            }
            _ => return Err(ErrorKind::InvalidAlgorithm.into()),
        };
        Ok(Box::new(Checker { alg: *alg, key }))
    }

    impl Verifier<Vec<u8>> for Checker {
        fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
            use Algorithm::*;
            let fail = |_| signature::Error::new();
            match (&self.key, self.alg) {
                (Key::Rsa(k), RS256) => {
                    k.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig)
                }
                (Key::Rsa(k), RS384) => {
                    k.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg), sig)
                }
                (Key::Rsa(k), RS512) => {
                    k.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg), sig)
                }
                (Key::Rsa(k), PS256) => k.verify(Pss::<Sha256>::new(), &Sha256::digest(msg), sig),
                (Key::Rsa(k), PS384) => k.verify(Pss::<Sha384>::new(), &Sha384::digest(msg), sig),
                (Key::Rsa(k), PS512) => k.verify(Pss::<Sha512>::new(), &Sha512::digest(msg), sig),
                (Key::P256(k), ES256) => {
                    let sig = p256::ecdsa::Signature::from_slice(sig).map_err(fail)?;
                    return k.verify(msg, &sig);
                }
                (Key::P384(k), ES384) => {
                    let sig = p384::ecdsa::Signature::from_slice(sig).map_err(fail)?;
                    return k.verify(msg, &sig);
                }
                (Key::Ed25519(k), EdDSA) => {
                    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(fail)?;
                    return k.verify_strict(msg, &sig).map_err(fail);
                }
                _ => return Err(signature::Error::new()),
            }
            .map_err(|_| signature::Error::new())
        }
    }

    impl JwtVerifier for Checker {
        fn algorithm(&self) -> Algorithm {
            self.alg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer(&auth("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer(&auth("bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer(&auth("BEARER  a.b.c ")), Ok("a.b.c"));
        assert_eq!(bearer(&auth("Basic dXNlcjpwdw==")), Err(Denied::NoBearer));
        assert_eq!(bearer(&auth("a.b.c")), Err(Denied::NoBearer));
        assert_eq!(bearer(&auth("Bearer ")), Err(Denied::NoBearer));
        assert_eq!(bearer(&auth("Bearer    ")), Err(Denied::NoBearer));
        assert_eq!(bearer(&HeaderMap::new()), Err(Denied::NoBearer));
        let mut two = auth("Bearer a.b.c");
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer d.e.f"),
        );
        assert_eq!(bearer(&two), Err(Denied::Invalid));
    }

    #[test]
    fn patterns_are_anchored_with_star_wildcards() {
        let f = "openfaas-fn:protected";
        for yes in [
            "openfaas-fn:protected",
            "*",
            "openfaas-fn:*",
            "*:protected",
            "openfaas-fn:prot*ted",
            "*fn:*ted",
            "**",
            "openfaas-fn:protected*",
        ] {
            assert!(matches(yes, f), "{yes}");
        }
        for no in [
            "protected",
            "openfaas-fn:protectedapi",
            "openfaas-fn:prot",
            "fn:protected",
            "other:*",
            "*:other",
            "",
            "openfaas-fn:protected:x",
            "openfaas-fn:*x*",
        ] {
            assert!(!matches(no, f), "{no}");
        }
        assert!(!matches(
            "openfaas-fn:protected",
            "openfaas-fn:protectedapi"
        ));
        assert!(!matches("ab*ba", "aba"), "overlapping prefix and suffix");
    }

    #[test]
    fn permissions_required_audience_when_listed() {
        let claim = |p: &[&str], a: &[&str]| FunctionClaim {
            permissions: p.iter().map(|s| s.to_string()).collect(),
            audience: a.iter().map(|s| s.to_string()).collect(),
        };
        let f = "ns:fn";
        assert!(granted(&claim(&["ns:fn"], &[]), f));
        assert!(granted(&claim(&["ns:*"], &["*"]), f));
        assert!(!granted(&claim(&[], &["ns:fn"]), f));
        assert!(!granted(&claim(&["ns:*"], &["ns:other"]), f));
        assert!(granted(&claim(&["other:x", "ns:*"], &["x:y", "ns:f*"]), f));
    }

    #[test]
    fn jwks_skips_keys_it_cannot_use() {
        let body = br#"{"keys":[
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"weird","kid":"w"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = parse_jwks(body).expect("parse");
        let ids: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ids, ["ed"]);
        assert_eq!(keys[0].1.alg.as_deref(), Some("EdDSA"));
        assert!(parse_jwks(b"[]").is_err());
    }
}

/// The unknown-key-id refetch window, on tokio's paused clock: a stand-in issuer served
/// in this process, keys fetched over real sockets while the clock runs, and the window
/// crossed with `advance` instead of sleeping through it.
#[cfg(test)]
mod refetch_window {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ed25519_dalek::{Signer as _, SigningKey};
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn signer(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn jwk(kid: &str, key: &SigningKey) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
        })
    }

    /// An OpenID configuration and a JWKS on 127.0.0.1, counting JWKS fetches.
    struct Issuer {
        url: String,
        keys: Arc<Mutex<Vec<serde_json::Value>>>,
        fetches: Arc<AtomicUsize>,
    }

    impl Issuer {
        async fn start() -> Issuer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let keys = Arc::new(Mutex::new(vec![jwk("ed1", &signer(1))]));
            let fetches = Arc::new(AtomicUsize::new(0));
            let (issuer, k, f) = (url.clone(), keys.clone(), fetches.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (issuer, k, f) = (issuer.clone(), k.clone(), f.clone());
                    let answer = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let body = if req.uri().path() == "/jwks" {
                            f.fetch_add(1, Ordering::SeqCst);
                            let keys = k.lock().expect("keys").clone();
                            serde_json::json!({ "keys": keys })
                        } else {
                            serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") })
                        };
                        let body = Full::new(Bytes::from(body.to_string()));
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), answer),
                    );
                }
            });
            Issuer { url, keys, fetches }
        }

        fn publish(&self, kid: &str, key: &SigningKey) {
            self.keys.lock().expect("keys").push(jwk(kid, key));
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        /// An EdDSA token for `ns1:fn1`, valid for ten minutes, naming key `kid`.
        fn token(&self, kid: &str, key: &SigningKey) -> HeaderMap {
            let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let head = b64(serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid }));
            let claims = b64(serde_json::json!({
                "iss": self.url, "aud": self.url,
                "exp": jsonwebtoken::get_current_timestamp() + 600,
                "function": { "permissions": ["ns1:fn1"] },
            }));
            let input = format!("{head}.{claims}");
            let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
            let mut h = HeaderMap::new();
            let value = format!("Bearer {input}.{sig}");
            h.insert(
                http::header::AUTHORIZATION,
                value.parse().expect("header value"),
            );
            h
        }
    }

    async fn started(issuer: &Issuer, window: Duration) -> Jwt {
        let jwt = Jwt::with_refetch_window(
            JwtSettings {
                url: format!("{}/.well-known/openid-configuration", issuer.url),
                timeout: Duration::from_secs(60),
                debug: false,
                function: "ns1:fn1".into(),
            },
            window,
        );
        jwt.start().await.expect("keys at startup");
        jwt
    }

    /// A request deadline that never cuts a wait for a refetch short here.
    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(3600)
    }

    /// Moves the paused clock forward to `t`.
    async fn advance_to(t: tokio::time::Instant) {
        tokio::time::advance(t.saturating_duration_since(tokio::time::Instant::now())).await;
    }

    #[tokio::test]
    async fn a_key_added_later_works_and_unknown_kids_refetch_once_per_window() {
        let window = Duration::from_secs(30);
        let issuer = Issuer::start().await;
        let jwt = started(&issuer, window).await;
        assert_eq!(issuer.fetches(), 1, "one fetch at startup");
        assert_eq!(
            jwt.check(&issuer.token("ed1", &signer(1)), far()).await,
            Ok(())
        );

        // A key published after startup: its first token refetches, and works. The
        // refetch starts between `before` and `after`.
        issuer.publish("ed2", &signer(2));
        let before = tokio::time::Instant::now();
        assert_eq!(
            jwt.check(&issuer.token("ed2", &signer(2)), far()).await,
            Ok(())
        );
        let after = tokio::time::Instant::now();
        assert_eq!(issuer.fetches(), 2, "one refetch for the new key id");

        // Within the window, a flood of unknown key ids fetches nothing. The clock is
        // paused here: no fetch is due, so nothing waits on a socket.
        tokio::time::pause();
        let ghost = issuer.token("ghost", &signer(3));
        for step in 1..=20 {
            assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
            assert_eq!(
                issuer.fetches(),
                2,
                "refetched within the window (step {step})"
            );
            advance_to(before + (window - Duration::from_millis(1)) * step / 20).await;
        }
        assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        assert_eq!(
            issuer.fetches(),
            2,
            "refetched 1 ms before the window ended"
        );
        // The window has passed: one more refetch (over the socket, on the running
        // clock), then none again for many requests.
        advance_to(after + window).await;
        tokio::time::resume();
        assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        assert_eq!(issuer.fetches(), 3, "one refetch once the window passed");
        tokio::time::pause();
        for _ in 0..20 {
            assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        }
        assert_eq!(issuer.fetches(), 3, "one refetch per window");
        // Known keys never refetch.
        for _ in 0..5 {
            assert_eq!(
                jwt.check(&issuer.token("ed1", &signer(1)), far()).await,
                Ok(())
            );
        }
        assert_eq!(issuer.fetches(), 3);
    }

    #[tokio::test]
    async fn the_default_window_is_ten_seconds() {
        let issuer = Issuer::start().await;
        let jwt = Jwt::new(JwtSettings {
            url: format!("{}/.well-known/openid-configuration", issuer.url),
            timeout: Duration::from_secs(60),
            debug: false,
            function: "ns1:fn1".into(),
        });
        jwt.start().await.expect("keys at startup");
        let ghost = issuer.token("ghost", &signer(3));
        let before = tokio::time::Instant::now();
        assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        let after = tokio::time::Instant::now();
        assert_eq!(issuer.fetches(), 2);
        tokio::time::pause();
        advance_to(before + UNKNOWN_KID_REFETCH - Duration::from_millis(1)).await;
        assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        assert_eq!(issuer.fetches(), 2, "refetched within ten seconds");
        advance_to(after + UNKNOWN_KID_REFETCH).await;
        tokio::time::resume();
        assert_eq!(jwt.check(&ghost, far()).await, Err(Denied::Invalid));
        assert_eq!(issuer.fetches(), 3, "refetched after ten seconds");
    }
}
