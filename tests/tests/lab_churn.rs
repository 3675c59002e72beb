//! Connection churn from one busy client address (an office NAT, a mail
//! relay), in a single-node namespace lab: lb1 balances a VIP over three
//! backends with `scheduler = "source"`, so every connection of the client
//! lands on one backend, and the SNAT range of the lab's config (10,000
//! ports, the README's size) is spent on that one backend alone. The
//! backends close first after their name line, as an HTTP server does after
//! `Connection: close`, so each holds the old tuple in TIME_WAIT when its
//! SNAT port comes round again.
//!
//! For [`SECONDS`] the client opens and closes connections back to back from
//! [`WORKERS`] tasks. Counted, not timed:
//! - every connection succeeds, all on one backend;
//! - the data path counted no `drop_snat_exhausted` (closed connections hand
//!   their ports on; the run goes round the port range several times, which
//!   the test checks, so it would have run out otherwise);
//! - `lbd check` states the ceiling of the range (10,000/s per backend from
//!   many clients; one client's own closed ports are reused at once, so the
//!   run may go past it).
//!
//! Then the ceiling, with a range of 200 ports (`lbd check` states 200/s per
//! backend and warns): 100 client addresses churn far above it for 15 s,
//! which costs at most a few connections (other clients' closed ports are
//! reused sooner than a second) and drops no SYN; then 900 connections held
//! open at once over 3 backends: no backend gets more than its 200 ports,
//! the rest are refused and counted (`drop_snat_exhausted`), and lbd logs
//! it once.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::net::SocketAddrV4;

use lb_tests::lab::{Lab, ServiceConfig, counters};

const SECONDS: u64 = 60;
const WORKERS: usize = 64;
/// The lab config's SNAT range: 20000-29999.
const SNAT_PORTS: u64 = 10_000;
/// The second part: a range of 200 ports, whose stated ceiling is 200 new
/// connections per second per backend from many clients, and far more than
/// that from 100 client addresses.
const SMALL_RANGE: &str = "20000-20199";
const SMALL_CEILING: u64 = 200;
const OVER_SOURCES: usize = 100;
const OVER_SECONDS: u64 = 15;
/// The third part: connections held open at once, over 3 backends x 200
/// ports, on a second service whose servers echo until the client closes.
const HOLD_PORT: u16 = 81;
const HOLD_CONNECTIONS: usize = 900;

#[test]
fn lab_churn() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_churn must run as root");
    let lab = Lab::datapath("ch", 3, OVER_SOURCES).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);

    lab.start_backend_servers_closing_first(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let lbd_config = lab.lbd_config(vec![service]);
    let config = lab.write_config("lbd.toml", &lbd_config).unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, std::time::Duration::from_secs(15))
        .expect("the VIP answers");

    let report = lab
        .churn(vip, 1, WORKERS, SECONDS)
        .expect("lab-client churn runs");
    // Read at once: the last flow collection (every 5 s) ran during the churn.
    let status = lab
        .lbd_command(1, &["status", "--json"])
        .expect("lbd status runs");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("lbd status prints JSON");
    let ports: Vec<u64> = status["services"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["snat_ports_in_use"].as_u64().unwrap_or(0))
        .collect();
    println!("SNAT ports in use per backend (lbd status): {ports:?}");
    let busy = ports.iter().filter(|n| **n > 0).count();
    assert!(
        busy == 1 && ports.iter().all(|n| *n <= SNAT_PORTS),
        "lbd status should show the churned backend's ports in use, within the range: {ports:?}"
    );
    let datapath = counters::read_pinned(&pin_dir).expect("pinned counters are readable");
    let reason = |label: &str| {
        datapath
            .reasons
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, n)| *n)
    };
    println!(
        "{} connections in {:.1} s from {} address ({:.0}/s), {} failed, per backend {:?}",
        report.attempts,
        report.elapsed_ms as f64 / 1000.0,
        report.sources,
        report.rate(),
        report.errors,
        report.per_backend
    );
    println!("data path reasons: {:?}", datapath.reasons);
    assert_eq!(
        report.errors, 0,
        "connections failed under churn: {:?}",
        report.error_samples
    );
    assert_eq!(
        report.per_backend.len(),
        1,
        "one client address must stay on one backend: {:?}",
        report.per_backend
    );
    assert!(
        report.succeeded() > 2 * SNAT_PORTS,
        "the run made {} connections, too few to go round the {SNAT_PORTS} SNAT ports twice; \
         it proves nothing about port reuse",
        report.succeeded()
    );
    assert_eq!(
        reason("drop_snat_exhausted"),
        0,
        "SYNs were dropped for want of a SNAT port although every earlier connection closed"
    );

    // lbd check states the ceiling for many client addresses sharing the
    // backend (another client's closed port waits a second); one client's
    // own closed ports are reused at once, so this run may go past it.
    let lbd_bin = lb_tests::lab::binaries::lbd().expect("lbd is built");
    let out = std::process::Command::new(lbd_bin)
        .arg("check")
        .arg(&config)
        .output()
        .expect("lbd check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let per_backend: u64 = text
        .lines()
        .find_map(|l| {
            l.split(" = ")
                .nth(1)?
                .split("/s per backend")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("lbd check states no ceiling: {text}"));
    println!(
        "lbd check: {per_backend}/s per backend from many clients; this one client reached {:.0}/s",
        report.rate()
    );
    assert_eq!(per_backend, SNAT_PORTS, "{text}");

    lbd.check_running().expect("lbd still runs");
    lbd.stop(std::time::Duration::from_secs(10))
        .expect("lbd stops");
    drop(lbd);

    // Part two: a range of 200 ports. lbd check states its ceiling and warns.
    // 100 client addresses then churn far above it: closed ports of other
    // clients are reused sooner than a second, which a backend's TIME_WAIT
    // may refuse now and then (the clients count it), but no SYN is dropped
    // while closed ports exist. Then more connections held open at once
    // than the range has ports: the SYNs beyond are dropped and counted,
    // never more connections get through than ports x backends, and lbd
    // says so in one log line.
    lab.start_backend_servers(HOLD_PORT)
        .expect("echo servers start");
    let mut small = lbd_config.clone();
    small.services.push(ServiceConfig::tcp(
        "hold",
        lab.vip(),
        HOLD_PORT,
        lab.backend_configs(HOLD_PORT, &[]),
    ));
    for node in small.nodes.values_mut() {
        node.snat_ports = SMALL_RANGE.to_string();
    }
    let small_config = lab.write_config("lbd-small.toml", &small).unwrap();
    let out = std::process::Command::new(lb_tests::lab::binaries::lbd().unwrap())
        .arg("check")
        .arg(&small_config)
        .output()
        .expect("lbd check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.contains(&format!("= {SMALL_CEILING}/s per backend"))
            && text.contains("warning: service.web")
            && text.contains("widen node."),
        "lbd check should state a {SMALL_CEILING}/s ceiling and warn about it: {text}"
    );
    let mut lbd = lab.start_lbd(1, &small_config).expect("lbd starts again");
    lab.wait_for_service(&mut lbd, vip, std::time::Duration::from_secs(15))
        .expect("the VIP answers with the small range");
    let before = reason_count(&pin_dir, "drop_snat_exhausted");
    let over = lab
        .churn(vip, OVER_SOURCES, WORKERS, OVER_SECONDS)
        .expect("lab-client churn runs");
    let dropped = reason_count(&pin_dir, "drop_snat_exhausted") - before;
    println!(
        "over the ceiling: {} connections in {:.1} s from {} addresses ({:.0}/s; stated ceiling \
         {SMALL_CEILING}/s per backend, {} backends reached), {} failed {:?}, {dropped} SYNs \
         dropped for want of a port",
        over.succeeded(),
        over.elapsed_ms as f64 / 1000.0,
        over.sources,
        over.rate(),
        over.per_backend.len(),
        over.errors,
        over.error_samples.iter().take(3).collect::<Vec<_>>(),
    );
    assert_eq!(
        dropped, 0,
        "SYNs dropped while closed ports could be reused"
    );
    assert!(
        over.errors * 100 <= over.attempts,
        "more than 1% of connections failed over the ceiling: {:?}",
        over.error_samples
    );

    let hold_vip = SocketAddrV4::new(lab.vip(), HOLD_PORT);
    let held = lab
        .hold(hold_vip, HOLD_CONNECTIONS, &["--timeout", "5"])
        .expect("lab-client hold runs");
    let dropped = reason_count(&pin_dir, "drop_snat_exhausted") - before;
    println!(
        "{HOLD_CONNECTIONS} connections held open at once: {} succeeded {:?}, {} failed, \
         {dropped} SYNs dropped for want of a port",
        held.successes, held.per_backend, held.failures
    );
    let ports: u64 = SMALL_CEILING; // one port per held connection and backend
    assert!(
        held.per_backend.values().all(|n| *n <= ports),
        "a backend held more connections than the range has ports: {:?}",
        held.per_backend
    );
    assert!(
        dropped > 0 && held.failures > 0,
        "{HOLD_CONNECTIONS} connections over 3 x {ports} ports, yet none was refused"
    );
    lbd.wait_for_log(std::time::Duration::from_secs(15), |log| {
        log.contains("SNAT ports ran out")
    })
    .expect("lbd logs that the SNAT ports ran out");
    let lines = lbd
        .log()
        .lines()
        .filter(|l| l.contains("SNAT ports ran out"))
        .count();
    assert_eq!(lines, 1, "one line a minute at most, got {lines}");

    lbd.check_running().expect("lbd still runs");
    lbd.stop(std::time::Duration::from_secs(10))
        .expect("lbd stops");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}

fn reason_count(pin_dir: &std::path::Path, label: &str) -> u64 {
    counters::read_pinned(pin_dir)
        .expect("pinned counters are readable")
        .reasons
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(0, |(_, n)| *n)
}
