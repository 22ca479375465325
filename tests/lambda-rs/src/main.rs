//! A Lambda function on AWS's Rust runtime client, one behaviour per event field:
//! `{"error": "why"}` fails, `{"stream": MiB, "gate": path}` streams that many MiB (the
//! first one, then the rest once `gate` exists, so a test can prove the first bytes
//! came before the function finished), `{"http": true}` streams an HTTP-shaped answer
//! (a prelude with status, headers and cookies), `{"stream_error": true}` fails
//! mid-stream; anything else is echoed with what the function was told. Through a
//! Function URL (an HTTP event) the instructions are the request's body, except on the
//! hostile matrix's routes: `/hi` answers, `/cat` echoes, `/zero` streams forever.

use std::time::Duration;

use bytes::Bytes;
use lambda_runtime::streaming::{channel, Body, Response as StreamResponse};
use lambda_runtime::{service_fn, Error, FunctionResponse, LambdaEvent, MetadataPrelude};
use serde_json::{json, Value};

type Answer = FunctionResponse<Value, Body>;

async fn handler(event: LambdaEvent<Value>) -> Result<Answer, Error> {
    let (event, context) = event.into_parts();
    // The hostile matrix's routes: an answer, an echo, an endless stream.
    match event.get("rawPath").and_then(Value::as_str) {
        Some("/hi") => return Ok(FunctionResponse::BufferedResponse(json!("hi"))),
        Some("/cat") => {
            return Ok(FunctionResponse::BufferedResponse(
                event.get("body").cloned().unwrap_or(Value::Null),
            ))
        }
        Some("/zero") => {
            let (mut tx, rx) = channel();
            tokio::spawn(async move {
                let block = Bytes::from(vec![b'y'; 64 * 1024]);
                while tx.send_data(block.clone()).await.is_ok() {}
            });
            return Ok(FunctionResponse::StreamingResponse(StreamResponse::from(
                rx,
            )));
        }
        _ => {}
    }
    // Through a Function URL (an HTTP event) the instructions are the request's body.
    let payload = match event.get("rawPath") {
        Some(_) => event
            .get("body")
            .and_then(Value::as_str)
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null),
        None => event.clone(),
    };
    if let Some(why) = payload.get("error").and_then(Value::as_str) {
        return Err(format!("asked to fail: {why}").into());
    }
    if let Some(mib) = payload.get("stream").and_then(Value::as_u64) {
        let gate = payload
            .get("gate")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (mut tx, rx) = channel();
        tokio::spawn(async move {
            let block = Bytes::from(vec![b'z'; 1 << 20]);
            for i in 0..mib {
                if i == 1 {
                    if let Some(g) = gate.clone() {
                        let wait = move || {
                            while !std::path::Path::new(&g).exists() {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        };
                        let _ = tokio::task::spawn_blocking(wait).await;
                    }
                }
                if tx.send_data(block.clone()).await.is_err() {
                    return;
                }
            }
        });
        return Ok(FunctionResponse::StreamingResponse(StreamResponse::from(
            rx,
        )));
    }
    if payload.get("http").is_some() {
        let (mut tx, rx) = channel();
        tokio::spawn(async move {
            for part in ["streamed ", "http ", "body"] {
                if tx.send_data(Bytes::from(part)).await.is_err() {
                    return;
                }
            }
        });
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "text/plain".parse()?);
        headers.insert("x-shaped", "yes".parse()?);
        let prelude = MetadataPrelude {
            status_code: http::StatusCode::CREATED,
            headers,
            cookies: vec!["flavour=oat; Path=/".to_owned(), "size=big".to_owned()],
        };
        return Ok(FunctionResponse::StreamingResponse(
            lambda_runtime::StreamResponse {
                metadata_prelude: prelude,
                stream: rx,
            },
        ));
    }
    if payload.get("stream_error").is_some() {
        let (mut tx, rx) = channel();
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from("first part, then ")).await;
            tx.send_error(lambda_runtime_api_client::Error::new("the stream broke"));
        });
        return Ok(FunctionResponse::StreamingResponse(StreamResponse::from(
            rx,
        )));
    }
    Ok(FunctionResponse::BufferedResponse(json!({
        "echo": event,
        "rid": context.request_id,
        "arn": context.invoked_function_arn,
        "trace": context.xray_trace_id,
        "client_context": context.client_context.map(|c| c.custom),
        "runtime": "lambda_runtime",
    })))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
