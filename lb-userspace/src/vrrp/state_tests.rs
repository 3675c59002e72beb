//! Scenario tables for the state machine: each step is an event at a time
//! (microseconds from the start), the state expected after it, and the
//! exact actions expected, in order.

use super::*;

const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LOW_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HIGH_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const GARP: GarpBurst = GarpBurst {
    count: 5,
    repeat_delay: Duration::from_millis(200),
};

/// v3, 1 s, priority 100: skew 156/256 s = 609_375 us, so the
/// master-down interval is 3_609_375 us.
const MDI_100: u64 = 3_609_375;
const SEC: u64 = 1_000_000;

fn config() -> Config {
    Config {
        version: Version::V3,
        priority: 100,
        advert_interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_addr: ME,
        garp: GARP,
    }
}

/// An action with the transition reduced to what the tables check and
/// times as microseconds from the start.
#[derive(Debug, PartialEq, Eq)]
enum Exp {
    Changed(State, State, Reason),
    Send(u8),
    Add,
    Remove,
    Garp,
    SetDown(u64),
    SetAdvert(u64),
    CancelDown,
    CancelAdvert,
}

use Exp::*;
use State::{Backup, Initialize, Master};

fn advert(priority: u8, src: Ipv4Addr) -> Event {
    Event::AdvertReceived(AdvertSeen {
        priority,
        src,
        interval: Duration::from_secs(1),
    })
}

struct Step {
    at_us: u64,
    event: Event,
    state: State,
    actions: Vec<Exp>,
}

fn step(at_us: u64, event: Event, state: State, actions: Vec<Exp>) -> Step {
    Step {
        at_us,
        event,
        state,
        actions,
    }
}

fn run(name: &str, cfg: Config, steps: Vec<Step>) -> Machine {
    let t0 = Instant::now();
    let us = |at: Instant| (at - t0).as_micros() as u64;
    let mut m = Machine::new(cfg);
    for (i, s) in steps.into_iter().enumerate() {
        let actions = m.handle(t0 + Duration::from_micros(s.at_us), s.event);
        let got: Vec<Exp> = actions
            .into_iter()
            .map(|a| match a {
                Action::StateChanged(t) => Changed(t.from, t.to, t.reason),
                Action::SendAdvert { priority } => Send(priority),
                Action::AddVips => Add,
                Action::RemoveVips => Remove,
                Action::SendGratuitousArp(g) => {
                    assert_eq!(g, GARP, "{name}: configured burst");
                    Garp
                }
                Action::SetTimer { timer, at } => match timer {
                    TimerKind::MasterDown => SetDown(us(at)),
                    TimerKind::Advert => SetAdvert(us(at)),
                },
                Action::CancelTimer { timer } => match timer {
                    TimerKind::MasterDown => CancelDown,
                    TimerKind::Advert => CancelAdvert,
                },
            })
            .collect();
        assert_eq!(got, s.actions, "{name}: step {i} ({:?})", s.event);
        assert_eq!(m.state(), s.state, "{name}: state after step {i}");
    }
    m
}

fn become_master(reason: Reason, priority: u8, at_us: u64) -> Vec<Exp> {
    vec![
        Changed(Backup, Master, reason),
        Send(priority),
        Add,
        Garp,
        SetAdvert(at_us + SEC),
    ]
}

/// Startup, then master after the master-down interval (no peer).
fn master_steps() -> Vec<Step> {
    vec![
        step(
            0,
            Event::Startup,
            Backup,
            vec![
                Changed(Initialize, Backup, Reason::Startup),
                SetDown(MDI_100),
            ],
        ),
        step(
            MDI_100,
            Event::MasterDownTimerFired,
            Master,
            become_master(Reason::MasterDown, 100, MDI_100),
        ),
    ]
}

#[test]
fn timing_formulas() {
    let m = Machine::new(config());
    assert_eq!(m.skew_time(), Duration::from_micros(609_375));
    assert_eq!(m.master_down_interval(), Duration::from_micros(MDI_100));
    let v2 = Machine::new(Config {
        version: Version::V2,
        advert_interval: Duration::from_secs(2),
        ..config()
    });
    // v2 skew does not scale with the interval.
    assert_eq!(v2.skew_time(), Duration::from_micros(609_375));
    assert_eq!(
        v2.master_down_interval(),
        Duration::from_micros(6 * SEC + 609_375)
    );
}

#[test]
fn startup_as_backup_then_master_and_advertising() {
    let mut steps = master_steps();
    steps.push(step(
        MDI_100 + SEC,
        Event::AdvertTimerFired,
        Master,
        vec![Send(100), SetAdvert(MDI_100 + 2 * SEC)],
    ));
    run("startup", config(), steps);
}

#[test]
fn backup_follows_a_higher_master_and_ignores_stale_timers() {
    run(
        "follow",
        config(),
        vec![
            step(
                0,
                Event::Startup,
                Backup,
                vec![
                    Changed(Initialize, Backup, Reason::Startup),
                    SetDown(MDI_100),
                ],
            ),
            step(
                SEC,
                advert(101, LOW_PEER),
                Backup,
                vec![SetDown(SEC + MDI_100)],
            ),
            // The first timer, already replaced, fires late: ignored.
            step(MDI_100, Event::MasterDownTimerFired, Backup, vec![]),
            // Equal priority is followed too: backups do not tie-break.
            step(
                2 * SEC,
                advert(100, LOW_PEER),
                Backup,
                vec![SetDown(2 * SEC + MDI_100)],
            ),
            step(
                2 * SEC + MDI_100,
                Event::MasterDownTimerFired,
                Master,
                become_master(Reason::MasterDown, 100, 2 * SEC + MDI_100),
            ),
        ],
    );
}

#[test]
fn master_yields_to_higher_priority_and_to_equal_priority_higher_address() {
    for (priority, src, reason) in [
        (101, LOW_PEER, Reason::HigherPriority),
        (100, HIGH_PEER, Reason::EqualPriorityHigherAddress),
    ] {
        let t = MDI_100 + SEC / 2;
        let mut steps = master_steps();
        steps.push(step(
            t,
            advert(priority, src),
            Backup,
            vec![
                Changed(Master, Backup, reason),
                CancelAdvert,
                Remove,
                SetDown(t + MDI_100),
            ],
        ));
        let m = run("yield", config(), steps);
        assert_eq!(m.followed_master(), Some(src));
    }
}

#[test]
fn master_answers_lower_priority_and_lower_address_at_once() {
    let t = MDI_100 + SEC / 2;
    let mut steps = master_steps();
    steps.push(step(t, advert(99, HIGH_PEER), Master, vec![Send(100)]));
    steps.push(step(t + 1, advert(100, LOW_PEER), Master, vec![Send(100)]));
    run("lower", config(), steps);
}

#[test]
fn priority_zero_gives_fast_takeover_after_skew() {
    let t = 3 * SEC / 2;
    let m = run(
        "resign",
        config(),
        vec![
            step(
                0,
                Event::Startup,
                Backup,
                vec![
                    Changed(Initialize, Backup, Reason::Startup),
                    SetDown(MDI_100),
                ],
            ),
            step(
                SEC,
                advert(101, LOW_PEER),
                Backup,
                vec![SetDown(SEC + MDI_100)],
            ),
            step(t, advert(0, LOW_PEER), Backup, vec![SetDown(t + 609_375)]),
            step(
                t + 609_375,
                Event::MasterDownTimerFired,
                Master,
                become_master(Reason::PeerResigned, 100, t + 609_375),
            ),
        ],
    );
    assert_eq!(m.followed_master(), None);
}

#[test]
fn master_receiving_priority_zero_advertises_at_once() {
    let t = MDI_100 + 100;
    let mut steps = master_steps();
    steps.push(step(
        t,
        advert(0, LOW_PEER),
        Master,
        vec![Send(100), SetAdvert(t + SEC)],
    ));
    run("zero", config(), steps);
}

fn lower_master_steps(cfg_steps_after: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![step(
        0,
        Event::Startup,
        Backup,
        vec![
            Changed(Initialize, Backup, Reason::Startup),
            SetDown(MDI_100),
        ],
    )];
    steps.extend(cfg_steps_after);
    steps
}

#[test]
fn preempt_ignores_lower_master_and_takes_over() {
    run(
        "preempt",
        config(),
        lower_master_steps(vec![
            step(SEC, advert(90, LOW_PEER), Backup, vec![]),
            step(2 * SEC, advert(90, LOW_PEER), Backup, vec![]),
            step(
                MDI_100,
                Event::MasterDownTimerFired,
                Master,
                become_master(Reason::MasterDown, 100, MDI_100),
            ),
        ]),
    );
}

#[test]
fn nopreempt_follows_a_lower_master() {
    let cfg = Config {
        preempt: false,
        ..config()
    };
    run(
        "nopreempt",
        cfg,
        lower_master_steps(vec![
            step(
                SEC,
                advert(90, LOW_PEER),
                Backup,
                vec![SetDown(SEC + MDI_100)],
            ),
            step(MDI_100, Event::MasterDownTimerFired, Backup, vec![]),
            step(
                2 * SEC,
                advert(90, LOW_PEER),
                Backup,
                vec![SetDown(2 * SEC + MDI_100)],
            ),
        ]),
    );
}

#[test]
fn preempt_delay_follows_a_lower_master_until_the_delay_is_over() {
    let cfg = Config {
        preempt_delay: Duration::from_secs(5),
        ..config()
    };
    let mut after = vec![];
    // Accepted from 1 s (delay starts, ends at 6 s) to 5 s.
    for s in 1..=5 {
        after.push(step(
            s * SEC,
            advert(90, LOW_PEER),
            Backup,
            vec![SetDown(s * SEC + MDI_100)],
        ));
    }
    after.push(step(6 * SEC, advert(90, LOW_PEER), Backup, vec![]));
    after.push(step(7 * SEC, advert(90, LOW_PEER), Backup, vec![]));
    after.push(step(
        5 * SEC + MDI_100,
        Event::MasterDownTimerFired,
        Master,
        become_master(Reason::MasterDown, 100, 5 * SEC + MDI_100),
    ));
    run("preempt_delay", cfg, lower_master_steps(after));
}

#[test]
fn preempt_delay_restarts_after_a_higher_advert() {
    let cfg = Config {
        preempt_delay: Duration::from_secs(5),
        ..config()
    };
    run(
        "preempt_delay_reset",
        cfg,
        lower_master_steps(vec![
            step(
                SEC,
                advert(90, LOW_PEER),
                Backup,
                vec![SetDown(SEC + MDI_100)],
            ),
            // A higher advert stops the delay ...
            step(
                2 * SEC,
                advert(110, LOW_PEER),
                Backup,
                vec![SetDown(2 * SEC + MDI_100)],
            ),
            // ... so at 6 s (the first deadline) lower adverts still count.
            step(
                6 * SEC,
                advert(90, LOW_PEER),
                Backup,
                vec![SetDown(6 * SEC + MDI_100)],
            ),
        ]),
    );
}

#[test]
fn address_owner_is_master_at_once_and_keeps_255() {
    let cfg = Config {
        priority: 255,
        ..config()
    };
    let m = run(
        "owner",
        cfg,
        vec![
            step(
                0,
                Event::Startup,
                Master,
                vec![
                    Changed(Initialize, Master, Reason::AddressOwner),
                    Send(255),
                    Add,
                    Garp,
                    SetAdvert(SEC),
                ],
            ),
            step(10, Event::PriorityChanged(200), Master, vec![]),
            step(20, advert(254, LOW_PEER), Master, vec![Send(255)]),
        ],
    );
    assert_eq!(m.priority(), 255);
}

#[test]
fn tracking_raises_a_backup_above_the_master_and_it_preempts() {
    // Priority 102 (seed: 100 + weight 2): skew 154/256 s = 601_562 us,
    // 7_813 us less than at 100; the running timer moves by as much.
    let mdi_102 = 3 * SEC + 601_562;
    run(
        "track_up",
        config(),
        lower_master_steps(vec![
            step(
                SEC,
                advert(101, LOW_PEER),
                Backup,
                vec![SetDown(SEC + MDI_100)],
            ),
            step(
                3 * SEC / 2,
                Event::PriorityChanged(102),
                Backup,
                vec![SetDown(SEC + mdi_102)],
            ),
            step(2 * SEC, advert(101, LOW_PEER), Backup, vec![]),
            step(
                SEC + mdi_102,
                Event::MasterDownTimerFired,
                Master,
                become_master(Reason::MasterDown, 102, SEC + mdi_102),
            ),
        ]),
    );
}

#[test]
fn tracking_lowers_the_master_below_the_backup() {
    let cfg = Config {
        priority: 103,
        ..config()
    };
    // Priority 103: skew 153/256 s = 597_656 us.
    let mdi_103 = 3 * SEC + 597_656;
    let t = mdi_103 + SEC / 2;
    run(
        "track_down",
        cfg,
        vec![
            step(
                0,
                Event::Startup,
                Backup,
                vec![
                    Changed(Initialize, Backup, Reason::Startup),
                    SetDown(mdi_103),
                ],
            ),
            step(
                mdi_103,
                Event::MasterDownTimerFired,
                Master,
                become_master(Reason::MasterDown, 103, mdi_103),
            ),
            // HAProxy gone: 103 -> 101, advertised at once.
            step(
                t,
                Event::PriorityChanged(101),
                Master,
                vec![Send(101), SetAdvert(t + SEC)],
            ),
            // The peer (102) takes over and advertises; we step down.
            step(
                t + 100,
                advert(102, LOW_PEER),
                Backup,
                vec![
                    Changed(Master, Backup, Reason::HigherPriority),
                    CancelAdvert,
                    Remove,
                    SetDown(t + 100 + 3 * SEC + 605_468),
                ],
            ),
        ],
    );
}

#[test]
fn shutdown_resigns_with_priority_zero() {
    let mut steps = master_steps();
    steps.push(step(
        MDI_100 + 10,
        Event::Shutdown,
        Initialize,
        vec![
            Changed(Master, Initialize, Reason::Shutdown),
            CancelAdvert,
            Send(0),
            Remove,
        ],
    ));
    steps.push(step(
        MDI_100 + 20,
        Event::AdvertTimerFired,
        Initialize,
        vec![],
    ));
    run("shutdown_master", config(), steps);
    run(
        "shutdown_backup",
        config(),
        vec![
            step(
                0,
                Event::Startup,
                Backup,
                vec![
                    Changed(Initialize, Backup, Reason::Startup),
                    SetDown(MDI_100),
                ],
            ),
            step(
                10,
                Event::Shutdown,
                Initialize,
                vec![Changed(Backup, Initialize, Reason::Shutdown), CancelDown],
            ),
            step(MDI_100, Event::MasterDownTimerFired, Initialize, vec![]),
        ],
    );
}

#[test]
fn v3_backup_adopts_the_masters_interval() {
    let fast = Event::AdvertReceived(AdvertSeen {
        priority: 101,
        src: LOW_PEER,
        interval: Duration::from_millis(500),
    });
    // 3 * 0.5 s + 156/256 * 0.5 s = 1_804_687 us.
    let m = run(
        "adopt",
        config(),
        lower_master_steps(vec![step(
            SEC,
            fast,
            Backup,
            vec![SetDown(SEC + 1_804_687)],
        )]),
    );
    assert_eq!(m.master_down_interval(), Duration::from_micros(1_804_687));
}

#[test]
fn resume_is_master_at_once_and_keeps_advertising() {
    run(
        "resume",
        config(),
        vec![
            step(
                0,
                Event::Resume,
                Master,
                vec![
                    Changed(Initialize, Master, Reason::Resumed),
                    Send(100),
                    Add,
                    Garp,
                    SetAdvert(SEC),
                ],
            ),
            step(
                SEC,
                Event::AdvertTimerFired,
                Master,
                vec![Send(100), SetAdvert(2 * SEC)],
            ),
            // A resumed master still yields to a higher peer.
            step(
                SEC + 10,
                advert(150, LOW_PEER),
                Backup,
                vec![
                    Changed(Master, Backup, Reason::HigherPriority),
                    CancelAdvert,
                    Remove,
                    SetDown(SEC + 10 + MDI_100),
                ],
            ),
        ],
    );
}

#[test]
fn resume_after_startup_changes_nothing() {
    let mut steps = master_steps();
    steps.push(step(MDI_100 + 1, Event::Resume, Master, vec![]));
    run("resume_late", config(), steps);
    run(
        "resume_backup",
        config(),
        vec![
            step(
                0,
                Event::Startup,
                Backup,
                vec![
                    Changed(Initialize, Backup, Reason::Startup),
                    SetDown(MDI_100),
                ],
            ),
            step(10, Event::Resume, Backup, vec![]),
        ],
    );
}

#[test]
fn transition_reads_as_the_log_line() {
    let t = Transition {
        from: Backup,
        to: Master,
        reason: Reason::MasterDown,
        priority: 102,
        peer: None,
    };
    assert_eq!(
        t.to_string(),
        "backup -> master (master down), priority 102"
    );
    assert_eq!(
        serde_json::to_string(&Initialize).unwrap(),
        "\"initialize\""
    );
}

#[test]
fn link_down_puts_a_master_in_fault_and_link_up_makes_it_backup_again() {
    let down_at = MDI_100 + 500_000;
    let up_at = down_at + 10 * SEC;
    let mut steps = master_steps();
    steps.extend([
        step(
            down_at,
            Event::LinkDown,
            State::Fault,
            vec![
                Changed(Master, State::Fault, Reason::LinkDown),
                CancelAdvert,
                Remove,
            ],
        ),
        // Nothing moves a faulty instance: no adverts, no timers, no election.
        step(down_at + SEC, Event::AdvertTimerFired, State::Fault, vec![]),
        step(
            down_at + 2 * SEC,
            advert(50, LOW_PEER),
            State::Fault,
            vec![],
        ),
        step(
            down_at + 3 * SEC,
            Event::MasterDownTimerFired,
            State::Fault,
            vec![],
        ),
        step(
            up_at,
            Event::LinkUp,
            Backup,
            vec![
                Changed(State::Fault, Backup, Reason::LinkUp),
                SetDown(up_at + MDI_100),
            ],
        ),
        step(
            up_at + MDI_100,
            Event::MasterDownTimerFired,
            Master,
            become_master(Reason::MasterDown, 100, up_at + MDI_100),
        ),
    ]);
    run("link flap of a master", config(), steps);
}

#[test]
fn link_down_stops_a_backup_waiting_and_a_repeated_event_changes_nothing() {
    let steps = vec![
        step(
            0,
            Event::Startup,
            Backup,
            vec![
                Changed(Initialize, Backup, Reason::Startup),
                SetDown(MDI_100),
            ],
        ),
        step(
            SEC,
            Event::LinkDown,
            State::Fault,
            vec![Changed(Backup, State::Fault, Reason::LinkDown), CancelDown],
        ),
        step(2 * SEC, Event::LinkDown, State::Fault, vec![]),
        step(3 * SEC, Event::PriorityChanged(120), State::Fault, vec![]),
        step(
            4 * SEC,
            Event::LinkUp,
            Backup,
            vec![
                Changed(State::Fault, Backup, Reason::LinkUp),
                // The new priority's shorter skew.
                SetDown(4 * SEC + 3 * SEC + 531_250),
            ],
        ),
        step(5 * SEC, Event::LinkUp, Backup, vec![]),
    ];
    let m = run("link flap of a backup", config(), steps);
    assert_eq!(m.priority(), 120);
}

#[test]
fn shutdown_in_fault_removes_nothing() {
    let steps = vec![
        step(
            0,
            Event::LinkDown,
            State::Fault,
            vec![Changed(Initialize, State::Fault, Reason::LinkDown)],
        ),
        step(SEC, Event::Startup, State::Fault, vec![]),
        step(
            2 * SEC,
            Event::Shutdown,
            Initialize,
            vec![
                Changed(State::Fault, Initialize, Reason::Shutdown),
                CancelDown,
            ],
        ),
    ];
    run("shutdown while faulty", config(), steps);
}
