//! The FastCGI 1.0 record layer, as pure functions: what the web server writes
//! (`BEGIN_REQUEST`, `PARAMS`, `STDIN`, `ABORT_REQUEST`) and a [`Decoder`] for what the
//! application answers (`STDOUT`, `STDERR`, `END_REQUEST`).
//!
//! No I/O here, so every byte a hostile worker could send is tested in memory (and
//! fuzzed: `fuzz/fuzz_targets/fastcgi_records.rs`). The decoder never trusts a length it
//! has not checked: a record is at most 8 + 65535 + 255 bytes by construction, so its
//! buffer is bounded too.

use bytes::{Buf, Bytes, BytesMut};

/// `FCGI_VERSION_1`.
pub const VERSION: u8 = 1;
/// Record header size.
pub const HEADER_LEN: usize = 8;
/// Largest content of one record.
pub const MAX_CONTENT: usize = 0xffff;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// `FCGI_RESPONDER`, the only role we use.
pub const RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN`: the application leaves the connection open after the request.
pub const KEEP_CONN: u8 = 1;

/// `protocolStatus` of `END_REQUEST`.
pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// A record header for `len` bytes of content (no padding: it is optional).
pub fn header(kind: u8, id: u16, len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_CONTENT);
    let [id_hi, id_lo] = id.to_be_bytes();
    let [len_hi, len_lo] = (len.min(MAX_CONTENT) as u16).to_be_bytes();
    [VERSION, kind, id_hi, id_lo, len_hi, len_lo, 0, 0]
}

/// `BEGIN_REQUEST` for the responder role.
pub fn begin_request(id: u16, keep_conn: bool) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..HEADER_LEN].copy_from_slice(&header(BEGIN_REQUEST, id, 8));
    out[8..10].copy_from_slice(&RESPONDER.to_be_bytes());
    out[10] = if keep_conn { KEEP_CONN } else { 0 };
    out
}

/// `ABORT_REQUEST`.
pub fn abort_request(id: u16) -> [u8; HEADER_LEN] {
    header(ABORT_REQUEST, id, 0)
}

/// Appends a name-value pair in FastCGI's length-prefixed form (FastCGI 1.0 specification, section 3.4): lengths below
/// 128 take one byte, longer ones four with the top bit set. Lengths over 2³¹-1 cannot
/// be encoded; such a pair is skipped (no environment string comes close).
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if name.len() > 0x7fff_ffff || value.len() > 0x7fff_ffff {
        return;
    }
    for len in [name.len(), value.len()] {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Appends `data` as records of type `kind`, split at [`MAX_CONTENT`]. Empty data
/// appends nothing: the empty record that ends a stream is [`end_stream`].
pub fn push_stream(out: &mut Vec<u8>, kind: u8, id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        out.extend_from_slice(&header(kind, id, chunk.len()));
        out.extend_from_slice(chunk);
    }
}

/// The empty record that ends a `PARAMS` or `STDIN` stream.
pub fn end_stream(kind: u8, id: u16) -> [u8; HEADER_LEN] {
    header(kind, id, 0)
}

/// `BEGIN_REQUEST` plus the whole `PARAMS` stream, ready to write in one go.
pub fn request_head<'a>(
    id: u16,
    keep_conn: bool,
    params: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    request_head_with(id, keep_conn, &encode_pairs(params))
}

/// The content of a `PARAMS` stream: the pairs, one after the other.
pub fn encode_pairs<'a>(params: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut pairs = Vec::with_capacity(1024);
    for (k, v) in params {
        push_pair(&mut pairs, k, v);
    }
    pairs
}

/// [`request_head`] for pairs already encoded ([`encode_pairs`]).
pub fn request_head_with(id: u16, keep_conn: bool, pairs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() + 64);
    out.extend_from_slice(&begin_request(id, keep_conn));
    push_stream(&mut out, PARAMS, id, pairs);
    out.extend_from_slice(&end_stream(PARAMS, id));
    out
}

/// One record as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub id: u16,
    pub content: Bytes,
}

/// What `END_REQUEST` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The application's exit status (like a CGI program's).
    pub app_status: u32,
    pub protocol_status: u8,
}

/// Why the bytes from a worker are not FastCGI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Version(u8),
    /// `END_REQUEST` with content shorter than its 8-byte body.
    ShortEnd(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Version(v) => write!(f, "record with FastCGI version {v}, expected 1"),
            DecodeError::ShortEnd(n) => {
                write!(f, "END_REQUEST with {n} bytes of content, expected 8")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Parses the content of an `END_REQUEST` record.
pub fn parse_end(content: &[u8]) -> Result<End, DecodeError> {
    if content.len() < 8 {
        return Err(DecodeError::ShortEnd(content.len()));
    }
    Ok(End {
        app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
        protocol_status: content[4],
    })
}

/// Splits a byte stream into records, in pieces of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            buf: BytesMut::with_capacity(HEADER_LEN + MAX_CONTENT + 255),
        }
    }

    /// Where the next read goes: at least one whole record's room.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        self.buf.reserve(HEADER_LEN + MAX_CONTENT + 255);
        &mut self.buf
    }

    /// Adds received bytes (for tests and fuzzing; I/O reads into [`Decoder::buf_mut`]).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet returned as a record.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole record, `Ok(None)` until one has arrived. The content is a slice
    /// of the buffer, not a copy. The padding is skipped.
    pub fn next_record(&mut self) -> Result<Option<Record>, DecodeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[..HEADER_LEN];
        if h[0] != VERSION {
            return Err(DecodeError::Version(h[0]));
        }
        let kind = h[1];
        let id = u16::from_be_bytes([h[2], h[3]]);
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let padding = usize::from(h[6]);
        if self.buf.len() < HEADER_LEN + len + padding {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let content = self.buf.split_to(len).freeze();
        self.buf.advance(padding);
        Ok(Some(Record { kind, id, content }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(bytes: &[u8]) -> Vec<Record> {
        let mut d = Decoder::new();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(r) = d.next_record().expect("decodes") {
            out.push(r);
        }
        assert_eq!(d.pending(), 0);
        out
    }

    /// Decodes a PARAMS stream back into pairs (what an application does).
    fn pairs(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fn len(b: &mut &[u8]) -> usize {
            if b[0] < 0x80 {
                let n = usize::from(b[0]);
                *b = &b[1..];
                n
            } else {
                let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
                *b = &b[4..];
                n
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let (n, v) = (len(&mut b), len(&mut b));
            out.push((b[..n].to_vec(), b[n..n + v].to_vec()));
            b = &b[n + v..];
        }
        out
    }

    #[test]
    fn begin_request_is_the_responder_role_with_keep_conn() {
        assert_eq!(
            begin_request(1, true),
            [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
        );
        assert_eq!(begin_request(0x1234, false)[2..4], [0x12, 0x34]);
        assert_eq!(begin_request(1, false)[10], 0);
        assert_eq!(abort_request(1), [1, 2, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn pairs_use_one_or_four_byte_lengths() {
        let mut out = Vec::new();
        push_pair(&mut out, b"A", b"xyz");
        assert_eq!(out, b"\x01\x03Axyz");
        let long = vec![b'v'; 200];
        let mut out = Vec::new();
        push_pair(&mut out, b"K", &long);
        assert_eq!(&out[..5], &[1, 0x80, 0, 0, 200]);
        assert_eq!(pairs(&out), [(b"K".to_vec(), long)]);
        let mut out = Vec::new();
        push_pair(&mut out, &[b'n'; 127], b"");
        assert_eq!(out[0], 127, "127 still fits one byte");
    }

    #[test]
    fn request_head_round_trips_and_splits_large_params() {
        let big = vec![b'x'; 100_000];
        let params: Vec<(&[u8], &[u8])> = vec![
            (b"REQUEST_METHOD", b"GET"),
            (b"HTTP_BIG", &big),
            (b"EMPTY", b""),
        ];
        let bytes = request_head(1, true, params.clone());
        let recs = records(&bytes);
        assert_eq!(recs[0].kind, BEGIN_REQUEST);
        let params_recs: Vec<&Record> = recs[1..].iter().collect();
        assert!(params_recs.iter().all(|r| r.kind == PARAMS && r.id == 1));
        assert!(
            params_recs.len() >= 3,
            "100 KB needs two records plus the end"
        );
        assert!(params_recs.last().is_some_and(|r| r.content.is_empty()));
        let stream: Vec<u8> = params_recs
            .iter()
            .flat_map(|r| r.content.to_vec())
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = params
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(pairs(&stream), want);
    }

    #[test]
    fn stream_records_are_split_at_the_maximum() {
        let mut out = Vec::new();
        push_stream(&mut out, STDIN, 1, &vec![7u8; MAX_CONTENT + 10]);
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].content.len(), MAX_CONTENT);
        assert_eq!(recs[1].content.len(), 10);
        let mut out = Vec::new();
        push_stream(&mut out, STDIN, 1, b"");
        assert!(out.is_empty());
        assert_eq!(end_stream(STDIN, 1), [1, 5, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn decoder_handles_padding_and_any_split() {
        // STDOUT "hello" padded to 8, STDERR "e", END_REQUEST status 3.
        let mut bytes = vec![1, STDOUT, 0, 1, 0, 5, 3, 0];
        bytes.extend_from_slice(b"hello\0\0\0");
        bytes.extend_from_slice(&[1, STDERR, 0, 1, 0, 1, 0, 0, b'e']);
        bytes.extend_from_slice(&[1, END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
        for size in 1..bytes.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(size) {
                d.push(chunk);
                while let Some(r) = d.next_record().expect("decodes") {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 3, "split {size}");
            assert_eq!(got[0].content, "hello");
            assert_eq!(got[1].kind, STDERR);
            let end = parse_end(&got[2].content).expect("end");
            assert_eq!(
                end,
                End {
                    app_status: 3,
                    protocol_status: REQUEST_COMPLETE
                }
            );
        }
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let mut d = Decoder::new();
        d.push(&[2, STDOUT, 0, 1, 0, 0, 0, 0]);
        assert_eq!(d.next_record(), Err(DecodeError::Version(2)));
        assert_eq!(parse_end(&[0, 0, 0]), Err(DecodeError::ShortEnd(3)));
        // A header promising more than arrives is simply incomplete.
        let mut d = Decoder::new();
        d.push(&[1, STDOUT, 0, 1, 0xff, 0xff, 0xff, 0, 1, 2, 3]);
        assert_eq!(d.next_record(), Ok(None));
        assert_eq!(d.pending(), 11);
    }
}
