//! What the maps should hold (computed by the agent from the config, health
//! and admin states), what they hold now, and the ordered list of map writes
//! that takes one to the other. Pure: the plan is unit-tested here and merely
//! executed by [`super::maps::Maps::execute`].
//!
//! Ordering rules, so the data path never sees an inconsistent state:
//! 1. backend rows are written before any ring slot can point at them;
//! 2. a changed ring is written into the service's spare ring, then the
//!    service entry is rewritten with the new `ring_offset` (one atomic
//!    update flips it);
//! 3. backend rows that nothing references any more are cleared only after
//!    every flip and service removal, so no live slot points at a free row.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use lb_common::{BackendInfo, NO_BACKEND, ServiceInfo, ServiceKey, Settings, backend_flags};

use super::limits::MapSizes;

/// One service as the maps should describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    pub key: ServiceKey,
    /// Stable id: index into `service_stats`, selects the service's rings.
    pub id: u32,
    /// `lb_common::service_flags`.
    pub flags: u32,
    /// Network byte order.
    pub snat_ip: u32,
    pub persist_timeout_ns: u64,
    /// Every backend row the service needs: those in the ring and those only
    /// persistent clients may still reach (drain). Ids are global.
    pub backends: Vec<(u32, BackendInfo)>,
    /// The Maglev ring, M slots of backend ids ([`NO_BACKEND`] for empty).
    pub ring: Arc<[u32]>,
}

/// Everything the agent wants in the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub settings: Settings,
    pub services: Vec<DesiredService>,
    /// (address in network byte order, `lb_common::local_addr_flags`).
    pub local_addrs: Vec<(u32, u32)>,
}

/// A service as last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedService {
    pub info: ServiceInfo,
    /// Content of the live ring; None when unknown (adopted from an earlier
    /// agent), which makes the next plan rewrite the spare and flip.
    pub ring: Option<Arc<[u32]>>,
}

/// What the maps hold, as far as the agent knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub settings: Option<Settings>,
    pub services: BTreeMap<SvcKey, AppliedService>,
    pub backends: BTreeMap<u32, BackendInfo>,
    pub local_addrs: BTreeMap<u32, u32>,
}

/// `ServiceKey` with an order (for deterministic plans).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SvcKey {
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
}

impl From<ServiceKey> for SvcKey {
    fn from(k: ServiceKey) -> Self {
        SvcKey {
            vip: k.vip,
            port: k.port,
            proto: k.proto,
        }
    }
}

impl From<SvcKey> for ServiceKey {
    fn from(k: SvcKey) -> Self {
        ServiceKey {
            vip: k.vip,
            port: k.port,
            proto: k.proto,
            _pad: 0,
        }
    }
}

/// One map write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    SetSettings(Settings),
    SetLocalAddr {
        ip: u32,
        flags: u32,
    },
    SetBackend {
        id: u32,
        info: BackendInfo,
    },
    /// Fill ring `which` (0 or 1) of a service; never the live one.
    WriteRing {
        service_id: u32,
        which: u8,
        ring: Arc<[u32]>,
    },
    /// Insert or replace a service entry (a new `ring_offset` flips rings).
    UpsertService {
        key: ServiceKey,
        info: ServiceInfo,
    },
    RemoveService {
        key: ServiceKey,
    },
    /// Reset a backend row to "not in use".
    ClearBackend {
        id: u32,
    },
    RemoveLocalAddr {
        ip: u32,
    },
}

impl AppliedState {
    /// Records a write that succeeded.
    pub fn record(&mut self, op: &MapOp) {
        match op {
            MapOp::SetSettings(s) => self.settings = Some(*s),
            MapOp::SetLocalAddr { ip, flags } => {
                self.local_addrs.insert(*ip, *flags);
            }
            MapOp::SetBackend { id, info } => {
                self.backends.insert(*id, *info);
            }
            MapOp::WriteRing { .. } => {}
            MapOp::UpsertService { key, info } => {
                let entry = self
                    .services
                    .entry((*key).into())
                    .or_insert(AppliedService {
                        info: *info,
                        ring: None,
                    });
                entry.info = *info;
            }
            MapOp::RemoveService { key } => {
                self.services.remove(&(*key).into());
            }
            MapOp::ClearBackend { id } => {
                self.backends.remove(id);
            }
            MapOp::RemoveLocalAddr { ip } => {
                self.local_addrs.remove(ip);
            }
        }
    }

    /// Records the ring a flip made live. Rings are written before the flip;
    /// [`record`](Self::record) of the `WriteRing` cannot know it will go live.
    fn record_live_ring(&mut self, key: ServiceKey, ring: Arc<[u32]>) {
        if let Some(s) = self.services.get_mut(&key.into()) {
            s.ring = Some(ring);
        }
    }

    /// Applies a whole plan to the record (for callers that executed it all).
    pub fn record_all(&mut self, ops: &[MapOp]) {
        let mut pending: BTreeMap<u32, Arc<[u32]>> = BTreeMap::new();
        for op in ops {
            self.record(op);
            match op {
                MapOp::WriteRing {
                    service_id, ring, ..
                } => {
                    pending.insert(*service_id, ring.clone());
                }
                MapOp::UpsertService { key, info } => {
                    if let Some(ring) = pending.remove(&info.id) {
                        self.record_live_ring(*key, ring);
                    }
                }
                _ => {}
            }
        }
    }

    /// Which ring (0/1) is live for a service, from its recorded offset.
    pub fn live_ring(&self, key: &SvcKey, limits: &MapSizes) -> Option<u8> {
        let s = self.services.get(key)?;
        limits.ring_of(s.info.id, s.info.ring_offset)
    }
}

/// Refuses a desired state the maps cannot hold or that contradicts itself.
pub fn validate(desired: &DesiredState, limits: &MapSizes) -> Result<()> {
    let mut ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut rows: BTreeMap<u32, BackendInfo> = BTreeMap::new();
    for s in &desired.services {
        let key = SvcKey::from(s.key);
        ensure!(keys.insert(key), "two services share {key:?}");
        ensure!(ids.insert(s.id), "two services share id {}", s.id);
        ensure!(
            s.id < limits.max_services,
            "service id {} does not fit max_services = {}",
            s.id,
            limits.max_services
        );
        ensure!(
            s.ring.len() == limits.ring_size as usize,
            "service {} has a ring of {} slots, the maps hold {}",
            s.id,
            s.ring.len(),
            limits.ring_size
        );
        for (id, info) in &s.backends {
            ensure!(
                *id != NO_BACKEND && *id < limits.max_backends,
                "backend id {id} is outside 1..{}",
                limits.max_backends
            );
            ensure!(
                info.flags & backend_flags::IN_USE != 0,
                "backend {id} of service {} is not flagged in use",
                s.id
            );
            if let Some(prev) = rows.insert(*id, *info)
                && prev != *info
            {
                bail!("backend id {id} is given two different rows: {prev:?} and {info:?}");
            }
        }
        let own: BTreeSet<u32> = s.backends.iter().map(|(id, _)| *id).collect();
        if let Some(bad) = s
            .ring
            .iter()
            .find(|b| **b != NO_BACKEND && !own.contains(b))
        {
            bail!(
                "the ring of service {} points at backend {bad}, not one of its own",
                s.id
            );
        }
    }
    ensure!(
        desired.local_addrs.len() <= limits.local_addrs as usize,
        "{} local addresses do not fit local_addrs = {}",
        desired.local_addrs.len(),
        limits.local_addrs
    );
    Ok(())
}

/// The writes that take the maps from `current` to `desired`, in a safe order
/// (see the module doc). An empty plan means nothing to do.
pub fn plan(
    current: &AppliedState,
    desired: &DesiredState,
    limits: &MapSizes,
) -> Result<Vec<MapOp>> {
    validate(desired, limits)?;
    let mut ops = Vec::new();

    if current.settings != Some(desired.settings) {
        ops.push(MapOp::SetSettings(desired.settings));
    }

    let want_addrs: BTreeMap<u32, u32> = desired.local_addrs.iter().copied().collect();
    for (&ip, &flags) in &want_addrs {
        if current.local_addrs.get(&ip) != Some(&flags) {
            ops.push(MapOp::SetLocalAddr { ip, flags });
        }
    }

    let want_rows: BTreeMap<u32, BackendInfo> = desired
        .services
        .iter()
        .flat_map(|s| s.backends.iter().copied())
        .collect();
    for (&id, &info) in &want_rows {
        if current.backends.get(&id) != Some(&info) {
            ops.push(MapOp::SetBackend { id, info });
        }
    }

    // A removed service whose id a new one takes goes first: the newcomer's
    // ring write would otherwise land in rings the old entry still uses.
    let want_keys: BTreeSet<SvcKey> = desired.services.iter().map(|s| s.key.into()).collect();
    let want_ids: BTreeSet<u32> = desired.services.iter().map(|s| s.id).collect();
    let (early, late): (Vec<_>, Vec<_>) = current
        .services
        .iter()
        .filter(|(k, _)| !want_keys.contains(k))
        .partition(|(_, a)| want_ids.contains(&a.info.id));
    for (key, _) in early {
        ops.push(MapOp::RemoveService { key: (*key).into() });
    }

    let mut services: Vec<&DesiredService> = desired.services.iter().collect();
    services.sort_by_key(|s| SvcKey::from(s.key));
    for s in services {
        plan_service(current, s, limits, &mut ops);
    }

    for (key, _) in late {
        ops.push(MapOp::RemoveService { key: (*key).into() });
    }

    for id in current
        .backends
        .keys()
        .filter(|id| !want_rows.contains_key(id))
    {
        ops.push(MapOp::ClearBackend { id: *id });
    }

    for ip in current
        .local_addrs
        .keys()
        .filter(|ip| !want_addrs.contains_key(ip))
    {
        ops.push(MapOp::RemoveLocalAddr { ip: *ip });
    }
    Ok(ops)
}

/// Ring write (into the spare) and service entry update for one service.
fn plan_service(
    current: &AppliedState,
    s: &DesiredService,
    limits: &MapSizes,
    ops: &mut Vec<MapOp>,
) {
    let key = SvcKey::from(s.key);
    let applied = current.services.get(&key);
    // An entry whose id changed (or whose offset is not one of its rings)
    // has no usable live ring: start on ring 0 of the new id.
    let live = applied
        .filter(|a| a.info.id == s.id)
        .and_then(|a| limits.ring_of(s.id, a.info.ring_offset));
    let ring_same = applied
        .and_then(|a| a.ring.as_ref())
        .is_some_and(|r| *r == s.ring);
    let which = match live {
        Some(w) if ring_same => w,
        Some(w) => 1 - w,
        None => 0,
    };
    if live != Some(which) || !ring_same {
        ops.push(MapOp::WriteRing {
            service_id: s.id,
            which,
            ring: s.ring.clone(),
        });
    }
    let info = ServiceInfo {
        id: s.id,
        flags: s.flags,
        snat_ip: s.snat_ip,
        ring_offset: limits.ring_offset(s.id, which),
        ring_size: limits.ring_size,
        _pad: 0,
        persist_timeout_ns: s.persist_timeout_ns,
    };
    if applied.map(|a| a.info) != Some(info) {
        ops.push(MapOp::UpsertService { key: s.key, info });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{IPPROTO_TCP, service_flags};

    const M: u32 = 7;

    fn limits() -> MapSizes {
        MapSizes {
            max_services: 4,
            max_backends: 16,
            ring_size: M,
            local_addrs: 4,
            ..MapSizes::default()
        }
    }

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            vip: u32::from_be_bytes([192, 0, 2, 10]).to_be(),
            port: port.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        }
    }

    fn row(last: u8) -> BackendInfo {
        BackendInfo {
            ip: u32::from_be_bytes([198, 51, 100, last]).to_be(),
            port: 443u16.to_be(),
            flags: backend_flags::IN_USE | backend_flags::PERSIST_OK,
        }
    }

    fn service(id: u32, port: u16, backends: &[u32]) -> DesiredService {
        let ring: Vec<u32> = (0..M as usize)
            .map(|i| backends[i % backends.len()])
            .collect();
        DesiredService {
            key: key(port),
            id,
            flags: service_flags::ACTIVE,
            snat_ip: key(port).vip,
            persist_timeout_ns: 0,
            backends: backends.iter().map(|&b| (b, row(b as u8))).collect(),
            ring: ring.into(),
        }
    }

    fn state(services: Vec<DesiredService>) -> DesiredState {
        DesiredState {
            settings: Settings {
                snat_port_min: 40000,
                snat_port_max: 59999,
                ..Settings::default()
            },
            local_addrs: vec![(key(443).vip, 3)],
            services,
        }
    }

    /// Plans, records, and checks that a second plan is empty.
    fn converge(applied: &mut AppliedState, desired: &DesiredState) -> Vec<MapOp> {
        let ops = plan(applied, desired, &limits()).unwrap();
        applied.record_all(&ops);
        assert_eq!(
            plan(applied, desired, &limits()).unwrap(),
            vec![],
            "plan is not idempotent"
        );
        ops
    }

    fn position(ops: &[MapOp], f: impl Fn(&MapOp) -> bool) -> usize {
        ops.iter().position(f).expect("op missing")
    }

    #[test]
    fn first_plan_writes_rows_then_ring_then_service() {
        let mut applied = AppliedState::default();
        let ops = converge(&mut applied, &state(vec![service(1, 443, &[1, 2])]));
        assert_eq!(ops[0], MapOp::SetSettings(state(vec![]).settings));
        let row = position(&ops, |o| matches!(o, MapOp::SetBackend { id: 2, .. }));
        let ring = position(&ops, |o| {
            matches!(
                o,
                MapOp::WriteRing {
                    service_id: 1,
                    which: 0,
                    ..
                }
            )
        });
        let svc = position(&ops, |o| matches!(o, MapOp::UpsertService { .. }));
        assert!(row < ring && ring < svc, "{ops:#?}");
        let MapOp::UpsertService { info, .. } = &ops[svc] else {
            unreachable!()
        };
        assert_eq!(info.ring_offset, 2 * M, "service 1 ring 0 starts at 2*M");
        assert_eq!(info.ring_size, M);
        assert_eq!(applied.live_ring(&key(443).into(), &limits()), Some(0));
    }

    #[test]
    fn unchanged_ring_is_not_rewritten() {
        let mut applied = AppliedState::default();
        converge(&mut applied, &state(vec![service(1, 443, &[1, 2])]));
        // only the service flags change: no ring write, no flip
        let mut s = service(1, 443, &[1, 2]);
        s.flags = 0;
        let ops = converge(&mut applied, &state(vec![s]));
        assert_eq!(ops.len(), 1, "{ops:#?}");
        let MapOp::UpsertService { info, .. } = &ops[0] else {
            panic!("{ops:#?}")
        };
        assert_eq!((info.flags, info.ring_offset), (0, 2 * M));
    }

    #[test]
    fn changed_ring_goes_to_the_spare_and_flips_back_and_forth() {
        let mut applied = AppliedState::default();
        converge(
            &mut applied,
            &state(vec![service(1, 443, &[1, 2]), service(2, 80, &[5])]),
        );
        for (round, expect_which) in [(0, 1u8), (1, 0), (2, 1)] {
            let backends: &[u32] = if round % 2 == 0 { &[1, 2, 3] } else { &[1, 2] };
            let ops = converge(
                &mut applied,
                &state(vec![service(1, 443, backends), service(2, 80, &[5])]),
            );
            let rings: Vec<_> = ops
                .iter()
                .filter(|o| matches!(o, MapOp::WriteRing { .. }))
                .collect();
            assert_eq!(rings.len(), 1, "only service 1's ring changed: {ops:#?}");
            assert!(
                matches!(rings[0], MapOp::WriteRing { service_id: 1, which, .. } if *which == expect_which)
            );
            assert_eq!(
                applied.live_ring(&key(443).into(), &limits()),
                Some(expect_which)
            );
            assert_eq!(applied.live_ring(&key(80).into(), &limits()), Some(0));
        }
    }

    #[test]
    fn removed_backend_is_cleared_after_the_flip() {
        let mut applied = AppliedState::default();
        converge(&mut applied, &state(vec![service(1, 443, &[1, 2, 3])]));
        let ops = converge(&mut applied, &state(vec![service(1, 443, &[1, 2])]));
        let flip = position(&ops, |o| matches!(o, MapOp::UpsertService { .. }));
        let clear = position(&ops, |o| *o == MapOp::ClearBackend { id: 3 });
        assert!(flip < clear, "{ops:#?}");
        assert!(!applied.backends.contains_key(&3));
    }

    #[test]
    fn removed_service_goes_before_its_backends() {
        let mut applied = AppliedState::default();
        converge(
            &mut applied,
            &state(vec![service(1, 443, &[1]), service(2, 80, &[4])]),
        );
        let ops = converge(&mut applied, &state(vec![service(1, 443, &[1])]));
        let rm = position(&ops, |o| *o == MapOp::RemoveService { key: key(80) });
        let clear = position(&ops, |o| *o == MapOp::ClearBackend { id: 4 });
        assert!(rm < clear);
        assert_eq!(applied.services.len(), 1);
    }

    #[test]
    fn a_reused_service_id_is_freed_before_its_rings_are_written() {
        let mut applied = AppliedState::default();
        converge(&mut applied, &state(vec![service(1, 443, &[1])]));
        let ops = converge(&mut applied, &state(vec![service(1, 80, &[2])]));
        let rm = position(&ops, |o| *o == MapOp::RemoveService { key: key(443) });
        let ring = position(&ops, |o| {
            matches!(o, MapOp::WriteRing { service_id: 1, .. })
        });
        assert!(rm < ring, "{ops:#?}");
    }

    #[test]
    fn shared_backend_survives_while_one_service_uses_it() {
        let mut applied = AppliedState::default();
        converge(
            &mut applied,
            &state(vec![service(1, 443, &[1, 2]), service(2, 80, &[2])]),
        );
        let ops = converge(&mut applied, &state(vec![service(2, 80, &[2])]));
        assert!(ops.contains(&MapOp::ClearBackend { id: 1 }));
        assert!(!ops.contains(&MapOp::ClearBackend { id: 2 }), "{ops:#?}");
    }

    #[test]
    fn adopted_state_with_unknown_rings_rewrites_the_spare_once() {
        let mut applied = AppliedState::default();
        converge(&mut applied, &state(vec![service(1, 443, &[1, 2])]));
        // Simulate a restart: services read back from the map, rings unknown,
        // the earlier agent had flipped to ring 1.
        for s in applied.services.values_mut() {
            s.ring = None;
            s.info.ring_offset = limits().ring_offset(1, 1);
        }
        let ops = converge(&mut applied, &state(vec![service(1, 443, &[1, 2])]));
        assert!(
            matches!(ops[0], MapOp::WriteRing { which: 0, .. }),
            "{ops:#?}"
        );
        assert!(matches!(ops[1], MapOp::UpsertService { info, .. } if info.ring_offset == 2 * M));
    }

    #[test]
    fn local_addrs_are_added_changed_and_removed() {
        let mut applied = AppliedState::default();
        let mut d = state(vec![]);
        converge(&mut applied, &d);
        d.local_addrs = vec![(key(443).vip, 1), (7, 2)];
        let ops = converge(&mut applied, &d);
        assert_eq!(ops.len(), 2);
        d.local_addrs = vec![(7, 2)];
        let ops = converge(&mut applied, &d);
        assert_eq!(ops, vec![MapOp::RemoveLocalAddr { ip: key(443).vip }]);
    }

    #[test]
    fn contradictions_are_refused() {
        let l = limits();
        let mut bad_ring = service(1, 443, &[1]);
        bad_ring.ring = vec![1; 3].into();
        assert!(plan(&AppliedState::default(), &state(vec![bad_ring]), &l).is_err());

        let mut foreign = service(1, 443, &[1]);
        Arc::get_mut(&mut foreign.ring).unwrap()[0] = 9;
        let err = plan(&AppliedState::default(), &state(vec![foreign]), &l).unwrap_err();
        assert!(err.to_string().contains("backend 9"), "{err}");

        let mut other = service(2, 80, &[1]);
        other.backends[0].1.port = 8443u16.to_be();
        assert!(
            plan(
                &AppliedState::default(),
                &state(vec![service(1, 443, &[1]), other]),
                &l
            )
            .is_err()
        );

        assert!(
            plan(
                &AppliedState::default(),
                &state(vec![service(1, 443, &[1]), service(1, 80, &[2])]),
                &l
            )
            .is_err()
        );
        assert!(
            plan(
                &AppliedState::default(),
                &state(vec![service(9, 443, &[1])]),
                &l
            )
            .is_err()
        );
        assert!(
            plan(
                &AppliedState::default(),
                &state(vec![service(1, 443, &[16])]),
                &l
            )
            .is_err()
        );
    }
}
