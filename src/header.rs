//! Header-name spelling shared by configuration, the request chain and the runners.

/// `content-type` → `Content-Type`, the way Go's `CanonicalMIMEHeaderKey` spells it:
/// the first letter and every letter after `-` upper-case, the rest lower-case.
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_match_go() {
        let cases = [
            ("x-api-key", "X-Api-Key"),
            ("content-type", "Content-Type"),
            ("X-FORWARDED-FOR", "X-Forwarded-For"),
            ("a--b", "A--B"),
            ("-x", "-X"),
            ("x_under_score", "X_under_score"),
            ("dnt", "Dnt"),
            ("x-1st-thing", "X-1st-Thing"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical(raw), want, "{raw}");
        }
    }
}
