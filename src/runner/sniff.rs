//! The Content-Type the classic watchdog gives a handler's output when nothing else names
//! one: Go's `http.DetectContentType`, the WHATWG MIME sniffing algorithm as Go
//! implements it.
//!
//! Images built for the classic watchdog print HTML, XML or a PNG and rely on the answer
//! being labelled from its first bytes, so this follows Go's table entry by entry and in
//! its order (the first match wins), with Go's quirks: only the first 512 bytes count,
//! leading whitespace is skipped for the HTML and XML signatures and for the text check
//! only, a byte after an HTML tag name must be a space or `>`, and text is anything
//! without a control byte, valid UTF-8 or not.

/// The most bytes the decision looks at.
pub const WINDOW: usize = 512;

/// What nothing more specific matches.
const FALLBACK: &str = "application/octet-stream";

/// One row of the table.
enum Signature {
    /// An HTML tag (case-insensitive, upper-case in the table) after leading whitespace,
    /// followed by a space or `>`.
    Html(&'static [u8]),
    /// `data & mask == pattern` byte by byte, from the first byte (or the first
    /// non-whitespace one).
    Masked {
        mask: &'static [u8],
        pattern: &'static [u8],
        skip_ws: bool,
        ct: &'static str,
    },
    /// The data starts with these bytes.
    Exact(&'static [u8], &'static str),
    /// An ISO base media file whose `ftyp` box names an `mp4` brand.
    Mp4,
    /// No binary byte after leading whitespace: must be last.
    Text,
}

use Signature::{Exact, Html, Masked, Mp4, Text};

const fn masked(mask: &'static [u8], pattern: &'static [u8], ct: &'static str) -> Signature {
    Masked {
        mask,
        pattern,
        skip_ws: false,
        ct,
    }
}

/// A RIFF container of the given form type (bytes 8..12); the size is ignored.
const RIFF_MASK: &[u8] = b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF";

/// Embedded OpenType: anything, then "LP" at offset 34.
const EOT_MASK: [u8; 36] = at_34([0xFF, 0xFF]);
const EOT_PATTERN: [u8; 36] = at_34(*b"LP");

const fn at_34(two: [u8; 2]) -> [u8; 36] {
    let mut bytes = [0; 36];
    bytes[34] = two[0];
    bytes[35] = two[1];
    bytes
}

/// Go's table, in Go's order.
const SIGNATURES: &[Signature] = &[
    Html(b"<!DOCTYPE HTML"),
    Html(b"<HTML"),
    Html(b"<HEAD"),
    Html(b"<SCRIPT"),
    Html(b"<IFRAME"),
    Html(b"<H1"),
    Html(b"<DIV"),
    Html(b"<FONT"),
    Html(b"<TABLE"),
    Html(b"<A"),
    Html(b"<STYLE"),
    Html(b"<TITLE"),
    Html(b"<B"),
    Html(b"<BODY"),
    Html(b"<BR"),
    Html(b"<P"),
    Html(b"<!--"),
    Masked {
        mask: b"\xFF\xFF\xFF\xFF\xFF",
        pattern: b"<?xml",
        skip_ws: true,
        ct: "text/xml; charset=utf-8",
    },
    Exact(b"%PDF-", "application/pdf"),
    Exact(b"%!PS-Adobe-", "application/postscript"),
    // Byte order marks.
    masked(
        b"\xFF\xFF\x00\x00",
        b"\xFE\xFF\x00\x00",
        "text/plain; charset=utf-16be",
    ),
    masked(
        b"\xFF\xFF\x00\x00",
        b"\xFF\xFE\x00\x00",
        "text/plain; charset=utf-16le",
    ),
    masked(
        b"\xFF\xFF\xFF\x00",
        b"\xEF\xBB\xBF\x00",
        "text/plain; charset=utf-8",
    ),
    // Images.
    Exact(b"\x00\x00\x01\x00", "image/x-icon"),
    Exact(b"\x00\x00\x02\x00", "image/x-icon"),
    Exact(b"BM", "image/bmp"),
    Exact(b"GIF87a", "image/gif"),
    Exact(b"GIF89a", "image/gif"),
    masked(
        b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF\xFF\xFF",
        b"RIFF\x00\x00\x00\x00WEBPVP",
        "image/webp",
    ),
    Exact(b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
    Exact(b"\xFF\xD8\xFF", "image/jpeg"),
    // Audio and video.
    masked(RIFF_MASK, b"FORM\x00\x00\x00\x00AIFF", "audio/aiff"),
    masked(b"\xFF\xFF\xFF", b"ID3", "audio/mpeg"),
    masked(b"\xFF\xFF\xFF\xFF\xFF", b"OggS\x00", "application/ogg"),
    masked(
        b"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF",
        b"MThd\x00\x00\x00\x06",
        "audio/midi",
    ),
    masked(RIFF_MASK, b"RIFF\x00\x00\x00\x00AVI ", "video/avi"),
    masked(RIFF_MASK, b"RIFF\x00\x00\x00\x00WAVE", "audio/wave"),
    Mp4,
    Exact(b"\x1A\x45\xDF\xA3", "video/webm"),
    masked(&EOT_MASK, &EOT_PATTERN, "application/vnd.ms-fontobject"),
    Exact(b"\x00\x01\x00\x00", "font/ttf"),
    Exact(b"OTTO", "font/otf"),
    Exact(b"ttcf", "font/collection"),
    Exact(b"wOFF", "font/woff"),
    Exact(b"wOF2", "font/woff2"),
    // Archives.
    Exact(b"\x1F\x8B\x08", "application/x-gzip"),
    Exact(b"PK\x03\x04", "application/zip"),
    Exact(b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
    Exact(b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
    Exact(b"\x00\x61\x73\x6D", "application/wasm"),
    Text,
];

/// Go's `http.DetectContentType(data)`: always a valid MIME type.
pub fn content_type(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(WINDOW)];
    let first_non_ws = data.iter().take_while(|b| is_ws(**b)).count();
    SIGNATURES
        .iter()
        .find_map(|sig| sig.matches(data, first_non_ws))
        .unwrap_or(FALLBACK)
}

/// The WHATWG whitespace bytes.
fn is_ws(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// A byte Go's text check calls binary.
fn is_binary(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F)
}

impl Signature {
    fn matches(&self, data: &[u8], first_non_ws: usize) -> Option<&'static str> {
        match self {
            Html(tag) => {
                let data = &data[first_non_ws..];
                let next = *data.get(tag.len())?;
                let same = tag.iter().zip(data).all(|(t, d)| {
                    // Letters compare without case; other bytes exactly.
                    let d = if t.is_ascii_uppercase() { d & 0xDF } else { *d };
                    *t == d
                });
                (same && matches!(next, b' ' | b'>')).then_some("text/html; charset=utf-8")
            }
            Masked {
                mask,
                pattern,
                skip_ws,
                ct,
            } => {
                let data = if *skip_ws {
                    &data[first_non_ws..]
                } else {
                    data
                };
                let head = data.get(..pattern.len())?;
                let same = head
                    .iter()
                    .zip(mask.iter())
                    .zip(pattern.iter())
                    .all(|((d, m), p)| d & m == *p);
                same.then_some(*ct)
            }
            Exact(prefix, ct) => data.starts_with(prefix).then_some(*ct),
            Mp4 => is_mp4(data).then_some("video/mp4"),
            Text => (!data[first_non_ws..].iter().any(|b| is_binary(*b)))
                .then_some("text/plain; charset=utf-8"),
        }
    }
}

/// The WHATWG signature for MP4: an `ftyp` box whose size is a multiple of 4 and fits,
/// with `mp4` as the major brand or a compatible brand (the minor version, bytes 12..16,
/// is skipped).
fn is_mp4(data: &[u8]) -> bool {
    let Some(size) = data.get(..4) else {
        return false;
    };
    if data.len() < 12 {
        return false;
    }
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if data.len() < size || !size.is_multiple_of(4) || &data[4..8] != b"ftyp" {
        return false;
    }
    (8..size)
        .step_by(4)
        .filter(|at| *at != 12)
        .any(|at| data.get(at..at + 3) == Some(b"mp4"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample (or more) for every type Go's table names, and the cases around its
    /// rules. Expected values are what Go's `http.DetectContentType` returns.
    #[test]
    fn every_type_go_recognises() {
        let mut eot = vec![0u8; 34];
        eot.extend_from_slice(b"LP");
        let mut long_text = vec![b'a'; WINDOW];
        long_text.push(0); // past the window: not looked at
        let mut late_binary = vec![b'a'; WINDOW - 1];
        late_binary.push(0);
        let cases: &[(&[u8], &str)] = &[
            // Empty input: Go says text (no binary byte); callers decide about empty.
            (b"", "text/plain; charset=utf-8"),
            // HTML, every tag, any case, after whitespace, ended by space or `>`.
            (b"<!DOCTYPE HTML>", "text/html; charset=utf-8"),
            (b"<!doctype html><p>x", "text/html; charset=utf-8"),
            (b"<HTML>", "text/html; charset=utf-8"),
            (b"  \n\t<html lang=en>", "text/html; charset=utf-8"),
            (b"<head>", "text/html; charset=utf-8"),
            (b"<script>", "text/html; charset=utf-8"),
            (b"<iframe ", "text/html; charset=utf-8"),
            (b"<h1>Hi</h1>", "text/html; charset=utf-8"),
            (b"<div>", "text/html; charset=utf-8"),
            (b"<font>", "text/html; charset=utf-8"),
            (b"<table>", "text/html; charset=utf-8"),
            (b"<a href=x>", "text/html; charset=utf-8"),
            (b"<style>", "text/html; charset=utf-8"),
            (b"<title>", "text/html; charset=utf-8"),
            (b"<b>", "text/html; charset=utf-8"),
            (b"<body>", "text/html; charset=utf-8"),
            (b"<br>", "text/html; charset=utf-8"),
            (b"<p>", "text/html; charset=utf-8"),
            (b"<!-- c -->", "text/html; charset=utf-8"),
            // Not a tag: no terminator, another letter, or nothing after it.
            (b"<html", "text/plain; charset=utf-8"),
            (b"<htmlx>", "text/plain; charset=utf-8"),
            (b"<h2>", "text/plain; charset=utf-8"),
            (b"<html\n>", "text/plain; charset=utf-8"),
            // XML, after whitespace; case matters.
            (b"<?xml version=\"1.0\"?>", "text/xml; charset=utf-8"),
            (b"\n <?xml?>", "text/xml; charset=utf-8"),
            (b"<?XML ?>", "text/plain; charset=utf-8"),
            (b"%PDF-1.7\n", "application/pdf"),
            (b" %PDF-1.7", "text/plain; charset=utf-8"),
            (b"%!PS-Adobe-3.0", "application/postscript"),
            (b"\xFE\xFF\x00\x41", "text/plain; charset=utf-16be"),
            (b"\xFF\xFE\x41\x00", "text/plain; charset=utf-16le"),
            (b"\xEF\xBB\xBFhi", "text/plain; charset=utf-8"),
            (b"\x00\x00\x01\x00\x01", "image/x-icon"),
            (b"\x00\x00\x02\x00\x01", "image/x-icon"),
            (b"BM\x00\x00", "image/bmp"),
            (b"GIF87a", "image/gif"),
            (b"GIF89a\x01\x00", "image/gif"),
            (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
            (b"\x89PNG\x0D\x0A\x1A\x0A\x00\x00\x00\x0DIHDR", "image/png"),
            (b"\xFF\xD8\xFF\xE0\x00\x10JFIF", "image/jpeg"),
            (b"FORM\x00\x00\x00\x00AIFF", "audio/aiff"),
            (b"ID3\x04\x00", "audio/mpeg"),
            (b"OggS\x00\x02", "application/ogg"),
            (b"MThd\x00\x00\x00\x06\x00\x01", "audio/midi"),
            (b"RIFF\x00\x00\x00\x00AVI LIST", "video/avi"),
            (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wave"),
            (
                b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
                "video/mp4",
            ),
            (b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00mp41", "video/mp4"),
            // The brand at 12..16 is the minor version: never an mp4 brand.
            (
                b"\x00\x00\x00\x10ftypisom\x6D\x70\x34\x32",
                "application/octet-stream",
            ),
            // A box larger than the data is not mp4.
            (
                b"\x00\x00\x00\x20ftypmp42\x00\x00\x00\x00",
                "application/octet-stream",
            ),
            (b"\x1A\x45\xDF\xA3\x01", "video/webm"),
            (&eot, "application/vnd.ms-fontobject"),
            (b"\x00\x01\x00\x00\x00", "font/ttf"),
            (b"OTTO\x00", "font/otf"),
            (b"ttcf\x00", "font/collection"),
            (b"wOFF\x00", "font/woff"),
            (b"wOF2\x00", "font/woff2"),
            (b"\x1F\x8B\x08\x00", "application/x-gzip"),
            (b"PK\x03\x04\x14\x00", "application/zip"),
            (b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
            (b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
            (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
            // Text or not: only control bytes count, not UTF-8 validity.
            (b"hello\n", "text/plain; charset=utf-8"),
            (b"caf\xC3\xA9 \xFF\xFE", "text/plain; charset=utf-8"),
            (b"{\"a\":1}\x1B[0m", "text/plain; charset=utf-8"),
            (b"a\x0Bb", "application/octet-stream"),
            (b"\x00\x01\x02", "application/octet-stream"),
            (b"a\x1Fb", "application/octet-stream"),
            (&long_text, "text/plain; charset=utf-8"),
            (&late_binary, "application/octet-stream"),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(data, want)| content_type(data) != *want)
            .map(|(data, want)| {
                format!(
                    "{:?}: got {}, want {want}",
                    String::from_utf8_lossy(&data[..data.len().min(40)]),
                    content_type(data)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_first_row_that_matches_wins() {
        // `<!--` is HTML even when XML follows; a BOM before `<?xml` is text.
        assert_eq!(
            content_type(b"<!-- x --><?xml?>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(b"\xEF\xBB\xBF<?xml?>"),
            "text/plain; charset=utf-8"
        );
    }
}
