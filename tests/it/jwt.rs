//! OpenFaaS IAM function tokens (`jwt_auth`) through the real binary, against a real
//! issuer: a small Python server on 127.0.0.1 that serves the OpenID configuration and
//! the JWKS as the gateway does, counts JWKS fetches, and mints tokens with PyJWT and
//! `cryptography` (RSA, EC P-256, Ed25519 keys).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{self, eventually, request, skip, watchdog, Resp, TempDir};

/// The stand-in gateway (also used by bench/run).
const ISSUER_PY: &str = include_str!("jwt_issuer.py");

const FUNCTION_NS: &str = "ns1";
const FUNCTION_NAME: &str = "fn1";

/// Whether PyJWT and cryptography are importable. Under CI a missing one fails the test
/// instead of skipping it.
fn have_pyjwt(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: python3 with PyJWT and cryptography is required under CI"
        );
        skip(test, "python3 with PyJWT and cryptography is not installed");
    }
    ok
}

/// The stand-in gateway, killed (by PID) on drop.
struct Issuer {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl Issuer {
    fn start() -> Issuer {
        let i = Issuer::start_after(Duration::ZERO);
        assert!(
            eventually(Duration::from_secs(30), || i.up()),
            "issuer did not start"
        );
        i
    }

    /// Starts it; it listens only after `delay`.
    fn start_after(delay: Duration) -> Issuer {
        let dir = TempDir::new();
        let script = dir.path().join("issuer.py");
        std::fs::write(&script, ISSUER_PY).expect("write issuer.py");
        let port = util::child_port();
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(delay.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn issuer");
        Issuer {
            port,
            child,
            _dir: dir,
        }
    }

    fn up(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/.well-known/openid-configuration",
            self.port
        )
    }

    /// A token minted by PyJWT: `spec` may set `kid`, `alg`, `signer` (the key that
    /// really signs) and `claims` (merged; null removes one).
    fn token(&self, spec: Value) -> String {
        let r = request(
            self.port,
            "POST",
            "/_sign",
            &[("Content-Type", "application/json")],
            spec.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "sign {spec}: {}", r.text());
        r.text()
    }

    fn publish(&self, kid: &str) {
        let r = request(
            self.port,
            "POST",
            "/_publish",
            &[],
            json!({ "kid": kid }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200);
    }

    fn unpublish(&self, kid: &str) {
        let r = request(
            self.port,
            "POST",
            "/_unpublish",
            &[],
            json!({ "kid": kid }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200);
    }

    fn jwks_fetches(&self) -> u64 {
        self.count("jwks")
    }

    /// `jwks`: JWKS fetches begun; `trickling`: slow answers still being sent.
    fn count(&self, what: &str) -> u64 {
        let r = request(self.port, "GET", "/_count", &[], b"");
        crate::util::json(&r)[what].as_u64().expect("count")
    }

    /// Later JWKS answers trickle, a byte a second.
    fn slow_down(&self) {
        assert_eq!(request(self.port, "POST", "/_slow", &[], b"").status, 200);
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A handler that leaves a mark each time it runs and prints the Authorization header
/// it was given.
struct Handler {
    dir: TempDir,
    script: PathBuf,
}

impl Handler {
    fn new() -> Handler {
        let dir = TempDir::new();
        let marks = dir.path().join("runs");
        let script = dir.script(
            "handler.sh",
            &format!(
                "#!/bin/sh\necho run >> {}\nprintf 'ran auth=%s' \"$Http_Authorization\"\n",
                marks.display()
            ),
        );
        Handler { dir, script }
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

fn protected(issuer: &Issuer, handler: &Handler) -> crate::util::Builder {
    watchdog()
        .fprocess(handler.script.display().to_string())
        .env("jwt_auth", "true")
        .env("jwt_auth_url", issuer.url())
        .env("OPENFAAS_NAME", FUNCTION_NAME)
        .env("OPENFAAS_NAMESPACE", FUNCTION_NS)
}

fn call(port: u16, authorization: Option<&str>) -> Resp {
    match authorization {
        Some(a) => request(port, "POST", "/", &[("Authorization", a)], b"body"),
        None => request(port, "POST", "/", &[], b"body"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_401(r: &Resp, text: &str, case: &str) {
    assert_eq!(r.status, 401, "{case}: {}", r.text());
    assert_eq!(r.text(), format!("{text}\n"), "{case}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=IAM function invoke"),
        "{case}"
    );
    assert_eq!(
        r.header("x-openfaas-internal"),
        Some("faas-middleware"),
        "{case}"
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{case}"
    );
}

#[test]
fn gateway_tokens_pass_with_rsa_ec_and_ed25519_keys() {
    if !have_pyjwt("gateway_tokens_pass_with_rsa_ec_and_ed25519_keys") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).start();
    let mut runs = 0;
    for spec in [
        json!({ "kid": "rsa1" }),
        json!({ "kid": "rsa1", "alg": "RS512" }),
        json!({ "kid": "rsa1", "alg": "RS384" }),
        json!({ "kid": "rsa1", "alg": "PS256" }),
        json!({ "kid": "rsa1", "alg": "PS384" }),
        json!({ "kid": "rsa1", "alg": "PS512" }),
        json!({ "kid": "ec1" }),
        json!({ "kid": "ec384" }),
        json!({ "kid": "ed1" }),
    ] {
        let token = issuer.token(spec.clone());
        let r = call(w.port, Some(&bearer(&token)));
        assert_eq!(r.status, 200, "{spec}: {}", r.text());
        // The Authorization header reaches the handler, so it may read its claims.
        assert_eq!(r.text(), format!("ran auth=Bearer {token}"), "{spec}");
        runs += 1;
        assert_eq!(handler.runs(), runs);
    }
    // The scheme in any case.
    let token = issuer.token(json!({ "kid": "ec1" }));
    let r = call(w.port, Some(&format!("bearer {token}")));
    assert_eq!(r.status, 200, "lower-case scheme: {}", r.text());
    // Probes stay open.
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(w.get("/_/ready").status, 200);
    let log = w.log();
    assert!(!log.contains(&token), "a token was logged:\n{log}");
    assert!(
        log.contains(&format!("function {FUNCTION_NS}:{FUNCTION_NAME}")),
        "{log}"
    );
}

#[test]
fn every_bad_token_gets_the_peers_401_and_the_handler_never_runs() {
    if !have_pyjwt("every_bad_token_gets_the_peers_401_and_the_handler_never_runs") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler)
        .env("metrics_port", "0")
        .start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = issuer.token(json!({}));
    let no_bearer = "Bearer must be present in Authorization header";
    let failed = "failed to verify JWT token";
    let mut cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, no_bearer),
        ("Basic", Some("Basic dXNlcjpwYXNz".into()), no_bearer),
        ("no scheme", Some(good.clone()), no_bearer),
        ("empty bearer", Some("Bearer ".into()), no_bearer),
        ("garbage", Some("Bearer not-a-token".into()), failed),
        ("three dots of garbage", Some("Bearer a.b.c".into()), failed),
    ];
    let tokens = [
        (
            "wrong signature",
            json!({ "kid": "rsa1", "signer": "ghost" }),
        ),
        ("expired", json!({ "claims": { "exp": now - 60 } })),
        ("not yet valid", json!({ "claims": { "nbf": now + 60 } })),
        ("no exp", json!({ "claims": { "exp": null } })),
        (
            "wrong iss",
            json!({ "claims": { "iss": "http://evil.example" } }),
        ),
        ("no iss", json!({ "claims": { "iss": null } })),
        (
            "wrong aud",
            json!({ "claims": { "aud": ["http://other.example"] } }),
        ),
        ("no aud", json!({ "claims": { "aud": null } })),
        ("unknown kid", json!({ "kid": "ghost" })),
        ("alg none", json!({ "alg": "none" })),
        (
            "HS256 with the RSA public key",
            json!({ "kid": "rsa1", "alg": "HS256-confusion" }),
        ),
        (
            "ES256 token naming the RSA key",
            json!({ "kid": "rsa1", "signer": "ec1" }),
        ),
        (
            "ES384 token naming the P-256 key",
            json!({ "kid": "ec1", "signer": "ec384" }),
        ),
        (
            "RS256 token naming the Ed25519 key",
            json!({ "kid": "ed1", "signer": "rsa1" }),
        ),
    ];
    for (case, spec) in &tokens {
        cases.push((case, Some(bearer(&issuer.token(spec.clone()))), failed));
    }
    // A tampered payload under a good signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1].insert(0, 'e');
    cases.push(("tampered", Some(bearer(&parts.join("."))), failed));
    for (case, auth, text) in &cases {
        let r = call(w.port, auth.as_deref());
        assert_401(&r, text, case);
    }
    // The same header twice is not one token.
    let r = request(
        w.port,
        "POST",
        "/",
        &[
            ("Authorization", &bearer(&good)),
            ("Authorization", &bearer(&good)),
        ],
        b"",
    );
    assert_401(&r, failed, "twice");
    assert_eq!(handler.runs(), 0, "the handler ran for a rejected request");
    // Counted, and nothing of a token logged.
    let mport = w.metrics_port.expect("metrics port");
    let metrics = request(mport, "GET", "/metrics", &[], b"").text();
    let expected = format!("fwatchdog_auth_failures_total {}", cases.len() + 1);
    assert!(metrics.contains(&expected), "want {expected}:\n{metrics}");
    let log = w.log();
    for (_, auth, _) in &cases {
        if let Some(a) = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            if a.len() > 10 {
                assert!(!log.contains(a), "a token was logged:\n{log}");
            }
        }
    }
    // And the good token still works.
    assert_eq!(call(w.port, Some(&bearer(&good))).status, 200);
}

#[test]
fn permissions_and_function_audience_decide_403_or_200() {
    if !have_pyjwt("permissions_and_function_audience_decide_403_or_200") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).start();
    let cases: &[(Value, u16)] = &[
        (json!({ "permissions": ["ns1:fn1"] }), 200),
        (json!({ "permissions": ["*"] }), 200),
        (json!({ "permissions": ["ns1:*"] }), 200),
        (json!({ "permissions": ["*:fn1"] }), 200),
        (json!({ "permissions": ["other:x", "ns1:f*"] }), 200),
        (
            json!({ "permissions": ["ns1:fn1"], "audience": ["ns1:fn1"] }),
            200,
        ),
        (json!({ "permissions": ["ns1:*"], "audience": ["*"] }), 200),
        (json!({ "permissions": ["ns1:*"], "audience": [] }), 200),
        (json!({ "permissions": [] }), 403),
        (json!({}), 403),
        (json!({ "permissions": ["ns1:fn2"] }), 403),
        (json!({ "permissions": ["ns2:*"] }), 403),
        // Anchored: a substring is not a grant.
        (json!({ "permissions": ["fn1"] }), 403),
        (json!({ "permissions": ["ns1:fn"] }), 403),
        (json!({ "permissions": ["s1:fn1"] }), 403),
        (
            json!({ "permissions": ["ns1:fn1"], "audience": ["ns1:other"] }),
            403,
        ),
        (json!({ "permissions": ["*"], "audience": ["ns2:*"] }), 403),
    ];
    let mut runs = 0;
    for (function, want) in cases {
        let token = issuer.token(json!({ "kid": "ec1", "claims": { "function": function } }));
        let r = call(w.port, Some(&bearer(&token)));
        assert_eq!(r.status, *want, "{function}: {}", r.text());
        if *want == 403 {
            assert_eq!(r.text(), "insufficient permissions\n", "{function}");
            assert_eq!(r.header("x-openfaas-internal"), Some("faas-middleware"));
            assert_eq!(r.header("www-authenticate"), None);
        } else {
            runs += 1;
        }
        assert_eq!(handler.runs(), runs, "{function}");
    }
    // No `function` claim at all.
    let token = issuer.token(json!({ "claims": { "function": null } }));
    assert_eq!(call(w.port, Some(&bearer(&token))).status, 403);
}

#[test]
fn debug_logs_reasons_and_key_ids_but_nothing_of_a_token() {
    if !have_pyjwt("debug_logs_reasons_and_key_ids_but_nothing_of_a_token") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler)
        .env("jwt_auth_debug", "true")
        .start();
    let expired = issuer.token(json!({ "claims": { "exp": 1000 } }));
    let odd = issuer.token(json!({ "claims": { "function": "marker-in-a-claim" } }));
    let good = issuer.token(json!({ "kid": "ed1" }));
    assert_eq!(call(w.port, Some(&bearer(&expired))).status, 401);
    assert_eq!(call(w.port, Some(&bearer(&odd))).status, 401);
    assert_eq!(call(w.port, Some(&bearer(&good))).status, 200);
    // Log lines are written by a background writer; wait for the last one expected.
    assert!(
        w.wait_log("key id ed1", Duration::from_secs(5)),
        "{}",
        w.log()
    );
    let log = w.log();
    assert!(
        log.contains("token rejected: ExpiredSignature (key id rsa1)"),
        "{log}"
    );
    assert!(log.contains("token rejected: malformed claims"), "{log}");
    assert!(log.contains("key id ed1"), "{log}");
    for secret in [&expired, &odd, &good] {
        assert!(!log.contains(secret.as_str()), "a token was logged:\n{log}");
        let signature = secret.rsplit('.').next().expect("signature");
        assert!(!log.contains(signature), "a signature was logged:\n{log}");
    }
    assert!(
        !log.contains("marker-in-a-claim"),
        "a claim was logged:\n{log}"
    );
}

#[test]
fn a_key_removed_from_the_set_stops_working_at_the_next_fetch() {
    if !have_pyjwt("a_key_removed_from_the_set_stops_working_at_the_next_fetch") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).start();
    let token = bearer(&issuer.token(json!({ "kid": "ec1" })));
    assert_eq!(call(w.port, Some(&token)).status, 200);
    assert_eq!(call(w.port, Some(&token)).status, 200);
    issuer.unpublish("ec1");
    // An unknown key id makes the refetch that learns of the removal.
    let ghost = bearer(&issuer.token(json!({ "kid": "ghost" })));
    assert_eq!(call(w.port, Some(&ghost)).status, 401);
    assert_eq!(issuer.jwks_fetches(), 2);
    assert_401(
        &call(w.port, Some(&token)),
        "failed to verify JWT token",
        "key removed",
    );
    assert_eq!(handler.runs(), 2);
}

#[test]
fn a_token_that_worked_is_refused_once_it_expires() {
    if !have_pyjwt("a_token_that_worked_is_refused_once_it_expires") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = bearer(&issuer.token(json!({ "kid": "ec1", "claims": { "exp": now + 2 } })));
    for _ in 0..3 {
        assert_eq!(call(w.port, Some(&token)).status, 200);
    }
    // exp, plus the 1 s leeway, plus a second for the clock's granularity.
    std::thread::sleep(
        Duration::from_secs(now + 2 + 2).saturating_sub(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock"),
        ) + Duration::from_millis(200),
    );
    assert_401(
        &call(w.port, Some(&token)),
        "failed to verify JWT token",
        "expired after use",
    );
    assert_eq!(handler.runs(), 3);
}

/// Through the real binary: a key the issuer publishes after startup works, with one
/// refetch. How often unknown key ids may refetch (the window) is tested in process on a
/// paused clock (auth::jwt's refetch_window tests), not by sleeping through it here.
#[test]
fn a_key_added_later_works_with_one_refetch() {
    if !have_pyjwt("a_key_added_later_works_with_one_refetch") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).start();
    assert_eq!(issuer.jwks_fetches(), 1, "one fetch at startup");
    let later = issuer.token(json!({ "kid": "rsa2" }));
    issuer.publish("rsa2");
    let r = call(w.port, Some(&bearer(&later)));
    assert_eq!(r.status, 200, "a key published after startup: {}", r.text());
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the new key id");
    // Within the window (ten seconds) an unknown key id fetches nothing more (one more
    // only if this machine took longer than the window to get here).
    let ghost = issuer.token(json!({ "kid": "ghost" }));
    assert_eq!(call(w.port, Some(&bearer(&ghost))).status, 401);
    // Known keys never refetch.
    let known = issuer.token(json!({ "kid": "ed1" }));
    assert_eq!(call(w.port, Some(&bearer(&known))).status, 200);
    assert!(issuer.jwks_fetches() <= 3, "{}", issuer.jwks_fetches());
    assert_eq!(handler.runs(), 2);
}

/// Six requests with unknown key ids while the issuer trickles its keys: they share one
/// refetch, and each is answered at its own deadline (`write_timeout`), while that fetch
/// is still going. Before, each waiter found the window (stamped at the start of the
/// slow fetch) over and started another: answers at 10, 20 ... 60 s and six fetches
/// (on the old code this test saw 7 fetches and took 64 s).
#[test]
fn waiters_share_one_slow_refetch_and_stop_waiting_at_their_deadline() {
    if !have_pyjwt("waiters_share_one_slow_refetch_and_stop_waiting_at_their_deadline") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler)
        .env("write_timeout", "1s")
        .start();
    assert_eq!(issuer.jwks_fetches(), 1, "one fetch at startup");
    let ghost = bearer(&issuer.token(json!({ "kid": "ghost" })));
    issuer.slow_down();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..6)
            .map(|_| s.spawn(|| call(w.port, Some(&ghost)).status))
            .collect();
        calls.into_iter().map(|c| c.join().expect("call")).collect()
    });
    // Read before anything else can end the slow answer.
    let trickling = issuer.count("trickling");
    assert_eq!(statuses, [401; 6]);
    assert_eq!(issuer.jwks_fetches(), 2, "one shared refetch");
    assert_eq!(trickling, 1, "the answers came while the refetch still ran");
    assert_eq!(handler.runs(), 0);
}

#[test]
fn health_is_503_until_a_late_issuer_answers() {
    if !have_pyjwt("health_is_503_until_a_late_issuer_answers") {
        return;
    }
    let issuer = Issuer::start_after(Duration::from_secs(2));
    let handler = Handler::new();
    let port = util::child_port();
    // Without the lock file health rests on the keys alone.
    let builder = protected(&issuer, &handler)
        .env("port", port.to_string())
        .env("suppress_lock", "true");
    let started = Instant::now();
    let starting = std::thread::spawn(move || builder.start());
    assert!(
        eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "fwatchdog did not bind"
    );
    assert!(!issuer.up(), "the issuer came up too early for this test");
    assert_eq!(request(port, "GET", "/_/health", &[], b"").status, 503);
    assert_eq!(request(port, "GET", "/_/ready", &[], b"").status, 503);
    let r = call(port, None);
    assert_eq!(
        r.status,
        503,
        "function requests wait for the keys: {}",
        r.text()
    );
    assert_eq!(handler.runs(), 0);
    let w = starting.join().expect("started");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_eq!(w.get("/_/health").status, 200);
    let token = issuer.token(json!({}));
    assert_eq!(call(w.port, Some(&bearer(&token))).status, 200);
    assert_eq!(call(w.port, None).status, 401);
}

#[test]
fn an_issuer_that_never_answers_is_exit_1_naming_the_url() {
    let url = format!(
        "http://127.0.0.1:{}/.well-known/openid-configuration",
        util::child_port()
    );
    let started = Instant::now();
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("jwt_auth", "true")
        .env("jwt_auth_url", &url)
        .env("jwt_auth_timeout", "2s")
        .env("OPENFAAS_NAME", "fn1")
        .env("OPENFAAS_NAMESPACE", "ns1")
        .run(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(2), "gave up early");
    assert!(
        out.contains(&url) && out.contains("jwt_auth_timeout=2s"),
        "{out}"
    );
    // The last error is the real one, not an attempt cut short by the deadline.
    assert!(
        out.contains("last error: ") && out.contains("Connection refused"),
        "{out}"
    );
    assert!(!out.contains("Listening on port"), "{out}");
}

#[test]
fn jwt_auth_without_the_function_name_is_exit_2() {
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("jwt_auth", "true")
        .env("jwt_auth_url", "http://127.0.0.1:9/x")
        .env("OPENFAAS_NAMESPACE", "ns1")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("OPENFAAS_NAME"), "{out}");

    if !std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists() {
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("jwt_auth", "yes")
            .env("jwt_auth_url", "http://127.0.0.1:9/x")
            .env("OPENFAAS_NAME", "fn1")
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{out}");
        assert!(out.contains("OPENFAAS_NAMESPACE"), "{out}");
    }
    for (k, v) in [
        ("jwt_auth", "maybe"),
        (
            "jwt_auth_url",
            "https://gateway.example/.well-known/openid-configuration",
        ),
        ("jwt_auth_timeout", "0"),
    ] {
        let (status, out) = watchdog()
            .fprocess("cat")
            .env("jwt_auth", "true")
            .env(k, v)
            .env("OPENFAAS_NAME", "fn1")
            .env("OPENFAAS_NAMESPACE", "ns1")
            .run(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{k}={v}: {out}");
        assert!(out.contains(k), "{k}={v}: {out}");
    }
}

#[test]
fn jwt_auth_yes_is_on() {
    if !have_pyjwt("jwt_auth_yes_is_on") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let w = protected(&issuer, &handler).env("jwt_auth", "yes").start();
    assert_401(
        &call(w.port, None),
        "Bearer must be present in Authorization header",
        "jwt_auth=yes",
    );
    assert_eq!(handler.runs(), 0);
}

#[test]
fn jwt_auth_with_an_api_key_needs_both() {
    if !have_pyjwt("jwt_auth_with_an_api_key_needs_both") {
        return;
    }
    let issuer = Issuer::start();
    let handler = Handler::new();
    let secrets = TempDir::new();
    std::fs::write(secrets.path().join("api-key"), "k3y-value\n").expect("write");
    let w = protected(&issuer, &handler)
        .arg("--api-key-secret")
        .arg("api-key")
        .arg("--secrets-dir")
        .arg(secrets.path().to_str().expect("utf8"))
        .start();
    let token = bearer(&issuer.token(json!({})));
    let with = |headers: &[(&str, &str)]| request(w.port, "POST", "/", headers, b"");
    let r = with(&[("Authorization", &token)]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "Access denied!\n"),
        "token only"
    );
    let r = with(&[("X-Api-Key", "k3y-value")]);
    assert_401(
        &r,
        "Bearer must be present in Authorization header",
        "key only",
    );
    let r = with(&[("X-Api-Key", "wrong"), ("Authorization", &token)]);
    assert_eq!(r.status, 401, "wrong key, good token");
    assert_eq!(handler.runs(), 0);
    let r = with(&[("X-Api-Key", "k3y-value"), ("Authorization", &token)]);
    assert_eq!(r.status, 200, "both: {}", r.text());
    assert_eq!(handler.runs(), 1);
}

#[test]
fn peer_settings_we_do_not_read_are_warned_about() {
    let w = watchdog()
        .fprocess("cat")
        .env("debug_headers", "true")
        .env("read_debug", "true")
        .env("jwt_auth_debug", "true")
        .start();
    for name in ["debug_headers", "read_debug"] {
        assert!(
            w.log()
                .contains(&format!("{name} is set but not read by fwatchdog")),
            "{name}:\n{}",
            w.log()
        );
    }
    assert!(
        w.log()
            .contains("jwt_auth_debug has no effect without jwt_auth=true"),
        "{}",
        w.log()
    );
}
