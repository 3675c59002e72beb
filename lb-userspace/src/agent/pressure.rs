//! Noticing that the data path hit a limit (SNAT ports ran out), for one log
//! line at a time: the counter is read at every flow collection, and a rise
//! is logged at most once per [`LOG_EVERY`], with everything dropped since
//! the last line, so a flood shows as one line a minute, not one per SYN.
//! Pure: the caller passes the counter and the clock.

use std::time::{Duration, Instant};

/// Shortest time between two lines about the same limit.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Watches one monotonic counter (e.g. `drop_snat_exhausted`).
#[derive(Debug, Default)]
pub struct LimitWatch {
    /// The counter at the last line (or at the first reading).
    logged_count: Option<u64>,
    logged_at: Option<Instant>,
}

impl LimitWatch {
    /// Takes a reading; returns how many events happened since the last
    /// line when one is due now.
    pub fn observe(&mut self, count: u64, now: Instant) -> Option<u64> {
        let Some(base) = self.logged_count else {
            // The first reading after a start: what an earlier agent (or
            // this one before a restart) counted is not news.
            self.logged_count = Some(count);
            return None;
        };
        if count <= base {
            // No rise; a counter that went down was reset (layout change).
            self.logged_count = Some(count);
            return None;
        }
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            return None;
        }
        self.logged_count = Some(count);
        self.logged_at = Some(now);
        Some(count - base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rise_is_logged_at_most_once_a_minute_with_all_it_missed() {
        let t0 = Instant::now();
        let mut w = LimitWatch::default();
        assert_eq!(w.observe(500, t0), None, "what came before is not news");
        assert_eq!(w.observe(500, t0 + Duration::from_secs(5)), None);
        assert_eq!(w.observe(530, t0 + Duration::from_secs(10)), Some(30));
        // A flood: readings every 5 s, one line a minute.
        let mut lines = Vec::new();
        for i in 1..=24u64 {
            let at = t0 + Duration::from_secs(10 + 5 * i);
            if let Some(n) = w.observe(530 + 100 * i, at) {
                lines.push(n);
            }
        }
        assert_eq!(lines, vec![1200, 1200], "two minutes of flood, two lines");
        // Quiet again: nothing more.
        assert_eq!(w.observe(2930, t0 + Duration::from_secs(300)), None);
    }

    #[test]
    fn a_reset_counter_is_a_new_base() {
        let t0 = Instant::now();
        let mut w = LimitWatch::default();
        w.observe(1000, t0);
        assert_eq!(w.observe(3, t0 + Duration::from_secs(5)), None);
        assert_eq!(w.observe(7, t0 + Duration::from_secs(10)), Some(4));
    }
}
