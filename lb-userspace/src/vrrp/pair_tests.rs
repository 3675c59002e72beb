//! Two state machines on a simulated link, timers as the agent will run
//! them (one per kind, `SetTimer` replaces, `CancelTimer` clears): the seed's
//! pair (priority 101/100, tracking weight 2), checked end to end.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::packet::Version;
use super::state::{Action, AdvertSeen, Config, Event, GarpBurst, Machine, State, TimerKind};
use super::track::{Tracked, effective_priority};

const A: usize = 0;
const B: usize = 1;

struct Pair {
    t0: Instant,
    now_us: u64,
    nodes: [Machine; 2],
    addrs: [Ipv4Addr; 2],
    base: [u8; 2],
    /// Pending timer deadlines per node and kind (µs from t0).
    timers: BTreeMap<(usize, u8), u64>,
    /// Adverts on the wire: (arrival µs, receiver, advert).
    wire: Vec<(u64, usize, AdvertSeen)>,
    vips_on: [bool; 2],
    /// A killed agent: it neither hears nor acts (its VIPs stay, as after
    /// `kill -9`; the lease, not VRRP, silences them).
    dead: [bool; 2],
}

fn kind_id(k: TimerKind) -> u8 {
    match k {
        TimerKind::MasterDown => 0,
        TimerKind::Advert => 1,
    }
}

impl Pair {
    fn new(priorities: [u8; 2]) -> Self {
        let addrs = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        let machine = |i: usize| {
            Machine::new(Config {
                version: Version::V2,
                priority: priorities[i],
                advert_interval: Duration::from_secs(1),
                preempt: true,
                preempt_delay: Duration::ZERO,
                primary_addr: addrs[i],
                garp: GarpBurst {
                    count: 5,
                    repeat_delay: Duration::from_millis(200),
                },
            })
        };
        Pair {
            t0: Instant::now(),
            now_us: 0,
            nodes: [machine(A), machine(B)],
            addrs,
            base: priorities,
            timers: BTreeMap::new(),
            wire: vec![],
            vips_on: [false; 2],
            dead: [false; 2],
        }
    }

    fn apply(&mut self, node: usize, event: Event) {
        if self.dead[node] {
            return;
        }
        let now = self.t0 + Duration::from_micros(self.now_us);
        for action in self.nodes[node].handle(now, event) {
            match action {
                Action::SendAdvert { priority } => self.wire.push((
                    self.now_us + 100,
                    1 - node,
                    AdvertSeen {
                        priority,
                        src: self.addrs[node],
                        interval: Duration::from_secs(1),
                    },
                )),
                Action::AddVips => self.vips_on[node] = true,
                Action::RemoveVips => self.vips_on[node] = false,
                Action::SetTimer { timer, at } => {
                    let at_us = (at - self.t0).as_micros() as u64;
                    self.timers.insert((node, kind_id(timer)), at_us);
                }
                Action::CancelTimer { timer } => {
                    self.timers.remove(&(node, kind_id(timer)));
                }
                Action::SendGratuitousArp(_) | Action::StateChanged(_) => {}
            }
        }
    }

    /// Runs the link and the timers until `until_us`.
    fn run_until(&mut self, until_us: u64) {
        loop {
            let next_timer = self.timers.iter().map(|(&k, &at)| (at, k)).min();
            let next_wire = self.wire.iter().map(|w| w.0).min();
            let next = match (next_timer, next_wire) {
                (Some((t, _)), Some(w)) => t.min(w),
                (Some((t, _)), None) => t,
                (None, Some(w)) => w,
                (None, None) => break,
            };
            if next > until_us {
                break;
            }
            self.now_us = next;
            if let Some(i) = self.wire.iter().position(|w| w.0 == next) {
                let (_, to, advert) = self.wire.remove(i);
                self.apply(to, Event::AdvertReceived(advert));
                continue;
            }
            let (_, (node, kind)) = next_timer.unwrap();
            self.timers.remove(&(node, kind));
            let event = if kind == 0 {
                Event::MasterDownTimerFired
            } else {
                Event::AdvertTimerFired
            };
            self.apply(node, event);
        }
        self.now_us = until_us;
    }

    fn at(&mut self, at_us: u64, node: usize, event: Event) {
        self.run_until(at_us);
        self.apply(node, event);
    }

    fn track(&mut self, at_us: u64, node: usize, haproxy_up: bool) {
        let p = effective_priority(
            self.base[node],
            &[Tracked {
                weight: 2,
                holds: haproxy_up,
            }],
        );
        self.at(at_us, node, Event::PriorityChanged(p));
    }

    fn states(&self) -> [State; 2] {
        [self.nodes[A].state(), self.nodes[B].state()]
    }

    /// The first time (µs, sampled every 10 ms) at which `node` is master.
    fn master_by(&mut self, node: usize, limit_us: u64) -> Option<u64> {
        while self.now_us < limit_us {
            let t = self.now_us + 10_000;
            self.run_until(t);
            if self.nodes[node].state() == State::Master {
                return Some(self.now_us);
            }
        }
        None
    }
}

const S: u64 = 1_000_000;

fn seed_pair() -> Pair {
    let mut p = Pair::new([101, 100]);
    p.at(0, A, Event::Startup);
    p.at(0, B, Event::Startup);
    p.track(100, A, true);
    p.track(100, B, true);
    p.run_until(10 * S);
    p
}

#[test]
fn seed_pair_elects_exactly_one_master_holding_the_vips() {
    let p = seed_pair();
    assert_eq!(p.states(), [State::Master, State::Backup]);
    assert_eq!(p.vips_on, [true, false]);
}

#[test]
fn graceful_stop_hands_over_within_skew_and_the_old_master_preempts_back() {
    let mut p = seed_pair();
    p.at(10 * S, A, Event::Shutdown);
    assert!(!p.vips_on[A]);
    // B (102, v2) takes over after its skew, 154/256 s.
    let took = p.master_by(B, 20 * S).expect("B becomes master") - 10 * S;
    assert!(took <= 620_000, "took {took} us");
    assert!(p.vips_on[B]);
    // A returns with 103 and preempts B within about a master-down interval.
    p.at(20 * S, A, Event::Startup);
    let back = p.master_by(A, 30 * S).expect("A preempts back") - 20 * S;
    assert!(back <= 3 * S + 600_000, "took {back} us");
    p.run_until(31 * S);
    assert_eq!(p.states(), [State::Master, State::Backup]);
    assert_eq!(p.vips_on, [true, false]);
}

#[test]
fn master_silence_fails_over_within_the_master_down_interval() {
    let mut p = seed_pair();
    // Agent death: A stops at once, its adverts in flight are lost.
    p.dead[A] = true;
    p.wire.clear();
    let dead_at = p.now_us;
    let took = p.master_by(B, 20 * S).expect("B becomes master") - dead_at;
    assert!(took <= 3 * S + 602_000, "took {took} us");
    p.run_until(30 * S);
    assert_eq!(p.nodes[B].state(), State::Master);
    assert!(p.vips_on[B]);
}

#[test]
fn haproxy_down_on_the_master_moves_the_vips_and_back() {
    let mut p = seed_pair();
    p.track(10 * S, A, false); // 103 -> 101 < 102
    let took = p.master_by(B, 20 * S).expect("B takes over") - 10 * S;
    assert!(took <= 3 * S + 602_000, "took {took} us");
    p.run_until(20 * S);
    assert_eq!(p.states(), [State::Backup, State::Master]);
    assert_eq!(p.vips_on, [false, true]);
    p.track(20 * S, A, true); // back to 103
    p.master_by(A, 30 * S).expect("A preempts back");
    p.run_until(31 * S);
    assert_eq!(p.vips_on, [true, false]);
}
