//! The agent's lease in the data path (DESIGN.md, "Agent death and
//! restart"): renewed from the VRRP thread every advert interval, valid for
//! the master-down interval, so the XDP program stops serving the VIPs of a
//! node whose VRRP thread (or whole agent) has stopped at about the moment
//! the peer takes over. A graceful stop expires it at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::vrrp::config::NodeInstance;
use crate::vrrp::state::Machine;

/// Where the lease lives (the pinned settings map); behind a trait so the
/// runtime can be driven without BPF.
pub trait LeaseStore: Send + Sync {
    fn renew(&self, valid_for: Duration) -> Result<()>;
    fn expire(&self) -> Result<()>;
    /// `None` when expired or never set.
    fn remaining(&self) -> Result<Option<Duration>>;
}

impl LeaseStore for crate::dataplane::lease::Lease {
    fn renew(&self, valid_for: Duration) -> Result<()> {
        crate::dataplane::lease::Lease::renew(self, valid_for)
    }

    fn expire(&self) -> Result<()> {
        crate::dataplane::lease::Lease::expire(self)
    }

    fn remaining(&self) -> Result<Option<Duration>> {
        crate::dataplane::lease::Lease::remaining(self)
    }
}

/// How often to renew and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasePlan {
    pub every: Duration,
    pub valid_for: Duration,
}

/// The plan for a node's instances: renewed at the fastest advert interval,
/// valid for the shortest master-down interval (at base priority), so the
/// lease runs out no later than the first peer can take over.
pub fn plan(instances: &[NodeInstance]) -> Option<LeasePlan> {
    let every = instances.iter().map(|i| i.machine.advert_interval).min()?;
    let valid_for = instances
        .iter()
        .map(|i| Machine::new(i.machine.clone()).master_down_interval())
        .min()?;
    Some(LeasePlan { every, valid_for })
}

/// Renews the lease on `plan` until the task is aborted.
pub async fn keep(lease: Arc<dyn LeaseStore>, plan: LeasePlan) {
    let mut tick = tokio::time::interval(plan.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match lease.renew(plan.valid_for) {
            Ok(()) if failing => {
                tracing::info!("the VRRP lease is renewed again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::error!(
                    "renewing the VRRP lease failed; the data path stops serving the VIPs when \
                     it runs out: {e:#}"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn plan_uses_the_fastest_interval_and_the_shortest_master_down() {
        let text = include_str!("../../../../examples/horizon.toml");
        let config = config::parse(text, "horizon.toml").expect("example parses");
        let mut instances = crate::vrrp::config::for_node(&config, "lb1", None).unwrap();
        // The seed: v2, 1 s, priority 101: 3 s + (256 - 101) / 256 s.
        let one = plan(&instances).unwrap();
        assert_eq!(one.every, Duration::from_secs(1));
        assert_eq!(one.valid_for, Duration::from_micros(3_605_468));
        let mut slow = instances[0].clone();
        slow.machine.advert_interval = Duration::from_secs(2);
        slow.machine.priority = 200;
        instances.push(slow);
        assert_eq!(plan(&instances).unwrap(), one);
        assert_eq!(plan(&[]), None);
    }
}
