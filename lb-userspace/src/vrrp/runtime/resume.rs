//! Whether a starting agent resumes as master (docs/architecture.md, "The
//! lease"). The lease is fresh only if the previous agent renewed it
//! within the master-down interval, so the peer has not taken over yet;
//! the VIPs on the interface say this instance was master. Both together:
//! stay master with no failover. Anything else: start as backup (and take
//! away VIPs a dead master left behind). Pure.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// True when the instance with `vips` should start as master.
pub fn should_resume(
    lease_remaining: Option<Duration>,
    vips: &BTreeSet<Ipv4Addr>,
    present: &BTreeSet<Ipv4Addr>,
) -> bool {
    lease_remaining.is_some_and(|left| !left.is_zero())
        && !vips.is_empty()
        && vips.is_subset(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(last: &[u8]) -> BTreeSet<Ipv4Addr> {
        last.iter().map(|&n| Ipv4Addr::new(192, 0, 2, n)).collect()
    }

    #[test]
    fn resumes_only_with_a_fresh_lease_and_every_vip_in_place() {
        let fresh = Some(Duration::from_millis(2500));
        let vips = set(&[250, 20]);
        assert!(should_resume(fresh, &vips, &set(&[250, 20])));
        assert!(should_resume(fresh, &vips, &set(&[250, 20, 99])));
        assert!(!should_resume(fresh, &vips, &set(&[250])), "a VIP missing");
        assert!(!should_resume(fresh, &vips, &set(&[])));
        assert!(!should_resume(None, &vips, &vips), "lease expired");
        assert!(!should_resume(Some(Duration::ZERO), &vips, &vips));
        assert!(!should_resume(fresh, &set(&[]), &set(&[])));
    }
}
