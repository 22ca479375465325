//! The http-mode path normaliser: `head::resolve_dots`, which removes
//! dot-segments before the request path is joined to `upstream_url`'s.
//!
//! Input: a request target's path and query as raw bytes (a `/` is put in front);
//! whatever `http` would not accept as a path-and-query is skipped.
//!
//! Invariant: never panics. What it accepts starts with `/`, has no segment that is `.`
//! or `..` (with `%2e` read as `.`), resolves to itself again, is still a valid path, and
//! keeps the input's other segments in order; it accepts exactly the paths whose `..`
//! never climb above `/` (a simple depth count says which), unless a segment hides a dot
//! behind `%2f`, `\` or `;` (refused as ambiguous, and only then). A path with no `.`,
//! `%` or `\` comes back unchanged.
#![no_main]

use fwatchdog::head::{resolve_dots, BadPath};
use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;

/// `.` or `..` with `%2e`/`%2E` read as `.`; 0 otherwise.
fn dots(seg: &str) -> usize {
    match seg.replace("%2e", ".").replace("%2E", ".").as_str() {
        "." => 1,
        ".." => 2,
        _ => 0,
    }
}

/// Whether a segment that is not a dot-segment would be one to a server that splits at
/// `%2f`/`\` after decoding or drops `;params`.
fn hides_a_dot(seg: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
    seg.split(';').next().is_some_and(|s| dots(s) > 0)
        || decoded.split(|b| *b == b'/' || *b == b'\\').any(|p| {
            let p = p.split(|b| *b == b';').next().unwrap_or_default();
            p == b"." || p == b".."
        })
}

fuzz_target!(|data: &[u8]| {
    let mut target = b"/".to_vec();
    target.extend_from_slice(data);
    let Ok(pq) = PathAndQuery::try_from(target) else {
        return;
    };
    let path = pq.path();
    let segs: Vec<&str> = path[1..].split('/').collect();

    // The model: the first ambiguous segment or climb decides.
    let mut depth: i64 = 0;
    let mut want: Result<(), BadPath> = Ok(());
    for seg in &segs {
        match dots(seg) {
            1 => {}
            2 => depth -= 1,
            _ if hides_a_dot(seg) => {
                want = Err(BadPath::Ambiguous);
                break;
            }
            _ => depth += 1,
        }
        if depth < 0 {
            want = Err(BadPath::Climbs);
            break;
        }
    }

    let got = resolve_dots(path);
    match (&got, want) {
        (Ok(out), Ok(())) => {
            assert!(out.starts_with('/'), "{path:?} -> {out:?}");
            let out_segs: Vec<&str> = out[1..].split('/').collect();
            assert!(out_segs.iter().all(|s| dots(s) == 0), "{path:?} -> {out:?}");
            assert_eq!(resolve_dots(out).as_deref(), Ok(&**out), "not idempotent");
            assert!(PathAndQuery::try_from(&**out).is_ok(), "{out:?} invalid");
            // Kept segments are the input's, in order (a trailing "" may be added).
            let mut rest = segs.iter().filter(|s| dots(s) == 0);
            let kept = match out_segs.split_last() {
                Some((&"", init)) => init,
                _ => &out_segs[..],
            };
            for s in kept {
                assert!(
                    rest.any(|r| r == s),
                    "{path:?} -> {out:?}: {s:?} out of order"
                );
            }
            if !path.bytes().any(|b| b == b'.' || b == b'%' || b == b'\\') {
                assert_eq!(&**out, path);
            }
        }
        (Err(e), Err(w)) => assert_eq!(*e, w, "{path:?}"),
        (got, want) => panic!("{path:?}: got {got:?}, model says {want:?}"),
    }
});
