//! Every time bound the tests assert, in one place.
//!
//! The rule: behaviour with time in it is asserted by counting events (two
//! health checks seen, one takeover logged, three ARP bursts captured) and
//! by waiting for them up to a generous bound from this module, never by a
//! tight wall-clock figure. The tests run on a shared 2-core machine beside
//! builds and other labs, where a step that nominally takes 100 ms can take
//! a second without anything being wrong; a bound only has to catch what is
//! really broken (a timer that never fires, a takeover that waits for the
//! wrong interval), so each one is a nominal figure with a margin that says
//! why it is that wide.
//!
//! A bound is an upper limit on waiting. Where a test asserts a minimum
//! (an interval kept between frames) the assertion stays with the test:
//! slowness cannot make it fail.

use std::time::Duration;

/// Added to every protocol bound: process start-up and scheduling on a
/// busy machine, plus the 10-100 ms polls the tests read state with.
pub const SCHEDULING_SLACK: Duration = Duration::from_secs(1);

/// The bound for something a protocol timer says takes `nominal` (a VRRP
/// master-down interval or skew time, an advert interval): twice the
/// nominal, so a timer that fires at most one interval late still passes,
/// plus [`SCHEDULING_SLACK`]. Twice the nominal still fails a timer that
/// waits for the wrong interval (a master-down computed at a lower
/// priority, a missed first advert).
pub fn protocol(nominal: Duration) -> Duration {
    2 * nominal + SCHEDULING_SLACK
}

/// Nominal time of a graceful VRRP takeover: the backup waits only its skew
/// time after the old master's priority-0 advert (at most 0.61 s at the
/// labs' priorities), plus the old master's own stop (removing VIPs and
/// XDP state), which takes a few hundred ms. Bound with [`protocol`].
pub const GRACEFUL_TAKEOVER: Duration = Duration::from_secs(1);

/// A wait for the kernel to act on a change the test made (a neighbour
/// entry resolved by ARP on a veth, an XDP link released after its pin is
/// removed, a sysctl or VIP seen after a transition): nominally well under
/// 100 ms, so 3 s only fails when it does not happen at all.
pub const KERNEL_SETTLES: Duration = Duration::from_secs(3);

/// A wait for a frame sent across a lab's veth (or for a thread in another
/// namespace to be ready to receive it): nominally under a millisecond, so
/// 5 s only fails when nothing arrives.
pub const FRAME_ARRIVES: Duration = Duration::from_secs(5);

/// A wait for an agent to react to something it watches once a second (an
/// interface gone, a link flap logged): 10 polls of its watcher.
pub const AGENT_NOTICES: Duration = Duration::from_secs(10);

/// What a lease renewed for `granted` may have left when read right away:
/// the time between the renew and the read is a thread join and one map
/// read, nominally microseconds; a second covers a descheduled thread.
pub fn lease_left_after_renew(granted: Duration) -> std::ops::RangeInclusive<Duration> {
    granted.saturating_sub(SCHEDULING_SLACK)..=granted
}

/// An agent (re)start: loading, attaching or adopting the XDP program and
/// answering its first status request nominally takes under a second,
/// several on a busy machine. A lease renewed before a restart must have at
/// least its length less this left after it; a protocol wait that starts
/// with an agent's start adds this.
pub const AGENT_RESTART: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_bound_is_twice_the_nominal_and_the_slack() {
        // lab_vrrp_smoke's kill -9 takeover: master-down at priority 102
        // with 1 s adverts is 3 s + 154/256 s; the bound is 8.2 s.
        let master_down = Duration::from_secs(3) + Duration::from_secs(154) / 256;
        assert_eq!(protocol(master_down).as_millis(), 8_203);
    }

    #[test]
    fn lease_bounds_keep_their_meaning() {
        let thirty = Duration::from_secs(30);
        assert!(lease_left_after_renew(thirty).contains(&Duration::from_millis(29_500)));
        assert!(!lease_left_after_renew(thirty).contains(&Duration::from_millis(28_500)));
    }
}
