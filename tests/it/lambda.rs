//! `mode=lambda`: unmodified AWS Lambda functions behind the watchdog, proved with the
//! real runtime interface clients, never a mock of the runtime side: Python's
//! `awslambdaric` 4.2.2 from PyPI (`python3 -m awslambdaric app.handler`) and Rust's
//! `lambda_runtime` 1.5 from crates.io (the crate under tests/lambda-rs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{
    self, eventually, eventually_ok, json, request, skip, try_request, watchdog, TempDir, PATIENCE,
};

const INVOKE: &str = "/2015-03-31/functions/function/invocations";
const NO_RIC: &str = "awslambdaric not installed (pip install awslambdaric==4.2.2)";

/// A Python Lambda function with a behaviour per event field. Every invocation appends
/// its request id to `invoked` in its folder first, so a test can tell whether the
/// function ran at all.
const APP: &str = r#"
import json, os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))

def handler(event, context):
    with open(os.path.join(HERE, "invoked"), "a") as f:
        f.write(context.aws_request_id + "\n")
    if isinstance(event, dict):
        if event.get("marker"):
            open(os.path.join(HERE, event["marker"]), "w").close()
        if event.get("gate"):
            gate = os.path.join(HERE, event["gate"])
            while not os.path.exists(gate):
                time.sleep(0.01)
        if event.get("raise"):
            raise ValueError("boom: " + str(event["raise"]))
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("exit"):
            sys.stdout.flush()
            os._exit(3)
        if event.get("big"):
            return "x" * event["big"]
        if event.get("http"):
            return event["http"]
    print("handling " + context.aws_request_id, flush=True)
    return {
        "echo": event,
        "rid": context.aws_request_id,
        "pid": os.getpid(),
        "left": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "memory": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        "version": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "region": os.environ.get("AWS_REGION"),
        "tz": os.environ.get("TZ"),
        "api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
    }
"#;

pub fn have_awslambdaric() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import awslambdaric"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A folder with the function's `app.py` (`source`).
struct Function {
    dir: TempDir,
}

impl Function {
    fn new(source: &str) -> Function {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("app.py"), source).expect("write app.py");
        Function { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The request ids the function has seen.
    fn invoked(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("invoked"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The watchdog running it under awslambdaric.
    fn watchdog(&self) -> util::Builder {
        watchdog()
            .mode("lambda")
            .fprocess("python3 -m awslambdaric app.handler")
            .env("PYTHONPATH", self.dir.path().display().to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
    }
}

fn invoke(port: u16, headers: &[(&str, &str)], event: &str) -> util::Resp {
    request(port, "POST", INVOKE, headers, event.as_bytes())
}

#[test]
fn lambda_invoke_api_answers_results_and_function_errors_like_lambda() {
    if !have_awslambdaric() {
        return skip(
            "lambda_invoke_api_answers_results_and_function_errors_like_lambda",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f
        .watchdog()
        .env("exec_timeout", "20s")
        .env("OPENFAAS_NAME", "echo-fn")
        .start();
    assert_eq!(w.get("/_/health").status, 200);
    let r = invoke(w.port, &[], r#"{"hello":"world"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(r.header("x-amz-function-error"), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = json(&r);
    assert_eq!(v["echo"], serde_json::json!({"hello": "world"}));
    assert_eq!(r.header("x-amzn-requestid"), v["rid"].as_str());
    // The environment a runtime expects, and a deadline it can count down from.
    assert_eq!(v["name"], "echo-fn");
    assert_eq!(v["version"], "$LATEST");
    assert_eq!(v["region"], "us-east-1");
    assert_eq!(v["tz"], ":UTC");
    assert!(v["memory"]
        .as_str()
        .is_some_and(|m| m.parse::<u64>().is_ok()));
    assert!(v["api"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert_eq!(
        v["arn"],
        "arn:aws:lambda:us-east-1:012345678912:function:echo-fn"
    );
    let left = v["left"].as_i64().expect("left");
    assert!(left > 0 && left <= 20_000, "{left}");

    // X-Call-Id is the request id the function sees, and tags its log lines.
    let r = invoke(w.port, &[("X-Call-Id", "call-42")], r#"{"a":1}"#);
    assert_eq!(json(&r)["rid"], "call-42");
    w.expect_log("stdout: handling call-42 [call-42]");

    // A raised exception: 200, X-Amz-Function-Error, the error document, its type from
    // the body (awslambdaric sends no error-type header).
    let r = invoke(w.port, &[], r#"{"raise":"bad input"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = json(&r);
    assert_eq!(v["errorType"], "ValueError");
    assert_eq!(v["errorMessage"], "boom: bad input");

    // DryRun runs nothing; Event is accepted at once and runs.
    let before = f.invoked().len();
    let r = invoke(w.port, &[("X-Amz-Invocation-Type", "DryRun")], "{}");
    assert_eq!(r.status, 204);
    let r = invoke(
        w.port,
        &[("X-Amz-Invocation-Type", "Event")],
        r#"{"marker":"event-ran"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    util::wait_for_marker(&f.path("event-ran"));
    assert_eq!(f.invoked().len(), before + 1, "DryRun must not invoke");
    // Logged when the runtime reports the error; the log writer may still hold it.
    assert!(w.wait_log("failed: ValueError", PATIENCE), "{}", w.log());
    assert!(w.log().contains("Lambda invocation"), "{}", w.log());
}

#[test]
fn lambda_timeout_answers_and_the_restarted_runtime_serves_the_next_request() {
    if !have_awslambdaric() {
        return skip(
            "lambda_timeout_answers_and_the_restarted_runtime_serves_the_next_request",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().env("exec_timeout", "1s").start();
    let first = json(&invoke(w.port, &[], "{}"))["pid"]
        .as_i64()
        .expect("pid");
    let started = Instant::now();
    let r = invoke(w.port, &[], r#"{"sleep":60}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = json(&r);
    assert_eq!(v["errorType"], "Sandbox.Timedout");
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.ends_with("Task timed out after 1.00 seconds")),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The runtime was killed (a Lambda runtime cannot be interrupted) and restarted.
    let r = invoke(w.port, &[], r#"{"after":"timeout"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    let v = json(&r);
    assert_eq!(v["echo"]["after"], "timeout");
    assert_ne!(
        v["pid"].as_i64(),
        Some(first),
        "the same runtime kept running"
    );
    assert!(!util::processes()
        .iter()
        .any(|p| p.pid == first as i32 && p.state != 'Z'));
    w.expect_log("timed out (exec_timeout exceeded (1s))");
}

#[test]
fn lambda_pool_of_two_runtimes_serves_eight_concurrent_requests() {
    if !have_awslambdaric() {
        return skip(
            "lambda_pool_of_two_runtimes_serves_eight_concurrent_requests",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f
        .watchdog()
        .env("pool_size", "2")
        .env("exec_timeout", "30s")
        .env("write_timeout", "60s")
        .start();
    // Every invocation waits at a gate until all eight requests are in: the first two
    // hold both runtimes, six wait in line.
    let port = w.port;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || invoke(port, &[], &format!(r#"{{"gate":"open","n":{i}}}"#)))
        })
        .collect();
    assert!(
        eventually(PATIENCE, || f.invoked().len() == 2),
        "two runtimes should hold two invocations: {:?}",
        f.invoked()
    );
    std::fs::write(f.path("open"), "").expect("open the gate");
    let mut pids = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
        let v = json(&r);
        pids.insert(v["pid"].as_i64().expect("pid"));
        seen.insert(v["echo"]["n"].as_i64().expect("n"));
    }
    assert_eq!(seen.len(), 8);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(f.invoked().len(), 8);
}

#[test]
fn lambda_init_error_three_times_in_a_row_exits_1_naming_it() {
    if !have_awslambdaric() {
        return skip(
            "lambda_init_error_three_times_in_a_row_exits_1_naming_it",
            NO_RIC,
        );
    }
    let f = Function::new("raise RuntimeError('cannot load the model')\n");
    let (status, out) = f.watchdog().run(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("Lambda runtime init failed 3 times in a row"),
        "{out}"
    );
    assert!(out.contains("cannot load the model"), "{out}");
    assert!(!out.contains("Listening on port"), "{out}");
}

#[test]
fn lambda_runtime_that_exits_mid_invocation_fails_it_and_is_restarted() {
    if !have_awslambdaric() {
        return skip(
            "lambda_runtime_that_exits_mid_invocation_fails_it_and_is_restarted",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().start();
    let r = invoke(w.port, &[], r#"{"exit":true}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = json(&r);
    assert_eq!(v["errorType"], "Runtime.ExitError", "{v}");
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("exit status 3")),
        "{v}"
    );
    let r = invoke(w.port, &[], r#"{"after":"exit"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(json(&r)["echo"]["after"], "exit");
}

#[test]
fn lambda_event_over_6_mib_is_413_before_any_invocation() {
    if !have_awslambdaric() {
        return skip(
            "lambda_event_over_6_mib_is_413_before_any_invocation",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().start();
    let event = format!("\"{}\"", "e".repeat(7_000_000));
    let r = invoke(w.port, &[], &event);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("6291456"), "{}", r.text());
    // Chunked, without a length: cut at the cap.
    let mut s = util::connect(w.port);
    util::send_head(&mut s, "POST", "/any/path", &[], None);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..7 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if !util::write_tolerant(&mut s, &framed).expect("write") {
            break;
        }
    }
    let _ = util::write_tolerant(&mut s, b"0\r\n\r\n");
    let r = util::read_response(&mut s, false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(f.invoked().is_empty(), "{:?}", f.invoked());
    // A 6 MiB event is Lambda's limit and passes.
    let r = invoke(w.port, &[], &format!("\"{}\"", "e".repeat(6_000_000)));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn lambda_buffered_result_over_6_mib_is_the_size_error() {
    if !have_awslambdaric() {
        return skip(
            "lambda_buffered_result_over_6_mib_is_the_size_error",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().env("metrics_port", "0").start();
    let r = invoke(w.port, &[], r#"{"big":7000000}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json(&r)["errorType"], "Function.ResponseSizeTooLarge");
    // Just under the limit passes whole.
    let r = invoke(w.port, &[], r#"{"big":6000000}"#);
    assert_eq!(r.status, 200, "{}", &r.text()[..100.min(r.body.len())]);
    assert_eq!(r.body.len(), 6_000_002);
    let r = invoke(w.port, &[], r#"{"after":"big"}"#);
    assert_eq!(json(&r)["echo"]["after"], "big", "{}", w.log());
    let mport = w.metrics_port.expect("metrics port");
    let m = request(mport, "GET", "/metrics", &[], b"").text();
    assert!(
        m.contains("fwatchdog_lambda_invocations_total{outcome=\"too_large\"} 1"),
        "{m}"
    );
}

#[test]
fn lambda_api_key_is_checked_before_any_invocation_on_both_ways_in() {
    if !have_awslambdaric() {
        return skip(
            "lambda_api_key_is_checked_before_any_invocation_on_both_ways_in",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let secrets = TempDir::new();
    std::fs::write(secrets.path().join("fn-key"), "s3cret-key\n").expect("secret");
    let w = f
        .watchdog()
        .env("api_key_secret", "fn-key")
        .env("secrets_dir", secrets.path().display().to_string())
        .start();
    for path in [INVOKE, "/some/route"] {
        let r = request(w.port, "POST", path, &[], br#"{"marker":"ran"}"#);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        let r = request(
            w.port,
            "POST",
            path,
            &[("X-Api-Key", "wrong")],
            br#"{"marker":"ran"}"#,
        );
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    assert!(f.invoked().is_empty(), "{:?}", f.invoked());
    assert!(!f.path("ran").exists());
    let r = request(
        w.port,
        "POST",
        INVOKE,
        &[("X-Api-Key", "s3cret-key")],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The key never reaches the function's event.
    let r = request(w.port, "GET", "/x", &[("X-Api-Key", "s3cret-key")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("s3cret"), "{}", r.text());
}

#[test]
fn lambda_sigterm_lets_invocations_in_flight_finish_then_stops_the_runtimes() {
    if !have_awslambdaric() {
        return skip(
            "lambda_sigterm_lets_invocations_in_flight_finish_then_stops_the_runtimes",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let mut w = f.watchdog().env("pool_size", "2").start();
    let port = w.port;
    let clients: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || invoke(port, &[], &format!(r#"{{"gate":"go","n":{i}}}"#)))
        })
        .collect();
    assert!(eventually(PATIENCE, || f.invoked().len() == 2));
    let runtimes = util::children(w.pid());
    w.signal(15);
    w.expect_log("Received SIGTERM");
    std::fs::write(f.path("go"), "").expect("open the gate");
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    }
    let status = w.wait_exit(Duration::from_secs(60)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", w.log());
    for pid in runtimes {
        util::assert_group_ends(pid, PATIENCE, "a Lambda runtime");
    }
    assert!(
        w.log().contains("Stopping 2 Lambda runtime(s)"),
        "{}",
        w.log()
    );
}

#[test]
fn lambda_health_is_503_until_every_runtime_asked_for_work() {
    if !have_awslambdaric() {
        return skip(
            "lambda_health_is_503_until_every_runtime_asked_for_work",
            NO_RIC,
        );
    }
    let f = Function::new(&format!(
        "import os, time\nHERE = os.path.dirname(os.path.abspath(__file__))\nopen(os.path.join(HERE, 'loading'), 'w').close()\nwhile not os.path.exists(os.path.join(HERE, 'loaded')):\n    time.sleep(0.01)\n{APP}"
    ));
    let port = util::child_port();
    let builder = f.watchdog().env("port", port.to_string());
    let starting = std::thread::spawn(move || builder.start());
    util::wait_for_marker(&f.path("loading"));
    assert!(eventually_ok(PATIENCE, || {
        Ok(try_request(port, "GET", "/_/health", &[], b"")?.status == 503)
    }));
    let r = request(port, "POST", INVOKE, &[], b"{}");
    assert_eq!(r.status, 503, "{}", r.text());
    std::fs::write(f.path("loaded"), "").expect("loaded");
    let w = starting.join().expect("started");
    assert_eq!(w.get("/_/health").status, 200);
    assert_eq!(invoke(w.port, &[], "{}").status, 200);
}

/// The runtime's own paths are served on loopback only, never on the function port.
#[test]
fn lambda_runtime_api_is_not_on_the_function_port() {
    if !have_awslambdaric() {
        return skip("lambda_runtime_api_is_not_on_the_function_port", NO_RIC);
    }
    let f = Function::new(APP);
    let w = f.watchdog().start();
    let api = json(&invoke(w.port, &[], "{}"))["api"]
        .as_str()
        .expect("api")
        .to_owned();
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    // Unknown and already answered ids are 400 on the Runtime API.
    let api_port: u16 = api
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let r = request(
        api_port,
        "POST",
        "/2018-06-01/runtime/invocation/no-such-id/response",
        &[],
        b"{}",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(json(&r)["errorType"], "InvalidRequestID");
    let rid = json(&invoke(w.port, &[], "{}"))["rid"]
        .as_str()
        .expect("rid")
        .to_owned();
    let r = request(
        api_port,
        "POST",
        &format!("/2018-06-01/runtime/invocation/{rid}/response"),
        &[],
        b"{}",
    );
    assert_eq!(r.status, 400, "a stale id: {}", r.text());
}

/// A Python function for the HTTP way in: the route picks the behaviour.
const HTTP_APP: &str = r#"
import base64, os, time

def handler(event, context):
    path = event["rawPath"]
    if path == "/shaped":
        return {
            "statusCode": 201,
            "headers": {"content-type": "application/octet-stream", "x-from": "lambda"},
            "cookies": ["session=abc; HttpOnly", "theme=dark"],
            "body": base64.b64encode(bytes([0, 1, 2, 255])).decode(),
            "isBase64Encoded": True,
        }
    if path == "/raise":
        raise KeyError("no such thing")
    if path == "/sleep":
        time.sleep(60)
    if path == "/text":
        return "plain words"
    if path == "/broken":
        return {"statusCode": "not a status"}
    if path == "/exit":
        os._exit(3)
    return event
"#;

#[test]
fn lambda_http_requests_are_payload_2_events_and_results_map_back() {
    if !have_awslambdaric() {
        return skip(
            "lambda_http_requests_are_payload_2_events_and_results_map_back",
            NO_RIC,
        );
    }
    let f = Function::new(HTTP_APP);
    let w = f.watchdog().env("exec_timeout", "1s").start();
    let r = request(
        w.port,
        "PUT",
        "/some/path?a=1&a=2&b=x%20y",
        &[
            ("Cookie", "c1=v1; c2=v2"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("User-Agent", "it-test"),
            ("X-Call-Id", "http-call-1"),
        ],
        &[0xff, 0xfe, 0x00, 0x41],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let e = json(&r);
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "$default");
    assert_eq!(e["rawPath"], "/some/path");
    assert_eq!(e["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(e["queryStringParameters"]["a"], "1,2");
    assert_eq!(e["queryStringParameters"]["b"], "x y");
    assert_eq!(e["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
    assert_eq!(e["headers"]["x-multi"], "one,two");
    assert_eq!(e["requestContext"]["http"]["method"], "PUT");
    assert_eq!(e["requestContext"]["http"]["path"], "/some/path");
    assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(e["requestContext"]["http"]["userAgent"], "it-test");
    assert_eq!(e["requestContext"]["requestId"], "http-call-1");
    assert!(e["requestContext"]["timeEpoch"].as_u64().is_some());
    assert_eq!(e["isBase64Encoded"], true);
    assert_eq!(e["body"], "//4AQQ==");
    // Text bodies stay text.
    let e = json(&request(w.port, "POST", "/", &[], b"hello"));
    assert_eq!(
        (e["body"].as_str(), e["isBase64Encoded"].as_bool()),
        (Some("hello"), Some(false))
    );

    // statusCode, headers, one Set-Cookie per cookie, a base64 body.
    let r = w.get("/shaped");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-from"), Some("lambda"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["session=abc; HttpOnly", "theme=dark"]);
    assert_eq!(r.body, [0, 1, 2, 255]);
    // Any other JSON result is the body, as Function URLs answer it.
    let r = w.get("/text");
    assert_eq!((r.status, r.text().as_str()), (200, "\"plain words\""));
    // A function error and a malformed result are 502; a timeout 504.
    let r = w.get("/raise");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.text(), "Internal Server Error\n");
    assert_eq!(w.get("/broken").status, 502);
    // A runtime that dies with the request: 502, and it is restarted.
    let r = w.get("/exit");
    assert_eq!(r.status, 502, "{}", r.text());
    let r = w.get("/sleep");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.header("x-duration-seconds").is_some());
    assert!(
        r.text().contains("exec_timeout exceeded (1s)"),
        "{}",
        r.text()
    );
    // The runtime killed at the deadline was replaced.
    assert_eq!(w.get("/after").status, 200, "{}", w.log());
}

/// The Rust function (tests/lambda-rs), built once per test run into the shared target
/// directory; `None` when it cannot be built (no crates.io).
pub fn rust_function() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target").join("lambda-rs");
            let ok = std::process::Command::new(env!("CARGO"))
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(root.join("tests/lambda-rs/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .is_ok_and(|s| s.success());
            let bin = target.join("release").join("fwatchdog-lambda-rs");
            (ok && bin.exists()).then_some(bin)
        })
        .clone()
}

pub const NO_RUST_FN: &str = "the lambda_runtime function (tests/lambda-rs) could not be built";

fn rust_watchdog(bin: &Path) -> util::Builder {
    watchdog()
        .mode("lambda")
        .fprocess(bin.display().to_string())
}

#[test]
fn lambda_rust_runtime_answers_and_fails_both_ways() {
    let Some(bin) = rust_function() else {
        return skip(
            "lambda_rust_runtime_answers_and_fails_both_ways",
            NO_RUST_FN,
        );
    };
    let w = rust_watchdog(&bin).start();
    use base64::Engine as _;
    let context = base64::engine::general_purpose::STANDARD.encode(r#"{"custom":{"k":"v"}}"#);
    let r = invoke(
        w.port,
        &[
            (
                "X-Amzn-Trace-Id",
                "Root=1-5e1b4151-5ac6c58f5b5daa6532a8b2c5",
            ),
            ("X-Amz-Client-Context", &context),
        ],
        r#"{"hello":"rust"}"#,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    let v = json(&r);
    assert_eq!(v["runtime"], "lambda_runtime");
    assert_eq!(v["echo"]["hello"], "rust");
    assert_eq!(v["trace"], "Root=1-5e1b4151-5ac6c58f5b5daa6532a8b2c5");
    assert_eq!(v["client_context"]["k"], "v");
    assert_eq!(r.header("x-amzn-requestid"), v["rid"].as_str());
    // The HTTP way: the event is a payload 2.0 event, a plain JSON result is the body.
    let r = request(w.port, "POST", "/rust/path", &[], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["echo"]["rawPath"], "/rust/path");
    // lambda_runtime sends the header `unhandled` and the Rust type in the body: the
    // body's type is the one reported.
    let r = invoke(w.port, &[], r#"{"error":"bad"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = json(&r);
    assert_eq!(v["errorMessage"], "asked to fail: bad");
    assert_ne!(v["errorType"], "unhandled", "{v}");
    assert!(
        v["errorType"].as_str().is_some_and(|t| t.contains("Error")),
        "{v}"
    );
    let r = request(w.port, "POST", "/x", &[], br#"{"error":"bad"}"#);
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn lambda_rust_stream_of_64_mib_arrives_in_pieces_before_the_function_ends() {
    let Some(bin) = rust_function() else {
        return skip(
            "lambda_rust_stream_of_64_mib_arrives_in_pieces_before_the_function_ends",
            NO_RUST_FN,
        );
    };
    let w = rust_watchdog(&bin)
        .env("exec_timeout", "120s")
        .env("write_timeout", "120s")
        .start();
    let gate = TempDir::new();
    let gate = gate.path().join("go");
    // Through a Function URL: the body is the function's instructions. The function
    // sends 1 MiB, then waits for the gate, which this client opens only after it has
    // read bytes of the answer: a buffered answer would never open it.
    let order = format!(r#"{{"stream":64,"gate":"{}"}}"#, gate.display());
    let mut s = util::connect(w.port);
    util::send_head(&mut s, "POST", "/download", &[], Some(order.len()));
    std::io::Write::write_all(&mut s, order.as_bytes()).expect("write");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = std::io::Read::read(&mut s, &mut buf).expect("the first bytes never came");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            if seen.len() > at + 4 + 1024 {
                break at + 4;
            }
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    std::fs::write(&gate, "").expect("open the gate");
    let (rest, ended) = util::read_to_close(&mut s, Duration::from_secs(120));
    assert!(ended);
    seen.extend_from_slice(&rest);
    let (body, complete) = dechunk(&seen[head_end..]);
    assert!(complete, "the stream was cut");
    assert_eq!(body.len(), 64 << 20);
    assert!(body.iter().all(|b| *b == b'z'));
}

/// A chunked body's data, and whether its last chunk came.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return (out, false);
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            return (out, false);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[test]
fn lambda_rust_http_shaped_stream_gives_status_headers_and_cookies() {
    let Some(bin) = rust_function() else {
        return skip(
            "lambda_rust_http_shaped_stream_gives_status_headers_and_cookies",
            NO_RUST_FN,
        );
    };
    let w = rust_watchdog(&bin).start();
    let r = request(w.port, "POST", "/shaped", &[], br#"{"http":true}"#);
    assert_eq!(r.status, 201, "{}\n{}", r.text(), w.log());
    assert_eq!(r.header("x-shaped"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["flavour=oat; Path=/", "size=big"]);
    assert_eq!(r.text(), "streamed http body");
    assert!(r.complete);
    // On the Invoke API the prelude is taken off: the body, typed by it.
    let r = invoke(w.port, &[], r#"{"http":true}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "streamed http body");
    // An error mid-stream (lambda_runtime writes its trailer lines into the body) cuts
    // the client's response: never a clean end.
    let r = request(w.port, "POST", "/x", &[], br#"{"stream_error":true}"#);
    assert_eq!(r.status, 200);
    assert!(!r.complete, "a failed stream ended cleanly: {:?}", r.text());
    assert!(r.text().starts_with("first part, then "), "{}", r.text());
    assert!(
        !r.text().contains("Lambda-Runtime-Function-Error"),
        "{}",
        r.text()
    );
    w.expect_log("the function failed mid-stream: Runtime.StreamError");
    // The runtime goes on serving.
    assert_eq!(invoke(w.port, &[], "{}").status, 200);
}

/// Two requests in flight with the same `X-Call-Id`: each gets its own answer (the
/// second invocation gets a request id of its own).
#[test]
fn lambda_same_call_id_twice_in_flight_each_gets_its_own_answer() {
    if !have_awslambdaric() {
        return skip(
            "lambda_same_call_id_twice_in_flight_each_gets_its_own_answer",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().env("pool_size", "2").start();
    let port = w.port;
    let clients: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                invoke(
                    port,
                    &[("X-Call-Id", "same-id")],
                    &format!(r#"{{"gate":"open","n":{i}}}"#),
                )
            })
        })
        .collect();
    assert!(eventually(PATIENCE, || f.invoked().len() == 2));
    std::fs::write(f.path("open"), "").expect("open the gate");
    let mut seen = Vec::new();
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
        assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
        seen.push(json(&r)["echo"]["n"].as_i64().expect("n"));
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1]);
    let ids = f.invoked();
    assert!(ids.contains(&"same-id".to_owned()), "{ids:?}");
    assert_ne!(ids[0], ids[1], "{ids:?}");
}

/// A runtime client that asks for several invocations at once
/// (`AWS_LAMBDA_MAX_CONCURRENCY`, awslambdaric forks a worker for each) gets one per
/// request for work: two requests run at once on one runtime slot.
#[test]
fn lambda_max_concurrency_client_takes_one_invocation_per_waiting_next() {
    if !have_awslambdaric() {
        return skip(
            "lambda_max_concurrency_client_takes_one_invocation_per_waiting_next",
            NO_RIC,
        );
    }
    let f = Function::new(APP);
    let w = f.watchdog().env("AWS_LAMBDA_MAX_CONCURRENCY", "2").start();
    let port = w.port;
    let clients: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || invoke(port, &[], &format!(r#"{{"gate":"go","n":{i}}}"#)))
        })
        .collect();
    // Both are inside the function before either may finish.
    assert!(
        eventually(PATIENCE, || f.invoked().len() == 2),
        "{:?}\n{}",
        f.invoked(),
        w.log()
    );
    std::fs::write(f.path("go"), "").expect("open the gate");
    let mut pids = std::collections::HashSet::new();
    for c in clients {
        let r = c.join().expect("client");
        assert_eq!(r.status, 200, "{}", r.text());
        pids.insert(json(&r)["pid"].as_i64().expect("pid"));
    }
    assert_eq!(pids.len(), 2, "two workers of one runtime: {pids:?}");
}

/// Without `fprocess`, the image's bootstrap is run, looked up where RIE looks
/// (`$LAMBDA_TASK_ROOT/bootstrap` first); with none there, startup fails naming the
/// places tried.
#[test]
fn lambda_without_fprocess_runs_the_bootstrap_or_names_where_it_looked() {
    let Some(bin) = rust_function() else {
        return skip(
            "lambda_without_fprocess_runs_the_bootstrap_or_names_where_it_looked",
            NO_RUST_FN,
        );
    };
    if std::path::Path::new("/var/task/bootstrap").exists() {
        return skip(
            "lambda_without_fprocess_runs_the_bootstrap_or_names_where_it_looked",
            "this machine has a /var/task/bootstrap",
        );
    }
    let root = TempDir::new();
    let (status, out) = watchdog()
        .mode("lambda")
        .env("LAMBDA_TASK_ROOT", root.path().display().to_string())
        .run(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{out}");
    let tried = root.path().join("bootstrap").display().to_string();
    assert!(
        out.contains(&tried) && out.contains("/var/task/bootstrap"),
        "{out}"
    );
    std::fs::copy(&bin, root.path().join("bootstrap")).expect("copy bootstrap");
    let w = watchdog()
        .mode("lambda")
        .env("LAMBDA_TASK_ROOT", root.path().display().to_string())
        .start();
    let r = invoke(w.port, &[], r#"{"from":"bootstrap"}"#);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), w.log());
    assert_eq!(json(&r)["echo"]["from"], "bootstrap");
    assert!(
        w.log()
            .contains(&format!("Started Lambda runtime {tried:?}")),
        "{}",
        w.log()
    );
}
