//! A backend the node has no route to, in a single-node namespace lab: lb1
//! balances a VIP over three backends with a `tcp` check, but its route to
//! the backends' network is replaced by host routes to be1 and be3 only, as
//! when a backend's subnet is not routed yet at boot.
//!
//! (a) lbd starts and serves: be2 is DOWN with the reason (one log line,
//!     `lbd status --json` names it), and of 120 client sources every
//!     connection succeeds and none reaches be2;
//! (b) the route to be2 is added: be2 comes UP through its checks (`rise`
//!     successes, the UP line says so) and new clients reach it;
//! (c) the route is removed again while lbd runs: be2 goes DOWN with the
//!     reason, and again no connection fails or reaches it;
//! (d) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::net::SocketAddrV4;
use std::time::Duration;

use lb_tests::lab::report::status_backend;
use lb_tests::lab::{CheckConfig, Lab, ServiceConfig, SpreadReport};

const CLIENTS: usize = 120;
const PER_SOURCE: usize = 2;
const RISE: u32 = 2;
const FALL: u32 = 3;
/// The backend without a route.
const VICTIM: &str = "be2";
/// Path changes are seen within the agent's path interval (2 s); then
/// `rise` checks at 100 ms. Generous: a loaded 2-core machine.
const HEAL_BOUND: Duration = Duration::from_secs(10);

#[test]
fn lab_unroutable() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_unroutable must run as root"
    );
    let lab = Lab::datapath("ur", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let victim_ip = lab.backend_addr(2);

    // lb1 keeps its address on the backends' network but loses the
    // network's route; be1 and be3 get host routes.
    let back_net = "198.51.100.0/24";
    ip(&lab, &["route", "del", back_net, "dev", "eth0"]);
    for n in [1, 3] {
        let host = format!("{}/32", lab.backend_addr(n));
        ip(&lab, &["route", "add", &host, "dev", "eth0"]);
    }
    let victim_route = format!("{victim_ip}/32");

    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let mut service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    service.check = Some(CheckConfig {
        inter: Some("200ms".into()),
        fastinter: Some("100ms".into()),
        downinter: Some("200ms".into()),
        rise: Some(RISE),
        fall: Some(FALL),
        timeout: Some("300ms".into()),
        ..CheckConfig::tcp()
    });
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers although be2 has no route");

    // (a) be2 DOWN with its reason, once; the rest serves.
    let down_line = format!("web/{VICTIM} DOWN: no route to {victim_ip}");
    lbd.wait_for_log(Duration::from_secs(5), |log| log.contains(&down_line))
        .expect("be2 is logged DOWN with the missing route");
    let status = lab.lbd_status_json(1).expect("lbd status answers");
    let be2 = status_backend(&status, VICTIM);
    println!("(a) be2 in lbd status: {be2}");
    assert_eq!(be2["health"], "down", "{be2}");
    let reason = be2["unreachable"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("no route to {victim_ip}")),
        "status gives no reason: {be2}"
    );
    let before = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(a) be2 without a route");
    assert_no_client_on(&before, VICTIM, "(a)");
    assert_eq!(
        count(&lbd.log(), &down_line),
        1,
        "the missing route is logged once, not at every retry"
    );

    // (b) the route comes: UP through the checks, clients reach it.
    ip(&lab, &["route", "add", &victim_route, "dev", "eth0"]);
    let up_line = format!("web/{VICTIM} UP:");
    let back_line = format!("web/{VICTIM} UP: its path is back");
    let took = lbd
        .wait_for_log(HEAL_BOUND, |log| log.contains(&back_line))
        .expect("be2 comes UP once routed");
    let log = lbd.log();
    // The checks decide (their UP line); the path sync then puts be2 back.
    let up = log
        .lines()
        .find(|l| l.contains(&up_line) && !l.contains(&back_line))
        .expect("be2's checks went UP");
    println!("(b) be2 UP {took:.2?} after its route was added: {up}");
    assert!(
        up.contains(&format!("{RISE}/{RISE} succeeded")),
        "be2 did not come UP through {RISE} checks: {up}"
    );
    assert_eq!(count(&log, "its path is back"), 1, "{log}");
    let after = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(b) be2 routed");
    let clients = after.clients_per_backend();
    println!("(b) clients per backend: {clients:?}");
    assert!(
        clients.get(VICTIM).copied().unwrap_or(0) > 0,
        "no client reaches be2 once routed: {clients:?}"
    );
    assert_eq!(
        lab.lbd_status_json(1).expect("lbd status answers")["services"][0]["backends"][1]["health"],
        "up"
    );

    // (c) the route goes while lbd runs.
    ip(&lab, &["route", "del", &victim_route, "dev", "eth0"]);
    lbd.wait_for_log(HEAL_BOUND, |log| count(log, &down_line) == 2)
        .expect("be2 goes DOWN when its route is removed");
    let again = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(c) be2's route removed");
    assert_no_client_on(&again, VICTIM, "(c)");
    lbd.check_running().expect("lbd still runs");

    lbd.stop(Duration::from_secs(10)).expect("lbd stops");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}

fn ip(lab: &Lab, args: &[&str]) {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    lab.exec_in("lb1", &full)
        .unwrap_or_else(|e| panic!("ip {}: {e:#}", args.join(" ")));
}

fn assert_no_client_on(report: &SpreadReport, backend: &str, what: &str) {
    let reached = report.per_backend.get(backend).map_or(0, |t| t.connections);
    println!(
        "{what} connections per backend: {:?}",
        report
            .per_backend
            .iter()
            .map(|(b, t)| (b.as_str(), t.connections))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        reached, 0,
        "{what}: {reached} connections reached {backend}"
    );
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}
