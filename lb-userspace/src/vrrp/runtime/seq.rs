//! AH sequence numbers that a restarted agent never reuses.
//!
//! keepalived drops an AH advert whose sequence number is not above the last
//! one it accepted. An agent that restarts (and resumes as master) with a
//! counter at 0 would have its adverts dropped as replays until the peer
//! takes over. So every number sent is at least a clock-derived floor:
//! one step per quarter second since 2026-01-01 (good until 2060). Adverts
//! go out about once a second (VRRPv2 intervals are whole seconds), so the
//! counter stays within a step or two of the floor, and an agent restarted
//! more than a quarter second after its predecessor's last advert (loading
//! the XDP program alone takes longer) starts above anything it sent.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::vrrp::ah::{SEQ_LIMIT, SeqCounter};

/// 2026-01-01T00:00:00Z in Unix milliseconds.
pub const FLOOR_EPOCH_UNIX_MS: u64 = 1_767_225_600_000;
/// Milliseconds per floor step: four steps a second, four times the
/// fastest VRRPv2 advert rate.
pub const FLOOR_STEP_MS: u64 = 250;

/// The lowest counter value allowed at `unix_ms`.
pub fn floor_at(unix_ms: u64) -> u32 {
    let steps = unix_ms.saturating_sub(FLOOR_EPOCH_UNIX_MS) / FLOOR_STEP_MS;
    steps.min(u64::from(SEQ_LIMIT)) as u32
}

/// The sequence number for the next datagram: one above the counter, and
/// above the clock floor (`max(floor + 1, last + 1)`).
pub fn next_seq(counter: &mut SeqCounter, unix_ms: u64) -> u32 {
    let floor = floor_at(unix_ms);
    if counter.value() < floor {
        *counter = SeqCounter::starting_at(floor);
    }
    counter.next_for_send()
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_counts_four_per_second_since_2026() {
        assert_eq!(floor_at(0), 0);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_MS), 0);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_MS + 10_000), 40);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_MS + 10_249), 40);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_MS + 10_250), 41);
        assert_eq!(floor_at(u64::MAX), SEQ_LIMIT);
        // 2^32 quarter seconds: 34 years.
        assert!(floor_at(FLOOR_EPOCH_UNIX_MS + 34 * 365 * 86_400_000) < SEQ_LIMIT);
    }

    #[test]
    fn a_restarted_counter_starts_above_what_the_old_one_sent() {
        let t0 = FLOOR_EPOCH_UNIX_MS + 1_000_000;
        let mut old = SeqCounter::default();
        let mut last = 0;
        // One advert a second for an hour, plus a few extra ones.
        for s in 0..3600 {
            last = next_seq(&mut old, t0 + s * 1000);
            if s % 600 == 0 {
                last = next_seq(&mut old, t0 + s * 1000 + 5);
            }
        }
        // Killed right after its last advert; the restart takes 300 ms, so
        // it sends within the same second as the last advert.
        let mut new = SeqCounter::default();
        let first = next_seq(&mut new, t0 + 3599 * 1000 + 300);
        assert!(first > last, "{first} must be above {last}");
    }

    #[test]
    fn follows_a_peer_above_the_floor() {
        let now = FLOOR_EPOCH_UNIX_MS + 5_000;
        let mut c = SeqCounter::default();
        assert_eq!(next_seq(&mut c, now), 21);
        c.observe(1000);
        assert_eq!(next_seq(&mut c, now), 1001, "last + 1 when above the floor");
        assert_eq!(next_seq(&mut c, now), 1002);
    }
}
