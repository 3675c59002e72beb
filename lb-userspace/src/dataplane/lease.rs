//! The agent's lease on its VRRP addresses (docs/architecture.md, "The
//! lease"). The VRRP thread renews it every advert interval for the
//! master-down interval; if the agent dies (`kill -9`) the XDP program, which
//! outlives it, drops traffic to the VRRP addresses and ARP requests for them
//! once the deadline passes, about when the peer takes over. A restarted
//! agent that finds a fresh lease can resume as master.
//!
//! The deadline lives in `settings[0].lease_deadline_ns` beside the fields
//! the agent's plan writes (`Dataplane::apply`). Both sides read-modify-write
//! the row under [`SETTINGS_LOCK`], so neither undoes the other's change.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use lb_common::{Settings, map_names};

use super::pins::PinDir;

/// Held around every read-modify-write of `settings[0]` in this process: the
/// VRRP thread writes the deadline, the plan writes the rest.
static SETTINGS_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`SETTINGS_LOCK`]; a panic elsewhere while holding it left no torn
/// row (each write is one syscall), so a poisoned lock is still good.
pub(super) fn settings_lock() -> MutexGuard<'static, ()> {
    SETTINGS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lease deadline of one node's pinned `settings` map, through its own
/// descriptor: usable from any thread, independent of the `Dataplane`.
pub struct Lease {
    node: String,
    settings: Mutex<Array<MapData, Settings>>,
}

impl Lease {
    /// Opens the pinned `settings` map of `node` (under `/sys/fs/bpf`).
    pub fn open(node: &str) -> Result<Lease> {
        Self::open_in(&PinDir::for_node(node)?)
    }

    /// Opens the pinned `settings` map in `pins`.
    pub fn open_in(pins: &PinDir) -> Result<Lease> {
        let path = pins.map(map_names::SETTINGS);
        let settings = open_settings(&path).with_context(|| {
            format!(
                "opening the pinned settings map {} for the VRRP lease (is lbd's data path loaded for node {}?)",
                path.display(),
                pins.node()
            )
        })?;
        Ok(Lease {
            node: pins.node().to_owned(),
            settings: Mutex::new(settings),
        })
    }

    /// Vouches for the VRRP addresses for `valid_for` from now.
    pub fn renew(&self, valid_for: Duration) -> Result<()> {
        let deadline = deadline_after(monotonic_ns(), valid_for);
        self.write_deadline(deadline)
            .with_context(|| format!("renewing the VRRP lease of node {}", self.node))
    }

    /// Ends the lease now: the program drops VRRP-address traffic from the
    /// next packet on (when the LEASE flag is set).
    pub fn expire(&self) -> Result<()> {
        self.write_deadline(0)
            .with_context(|| format!("expiring the VRRP lease of node {}", self.node))
    }

    /// How long the lease still runs; `None` when expired or never set.
    pub fn remaining(&self) -> Result<Option<Duration>> {
        let settings = self.lock();
        let s = settings
            .get(&0, 0)
            .with_context(|| format!("reading the VRRP lease of node {}", self.node))?;
        Ok(remaining_at(s.lease_deadline_ns, monotonic_ns()))
    }

    fn write_deadline(&self, deadline_ns: u64) -> Result<()> {
        let _row = settings_lock();
        let mut settings = self.lock();
        let mut s = settings.get(&0, 0).context("reading settings[0]")?;
        s.lease_deadline_ns = deadline_ns;
        settings.set(0, s, 0).context("writing settings[0]")
    }

    fn lock(&self) -> MutexGuard<'_, Array<MapData, Settings>> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_settings(path: &Path) -> Result<Array<MapData, Settings>> {
    let data = MapData::from_pin(path)?;
    Array::try_from(Map::Array(data))
        .context("the pinned settings map has another layout than this agent's")
}

/// The deadline for a lease valid for `valid_for` from `now_ns`. Never 0
/// (which means expired) and never wraps.
pub fn deadline_after(now_ns: u64, valid_for: Duration) -> u64 {
    let span = u64::try_from(valid_for.as_nanos()).unwrap_or(u64::MAX);
    now_ns.saturating_add(span).max(1)
}

/// What is left of a lease ending at `deadline_ns` at `now_ns`, the same
/// rule as the program's (expired once now is past the deadline; 0 = none).
pub fn remaining_at(deadline_ns: u64, now_ns: u64) -> Option<Duration> {
    if deadline_ns == 0 || now_ns > deadline_ns {
        return None;
    }
    Some(Duration::from_nanos(deadline_ns - now_ns))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the program's
/// bpf_ktime_get_coarse_ns follows (a tick behind at most).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; this clock id always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_now_plus_validity() {
        assert_eq!(
            deadline_after(5_000_000_000, Duration::from_millis(3_500)),
            8_500_000_000
        );
    }

    #[test]
    fn deadline_saturates_and_is_never_the_expired_marker() {
        assert_eq!(
            deadline_after(u64::MAX - 5, Duration::from_secs(1)),
            u64::MAX
        );
        assert_eq!(deadline_after(7, Duration::MAX), u64::MAX);
        assert_eq!(deadline_after(0, Duration::ZERO), 1);
    }

    #[test]
    fn remaining_follows_the_program_rule() {
        assert_eq!(remaining_at(0, 10), None, "never set");
        assert_eq!(remaining_at(0, 0), None, "0 is expired even at time 0");
        assert_eq!(remaining_at(100, 101), None);
        assert_eq!(remaining_at(100, 100), Some(Duration::ZERO));
        assert_eq!(
            remaining_at(3_000, 1_000),
            Some(Duration::from_nanos(2_000))
        );
    }

    #[test]
    fn monotonic_clock_moves_forward_and_matches_the_coarse_one() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_ns();
        assert!(b > a);
        let coarse = super::super::gc::monotonic_coarse_ns();
        // Same clock, the coarse one at most a few ticks behind.
        assert!(coarse <= monotonic_ns() && b - coarse.min(b) < 50_000_000);
    }
}
