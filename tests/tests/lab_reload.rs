//! Live reconfiguration end to end in a namespace lab: lbd on lb1 balancing
//! a VIP over be1..be3 (equal weights) for 240 client addresses, with a
//! fourth backend's server already running but not configured.
//!
//! (a) SIGHUP with changed weights (1:2:3) and be4 added (weight 3):
//!     connections held open from 30 sources before the reload still echo
//!     after it, also those whose source the new Maglev table sends
//!     elsewhere (the flow table, not the ring, keeps them); new connections
//!     reach be4 and follow the new weights within 3 sigma; lbd logs
//!     "config reloaded";
//! (b) a broken config (an unknown key, a bad address, and other weights)
//!     written over the file, then SIGHUP: lbd logs the refusal naming each
//!     error as file:line, keeps running, the backends in the maps keep
//!     their ids, every source still reaches the same backend, and the held
//!     connections still echo;
//! (c) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use lb_tests::lab::{
    Lab, LbdConfig, ServiceConfig, SpreadReport, connect_from, counters, echo_line, read_line,
};

const CLIENTS: usize = 240;
const PER_SOURCE: usize = 2;
/// Connections held open across the reloads, one per source.
const HELD: usize = 30;
const WEIGHTS_BEFORE: [u32; 3] = [1, 1, 1];
const WEIGHTS_AFTER: [u32; 4] = [1, 2, 3, 3];
/// How long lbd may take to act on SIGHUP (nominal: at once).
const RELOAD_BOUND: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection opened through the VIP and kept open.
struct Held {
    source: Ipv4Addr,
    backend: String,
    stream: TcpStream,
}

#[test]
fn lab_reload() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_reload must run as root");
    let lab = Lab::datapath("rl", 4, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    lab.start_backend_servers(80)
        .expect("backend servers (be4 included) start");
    let vip = SocketAddrV4::new(lab.vip(), 80);

    let config_with = |weights: &[u32]| -> LbdConfig {
        let mut backends = lab.backend_configs(80, weights);
        backends.truncate(weights.len());
        lab.lbd_config(vec![ServiceConfig::tcp("web", lab.vip(), 80, backends)])
    };
    let config = lab
        .write_config("lbd.toml", &config_with(&WEIGHTS_BEFORE))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");

    let before = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "before the reload");
    let clients = before.clients_per_backend();
    println!("before the reload (weights {WEIGHTS_BEFORE:?}): clients per backend {clients:?}");
    assert!(
        !clients.contains_key("be4"),
        "be4 answered though it is not configured: {clients:?}"
    );
    let first = backend_of_each_source(&before);

    let sources: Vec<Ipv4Addr> = lab.client_addrs().into_iter().take(HELD).collect();
    let mut held = lab
        .run_in("cl", move || -> anyhow::Result<Vec<Held>> {
            sources
                .into_iter()
                .map(|source| {
                    let mut stream = connect_from(source, vip, IO_TIMEOUT)?;
                    let backend = read_line(&mut stream)?;
                    Ok(Held {
                        source,
                        backend,
                        stream,
                    })
                })
                .collect()
        })
        .unwrap()
        .expect("the long-lived connections open");
    for h in &held {
        assert_eq!(
            h.backend,
            first[&h.source.to_string()],
            "{} reached another backend than in the spread",
            h.source
        );
    }
    echo_all(&mut held, "before-reload");
    println!("{HELD} connections held open, each echoing");

    // (a) weights 1:2:3 and be4 (weight 3) added.
    let reloads = count(&lbd.log(), "config reloaded");
    lab.write_config("lbd.toml", &config_with(&WEIGHTS_AFTER))
        .unwrap();
    lbd.signal(libc::SIGHUP).expect("SIGHUP reaches lbd");
    let took = lbd
        .wait_for_log(RELOAD_BOUND, |log| {
            count(log, "config reloaded") > reloads || log.contains("reload refused")
        })
        .expect("lbd acts on SIGHUP");
    let log = lbd.log();
    assert!(
        !log.contains("reload refused"),
        "the valid config was refused:\n{}",
        lbd.log_tail(15)
    );
    println!(
        "(a) lbd logged \"config reloaded\" {took:.2?} after SIGHUP: {}",
        last_line_with(&log, "config reloaded")
    );

    echo_all(&mut held, "after-reload");
    let after = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(a) after the reload");
    let now = backend_of_each_source(&after);
    let clients = after.clients_per_backend();
    println!("(a) after the reload (weights {WEIGHTS_AFTER:?}): clients per backend {clients:?}");
    assert!(
        clients.get("be4").copied().unwrap_or(0) > 0,
        "no new connection reached the added be4: {clients:?}"
    );
    assert_shares(&clients, &WEIGHTS_AFTER);
    let moved_held: Vec<String> = held
        .iter()
        .filter(|h| now[&h.source.to_string()] != h.backend)
        .map(|h| {
            format!(
                "{} on {} (new connections: {})",
                h.source,
                h.backend,
                now[&h.source.to_string()]
            )
        })
        .collect();
    let moved = first.iter().filter(|(s, b)| now[*s] != **b).count();
    println!(
        "(a) {moved} of {CLIENTS} sources now reach another backend; {} of the {HELD} held connections kept their old backend although their source moved, all still echo",
        moved_held.len()
    );
    assert!(
        !moved_held.is_empty(),
        "no held connection's source moved, so this run does not show that established flows outlive a ring change"
    );

    // (b) a broken config changes nothing.
    let ids_before = backend_ids(&pin_dir);
    let (broken, bad_lines) = broken_config(&config_with(&[3, 1, 1, 1]));
    std::fs::write(&config, &broken).unwrap();
    let refusals = count(&lbd.log(), "reload refused");
    let reloads = count(&lbd.log(), "config reloaded");
    lbd.signal(libc::SIGHUP).expect("SIGHUP reaches lbd");
    let took = lbd
        .wait_for_log(RELOAD_BOUND, |log| count(log, "reload refused") > refusals)
        .expect("lbd refuses the broken config");
    let log = lbd.log();
    assert_eq!(
        count(&log, "config reloaded"),
        reloads,
        "lbd reloaded a broken config"
    );
    let refusal = &log[log
        .match_indices("reload refused")
        .last()
        .map(|(i, _)| i)
        .unwrap()..];
    let config_name = config.to_string_lossy();
    for (line, what) in &bad_lines {
        let at = format!("{config_name}:{line}:");
        assert!(
            refusal.contains(&at) && refusal.contains(what.as_str()),
            "the refusal does not name {what} at {at}:\n{refusal}"
        );
    }
    println!(
        "(b) refused {took:.2?} after SIGHUP:\n{}",
        refusal.trim_end()
    );
    lbd.check_running()
        .expect("lbd keeps running after refusing a config");
    echo_all(&mut held, "after-refusal");
    let unchanged = lab.spread_ok(vip, CLIENTS, PER_SOURCE, "(b) after the refused reload");
    assert_eq!(
        backend_of_each_source(&unchanged),
        now,
        "sources moved although the reload was refused"
    );
    let ids_after = backend_ids(&pin_dir);
    assert_eq!(
        ids_after, ids_before,
        "the backends in the maps changed although the reload was refused"
    );
    println!(
        "(b) same backend for all {CLIENTS} sources, same backend ids {ids_after:?}, {HELD} held connections still echo"
    );

    // (c) nothing is left behind.
    drop(held);
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    lab.write_config("lbd.toml", &config_with(&WEIGHTS_AFTER))
        .unwrap();
    let config_arg = config.to_string_lossy().into_owned();
    lab.lbd_command(1, &["stop", "--config", &config_arg, "--detach"])
        .expect("lbd stop --detach succeeds");
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    println!("(c) namespaces and pins of lab {prefix} are gone");
}

/// `config` rendered with two errors lbd must name: an unknown key in the
/// first service and an address that is not one (be2's). Returns the text
/// and, per error, its 1-based line and a word the error message quotes.
fn broken_config(config: &LbdConfig) -> (String, Vec<(usize, String)>) {
    let text = config.render().unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let service = lines
        .iter()
        .position(|l| l.trim() == "[[service]]")
        .expect("the rendered config has a [[service]]");
    lines.insert(service + 1, "colour = \"blue\"".to_string());
    let unknown_line = service + 2;
    let good = format!(
        "address = \"{}:80\"",
        lb_tests::lab::topology::backend_addr(2)
    );
    let address = lines
        .iter()
        .position(|l| l.trim() == good)
        .unwrap_or_else(|| panic!("the rendered config has no {good}:\n{text}"));
    lines[address] = "address = \"198.51.100.300:80\"".to_string();
    let mut broken = lines.join("\n");
    broken.push('\n');
    (
        broken,
        vec![
            (unknown_line, "colour".to_string()),
            (address + 1, "address".to_string()),
        ],
    )
}

/// Sends a distinct line on every held connection and expects it back.
fn echo_all(held: &mut [Held], tag: &str) {
    let mut failures = Vec::new();
    for h in held.iter_mut() {
        if let Err(e) = echo_line(&mut h.stream, &format!("{tag}-{}", h.source)) {
            failures.push(format!("{} ({}): {e:#}", h.source, h.backend));
        }
    }
    assert!(
        failures.is_empty(),
        "{tag}: held connections broke: {failures:?}"
    );
}

/// The shares of sources per backend follow `weights` (binomial, 3 sigma).
fn assert_shares(clients: &BTreeMap<String, u64>, weights: &[u32]) {
    let total: u32 = weights.iter().sum();
    let n = CLIENTS as f64;
    let mut outside = Vec::new();
    for (i, weight) in weights.iter().enumerate() {
        let name = format!("be{}", i + 1);
        let got = clients.get(&name).copied().unwrap_or(0) as f64;
        let p = f64::from(*weight) / f64::from(total);
        let (expected, sigma) = (n * p, (n * p * (1.0 - p)).sqrt());
        println!(
            "    {name}: weight {weight}, {got} clients, expected {expected:.1} +- {sigma:.1}"
        );
        if (got - expected).abs() > 3.0 * sigma {
            outside.push(format!("{name}: {got}, expected {expected:.1}"));
        }
    }
    assert!(outside.is_empty(), "shares outside 3 sigma: {outside:?}");
}

/// `(id, address)` of every backend in the pinned maps.
fn backend_ids(pin_dir: &std::path::Path) -> Vec<(u32, SocketAddrV4)> {
    counters::read_pinned(pin_dir)
        .expect("the pinned maps are readable")
        .backends
        .iter()
        .map(|b| (b.id, b.address))
        .collect()
}

fn backend_of_each_source(report: &SpreadReport) -> BTreeMap<String, String> {
    report.backend_of_each_source()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

fn last_line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines().rev().find(|l| l.contains(needle)).unwrap_or("")
}
