//! Map sizes, from the config's limits. One place computes them so the loader,
//! the standalone maps of the tests and the plan's bounds checks agree.

use anyhow::{Result, bail, ensure};
use lb_common::{default_size, map_names, reason};

/// The config's capacity knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Service ids are `0..max_services`.
    pub max_services: u32,
    /// Backend ids are `1..max_backends` (0 is [`lb_common::NO_BACKEND`]).
    pub max_backends: u32,
    /// Maglev ring size M (prime).
    pub ring_size: u32,
    pub flows: u32,
    pub half_open: u32,
    pub persist: u32,
    pub local_addrs: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            max_services: default_size::SERVICES,
            max_backends: default_size::BACKENDS,
            ring_size: default_size::RING,
            flows: default_size::FLOWS,
            half_open: default_size::HALF_OPEN,
            persist: default_size::PERSIST,
            local_addrs: default_size::LOCAL_ADDRS,
        }
    }
}

impl MapSizes {
    /// Refuses sizes the kernel would reject or that overflow the maglev map.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.max_services > 0, "max_services must be at least 1");
        ensure!(
            self.max_backends > 1,
            "max_backends must be at least 2 (id 0 means none)"
        );
        ensure!(self.ring_size > 0, "the Maglev ring size must be positive");
        for (what, v) in [
            ("flows", self.flows),
            ("half_open", self.half_open),
            ("persist", self.persist),
            ("local_addrs", self.local_addrs),
        ] {
            ensure!(v > 0, "the {what} table size must be positive");
        }
        if self.maglev_entries().is_none() {
            bail!(
                "max_services ({}) x 2 rings x ring size ({}) overflows a map's 32-bit size",
                self.max_services,
                self.ring_size
            );
        }
        Ok(())
    }

    /// Entries of the `maglev` array: every service owns two rings of M slots
    /// (the live one and the spare the agent fills before flipping).
    pub fn maglev_entries(&self) -> Option<u32> {
        self.max_services
            .checked_mul(2)?
            .checked_mul(self.ring_size)
    }

    /// Index in `maglev` of slot 0 of ring `which` (0 or 1) of a service.
    pub fn ring_offset(&self, service_id: u32, which: u8) -> u32 {
        (service_id * 2 + u32::from(which)) * self.ring_size
    }

    /// Which ring (0 or 1) of `service_id` a `ServiceInfo::ring_offset` names,
    /// or None when the offset is not one of that service's rings.
    pub fn ring_of(&self, service_id: u32, ring_offset: u32) -> Option<u8> {
        (0..2u8).find(|&w| self.ring_offset(service_id, w) == ring_offset)
    }

    /// `max_entries` of each map, by name; maps whose size the program fixes
    /// (`settings`, `reasons`) are left out.
    pub fn map_sizes(&self) -> Vec<(&'static str, u32)> {
        vec![
            (map_names::SERVICES, self.max_services),
            (map_names::BACKENDS, self.max_backends),
            (map_names::MAGLEV, self.maglev_entries().unwrap_or(u32::MAX)),
            (map_names::FLOWS, self.flows),
            (map_names::HALF_OPEN, self.half_open),
            (map_names::PERSIST, self.persist),
            (map_names::LOCAL_ADDRS, self.local_addrs),
            (map_names::SERVICE_STATS, self.max_services),
            (map_names::BACKEND_STATS, self.max_backends),
        ]
    }
}

/// Size of the `reasons` per-CPU array: one counter per reason.
pub const REASONS_ENTRIES: u32 = reason::COUNT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maglev_holds_two_rings_per_service() {
        let l = MapSizes {
            max_services: 4,
            ring_size: 13,
            ..MapSizes::default()
        };
        assert_eq!(l.maglev_entries(), Some(4 * 2 * 13));
        assert_eq!(l.ring_offset(0, 0), 0);
        assert_eq!(l.ring_offset(0, 1), 13);
        assert_eq!(l.ring_offset(3, 1), 7 * 13);
        // the last slot of the last ring is the last entry of the map
        assert_eq!(l.ring_offset(3, 1) + 12, l.maglev_entries().unwrap() - 1);
        assert_eq!(l.ring_of(3, 6 * 13), Some(0));
        assert_eq!(l.ring_of(3, 7 * 13), Some(1));
        assert_eq!(l.ring_of(3, 5 * 13), None);
    }

    #[test]
    fn default_limits_are_valid() {
        MapSizes::default().validate().unwrap();
        let sizes = MapSizes::default().map_sizes();
        let maglev = sizes
            .iter()
            .find(|(n, _)| *n == map_names::MAGLEV)
            .unwrap()
            .1;
        assert_eq!(maglev, default_size::SERVICES * 2 * default_size::RING);
    }

    #[test]
    fn overflow_is_refused() {
        let l = MapSizes {
            max_services: 40_000,
            ring_size: 65537,
            ..MapSizes::default()
        };
        let err = l.validate().unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
        assert!(
            MapSizes {
                max_backends: 1,
                ..MapSizes::default()
            }
            .validate()
            .is_err()
        );
    }
}
