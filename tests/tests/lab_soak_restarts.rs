//! The agent dies a hundred times and the node keeps serving (issue 17), in
//! a single-node lab: lbd balances the VIP over three backends while 50
//! client addresses open new connections without pause (connect, name,
//! an echoed line, close; one thread per address) and 50 connections opened
//! at the start stay open. Each cycle kills lbd with SIGKILL and starts it
//! again at once; the pinned XDP program and maps forward while no agent
//! runs, and the new agent adopts them.
//!
//! Counted, not timed: not one new connection fails, every held connection
//! echoes a line after every restart, every restarted agent adopted the
//! pins and answers `lbd status`, the data path dropped or refused nothing,
//! and every cycle saw at least [`MIN_PER_CYCLE`] connections finish (so
//! the soak cannot pass by doing nothing). The restart times are printed,
//! and bounded only generously (three times the first start plus 5 s):
//! they are mostly the kernel verifying the program again, slower while
//! the load keeps both CPUs busy.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use lb_tests::lab::client_load::{Attempt, LoadShape, failures};
use lb_tests::lab::{Lab, Lbd, ServiceConfig, counters, echo_all};

const CYCLES: usize = 100;
/// Client addresses opening new connections, one thread each.
const LOAD_SOURCES: usize = 50;
/// Connections held open through every cycle, one per further address.
const HELD: usize = 50;
/// Connections that must finish in every cycle before the next kill.
const MIN_PER_CYCLE: u64 = 50;
/// How long one cycle may wait for [`MIN_PER_CYCLE`] connections.
const CYCLE_PROGRESS: Duration = Duration::from_secs(20);
/// The whole soak stops (and fails) past this.
const SOAK_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn lab_soak_restarts() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_soak_restarts must run as root"
    );
    let lab = Lab::datapath("soakrs", 3, LOAD_SOURCES + HELD).expect("lab builds");
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
    let first_start = lbd
        .wait_for_log(Duration::from_secs(30), forwarding)
        .expect("lbd starts forwarding");
    let start_bound = first_start * 3 + Duration::from_secs(5);
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");
    println!(
        "lbd forwarding {first_start:.2?} after its first start; a restart may take up to {start_bound:.2?}"
    );

    let addresses = lab.client_addrs();
    let (load_sources, held_sources) = addresses.split_at(LOAD_SOURCES);
    let mut held = lab
        .open_held(held_sources.to_vec(), vip, Duration::from_secs(10))
        .expect("the held connections open");
    echo_all(&mut held, "start");
    let reasons_before = counters::read_pinned(&pin_dir)
        .expect("the pinned counters are readable")
        .reasons;

    let load = lab
        .start_client_load(
            load_sources,
            vip,
            LoadShape {
                pause: Duration::from_millis(40),
                timeout: Duration::from_secs(3),
                limit: SOAK_LIMIT + Duration::from_secs(60),
            },
        )
        .expect("the client load starts");
    let soak_start = Instant::now();
    let mut cycles: Vec<Cycle> = Vec::with_capacity(CYCLES);
    for cycle in 1..=CYCLES {
        assert!(
            soak_start.elapsed() < SOAK_LIMIT,
            "only {} cycles in {SOAK_LIMIT:?}",
            cycle - 1
        );
        let killed_at = kill_and_reap(&mut lbd);
        let finished_before = load.finished_so_far();
        lbd = lab.start_lbd(1, &config).expect("lbd starts again");
        lbd.wait_for_log(start_bound, forwarding)
            .unwrap_or_else(|e| panic!("cycle {cycle}: the new lbd is not forwarding: {e:#}"));
        let ready_at = Instant::now();
        lab.lbd_status_json(1)
            .unwrap_or_else(|e| panic!("cycle {cycle}: the new lbd does not answer status: {e:#}"));
        let log = lbd.log();
        assert!(
            log.lines()
                .any(|l| l.contains("forwarding") && l.contains("adopted=true")),
            "cycle {cycle}: the new lbd did not adopt the pinned program and maps:\n{log}"
        );
        echo_all(&mut held, &format!("cycle{cycle}"));
        let progress = Instant::now();
        while load.finished_so_far() < finished_before + MIN_PER_CYCLE {
            assert!(
                progress.elapsed() < CYCLE_PROGRESS,
                "cycle {cycle}: fewer than {MIN_PER_CYCLE} connections finished in {CYCLE_PROGRESS:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        cycles.push(Cycle {
            killed_at,
            ready_at,
        });
    }
    let soak_time = soak_start.elapsed();
    let attempts = load.finish().expect("the client load finishes");
    echo_all(&mut held, "end");

    let failed = failures(&attempts, 10);
    let total_failed = attempts.iter().filter(|a| a.outcome.is_err()).count();
    let no_agent: usize = cycles
        .iter()
        .map(|c| {
            attempts
                .iter()
                .filter(|a| a.overlaps(c.killed_at, c.ready_at))
                .count()
        })
        .sum();
    let per_cycle = per_cycle_counts(&cycles, &attempts);
    let mut restarts: Vec<Duration> = cycles.iter().map(|c| c.ready_at - c.killed_at).collect();
    restarts.sort();
    println!(
        "{} cycles of kill -9 and restart in {soak_time:.1?}: {} new connections from {LOAD_SOURCES} addresses ({} under way while no agent ran), {total_failed} failed; {HELD} held connections echoed {} times each",
        cycles.len(),
        attempts.len(),
        no_agent,
        cycles.len() + 2
    );
    println!(
        "connections finished per cycle: min {}, max {}; kill to forwarding again: min {:.0?}, median {:.0?}, max {:.0?}",
        per_cycle.iter().min().unwrap(),
        per_cycle.iter().max().unwrap(),
        restarts[0],
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
    assert!(
        failed.is_empty(),
        "{total_failed} new connections failed, e.g. {failed:?}"
    );
    assert!(
        per_cycle.iter().all(|&n| n >= MIN_PER_CYCLE),
        "a cycle finished fewer than {MIN_PER_CYCLE} connections: {per_cycle:?}"
    );
    let reasons_after = counters::read_pinned(&pin_dir)
        .expect("the pinned counters are readable")
        .reasons;
    let new_drops: Vec<(&str, u64)> = reasons_after
        .iter()
        .filter(|(label, count)| {
            (label.starts_with("drop_") || label.starts_with("tx_rst"))
                && reasons_before
                    .iter()
                    .find(|(l, _)| l == label)
                    .is_none_or(|(_, before)| before != count)
        })
        .copied()
        .collect();
    println!("the data path's reason counters at the end: {reasons_after:?}");
    assert!(
        new_drops.is_empty(),
        "the data path dropped or refused packets during the soak: {new_drops:?}"
    );

    drop(held);
    lbd.stop(Duration::from_secs(10))
        .expect("the last lbd stops on SIGTERM");
    drop(lbd);
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}

/// One kill and restart.
struct Cycle {
    killed_at: Instant,
    /// When the new agent logged that it forwards.
    ready_at: Instant,
}

fn forwarding(log: &str) -> bool {
    log.contains("forwarding")
}

/// SIGKILL, then reap: the pid and the agent's lock are free when this
/// returns. Returns when the signal was sent.
fn kill_and_reap(lbd: &mut Lbd) -> Instant {
    // SAFETY: our own child, not yet reaped (stop below reaps it).
    assert_eq!(
        unsafe { libc::kill(lbd.pid() as i32, libc::SIGKILL) },
        0,
        "could not kill lbd"
    );
    let at = Instant::now();
    lbd.stop(Duration::from_secs(5)).expect("lbd is reaped");
    at
}

/// Connections that ended in each cycle, from its kill to the next one's
/// (the last cycle: to the end of the load).
fn per_cycle_counts(cycles: &[Cycle], attempts: &[Attempt]) -> Vec<u64> {
    cycles
        .iter()
        .enumerate()
        .map(|(i, cycle)| {
            let end = cycles.get(i + 1).map(|next| next.killed_at);
            attempts
                .iter()
                .filter(|a| a.ended >= cycle.killed_at && end.is_none_or(|end| a.ended < end))
                .count() as u64
        })
        .collect()
}
