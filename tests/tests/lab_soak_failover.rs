//! Twenty failovers in a row (issue 17), in a two-node VRRP lab
//! (`lab::vrrp_pair`: lb1 priority 101, lb2 100, 1 s adverts, no
//! preemption): each cycle kills the master's agent with SIGKILL, waits
//! until the other node is master, starts the killed agent again and waits
//! until it is the new master's backup. So the master alternates, and each
//! node is killed as master ten times.
//!
//! All along, the client host asks who has the VIP every [`SAMPLE_EVERY`]
//! (the network's view), and 30 client addresses open new connections
//! without pause. Counted:
//! - no ARP sample is ever answered by two MACs (the dead agent's XDP
//!   program goes quiet when its lease runs out, before the peer takes
//!   over);
//! - every cycle is exactly one takeover: the survivor logs entering master
//!   once, the restarted agent never, and the answering MAC changes once
//!   per cycle, [`CYCLES`] times in all;
//! - connections fail only where a failover explains it: each failed one
//!   was under way between a kill and [`AFTER_TAKEOVER`] after the
//!   takeover (flows are not synced between the nodes, and SYNs sent while
//!   neither node answers can time out), and no more than every client
//!   thread failing once per connect timeout of that window, plus the one
//!   in flight.
//!
//! The worst silence (the time between two answered samples with only
//! unanswered ones between) is printed and bounded only generously (twice
//! the master-down interval plus 1 s).
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::time::{Duration, Instant};

use lb_tests::lab::arp::{ArpSample, longest_silence, mac_text};
use lb_tests::lab::client_load::{Attempt, LoadShape, failures};
use lb_tests::lab::topology::lb_front_addr;
use lb_tests::lab::vrrp::{InstanceView, entered, master_down};
use lb_tests::lab::vrrp_pair::{PAIR_ADVERT, PAIR_INSTANCE, PAIR_PRIORITY, VrrpPair};

const CYCLES: usize = 20;
/// Client addresses opening connections, one thread each; the first also
/// asks the ARP questions.
const LOAD_SOURCES: usize = 30;
const SAMPLE_EVERY: Duration = Duration::from_millis(75);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a takeover a failed connection is still the failover's:
/// the client's ARP entry follows the new master's gratuitous ARP.
const AFTER_TAKEOVER: Duration = Duration::from_secs(1);
/// Connections that must finish between a settled pair and the next kill.
const MIN_PER_CYCLE: u64 = 30;
/// The soak fails past this (it takes about two minutes).
const SOAK_LIMIT: Duration = Duration::from_secs(330);

/// One kill, takeover and return.
struct Cycle {
    killed: usize,
    killed_at: Instant,
    taken_over_at: Instant,
    settled_at: Instant,
}

#[test]
fn lab_soak_failover() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_soak_failover must run as root"
    );
    let mut pair = VrrpPair::new("soakfo", LOAD_SOURCES, false).expect("the pair's lab builds");
    pair.elect().expect("lb1 is elected");
    let target = pair.target();
    let vip = *target.ip();
    // Traffic gives the client an ARP entry for the VIP, which gratuitous
    // ARPs then move (they never create one).
    pair.lab
        .spread_ok(target, LOAD_SOURCES, 1, "after the election");

    let asker = pair.lab.client_addrs()[0];
    let sampler = pair
        .lab
        .sample_arp("cl", asker, vip, SAMPLE_EVERY)
        .expect("the ARP sampler starts");
    let load = pair
        .lab
        .start_client_load(
            &pair.lab.client_addrs(),
            target,
            LoadShape {
                pause: Duration::from_millis(50),
                timeout: CONNECT_TIMEOUT,
                limit: SOAK_LIMIT,
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
        let master = pair
            .master()
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e:#}"));
        let other = 3 - master;
        let survivor_before = entered(&pair.log(other), PAIR_INSTANCE, "master");
        let killed_at = pair.kill(master).expect("the master's agent dies");
        let takeover =
            2 * master_down(PAIR_PRIORITY[other - 1], PAIR_ADVERT) + Duration::from_secs(1);
        pair.wait(other, "takes over", takeover, InstanceView::is_master)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e:#}"));
        let taken_over_at = Instant::now();
        pair.start(master)
            .unwrap_or_else(|e| panic!("cycle {cycle}: lb{master} does not start again: {e:#}"));
        let master_addr = lb_front_addr(other);
        pair.wait(master, "backup of the new master", takeover, |v| {
            v.is_backup() && v.master == Some(master_addr)
        })
        .unwrap_or_else(|e| panic!("cycle {cycle}: {e:#}"));
        let settled_at = Instant::now();
        let survivor_after = entered(&pair.log(other), PAIR_INSTANCE, "master");
        let restarted = entered(&pair.log(master), PAIR_INSTANCE, "master");
        assert_eq!(
            (survivor_after - survivor_before, restarted),
            (1, 0),
            "cycle {cycle}: lb{other} must take over once and the restarted lb{master} never"
        );
        let finished = load.finished_so_far();
        let progress = Instant::now();
        while load.finished_so_far() < finished + MIN_PER_CYCLE {
            assert!(
                progress.elapsed() < Duration::from_secs(20),
                "cycle {cycle}: fewer than {MIN_PER_CYCLE} connections finished after the pair settled"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "cycle {cycle:>2}: killed lb{master}, lb{other} master {:.2?} later, lb{master} its backup {:.2?} after that",
            taken_over_at - killed_at,
            settled_at - taken_over_at
        );
        cycles.push(Cycle {
            killed: master,
            killed_at,
            taken_over_at,
            settled_at,
        });
    }
    let soak_time = soak_start.elapsed();
    let attempts = load.finish().expect("the client load finishes");
    let samples = sampler.finish().expect("the ARP sampler finishes");

    // The network's view: never two answers, one change of MAC per cycle.
    let doubled: Vec<String> = samples
        .iter()
        .filter(|s| s.answers.len() > 1)
        .map(|s| {
            format!(
                "{:.2?} into the soak: {:?}",
                s.at.saturating_duration_since(soak_start),
                s.answers.iter().map(mac_text).collect::<Vec<_>>()
            )
        })
        .collect();
    let changes = mac_changes(&samples);
    let silent = samples.iter().filter(|s| s.answers.is_empty()).count();
    let worst_gap = longest_silence(&samples);
    let gap_bound = 2 * master_down(PAIR_PRIORITY[1], PAIR_ADVERT) + Duration::from_secs(1);

    // Connections: which failures a failover explains.
    let total_failed = attempts.iter().filter(|a| a.outcome.is_err()).count();
    let unexplained: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome.is_err())
        .filter(|a| {
            !cycles
                .iter()
                .any(|c| a.overlaps(c.killed_at, c.taken_over_at + AFTER_TAKEOVER))
        })
        .collect();
    let per_cycle_bound: Vec<u64> = cycles
        .iter()
        .map(|c| {
            let window = (c.taken_over_at + AFTER_TAKEOVER) - c.killed_at;
            LOAD_SOURCES as u64 * (window.as_millis() / CONNECT_TIMEOUT.as_millis() + 2) as u64
        })
        .collect();
    let per_cycle_failed: Vec<u64> = cycles
        .iter()
        .map(|c| {
            attempts
                .iter()
                .filter(|a| a.outcome.is_err())
                .filter(|a| a.overlaps(c.killed_at, c.taken_over_at + AFTER_TAKEOVER))
                .count() as u64
        })
        .collect();
    let takeovers: Vec<Duration> = cycles
        .iter()
        .map(|c| c.taken_over_at - c.killed_at)
        .collect();
    let killed_lb1 = cycles.iter().filter(|c| c.killed == 1).count();

    println!(
        "{} cycles in {soak_time:.1?} (lb1 killed as master {killed_lb1} times, lb2 {}): {} takeovers by the agents' logs, {changes} changes of the answering MAC",
        cycles.len(),
        cycles.len() - killed_lb1,
        cycles.len()
    );
    println!(
        "takeover after the kill: min {:.2?}, max {:.2?}; restarted agent a backup after: max {:.2?}",
        takeovers.iter().min().unwrap(),
        takeovers.iter().max().unwrap(),
        cycles
            .iter()
            .map(|c| c.settled_at - c.taken_over_at)
            .max()
            .unwrap()
    );
    println!(
        "ARP: {} samples every {SAMPLE_EVERY:?}, {} answered by two MACs, {silent} unanswered; worst silence {worst_gap:.0?} (bound {gap_bound:.0?})",
        samples.len(),
        doubled.len()
    );
    println!(
        "connections: {} from {LOAD_SOURCES} addresses, {total_failed} failed, per cycle {per_cycle_failed:?} (bounds {:?}..{:?}), {} outside the failover windows; e.g. {:?}",
        attempts.len(),
        per_cycle_bound.iter().min().unwrap(),
        per_cycle_bound.iter().max().unwrap(),
        unexplained.len(),
        failures(&attempts, 5)
    );

    for (n, cycle) in cycles.iter().enumerate() {
        let failed: Vec<String> = attempts
            .iter()
            .filter(|a| a.outcome.is_err())
            .filter(|a| a.overlaps(cycle.killed_at, cycle.taken_over_at + AFTER_TAKEOVER))
            .take(3)
            .map(|a| {
                format!(
                    "{} from {:+.2}s to {:+.2}s: {}",
                    a.source,
                    signed(a.started, cycle.killed_at),
                    signed(a.ended, cycle.killed_at),
                    a.outcome.as_ref().unwrap_err()
                )
            })
            .collect();
        if !failed.is_empty() {
            println!(
                "  cycle {}: failures (seconds from the kill; takeover at +{:.2}s), e.g. {failed:?}",
                n + 1,
                signed(cycle.taken_over_at, cycle.killed_at)
            );
        }
    }
    assert!(
        doubled.is_empty(),
        "two nodes answered ARP for {vip} at once: {doubled:?}"
    );
    assert_eq!(
        changes, CYCLES,
        "the MAC answering for {vip} did not change exactly once per cycle"
    );
    assert!(
        worst_gap <= gap_bound,
        "no node answered ARP for {vip} for {worst_gap:?}"
    );
    assert!(
        unexplained.is_empty(),
        "connections failed outside any failover window: {:?}",
        unexplained
            .iter()
            .take(10)
            .map(|a| format!(
                "{} at {:.2?}: {:?}",
                a.source,
                a.started.saturating_duration_since(soak_start),
                a.outcome
            ))
            .collect::<Vec<_>>()
    );
    for (n, (failed, bound)) in per_cycle_failed.iter().zip(&per_cycle_bound).enumerate() {
        assert!(
            failed <= bound,
            "cycle {}: {failed} connections failed, more than {bound}",
            n + 1
        );
    }
    pair.finish().expect("teardown is clean");
}

/// How many times the answering MAC changed, unanswered samples skipped.
fn mac_changes(samples: &[ArpSample]) -> usize {
    let answered: Vec<_> = samples.iter().filter_map(|s| s.answers.first()).collect();
    answered.windows(2).filter(|w| w[0] != w[1]).count()
}

/// `at - origin` in signed seconds, for messages.
fn signed(at: Instant, origin: Instant) -> f64 {
    match at.checked_duration_since(origin) {
        Some(after) => after.as_secs_f64(),
        None => -(origin - at).as_secs_f64(),
    }
}
