//! The HTTP way in: a request as an API Gateway HTTP API payload 2.0 event (the format
//! Lambda Function URLs use), and the function's result back as a response.
//!
//! A result object with `statusCode` gives the status, `headers`, `cookies` (each a
//! `Set-Cookie`) and `body` (base64-decoded with `isBase64Encoded`); any other JSON is
//! 200 `application/json` with that JSON as the body, as Function URLs do. A streamed
//! result of type `application/vnd.awslambda.http-integration-response` starts with a
//! JSON prelude (status, headers, cookies) ended by 8 NUL bytes; the rest is the body,
//! passed on as it comes. A function error or a result that is none of these is a 502.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::http_failure;
use super::hub::Outcome;
use crate::body::{self, Body, BoxError};
use crate::runner::Failure;

/// The Content-Type of a streamed result that carries its own status and headers.
pub const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// The longest prelude read before its 8 NULs (API Gateway wants it in the first 16 KB).
const PRELUDE_MAX: usize = 64 * 1024;
const PRELUDE_END: [u8; 8] = [0; 8];

/// The event for `parts` with body `payload`; `hidden` is a header the function must not
/// see (the API key).
pub fn request(
    parts: &http::request::Parts,
    payload: &[u8],
    request_id: &str,
    hidden: Option<&HeaderName>,
) -> Bytes {
    let (headers, cookies) = headers_and_cookies(&parts.headers, hidden);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let host = domain_name(header("host"));

    let user_agent = header("user-agent");
    let source_ip = parts
        .extensions
        .get::<std::net::SocketAddr>()
        .map_or_else(String::new, |a| a.ip().to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "fwatchdog",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(""),
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": clf_time(now),
            "timeEpoch": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        },
        "isBase64Encoded": false,
    });
    if let Value::Object(e) = &mut event {
        if !cookies.is_empty() {
            e.insert("cookies".into(), Value::Array(cookies));
        }
        if !query.is_empty() {
            e.insert(
                "queryStringParameters".into(),
                Value::Object(query_parameters(query)),
            );
        }
        if !payload.is_empty() {
            match std::str::from_utf8(payload) {
                Ok(text) => {
                    e.insert("body".into(), Value::String(text.to_owned()));
                }
                Err(_) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
                    e.insert("body".into(), Value::String(b64));
                    e.insert("isBase64Encoded".into(), Value::Bool(true));
                }
            }
        }
    }
    Bytes::from(event.to_string())
}

/// The event's `headers` (repeated values joined by `,`, as API Gateway does) and its
/// `cookies` (each `Cookie` pair on its own); `hidden` is left out.
fn headers_and_cookies(
    all: &http::HeaderMap,
    hidden: Option<&HeaderName>,
) -> (Map<String, Value>, Vec<Value>) {
    let mut headers: Map<String, Value> = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in all {
        if hidden == Some(name) {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == http::header::COOKIE {
            cookies.extend(
                v.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_owned())),
            );
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    (headers, cookies)
}

/// The authority without its port, as API Gateway's `domainName`.
fn domain_name(host: String) -> String {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => {
            h.to_owned()
        }
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && h.ends_with(']') => {
            h.to_owned()
        }
        _ => host,
    }
}

/// `a=1&a=2&b=x%20y` → `{"a":"1,2","b":"x y"}`, as API Gateway joins repeated values.
fn query_parameters(query: &str) -> Map<String, Value> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut out: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match out.get_mut(&k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                out.insert(k, Value::String(v));
            }
        }
    }
    out
}

/// `12/Mar/2020:19:03:58 +0000`, API Gateway's `requestContext.time`.
fn clf_time(now: std::time::Duration) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 2020-03-12T19:03:58Z
    let iso = humantime::format_rfc3339_seconds(UNIX_EPOCH + now).to_string();
    let month = iso
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{}/{month}/{}:{} +0000",
        iso.get(8..10).unwrap_or("01"),
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00")
    )
}

/// For the Invoke API: a stream with an HTTP prelude becomes a plain stream of its body,
/// typed by the prelude's `content-type` (the status and cookies are for Function
/// URLs). A prelude that cannot be read is a function error.
pub async fn without_prelude(outcome: Outcome) -> Outcome {
    let Outcome::Result {
        content_type,
        body,
        streaming: true,
    } = outcome
    else {
        return outcome;
    };
    if !content_type
        .as_ref()
        .is_some_and(|c| c.as_bytes().starts_with(HTTP_INTEGRATION.as_bytes()))
    {
        return Outcome::Result {
            content_type,
            body,
            streaming: true,
        };
    }
    match prelude(body).await {
        Ok((head, rest)) => Outcome::Result {
            content_type: head
                .get("headers")
                .and_then(|h| h.get("content-type").or_else(|| h.get("Content-Type")))
                .and_then(Value::as_str)
                .and_then(|c| HeaderValue::from_str(c).ok()),
            body: rest,
            streaming: true,
        },
        Err(why) => {
            tracing::warn!("Lambda streamed result: {why}");
            let doc =
                serde_json::json!({ "errorType": "Runtime.InvalidStream", "errorMessage": why });
            Outcome::Error {
                error_type: "Runtime.InvalidStream".to_owned(),
                body: Bytes::from(doc.to_string()),
            }
        }
    }
}

/// The HTTP answer to an invocation's outcome.
pub async fn answer(outcome: Outcome, started: Instant) -> Response<Body> {
    match outcome {
        Outcome::Result {
            content_type,
            body,
            streaming: true,
        } => {
            let integration = content_type
                .as_ref()
                .is_some_and(|c| c.as_bytes().starts_with(HTTP_INTEGRATION.as_bytes()));
            if integration {
                return match prelude(body).await {
                    Ok((head, rest)) => match shaped(&head, rest) {
                        Ok(resp) => resp,
                        Err(why) => malformed(&why, started),
                    },
                    Err(why) => malformed(&why, started),
                };
            }
            let mut resp = Response::new(body);
            if let Some(c) = content_type {
                resp.headers_mut().insert(http::header::CONTENT_TYPE, c);
            }
            resp
        }
        Outcome::Result { body, .. } => match body.collect().await {
            Ok(b) => match result(&b.to_bytes()) {
                Ok(resp) => resp,
                Err(why) => malformed(&why, started),
            },
            Err(e) => malformed(&e.to_string(), started),
        },
        Outcome::Error { error_type, .. } => {
            tracing::debug!("function error {error_type}: 502");
            http_failure(Outcome::Error {
                error_type,
                body: Bytes::new(),
            })
            .answer(started)
        }
        other => http_failure(other).answer(started),
    }
}

fn malformed(why: &str, started: Instant) -> Response<Body> {
    tracing::warn!("Lambda result is not an HTTP response: {why}; answering 502");
    Failure::BadGateway("Internal Server Error".to_owned()).answer(started)
}

/// A buffered result as a response.
fn result(raw: &[u8]) -> Result<Response<Body>, String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    match &v {
        Value::Object(o) if o.contains_key("statusCode") => {
            let mut resp = shaped(o, body::empty())?;
            let encoded = o
                .get("isBase64Encoded")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let data = match o.get("body") {
                None | Some(Value::Null) => Bytes::new(),
                Some(Value::String(s)) if encoded => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(s.as_bytes())
                        .map_err(|e| format!("body is not base64: {e}"))?,
                ),
                Some(Value::String(s)) => Bytes::from(s.clone()),
                Some(other) => Bytes::from(other.to_string()),
            };
            *resp.body_mut() = body::full(data);
            Ok(resp)
        }
        _ => {
            let mut resp = Response::new(body::full(Bytes::copy_from_slice(raw.trim_ascii())));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

/// A response from `statusCode`, `headers`, `multiValueHeaders` and `cookies`, with
/// `body` as its body.
fn shaped(o: &Map<String, Value>, body: Body) -> Result<Response<Body>, String> {
    let status = match o.get("statusCode") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        None => Some(200),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    .and_then(|n| StatusCode::from_u16(n).ok())
    .ok_or("statusCode is not an HTTP status")?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let mut add = |name: &str, value: &Value| -> Result<(), String> {
        let value = text(value).ok_or_else(|| format!("header {name} is not text"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of {name} is not a header value"))?;
        h.append(name, value);
        Ok(())
    };
    if let Some(Value::Object(hs)) = o.get("headers") {
        for (name, value) in hs {
            add(name, value)?;
        }
    }
    if let Some(Value::Object(hs)) = o.get("multiValueHeaders") {
        for (name, values) in hs {
            if let Value::Array(values) = values {
                for v in values {
                    add(name, v)?;
                }
            }
        }
    }
    if let Some(Value::Array(cookies)) = o.get("cookies") {
        for c in cookies {
            add("set-cookie", c)?;
        }
    }
    Ok(resp)
}

/// Reads a streamed result's prelude: the JSON before the 8 NULs, and the body after.
async fn prelude(mut body: Body) -> Result<(Map<String, Value>, Body), String> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Some(at) = buf.windows(8).position(|w| w == PRELUDE_END) {
            let head: Value = serde_json::from_slice(&buf[..at])
                .map_err(|e| format!("the stream's prelude is not JSON: {e}"))?;
            let Value::Object(head) = head else {
                return Err("the stream's prelude is not a JSON object".into());
            };
            let rest = Bytes::copy_from_slice(&buf[at + 8..]);
            return Ok((
                head,
                Prefixed {
                    first: Some(rest),
                    rest: body,
                }
                .boxed_unsync(),
            ));
        }
        if buf.len() > PRELUDE_MAX {
            return Err(format!("no prelude end in the first {PRELUDE_MAX} bytes"));
        }
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(e)) => return Err(format!("the stream failed before its prelude ended: {e}")),
            None => return Err("the stream ended before its prelude did".into()),
        }
    }
}

/// `first`, then `rest`.
struct Prefixed {
    first: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.as_ref().is_none_or(Bytes::is_empty) && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::post(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("req").into_parts().0
    }

    #[test]
    fn a_request_becomes_a_payload_2_event() {
        let p = parts(
            "/my/path?a=1&a=2&b=x%20y",
            &[
                ("host", "fn.example.com"),
                ("x-multi", "v1"),
                ("x-multi", "v2"),
                ("cookie", "c1=v1; c2=v2"),
                ("x-api-key", "secret"),
                ("user-agent", "curl/8"),
            ],
        );
        let hidden = HeaderName::from_static("x-api-key");
        let e: Value =
            serde_json::from_slice(&request(&p, b"hello", "rid", Some(&hidden))).expect("json");
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "$default");
        assert_eq!(e["rawPath"], "/my/path");
        assert_eq!(e["rawQueryString"], "a=1&a=2&b=x%20y");
        assert_eq!(e["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["headers"]["x-multi"], "v1,v2");
        assert!(e["headers"].get("x-api-key").is_none());
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["queryStringParameters"]["a"], "1,2");
        assert_eq!(e["queryStringParameters"]["b"], "x y");
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "curl/8");
        assert_eq!(e["requestContext"]["requestId"], "rid");
        assert_eq!(e["requestContext"]["domainPrefix"], "fn");
        assert_eq!(e["body"], "hello");
        assert_eq!(e["isBase64Encoded"], false);
        let e: Value =
            serde_json::from_slice(&request(&p, &[0xff, 0, 1], "rid", None)).expect("json");
        assert_eq!(e["body"], "/wAB");
        assert_eq!(e["isBase64Encoded"], true);
        let e: Value =
            serde_json::from_slice(&request(&parts("/", &[]), b"", "r", None)).expect("json");
        assert!(e.get("body").is_none() && e.get("queryStringParameters").is_none());
    }

    #[test]
    fn request_time_is_in_api_gateway_form() {
        let t = std::time::Duration::from_millis(1_583_348_638_390);
        assert_eq!(clf_time(t), "04/Mar/2020:19:03:58 +0000");
    }

    #[tokio::test]
    async fn results_map_to_responses() {
        let r = result(
            br#"{"statusCode":201,"headers":{"x-a":"1","x-n":2},"cookies":["a=1","b=2; Path=/"],"body":"aGk=","isBase64Encoded":true}"#,
        )
        .expect("shaped");
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["x-n"], "2");
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
        assert_eq!(r.into_body().collect().await.expect("b").to_bytes(), "hi");
        let r = result(br#" {"hello":"world"} "#).expect("json");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.into_body().collect().await.expect("b").to_bytes(),
            r#"{"hello":"world"}"#
        );
        assert!(result(b"not json").is_err());
        assert!(result(br#"{"statusCode":99}"#).is_err());
        assert!(result(br#"{"statusCode":200,"body":"%%","isBase64Encoded":true}"#).is_err());
    }

    #[tokio::test]
    async fn a_streamed_prelude_gives_status_and_headers() {
        let mut raw = br#"{"statusCode":202,"headers":{"x-s":"y"},"cookies":["c=1"]}"#.to_vec();
        raw.extend_from_slice(&PRELUDE_END);
        raw.extend_from_slice(b"body bytes");
        let (head, rest) = prelude(body::full(raw)).await.expect("prelude");
        let resp = shaped(&head, rest).expect("shaped");
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["x-s"], "y");
        assert_eq!(resp.headers()["set-cookie"], "c=1");
        assert_eq!(
            resp.into_body().collect().await.expect("b").to_bytes(),
            "body bytes"
        );
        assert!(prelude(body::full("no end")).await.is_err());
    }
}
