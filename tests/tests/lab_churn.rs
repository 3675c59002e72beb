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
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::net::SocketAddrV4;

use lb_tests::lab::{Lab, ServiceConfig, counters};

const SECONDS: u64 = 60;
const WORKERS: usize = 64;
/// The lab config's SNAT range: 20000-29999.
const SNAT_PORTS: u64 = 10_000;

#[test]
fn lab_churn() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_churn must run as root");
    let lab = Lab::datapath("ch", 3, 1).expect("lab builds");
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
        .churn(vip, WORKERS, SECONDS)
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
        "{} connections in {:.1} s from {} ({:.0}/s), {} failed, per backend {:?}",
        report.attempts,
        report.elapsed_ms as f64 / 1000.0,
        report.source,
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
    lab.teardown().expect("teardown");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}
