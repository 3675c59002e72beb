//! VRRP smoke lab: two lbd nodes run one VRRPv2 instance (unicast, AH,
//! xdp-attached +2) for the lab VIP, lb1 at priority 101 and lb2 at 100.
//!
//! (a) lb1 becomes master and holds the VIP (/32 on eth0), lb2 is backup
//!     and holds none; `lbd status` says so (effective priorities 103 and
//!     102, lb2 follows 192.0.2.2) and a client reaches the VIP;
//! (b) SIGTERM on lb1: it resigns (priority 0), so lb2 is master within
//!     about its skew time (bound 2 s from the signal, measured), holds
//!     the VIP, and the client reaches the VIP through it; lb1 holds none;
//! (c) lb1 started again preempts: master again with the VIP, lb2 backup
//!     without it;
//! (d) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd`). Fails, not skips, without either.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, ServiceConfig, assert_nothing_left, topology};

/// A takeover after a priority-0 advert waits only the backup's skew time
/// (0.61 s at priority 102); the rest is the old master's own stop.
const GRACEFUL_TAKEOVER_BOUND: Duration = Duration::from_secs(2);

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
    let (lb1_name, lb2_name) = (lab.lb_node_name(1), lab.lb_node_name(2));
    let (lb1_addr, lb2_addr) = (topology::lb_front_addr(1), topology::lb_front_addr(2));
    let service = ServiceConfig::tcp("web", vip, 80, lab.backend_configs(80, &[]));
    let mut text = lab
        .lbd_config(vec![service])
        .render()
        .expect("config renders");
    text.push_str(&format!(
        r#"
[[vrrp]]
name = "vip"
virtual_router_id = 51
priority = {{ "{lb1_name}" = 101, "{lb2_name}" = 100 }}
advert_interval = "1s"
auth = {{ type = "ah", password = "smoke" }}
unicast_peers = ["{lb1_addr}", "{lb2_addr}"]
unicast_src = {{ "{lb1_name}" = "{lb1_addr}", "{lb2_name}" = "{lb2_addr}" }}
vips = ["{vip}"]
garp = {{ count = 3, interval = "100ms", delay = "0s" }}

[[vrrp.track]]
kind = "xdp-attached"
weight = 2
"#
    ));
    let config = lab.dir().join("lbd.toml");
    std::fs::write(&config, text).expect("config written");

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
    assert!(holds_vip(&lab, "lb1", vip), "the master holds the VIP");
    assert!(!holds_vip(&lab, "lb2", vip), "the backup holds no VIP");
    let s1 = vrrp_status(&lab, 1, &config);
    assert_eq!(s1["state"], "master", "{s1}");
    assert_eq!(
        (s1["priority"].as_u64(), s1["base_priority"].as_u64()),
        (Some(103), Some(101))
    );
    assert_eq!(s1["master"], lb1_addr.to_string());
    assert!(s1["adverts_sent"].as_u64().unwrap() >= 1, "{s1}");
    let s2 = vrrp_status(&lab, 2, &config);
    assert_eq!(s2["state"], "backup", "{s2}");
    assert_eq!(s2["priority"].as_u64(), Some(102));
    assert_eq!(s2["master"], lb1_addr.to_string());
    assert!(s2["adverts_received"].as_u64().unwrap() >= 1, "{s2}");
    assert_eq!(s2["drops"].as_object().map(|d| d.len()), Some(0), "{s2}");
    lab.wait_for_service(&mut lb1, target, Duration::from_secs(10))
        .expect("the VIP answers through lb1");

    // (b) graceful stop of the master.
    let signalled = Instant::now();
    lb1.stop(Duration::from_secs(10))
        .expect("lb1 stops on SIGTERM");
    let took = signalled
        + lb2
            .wait_for_log(Duration::from_secs(10), |log| {
                log.contains("VRRP vip: backup -> master (peer resigned), priority 102")
            })
            .expect("lb2 takes over");
    let takeover = took.duration_since(signalled);
    eprintln!("graceful takeover: {takeover:.2?} from SIGTERM");
    assert!(
        takeover < GRACEFUL_TAKEOVER_BOUND,
        "takeover took {takeover:?}"
    );
    let log1 = lb1.log();
    assert!(
        log1.contains("VRRP vip: master -> initialize (shutdown), priority 103"),
        "{log1}"
    );
    assert!(log1.contains("VRRP handover done"), "{log1}");
    assert!(
        !holds_vip(&lab, "lb1", vip),
        "a stopped master keeps no VIP"
    );
    assert!(holds_vip(&lab, "lb2", vip), "the new master holds the VIP");
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
    assert!(holds_vip(&lab, "lb1", vip));
    assert!(!holds_vip(&lab, "lb2", vip));
    lab.wait_for_service(&mut lb1, target, Duration::from_secs(10))
        .expect("the VIP answers through lb1 again");
    assert_eq!(vrrp_status(&lab, 2, &config)["state"], "backup");

    // (d)
    drop((lb1, lb2));
    lab.teardown().expect("teardown");
    for pin in &pins {
        assert_nothing_left(&prefix, pin);
    }
}

/// Whether `vip`/32 is on `node`'s eth0.
fn holds_vip(lab: &Lab, node: &str, vip: Ipv4Addr) -> bool {
    let out = lab
        .exec_in(node, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .expect("ip addr runs");
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {vip}/32 "))
}

/// The one VRRP instance of `lbd status` on LB node `n`.
fn vrrp_status(lab: &Lab, n: usize, config: &Path) -> serde_json::Value {
    let out = lab
        .lbd_command(
            n,
            &["status", "--json", "--config", config.to_str().unwrap()],
        )
        .expect("lbd status runs");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("lbd status prints JSON");
    let vrrp = json["vrrp"].as_array().expect("a vrrp field").clone();
    assert_eq!(vrrp.len(), 1, "{json}");
    vrrp[0].clone()
}
