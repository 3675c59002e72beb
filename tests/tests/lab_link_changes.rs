//! The interface under lbd changes while it serves, in a single-node lab:
//! its MTU, its link (down and up), and the device itself (deleted and
//! created anew under the same name and MAC, as a driver reload does). An
//! XDP attachment dies with its device, so lbd must notice and attach to the
//! new one by itself.
//!
//! Counted, not timed: after each change new connections from 20 client
//! addresses all succeed and 20 connections held open since the start still
//! echo (their flow entries outlive the device); lbd logs each change once,
//! and says when it forwards again on the new device.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, Lbd, ServiceConfig, bounds, counters, echo_all};

const CLIENTS: usize = 20;

#[test]
fn lab_link_changes() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_link_changes must run as root"
    );
    let lab = Lab::datapath("lk", 3, CLIENTS).expect("lab builds");
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers");

    let sources = lab.client_addrs();
    let mut held = lab
        .open_held(sources, vip, Duration::from_secs(10))
        .expect("the held connections open");
    echo_all(&mut held, "before");
    lab.spread_ok(vip, CLIENTS, 2, "before any change");

    // MTU down and back.
    ip(&lab, &["link", "set", "dev", "eth0", "mtu", "1400"]);
    wait_for_log(&lbd, "interface eth0: MTU 1500 -> 1400", 1);
    echo_all(&mut held, "mtu-1400");
    lab.spread_ok(vip, CLIENTS, 2, "at MTU 1400");
    ip(&lab, &["link", "set", "dev", "eth0", "mtu", "1500"]);
    wait_for_log(&lbd, "interface eth0: MTU 1400 -> 1500", 1);

    // Link down and up. A link going down takes its routes along; the
    // client network's route is put back as the node's network setup would.
    ip(&lab, &["link", "set", "dev", "eth0", "down"]);
    wait_for_log(&lbd, "interface eth0: link down", 1);
    ip(&lab, &["link", "set", "dev", "eth0", "up"]);
    ip(&lab, &["route", "replace", "203.0.113.0/24", "dev", "eth0"]);
    wait_for_log(&lbd, "interface eth0: link up", 1);
    echo_all(&mut held, "link-up");
    lab.spread_ok(vip, CLIENTS, 2, "after the link came back");

    // The device itself, deleted and created again.
    lab.recreate_link("lb1").expect("eth0 is re-created");
    wait_for_log(
        &lbd,
        "interface eth0: forwarding again on the new device",
        1,
    );
    lbd.check_running().expect("lbd survived its interface");
    echo_all(&mut held, "recreated");
    lab.spread_ok(vip, CLIENTS, 2, "on the re-created device");
    let reasons = counters::read_pinned(&lab.lbd_pin_dir(1))
        .expect("lbd's counters are readable")
        .reasons;
    assert!(
        reasons
            .iter()
            .all(|(label, _)| !label.starts_with("drop_") && !label.starts_with("tx_rst")),
        "the data path dropped or refused packets: {reasons:?}"
    );
    let log = lbd.log();
    assert_eq!(count(&log, "is a new device"), 1, "{log}");
    assert_eq!(count(&log, "cannot be served yet"), 0, "{log}");
    println!(
        "lbd logged:\n{}",
        log.lines()
            .filter(|l| l.contains("interface eth0"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(held);
    drop(lbd);
    lab.teardown().expect("teardown");
}

fn ip(lab: &Lab, args: &[&str]) {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    let out = lab.exec_in("lb1", &full).expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Waits (bounded) until lbd's log holds `needle` on exactly `times` lines.
fn wait_for_log(lbd: &Lbd, needle: &str, times: usize) {
    let start = Instant::now();
    loop {
        let log = lbd.log();
        let n = count(&log, needle);
        if n == times {
            return;
        }
        assert!(
            n < times && start.elapsed() < 2 * bounds::AGENT_NOTICES,
            "lbd's log has {n} lines with {needle:?}, {times} expected:\n{}",
            lbd.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
