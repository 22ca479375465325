//! lambda mode: unmodified AWS Lambda functions, whose runtime (awslambdaric,
//! lambda_runtime, a custom `bootstrap`) talks the Lambda Runtime API to us.
//!
//! Two ways in. `POST /2015-03-31/functions/<name>/invocations` is the Invoke API (what
//! the AWS SDKs, `aws lambda invoke --endpoint-url` and RIE users call): the body is the
//! event, a function error is 200 with `X-Amz-Function-Error`. Every other request
//! becomes an API Gateway HTTP API 2.0 event, the format Function URLs use
//! ([`event`]), and the function's result is mapped back to an HTTP response.
//!
//! Either way the request's budget bounds it: the event is held whole (6 MiB by
//! default), it waits for a runtime in the [`hub`]'s line no longer than the write
//! deadline, and once a runtime has it, `exec_timeout` (or a shorter `X-Timeout`) is its
//! `Lambda-Runtime-Deadline-Ms`; past it the client is answered and the runtime killed
//! and restarted ([`crate::backend`] runs the processes, [`api`] serves them).

pub mod api;
pub mod event;
pub mod hub;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use super::failure::{duration_header, X_DURATION};
use super::{Ctx, Failure};
use crate::body::{self, Body};
use crate::config::Config;
use hub::{Hub, Outcome, Pending};

static FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
static INVOCATION_TYPE: HeaderName = HeaderName::from_static("x-amz-invocation-type");
static EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
static TRACE: HeaderName = HeaderName::from_static("x-amzn-trace-id");
static CLIENT_CONTEXT: HeaderName = HeaderName::from_static("x-amz-client-context");

/// The lambda runner: what answers function requests in lambda mode.
pub struct Lambda {
    cfg: Arc<Config>,
    hub: Arc<Hub>,
}

/// Which way the request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Invoke,
    Http,
}

impl Lambda {
    pub fn new(cfg: Arc<Config>, hub: Arc<Hub>) -> Lambda {
        Lambda { cfg, hub }
    }

    /// Answers one request.
    pub async fn call(&self, req: Request<Body>, ctx: &Ctx) -> Response<Body> {
        let mut budget = ctx.budget.clone();
        let started = budget.started;
        let (parts, body) = req.into_parts();
        let way = if parts.method == Method::POST && invoke_path(parts.uri.path()) {
            Way::Invoke
        } else {
            Way::Http
        };
        let kind = parts
            .headers
            .get(&INVOCATION_TYPE)
            .map(|v| v.as_bytes().to_ascii_lowercase());
        if way == Way::Invoke && kind.as_deref() == Some(b"dryrun") {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return resp;
        }
        let asynchronous = way == Way::Invoke && kind.as_deref() == Some(b"event");
        if let Err(f) = budget.check_declared(&parts.headers) {
            return f.answer(started);
        }
        if let Some(t) = super::proxy::x_timeout(&parts.headers, self.cfg.timeouts.exec) {
            budget.shorten("X-Timeout", t);
        }
        let payload = match budget.collect(body).await {
            Ok((chunks, total)) => join(chunks, total),
            Err(f) => return f.answer(started),
        };
        if let Err(f) = budget.expired() {
            return f.answer(started);
        }
        let id = request_id(&ctx.call_id);
        let event = match way {
            Way::Invoke => payload,
            Way::Http => event::request(&parts, &payload, &id, self.cfg.auth.hidden_header()),
        };
        let (reply, outcome) = oneshot::channel();
        self.hub.submit(Pending {
            id: id.clone(),
            event,
            trace_id: parts.headers.get(&TRACE).cloned(),
            client_context: client_context(&parts.headers),
            budget: budget.clone(),
            slot: ctx.slot.clone(),
            reply,
        });
        if asynchronous {
            tokio::spawn(settle_detached(id.clone(), outcome));
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::ACCEPTED;
            insert_id(resp.headers_mut(), &id);
            return resp;
        }
        // Waiting for a runtime counts against the write deadline; once one has it, the
        // hub answers by the run's deadline.
        let got = tokio::time::timeout_at(budget.write_deadline.into(), outcome).await;
        let outcome = match got {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => Outcome::Exited("the invocation was dropped".to_owned()),
            Err(_) => Outcome::Timeout(budget.write()),
        };
        let mut resp = match way {
            Way::Invoke => invoke_answer(event::without_prelude(outcome).await, &id, started),
            Way::Http => event::answer(outcome, started).await,
        };
        if !matches!(way, Way::Http) || resp.status().is_success() {
            insert_id(resp.headers_mut(), &id);
        }
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, budget.response(body))
    }
}

/// `/2015-03-31/functions/<name>/invocations`, any function name (there is one).
fn invoke_path(path: &str) -> bool {
    path.strip_prefix("/2015-03-31/functions/")
        .and_then(|r| r.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

fn join(chunks: Vec<Bytes>, total: u64) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut v = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for c in chunks {
                v.extend_from_slice(&c);
            }
            Bytes::from(v)
        }
    }
}

/// The invocation's request id: the request's `X-Call-Id` when it is a usable one (and
/// so the id in the function's context and in every log line), else a fresh UUID.
fn request_id(call_id: &str) -> String {
    let usable = !call_id.is_empty()
        && call_id.len() <= 128
        && call_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if usable {
        call_id.to_owned()
    } else {
        crate::logging::new_call_id()
    }
}

fn insert_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(REQUEST_ID.clone(), v);
    }
}

/// `X-Amz-Client-Context` is base64 on the Invoke API; runtimes get it decoded.
fn client_context(h: &HeaderMap) -> Option<HeaderValue> {
    use base64::Engine as _;
    let raw = h.get(&CLIENT_CONTEXT)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .ok()?;
    HeaderValue::from_bytes(&decoded).ok()
}

/// An `Event` invocation: nobody waits for it; its failures are logged.
async fn settle_detached(id: String, outcome: oneshot::Receiver<Outcome>) {
    match outcome.await {
        Ok(Outcome::Result { body, .. }) => {
            // A stream must be read for the runtime to finish it.
            let _ = http_body_util::BodyExt::collect(body).await;
        }
        Ok(Outcome::Error { error_type, .. }) => {
            tracing::warn!("Lambda Event invocation {id} failed: {error_type}")
        }
        Ok(Outcome::TooLarge(max)) => {
            tracing::warn!("Lambda Event invocation {id}: result over {max} bytes")
        }
        Ok(Outcome::Timeout(d)) => {
            tracing::warn!("Lambda Event invocation {id} timed out: {}", d.exceeded())
        }
        Ok(Outcome::Exited(why)) => {
            tracing::warn!("Lambda Event invocation {id} failed: the runtime exited: {why}")
        }
        Err(_) => {}
    }
}

/// A JSON answer with `X-Amz-Function-Error: Unhandled`: how the Invoke API reports a
/// function that failed.
fn function_error(doc: Bytes, started: std::time::Instant) -> Response<Body> {
    let mut resp = Response::new(body::full(doc));
    let h = resp.headers_mut();
    h.insert(
        FUNCTION_ERROR.clone(),
        HeaderValue::from_static("Unhandled"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_DURATION.clone(), duration_header(started));
    resp
}

/// The Invoke API's answer: 200 with the result, or 200 with `X-Amz-Function-Error`
/// and an error document, as Lambda answers.
fn invoke_answer(outcome: Outcome, id: &str, started: std::time::Instant) -> Response<Body> {
    let doc = |kind: &str, message: String| {
        Bytes::from(serde_json::json!({ "errorType": kind, "errorMessage": message }).to_string())
    };
    match outcome {
        Outcome::Result {
            content_type, body, ..
        } => {
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            h.insert(
                EXECUTED_VERSION.clone(),
                HeaderValue::from_static("$LATEST"),
            );
            h.insert(X_DURATION.clone(), duration_header(started));
            resp
        }
        Outcome::Error { body, .. } => function_error(body, started),
        Outcome::Timeout(d) => function_error(
            doc(
                "Sandbox.Timedout",
                format!(
                    "RequestId: {id} Error: Task timed out after {:.2} seconds",
                    d.limit.as_secs_f64()
                ),
            ),
            started,
        ),
        Outcome::Exited(why) => function_error(
            doc(
                "Runtime.ExitError",
                format!("RequestId: {id} Error: Runtime exited: {why}"),
            ),
            started,
        ),
        Outcome::TooLarge(max) => function_error(
            doc(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size exceeded maximum allowed payload size ({max} bytes)."
                ),
            ),
            started,
        ),
    }
}

/// The failure an outcome that is not a result gives on the HTTP way in.
fn http_failure(outcome: Outcome) -> Failure {
    match outcome {
        Outcome::Timeout(d) => Failure::Timeout(d),
        Outcome::TooLarge(max) => Failure::ResponseTooLarge(max),
        Outcome::Error { .. } | Outcome::Exited(_) | Outcome::Result { .. } => {
            Failure::BadGateway("Internal Server Error".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_paths_name_one_function() {
        assert!(invoke_path("/2015-03-31/functions/function/invocations"));
        assert!(invoke_path("/2015-03-31/functions/my-fn/invocations"));
        for not in [
            "/2015-03-31/functions//invocations",
            "/2015-03-31/functions/a/b/invocations",
            "/2015-03-31/functions/f/invocations/x",
            "/",
        ] {
            assert!(!invoke_path(not), "{not}");
        }
    }

    #[test]
    fn a_call_id_is_the_request_id_when_it_is_usable() {
        assert_eq!(request_id("abc-123_x.y"), "abc-123_x.y");
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            let id = request_id(bad);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "{id}");
        }
    }
}
