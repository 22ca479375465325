//! Who may call the function: one chain over the configured checks.
//!
//! Two checks exist: API keys from mounted secrets ([`api_key`]) and OpenFaaS IAM
//! function tokens ([`jwt`]). A function request passes every check that is configured,
//! in that order, and is decided before its body is read and before any handler starts.
//! Probes and metrics never come here. Each refusal has one answer, built in
//! [`Refusal::response`], so the wording the peers' clients expect lives in one place.

pub mod api_key;
pub mod jwt;

pub use api_key::{parse_keys, ApiKeys, Key};
pub use jwt::Jwt;

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::body::{self, Body};

/// The checks a function request must pass.
#[derive(Debug, Default)]
pub struct Chain {
    api_keys: Option<ApiKeys>,
    jwt: Option<Jwt>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The API key header was missing or wrong.
    ApiKey,
    /// The function token was missing, invalid or not for this function.
    Token(jwt::Denied),
}

impl Chain {
    /// The checks configured: API keys from mounted secrets, function tokens, or both.
    pub fn new(api_keys: Option<ApiKeys>, jwt: Option<jwt::JwtSettings>) -> Chain {
        Chain {
            api_keys,
            jwt: jwt.map(Jwt::new),
        }
    }

    pub fn jwt(&self) -> Option<&Jwt> {
        self.jwt.as_ref()
    }

    /// False while a check still waits for what it needs (the issuer's keys).
    pub fn ready(&self) -> bool {
        self.jwt.as_ref().is_none_or(Jwt::ready)
    }

    /// Runs every configured check, waiting (for a refetch of token keys) until
    /// `deadline` at most. On success the API key header is removed unless it is
    /// forwarded; the `Authorization` header stays, so a handler may read its claims.
    pub async fn check(
        &self,
        headers: &mut HeaderMap,
        deadline: tokio::time::Instant,
    ) -> Result<(), Refusal> {
        if let Some(keys) = &self.api_keys {
            if !keys.check(headers) {
                return Err(Refusal::ApiKey);
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.check(headers, deadline).await.map_err(Refusal::Token)?;
        }
        if let Some(hidden) = self.api_keys.as_ref().and_then(ApiKeys::hidden) {
            headers.remove(hidden);
        }
        Ok(())
    }

    /// The answer to a refused request.
    pub fn response(&self, refusal: Refusal) -> http::Response<Body> {
        refusal.response(self.api_keys.as_ref())
    }
}

impl Refusal {
    /// Whether this refusal counts as an authentication failure (not a 503 while the
    /// keys are still being fetched).
    pub fn is_failure(self) -> bool {
        self != Refusal::Token(jwt::Denied::NotReady)
    }

    fn response(self, keys: Option<&ApiKeys>) -> http::Response<Body> {
        use jwt::Denied;
        match self {
            Refusal::ApiKey => {
                let mut resp = body::text(StatusCode::UNAUTHORIZED, "Access denied!\n");
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                if let Some(keys) = keys {
                    let challenge = format!(
                        "ApiKey header=\"{}\"",
                        crate::header::canonical(keys.header().as_str())
                    );
                    if let Ok(v) = HeaderValue::from_str(&challenge) {
                        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
                    }
                }
                resp
            }
            Refusal::Token(Denied::NotReady) => {
                let mut resp = body::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable: waiting for the token issuer's keys\n",
                );
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
            Refusal::Token(denied) => {
                let (status, text) = match denied {
                    Denied::NoBearer => (
                        StatusCode::UNAUTHORIZED,
                        "Bearer must be present in Authorization header\n",
                    ),
                    Denied::Forbidden => (StatusCode::FORBIDDEN, "insufficient permissions\n"),
                    _ => (StatusCode::UNAUTHORIZED, "failed to verify JWT token\n"),
                };
                let mut resp = body::text(status, text);
                let h = resp.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                h.insert(
                    http::header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    "x-openfaas-internal",
                    HeaderValue::from_static("faas-middleware"),
                );
                if status == StatusCode::UNAUTHORIZED {
                    h.insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=IAM function invoke"),
                    );
                }
                resp
            }
        }
    }
}
