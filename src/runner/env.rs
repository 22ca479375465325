//! The environment a fork-mode handler gets: `Http_*` variables, CGI style.
//!
//! Header names become `Http_<Canonical_Name>`. The names of the request-derived
//! variables (`Http_Method`, `Http_Path`, `Http_Query`, ...) are reserved: a header that
//! maps to one is dropped, so `Http_Query` exists only when the URL has a query, whatever
//! the client sends. A `Proxy:` header is never passed (httpoxy).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use http::request::Parts;

/// `x-api-key` → `Http_X_Api_Key`.
pub fn env_name(header: &str) -> String {
    // `Http_` + `header::canonical` with `-` as `_`, in one allocation: this runs for
    // every header of every request.
    let mut name = String::with_capacity(header.len() + 5);
    name.push_str("Http_");
    let mut upper = true;
    for c in header.chars() {
        name.push(match c {
            '-' => '_',
            c if upper => c.to_ascii_uppercase(),
            c => c.to_ascii_lowercase(),
        });
        upper = c == '-';
    }
    name
}

/// The request path percent-decoded, except that a NUL byte stays `%00`: no environment
/// string can hold one, so decoding it would make the handler impossible to start (a
/// client's `/%00` answered 500 as if the function were broken).
pub fn decoded_path(path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for b in percent_encoding::percent_decode_str(path) {
        match b {
            0 => out.extend_from_slice(b"%00"),
            b => out.push(b),
        }
    }
    out
}

/// Variables only the watchdog sets. A header mapping to one of them is dropped, even when
/// the watchdog would not set it for this request (no query, not classic mode), so a
/// client can never forge one. `Http_Proxy` is httpoxy: never set at all.
pub const RESERVED: &[&str] = &[
    "Http_Method",
    "Http_Path",
    "Http_Query",
    "Http_Host",
    "Http_Transfer_Encoding",
    "Http_ContentLength",
    "Http_Proxy",
];

/// Whether a header with this name is passed as a variable (`hidden` is the API-key
/// header's variable name, when it must not be passed).
pub fn passes(var: &str, hidden: Option<&str>) -> bool {
    !RESERVED.contains(&var) && Some(var) != hidden
}

/// What else shapes the environment besides the request.
pub struct EnvOptions<'a> {
    pub cgi_headers: bool,
    /// `Http_ContentLength`, classic mode only.
    pub content_length: Option<u64>,
    /// A header never passed on (the API key, unless forwarded).
    pub hidden: Option<&'a http::HeaderName>,
}

/// The variables to add to the handler's environment, in the order they must be set.
pub fn handler_env(parts: &Parts, opts: &EnvOptions<'_>) -> Vec<(String, OsString)> {
    if !opts.cgi_headers {
        return Vec::new();
    }
    let mut env: Vec<(String, OsString)> = Vec::with_capacity(parts.headers.keys_len() + 6);
    // Compared by variable name, not header name: `X-Api_Key`, `Proxy` or `Query`
    // spelled any way that maps to the same variable must not get in either.
    let hidden = opts.hidden.map(|h| env_name(h.as_str()));
    for name in parts.headers.keys() {
        let var = env_name(name.as_str());
        if !passes(&var, hidden.as_deref()) {
            continue;
        }
        if let Some(first) = parts.headers.get(name) {
            env.push((var, OsString::from_vec(first.as_bytes().to_vec())));
        }
    }
    env.push(("Http_Method".into(), parts.method.as_str().into()));
    env.push((
        "Http_Path".into(),
        OsString::from_vec(decoded_path(parts.uri.path())),
    ));
    if let Some(q) = parts.uri.query().filter(|q| !q.is_empty()) {
        env.push(("Http_Query".into(), q.into()));
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes().to_vec())
        .or_else(|| {
            parts
                .uri
                .authority()
                .map(|a| a.as_str().as_bytes().to_vec())
        })
        .unwrap_or_default();
    env.push(("Http_Host".into(), OsString::from_vec(host)));
    if let Some(te) = parts.headers.get(http::header::TRANSFER_ENCODING) {
        env.push((
            "Http_Transfer_Encoding".into(),
            OsString::from_vec(te.as_bytes().to_vec()),
        ));
    }
    if let Some(n) = opts.content_length {
        env.push(("Http_ContentLength".into(), n.to_string().into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_canonical_headers() {
        assert_eq!(env_name("x-api-key"), "Http_X_Api_Key");
        assert_eq!(env_name("content-type"), "Http_Content_Type");
        for h in [
            "X-FORWARDED-FOR",
            "a--b",
            "-x",
            "x_under_score",
            "dnt",
            "x-1st-thing",
        ] {
            let want = format!("Http_{}", crate::header::canonical(h).replace('-', "_"));
            assert_eq!(env_name(h), want, "{h}");
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn get<'a>(env: &'a [(String, OsString)], k: &str) -> Option<&'a OsString> {
        env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    #[test]
    fn request_variables_override_headers() {
        let p = parts(
            "/a%20b/c?x=1&y=%20",
            &[
                ("host", "fn.local"),
                ("method", "FAKE"),
                ("path", "/evil"),
                ("proxy", "http://evil"),
                ("x-multi", "1"),
                ("x-multi", "2"),
            ],
        );
        let env = handler_env(
            &p,
            &EnvOptions {
                cgi_headers: true,
                content_length: Some(5),
                hidden: None,
            },
        );
        assert_eq!(get(&env, "Http_Method").expect("method"), "POST");
        assert_eq!(get(&env, "Http_Path").expect("path"), "/a b/c");
        assert_eq!(get(&env, "Http_Query").expect("query"), "x=1&y=%20");
        assert_eq!(get(&env, "Http_Host").expect("host"), "fn.local");
        assert_eq!(get(&env, "Http_X_Multi").expect("multi"), "1");
        assert_eq!(get(&env, "Http_ContentLength").expect("cl"), "5");
        assert!(get(&env, "Http_Proxy").is_none());
        for reserved in RESERVED {
            assert!(
                env.iter().filter(|(n, _)| n == reserved).count() <= 1,
                "{reserved} set once, by the watchdog: {env:?}"
            );
        }
    }

    #[test]
    fn headers_with_reserved_names_are_dropped_even_when_the_variable_is_unset() {
        let p = parts(
            "/",
            &[
                ("query", "forged=1"),
                ("transfer_encoding", "chunked"),
                ("http-proxy", "kept: not reserved"),
            ],
        );
        let opts = EnvOptions {
            cgi_headers: true,
            content_length: None,
            hidden: None,
        };
        let env = handler_env(&p, &opts);
        assert!(get(&env, "Http_Query").is_none(), "{env:?}");
        assert!(get(&env, "Http_Transfer_Encoding").is_none(), "{env:?}");
        assert!(get(&env, "Http_Http_Proxy").is_some(), "{env:?}");
    }

    #[test]
    fn a_nul_in_the_path_stays_encoded_so_the_handler_can_start() {
        let p = parts("/a%00b%2500%41", &[]);
        let opts = EnvOptions {
            cgi_headers: true,
            content_length: None,
            hidden: None,
        };
        let env = handler_env(&p, &opts);
        assert_eq!(get(&env, "Http_Path").expect("path"), "/a%00b%00A");
        assert!(env.iter().all(|(_, v)| !v.as_encoded_bytes().contains(&0)));
    }

    #[test]
    fn a_header_spelled_to_collide_with_a_hidden_one_is_dropped_too() {
        let key = http::HeaderName::from_static("x-api-key");
        let p = parts(
            "/",
            &[("x-api_key", "forged"), ("proxy_", "x"), ("pRoxy", "y")],
        );
        let env = handler_env(
            &p,
            &EnvOptions {
                cgi_headers: true,
                content_length: None,
                hidden: Some(&key),
            },
        );
        assert!(
            env.iter()
                .all(|(n, _)| n != "Http_X_Api_Key" && n != "Http_Proxy"),
            "{env:?}"
        );
    }

    #[test]
    fn hidden_header_and_no_query() {
        let key = http::HeaderName::from_static("x-api-key");
        let p = parts("/", &[("x-api-key", "s3cret")]);
        let env = handler_env(
            &p,
            &EnvOptions {
                cgi_headers: true,
                content_length: None,
                hidden: Some(&key),
            },
        );
        assert!(env
            .iter()
            .all(|(n, v)| n != "Http_X_Api_Key" && v != "s3cret"));
        assert!(get(&env, "Http_Query").is_none());
        assert!(get(&env, "Http_ContentLength").is_none());
        let env = handler_env(
            &p,
            &EnvOptions {
                cgi_headers: false,
                content_length: None,
                hidden: None,
            },
        );
        assert!(env.is_empty());
    }
}
