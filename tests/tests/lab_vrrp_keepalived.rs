//! Interop with Debian's keepalived 2.2 (issue 4): lbd on lb1, keepalived
//! on lb2, one VRRP instance with two VIPs, in each mode an operator would
//! migrate from: VRRPv2 unicast with AH, VRRPv2 unicast with PASS, VRRPv3
//! multicast. Per mode:
//! 1. lbd (101) master, keepalived (100) backup;
//! 2. SIGTERM lbd: keepalived master within the bound of its skew time
//!    (`lab::bounds::protocol`);
//! 3. lbd back: it preempts, keepalived backup again;
//!    3b. kill -9 lbd and restart it at once: it resumes as master from
//!    its lease, keepalived never leaves BACKUP;
//! 4. kill -9 lbd: keepalived master within the bound of master-down;
//! 5. lbd restarted with priority 90: keepalived stays master, lbd backup;
//! 6. SIGTERM keepalived: lbd master within the bound of its skew time.
//!
//! After each step exactly one node holds the VIPs: the holder has them on
//! eth0 and is the only one answering ARP for them (after the kill -9 the
//! dead lbd's addresses stay, its expired lease keeps them silent). Neither
//! side may reject the other's packets: keepalived's log has none of its
//! complaints, lbd's `vrrp` drop counters stay 0.
//!
//! Run as root after `cargo build -p lb-userspace --bin lbd`:
//! `cargo test -p lb-tests --test lab_vrrp_keepalived -- --test-threads=1 --nocapture`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use lb_tests::lab::arp::mac_text;
use lb_tests::lab::keepalived::{Auth, AuthKind, Keepalived, VrrpSetup};
use lb_tests::lab::vrrp::{self, InstanceView};
use lb_tests::lab::{Lab, Lbd, ServiceConfig, assert_nothing_left, bounds};

const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)];
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VRID: u8 = 51;
/// How long to listen for ARP replies.
const ARP_LISTEN: Duration = Duration::from_millis(300);

fn lab() -> Lab {
    Lab::builder("kad")
        .lb_nodes(2)
        .backends(1)
        .client_addrs(1)
        .vips(&VIPS)
        .add_vips(false)
        .build()
        .expect("the lab builds (root, iproute2, bpffs)")
}

/// lbd's config: the lab's nodes, one service on the first VIP, and the
/// `[[vrrp]]` table rendered from the same settings as keepalived's file.
fn write_lbd_config(lab: &Lab, setup: &VrrpSetup) -> PathBuf {
    let service = ServiceConfig::tcp("web", VIPS[0], 80, lab.backend_configs(80, &[]));
    let text = lab.lbd_config(vec![service]).render().unwrap() + &setup.lbd_toml();
    let path = lab.dir().join("lbd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// lb1's (lbd's) one VRRP instance.
fn vrrp_status(lbd: &Lbd) -> Result<InstanceView> {
    vrrp::first_instance(lbd.node())
}

/// Fails unless lbd's drop counters are all zero: it accepted every one of
/// keepalived's packets.
fn assert_no_drops(status: &InstanceView, step: &str) {
    let nonzero: Vec<_> = status.drops.iter().filter(|(_, n)| **n != 0).collect();
    assert!(
        nonzero.is_empty(),
        "{step}: lbd dropped keepalived's packets: {nonzero:?}"
    );
}

/// Exactly one node holds the VIPs: `holder` (1 or 2) has all of them on
/// eth0 and is the only one answering ARP; the other has none on eth0,
/// unless it is a killed lbd (`stale_other`), whose addresses stay.
fn assert_holder(lab: &Lab, holder: usize, stale_other: bool, step: &str) {
    let other = 3 - holder;
    let (h, o) = (format!("lb{holder}"), format!("lb{other}"));
    let held = lab.vips_held(&h, &VIPS).unwrap();
    assert_eq!(held, VIPS, "{step}: {h} should hold every VIP");
    if !stale_other {
        let left = lab.vips_held(&o, &VIPS).unwrap();
        assert!(left.is_empty(), "{step}: {o} still has {left:?} on eth0");
    }
    let mac = lab.mac(&h).unwrap();
    for vip in VIPS {
        let answers = lab.arp_who_has("cl", CLIENT, vip, ARP_LISTEN).unwrap();
        assert_eq!(
            answers.iter().map(mac_text).collect::<Vec<_>>(),
            [mac_text(&mac)],
            "{step}: ARP for {vip} should be answered by {h} alone"
        );
    }
}

/// How long until lb1 no longer answers ARP for the first VIP (`None`:
/// still answering after `within`).
fn lb1_silent_after(lab: &Lab, within: Duration) -> Option<Duration> {
    let lb1 = lab.mac("lb1").unwrap();
    let start = Instant::now();
    while start.elapsed() <= within {
        let answers = lab
            .arp_who_has("cl", CLIENT, VIPS[0], Duration::from_millis(50))
            .unwrap();
        if !answers.contains(&lb1) {
            return Some(start.elapsed());
        }
    }
    None
}

fn assert_keepalived_content(ka: &Keepalived, step: &str) {
    let complaints = ka.protocol_complaints();
    assert!(
        complaints.is_empty(),
        "{step}: keepalived rejected lbd's packets:\n{}",
        complaints.join("\n")
    );
}

fn run_mode(mode: &str, version: u8, auth: Option<Auth>, interval: Duration, unicast: bool) {
    let lab = lab();
    let lb1 = lab.lb_node_name(1);
    let mut setup = VrrpSetup::for_lab(&lab, VRID, version, auth, interval, unicast, &[101, 100]);
    let config = write_lbd_config(&lab, &setup);
    let ka_down = setup.master_down(100);
    let lbd_down = setup.master_down(101);
    // Start-up: XDP load, then at most one master-down wait each.
    let start_bound = Duration::from_secs(5) + 2 * lbd_down;

    // 1. lbd master, keepalived backup.
    let mut ka = lab.start_keepalived(2, &setup).unwrap();
    let mut lbd = lab.start_lbd(1, &config).unwrap();
    vrrp::wait_for_state(&mut lbd, "master", start_bound).unwrap();
    ka.wait_for_state("BACKUP", start_bound).unwrap();
    std::thread::sleep(2 * interval);
    let status = vrrp_status(&lbd).unwrap();
    assert_eq!(status.state, "master", "1: lbd stays master: {status:?}");
    assert_eq!(
        ka.state().as_deref(),
        Some("BACKUP"),
        "1: keepalived backup"
    );
    assert_no_drops(&status, "1");
    assert_holder(&lab, 1, false, "1 (lbd master)");

    // 2. SIGTERM lbd: priority 0 advert, keepalived takes over at its skew.
    let bound = bounds::protocol(setup.skew(100));
    let t = Instant::now();
    lbd.signal(libc::SIGTERM).unwrap();
    ka.wait_for_state("MASTER", bound + Duration::from_secs(5))
        .unwrap();
    let lbd_sigterm = t.elapsed();
    let status = lbd.stop(Duration::from_secs(5)).unwrap();
    assert!(
        status.success(),
        "2: lbd exits cleanly on SIGTERM: {status}"
    );
    assert!(
        lbd_sigterm <= bound,
        "2: keepalived took {lbd_sigterm:?} after lbd's SIGTERM, bound {bound:?}"
    );
    drop(lbd);
    assert_holder(&lab, 2, false, "2 (lbd stopped)");

    // 3. lbd returns with the higher priority and preempts.
    let mut lbd = lab.start_lbd(1, &config).unwrap();
    vrrp::wait_for_state(&mut lbd, "master", start_bound).unwrap();
    ka.wait_for_state("BACKUP", Duration::from_secs(2)).unwrap();
    std::thread::sleep(2 * interval);
    let status = vrrp_status(&lbd).unwrap();
    assert_no_drops(&status, "3");
    assert_holder(&lab, 1, false, "3 (lbd preempted)");

    // 3b. kill -9 and an immediate restart: the new agent finds a fresh
    //     lease and its VIPs and resumes as master before keepalived's
    //     master-down runs out; keepalived never leaves BACKUP and accepts
    //     the new agent's adverts (with AH: sequence numbers above the
    //     killed agent's).
    let states_before = ka.states();
    let t = Instant::now();
    lbd.signal(libc::SIGKILL).unwrap();
    drop(lbd);
    let mut lbd = lab.start_lbd(1, &config).unwrap();
    vrrp::wait_for_state(&mut lbd, "master", ka_down).unwrap();
    let lbd_resume = t.elapsed();
    assert!(
        lbd.log().contains("resumed with a fresh lease"),
        "3b: lbd resumes as master from its lease; log ends with:\n{}",
        lbd.log_tail(15)
    );
    std::thread::sleep(ka_down + interval);
    assert_eq!(
        ka.states(),
        states_before,
        "3b: keepalived changed state while lbd restarted within master-down"
    );
    assert_keepalived_content(&ka, "3b");
    let status = vrrp_status(&lbd).unwrap();
    assert_eq!(status.state, "master", "3b: {status:?}");
    assert_no_drops(&status, "3b");
    assert_holder(&lab, 1, false, "3b (lbd restarted)");

    // 4. kill -9 lbd: keepalived waits out master-down.
    let bound = bounds::protocol(ka_down);
    let t = Instant::now();
    lbd.signal(libc::SIGKILL).unwrap();
    ka.wait_for_state("MASTER", bound + Duration::from_secs(5))
        .unwrap();
    let lbd_kill9 = t.elapsed();
    assert!(
        lbd_kill9 <= bound,
        "4: keepalived took {lbd_kill9:?} after kill -9 of lbd, bound {bound:?}"
    );
    drop(lbd);
    // lbd's lease ran until 3 advert intervals after its last advert, which
    // is before keepalived may take over (3 intervals plus its skew): by the
    // time keepalived is master, lb1's XDP program already drops ARP
    // requests for the VIPs, so the very first probe finds it silent.
    let overlap = lb1_silent_after(&lab, Duration::from_millis(1));
    let lbd_overlap = overlap.unwrap_or_else(|| {
        panic!("4: lb1 (lbd killed) still answered ARP for the VIPs after keepalived took over")
    });
    assert_holder(&lab, 2, true, "4 (lbd killed)");

    // 5. Reverse roles: lbd back with a lower priority stays backup (and
    //    clears the VIPs its killed predecessor left).
    setup.set_priority(&lb1, 90).unwrap();
    let config = write_lbd_config(&lab, &setup);
    let mut lbd = lab.start_lbd(1, &config).unwrap();
    let (_, status) = vrrp::wait_for_state(&mut lbd, "backup", start_bound).unwrap();
    std::thread::sleep(setup.master_down(90) + interval);
    let status_later = vrrp_status(&lbd).unwrap();
    assert_eq!(
        status_later.state, "backup",
        "5: lbd must stay backup below keepalived: {status_later:?}"
    );
    assert_eq!(
        status_later.transitions, status.transitions,
        "5: no transition while keepalived is master"
    );
    assert_eq!(
        status_later.master,
        Some(setup.member(&lab.lb_node_name(2)).unwrap().addr),
        "5: lbd follows keepalived"
    );
    assert_eq!(ka.state().as_deref(), Some("MASTER"));
    assert_no_drops(&status_later, "5");
    assert_holder(&lab, 2, false, "5 (keepalived master, lbd backup)");

    // 6. SIGTERM keepalived: its priority 0 advert hands over to lbd.
    let bound = bounds::protocol(setup.skew(90));
    let t = Instant::now();
    ka.terminate().unwrap();
    let (_, status) =
        vrrp::wait_for_state(&mut lbd, "master", bound + Duration::from_secs(5)).unwrap();
    let keepalived_sigterm = t.elapsed();
    ka.wait_exit(Duration::from_secs(5)).unwrap();
    let keepalived_exit = t.elapsed();
    assert!(
        keepalived_sigterm <= bound,
        "6: lbd took {keepalived_sigterm:?} after keepalived's SIGTERM, bound {bound:?}"
    );
    assert_no_drops(&status, "6");
    assert_holder(&lab, 1, false, "6 (keepalived stopped)");
    assert_keepalived_content(&ka, "end");

    println!(
        "{mode}: keepalived master {lbd_sigterm:?} after lbd's SIGTERM (skew {:?}), \
         {lbd_kill9:?} after kill -9 (master-down {ka_down:?}, bound {:?}), \
         lb1 silent on the first ARP probe (answer window {lbd_overlap:?}); \
         kill -9 + restart: master again {lbd_resume:?} after the kill; \
         lbd master {keepalived_sigterm:?} after keepalived's SIGTERM (skew {:?}; \
         keepalived exited after {keepalived_exit:?})",
        setup.skew(100),
        bounds::protocol(ka_down),
        setup.skew(90)
    );
    lbd.stop(Duration::from_secs(5)).unwrap();
    drop(lbd);
    drop(ka);
    let prefix = lab.prefix().to_string();
    let pins = lab.lbd_pin_dir(1);
    lab.teardown().unwrap();
    drop(lab);
    assert_nothing_left(&prefix, &pins);
}

fn password(kind: AuthKind) -> Option<Auth> {
    Some(Auth {
        kind,
        password: "Pass1234".into(),
    })
}

#[test]
fn vrrp2_unicast_ah_with_keepalived() {
    run_mode(
        "VRRPv2 unicast AH",
        2,
        password(AuthKind::Ah),
        Duration::from_secs(1),
        true,
    );
}

#[test]
fn vrrp2_unicast_pass_with_keepalived() {
    run_mode(
        "VRRPv2 unicast PASS",
        2,
        password(AuthKind::Pass),
        Duration::from_secs(1),
        true,
    );
}

#[test]
fn vrrp3_multicast_with_keepalived() {
    run_mode(
        "VRRPv3 multicast",
        3,
        None,
        Duration::from_millis(500),
        false,
    );
}

/// The harness itself: keepalived alone becomes master, holds the VIPs and
/// answers ARP for them; SIGTERM gives them up.
#[test]
fn keepalived_alone_takes_the_vips_and_gives_them_up() {
    let lab = lab();
    let setup = VrrpSetup::for_lab(
        &lab,
        VRID,
        3,
        None,
        Duration::from_millis(300),
        false,
        &[101, 100],
    );
    let mut ka = lab.start_keepalived(2, &setup).unwrap();
    let took = ka
        .wait_for_state("MASTER", setup.master_down(100) + Duration::from_secs(5))
        .unwrap();
    println!("keepalived alone: master after {took:?}");
    assert_holder(&lab, 2, false, "keepalived alone");
    ka.stop(Duration::from_secs(5)).unwrap();
    assert!(
        lab.vips_held("lb2", &VIPS).unwrap().is_empty(),
        "keepalived removes its VIPs on SIGTERM"
    );
    let answers = lab.arp_who_has("cl", CLIENT, VIPS[0], ARP_LISTEN).unwrap();
    assert!(answers.is_empty(), "nobody holds the VIP: {answers:x?}");
    assert_keepalived_content(&ka, "alone");
    drop(ka);
    let prefix = lab.prefix().to_string();
    let pins = lab.lbd_pin_dir(1);
    lab.teardown().unwrap();
    drop(lab);
    assert_nothing_left(&prefix, &pins);
}
