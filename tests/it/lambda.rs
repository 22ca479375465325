//! `mode=lambda`: unmodified AWS Lambda functions behind the watchdog, proved with the
//! real runtime interface clients, never a mock of the runtime side: Python's
//! `awslambdaric` 4.2.2 from PyPI (`python3 -m awslambdaric app.handler`) and Rust's
//! `lambda_runtime` 1.5 from crates.io (the crate under tests/lambda-rs).

use std::path::PathBuf;
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
