//! The master's interface is deleted and created anew (a driver reload) in
//! a two-node VRRP lab (`lab::vrrp_pair`: lb1 priority 101, lb2 100): the
//! VRRP counterpart of lab_link_changes' device re-creation. Each case is
//! run with and without preemption.
//!
//! Device away for a while: lb1 goes to FAULT (and logs it once) and lb2
//! takes the VIP; connections opened then run through lb2. Device
//! re-created at once (`Lab::recreate_link`): lb2 takes the VIP too, as
//! lb1's adverts stop while it starts VRRP again on the new device; lb1
//! may or may not have seen the device gone in between (FAULT at most
//! once).
//!
//! Either way, when a device of the same name and MAC is back, lb1 attaches
//! its XDP program and starts VRRP on it again (logged once), and the pair
//! settles as configured: with preemption lb1 takes the VIP back, without
//! it lb1 stays lb2's backup. Then new connections through whichever node
//! is master all succeed (its data path counts them); connections held
//! through lb2 echo as long as lb2 is master: to the end without
//! preemption, up to lb1's return with it (flows are not synced between
//! the nodes). lb2 takes over exactly once.
//!
//! Counted, not timed; each wait is bounded by twice the nominal VRRP time
//! plus a second. Needs root and lbd built next to this test.

use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use lb_tests::lab::topology::lb_front_addr;
use lb_tests::lab::vrrp::{InstanceView, entered, master_down};
use lb_tests::lab::vrrp_pair::{PAIR_ADVERT, PAIR_INSTANCE, PAIR_PRIORITY, VrrpPair};
use lb_tests::lab::{counters, echo_all};

const CLIENTS: usize = 20;
/// Held connections through lb2, from the last client addresses.
const HELD: usize = 10;
const REATTACHED: &str = "interface eth0: forwarding again on the new device";

fn bound(nominal: Duration) -> Duration {
    2 * nominal + Duration::from_secs(1)
}

#[test]
fn master_interface_away_then_back_with_preemption() {
    recreate_master_interface("vrrap", true, true);
}

#[test]
fn master_interface_away_then_back_without_preemption() {
    recreate_master_interface("vrran", false, true);
}

#[test]
fn master_interface_recreated_at_once_with_preemption() {
    recreate_master_interface("vrrop", true, false);
}

#[test]
fn master_interface_recreated_at_once_without_preemption() {
    recreate_master_interface("vrron", false, false);
}

/// `away`: the device stays deleted until lb2 has taken over (else it is
/// created again at once, as a driver reload does).
fn recreate_master_interface(hint: &str, preempt: bool, away: bool) {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_vrrp_link_recreate must run as root"
    );
    let mut pair = VrrpPair::new(hint, CLIENTS, preempt).expect("the pair's lab builds");
    pair.elect().expect("lb1 is elected");
    let target = pair.target();
    pair.lab
        .spread_ok(target, CLIENTS, 1, "through lb1 after the election");

    let mut held = if away {
        let mac = pair.lab.delete_link("lb1").expect("lb1's eth0 is deleted");
        let (fault, _) = pair
            .wait(
                1,
                "goes to FAULT without its device",
                bound(PAIR_ADVERT),
                InstanceView::is_fault,
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
        println!("lb1's eth0 deleted: lb1 {}", fault.state);
        lb2_takes_over(&mut pair);
        let held = through_lb2(&pair, "while lb1's device is away");
        pair.lab
            .create_link("lb1", &mac)
            .expect("lb1's eth0 is created again");
        Some(held)
    } else {
        pair.lab
            .recreate_link("lb1")
            .expect("lb1's eth0 is re-created");
        None
    };
    let agent = pair.agent(1).expect("lb1's agent runs");
    let took = agent
        .wait_for_log(Duration::from_secs(10), |log| log.contains(REATTACHED))
        .unwrap_or_else(|e| panic!("lb1 does not serve its new device: {e:#}"));
    println!("lb1's eth0 back: lbd forwarding on it {took:.2?} later");
    if !away {
        lb2_takes_over(&mut pair);
        // With preemption lb1 takes back over a master-down interval after
        // its VRRP started again: too close to lb2's takeover to send
        // traffic through lb2 in between.
        if !preempt {
            held = Some(through_lb2(&pair, "after lb1's device was re-created"));
        }
    }
    if let Some(held) = held.as_mut() {
        let lb2_view = pair.view(2).expect("lb2 answers status");
        assert!(
            lb2_view.is_master(),
            "lb2 lost mastership as soon as lb1's device was back: {lb2_view:?}"
        );
        echo_all(held, "device-back");
    }

    let lb1 = lb_front_addr(1);
    let lb2 = lb_front_addr(2);
    let settle = bound(master_down(PAIR_PRIORITY[0], PAIR_ADVERT));
    let master = if preempt {
        pair.wait(1, "preempts lb2", settle, InstanceView::is_master)
            .unwrap_or_else(|e| panic!("{e:#}"));
        pair.wait(2, "steps down", Duration::from_secs(3), |v| {
            v.is_backup() && v.master == Some(lb1)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        1
    } else {
        pair.wait(1, "backup of lb2", settle, |v| {
            v.is_backup() && v.master == Some(lb2)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        // Long enough for a preempting lb1 to have taken over.
        std::thread::sleep(settle);
        let (one, two) = (pair.view(1).unwrap(), pair.view(2).unwrap());
        assert!(
            one.is_backup() && one.master == Some(lb2) && two.is_master(),
            "without preemption lb2 stays master: lb1 {one:?}, lb2 {two:?}"
        );
        if let Some(held) = held.as_mut() {
            echo_all(held, "settled");
        }
        2
    };
    println!("settled: lb{master} master (preempt = {preempt})");
    let master_mac = pair.macs[master - 1];
    lb_tests::lab::vrrp::poll(
        "the client's ARP entry for the VIP names the master",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || Ok((pair.lab.neigh("cl", *target.ip())? == Some(master_mac)).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let before = new_flows(&pair, master);
    pair.lab
        .spread_ok(target, CLIENTS, 2, "through the master once settled");
    assert_eq!(
        new_flows(&pair, master) - before,
        2 * CLIENTS as u64,
        "lb{master}'s data path did not count every connection"
    );

    let log1 = pair.log(1);
    let faults = entered(&log1, PAIR_INSTANCE, "fault");
    let reattached = log1.lines().filter(|l| l.contains(REATTACHED)).count();
    println!(
        "lb1 logged:\n{}",
        log1.lines()
            .filter(|l| l.contains("interface eth0") || l.contains("VRRP"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if away {
        assert_eq!(faults, 1, "lb1 must enter FAULT once:\n{log1}");
    } else {
        // The VRRP thread looks at the link every few hundred milliseconds
        // and may not see a device that is gone for a few milliseconds.
        assert!(faults <= 1, "lb1 entered FAULT {faults} times:\n{log1}");
        // Stopping VRRP for the new device, the master resigns with a
        // priority 0 advert, sent through its socket bound to the old one.
        assert!(
            !log1.contains("sending a VRRP advert"),
            "lb1 could not send its adverts while its device was re-created:\n{log1}"
        );
    }
    assert_eq!(reattached, 1, "lb1 must reattach once:\n{log1}");
    assert_eq!(
        entered(&pair.log(2), PAIR_INSTANCE, "master"),
        1,
        "lb2 took over more than once"
    );
    drop(held);
    pair.finish().expect("teardown is clean");
}

/// New flows node `n`'s data path counted over all backends.
fn new_flows(pair: &VrrpPair, n: usize) -> u64 {
    counters::read_pinned(&pair.lab.lbd_pin_dir(n))
        .expect("the pinned counters are readable")
        .backends
        .iter()
        .map(|b| b.stats.new_flows)
        .sum()
}

/// Waits until lb2 is master and the client's ARP entry for the VIP names
/// it (lb2's gratuitous ARP).
fn lb2_takes_over(pair: &mut VrrpPair) {
    let takeover = bound(master_down(PAIR_PRIORITY[1], PAIR_ADVERT));
    pair.wait(2, "takes over", takeover, InstanceView::is_master)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (vip, lb2_mac) = (*pair.target().ip(), pair.macs[1]);
    let (_, moved) = lb_tests::lab::vrrp::poll(
        "the client's ARP entry for the VIP names lb2",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || Ok((pair.lab.neigh("cl", vip)? == Some(lb2_mac)).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("lb2 master; the client's ARP entry moved to it {moved:.2?} later");
}

/// New connections through lb2 all succeed (its data path counts them);
/// returns [`HELD`] more, held open through it.
fn through_lb2(pair: &VrrpPair, when: &str) -> Vec<(Ipv4Addr, TcpStream)> {
    let target = pair.target();
    let before = new_flows(pair, 2);
    pair.lab
        .spread_ok(target, CLIENTS, 1, &format!("through lb2 {when}"));
    assert_eq!(
        new_flows(pair, 2) - before,
        CLIENTS as u64,
        "lb2's data path did not count every connection {when}"
    );
    let sources: Vec<_> = pair
        .lab
        .client_addrs()
        .into_iter()
        .rev()
        .take(HELD)
        .collect();
    let mut held = pair
        .lab
        .open_held(sources, target, Duration::from_secs(5))
        .expect("connections through lb2 open");
    echo_all(&mut held, "through-lb2");
    held
}
