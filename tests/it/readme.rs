//! The book's samples are what the real binary prints: the metrics scrape and its table
//! (docs/src/operations/metrics.md), the text and JSON log lines
//! (docs/src/operations/logs.md). (The configuration reference is generated from the
//! settings table: see `docs`.) Values that depend on the moment (times, durations,
//! ports) are compared by shape; names, labels, help texts and keys verbatim.

use std::time::Duration;

use regex::Regex;

use crate::util::{request, watchdog, Watchdog};

const METRICS_PAGE: &str = "docs/src/operations/metrics.md";
const LOGS_PAGE: &str = "docs/src/operations/logs.md";

fn page(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of the first fenced block after the line `marker`.
fn block_after(page: &str, marker: &str) -> Vec<String> {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("the page has no {marker:?}"));
    let mut lines = page[at..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next().expect("a fenced block");
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// A watchdog whose handler writes a stderr line, with a GET and a POST served.
fn served(format: &str) -> Watchdog {
    let w = watchdog()
        .fprocess("sh -c 'echo processing >&2; cat'")
        .env("metrics_port", "0")
        .env("log_callid", "true")
        .env("write_debug", "true")
        .env("log_format", format)
        .start();
    assert_eq!(
        request(
            w.port,
            "POST",
            "/hello?name=ann",
            &[("X-Call-Id", "3f2a9c")],
            b"hello\n"
        )
        .status,
        200
    );
    assert_eq!(w.get("/").status, 200);
    // Request lines are written when the response is finished, after the client has it.
    assert!(
        crate::util::eventually(Duration::from_secs(30), || {
            let log = w.log();
            log.matches("ContentLength: ").count() >= 2 && log.contains("stdout")
        }),
        "{}",
        w.log()
    );
    w
}

#[test]
fn metrics_sample_and_table_match_the_real_scrape() {
    let w = served("text");
    let port = w.metrics_port.expect("metrics port");
    let scrape = request(port, "GET", "/metrics", &[], b"").text();
    let real: Vec<&str> = scrape.lines().collect();
    let doc = page(METRICS_PAGE);

    // The sample: comment lines verbatim, series (name and labels) present, in order.
    let sample = block_after(&doc, "A scrape after");
    assert!(sample.len() > 10, "{sample:?}");
    let mut from = 0;
    for line in &sample {
        if line.trim() == "…" {
            continue;
        }
        let found = if line.starts_with('#') {
            real[from..].iter().position(|r| r == line)
        } else {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "sample value {line:?}");
            real[from..]
                .iter()
                .position(|r| r.rsplit_once(' ').is_some_and(|(s, _)| s == series))
        };
        let Some(i) = found else {
            panic!("sample metrics line {line:?} is not in the real scrape (after line {from}):\n{scrape}")
        };
        from += i + 1;
    }

    // The table: every metric with its type.
    let table = &doc[doc
        .find("| metric | type | labels |")
        .expect("metrics table")..];
    let mut rows = 0;
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (name, kind) = (cells[1].trim_matches('`'), cells[2]);
        assert!(
            real.contains(&format!("# TYPE {name} {kind}").as_str()),
            "sample table row {name} ({kind}) is not in the real scrape:\n{scrape}"
        );
        if let Some(help) = cells[cells.len() - 2].split("Help: `").nth(1) {
            let help = help.trim_end_matches('`');
            assert!(
                real.contains(&format!("# HELP {name} {help}").as_str()),
                "sample help of {name}: {help:?}\n{scrape}"
            );
        }
        rows += 1;
    }
    assert!(rows >= 8, "{rows} rows");
}

#[test]
fn text_log_sample_matches_the_real_lines() {
    let w = served("text");
    let log = w.log();
    let strip = Regex::new(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ").expect("regex");
    let request_line = Regex::new(
        r"^[A-Z]+ /\S* - \d{3} - ContentLength: [\d.]+[kMGTPEZY]?B \(\d+\.\d{4}s\) \[\S+\]$",
    )
    .expect("regex");
    let real: Vec<&str> = log.lines().collect();
    for line in block_after(&page(LOGS_PAGE), "## Text") {
        assert!(
            strip.is_match(&line),
            "sample line without the date: {line:?}"
        );
        let msg = strip.replace(&line, "").into_owned();
        let matches = |f: &dyn Fn(&str) -> bool| {
            real.iter()
                .any(|r| strip.is_match(r) && f(&strip.replace(r, "")))
        };
        if let Some(keys) = msg.strip_prefix("Config: ") {
            let names = |c: &str| -> Vec<String> {
                c.split(' ')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
                    .collect()
            };
            let real_cfg = real
                .iter()
                .find_map(|r| r.split_once("Config: ").map(|(_, c)| c))
                .expect("a Config line");
            let real_keys = names(real_cfg);
            let mut at = 0;
            for k in names(keys) {
                let i = real_keys[at..]
                    .iter()
                    .position(|r| *r == k)
                    .unwrap_or_else(|| {
                        panic!("sample Config key {k} not (in this order) in: {real_cfg}")
                    });
                at += i + 1;
            }
        } else if request_line.is_match(&msg) {
            let method = msg.split(' ').next().expect("method").to_owned();
            assert!(
                matches(&|r| request_line.is_match(r) && r.starts_with(&method)),
                "no real {method} request line like {msg:?}:\n{log}"
            );
        } else {
            // Startup and handler lines: the same text up to the first value.
            let prefix = msg
                .split_once(": ")
                .map(|(p, _)| format!("{p}: "))
                .unwrap_or(msg.clone());
            assert!(
                matches(&|r| r.starts_with(&prefix)),
                "sample line {msg:?}: no real line starts with {prefix:?}:\n{log}"
            );
        }
    }
}

#[test]
fn json_log_sample_has_the_real_keys() {
    let w = served("json");
    let mut real: Vec<serde_json::Value> = w
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (status, out) = watchdog()
        .fprocess("cat")
        .env("log_format", "json")
        .env("read_timeout", "abc")
        .run(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    real.extend(out.lines().filter_map(|l| serde_json::from_str(l).ok()));
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    for line in block_after(&page(LOGS_PAGE), "## JSON") {
        let sample: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("sample JSON {e}: {line}"));
        let want = keys(&sample);
        let level = &sample["level"];
        assert!(
            real.iter().any(|r| keys(r) == want && &r["level"] == level),
            "no real {level} line with the keys {want:?} of {line}:\n{real:#?}"
        );
    }
}
