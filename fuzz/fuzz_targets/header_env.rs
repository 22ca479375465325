//! The header → `Http_*` environment mapping.
//!
//! Input: a first byte of flags, a line `METHOD URI`, then `name: value` lines; whatever
//! the `http` crate would not accept as a request is skipped, the rest becomes a request.
//!
//! Invariant: every variable is `Http_` plus a name with no `=` and no NUL, and no value
//! holds a NUL (either would make the handler impossible to start, or let a client
//! inject a variable). Each header kept appears as `env_name(header)` with its *first*
//! value; `Proxy`, the hidden API-key header and every header whose variable name is
//! reserved (`Query:` → `Http_Query`, `Transfer_Encoding:`, ...) never appear; each
//! reserved variable is set at most once, by the watchdog, after every header (so
//! `Http_Query` exists only when the URL has a query); `cgi_headers=false` adds nothing.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use fwatchdog::header::canonical as canonical_header;
use fwatchdog::runner::env::{decoded_path, env_name, handler_env, passes, EnvOptions, RESERVED};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

fn last<'a>(env: &'a [(String, OsString)], name: &str) -> Option<(usize, &'a OsString)> {
    env.iter()
        .enumerate()
        .rev()
        .find(|(_, (n, _))| n == name)
        .map(|(i, (_, v))| (i, v))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, uri) = match first.iter().position(|b| *b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b"GET"[..], first),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let uri = Uri::try_from(uri).unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("valid parts");
    for line in lines {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        req.headers_mut().append(name, value);
    }
    let (parts, ()) = req.into_parts();
    let hidden = HeaderName::from_static("x-api-key");
    let opts = EnvOptions {
        cgi_headers: flags & 1 == 0,
        content_length: (flags & 2 != 0).then_some(u64::from(flags)),
        hidden: (flags & 4 != 0).then_some(&hidden),
    };
    let env = handler_env(&parts, &opts);
    if !opts.cgi_headers {
        assert!(env.is_empty());
        return;
    }

    for (name, value) in &env {
        assert!(name.starts_with("Http_"), "{name:?}");
        assert!(!name.contains(['=', '\0']), "{name:?}");
        assert!(!value.as_bytes().contains(&0), "{name}={value:?}");
        assert_ne!(name, "Http_Proxy");
    }

    // Header-derived variables, in order, before the request-derived ones.
    let hidden_var = opts.hidden.map(|h| env_name(h.as_str()));
    let kept: Vec<&HeaderName> = parts
        .headers
        .keys()
        .filter(|n| passes(&env_name(n.as_str()), hidden_var.as_deref()))
        .collect();
    assert!(kept
        .iter()
        .all(|n| *n != "proxy" && Some(*n) != opts.hidden));
    assert!(env.len() >= kept.len());
    for (name, (var, value)) in kept.iter().zip(&env) {
        assert_eq!(*var, env_name(name.as_str()));
        let first = parts.headers.get(*name).expect("present");
        assert_eq!(value.as_bytes(), first.as_bytes(), "{name}");
        let canon = canonical_header(name.as_str());
        assert_eq!(canon.to_ascii_lowercase(), name.as_str());
        assert_eq!(canonical_header(&canon), canon);
    }
    for reserved in RESERVED {
        assert!(
            env.iter().filter(|(n, _)| n == reserved).count() <= 1,
            "{reserved} set more than once"
        );
    }
    let derived = &env[kept.len()..];
    assert!(derived.iter().all(|(n, _)| matches!(
        n.as_str(),
        "Http_Method"
            | "Http_Path"
            | "Http_Query"
            | "Http_Host"
            | "Http_Transfer_Encoding"
            | "Http_ContentLength"
    )));

    let (m, method) = last(&env, "Http_Method").expect("Http_Method");
    assert_eq!(method.as_bytes(), parts.method.as_str().as_bytes());
    let (p, path) = last(&env, "Http_Path").expect("Http_Path");
    assert_eq!(path.as_bytes(), decoded_path(parts.uri.path()));
    let (h, _) = last(&env, "Http_Host").expect("Http_Host");
    let query = last(&env, "Http_Query");
    assert_eq!(
        query.map(|(_, q)| q.as_bytes()),
        parts
            .uri
            .query()
            .filter(|q| !q.is_empty())
            .map(str::as_bytes)
    );
    for i in [m, p, h].into_iter().chain(query.map(|(i, _)| i)) {
        assert!(i >= kept.len(), "request variable overridable by a header");
    }
    if let Some(n) = opts.content_length {
        let (_, cl) = last(&env, "Http_ContentLength").expect("Http_ContentLength");
        assert_eq!(cl.as_bytes(), n.to_string().as_bytes());
    }
});
