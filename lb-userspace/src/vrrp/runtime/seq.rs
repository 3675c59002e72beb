//! AH sequence numbers that a restarted agent never reuses.
//!
//! keepalived drops an AH advert whose sequence number is not above the last
//! one it accepted. An agent that restarts (and resumes as master) with a
//! counter at 0 would have its adverts dropped as replays until the peer
//! takes over. So every number sent is at least a clock-derived floor:
//! 4 per second since 2026-01-01. Adverts go out at most about once a second
//! (VRRPv2 intervals are whole seconds), so the counter never outruns the
//! floor's growth and a restart always starts above anything sent before.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::vrrp::ah::{SEQ_LIMIT, SeqCounter};

/// 2026-01-01T00:00:00Z in Unix seconds.
pub const FLOOR_EPOCH_UNIX_S: u64 = 1_767_225_600;
/// Floor steps per second: four times the fastest VRRPv2 advert rate.
pub const FLOOR_PER_SECOND: u64 = 4;

/// The lowest counter value allowed at `unix_s`.
pub fn floor_at(unix_s: u64) -> u32 {
    let steps = unix_s
        .saturating_sub(FLOOR_EPOCH_UNIX_S)
        .saturating_mul(FLOOR_PER_SECOND);
    steps.min(u64::from(SEQ_LIMIT)) as u32
}

/// The sequence number for the next datagram: one above the counter, and
/// above the clock floor (`max(floor + 1, last + 1)`).
pub fn next_seq(counter: &mut SeqCounter, unix_s: u64) -> u32 {
    let floor = floor_at(unix_s);
    if counter.value() < floor {
        *counter = SeqCounter::starting_at(floor);
    }
    counter.next_for_send()
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_counts_four_per_second_since_2026() {
        assert_eq!(floor_at(0), 0);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_S), 0);
        assert_eq!(floor_at(FLOOR_EPOCH_UNIX_S + 10), 40);
        assert_eq!(floor_at(u64::MAX), SEQ_LIMIT);
    }

    #[test]
    fn a_restarted_counter_starts_above_what_the_old_one_sent() {
        let t0 = FLOOR_EPOCH_UNIX_S + 1000;
        let mut old = SeqCounter::default();
        let mut last = 0;
        // One advert a second for an hour, plus a few extra ones.
        for s in 0..3600 {
            last = next_seq(&mut old, t0 + s);
            if s % 600 == 0 {
                last = next_seq(&mut old, t0 + s);
            }
        }
        // Restart one second later with a fresh counter.
        let mut new = SeqCounter::default();
        let first = next_seq(&mut new, t0 + 3601);
        assert!(first > last, "{first} must be above {last}");
    }

    #[test]
    fn follows_a_peer_above_the_floor() {
        let now = FLOOR_EPOCH_UNIX_S + 5;
        let mut c = SeqCounter::default();
        assert_eq!(next_seq(&mut c, now), 21);
        c.observe(1000);
        assert_eq!(next_seq(&mut c, now), 1001, "last + 1 when above the floor");
        assert_eq!(next_seq(&mut c, now), 1002);
    }
}
