//! What a hostile FastCGI worker can send: arbitrary bytes, split at arbitrary points,
//! through the record decoder, `END_REQUEST` parsing and the CGI head parser, as the
//! fastcgi runner feeds them.
//!
//! Invariant: nothing panics; a record never claims more than 65535 bytes of content;
//! the decoder's buffer never holds more than what was pushed; feeding the same bytes
//! in one piece or in pieces gives the same records.
#![no_main]

use bytes::Bytes;
use fwatchdog::runner::cgi::{HeadBuf, MAX_HEAD};
use fwatchdog::runner::fastcgi::codec::{self, Decoder, Record};
use libfuzzer_sys::fuzz_target;

fn decode(pieces: &[&[u8]]) -> (Vec<Record>, bool) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in pieces {
        d.push(p);
        loop {
            match d.next_record() {
                Ok(Some(r)) => {
                    assert!(r.content.len() <= codec::MAX_CONTENT);
                    out.push(r);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (whole, whole_err) = decode(&[rest]);
    let (pieces, pieces_err) = decode(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, pieces);
    assert_eq!(whole_err, pieces_err);
    let mut head = HeadBuf::new(MAX_HEAD);
    for r in whole {
        match r.kind {
            // A head over MAX_HEAD is refused; start a fresh one, as the runner would fail.
            codec::STDOUT if head.push(r.content.clone()).is_err() => {
                head = HeadBuf::new(MAX_HEAD);
            }
            codec::END_REQUEST => {
                let _ = codec::parse_end(&r.content);
            }
            _ => {}
        }
    }
    let _ = head.push(Bytes::new());
});
