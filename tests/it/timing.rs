//! Does the API-key check leak timing? A dudect-style test (Reparaz et al., "Dude, is my
//! code constant time?"): inputs of two classes are measured back to back in random
//! order, the slowest tail is cropped, and a paired t-test compares the classes. |t| < 5
//! means no detectable leak; the same method must find a deliberately leaky comparison
//! (|t| > 10) in the same run, or the test proves nothing.
//!
//! Statistical, so noisy machines can upset it: ignored by default. Run with
//! `cargo test --release --test it -- --ignored timing --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use fwatchdog::auth::ApiKeys;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::util::{Rng, TempDir};

/// Measures `run` on inputs of the two classes as pairs, back to back in random order,
/// and returns |t| of the paired differences (after cropping pairs with a sample above
/// the 90th percentile). Pairing cancels what a shared machine does to both members of a
/// pair alike (another process, a frequency change), which a two-sample test would read
/// as a difference whenever the burst happened to hit one class more often. Each input
/// is made afresh by `prepare` (untimed), so both classes' objects land at the same
/// recycled addresses: where an object sits cannot pass for a difference either.
fn t_of<T>(pairs: usize, mut prepare: impl FnMut(usize) -> T, mut run: impl FnMut(&T)) -> f64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut time = |input: &T| {
        let t = Instant::now();
        for _ in 0..8 {
            run(input);
        }
        t.elapsed().as_nanos() as f64
    };
    for i in 0..1000 {
        let input = prepare(i % 2);
        time(&input);
    }
    let mut samples: Vec<(f64, f64)> = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let first = (rng.next() & 1) as usize;
        let mut t = [0.0; 2];
        for class in [first, 1 - first] {
            let input = prepare(class);
            t[class] = time(&input);
        }
        samples.push((t[0], t[1]));
    }
    let mut all: Vec<f64> = samples.iter().flat_map(|(a, b)| [*a, *b]).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let cut = all[all.len() * 9 / 10];
    let d: Vec<f64> = samples
        .iter()
        .filter(|(a, b)| *a < cut && *b < cut)
        .map(|(a, b)| a - b)
        .collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean / (var / n).sqrt()).abs()
}

fn keys_with(secret: &str) -> (ApiKeys, TempDir) {
    let d = TempDir::new();
    std::fs::write(d.path().join("k"), secret).expect("secret");
    let k = ApiKeys::load(
        &["k".into()],
        &[d.path().to_path_buf()],
        HeaderName::from_static("x-api-key"),
        false,
    )
    .expect("load");
    (k, d)
}

/// The comparison the seed's functions used, made byte by byte so its early exit shows.
fn leaky_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if black_box(a[i]) != black_box(b[i]) {
            return false;
        }
    }
    true
}

fn header(v: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_bytes(v).expect("value"));
    h
}

#[test]
#[ignore = "statistical timing test; run on demand (see docs/src/development.md)"]
fn timing_api_key_check_does_not_leak() {
    const N: usize = 100_000;
    let secret64: Vec<u8> = (0..64).map(|i| b'a' + (i % 26) as u8).collect();
    let secret16 = secret64[..16].to_vec();
    let mut first = secret64.clone();
    first[0] = b'Z';
    let mut last = secret64.clone();
    last[63] = b'Z';
    let (k64, _d64) = keys_with(std::str::from_utf8(&secret64).expect("utf8"));
    let d16 = TempDir::new();
    std::fs::write(d16.path().join("k"), &secret16).expect("secret");
    let d64 = TempDir::new();
    std::fs::write(d64.path().join("k"), &secret64).expect("secret");
    let load = |d: &TempDir| {
        ApiKeys::load(
            &["k".into()],
            &[d.path().to_path_buf()],
            HeaderName::from_static("x-api-key"),
            false,
        )
        .expect("load")
    };

    // A random-sized allocation beside each input scatters where it lands, alike for
    // both classes (see the secret-length case below).
    let mut jitter = Rng(0x2545_f491_4f6c_dd1d);
    let mut jittered = |v: &[u8]| {
        (
            Vec::<u8>::with_capacity(1 + (jitter.next() % 512) as usize),
            header(v),
        )
    };
    let t_right_vs_wrong = t_of(
        N,
        |c| jittered(if c == 0 { &secret64 } else { &first }),
        |(_, h)| {
            black_box(k64.check(black_box(h)));
        },
    );
    let t_first_vs_last = t_of(
        N,
        |c| jittered(if c == 0 { &first } else { &last }),
        |(_, h)| {
            black_box(k64.check(black_box(h)));
        },
    );
    let probe = header(b"0123456789abcdef0123456789abcdef");
    // Loading a 16- or a 64-byte key frees a buffer of that size, which the allocator
    // then hands to the digest list, or not: the classes would differ in where their
    // digests sit, not in the comparison. A random-sized allocation around each load
    // scatters that placement over both classes alike.
    let mut jitter = Rng(0x9e37_79b9_7f4a_7c15 ^ 0x2545_f491_4f6c_dd1d);
    let t_secret_length = t_of(
        N / 4,
        |c| {
            let before: Vec<u8> = Vec::with_capacity(1 + (jitter.next() % 512) as usize);
            let k = load(if c == 0 { &d16 } else { &d64 });
            let after: Vec<u8> = Vec::with_capacity(1 + (jitter.next() % 512) as usize);
            (k, before, after)
        },
        |(k, _, _)| {
            black_box(k.check(black_box(&probe)));
        },
    );

    // The control: the same method on a comparison that exits at the first difference.
    let t_leaky = t_of(
        N,
        |c| if c == 0 { first.clone() } else { last.clone() },
        |v| {
            black_box(leaky_eq(black_box(&secret64), black_box(v)));
        },
    );

    println!("|t| right vs wrong-first-byte: {t_right_vs_wrong:.2}");
    println!("|t| wrong-first vs wrong-last: {t_first_vs_last:.2}");
    println!("|t| 16- vs 64-byte secret:     {t_secret_length:.2}");
    println!("|t| leaky control:             {t_leaky:.2}");
    assert!(
        t_leaky > 10.0,
        "the method cannot see a known leak (|t| = {t_leaky:.2}); the run proves nothing"
    );
    for (what, t) in [
        ("right vs wrong", t_right_vs_wrong),
        ("first vs last byte", t_first_vs_last),
        ("secret length", t_secret_length),
    ] {
        assert!(t < 5.0, "{what}: |t| = {t:.2} suggests a timing leak");
    }
}
