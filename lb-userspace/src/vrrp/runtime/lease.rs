//! The agent's lease in the data path (docs/architecture.md, "The
//! lease"): renewed by every advert a master sends, valid until a peer
//! could take over, so the XDP program stops serving the VIPs of a node
//! whose VRRP thread (or whole agent) has stopped just before the peer
//! takes over. A graceful stop expires it at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

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

/// Keeps the lease in step with the adverts actually sent. The peer of a
/// master instance takes over no sooner than 3 advert intervals (plus its
/// skew) after the last advert it heard, so the lease is valid until the
/// earliest "last advert + 3 intervals" over the instances that are master
/// now: a dead agent stops being served by the data path just before a
/// peer can take over, never after. Renewing from a clock of its own would
/// let the lease outlive the takeover by up to one interval.
pub struct LeaseKeeper {
    store: Arc<dyn LeaseStore>,
    /// Per master instance: until when its peer still waits.
    deadlines: Mutex<BTreeMap<String, Instant>>,
    failing: AtomicBool,
}

impl LeaseKeeper {
    pub fn new(store: Arc<dyn LeaseStore>) -> Self {
        LeaseKeeper {
            store,
            deadlines: Mutex::new(BTreeMap::new()),
            failing: AtomicBool::new(false),
        }
    }

    /// `instance` (master) just sent an advert at `interval`.
    pub fn advert_sent(&self, instance: &str, interval: Duration) {
        let now = Instant::now();
        let until = {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            deadlines.insert(instance.to_string(), now + peer_waits(interval));
            earliest(&deadlines)
        };
        if let Some(until) = until {
            self.renew(until.saturating_duration_since(now));
        }
    }

    /// `instance` is no longer master: its adverts no longer hold the lease.
    pub fn left_master(&self, instance: &str) {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        deadlines.remove(instance);
    }

    fn renew(&self, valid_for: Duration) {
        match self.store.renew(valid_for) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the VRRP lease is renewed again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "renewing the VRRP lease failed; the data path stops serving the VIPs \
                         when it runs out: {e:#}"
                    );
                }
            }
        }
    }
}

/// How long a backup waits for the next advert before it may take over, at
/// the least (its skew only adds to it).
pub fn peer_waits(interval: Duration) -> Duration {
    interval * 3
}

fn earliest(deadlines: &BTreeMap<String, Instant>) -> Option<Instant> {
    deadlines.values().min().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the validity of every renewal.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Duration>>);

    impl LeaseStore for Recorder {
        fn renew(&self, valid_for: Duration) -> Result<()> {
            self.0.lock().unwrap().push(valid_for);
            Ok(())
        }
        fn expire(&self) -> Result<()> {
            Ok(())
        }
        fn remaining(&self) -> Result<Option<Duration>> {
            Ok(None)
        }
    }

    #[test]
    fn lease_ends_when_the_first_peer_may_take_over() {
        let store = Arc::new(Recorder::default());
        let keeper = LeaseKeeper::new(store.clone());
        keeper.advert_sent("slow", Duration::from_secs(3));
        keeper.advert_sent("fast", Duration::from_secs(1));
        let renewals = store.0.lock().unwrap().clone();
        assert_eq!(renewals.len(), 2);
        // Slow alone: 9 s. With fast master too: fast's 3 s bounds it.
        assert!(
            renewals[0] > Duration::from_millis(8_900) && renewals[0] <= Duration::from_secs(9)
        );
        assert!(
            renewals[1] > Duration::from_millis(2_900) && renewals[1] <= Duration::from_secs(3)
        );
        // Fast leaves master: slow's own deadline (minus the time passed) rules.
        keeper.left_master("fast");
        keeper.advert_sent("slow", Duration::from_secs(3));
        let last = *store.0.lock().unwrap().last().unwrap();
        assert!(last > Duration::from_millis(8_900) && last <= Duration::from_secs(9));
    }

    #[test]
    fn peer_waits_three_intervals() {
        assert_eq!(peer_waits(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(
            peer_waits(Duration::from_millis(500)),
            Duration::from_millis(1_500)
        );
    }
}
