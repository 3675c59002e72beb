//! VRRP smoke lab: two lbd nodes run one VRRPv2 instance (unicast, AH,
//! xdp-attached +2) for the lab VIP, lb1 at priority 101 and lb2 at 100.
//!
//! (a) lb1 becomes master and holds the VIP (/32 on eth0), lb2 is backup
//!     and holds none; `lbd status` says so (effective priorities 103 and
//!     102, lb2 follows 192.0.2.2) and a client reaches the VIP;
//! (b) SIGTERM on lb1: it resigns (priority 0), so lb2 is master within
//!     about its skew time (bound from lab::bounds, measured), holds
//!     the VIP, and the client reaches the VIP through it; lb1 holds none;
//! (c) lb1 started again preempts: master again with the VIP, lb2 backup
//!     without it;
//! (d) kill -9 of lb1 and a restart within the master-down interval: the
//!     new agent resumes as master (fresh lease, VIP in place), lb2 logs
//!     no transition and drops none of its adverts (AH sequence numbers
//!     start above the old agent's);
//! (e) a reload changing [[vrrp]] is refused;
//! (f) kill -9 of the master and `lbd stop`: its VIP goes at once, lb2 is
//!     master within the master-down bound (measured);
//! (g) lb1 back preempts (no resume: the lease was ended); detaching its
//!     XDP link (xdp-attached +2 fails) hands the VIP to lb2;
//! (h) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd`). Fails, not skips, without either.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::lab::vrrp::{self, InstanceView};
use lb_tests::lab::{Lab, ServiceConfig, assert_nothing_left, bounds, topology};

/// A takeover after a priority-0 advert: see [`bounds::GRACEFUL_TAKEOVER`].
fn graceful_takeover_bound() -> Duration {
    bounds::protocol(bounds::GRACEFUL_TAKEOVER)
}

#[test]
fn lab_vrrp_smoke() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_vrrp_smoke must run as root"
    );
    let lab = Lab::builder("vs")
        .lb_nodes(2)
        .backends(2)
        .client_addrs(4)
        .add_vips(false)
        .build()
        .expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pins = [lab.lbd_pin_dir(1), lab.lbd_pin_dir(2)];
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = lab.vip();
    let target = SocketAddrV4::new(vip, 80);
    let service = ServiceConfig::tcp("web", vip, 80, lab.backend_configs(80, &[]));
    let mut lbd_config = lab.lbd_config(vec![service]);
    let mut instance = lab.vrrp_config("vip", 51, &[vip], &[101, 100]);
    instance.auth = Some(vrrp::AuthConfig::ah("smoke"));
    instance.garp = Some(vrrp::GarpConfig {
        count: 3,
        interval: "100ms".into(),
        delay: "0s".into(),
    });
    instance.tracks.push(vrrp::TrackConfig::xdp_attached(2));
    lbd_config.vrrp.push(instance);
    let config = lab
        .write_config("lbd.toml", &lbd_config)
        .expect("config written");

    // (a) election.
    let mut lb1 = lab.start_lbd(1, &config).expect("lb1 starts");
    let mut lb2 = lab.start_lbd(2, &config).expect("lb2 starts");
    lb1.wait_for_log(Duration::from_secs(20), |log| {
        log.contains("VRRP vip: backup -> master (master down), priority 103")
    })
    .expect("lb1 becomes master");
    lb2.wait_for_log(Duration::from_secs(5), |log| {
        log.contains("VRRP vip: initialize -> backup (startup), priority 102")
    })
    .expect("lb2 is backup");
    assert!(vip_held(&lab, "lb1", vip, true), "the master holds the VIP");
    assert!(vip_held(&lab, "lb2", vip, false), "the backup holds no VIP");
    let s1 = vrrp_status(&lab, 1);
    assert_eq!(s1.state, "master", "{s1:?}");
    assert_eq!((s1.priority, s1.base_priority), (103, 101));
    assert_eq!(s1.master, Some(topology::lb_front_addr(1)));
    assert!(s1.adverts_sent >= 1, "{s1:?}");
    let s2 = vrrp_status(&lab, 2);
    assert_eq!(s2.state, "backup", "{s2:?}");
    assert_eq!(s2.priority, 102);
    assert_eq!(s2.master, Some(topology::lb_front_addr(1)));
    assert!(s2.adverts_received >= 1, "{s2:?}");
    assert_eq!(s2.drops.len(), 0, "{s2:?}");
    lab.wait_for_service(&mut lb1, target, Duration::from_secs(10))
        .expect("the VIP answers through lb1");

    // (b) graceful stop of the master.
    let signalled = Instant::now();
    lb1.stop(Duration::from_secs(10))
        .expect("lb1 stops on SIGTERM");
    lb2.wait_for_log(Duration::from_secs(10), |log| {
        log.contains("VRRP vip: backup -> master (peer resigned), priority 102")
    })
    .expect("lb2 takes over");
    // Within one log poll (10 ms) of the takeover.
    let takeover = signalled.elapsed();
    eprintln!("graceful takeover: {takeover:.2?} from SIGTERM");
    assert!(
        takeover < graceful_takeover_bound(),
        "takeover took {takeover:?}"
    );
    let log1 = lb1.log();
    assert!(
        log1.contains("VRRP vip: master -> initialize (shutdown), priority 103"),
        "{log1}"
    );
    assert!(log1.contains("VRRP handover done"), "{log1}");
    assert!(
        vip_held(&lab, "lb1", vip, false),
        "a stopped master keeps no VIP"
    );
    assert!(
        vip_held(&lab, "lb2", vip, true),
        "the new master holds the VIP"
    );
    lab.wait_for_service(&mut lb2, target, Duration::from_secs(10))
        .expect("the VIP answers through lb2");

    // (c) the higher priority returns and preempts.
    let mut lb1 = lab.start_lbd(1, &config).expect("lb1 starts again");
    lb1.wait_for_log(Duration::from_secs(20), |log| {
        log.contains("VRRP vip: backup -> master (master down), priority 103")
    })
    .expect("lb1 preempts");
    lb2.wait_for_log(Duration::from_secs(5), |log| {
        log.contains("VRRP vip: master -> backup (higher priority), priority 102")
    })
    .expect("lb2 steps back");
    assert!(vip_held(&lab, "lb1", vip, true));
    assert!(vip_held(&lab, "lb2", vip, false));
    lab.wait_for_service(&mut lb1, target, Duration::from_secs(10))
        .expect("the VIP answers through lb1 again");
    assert_eq!(vrrp_status(&lab, 2).state, "backup");

    // (d) kill -9 of the master and a restart well within master-down
    // (3.6 s): the new agent finds a fresh lease and the VIP, resumes as
    // master, and lb2 never takes over.
    let lb2_log_before = lb2.log();
    lb1.signal(libc::SIGKILL).expect("lb1 killed");
    drop(lb1);
    let mut lb1 = lab.start_lbd(1, &config).expect("lb1 restarts");
    lb1.wait_for_log(Duration::from_secs(5), |log| {
        log.contains("VRRP vip: initialize -> master (resumed with a fresh lease), priority 103")
    })
    .expect("lb1 resumes as master");
    std::thread::sleep(Duration::from_secs(4));
    lb1.check_running().expect("lb1 keeps running");
    let lb2_new = lb2.log()[lb2_log_before.len()..].to_string();
    assert!(
        !lb2_new.contains("VRRP vip:"),
        "lb2 saw no transition: {lb2_new}"
    );
    assert!(vip_held(&lab, "lb1", vip, true) && vip_held(&lab, "lb2", vip, false));
    let s1 = vrrp_status(&lab, 1);
    assert_eq!(s1.state, "master", "{s1:?}");
    let s2 = vrrp_status(&lab, 2);
    assert_eq!(s2.state, "backup", "{s2:?}");
    assert_eq!(
        s2.drops.len(),
        0,
        "lb2 accepted every advert of the resumed master (no AH replay): {s2:?}"
    );
    lab.wait_for_service(&mut lb1, target, Duration::from_secs(10))
        .expect("the VIP answers through the resumed lb1");

    // (e) a reload that changes [[vrrp]] is refused; the instance runs on.
    let original = std::fs::read_to_string(&config).unwrap();
    let mut changed = lbd_config.clone();
    changed.vrrp[0].priority.insert(lab.lb_node_name(2), 110);
    lab.write_config("lbd.toml", &changed).unwrap();
    lb2.signal(libc::SIGHUP).expect("lb2 reload");
    lb2.wait_for_log(Duration::from_secs(5), |log| {
        log.contains("reload refused") && log.contains("changing [[vrrp]] needs a restart")
    })
    .expect("lb2 refuses the VRRP change");
    std::fs::write(&config, &original).unwrap();
    assert_eq!(vrrp_status(&lab, 2).priority, 102);

    // (f) kill -9 of the master, then `lbd stop` (systemd's ExecStopPost):
    // the VIP goes at once, lb2 takes over within master-down.
    let lb2_log_before = lb2.log();
    lb1.signal(libc::SIGKILL).expect("lb1 killed");
    let killed = Instant::now();
    drop(lb1);
    lab.lbd_command(1, &["stop", "--config", config.to_str().unwrap()])
        .expect("lbd stop runs after the agent died");
    assert!(
        vip_held(&lab, "lb1", vip, false),
        "lbd stop removed the VIP"
    );
    lb2.wait_for_log(Duration::from_secs(10), |log| {
        log[lb2_log_before.len()..]
            .contains("VRRP vip: backup -> master (master down), priority 102")
    })
    .expect("lb2 takes over from the dead master");
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:.2?}");
    // lb2 runs at 102 (100 + xdp-attached 2).
    let bound = bounds::protocol(vrrp::master_down(102, Duration::from_secs(1)));
    assert!(takeover < bound, "{takeover:?}, bound {bound:?}");
    assert!(vip_held(&lab, "lb2", vip, true));

    // (g) lb1 back (lease ended by `lbd stop`: no resume) preempts; then
    // its XDP link is detached: xdp-attached fails, its priority falls to
    // 101 and lb2 (102) takes the VIP.
    let mut lb1 = lab.start_lbd(1, &config).expect("lb1 starts once more");
    lb1.wait_for_log(Duration::from_secs(20), |log| {
        log.contains("VRRP vip: backup -> master (master down), priority 103")
    })
    .expect("lb1 preempts again");
    assert!(
        !lb1.log().contains("resumed"),
        "an ended lease never resumes"
    );
    let link = find_link_pin(&pins[0]);
    lab.exec_in(
        "lb1",
        &[
            "bpftool",
            "link",
            "detach",
            "pinned",
            link.to_str().unwrap(),
        ],
    )
    .expect("bpftool detaches lb1's XDP link");
    lb1.wait_for_log(Duration::from_secs(10), |log| {
        log.contains("VRRP vip: master -> backup (higher priority), priority 101")
    })
    .expect("lb1 steps back once its program is detached");
    assert!(vip_held(&lab, "lb2", vip, true) && vip_held(&lab, "lb1", vip, false));

    // (h)
    drop((lb1, lb2));
    lab.teardown().expect("teardown");
    for pin in &pins {
        assert_nothing_left(&prefix, pin);
    }
}

/// The pinned XDP link under a node's pin directory.
fn find_link_pin(dir: &Path) -> std::path::PathBuf {
    for entry in std::fs::read_dir(dir).expect("pin directory exists") {
        let candidate = entry.unwrap().path().join("link");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("no pinned link under {}", dir.display());
}

/// Whether `node` holds (`want`) or lacks the VIP, allowing
/// [`bounds::KERNEL_SETTLES`] for it to settle: the transition is logged
/// before the address changes.
fn vip_held(lab: &Lab, node: &str, vip: Ipv4Addr, want: bool) -> bool {
    let deadline = std::time::Instant::now() + bounds::KERNEL_SETTLES;
    loop {
        let held = !lab
            .vips_held(node, &[vip])
            .expect("ip addr runs")
            .is_empty();
        if held == want || std::time::Instant::now() >= deadline {
            return held == want;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one VRRP instance in the status of LB node `n`.
fn vrrp_status(lab: &Lab, n: usize) -> InstanceView {
    let all = vrrp::vrrp_status(&lab.lb_node_name(n)).expect("lbd answers with its status");
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

/// The same election over VRRPv3 multicast (no auth, 500 ms adverts): lb1
/// master from its interface address, lb2 backup; SIGTERM hands over.
#[test]
fn lab_vrrp_smoke_multicast_v3() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_vrrp_smoke_multicast_v3 must run as root"
    );
    let lab = Lab::builder("vm")
        .lb_nodes(2)
        .backends(1)
        .client_addrs(1)
        .add_vips(false)
        .build()
        .expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pins = [lab.lbd_pin_dir(1), lab.lbd_pin_dir(2)];
    let vip = lab.vip();
    let service = ServiceConfig::tcp("web", vip, 80, lab.backend_configs(80, &[]));
    let mut lbd_config = lab.lbd_config(vec![service]);
    let mut instance = lab.vrrp_config("mc", 52, &[vip], &[150, 100]).multicast();
    instance.advert_interval = "500ms".into();
    lbd_config.vrrp.push(instance);
    let config = lab
        .write_config("lbd.toml", &lbd_config)
        .expect("config written");
    let mut lb1 = lab.start_lbd(1, &config).expect("lb1 starts");
    let mut lb2 = lab.start_lbd(2, &config).expect("lb2 starts");
    lb1.wait_for_log(Duration::from_secs(20), |log| {
        log.contains("VRRP mc: backup -> master (master down), priority 150")
    })
    .expect("lb1 becomes master");
    // Let lb2 hear a few adverts.
    std::thread::sleep(Duration::from_secs(2));
    assert!(vip_held(&lab, "lb1", vip, true) && vip_held(&lab, "lb2", vip, false));
    let s2 = vrrp_status(&lab, 2);
    assert_eq!(s2.state, "backup", "{s2:?}");
    assert_eq!(s2.master, Some(topology::lb_front_addr(1)), "{s2:?}");
    assert!(s2.adverts_received >= 3, "{s2:?}");
    let signalled = Instant::now();
    lb1.stop(Duration::from_secs(10)).expect("lb1 stops");
    lb2.wait_for_log(Duration::from_secs(10), |log| {
        log.contains("VRRP mc: backup -> master (peer resigned), priority 100")
    })
    .expect("lb2 takes over");
    let takeover = signalled.elapsed();
    eprintln!("graceful takeover (v3, 500 ms): {takeover:.2?} from SIGTERM");
    assert!(takeover < graceful_takeover_bound(), "{takeover:?}");
    assert!(vip_held(&lab, "lb2", vip, true) && vip_held(&lab, "lb1", vip, false));
    drop((lb1, lb2));
    lab.teardown().expect("teardown");
    for pin in &pins {
        assert_nothing_left(&prefix, pin);
    }
}
