//! Root tests of the data-plane layer's I/O (lb-userspace's `dataplane`):
//! real BPF maps, a private bpffs, XDP attach/adopt on a veth, sysctls,
//! nftables and managed neighbours, each inside a veth pair of the lab
//! library (documentation addresses only) that is torn down also on failure.
//!
//! Needs root: `cargo test -p lb-tests --test dataplane_maps -- --test-threads=1`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData};
use lb_common::{
    BackendInfo, Flow, FlowKey, IPPROTO_TCP, ServiceKey, Settings, backend_flags, direction,
    flow_state, reason, service_flags,
};
use lb_tests::lab::assert_nothing_left;
use lb_tests::lab::bounds;
use lb_tests::lab::bpffs::PrivateBpffs;
use lb_tests::lab::netns;
use lb_tests::lab::veth_pair::{A_IFACE, B_ADDR, VethPair};
use lb_userspace::dataplane::desired::{DesiredService, DesiredState};
use lb_userspace::dataplane::gc::{FlowTimeouts, GcPolicy};
use lb_userspace::dataplane::host::{self, PortRange};
use lb_userspace::dataplane::neigh::ManagedNeighbours;
use lb_userspace::dataplane::{self, AppliedState, AttachMode, MapSizes, Maps, PinDir, load, pins};

/// Runs `program args..` where the calling thread is; its standard output.
fn stdout_of(program: &str, args: &[&str]) -> String {
    let output = netns::run(Command::new(program).args(args)).unwrap_or_else(|e| panic!("{e:#}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ip link show dev veth0` where the calling thread is.
fn link_shown() -> String {
    stdout_of("ip", &["link", "show", "dev", A_IFACE])
}

/// Runs `f` inside namespace `ns`; a panic there fails the test with its
/// message.
fn within<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    netns::run_in(ns, f).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Tears `pair` and `fs` down and checks nothing of either is left.
fn tear_down(pair: VethPair, fs: Option<PrivateBpffs>) {
    let prefix = pair.prefix.clone();
    let pins = fs.as_ref().map(|fs| fs.path().join("lbdp"));
    drop(fs);
    drop(pair);
    assert_nothing_left(
        &prefix,
        pins.as_deref()
            .unwrap_or(std::path::Path::new("/nonexistent")),
    );
}

fn small_limits() -> MapSizes {
    MapSizes {
        max_services: 4,
        max_backends: 64,
        ring_size: 65537,
        flows: 1024,
        half_open: 256,
        persist: 256,
        local_addrs: 8,
    }
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d]).to_be()
}

fn service(id: u32, backends: &[u32], m: u32) -> DesiredService {
    let vip = ip(192, 0, 2, 10);
    DesiredService {
        key: ServiceKey {
            vip,
            port: 443u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        },
        id,
        flags: service_flags::ACTIVE,
        snat_ip: vip,
        persist_timeout_ns: 0,
        backends: backends
            .iter()
            .map(|&b| {
                let row = BackendInfo {
                    ip: ip(198, 51, 100, b as u8),
                    port: 443u16.to_be(),
                    flags: backend_flags::IN_USE | backend_flags::PERSIST_OK,
                };
                (b, row)
            })
            .collect(),
        ring: (0..m as usize)
            .map(|i| backends[i % backends.len()])
            .collect::<Vec<_>>()
            .into(),
    }
}

#[test]
fn maps_apply_read_back_and_flip() {
    let limits = small_limits();
    let mut maps = Maps::standalone(&limits).expect("standalone maps (run as root)");
    let mut applied = AppliedState::default();
    let m = limits.ring_size;
    let state = |backends: &[u32]| DesiredState {
        settings: Settings {
            snat_port_min: 61000,
            snat_port_max: 61999,
            ..Settings::default()
        },
        services: vec![service(2, backends, m)],
        local_addrs: vec![(ip(192, 0, 2, 10), 3)],
    };

    let t = Instant::now();
    let writes = dataplane::apply(&mut maps, &mut applied, &state(&[1, 2, 3])).unwrap();
    let first = t.elapsed();
    println!("first apply: {writes} writes (one ring of {m} slots) in {first:?}");
    assert!(writes >= 6);
    assert_eq!(maps.settings().unwrap().snat_port_min, 61000);
    assert_eq!(
        maps.read_ring(2, 0).unwrap(),
        state(&[1, 2, 3]).services[0].ring.to_vec()
    );
    assert_eq!(maps.backend(3).unwrap().ip, ip(198, 51, 100, 3));
    assert_eq!(maps.local_addrs().unwrap(), vec![(ip(192, 0, 2, 10), 3)]);

    // what an adopting agent reads back equals what was recorded, rings aside
    let mut read = maps.read_applied().unwrap();
    for s in read.services.values_mut() {
        s.ring = applied.services.values().next().unwrap().ring.clone();
    }
    assert_eq!(read, applied);

    // backend 3 leaves: ring 1 is filled, the service flips, row 3 is cleared
    assert_eq!(
        dataplane::apply(&mut maps, &mut applied, &state(&[1, 2])).unwrap(),
        3
    );
    let (_, info) = maps.services().unwrap()[0];
    assert_eq!(info.ring_offset, limits.ring_offset(2, 1));
    assert!(
        maps.read_ring(2, 1)
            .unwrap()
            .iter()
            .all(|b| *b == 1 || *b == 2)
    );
    assert_eq!(maps.backend(3).unwrap(), BackendInfo::default());
    assert_eq!(
        dataplane::apply(&mut maps, &mut applied, &state(&[1, 2])).unwrap(),
        0
    );

    // the lease survives an apply, and the plan's writes never set it
    maps.set_lease_deadline(42).unwrap();
    let mut s = state(&[1, 2]);
    s.settings.snat_port_max = 61500;
    dataplane::apply(&mut maps, &mut applied, &s).unwrap();
    assert_eq!(maps.settings().unwrap().lease_deadline_ns, 42);
    assert_eq!(maps.settings().unwrap().snat_port_max, 61500);
    s.settings.snat_port_max = 61600;
    s.settings.lease_deadline_ns = 7;
    dataplane::apply(&mut maps, &mut applied, &s).unwrap();
    assert_eq!(maps.settings().unwrap().lease_deadline_ns, 42);
    maps.set_settings(&s.settings).unwrap();
    assert_eq!(maps.settings().unwrap().lease_deadline_ns, 42);

    // counters: zeroed on first use, every reason labelled
    assert_eq!(maps.service_stats(2).unwrap(), Default::default());
    assert_eq!(maps.backend_stats(1).unwrap(), Default::default());
    let reasons = maps.reasons().unwrap();
    assert_eq!(reasons.len(), reason::COUNT as usize);
    assert_eq!(
        reasons[reason::DROP_FIB_NO_NEIGH as usize],
        ("drop_fib_no_neigh", 0)
    );

    // removing the service clears everything it used
    let empty = DesiredState {
        services: vec![],
        ..s
    };
    dataplane::apply(&mut maps, &mut applied, &empty).unwrap();
    assert!(maps.services().unwrap().is_empty());
    assert_eq!(maps.backend(1).unwrap(), BackendInfo::default());
}

#[test]
fn ring_write_cost() {
    let limits = small_limits();
    let mut maps = Maps::standalone(&limits).expect("standalone maps (run as root)");
    let ring_a: Arc<[u32]> = (0..limits.ring_size)
        .map(|i| i % 50 + 1)
        .collect::<Vec<_>>()
        .into();
    let ring_b: Arc<[u32]> = (0..limits.ring_size)
        .map(|i| i % 7 + 100)
        .collect::<Vec<_>>()
        .into();
    let mut batched = Vec::new();
    for (which, ring) in [(0u8, &ring_a), (1, &ring_b), (0, &ring_b)] {
        let t = Instant::now();
        maps.write_ring(3, which, ring).unwrap();
        batched.push(t.elapsed());
    }
    assert_eq!(&maps.read_ring(3, 0).unwrap()[..], &ring_b[..]);
    assert_eq!(&maps.read_ring(3, 1).unwrap()[..], &ring_b[..]);
    // neighbours untouched: ring 0 of service 2 and ring 1 of service 3's successor slot range
    assert!(maps.read_ring(2, 1).unwrap().iter().all(|b| *b == 0));
    let t = Instant::now();
    maps.write_ring_slots(limits.ring_offset(3, 1), &ring_a)
        .unwrap();
    let single = t.elapsed();
    assert_eq!(&maps.read_ring(3, 1).unwrap()[..], &ring_a[..]);
    println!(
        "writing {} maglev slots: batched {batched:?}, one syscall per slot {single:?}",
        limits.ring_size
    );
    assert!(maps.write_ring(3, 2, &ring_a).is_err());
    assert!(
        maps.write_ring(4, 0, &ring_a).is_err(),
        "service id 4 is beyond max_services"
    );
    assert!(maps.write_ring(0, 0, &ring_a[1..]).is_err());
}

/// Inserts a client->backend entry and its reply entry.
fn insert_conn(
    maps: &mut Maps,
    cport: u16,
    snat: u16,
    backend: u32,
    state: u8,
    seen: u64,
) -> (FlowKey, FlowKey) {
    let (client, vip, be) = (
        ip(203, 0, 113, 9),
        ip(192, 0, 2, 10),
        ip(198, 51, 100, backend as u8),
    );
    let fk = FlowKey {
        src_ip: client,
        dst_ip: vip,
        src_port: cport.to_be(),
        dst_port: 443u16.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let fwd = Flow {
        nat_src_ip: vip,
        nat_dst_ip: be,
        nat_src_port: snat.to_be(),
        nat_dst_port: 443u16.to_be(),
        backend_id: backend,
        service_id: 1,
        direction: direction::TO_BACKEND,
        state,
        last_seen_ns: seen,
        ..Flow::default()
    };
    let rk = dataplane::gc::peer_key(&fk, &fwd);
    let rev = Flow {
        nat_src_port: 443u16.to_be(),
        nat_dst_ip: client,
        nat_dst_port: cport.to_be(),
        direction: direction::TO_CLIENT,
        ..fwd
    };
    maps.insert_flow(&fk, &fwd).unwrap();
    maps.insert_flow(&rk, &rev).unwrap();
    (fk, rk)
}

#[test]
fn gc_deletes_idle_pairs_and_counts_active_flows() {
    const S: u64 = 1_000_000_000;
    let mut maps = Maps::standalone(&small_limits()).expect("standalone maps (run as root)");
    let now = 1000 * S;
    insert_conn(
        &mut maps,
        50000,
        61000,
        5,
        flow_state::ESTABLISHED,
        now - 10 * S,
    );
    insert_conn(
        &mut maps,
        50001,
        61001,
        5,
        flow_state::ESTABLISHED,
        now - 20 * S,
    );
    insert_conn(
        &mut maps,
        50002,
        61002,
        6,
        flow_state::CLOSING,
        now - 20 * S,
    ); // closing: 15 s
    insert_conn(
        &mut maps,
        50003,
        61003,
        6,
        flow_state::ESTABLISHED,
        now - 700 * S,
    ); // idle
    let t = FlowTimeouts {
        syn_ns: 5 * S,
        established_ns: 600 * S,
        closing_ns: 15 * S,
        closed_ns: 2 * S,
        udp_ns: 30 * S,
        persist_ns: 0,
    };
    let policy = GcPolicy {
        per_service: [(1, t)].into(),
        fallback: FlowTimeouts::default(),
    };
    let report = maps.collect_garbage(&policy, now).unwrap();
    println!("{report:?}");
    assert_eq!(report.scanned, 8);
    assert_eq!(report.flows_deleted, 4, "two pairs of two entries");
    assert_eq!(report.active_per_backend, [(5, 2)].into());
    assert_eq!(maps.snapshot_flows().unwrap().flows.len(), 4);
    // a second pass finds nothing more
    assert_eq!(maps.collect_garbage(&policy, now).unwrap().flows_deleted, 0);
}

#[test]
fn pinned_maps_are_checked_against_the_config() {
    let fs = PrivateBpffs::mount("check").unwrap();
    let pins = PinDir::new(fs.path(), "lbdp").unwrap();
    pins.create().unwrap();
    let limits = small_limits();
    // nothing pinned yet: nothing to object to
    dataplane::maps::check_pinned(&pins, &limits).unwrap();
    // a maglev map sized for another ring size
    let wrong: Array<MapData, u32> = Array::create(4 * 2 * 7, 0).unwrap();
    wrong.pin(pins.map("maglev")).unwrap();
    let err = format!(
        "{:#}",
        dataplane::maps::check_pinned(&pins, &limits).unwrap_err()
    );
    assert!(
        err.contains("maglev") && err.contains("56 entries") && err.contains("lbd stop --detach"),
        "{err}"
    );
    assert!(pins::remove_all(fs.path(), "lbdp").unwrap());
    assert!(!pins.path().exists());
}

#[test]
fn attach_pin_adopt_and_detach_on_a_veth() {
    let pair = VethPair::new("dpatt").unwrap();
    let fs = PrivateBpffs::mount("att").unwrap();
    let root = fs.path().to_path_buf();
    within(&pair.a, move || {
        let pins = PinDir::new(&root, "lbdp").unwrap();
        pins.create().unwrap();
        let limits = small_limits();
        let mut first = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let attached = load::attach(&mut first, &pins, A_IFACE, AttachMode::Native).unwrap();
        assert!(matches!(attached, dataplane::Attachment::Fresh(_)));
        let ifindex = load::if_index(A_IFACE).unwrap();
        assert_eq!(load::pinned_link_ifindex(&pins.link()).unwrap(), ifindex);
        // the agent goes away: the pinned link keeps the program attached
        drop(attached);
        drop(first);
        let shown = link_shown();
        assert!(
            shown.contains("prog/xdp"),
            "program gone after the loader exited: {shown}"
        );

        // a new agent adopts the link and swaps its program in
        let mut second = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let adopted = load::attach(&mut second, &pins, A_IFACE, AttachMode::Native).unwrap();
        assert!(matches!(adopted, dataplane::Attachment::Adopted));
        // adopting for another interface is refused
        let mut third = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let err = format!(
            "{:#}",
            load::attach(&mut third, &pins, "lo", AttachMode::Native).unwrap_err()
        );
        assert!(
            err.contains(A_IFACE) && err.contains("lbd stop --detach"),
            "{err}"
        );
        drop((second, third, adopted));
        assert!(link_shown().contains("prog/xdp"));

        // stop --detach: removing the pins detaches the program
        assert!(pins::remove_all(&root, "lbdp").unwrap());
        let deadline = Instant::now() + bounds::KERNEL_SETTLES;
        while link_shown().contains("prog/xdp") {
            assert!(
                Instant::now() < deadline,
                "program still attached {:?} after the pins were removed: {}\n{}",
                bounds::KERNEL_SETTLES,
                link_shown(),
                stdout_of("bpftool", &["link", "show"])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    tear_down(pair, Some(fs));
}

#[test]
fn host_setup_inside_a_namespace() {
    let pair = VethPair::new("dphost").unwrap();
    let host_reserved =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap();
    within(&pair.a, move || {
        // overlapping SNAT range refused, disjoint accepted
        let err = host::check_snat_against_host(PortRange::new(40000, 40999).unwrap()).unwrap_err();
        assert!(err.to_string().contains("ip_local_port_range"), "{err}");
        let snat = PortRange::new(61000, 61999).unwrap();
        host::check_snat_against_host(snat).unwrap();

        std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "8404").unwrap();
        host::prepare("lbdp-node", A_IFACE, snat).unwrap();
        host::prepare("lbdp-node", A_IFACE, snat).unwrap(); // idempotent
        assert!(host::forwarding(A_IFACE).unwrap());
    });
    assert_eq!(
        pair.sysctl_in_a("net.ipv4.conf.veth0.forwarding").unwrap(),
        "1"
    );
    assert_eq!(
        pair.sysctl_in_a("net.ipv4.ip_forward").unwrap(),
        "0",
        "the global switch stays off"
    );
    assert_eq!(
        pair.sysctl_in_a("net.ipv4.ip_local_reserved_ports")
            .unwrap(),
        "8404,61000-61999"
    );
    let rules = pair
        .exec_in_a("nft", &["list", "table", "inet", "lbd_lbdp_node"])
        .unwrap();
    assert!(rules.contains("hook forward"), "{rules}");
    assert_eq!(rules.matches("iifname \"veth0\"").count(), 1, "{rules}");
    // nothing leaked into the host's namespace
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap(),
        host_reserved
    );

    within(&pair.a, || {
        host::remove_forward_drop("lbdp-node").unwrap();
        host::remove_forward_drop("lbdp-node").unwrap();
        host::set_forwarding(A_IFACE, false).unwrap();
    });
    let tables = pair.exec_in_a("nft", &["list", "tables"]).unwrap();
    assert!(!tables.contains("lbd_lbdp_node"), "{tables}");
    assert_eq!(
        pair.sysctl_in_a("net.ipv4.conf.veth0.forwarding").unwrap(),
        "0"
    );
    tear_down(pair, None);
}

#[test]
fn managed_neighbours_follow_the_backends() {
    let pair = VethPair::new("dpneig").unwrap();
    pair.route_from_a_via_b("198.51.100.0/24").unwrap();
    let show = |pair: &VethPair| {
        stdout_of(
            "ip",
            &["-n", &pair.a, "-d", "neigh", "show", "dev", A_IFACE],
        )
    };
    let hops = within(&pair.a, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut n = ManagedNeighbours::new().unwrap();
            // two backends behind the gateway 192.0.2.2 share one entry
            let backends = [
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(198, 51, 100, 2),
            ];
            n.sync(&backends).await.unwrap();
            n.hops().clone()
        })
    });
    assert!(hops.values().all(|h| h.ip == B_ADDR), "{hops:?}");
    let listing = show(&pair);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("{B_ADDR} ")))
        .unwrap_or_else(|| panic!("no entry: {listing}"));
    assert!(line.contains("managed"), "{line}");
    // the kernel resolves it by itself: namespace b answers the ARP request
    let t = Instant::now();
    while !show(&pair).contains("lladdr") {
        assert!(
            t.elapsed() < bounds::KERNEL_SETTLES,
            "managed entry not resolved within {:?}: {}",
            bounds::KERNEL_SETTLES,
            show(&pair)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("managed entry resolved after {:?}", t.elapsed());

    // backends gone: the entry this agent made goes too
    within(&pair.a, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut n = ManagedNeighbours::new().unwrap();
            n.sync(&[Ipv4Addr::new(198, 51, 100, 1)]).await.unwrap();
            n.sync(&[]).await.unwrap();
        })
    });
    assert!(!show(&pair).contains("managed"), "{}", show(&pair));
    tear_down(pair, None);
}

#[test]
fn dataplane_open_apply_adopt_detach() {
    let pair = VethPair::new("dpopen").unwrap();
    let fs = PrivateBpffs::mount("open").unwrap();
    let root = fs.path().to_path_buf();
    within(&pair.a, move || {
        let opts = dataplane::DataplaneOptions {
            node: "lbdp".into(),
            iface: A_IFACE.into(),
            mode: AttachMode::Native,
            bpffs: root.clone(),
            limits: small_limits(),
            object: lb_userspace::objects::LB,
        };
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        assert!(!dp.adopted());
        for name in lb_common::map_names::ALL {
            assert!(dp.pins().map(name).exists(), "{name} not pinned");
        }
        let desired = DesiredState {
            settings: Settings {
                snat_port_min: 61000,
                snat_port_max: 61999,
                ..Settings::default()
            },
            services: vec![service(1, &[1, 2], opts.limits.ring_size)],
            local_addrs: vec![(ip(192, 0, 2, 10), 3)],
        };
        assert!(dp.apply(&desired).unwrap() > 0);
        dp.set_lease(7).unwrap();
        assert_eq!(dp.reasons().unwrap().len(), reason::COUNT as usize);
        drop(dp);
        assert!(link_shown().contains("prog/xdp"));

        // a restarted agent adopts link and maps; only the ring is rewritten (and flipped)
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        assert!(dp.adopted());
        assert_eq!(dp.applied().services.len(), 1);
        assert_eq!(dp.maps().settings().unwrap().lease_deadline_ns, 7);
        assert_eq!(dp.apply(&desired).unwrap(), 2);
        assert_eq!(dp.apply(&desired).unwrap(), 0);
        let report = dp.collect_garbage(&GcPolicy::default()).unwrap();
        assert_eq!(report.scanned, 0);

        // a config asking for other map sizes is refused while the pins exist
        let mut bigger = opts.clone();
        bigger.limits.flows *= 2;
        drop(dp);
        let err = format!("{:#}", dataplane::Dataplane::open(&bigger).err().unwrap());
        assert!(
            err.contains("flows") && err.contains("lbd stop --detach"),
            "{err}"
        );

        // stop --detach
        dataplane::Dataplane::open(&opts).unwrap().detach().unwrap();
        // The kernel releases the link once its last reference is gone,
        // which may trail the unpin by a moment.
        let deadline = Instant::now() + bounds::KERNEL_SETTLES;
        while link_shown().contains("prog/xdp") {
            assert!(
                Instant::now() < deadline,
                "the program is still attached {:?} after detach",
                bounds::KERNEL_SETTLES
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    tear_down(pair, Some(fs));
}

/// The VRRP thread's `Lease` and the plan share `settings[0]`: each writes
/// its own fields and keeps the other's, and a restarted agent finds the
/// lease where the dead one left it.
#[test]
fn lease_and_apply_keep_each_others_fields() {
    let pair = VethPair::new("dplea").unwrap();
    let fs = PrivateBpffs::mount("lease").unwrap();
    let root = fs.path().to_path_buf();
    within(&pair.a, move || {
        let opts = dataplane::DataplaneOptions {
            node: "lblease".into(),
            iface: A_IFACE.into(),
            mode: AttachMode::Native,
            bpffs: root.clone(),
            limits: small_limits(),
            object: lb_userspace::objects::LB,
        };
        let settings = |min: u16| Settings {
            snat_port_min: min,
            snat_port_max: min + 999,
            flags: lb_common::settings_flags::LEASE,
            lease_deadline_ns: 0,
            ..Default::default()
        };
        let desired = |min: u16| DesiredState {
            settings: settings(min),
            services: vec![service(1, &[1, 2], opts.limits.ring_size)],
            local_addrs: vec![(ip(192, 0, 2, 10), 7)],
        };
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        dp.apply(&desired(61000)).unwrap();
        let lease = dataplane::Lease::open_in(dp.pins()).unwrap();
        assert_eq!(lease.remaining().unwrap(), None);
        lease.renew(Duration::from_secs(20)).unwrap();
        let deadline = dp.maps().settings().unwrap().lease_deadline_ns;
        let now = dataplane::lease::monotonic_ns();
        let left = Duration::from_nanos(deadline.saturating_sub(now));
        assert!(
            bounds::lease_left_after_renew(Duration::from_secs(20)).contains(&left),
            "{left:?} left of a 20 s lease just renewed"
        );

        // the plan changes the SNAT range: the lease stays
        assert_eq!(dp.apply(&desired(62000)).unwrap(), 1);
        let row = dp.maps().settings().unwrap();
        assert_eq!(
            row,
            Settings {
                lease_deadline_ns: deadline,
                ..settings(62000)
            }
        );
        // nothing else to write: the renewed deadline is no difference
        lease.renew(Duration::from_secs(25)).unwrap();
        assert_eq!(dp.apply(&desired(62000)).unwrap(), 0);

        // a restarted agent adopts the maps and the lease with them
        drop(dp);
        let mut dp = dataplane::Dataplane::open(&opts).unwrap();
        let left = lease.remaining().unwrap().unwrap();
        let least = Duration::from_secs(25) - bounds::AGENT_RESTART;
        assert!(
            left > least,
            "{left:?} left of a 25 s lease after a restart"
        );
        assert_eq!(
            dp.apply(&desired(63000)).unwrap(),
            3,
            "settings, and the ring rewritten and flipped after adoption"
        );
        assert!(lease.remaining().unwrap().unwrap() > least);

        // expire keeps the plan's fields
        lease.expire().unwrap();
        assert_eq!(lease.remaining().unwrap(), None);
        assert_eq!(dp.maps().settings().unwrap(), settings(63000));
        drop(lease);
        dp.detach().unwrap();
    });
    tear_down(pair, Some(fs));
}
