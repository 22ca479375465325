//! An AWS Lambda function on AWS's Rust runtime client, exactly as on AWS Lambda.
//!
//! An HTTP request arrives as an API Gateway HTTP API 2.0 event (the format of Lambda
//! Function URLs: `rawPath`, `headers`, `body`, ...); a call to the Invoke API
//! (`POST /2015-03-31/functions/function/invocations`) passes its body as the event.
//! Return an HTTP response (`statusCode`, `headers`, `body`) or any JSON value; an
//! `Err` is a function error (502 to an HTTP client, 200 with `X-Amz-Function-Error`
//! on the Invoke API).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (event, _context) = event.into_parts();
    if event.get("rawPath").is_some() {
        let said = event.get("body").and_then(Value::as_str).unwrap_or("");
        return Ok(json!({
            "statusCode": 200,
            "headers": { "content-type": "text/plain" },
            "body": format!("Hello from Rust on Lambda! You said: {said}"),
        }));
    }
    Ok(json!({ "message": "Hello from Rust on Lambda!", "event": event }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}
