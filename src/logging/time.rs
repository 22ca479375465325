//! Timestamps for log lines, in UTC: the text layout (Go's `log`) and RFC 3339 for
//! JSON. Shared by the renderer and by the writer's own "lines dropped" notice.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant RFC 3339 can write, 9999-12-31T23:59:59.999Z; a clock past it is
/// shown as it.
const LAST: Duration = Duration::from_millis(253_402_300_799_999);

fn timestamp(now: Duration) -> SystemTime {
    UNIX_EPOCH + now.min(LAST)
}

/// `YYYY/MM/DD HH:MM:SS` in UTC, the layout of Go's `log`: RFC 3339's
/// `YYYY-MM-DDTHH:MM:SSZ` with other separators and no zone letter.
/// Each thread keeps the last second it rendered: a busy server writes many lines per
/// second, and the calendar arithmetic is then done once a second, not once a line.
pub(super) fn write_text_time(out: &mut Vec<u8>, now: Duration) {
    thread_local! {
        static LAST_SECOND: std::cell::Cell<(u64, [u8; 19])> =
            const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let secs = now.min(LAST).as_secs();
    let (cached, text) = LAST_SECOND.get();
    if cached == secs {
        out.extend_from_slice(&text);
        return;
    }
    // `YYYY-MM-DDTHH:MM:SSZ`, of which the first 19 bytes are kept.
    let mut rfc = [0u8; 20];
    let mut cur = std::io::Cursor::new(&mut rfc[..]);
    let _ = write!(
        cur,
        "{}",
        humantime::format_rfc3339_seconds(timestamp(Duration::from_secs(secs)))
    );
    let mut text = [0u8; 19];
    text.copy_from_slice(&rfc[..19]);
    for (at, sep) in [(4, b'/'), (7, b'/'), (10, b' ')] {
        text[at] = sep;
    }
    LAST_SECOND.set((secs, text));
    out.extend_from_slice(&text);
}

/// RFC 3339 in UTC with milliseconds.
pub(super) fn write_json_time(out: &mut Vec<u8>, now: Duration) {
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(timestamp(now)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_time(now: Duration) -> String {
        let mut v = Vec::new();
        write_text_time(&mut v, now);
        String::from_utf8(v).expect("utf8")
    }

    fn json_time(now: Duration) -> String {
        let mut v = Vec::new();
        write_json_time(&mut v, now);
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn formats_dates_in_utc() {
        assert_eq!(text_time(Duration::from_secs(0)), "1970/01/01 00:00:00");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(
            text_time(Duration::from_secs(1_709_251_199)),
            "2024/02/29 23:59:59"
        );
        assert_eq!(
            json_time(Duration::from_millis(1_796_115_600_250)),
            "2026-12-01T09:00:00.250Z"
        );
        // After year 9999 RFC 3339 has no form; the clock is shown at its end.
        assert_eq!(text_time(Duration::MAX), "9999/12/31 23:59:59");
        assert_eq!(json_time(Duration::MAX), "9999-12-31T23:59:59.999Z");
    }
}
