//! Time stamps: nanoseconds since the Unix epoch (UTC), as recorded and served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// RFC 3339 with nanoseconds, e.g. `2025-01-02T03:04:05.000000006Z`.
pub fn format_rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// Accepts RFC 3339 or an integer count of nanoseconds since the epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?}: too many nanoseconds"));
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?}: not RFC 3339 nor nanoseconds since the epoch ({e})"))?;
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .map_err(|_| format!("{text:?}: before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_both_forms() {
        let ns = 1_410_819_035_280_000_001;
        let text = format_rfc3339(ns);
        assert_eq!(text, "2014-09-15T22:10:35.280000001Z");
        assert_eq!(parse_time(&text), Ok(ns));
        assert_eq!(parse_time("1410819035280000001"), Ok(ns));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn receive_clock_is_monotonic() {
        let clock = ReceiveClock::default();
        let a = clock.stamp();
        let b = clock.stamp();
        assert!(b >= a);
    }
}
