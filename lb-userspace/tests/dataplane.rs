//! Root tests of the data-plane layer's I/O: real BPF maps, a private bpffs,
//! XDP attach/adopt on a veth, sysctls, nftables and managed neighbours, each
//! inside network namespaces the test creates (documentation addresses only)
//! and tears down, also on failure.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData};
use lb_common::{
    BackendInfo, Flow, FlowKey, IPPROTO_TCP, ServiceKey, Settings, backend_flags, direction,
    flow_state, reason, service_flags,
};
use lb_userspace::dataplane::desired::{DesiredService, DesiredState};
use lb_userspace::dataplane::gc::{FlowTimeouts, GcPolicy};
use lb_userspace::dataplane::host::{self, PortRange};
use lb_userspace::dataplane::neigh::ManagedNeighbours;
use lb_userspace::dataplane::{self, AppliedState, AttachMode, MapSizes, Maps, PinDir, load, pins};

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth: `a` (veth0, 192.0.2.1/24, route to
/// 198.51.100.0/24 via 192.0.2.2) and `b` (veth1, 192.0.2.2/24).
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            a: format!("lbdp-{tag}-a-{pid}"),
            b: format!("lbdp-{tag}-b-{pid}"),
        };
        run(&["ip", "netns", "add", &lab.a]);
        run(&["ip", "netns", "add", &lab.b]);
        run(&[
            "ip", "-n", &lab.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            "netns", &lab.b,
        ]);
        run(&[
            "ip",
            "-n",
            &lab.a,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "veth0",
        ]);
        run(&[
            "ip",
            "-n",
            &lab.b,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            "veth1",
        ]);
        for (ns, dev) in [(&lab.a, "veth0"), (&lab.b, "veth1")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip",
            "-n",
            &lab.a,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.2",
        ]);
        lab
    }

    /// Runs `f` on a thread that has entered namespace `ns`.
    fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns file");
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn sysctl(&self, key: &str) -> String {
        run(&[
            "nsenter",
            &format!("--net=/run/netns/{}", self.a),
            "sysctl",
            "-n",
            key,
        ])
        .trim()
        .to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A private bpffs instance, unmounted on drop (with everything pinned in it).
struct Bpffs(PathBuf);

impl Bpffs {
    fn new(tag: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("lbdp-bpffs-{tag}-{}", std::process::id()));
        let fs = Bpffs(dir);
        pins::ensure_bpffs(&fs.0).expect("mount bpffs");
        assert!(pins::is_bpffs(&fs.0).unwrap());
        fs
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
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
    let fs = Bpffs::new("check");
    let pins = PinDir::new(&fs.0, "lbdp").unwrap();
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
    assert!(pins::remove_all(&fs.0, "lbdp").unwrap());
    assert!(!pins.path().exists());
}

#[test]
fn attach_pin_adopt_and_detach_on_a_veth() {
    let lab = Lab::new("att");
    let fs = Bpffs::new("att");
    let root = fs.0.clone();
    let ns = lab.a.clone();
    Lab::within(&ns, move || {
        let pins = PinDir::new(&root, "lbdp").unwrap();
        pins.create().unwrap();
        let limits = small_limits();
        let mut first = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let attached = load::attach(&mut first, &pins, "veth0", AttachMode::Native).unwrap();
        assert!(matches!(attached, dataplane::Attachment::Fresh(_)));
        let ifindex = load::if_index("veth0").unwrap();
        assert_eq!(load::pinned_link_ifindex(&pins.link()).unwrap(), ifindex);
        // the agent goes away: the pinned link keeps the program attached
        drop(attached);
        drop(first);
        let shown = run(&["ip", "link", "show", "dev", "veth0"]);
        assert!(
            shown.contains("prog/xdp"),
            "program gone after the loader exited: {shown}"
        );

        // a new agent adopts the link and swaps its program in
        let mut second = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let adopted = load::attach(&mut second, &pins, "veth0", AttachMode::Native).unwrap();
        assert!(matches!(adopted, dataplane::Attachment::Adopted));
        // adopting for another interface is refused
        let mut third = load::load(lb_userspace::objects::LB, &pins, &limits).unwrap();
        let err = format!(
            "{:#}",
            load::attach(&mut third, &pins, "lo", AttachMode::Native).unwrap_err()
        );
        assert!(
            err.contains("veth0") && err.contains("lbd stop --detach"),
            "{err}"
        );
        drop((second, third, adopted));
        assert!(run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp"));

        // stop --detach: removing the pins detaches the program
        assert!(pins::remove_all(&root, "lbdp").unwrap());
        let deadline = Instant::now() + Duration::from_secs(2);
        while run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp") {
            assert!(
                Instant::now() < deadline,
                "program still attached after the pins were removed: {}\n{}",
                run(&["ip", "link", "show", "dev", "veth0"]),
                run(&["bpftool", "link", "show"])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn host_setup_inside_a_namespace() {
    let lab = Lab::new("host");
    let host_reserved =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap();
    let ns = lab.a.clone();
    Lab::within(&ns, move || {
        // overlapping SNAT range refused, disjoint accepted
        let err = host::check_snat_against_host(PortRange::new(40000, 40999).unwrap()).unwrap_err();
        assert!(err.to_string().contains("ip_local_port_range"), "{err}");
        let snat = PortRange::new(61000, 61999).unwrap();
        host::check_snat_against_host(snat).unwrap();

        std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "8404").unwrap();
        host::prepare("lbdp-node", "veth0", snat).unwrap();
        host::prepare("lbdp-node", "veth0", snat).unwrap(); // idempotent
        assert!(host::forwarding("veth0").unwrap());
    });
    assert_eq!(lab.sysctl("net.ipv4.conf.veth0.forwarding"), "1");
    assert_eq!(
        lab.sysctl("net.ipv4.ip_forward"),
        "0",
        "the global switch stays off"
    );
    assert_eq!(
        lab.sysctl("net.ipv4.ip_local_reserved_ports"),
        "8404,61000-61999"
    );
    let rules = run(&[
        "ip",
        "netns",
        "exec",
        &lab.a,
        "nft",
        "list",
        "table",
        "inet",
        "lbd_lbdp_node",
    ]);
    assert!(rules.contains("hook forward"), "{rules}");
    assert_eq!(rules.matches("iifname \"veth0\"").count(), 1, "{rules}");
    // nothing leaked into the host's namespace
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap(),
        host_reserved
    );

    Lab::within(&lab.a.clone(), || {
        host::remove_forward_drop("lbdp-node").unwrap();
        host::remove_forward_drop("lbdp-node").unwrap();
        host::set_forwarding("veth0", false).unwrap();
    });
    let tables = run(&["ip", "netns", "exec", &lab.a, "nft", "list", "tables"]);
    assert!(!tables.contains("lbd_lbdp_node"), "{tables}");
    assert_eq!(lab.sysctl("net.ipv4.conf.veth0.forwarding"), "0");
}

#[test]
fn managed_neighbours_follow_the_backends() {
    let lab = Lab::new("neigh");
    let show = |lab: &Lab| run(&["ip", "-n", &lab.a, "-d", "neigh", "show", "dev", "veth0"]);
    let ns = lab.a.clone();
    let hops = Lab::within(&ns, || {
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
    assert!(
        hops.values().all(|h| h.ip == Ipv4Addr::new(192, 0, 2, 2)),
        "{hops:?}"
    );
    let listing = show(&lab);
    let line = listing
        .lines()
        .find(|l| l.starts_with("192.0.2.2 "))
        .unwrap_or_else(|| panic!("no entry: {listing}"));
    assert!(line.contains("managed"), "{line}");
    // the kernel resolves it by itself: namespace b answers the ARP request
    let t = Instant::now();
    while !show(&lab).contains("lladdr") {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "managed entry never resolved: {}",
            show(&lab)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("managed entry resolved after {:?}", t.elapsed());

    // backends gone: the entry this agent made goes too
    Lab::within(&ns, || {
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
    assert!(!show(&lab).contains("managed"), "{}", show(&lab));
}
#[test]
fn dataplane_open_apply_adopt_detach() {
    let lab = Lab::new("open");
    let fs = Bpffs::new("open");
    let root = fs.0.clone();
    Lab::within(&lab.a.clone(), move || {
        let opts = dataplane::DataplaneOptions {
            node: "lbdp".into(),
            iface: "veth0".into(),
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
        assert!(run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp"));

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
        let detached = (0..50).any(|_| {
            let shown = run(&["ip", "link", "show", "dev", "veth0"]).contains("prog/xdp");
            if shown {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            !shown
        });
        assert!(detached, "the program is still attached 5 s after detach");
    });
}

/// The VRRP thread's `Lease` and the plan share `settings[0]`: each writes
/// its own fields and keeps the other's, and a restarted agent finds the
/// lease where the dead one left it.
#[test]
fn lease_and_apply_keep_each_others_fields() {
    let lab = Lab::new("lease");
    let fs = Bpffs::new("lease");
    let root = fs.0.clone();
    Lab::within(&lab.a.clone(), move || {
        let opts = dataplane::DataplaneOptions {
            node: "lblease".into(),
            iface: "veth0".into(),
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
        assert!(deadline > now + 19_000_000_000 && deadline <= now + 20_000_000_000);

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
        // Generous: loading the program takes seconds on a busy machine.
        assert!(left > Duration::from_secs(15), "{left:?}");
        assert_eq!(
            dp.apply(&desired(63000)).unwrap(),
            3,
            "settings, and the ring rewritten and flipped after adoption"
        );
        assert!(lease.remaining().unwrap().unwrap() > Duration::from_secs(15));

        // expire keeps the plan's fields
        lease.expire().unwrap();
        assert_eq!(lease.remaining().unwrap(), None);
        assert_eq!(dp.maps().settings().unwrap(), settings(63000));
        drop(lease);
        dp.detach().unwrap();
    });
}
