//! Time stamps: nanoseconds since the Unix epoch (UTC), as recorded and served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Receive time stamps that never go backwards within a process, so recordings stay sorted by
/// time even if the wall clock is stepped back.
#[derive(Debug, Default)]
pub struct ReceiveClock {
    last: AtomicU64,
}

impl ReceiveClock {
    pub fn stamp(&self) -> u64 {
        let now = now_ns();
        let previous = self.last.fetch_max(now, Ordering::Relaxed);
        previous.max(now)
    }
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2025-01-02T03:04:05.000000006Z`.
pub fn format_rfc3339(ns: u64) -> String {
    let time = jiff::Timestamp::from_nanosecond(i128::from(ns))
        .expect("u64 nanoseconds are within jiff's range");
    format!("{time:.9}")
}

/// Accepts RFC 3339 (any offset) or an integer count of nanoseconds since the epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?}: too many nanoseconds"));
    }
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("{text:?}: not RFC 3339 nor nanoseconds since the epoch ({e})"))?;
    u64::try_from(time.as_nanosecond()).map_err(|_| format!("{text:?}: before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_both_forms() {
        let ns = 1_410_819_035_280_000_001;
        let text = format_rfc3339(ns);
        assert_eq!(text, "2014-09-15T22:10:35.280000001Z");
        assert_eq!(
            format_rfc3339(1_000_000_000),
            "1970-01-01T00:00:01.000000000Z"
        );
        assert_eq!(parse_time(&text), Ok(ns));
        assert_eq!(parse_time("1410819035280000001"), Ok(ns));
        assert!(parse_time("yesterday").is_err());
    }

    /// Found by a user: only `Z` and `+00:00` were understood.
    #[test]
    fn any_rfc_3339_offset_and_case() {
        let utc = parse_time("2026-12-04T08:14:00Z").unwrap();
        for text in [
            "2026-12-04T10:14:00+02:00",
            "2026-12-04T03:14:00-05:00",
            "2026-12-04T08:14:00-00:00",
            "2026-12-04t08:14:00z",
            "2026-12-04T08:14:00.000000000+00:00",
        ] {
            assert_eq!(parse_time(text), Ok(utc), "{text}");
        }
        assert_eq!(
            parse_time("2026-12-04T10:14:00.5+02:00"),
            Ok(utc + 500_000_000)
        );
        assert!(
            parse_time("2026-12-04T08:14:00").is_err(),
            "an offset is required"
        );
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn receive_clock_is_monotonic() {
        let clock = ReceiveClock::default();
        let a = clock.stamp();
        let b = clock.stamp();
        assert!(b >= a);
    }
}
