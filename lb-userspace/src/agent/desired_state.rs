//! From the config, the backends' health and their admin states to what the
//! maps should hold. Pure: no I/O, unit-tested.

use std::{
    collections::BTreeMap,
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use lb_common::{
    BackendInfo, ServiceKey, Settings, backend_flags, local_addr_flags, service_flags,
    settings_flags,
};

use super::{admin_view::AdminView, health_view::HealthView, state_file::SavedState};
use crate::{
    config::{Config, HealthCheck, Node, Scheduler, Service, SynCookies},
    dataplane::{DesiredService, DesiredState, FlowTimeouts, GcPolicy, MapSizes, neigh::Reach},
    health::{BackendKey, desired_checks},
    ids::{IdTable, backend_key},
    maglev::{self, MaglevBackend},
};

/// How many handshakes begun in one second may stay incomplete on one CPU
/// before the program answers SYNs with SYN cookies (`syn_cookies =
/// "auto"`): all CPUs together leaving this many a second incomplete for a
/// whole handshake timeout would hold half the SNAT range toward one
/// backend, so a spoofed flood switches to cookies well before it can
/// exhaust the ports, and real clients, whose handshakes complete, never
/// do. At least 1.
pub fn syn_cookie_rate(snat_ports: u32, handshake: Duration, cpus: u32) -> u32 {
    let secs = handshake.as_secs().max(1);
    let node_wide = u64::from(snat_ports) / 2 / secs;
    (node_wide / u64::from(cpus.max(1))).clamp(1, u64::from(u32::MAX)) as u32
}

/// The longest TCP handshake timeout (`tcp_syn`) of any service: how long
/// a half-open entry and its SNAT port may be held.
fn longest_handshake(config: &Config) -> Duration {
    config
        .services
        .iter()
        .map(|svc| svc.timeouts.tcp_syn)
        .max()
        .unwrap_or(Duration::from_secs(10))
}

/// The CPUs the program's per-CPU SYN counts are spread over (the one
/// fact `desired_state` takes from the machine).
fn online_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// How long a removed service's or backend's id rests before reuse: longer
/// than any flow or persistence entry can outlive it.
pub fn id_quarantine(config: &Config) -> Duration {
    let longest = config
        .services
        .iter()
        .flat_map(|s| {
            [
                s.timeouts.tcp_established,
                s.timeouts.udp,
                s.persistence_timeout.unwrap_or_default(),
            ]
        })
        .max()
        .unwrap_or_default();
    longest + Duration::from_secs(60)
}

/// Stable ids of services and backends.
#[derive(Clone, Debug)]
pub struct Ids {
    pub services: IdTable,
    pub backends: IdTable,
}

impl Ids {
    pub fn new(limits: &MapSizes) -> Self {
        Ids {
            services: IdTable::starting_at(0, limits.max_services),
            backends: IdTable::new(limits.max_backends),
        }
    }

    /// The id tables of a saved state, in the ranges `limits` allow.
    pub fn restore(
        limits: &MapSizes,
        saved: &SavedState,
        now_s: u64,
        quarantine: Duration,
    ) -> Self {
        Ids {
            services: IdTable::restore(
                0,
                limits.max_services,
                saved.service_ids.clone(),
                now_s,
                quarantine,
            ),
            backends: IdTable::restore(
                1,
                limits.max_backends,
                saved.backend_ids.clone(),
                now_s,
                quarantine,
            ),
        }
    }

    /// Gives every service and backend of `config` an id, keeping the ids of
    /// those that already had one.
    pub fn sync(&mut self, config: &Config, now_s: u64) -> Result<()> {
        let quarantine = id_quarantine(config);
        self.services
            .sync(
                config.services.iter().map(|s| s.name.as_str()),
                now_s,
                quarantine,
            )
            .context("assigning service ids")?;
        let backend_names: Vec<String> = config
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| backend_key(&s.name, &b.name)))
            .collect();
        self.backends
            .sync(backend_names.iter().map(String::as_str), now_s, quarantine)
            .context("assigning backend ids")?;
        Ok(())
    }

    pub fn service(&self, service: &Service) -> u32 {
        self.services.get(&service.name).expect("synced service id")
    }

    pub fn backend(&self, service: &Service, backend: &str) -> u32 {
        self.backends
            .get(&backend_key(&service.name, backend))
            .expect("synced backend id")
    }
}

/// The map sizes the config asks for.
pub fn map_sizes(config: &Config) -> MapSizes {
    let l = &config.limits;
    MapSizes {
        max_services: l.max_services,
        max_backends: l.max_backends,
        ring_size: l.maglev_size,
        flows: l.flows,
        half_open: l.half_open,
        persist: l.persistence,
        ..MapSizes::default()
    }
}

fn network_order(ip: Ipv4Addr) -> u32 {
    u32::from(ip).to_be()
}

/// What the maps should hold for `config` on `node` with the backends'
/// `health`. A service is ACTIVE (takes new flows) only when its VIP is in
/// `active_vips` ([`active_vips`]: every VIP in single-node mode, the VIPs
/// of the instances this node is master of with VRRP).
///
/// A DOWN backend takes no ring slots (new clients go to the others; Maglev
/// leaves their slots mostly where they were) and loses `PERSIST_OK`
/// (persistent clients move too), but keeps its row, so established flows
/// keep being translated until they end or time out.
///
/// Admin states narrow that further: a drained backend takes no slots but
/// keeps `PERSIST_OK` (clients inside their persistence timeout stay); a
/// backend in maint loses both, like a DOWN one.
pub fn desired_state(
    config: &Config,
    node: &Node,
    ids: &Ids,
    health: &HealthView,
    admin: &AdminView,
    active_vips: &BTreeSet<Ipv4Addr>,
) -> DesiredState {
    // VRRP mode: the program enforces the agent's lease on the addresses
    // that move with VRRP (the deadline itself is the VRRP thread's).
    let vrrp = !config.vrrp.is_empty();
    let mut flags = if vrrp { settings_flags::LEASE } else { 0 };
    flags |= match node.syn_cookies {
        SynCookies::Auto => 0,
        SynCookies::Always => settings_flags::SYN_COOKIES_ALWAYS,
        SynCookies::Never => settings_flags::SYN_COOKIES_NEVER,
    };
    let settings = Settings {
        snat_port_min: node.snat_ports.min,
        snat_port_max: node.snat_ports.max,
        flags,
        lease_deadline_ns: 0,
        syn_cookie_rate: syn_cookie_rate(
            node.snat_ports.len(),
            longest_handshake(config),
            online_cpus(),
        ),
        _pad: 0,
    };
    let mut local: BTreeMap<u32, u32> = BTreeMap::new();
    let services = config
        .services
        .iter()
        .map(|svc| {
            *local.entry(network_order(svc.vip)).or_default() |= local_addr_flags::VIP;
            *local.entry(network_order(svc.snat_address)).or_default() |= local_addr_flags::SNAT;
            let active = active_vips.contains(&svc.vip);
            desired_service(svc, active, ids, health, admin, config.limits.maglev_size)
        })
        .collect();
    for vip in config.vrrp.iter().flat_map(|instance| &instance.vips) {
        *local.entry(network_order(*vip)).or_default() |= local_addr_flags::VRRP;
    }
    DesiredState {
        settings,
        services,
        local_addrs: local.into_iter().collect(),
    }
}

fn desired_service(
    svc: &Service,
    active: bool,
    ids: &Ids,
    health: &HealthView,
    admin: &AdminView,
    ring_size: u32,
) -> DesiredService {
    let mut flags = 0;
    if active {
        flags |= service_flags::ACTIVE;
    }
    if svc.scheduler == Scheduler::Flow {
        flags |= service_flags::SCHED_FLOW;
    }
    if svc.persistence_timeout.is_some() {
        flags |= service_flags::PERSISTENCE;
    }
    let backends: Vec<(u32, BackendInfo)> = svc
        .backends
        .iter()
        .map(|b| {
            let mut flags = backend_flags::IN_USE;
            if health.is_up(&svc.name, &b.name)
                && admin.state(&svc.name, &b.name).keeps_persistent_clients()
            {
                flags |= backend_flags::PERSIST_OK;
            }
            let info = BackendInfo {
                ip: network_order(*b.address.ip()),
                port: b.address.port().to_be(),
                flags,
            };
            (ids.backend(svc, &b.name), info)
        })
        .collect();
    let members: Vec<MaglevBackend<'_>> = svc
        .backends
        .iter()
        .filter(|b| {
            health.is_up(&svc.name, &b.name) && admin.state(&svc.name, &b.name).takes_new_clients()
        })
        .map(|b| MaglevBackend {
            id: ids.backend(svc, &b.name),
            name: &b.name,
            weight: b.weight,
        })
        .collect();
    DesiredService {
        key: ServiceKey {
            vip: network_order(svc.vip),
            port: svc.port.to_be(),
            proto: svc.protocol.ip_proto(),
            _pad: 0,
        },
        id: ids.service(svc),
        flags,
        snat_ip: network_order(svc.snat_address),
        persist_timeout_ns: svc.persistence_timeout.map_or(0, |d| d.as_nanos() as u64),
        backends,
        ring: Arc::from(maglev::build(&members, ring_size)),
    }
}

/// The health checks to run: the config's, except for backends in maint.
pub fn checks(config: &Config, admin: &AdminView) -> Vec<(BackendKey, SocketAddrV4, HealthCheck)> {
    desired_checks(config)
        .into_iter()
        .filter(|(key, _, _)| admin.state(&key.service, &key.backend).is_checked())
        .collect()
}

/// Idle timeouts per service id for the flow collector.
pub fn gc_policy(config: &Config, ids: &Ids) -> GcPolicy {
    let ns = |d: Duration| d.as_nanos() as u64;
    let per_service = config
        .services
        .iter()
        .map(|s| {
            let t = FlowTimeouts {
                syn_ns: ns(s.timeouts.tcp_syn),
                established_ns: ns(s.timeouts.tcp_established),
                closing_ns: ns(s.timeouts.tcp_closing),
                closed_ns: ns(s.timeouts.tcp_closed),
                udp_ns: ns(s.timeouts.udp),
                persist_ns: s.persistence_timeout.map_or(0, ns),
            };
            (ids.service(s), t)
        })
        .collect();
    GcPolicy {
        per_service,
        fallback: FlowTimeouts::default(),
    }
}

/// Every VIP of the config.
pub fn vips(config: &Config) -> BTreeSet<Ipv4Addr> {
    config.services.iter().map(|s| s.vip).collect()
}

/// The VIPs of every `[[vrrp]]` instance: with VRRP, the runtime adds and
/// removes these, never the agent.
pub fn vrrp_vips(config: &Config) -> BTreeSet<Ipv4Addr> {
    config
        .vrrp
        .iter()
        .flat_map(|v| v.vips.iter().copied())
        .collect()
}

/// The VIPs this node serves: all of them without VRRP; with VRRP, those
/// of the instances it is master of (`masters`, by instance name).
pub fn active_vips(config: &Config, masters: &BTreeSet<String>) -> BTreeSet<Ipv4Addr> {
    if config.vrrp.is_empty() {
        return vips(config);
    }
    config
        .vrrp
        .iter()
        .filter(|v| masters.contains(&v.name))
        .flat_map(|v| v.vips.iter().copied())
        .collect()
}

/// The backends whose address the neighbour sync could not reach, with the
/// reason. An address missing from `reach` (not looked at yet) counts as
/// reachable.
pub fn unreachable_backends(
    config: &Config,
    reach: &BTreeMap<Ipv4Addr, Reach>,
) -> BTreeMap<BackendKey, String> {
    config
        .services
        .iter()
        .flat_map(|svc| {
            svc.backends.iter().filter_map(|b| {
                let problem = reach.get(b.address.ip())?.problem()?;
                Some((BackendKey::new(&svc.name, &b.name), problem.to_string()))
            })
        })
        .collect()
}

/// Per service, whether it can take new clients here (at least one backend
/// UP and not drained or in maint): the VRRP `service-up` condition.
pub fn services_up(config: &Config, health: &HealthView, admin: &AdminView) -> Vec<(String, bool)> {
    config
        .services
        .iter()
        .map(|svc| {
            let up = svc.backends.iter().any(|b| {
                health.is_up(&svc.name, &b.name)
                    && admin.state(&svc.name, &b.name).takes_new_clients()
            });
            (svc.name.clone(), up)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, control::AdminState};
    use lb_common::NO_BACKEND;

    fn horizon() -> Config {
        let text = include_str!("../../../examples/horizon.toml");
        config::parse(text, "horizon.toml").expect("example parses")
    }

    fn state(c: &Config) -> (DesiredState, Ids) {
        state_with(c, &HealthView::all_up())
    }

    fn state_with(c: &Config, health: &HealthView) -> (DesiredState, Ids) {
        state_admin(c, health, &AdminView::all_ready())
    }

    fn state_admin(c: &Config, health: &HealthView, admin: &AdminView) -> (DesiredState, Ids) {
        let mut ids = Ids::new(&map_sizes(c));
        ids.sync(c, 0).unwrap();
        let node = &c.nodes["lb1"];
        (desired_state(c, node, &ids, health, admin, &vips(c)), ids)
    }

    fn service<'a>(d: &'a DesiredState, ids: &Ids, name: &str) -> &'a DesiredService {
        let id = ids.services.get(name).unwrap();
        d.services.iter().find(|s| s.id == id).unwrap()
    }

    fn row(s: &DesiredService, id: u32) -> Option<BackendInfo> {
        s.backends
            .iter()
            .find(|(b, _)| *b == id)
            .map(|(_, info)| *info)
    }

    /// Three backends of weight 1, 2, 3 in a ring of 1031 slots.
    fn three() -> Config {
        let text = r#"
[node.lb1]
interface = "eth0"
snat_ports = "20000-24999"

[limits]
maglev_size = 1031

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80

[service.check]
kind = "tcp"

[[service.backend]]
name = "be1"
address = "198.51.100.11:80"
weight = 1

[[service.backend]]
name = "be2"
address = "198.51.100.12:80"
weight = 2

[[service.backend]]
name = "be3"
address = "198.51.100.13:80"
weight = 3
"#;
        config::parse(text, "three.toml").expect("test config parses")
    }

    #[test]
    fn a_down_backend_leaves_the_ring_and_persistence_but_keeps_its_row() {
        let c = three();
        let (up, ids) = state(&c);
        let down_view = HealthView::with_down([BackendKey::new("web", "be2")]);
        let (down, _) = state_with(&c, &down_view);
        let (before, after) = (service(&up, &ids, "web"), service(&down, &ids, "web"));
        let [be1, be2, be3] =
            ["be1", "be2", "be3"].map(|b| ids.backends.get(&format!("web/{b}")).unwrap());

        assert!(before.ring.contains(&be2));
        assert!(!after.ring.contains(&be2), "a DOWN backend takes no slots");
        assert!(
            !after.ring.contains(&NO_BACKEND),
            "the others take every slot"
        );
        let counts = maglev::slot_counts(&after.ring);
        assert_eq!(counts.len(), 2);

        let row2 = row(after, be2).expect("the DOWN backend keeps its row");
        assert_eq!(row2.flags, backend_flags::IN_USE, "in use, not PERSIST_OK");
        assert_eq!(row2.ip, network_order("198.51.100.12".parse().unwrap()));
        for id in [be1, be3] {
            assert_eq!(
                row(after, id).unwrap().flags,
                backend_flags::IN_USE | backend_flags::PERSIST_OK
            );
        }

        // Slots of the backends still UP mostly stay where they were.
        let kept = before
            .ring
            .iter()
            .zip(after.ring.iter())
            .filter(|(b, a)| **b != be2 && b == a)
            .count();
        let others = before.ring.iter().filter(|b| **b != be2).count();
        assert!(
            kept * 10 >= others * 9,
            "only {kept} of {others} slots of the UP backends stayed"
        );
        // Everything else is unchanged.
        assert_eq!(after.key, before.key);
        assert_eq!(after.flags, before.flags);
    }

    /// be2 of `three()` with `health` and be2 in `state`: (ring holds be2,
    /// be2's flags), and the ring without be2 equals the ring with be2 DOWN.
    fn second_backend_under(health: &HealthView, state: AdminState) -> (bool, u16) {
        let c = three();
        let admin = AdminView::with([(BackendKey::new("web", "be2"), state)]);
        let (d, ids) = state_admin(&c, health, &admin);
        let web = service(&d, &ids, "web");
        let be2 = ids.backends.get("web/be2").unwrap();
        let row2 = row(web, be2).expect("be2 keeps its row in every state");
        for other in ["be1", "be3"] {
            let id = ids.backends.get(&format!("web/{other}")).unwrap();
            assert!(web.ring.contains(&id), "{other} stays in the ring");
        }
        (web.ring.contains(&be2), row2.flags)
    }

    #[test]
    fn admin_states_decide_ring_and_persistence() {
        use backend_flags::{IN_USE, PERSIST_OK};
        let up = HealthView::all_up();
        assert_eq!(
            second_backend_under(&up, AdminState::Ready),
            (true, IN_USE | PERSIST_OK),
            "ready: normal"
        );
        assert_eq!(
            second_backend_under(&up, AdminState::Drain),
            (false, IN_USE | PERSIST_OK),
            "drain: no new clients, persistent clients stay"
        );
        assert_eq!(
            second_backend_under(&up, AdminState::Maint),
            (false, IN_USE),
            "maint: no new and no persistent clients"
        );
        // DOWN wins over every admin state.
        let down = HealthView::with_down([BackendKey::new("web", "be2")]);
        for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            assert_eq!(
                second_backend_under(&down, state),
                (false, IN_USE),
                "DOWN and {state}"
            );
        }
    }

    #[test]
    fn a_drained_backend_leaves_the_same_ring_as_a_down_one() {
        let c = three();
        let key = BackendKey::new("web", "be2");
        let (down, ids) = state_with(&c, &HealthView::with_down([key.clone()]));
        let drained = AdminView::with([(key, AdminState::Drain)]);
        let (drain, _) = state_admin(&c, &HealthView::all_up(), &drained);
        assert_eq!(
            service(&down, &ids, "web").ring,
            service(&drain, &ids, "web").ring
        );
        let (maint_other, _) = state_admin(
            &c,
            &HealthView::all_up(),
            &AdminView::with([(BackendKey::new("other", "be2"), AdminState::Maint)]),
        );
        assert_eq!(
            maint_other,
            state(&c).0,
            "another service's state changes nothing"
        );
    }

    #[test]
    fn backends_in_maint_are_not_checked() {
        let c = three();
        let all: Vec<BackendKey> = checks(&c, &AdminView::all_ready())
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(all.len(), 3);
        let admin = AdminView::with([
            (BackendKey::new("web", "be1"), AdminState::Drain),
            (BackendKey::new("web", "be2"), AdminState::Maint),
        ]);
        let some: Vec<BackendKey> = checks(&c, &admin).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(
            some,
            vec![BackendKey::new("web", "be1"), BackendKey::new("web", "be3")],
            "drain is still checked, maint is not"
        );
    }

    #[test]
    fn all_backends_down_leaves_an_empty_ring_and_every_row() {
        let c = three();
        let view = HealthView::with_down(["be1", "be2", "be3"].map(|b| BackendKey::new("web", b)));
        let (d, ids) = state_with(&c, &view);
        let web = service(&d, &ids, "web");
        assert!(
            web.ring.iter().all(|b| *b == NO_BACKEND),
            "no backend: SYNs get RST"
        );
        assert_eq!(web.ring.len(), 1031);
        assert_eq!(web.backends.len(), 3);
        assert!(
            web.backends
                .iter()
                .all(|(_, i)| i.flags == backend_flags::IN_USE)
        );
        crate::dataplane::desired::validate(&d, &map_sizes(&c)).expect("the maps accept it");
    }

    #[test]
    fn back_up_restores_the_very_same_state() {
        let c = three();
        let (up, _) = state(&c);
        let mut view = HealthView::all_up();
        view.record(BackendKey::new("web", "be1"), false);
        let (down, _) = state_with(&c, &view);
        assert_ne!(up, down);
        view.record(BackendKey::new("web", "be1"), true);
        let (again, _) = state_with(&c, &view);
        assert_eq!(up, again, "clients of be1 return to it");
    }

    #[test]
    fn health_of_another_service_changes_nothing() {
        let c = three();
        let (up, _) = state(&c);
        let view = HealthView::with_down([BackendKey::new("other", "be1")]);
        let (d, _) = state_with(&c, &view);
        assert_eq!(up, d);
    }

    #[test]
    fn example_maps_to_two_active_persistent_services() {
        let c = horizon();
        let (d, ids) = state(&c);
        assert_eq!(d.settings.snat_port_min, 20000);
        assert_eq!(d.settings.snat_port_max, 24999);
        assert_eq!(d.services.len(), 2);
        let h = d
            .services
            .iter()
            .find(|s| s.key.vip == network_order("192.0.2.20".parse().unwrap()))
            .unwrap();
        assert_eq!(h.key.port, 443u16.to_be());
        assert_eq!(h.key.proto, lb_common::IPPROTO_TCP);
        assert_eq!(h.flags, service_flags::ACTIVE | service_flags::PERSISTENCE);
        assert_eq!(h.persist_timeout_ns, 3600 * 1_000_000_000);
        assert_eq!(h.ring.len(), 65537);
        let counts = maglev::slot_counts(&h.ring);
        assert_eq!(counts.len(), 2, "both backends in the ring");
        let cs1 = ids.backends.get("horizon/cs1").unwrap();
        let info = h.backends.iter().find(|(id, _)| *id == cs1).unwrap().1;
        assert_eq!(info.ip, network_order("198.51.100.21".parse().unwrap()));
        assert_eq!(info.port, 443u16.to_be());
        // VIP and SNAT address coincide by default: both flags on one entry,
        // and it moves with VRRP.
        let moving = local_addr_flags::VIP | local_addr_flags::SNAT | local_addr_flags::VRRP;
        assert!(d.local_addrs.contains(&(h.snat_ip, moving)));
        assert_eq!(d.local_addrs.len(), 3, "two service VIPs and 192.0.2.250");
    }

    #[test]
    fn syn_cookie_rate_is_half_the_snat_range_per_handshake_timeout_per_cpu() {
        // 27,000 ports held up to 10 s: 1,350 SYNs/s node-wide.
        assert_eq!(syn_cookie_rate(27_000, Duration::from_secs(10), 1), 1_350);
        assert_eq!(syn_cookie_rate(27_000, Duration::from_secs(10), 2), 675);
        // Sub-second timeouts count as one second; never 0 (0 = off).
        assert_eq!(syn_cookie_rate(1_000, Duration::from_millis(500), 1), 500);
        assert_eq!(syn_cookie_rate(2, Duration::from_secs(10), 64), 1);
    }

    #[test]
    fn syn_cookies_mode_sets_the_flags() {
        let mut c = horizon();
        let (d, _) = state(&c);
        let cookie_flags = settings_flags::SYN_COOKIES_ALWAYS | settings_flags::SYN_COOKIES_NEVER;
        assert_eq!(
            d.settings.flags & cookie_flags,
            settings_flags::SYN_COOKIES_NEVER,
            "never by default"
        );
        assert!(d.settings.syn_cookie_rate >= 1);
        for (mode, flag) in [
            (SynCookies::Always, settings_flags::SYN_COOKIES_ALWAYS),
            (SynCookies::Never, settings_flags::SYN_COOKIES_NEVER),
            (SynCookies::Auto, 0),
        ] {
            c.nodes.get_mut("lb1").unwrap().syn_cookies = mode;
            let (d, _) = state(&c);
            assert_eq!(d.settings.flags & cookie_flags, flag, "{mode:?}");
        }
    }

    #[test]
    fn vrrp_mode_enforces_the_lease_on_every_instance_vip() {
        let c = horizon();
        let (d, _) = state(&c);
        assert_eq!(
            d.settings.flags & settings_flags::LEASE,
            settings_flags::LEASE
        );
        assert_eq!(d.settings.lease_deadline_ns, 0, "the VRRP thread's field");
        let flags = |ip: &str| {
            d.local_addrs
                .iter()
                .find(|(a, _)| *a == network_order(ip.parse().unwrap()))
                .map(|(_, f)| *f)
        };
        // A VRRP address that fronts no service still gets gated.
        assert_eq!(flags("192.0.2.250"), Some(local_addr_flags::VRRP));
        assert_eq!(
            flags("192.0.2.30"),
            Some(local_addr_flags::VIP | local_addr_flags::SNAT | local_addr_flags::VRRP)
        );
    }

    #[test]
    fn single_node_mode_leaves_the_lease_off() {
        let c = three();
        assert!(c.vrrp.is_empty());
        let (d, _) = state(&c);
        assert_eq!(d.settings.flags & settings_flags::LEASE, 0);
        assert!(
            d.local_addrs
                .iter()
                .all(|(_, f)| f & local_addr_flags::VRRP == 0)
        );
        assert!(!d.local_addrs.is_empty());
    }

    #[test]
    fn with_vrrp_only_the_vips_of_master_instances_are_active() {
        let c = horizon();
        let none = active_vips(&c, &BTreeSet::new());
        assert!(none.is_empty(), "a backup serves nothing");
        let masters: BTreeSet<String> = ["lb_vip".to_string()].into();
        let all = active_vips(&c, &masters);
        assert!(all.contains(&"192.0.2.20".parse().unwrap()));
        assert!(all.contains(&"192.0.2.250".parse().unwrap()));
        assert_eq!(vrrp_vips(&c), all);
        let mut ids = Ids::new(&map_sizes(&c));
        ids.sync(&c, 0).unwrap();
        let node = &c.nodes["lb1"];
        let health = HealthView::all_up();
        let admin = AdminView::all_ready();
        let backup = desired_state(&c, node, &ids, &health, &admin, &none);
        assert!(
            backup
                .services
                .iter()
                .all(|s| s.flags & service_flags::ACTIVE == 0)
        );
        // Inactive services keep their rings and rows: flows in progress
        // and a later takeover need them.
        assert!(backup.services.iter().all(|s| !s.backends.is_empty()));
        let master = desired_state(&c, node, &ids, &health, &admin, &all);
        assert!(
            master
                .services
                .iter()
                .all(|s| s.flags & service_flags::ACTIVE != 0)
        );
        let single = three();
        assert_eq!(active_vips(&single, &BTreeSet::new()), vips(&single));
    }

    #[test]
    fn a_service_is_up_while_one_backend_takes_new_clients() {
        let c = three();
        let up = |health: &HealthView, admin: &AdminView| services_up(&c, health, admin);
        let ready = AdminView::all_ready();
        assert_eq!(
            up(&HealthView::all_up(), &ready),
            [("web".to_string(), true)]
        );
        let two_down =
            HealthView::with_down([BackendKey::new("web", "be1"), BackendKey::new("web", "be2")]);
        assert_eq!(up(&two_down, &ready), [("web".to_string(), true)]);
        let drained = AdminView::with([(BackendKey::new("web", "be3"), AdminState::Drain)]);
        assert_eq!(up(&two_down, &drained), [("web".to_string(), false)]);
    }

    #[test]
    fn an_unreachable_address_holds_down_its_backends_only() {
        use crate::dataplane::neigh::NextHop;
        let c = three();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let reach = BTreeMap::from([
            (
                ip("198.51.100.11"),
                Reach::Via(NextHop {
                    ip: ip("198.51.100.11"),
                    ifindex: 2,
                }),
            ),
            (
                ip("198.51.100.12"),
                Reach::Down("no route to 198.51.100.12 (Network is unreachable)".into()),
            ),
        ]);
        let down = unreachable_backends(&c, &reach);
        assert_eq!(
            down.keys().cloned().collect::<Vec<_>>(),
            vec![BackendKey::new("web", "be2")],
            "be3 was not looked at: reachable"
        );
        let mut health = HealthView::all_up();
        health.set_unreachable(down);
        let (d, ids) = state_with(&c, &health);
        let web = service(&d, &ids, "web");
        let be2 = ids.backends.get("web/be2").unwrap();
        assert!(!web.ring.contains(&be2), "no new client goes to be2");
        assert_eq!(row(web, be2).unwrap().flags, backend_flags::IN_USE);
        assert!(services_up(&c, &health, &AdminView::all_ready())[0].1);
        let all_down = ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
            .map(|a| (ip(a), Reach::Down(format!("no route to {a}"))));
        health.set_unreachable(unreachable_backends(&c, &BTreeMap::from(all_down)));
        let (d, ids) = state_with(&c, &health);
        assert!(
            service(&d, &ids, "web")
                .ring
                .iter()
                .all(|b| *b == NO_BACKEND)
        );
        assert!(!services_up(&c, &health, &AdminView::all_ready())[0].1);
    }

    #[test]
    fn ids_are_deterministic_across_agents() {
        let c = horizon();
        let (a, _) = state(&c);
        let (b, _) = state(&c);
        assert_eq!(a, b, "two agents (or two nodes) compute the same maps");
    }

    #[test]
    fn weight_zero_takes_no_slots_but_keeps_its_row() {
        let text = include_str!("../../../examples/horizon.toml").replacen(
            "weight = 1              # share",
            "weight = 0              # share",
            1,
        );
        let c = config::parse(&text, "h.toml").unwrap();
        let (d, ids) = state(&c);
        let cs1 = ids.backends.get("horizon/cs1").unwrap();
        let h = &d
            .services
            .iter()
            .find(|s| s.backends.iter().any(|(id, _)| *id == cs1))
            .unwrap();
        assert!(!h.ring.contains(&cs1));
        assert!(h.backends.iter().any(|(id, _)| *id == cs1));
    }

    #[test]
    fn gc_policy_carries_the_service_timeouts() {
        let c = horizon();
        let (_, ids) = state(&c);
        let p = gc_policy(&c, &ids);
        let t = p.timeouts(ids.services.get("horizon").unwrap());
        assert_eq!(t.established_ns, 3600 * 1_000_000_000);
        assert_eq!(t.persist_ns, 3600 * 1_000_000_000);
    }
}
