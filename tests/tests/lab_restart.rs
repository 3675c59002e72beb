//! Agent death and restart without a gap (docs/architecture.md, "Pins and the layout
//! version"), in a single-node namespace lab: lbd on lb1 balancing a VIP
//! over three backends while a client makes new connections from 200
//! source addresses for 4 s. One second in, lbd is killed with SIGKILL;
//! a second later a new lbd starts on the same config.
//!
//! (a) not one new connection fails, before, during or after the gap, and
//!     20 connections opened before the kill echo while no agent runs and
//!     after the restart (the flows were not flushed);
//! (b) connections opened while no agent ran were balanced over all three
//!     backends, and every source stayed on one backend throughout;
//! (c) the new lbd adopted the pinned link and maps (its log says so);
//! (d) the pinned per-backend counters went on from where they were (no
//!     backend's new-flow or packet count is below its value before the
//!     kill) and the backend ids are the same;
//! (e) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use std::net::TcpStream;

use lb_tests::lab::{Lab, ServiceConfig, connect_from, counters, echo_all, netns, read_line};

const CLIENTS: usize = 200;
/// How long the client keeps making connections.
const TRAFFIC: Duration = Duration::from_secs(4);
/// When lbd is killed, counted from the start of the traffic.
const KILL_AT: Duration = Duration::from_secs(1);
/// How long no agent runs.
const GAP: Duration = Duration::from_secs(1);
/// Pause between connections: a steady few hundred per second.
const PACE: Duration = Duration::from_millis(3);
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections held open across the kill and the restart, one per source.
const HELD: usize = 20;

/// One connection of the client loop.
struct Attempt {
    started: Instant,
    source: Ipv4Addr,
    /// The backend's name, or why the connection failed.
    outcome: Result<String, String>,
}

#[test]
fn lab_restart() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_restart must run as root"
    );
    let lab = Lab::datapath("rs", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    // The first start is the nominal time the restarted agent may take
    // (twice, plus a second) to be forwarding again.
    let first_start = lbd
        .wait_for_log(Duration::from_secs(15), |log| log.contains("forwarding"))
        .expect("lbd starts forwarding");
    let start_bound = first_start * 2 + Duration::from_secs(1);
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");

    let held_sources: Vec<Ipv4Addr> = lab.client_addrs().into_iter().rev().take(HELD).collect();
    let mut held = lab
        .run_in(
            "cl",
            move || -> anyhow::Result<Vec<(Ipv4Addr, TcpStream)>> {
                held_sources
                    .into_iter()
                    .map(|source| {
                        let mut stream = connect_from(source, vip, IO_TIMEOUT)?;
                        read_line(&mut stream)?;
                        Ok((source, stream))
                    })
                    .collect()
            },
        )
        .unwrap()
        .expect("the long-lived connections open");
    echo_all(&mut held, "before-kill");

    let client_ns = lab.netns("cl").unwrap().to_string();
    let sources = lab.client_addrs();
    let (attempts, killed_at, restarted_at, first_log, new_lbd, before, after) = std::thread::scope(
        |scope| {
            let traffic = scope.spawn(|| {
                netns::run_in(&client_ns, || client_loop(&sources, vip))
                    .expect("the client loop runs in the client namespace")
            });
            std::thread::sleep(KILL_AT);
            let before = counters::read_pinned(&pin_dir).expect("the pinned maps are readable");
            let killed_at = Instant::now();
            // SAFETY: our own lbd child, not yet reaped.
            assert_eq!(
                unsafe { libc::kill(lbd.pid() as i32, libc::SIGKILL) },
                0,
                "could not kill lbd"
            );
            let status = lbd.stop(Duration::from_secs(5)).expect("lbd is reaped");
            println!("lbd killed ({status}) {:.2?} into the traffic", KILL_AT);
            let first_log = lbd.log();
            drop(lbd);
            assert!(
                pin_dir.exists(),
                "the pins went with the killed agent: {}",
                pin_dir.display()
            );
            echo_all(&mut held, "no-agent");
            println!("{HELD} connections opened before the kill echo while no agent runs");
            std::thread::sleep(GAP.saturating_sub(killed_at.elapsed()));
            let restarted_at = Instant::now();
            let mut lbd = lab.start_lbd(1, &config).expect("lbd starts again");
            let took = lbd
                .wait_for_log(start_bound, |log| log.contains("forwarding"))
                .expect("the new lbd starts forwarding within 2x the first start + 1 s");
            println!(
                "no agent ran for {:.2?}; the new lbd was forwarding {took:.2?} after its start (first start {first_start:.2?}, bound {start_bound:.2?})",
                restarted_at - killed_at
            );
            let attempts = traffic.join().expect("the client loop finished");
            echo_all(&mut held, "restarted");
            println!("{HELD} connections opened before the kill echo after the restart");
            let after = counters::read_pinned(&pin_dir).expect("the pinned maps are readable");
            (
                attempts,
                killed_at,
                restarted_at,
                first_log,
                lbd,
                before,
                after,
            )
        },
    );
    let mut lbd = new_lbd;
    let second_log = lbd.log();

    // (a) no connection failed.
    let failed: Vec<String> = attempts
        .iter()
        .filter_map(|a| {
            a.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", a.source))
        })
        .collect();
    let gap: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= killed_at && a.started < restarted_at)
        .collect();
    println!(
        "(a) {} connections in {TRAFFIC:?} from {CLIENTS} sources, {} while no agent ran, {} failed",
        attempts.len(),
        gap.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} connections failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    // (b) balanced while no agent ran; sources stuck to their backend.
    let mut during: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &gap {
        *during.entry(a.outcome.as_deref().unwrap()).or_default() += 1;
    }
    println!("(b) connections per backend while no agent ran: {during:?}");
    assert!(
        gap.len() >= 50,
        "only {} connections ran while no agent ran",
        gap.len()
    );
    assert_eq!(
        during.len(),
        3,
        "not all three backends answered while no agent ran: {during:?}"
    );
    let mut per_source: BTreeMap<Ipv4Addr, BTreeSet<&str>> = BTreeMap::new();
    for a in &attempts {
        per_source
            .entry(a.source)
            .or_default()
            .insert(a.outcome.as_deref().unwrap());
    }
    let wandering: Vec<_> = per_source.iter().filter(|(_, b)| b.len() > 1).collect();
    assert!(
        wandering.is_empty(),
        "sources that changed backend across the restart: {wandering:?}"
    );
    println!(
        "(b) each of {} sources stayed on one backend across the restart",
        per_source.len()
    );

    // (c) the new agent adopted the pins.
    assert!(
        !first_log.contains("adopted the existing XDP link"),
        "the first lbd claims to have adopted a link in a fresh lab:\n{first_log}"
    );
    let adopted = second_log
        .lines()
        .find(|l| l.contains("adopted the existing XDP link"));
    let forwarding = second_log.lines().find(|l| l.contains("forwarding"));
    println!("(c) {}", adopted.unwrap_or("no adoption line"));
    println!("    {}", forwarding.unwrap_or("no forwarding line"));
    assert!(
        adopted.is_some() && forwarding.is_some_and(|l| l.contains("adopted=true")),
        "the new lbd did not say it adopted the pinned link and maps:\n{second_log}"
    );

    // (d) counters went on, ids unchanged.
    let ids = |c: &counters::DatapathCounters| -> Vec<(u32, SocketAddrV4)> {
        c.backends.iter().map(|b| (b.id, b.address)).collect()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "backend ids changed across the restart"
    );
    println!("(d) backend   new flows before kill -> after restart   packets to backend");
    for (b, a) in before.backends.iter().zip(&after.backends) {
        println!(
            "    {:>2} {}   {:>6} -> {:<6}   {} -> {}",
            b.id,
            b.address,
            b.stats.new_flows,
            a.stats.new_flows,
            b.stats.packets_to_backend,
            a.stats.packets_to_backend
        );
        assert!(
            a.stats.new_flows >= b.stats.new_flows
                && a.stats.packets_to_backend >= b.stats.packets_to_backend,
            "backend {} ({}) counters went back across the restart: {:?} -> {:?}",
            b.id,
            b.address,
            b.stats,
            a.stats
        );
    }
    let total = |c: &counters::DatapathCounters| -> u64 {
        c.backends.iter().map(|b| b.stats.new_flows).sum()
    };
    let after_kill = attempts.iter().filter(|a| a.started >= killed_at).count() as u64;
    assert!(
        total(&after) >= total(&before) + after_kill,
        "the data path counted {} new flows after the kill but the client made {after_kill}",
        total(&after) - total(&before)
    );

    // (e) nothing is left behind.
    lbd.stop(Duration::from_secs(10))
        .expect("the new lbd stops on SIGTERM");
    drop(lbd);
    let config_arg = config.to_string_lossy().into_owned();
    lab.lbd_command(1, &["stop", "--config", &config_arg, "--detach"])
        .expect("lbd stop --detach succeeds");
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    println!("(e) namespaces and pins of lab {prefix} are gone");
}

/// New connections round-robin over `sources` for [`TRAFFIC`]: connect,
/// read the backend's name, close.
fn client_loop(sources: &[Ipv4Addr], vip: SocketAddrV4) -> Vec<Attempt> {
    let start = Instant::now();
    let mut attempts = Vec::new();
    for source in sources.iter().cycle() {
        if start.elapsed() >= TRAFFIC {
            break;
        }
        let started = Instant::now();
        let outcome = connect_from(*source, vip, IO_TIMEOUT)
            .and_then(|mut stream| read_line(&mut stream))
            .map_err(|e| format!("{e:#}"));
        attempts.push(Attempt {
            started,
            source: *source,
            outcome,
        });
        std::thread::sleep(PACE);
    }
    attempts
}
