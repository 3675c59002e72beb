//! Tracking: the effective priority from the base priority and the tracked
//! conditions, by keepalived's sign rule (vrrp_track.c): a positive weight
//! is added while its condition holds, a negative weight is added (so
//! subtracted) while its condition fails. The result is clamped to 1..=254
//! and an address owner (base 255) is never changed.
//!
//! keepalived also knows weight 0, which puts the instance in FAULT while
//! the condition fails; lbd has no fault state, so weight 0 conditions do
//! not change the priority (config validation should refuse them).

/// One tracked condition as last observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// keepalived allows -253..=253 for scripts.
    pub weight: i16,
    pub holds: bool,
}

/// The priority to advertise.
pub fn effective_priority(base: u8, tracked: &[Tracked]) -> u8 {
    if base == 255 {
        return 255;
    }
    let delta: i32 = tracked
        .iter()
        .map(|t| match (t.weight > 0, t.holds) {
            (true, true) => i32::from(t.weight),
            (false, false) => i32::from(t.weight),
            _ => 0,
        })
        .sum();
    (i32::from(base) + delta).clamp(1, 254) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(weight: i16, holds: bool) -> Tracked {
        Tracked { weight, holds }
    }

    #[test]
    fn seed_config_positive_weight() {
        // The seed: priority 101/100, weight 2 while HAProxy runs.
        assert_eq!(effective_priority(101, &[t(2, true)]), 103);
        assert_eq!(effective_priority(100, &[t(2, true)]), 102);
        assert_eq!(effective_priority(101, &[t(2, false)]), 101);
    }

    #[test]
    fn negative_weight_subtracts_while_failing() {
        assert_eq!(effective_priority(101, &[t(-20, true)]), 101);
        assert_eq!(effective_priority(101, &[t(-20, false)]), 81);
        assert_eq!(
            effective_priority(101, &[t(-20, false), t(5, true), t(7, false)]),
            86
        );
    }

    #[test]
    fn clamped_and_owner_untouched() {
        assert_eq!(effective_priority(250, &[t(10, true)]), 254);
        assert_eq!(effective_priority(5, &[t(-10, false)]), 1);
        assert_eq!(effective_priority(255, &[t(-100, false)]), 255);
        assert_eq!(effective_priority(100, &[t(0, false)]), 100);
    }
}
