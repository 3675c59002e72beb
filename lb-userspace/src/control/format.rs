//! How durations and sizes read wherever the status is shown (`lbd status`
//! and the stats page), so both say the same thing the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long ago `unix_ms` was at `now`; zero for a time in the future (a
/// clock step must not print a negative age).
pub fn since(now: SystemTime, unix_ms: u64) -> Duration {
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms);
    now.duration_since(then).unwrap_or_default()
}

/// "45s", "3m 20s", "5h 02m", "3d 4h".
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Microseconds as milliseconds: one decimal below 10 ms, where the
/// decimal still says something.
pub fn millis(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1}", us as f64 / 1000.0)
    } else {
        format!("{}", us / 1000)
    }
}

/// "1.5 MiB": bytes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_sizes_read_naturally() {
        assert_eq!(span(Duration::from_secs(45)), "45s");
        assert_eq!(span(Duration::from_secs(200)), "3m 20s");
        assert_eq!(span(Duration::from_secs(5 * 3600 + 120)), "5h 02m");
        assert_eq!(span(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d 4h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!((millis(1_234), millis(25_600)), ("1.2".into(), "25".into()));
    }

    #[test]
    fn times_in_the_future_are_no_time_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(since(now, 40_000), Duration::from_secs(60));
        assert_eq!(since(now, 200_000), Duration::ZERO);
    }
}
