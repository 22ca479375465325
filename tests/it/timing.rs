//! Does the API-key check leak timing? A dudect-style test (Reparaz et al., "Dude, is my
//! code constant time?"): measurements of two input classes are interleaved at random,
//! the slowest tail is cropped, and Welch's t-test compares the classes. |t| < 5 means no
//! detectable leak; the same method must find a deliberately leaky comparison (|t| > 10)
//! in the same run, or the test proves nothing.
//!
//! Statistical, so noisy machines can upset it: ignored by default. Run with
//! `cargo test --release --test it -- --ignored timing --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use fwatchdog::auth::ApiKeys;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::util::TempDir;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Welch's t statistic of two samples.
fn welch(a: &[f64], b: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let (na, ma, va) = stats(a);
    let (nb, mb, vb) = stats(b);
    (ma - mb) / (va / na + vb / nb).sqrt()
}

/// Measures `f(class)` for two classes in random order; returns |t| after cropping
/// the samples above the 90th percentile.
fn t_of(samples: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut times: [Vec<f64>; 2] = [Vec::with_capacity(samples), Vec::with_capacity(samples)];
    // Warm up caches and the branch predictor on both classes.
    for i in 0..1000 {
        f(i % 2);
    }
    for _ in 0..samples * 2 {
        let class = (rng.next() & 1) as usize;
        let t = Instant::now();
        for _ in 0..8 {
            f(class);
        }
        times[class].push(t.elapsed().as_nanos() as f64);
    }
    let mut all: Vec<f64> = times.iter().flatten().copied().collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let cut = all[all.len() * 9 / 10];
    let a: Vec<f64> = times[0].iter().copied().filter(|v| *v < cut).collect();
    let b: Vec<f64> = times[1].iter().copied().filter(|v| *v < cut).collect();
    welch(&a, &b).abs()
}

fn keys_with(secret: &str) -> (ApiKeys, TempDir) {
    let d = TempDir::new();
    std::fs::write(d.path().join("k"), secret).expect("secret");
    let k = ApiKeys::load(&["k".into()], &[d.path().to_path_buf()], HeaderName::from_static("x-api-key"), false)
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

/// `COPIES` allocations of each input, picked at random per measurement, so where an
/// object happens to sit in memory (cache sets, alignment) averages out instead of
/// looking like a difference between the classes.
const COPIES: usize = 32;

fn headers(v: &[u8]) -> Vec<HeaderMap> {
    (0..COPIES)
        .map(|_| {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_bytes(v).expect("value"));
            h
        })
        .collect()
}

#[test]
#[ignore = "statistical timing test; run on demand (see README)"]
fn timing_api_key_check_does_not_leak() {
    const N: usize = 200_000;
    let secret64: Vec<u8> = (0..64).map(|i| b'a' + (i % 26) as u8).collect();
    let secret16 = &secret64[..16];
    let k64: Vec<_> = (0..COPIES).map(|_| keys_with(std::str::from_utf8(&secret64).expect("utf8"))).collect();
    let k16: Vec<_> = (0..COPIES).map(|_| keys_with(std::str::from_utf8(secret16).expect("utf8"))).collect();

    let mut first = secret64.clone();
    first[0] = b'Z';
    let mut last = secret64.clone();
    last[63] = b'Z';
    let (right_h, first_h, last_h) = (headers(&secret64), headers(&first), headers(&last));
    let probe_h = headers(b"0123456789abcdef0123456789abcdef");
    let mut rng = Rng(12345);
    let mut pick = move || (rng.next() as usize) % COPIES;

    let t_right_vs_wrong = t_of(N, |c| {
        let (k, h) = (&k64[pick()].0, if c == 0 { &right_h[pick()] } else { &first_h[pick()] });
        black_box(k.check(black_box(h)));
    });
    let t_first_vs_last = t_of(N, |c| {
        let (k, h) = (&k64[pick()].0, if c == 0 { &first_h[pick()] } else { &last_h[pick()] });
        black_box(k.check(black_box(h)));
    });
    let t_secret_length = t_of(N, |c| {
        let k = if c == 0 { &k16[pick()].0 } else { &k64[pick()].0 };
        black_box(k.check(black_box(&probe_h[pick()])));
    });

    // The control: the same method on a comparison that exits at the first difference.
    let t_leaky = t_of(N, |c| {
        black_box(leaky_eq(black_box(&secret64), black_box(if c == 0 { &first } else { &last })));
    });

    println!("|t| right vs wrong-first-byte: {t_right_vs_wrong:.2}");
    println!("|t| wrong-first vs wrong-last: {t_first_vs_last:.2}");
    println!("|t| 16- vs 64-byte secret:     {t_secret_length:.2}");
    println!("|t| leaky control:             {t_leaky:.2}");
    assert!(t_leaky > 10.0, "the method cannot see a known leak (|t| = {t_leaky:.2}); the run proves nothing");
    for (what, t) in [("right vs wrong", t_right_vs_wrong), ("first vs last byte", t_first_vs_last), ("secret length", t_secret_length)] {
        assert!(t < 5.0, "{what}: |t| = {t:.2} suggests a timing leak");
    }
}

