//! The Lambda Runtime API (2018-06-01) that runtimes call: `next` (a long poll that
//! never answers an error, since both real clients crash on one), `response` (buffered,
//! or streamed with `Lambda-Runtime-Function-Response-Mode: streaming`), `error` and
//! `init/error`.
//!
//! Each runtime slot has its own loopback listener (its `AWS_LAMBDA_RUNTIME_API`), so a
//! call tells which runtime made it without asking the kernel: that is the process
//! group killed when one of its invocations times out.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::hub::{Hub, Outcome};
use crate::body::{self, Abort, Body, BoxError};
use crate::metrics::Invocation as Counted;

const PREFIX: &str = "/2018-06-01/runtime/";
/// The most of an `init/error` or of an error document read when no budget says more.
const ERROR_MAX: u64 = 1024 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
static DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
static FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
static TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
static CLIENT_CONTEXT: HeaderName = HeaderName::from_static("lambda-runtime-client-context");
static RESPONSE_MODE: HeaderName = HeaderName::from_static("lambda-runtime-function-response-mode");
pub(super) static ERROR_TYPE: HeaderName =
    HeaderName::from_static("lambda-runtime-function-error-type");
/// What `lambda_runtime` writes into the body, as text, instead of a real trailer.
const IN_BODY_TRAILER: &[u8] = b"Lambda-Runtime-Function-Error-Type:";

/// Serves the Runtime API of runtime slot `runtime` on `listener` until the process
/// ends.
pub async fn serve(hub: Arc<Hub>, runtime: usize, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("Lambda Runtime API: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(route(&hub, runtime, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(hub: &Arc<Hub>, runtime: usize, req: Request<Incoming>) -> Response<Body> {
    let Some(rest) = req.uri().path().strip_prefix(PREFIX) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such Runtime API path",
        );
    };
    let rest = rest.to_owned();
    match (req.method(), rest.as_str()) {
        (&Method::GET, "invocation/next") => next(hub, runtime).await,
        (&Method::POST, "init/error") => init_error(hub, runtime, req).await,
        (&Method::POST, r) => match r
            .strip_prefix("invocation/")
            .and_then(|r| r.rsplit_once('/'))
        {
            Some((id, "response")) => response(hub, runtime, id, req).await,
            Some((id, "error")) => error(hub, runtime, id, req).await,
            _ => api_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such Runtime API path",
            ),
        },
        _ => api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed on this Runtime API path",
        ),
    }
}

/// The API's own error document, `{"errorMessage","errorType"}`.
fn api_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let doc = serde_json::json!({ "errorMessage": message, "errorType": kind });
    let mut resp = Response::new(body::full(doc.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(body::full(r#"{"status":"OK"}"#));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn unknown_id() -> Response<Body> {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "unknown request id, or the invocation was already answered or timed out",
    )
}

/// `GET next`: blocks until an invocation is in line. It never answers an error the
/// runtime would see: only a call parked by a process that has since died (nobody
/// reads it) ends without an event.
async fn next(hub: &Arc<Hub>, runtime: usize) -> Response<Body> {
    loop {
        let Some(p) = hub.take(runtime).await else {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runtime.Gone",
                "this runtime process has exited",
            );
        };
        if let Err(_late) = p.budget.expired() {
            let _ = p.reply.send(Outcome::Timeout(p.budget.write()));
            continue;
        }
        let deadline = p.budget.run();
        let mut resp = Response::new(body::full(p.event.clone()));
        let h = resp.headers_mut();
        h.insert(
            DEADLINE_MS.clone(),
            HeaderValue::from(crate::runner::deadline_ms(deadline.at)),
        );
        h.insert(FUNCTION_ARN.clone(), hub.arn.clone());
        if let Some(t) = &p.trace_id {
            h.insert(TRACE_ID.clone(), t.clone());
        }
        if let Some(c) = &p.client_context {
            h.insert(CLIENT_CONTEXT.clone(), c.clone());
        }
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let pid = hub.pid(runtime);
        let id = hub.record(runtime, pid, deadline, p);
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID.clone(), v);
        }
        return resp;
    }
}

/// Reads a body whole, at most `max` bytes; `Err(None)` when it is longer.
async fn read_whole(body: Incoming, max: u64) -> Result<Bytes, Option<String>> {
    let mut out = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Some(e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            if (out.len() + d.len()) as u64 > max {
                return Err(None);
            }
            out.extend_from_slice(d);
        }
    }
    Ok(Bytes::from(out))
}

fn declared_len(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `POST invocation/<id>/response`.
async fn response(
    hub: &Arc<Hub>,
    runtime: usize,
    id: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let streaming = match req.headers().get(&RESPONSE_MODE) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"streaming") => true,
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidFunctionResponseMode",
                "Lambda-Runtime-Function-Response-Mode must be streaming",
            )
        }
    };
    let Some((reply, budget)) = hub.claim(id, !streaming) else {
        return unknown_id();
    };
    let content_type = req.headers().get(http::header::CONTENT_TYPE).cloned();
    if streaming {
        let (tx, chan) = body::Channel::new(body::RESPONSE_DEPTH);
        let _ = reply.send(Outcome::Result {
            content_type,
            body: chan.boxed_unsync(),
            streaming: true,
        });
        let failed = pump(req.into_body(), tx).await;
        let ours = hub.finish(id);
        if ours {
            hub.served(
                runtime,
                if failed {
                    Counted::Error
                } else {
                    Counted::Success
                },
            );
        }
        return accepted();
    }
    let max = budget.response_max();
    let too_large = |hub: &Hub, reply: tokio::sync::oneshot::Sender<Outcome>| {
        tracing::warn!("Lambda invocation {id}: buffered result over max_response_bytes ({max})");
        let _ = reply.send(Outcome::TooLarge(max));
        hub.served(runtime, Counted::TooLarge);
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({max} bytes)."),
        )
    };
    if declared_len(&req).is_some_and(|n| n > max) {
        return too_large(hub, reply);
    }
    match read_whole(req.into_body(), max).await {
        Ok(bytes) => {
            let _ = reply.send(Outcome::Result {
                content_type,
                body: body::full(bytes),
                streaming: false,
            });
            hub.served(runtime, Counted::Success);
            accepted()
        }
        Err(None) => too_large(hub, reply),
        Err(Some(e)) => {
            let _ = reply.send(Outcome::Exited(format!("its result broke off: {e}")));
            hub.served(runtime, Counted::Exited);
            api_error(StatusCode::BAD_REQUEST, "TruncatedHTTPRequest", &e)
        }
    }
}

/// Passes a streamed result on to the client frame by frame; the runtime is read at the
/// client's pace. An error trailer (real, or `lambda_runtime`'s trailer lines written
/// into the body) or a broken stream aborts the client's response. Returns whether the
/// stream failed.
async fn pump(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> bool {
    loop {
        let (frame, fail) = match body.frame().await {
            None => return false,
            Some(Err(e)) => (None, Some(format!("the runtime's stream broke off: {e}"))),
            Some(Ok(f)) => {
                if let Some(t) = f.trailers_ref() {
                    match t.get(&ERROR_TYPE) {
                        Some(kind) => (
                            None,
                            Some(format!(
                                "the function failed mid-stream: {}",
                                String::from_utf8_lossy(kind.as_bytes())
                            )),
                        ),
                        None => continue,
                    }
                } else if f.data_ref().is_some_and(|d| d.starts_with(IN_BODY_TRAILER)) {
                    let d = f.data_ref().map(|d| d.to_vec()).unwrap_or_default();
                    let kind = String::from_utf8_lossy(&d[IN_BODY_TRAILER.len()..])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned();
                    (
                        None,
                        Some(format!("the function failed mid-stream: {kind}")),
                    )
                } else {
                    (Some(f), None)
                }
            }
        };
        if let Some(why) = fail {
            tracing::warn!("Lambda streamed result aborted: {why}");
            let _ = tx.send(Err(Box::new(Abort(why)))).await;
            return true;
        }
        if let Some(f) = frame {
            if tx.send(Ok(f)).await.is_err() {
                // The client has gone: the rest would be read for nothing (an endless
                // stream, until the deadline). The runtime is answered now.
                tracing::info!("Lambda streamed result: the client has gone; the rest is not read");
                return false;
            }
        }
    }
}

/// `POST invocation/<id>/error`: the error type from the body's `errorType` first
/// (awslambdaric sends no header), else the `Lambda-Runtime-Function-Error-Type` header.
async fn error(hub: &Arc<Hub>, runtime: usize, id: &str, req: Request<Incoming>) -> Response<Body> {
    let Some((reply, budget)) = hub.claim(id, true) else {
        return unknown_id();
    };
    let header = req
        .headers()
        .get(&ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let doc = read_whole(req.into_body(), budget.response_max().max(ERROR_MAX))
        .await
        .unwrap_or_default();
    let (error_type, body) = error_document(&doc, header.as_deref());
    tracing::info!("Lambda invocation {id} failed: {error_type}");
    let _ = reply.send(Outcome::Error { error_type, body });
    hub.served(runtime, Counted::Error);
    accepted()
}

/// The type and the document of a reported error: the body's own when it is a JSON
/// object, else one made from the header and the body's text.
pub(super) fn error_document(doc: &[u8], header: Option<&str>) -> (String, Bytes) {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(doc).ok();
    let from_body = parsed
        .as_ref()
        .and_then(|m| m.get("errorType"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let kind = from_body
        .or_else(|| header.filter(|h| !h.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| "Unhandled".to_owned());
    match parsed {
        Some(_) => (kind, Bytes::copy_from_slice(doc)),
        None => {
            let doc = serde_json::json!({
                "errorType": kind,
                "errorMessage": String::from_utf8_lossy(doc),
            });
            (kind, Bytes::from(doc.to_string()))
        }
    }
}

/// `POST init/error`: logged, and kept as the reason if this process never comes up.
async fn init_error(hub: &Arc<Hub>, runtime: usize, req: Request<Incoming>) -> Response<Body> {
    let header = req
        .headers()
        .get(&ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let doc = read_whole(req.into_body(), ERROR_MAX)
        .await
        .unwrap_or_default();
    let (kind, doc) = error_document(&doc, header.as_deref());
    let message = serde_json::from_slice::<serde_json::Value>(&doc)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let why = format!("{kind}: {message}");
    tracing::error!(
        "Lambda runtime (pid {}) init error: {why}",
        hub.pid(runtime)
    );
    hub.init_error(runtime, why);
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_type_comes_from_the_body_first() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        let (t, doc) = error_document(body, Some("Runtime.Unknown"));
        assert_eq!(t, "ValueError");
        assert_eq!(&doc[..], &body[..]);
        let (t, _) = error_document(br#"{"errorMessage":"x"}"#, Some("unhandled"));
        assert_eq!(t, "unhandled");
        let (t, doc) = error_document(b"not json", None);
        assert_eq!(t, "Unhandled");
        let v: serde_json::Value = serde_json::from_slice(&doc).expect("json");
        assert_eq!(v["errorMessage"], "not json");
        assert_eq!(v["errorType"], "Unhandled");
    }
}
