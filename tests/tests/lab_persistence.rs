//! Persistence across a backend-set change, in a namespace lab: lbd on lb1
//! with two services on the same VIP and the same three backends, "sticky"
//! (port 443, `persistence_timeout = "1h"`) and "plain" (port 80, none).
//! 100 clients connect to both; then a reload (SIGHUP) adds be4 (weight 2)
//! to both services, which rebuilds their Maglev tables.
//!
//! (a) sticky: every returning client lands on the backend it had, while
//!     100 sources never seen before are spread over all four backends,
//!     be4 included;
//! (b) plain: some returning clients moved (to be4), which shows the
//!     rebuilt table would have moved sticky clients too; the count is
//!     printed;
//! (c) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use lb_tests::lab::{Lab, ServiceConfig, SpreadReport};

/// Clients that connect before the reload and return after it.
const RETURNING: usize = 100;
/// Sources that connect only after the reload.
const NEW: usize = 100;
const PER_SOURCE: usize = 2;
const STICKY_PORT: u16 = 443;
const PLAIN_PORT: u16 = 80;
/// be4's weight once added (be1..be3 have 1): about 40 % of new sources.
const ADDED_WEIGHT: u32 = 2;
const RELOAD_BOUND: Duration = Duration::from_secs(5);

#[test]
fn lab_persistence() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_persistence must run as root"
    );
    let lab = Lab::datapath("ps", 4, RETURNING + NEW).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    lab.start_backend_servers(PLAIN_PORT)
        .expect("backend servers start on the plain port");
    for n in 1..=4 {
        let name = format!("be{n}");
        let addr = SocketAddr::from((lab.backend_addr(n), STICKY_PORT));
        lab.start_server(&name, &name, addr, false)
            .expect("backend servers start on the sticky port");
    }
    let sticky_vip = SocketAddrV4::new(lab.vip(), STICKY_PORT);
    let plain_vip = SocketAddrV4::new(lab.vip(), PLAIN_PORT);

    let config_with = |backends: usize| {
        let weights = [1, 1, 1, ADDED_WEIGHT];
        let service = |name: &str, port: u16| {
            let mut list = lab.backend_configs(port, &weights);
            list.truncate(backends);
            ServiceConfig::tcp(name, lab.vip(), port, list)
        };
        let mut sticky = service("sticky", STICKY_PORT);
        sticky.persistence_timeout = Some("1h".into());
        lab.lbd_config(vec![sticky, service("plain", PLAIN_PORT)])
    };
    let config = lab.write_config("lbd.toml", &config_with(3)).unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    for vip in [sticky_vip, plain_vip] {
        lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
            .expect("the VIP answers through lbd");
    }

    let sticky_first = backend_of_each_source(&spread_ok(&lab, sticky_vip, RETURNING, "sticky"));
    let plain_first = backend_of_each_source(&spread_ok(&lab, plain_vip, RETURNING, "plain"));
    println!(
        "before the reload, {RETURNING} clients per backend: sticky {:?}, plain {:?}",
        tally(sticky_first.values()),
        tally(plain_first.values())
    );

    // Add be4 to both services.
    lab.write_config("lbd.toml", &config_with(4)).unwrap();
    lbd.signal(libc::SIGHUP).expect("SIGHUP reaches lbd");
    let took = lbd
        .wait_for_log(RELOAD_BOUND, |log| {
            log.contains("config reloaded") || log.contains("reload refused")
        })
        .expect("lbd acts on SIGHUP");
    assert!(
        !lbd.log().contains("reload refused"),
        "the reload was refused:\n{}",
        lbd.log_tail(15)
    );
    println!("be4 added; lbd logged \"config reloaded\" {took:.2?} after SIGHUP");

    // (a) sticky: returning clients stay, new ones reach be4 too.
    let sticky_now = backend_of_each_source(&spread_ok(
        &lab,
        sticky_vip,
        RETURNING + NEW,
        "sticky after the reload",
    ));
    let strays: Vec<String> = sticky_first
        .iter()
        .filter(|(source, was)| sticky_now[*source] != **was)
        .map(|(source, was)| format!("{source}: {was} -> {}", sticky_now[source]))
        .collect();
    let newcomers = tally(
        sticky_now
            .iter()
            .filter(|(source, _)| !sticky_first.contains_key(*source))
            .map(|(_, backend)| backend),
    );
    println!(
        "(a) sticky: {} of {RETURNING} returning clients moved; {NEW} new sources per backend: {newcomers:?}",
        strays.len()
    );
    assert!(
        strays.is_empty(),
        "returning clients moved despite persistence_timeout = 1h: {strays:?}"
    );
    assert_eq!(
        newcomers.values().sum::<usize>(),
        NEW,
        "new sources missing"
    );
    assert!(
        newcomers.get("be4").copied().unwrap_or(0) > 0,
        "no new source reached the added be4: {newcomers:?}"
    );

    // (b) plain: the rebuilt table moves some clients.
    let plain_now = backend_of_each_source(&spread_ok(
        &lab,
        plain_vip,
        RETURNING,
        "plain after the reload",
    ));
    let moved: Vec<String> = plain_first
        .iter()
        .filter(|(source, was)| plain_now[*source] != **was)
        .map(|(source, was)| format!("{source}: {was} -> {}", plain_now[source]))
        .collect();
    println!(
        "(b) plain: {} of {RETURNING} returning clients moved, now per backend {:?}",
        moved.len(),
        tally(plain_now.values())
    );
    assert!(
        !moved.is_empty(),
        "no client of the service without persistence moved, so this lab cannot tell persistence from an unchanged table"
    );

    // (c) nothing is left behind.
    lbd.check_running().expect("lbd is still running");
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    let config_arg = config.to_string_lossy().into_owned();
    lab.lbd_command(1, &["stop", "--config", &config_arg, "--detach"])
        .expect("lbd stop --detach succeeds");
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    println!("(c) namespaces and pins of lab {prefix} are gone");
}

/// A spread from the first `sources` client addresses that must fully
/// succeed with every source on one backend.
fn spread_ok(lab: &Lab, vip: SocketAddrV4, sources: usize, what: &str) -> SpreadReport {
    let report = lab
        .spread(vip, sources, PER_SOURCE, &[])
        .unwrap_or_else(|e| panic!("{what}: spread did not run: {e:#}"));
    report.assert_all_ok_and_sticky(sources, what);
    report
}

fn backend_of_each_source(report: &SpreadReport) -> BTreeMap<String, String> {
    report.backend_of_each_source()
}

fn tally<'a>(backends: impl Iterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for b in backends {
        *counts.entry(b.clone()).or_default() += 1;
    }
    counts
}
