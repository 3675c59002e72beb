//! Health checks end to end in a namespace lab: lbd on lb1 balancing a VIP
//! over three backends with a `tcp` check, 120 client addresses.
//!
//! (a) with every backend UP each source sticks to one backend, and all
//!     three get clients;
//! (b) be2's server is killed: be2 goes DOWN after exactly `fall` failed
//!     checks (counted in lbd's log of every check), within 2x nominal + 1 s;
//!     then every connection succeeds, be2's clients moved to be1/be3 and
//!     nobody else moved;
//! (b') a reload (SIGHUP) that changes the check keeps be2 DOWN: its clients
//!     stay on be1/be3;
//! (c) be2's server is restarted: UP after exactly `rise` successful checks,
//!     within 2x nominal + 1 s; with source hashing and no persistence table
//!     every source is back on its first backend;
//! (d) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_tests::lab::{CheckConfig, Lab, Lbd, ServiceConfig, SpreadReport};

const CLIENTS: usize = 120;
const PER_SOURCE: usize = 2;
const INTER: Duration = Duration::from_millis(200);
const FASTINTER: Duration = Duration::from_millis(100);
const DOWNINTER: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(300);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// The stopped backend.
const VICTIM: &str = "be2";
/// Every health check logged, and the agent's map updates.
const LOG_FILTER: &str = "info,lb_userspace::health=debug,lb_userspace::agent=debug";

#[test]
fn lab_health() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_health must run as root");
    let lab = Lab::datapath("hc", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);

    let servers = lab
        .start_backend_servers(80)
        .expect("backend servers start");
    let victim = servers
        .iter()
        .find(|s| s.name == VICTIM)
        .expect("be2 has a server")
        .clone();

    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = |timeout: Duration| {
        let mut service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
        service.check = Some(CheckConfig {
            inter: Some(ms(INTER)),
            fastinter: Some(ms(FASTINTER)),
            downinter: Some(ms(DOWNINTER)),
            rise: Some(RISE),
            fall: Some(FALL),
            timeout: Some(ms(timeout)),
            ..CheckConfig::tcp()
        });
        lab.lbd_config(vec![service])
    };
    let config = lab.write_config("lbd.toml", &service(TIMEOUT)).unwrap();
    let mut lbd = lab
        .start_lbd_logging(1, &config, LOG_FILTER)
        .expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");
    // Backends start UP at health `rise`; only once fully UP (rise+fall-1)
    // does going DOWN take exactly `fall` failures.
    let fully_up = format!("health {}", RISE + FALL - 1);
    for n in 1..=3 {
        let key = format!("web/be{n}");
        wait_for_log(&mut lbd, Duration::from_secs(5), |log| {
            checks_of(log, &key).iter().any(|c| c.contains(&fully_up))
        })
        .unwrap_or_else(|e| panic!("{key} never became fully UP: {e}"));
    }

    // (a) all UP: sources stick, every backend has clients.
    let before = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(a) all UP");
    let clients = before.clients_per_backend();
    println!("(a) clients per backend with all UP: {clients:?}");
    for n in 1..=3 {
        assert!(
            clients.get(&format!("be{n}")).copied().unwrap_or(0) > 0,
            "be{n} got no client of {CLIENTS}: {clients:?}"
        );
    }
    let first = backend_of_each_source(&before);

    // (b) stop be2's server: DOWN after exactly `fall` failed checks.
    let down_line = format!("web/{VICTIM} DOWN");
    let stopped = Instant::now();
    // SAFETY: signalling the lab-server the lab started (and still reaps).
    let killed = unsafe { libc::kill(victim.pid as i32, libc::SIGKILL) };
    assert_eq!(killed, 0, "could not kill {VICTIM}'s lab-server");
    let nominal_down = INTER + FASTINTER * (FALL - 1);
    let bound_down = nominal_down * 2 + Duration::from_secs(1);
    wait_for_log(&mut lbd, bound_down, |log| log.contains(&down_line))
        .unwrap_or_else(|e| panic!("{VICTIM} did not go DOWN: {e}"));
    let took_down = stopped.elapsed();
    let log = lbd.log();
    let event = line_with(&log, &down_line).expect("DOWN line");
    println!(
        "(b) {VICTIM} DOWN {took_down:.2?} after its server stopped (nominal {nominal_down:?}, bound {bound_down:?}): {event}"
    );
    assert!(
        event.contains(&format!("{FALL}/{FALL} failed")),
        "the DOWN line does not name {FALL}/{FALL} failed checks: {event}"
    );
    let (failed, preceded_by) = run_before(&log, &format!("web/{VICTIM}"), &down_line, false);
    assert_eq!(
        failed, FALL as usize,
        "{VICTIM} went DOWN after {failed} failed checks in a row, not fall = {FALL}"
    );
    assert!(
        preceded_by.is_some_and(|c| c.contains(&fully_up)),
        "the failures did not start from a fully UP backend: {preceded_by:?}"
    );
    wait_for_log(&mut lbd, Duration::from_secs(1), |log| {
        maps_updated(log, VICTIM, false)
    })
    .unwrap_or_else(|e| panic!("the maps were not updated for {VICTIM} DOWN: {e}"));

    let during = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(b) be2 DOWN");
    let now = backend_of_each_source(&during);
    let mut moved = 0;
    for (source, was) in &first {
        let is = &now[source];
        if was == VICTIM {
            assert_ne!(is, VICTIM, "{source} still reaches the DOWN {VICTIM}");
            moved += 1;
        } else {
            assert_eq!(
                is, was,
                "{source} moved from {was} to {is} though {was} stayed UP"
            );
        }
    }
    println!(
        "(b) {moved} clients of {VICTIM} moved to {:?}; the other {} stayed put",
        during.clients_per_backend(),
        first.len() - moved
    );

    // (b') reload with a changed check (every check restarts): be2 stays
    // DOWN, so its clients stay where they went.
    lab.write_config("lbd.toml", &service(TIMEOUT - Duration::from_millis(50)))
        .unwrap();
    // SAFETY: signalling our own lbd child.
    assert_eq!(unsafe { libc::kill(lbd.pid() as i32, libc::SIGHUP) }, 0);
    wait_for_log(&mut lbd, Duration::from_secs(5), |log| {
        log.contains("config reloaded") || log.contains("reload refused")
    })
    .unwrap_or_else(|e| panic!("lbd did not reload: {e}"));
    let log = lbd.log();
    assert!(
        !log.contains("reload refused"),
        "the reload was refused: {}",
        lbd.log_tail(10)
    );
    let reloaded = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(b') after the reload");
    assert_eq!(
        backend_of_each_source(&reloaded),
        now,
        "sources moved on a reload that kept {VICTIM} DOWN"
    );
    println!("(b') reload with a changed check: {VICTIM} still DOWN, nobody moved");

    // (c) restart be2's server: UP after exactly `rise` successful checks.
    let up_line = format!("web/{VICTIM} UP");
    let addr = SocketAddr::from((lab.backend_addr(2), 80));
    lab.start_server(VICTIM, VICTIM, addr, false)
        .expect("be2's server restarts");
    let restarted = Instant::now();
    let nominal_up = DOWNINTER + FASTINTER * (RISE - 1);
    let bound_up = nominal_up * 2 + Duration::from_secs(1);
    wait_for_log(&mut lbd, bound_up, |log| log.contains(&up_line))
        .unwrap_or_else(|e| panic!("{VICTIM} did not come back UP: {e}"));
    let took_up = restarted.elapsed();
    let log = lbd.log();
    let event = line_with(&log, &up_line).expect("UP line");
    println!(
        "(c) {VICTIM} UP {took_up:.2?} after its server restarted (nominal {nominal_up:?}, bound {bound_up:?}): {event}"
    );
    assert!(
        event.contains(&format!("{RISE}/{RISE} succeeded")),
        "the UP line does not name {RISE}/{RISE} succeeded checks: {event}"
    );
    let (succeeded, preceded_by) = run_before(&log, &format!("web/{VICTIM}"), &up_line, true);
    assert_eq!(
        succeeded, RISE as usize,
        "{VICTIM} came UP after {succeeded} successful checks in a row, not rise = {RISE}"
    );
    assert!(
        preceded_by.is_some_and(|c| c.contains("health 0")),
        "the successes did not start from a fully DOWN backend: {preceded_by:?}"
    );
    wait_for_log(&mut lbd, Duration::from_secs(1), |log| {
        maps_updated(log, VICTIM, true)
    })
    .unwrap_or_else(|e| panic!("the maps were not updated for {VICTIM} UP: {e}"));

    let after = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(c) be2 UP again");
    let again = backend_of_each_source(&after);
    let strays: Vec<String> = first
        .iter()
        .filter(|(source, was)| again[*source] != **was)
        .map(|(source, was)| format!("{source}: {was} -> {}", again[source]))
        .collect();
    assert!(
        strays.is_empty(),
        "sources not back on their first backend: {strays:?}"
    );
    println!(
        "(c) every source is back on its first backend: {:?}",
        after.clients_per_backend()
    );

    // (d) nothing is left behind.
    lbd.check_running().expect("lbd is still running");
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    println!("(d) namespaces and pins of lab {prefix} are gone");
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn backend_of_each_source(report: &SpreadReport) -> BTreeMap<String, String> {
    report.backend_of_each_source()
}

/// Polls lbd's log until `done` holds, failing early when lbd exits.
fn wait_for_log(
    lbd: &mut Lbd,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if done(&lbd.log()) {
            return Ok(());
        }
        if let Err(e) = lbd.check_running() {
            return Err(format!("{e:#}"));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "not within {timeout:?}; lbd log ends with:\n{}",
                lbd.log_tail(30)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The log lines of `key`'s checks ("web/be2 check: tcp connected in ...,
/// health 4"), in order.
fn checks_of<'a>(log: &'a str, key: &str) -> Vec<&'a str> {
    let marker = format!("{key} check: ");
    log.lines().filter(|l| l.contains(&marker)).collect()
}

fn line_with<'a>(log: &'a str, needle: &str) -> Option<&'a str> {
    log.lines().find(|l| l.contains(needle))
}

/// The checks of `key` in a row with outcome `ok` just before the first
/// line containing `event`, and the check before that run.
fn run_before<'a>(log: &'a str, key: &str, event: &str, ok: bool) -> (usize, Option<&'a str>) {
    let marker = format!("{key} check: ");
    let mut checks: Vec<&str> = Vec::new();
    for line in log.lines() {
        if line.contains(event) {
            break;
        }
        if line.contains(&marker) {
            checks.push(line);
        }
    }
    // A tcp check succeeds with "tcp connected"; anything else failed.
    let passed = |line: &str| line.contains(&format!("{marker}tcp connected"));
    let run = checks.iter().rev().take_while(|l| passed(l) == ok).count();
    let before = checks.len().checked_sub(run + 1).map(|i| checks[i]);
    (run, before)
}

/// Whether the agent logged writing the maps for `backend` going up/down.
fn maps_updated(log: &str, backend: &str, up: bool) -> bool {
    log.lines().any(|l| {
        l.contains("maps updated for the health change")
            && l.contains(&format!("web/{backend}"))
            && l.contains(&format!("up={up}"))
    })
}
