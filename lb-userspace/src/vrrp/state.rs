//! The VRRP state machine, pure: events in, actions out. No clock inside:
//! every event comes with the `Instant` it happened at, and timers are
//! actions (`SetTimer { at }`) that the agent turns into real timers and
//! feeds back as `*TimerFired` events. A timer event that arrives after the
//! machine moved its deadline is recognised as stale and ignored.
//!
//! RFC 5798 section 6.4, with keepalived 2.2's choices where they differ
//! or where the RFC leaves room (vrrp.c `vrrp_state_backup`,
//! `vrrp_state_master_rx`, vrrp_track.c):
//! - Skew_Time: v3 `(256 - priority) * Master_Adver_Interval / 256`;
//!   v2 `(256 - priority) / 256` seconds. Master_Down_Interval =
//!   `3 * Master_Adver_Interval + Skew_Time`. The priority is the effective
//!   one. A v3 backup adopts the master's advertised interval; v2 keeps its
//!   own (adverts with another interval are dropped by the checks).
//! - Backup: priority 0 sets the master-down timer to Skew_Time. An advert
//!   is accepted (timer restarted) when we do not preempt, when its priority
//!   is >= ours, or while a preempt delay is running; a lower priority advert
//!   otherwise is ignored, so the running timer expires and we take over.
//!   The preempt delay starts at the first lower-priority advert and stops
//!   when a higher or equal one comes. Backups never break ties by address.
//! - Master: priority 0 -> send an advert at once. Higher priority, or equal
//!   priority from a higher primary address -> backup. Lower priority (or
//!   equal from a lower address) -> send an advert at once, as keepalived
//!   does to end a split quickly.
//! - Becoming master: advert first (the old master drops the VIPs before our
//!   gratuitous ARPs), then the VIPs, then the ARP burst.
//! - A priority change re-times a running master-down timer by the change of
//!   skew (keepalived). A master advertises the new priority at once
//!   (keepalived waits for the next advert; telling the backup sooner only
//!   starts its takeover sooner).
//! - Shutdown: a master sends priority 0 and removes the VIPs.
//! - Priority 255 (address owner) goes master at startup without waiting.
//! - Resume (lbd only): an agent restarted while its lease is fresh and its
//!   VIPs are still on the interface was master a moment ago, and the peer
//!   still sees it as master; it starts as master at once instead of
//!   waiting a master-down interval as backup (which would be a failover).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::check::Received;
use super::packet::Version;

/// What the state machine needs from the configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub version: Version,
    /// Base priority 1..=255; 255 is the address owner.
    pub priority: u8,
    /// Our advertisement interval (v2: whole seconds).
    pub advert_interval: Duration,
    /// On by default; keepalived's `nopreempt` turns it off.
    pub preempt: bool,
    /// keepalived's `preempt_delay`; zero for none.
    pub preempt_delay: Duration,
    /// Our primary (source) address: the equal-priority tie-break.
    pub primary_addr: Ipv4Addr,
    pub garp: GarpBurst,
}

/// Gratuitous ARPs sent on becoming master: `count` rounds for every VIP,
/// `repeat_delay` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpBurst {
    pub count: u32,
    pub repeat_delay: Duration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Initialize,
    Backup,
    Master,
    /// The interface is down (keepalived's FAULT): no adverts, no VIPs, no
    /// election until it is up again, then backup.
    Fault,
}

impl State {
    /// The lowercase name used in logs and `lbd status`.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    MasterDown,
    Advert,
}

/// The parts of an accepted advert the machine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertSeen {
    pub priority: u8,
    pub src: Ipv4Addr,
    /// The advertised interval (v3: the master's Max Adver Int).
    pub interval: Duration,
}

impl From<&Received> for AdvertSeen {
    fn from(r: &Received) -> Self {
        AdvertSeen {
            priority: r.advert.priority,
            src: r.src,
            interval: Duration::from_millis(u64::from(r.advert.interval_cs) * 10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    /// Startup of an agent that finds its lease fresh and its VIPs on the
    /// interface: it was master until a moment ago, so it stays master.
    Resume,
    Shutdown,
    /// An advert that passed `check::check_advert`.
    AdvertReceived(AdvertSeen),
    MasterDownTimerFired,
    AdvertTimerFired,
    /// The new effective priority (`track::effective_priority`).
    PriorityChanged(u8),
    /// The interface lost its carrier, went down administratively, or is
    /// gone.
    LinkDown,
    /// The interface is up and running again.
    LinkUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Startup,
    /// Priority 255 takes over at once.
    AddressOwner,
    /// No advert from a master within the master-down interval.
    MasterDown,
    /// The master advertised priority 0 (it is stopping).
    PeerResigned,
    HigherPriority,
    EqualPriorityHigherAddress,
    Shutdown,
    /// A restarted agent found a fresh lease and its VIPs in place.
    Resumed,
    LinkDown,
    LinkUp,
}

impl Reason {
    /// Words for the transition log line.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::AddressOwner => "address owner",
            Reason::MasterDown => "master down",
            Reason::PeerResigned => "peer resigned",
            Reason::HigherPriority => "higher priority",
            Reason::EqualPriorityHigherAddress => "equal priority, higher address",
            Reason::Shutdown => "shutdown",
            Reason::Resumed => "resumed with a fresh lease",
            Reason::LinkDown => "interface down",
            Reason::LinkUp => "interface up",
        }
    }
}

/// A peer as seen in its last advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: Ipv4Addr,
    pub priority: u8,
}

/// One state change, with what an operator needs in one log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// Our effective priority.
    pub priority: u8,
    /// The peer involved, if any.
    pub peer: Option<Peer>,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The form operators and the labs grep for:
        // `backup -> master (master down), priority 102`.
        write!(
            f,
            "{} -> {} ({}), priority {}",
            self.from,
            self.to,
            self.reason.describe(),
            self.priority
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVips,
    RemoveVips,
    SendGratuitousArp(GarpBurst),
    /// (Re)arms the timer of that kind; there is one of each.
    SetTimer {
        timer: TimerKind,
        at: Instant,
    },
    CancelTimer {
        timer: TimerKind,
    },
    StateChanged(Transition),
}

pub struct Machine {
    cfg: Config,
    state: State,
    priority: u8,
    master_adver_interval: Duration,
    master_down_at: Option<Instant>,
    preempt_deadline: Option<Instant>,
    /// The master we follow (backup) or last heard from.
    master: Option<Peer>,
    /// The followed master sent priority 0.
    master_resigned: bool,
}

impl Machine {
    pub fn new(cfg: Config) -> Self {
        Machine {
            priority: cfg.priority,
            master_adver_interval: cfg.advert_interval,
            state: State::Initialize,
            master_down_at: None,
            preempt_deadline: None,
            master: None,
            master_resigned: false,
            cfg,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority we advertise.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// While backup, the master we follow: adverts from it are exempt from
    /// the address checks under `vrrp_skip_check_adv_addr`.
    pub fn followed_master(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Backup => self.master.map(|p| p.addr),
            _ => None,
        }
    }

    pub fn skew_time(&self) -> Duration {
        let share = u64::from(256 - u16::from(self.priority));
        let unit = match self.cfg.version {
            Version::V2 => Duration::from_secs(1),
            Version::V3 => self.master_adver_interval,
        };
        Duration::from_micros(unit.as_micros() as u64 * share / 256)
    }

    /// How long a backup waits for adverts; also the lease bound.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval + self.skew_time()
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match (self.state, event) {
            (State::Initialize, Event::Startup) => self.startup(now),
            (State::Initialize, Event::Resume) => self.become_master(now, Reason::Resumed),
            (State::Initialize, Event::PriorityChanged(p)) => {
                self.set_priority(p);
                vec![]
            }
            (State::Fault, Event::LinkUp) => self.link_up(now),
            (State::Fault, Event::Shutdown) => self.shutdown(),
            (State::Fault, Event::PriorityChanged(p)) => {
                self.set_priority(p);
                vec![]
            }
            (State::Fault, _) => vec![],
            (_, Event::LinkDown) => self.link_down(),
            (_, Event::LinkUp) => vec![],
            (State::Initialize, _) => vec![],
            (_, Event::Startup | Event::Resume) => vec![],
            (_, Event::Shutdown) => self.shutdown(),
            (_, Event::PriorityChanged(p)) => self.priority_changed(now, p),
            (State::Backup, Event::AdvertReceived(a)) => self.backup_rx(now, a),
            (State::Backup, Event::MasterDownTimerFired) => match self.master_down_at {
                Some(at) if now >= at => {
                    let reason = if self.master_resigned {
                        Reason::PeerResigned
                    } else {
                        Reason::MasterDown
                    };
                    self.become_master(now, reason)
                }
                _ => vec![],
            },
            (State::Backup, Event::AdvertTimerFired) => vec![],
            (State::Master, Event::AdvertReceived(a)) => self.master_rx(now, a),
            (State::Master, Event::AdvertTimerFired) => self.advertise(now),
            (State::Master, Event::MasterDownTimerFired) => vec![],
        }
    }

    fn startup(&mut self, now: Instant) -> Vec<Action> {
        if self.priority == 255 {
            return self.become_master(now, Reason::AddressOwner);
        }
        self.state = State::Backup;
        self.master_adver_interval = self.cfg.advert_interval;
        let mut out = vec![self.transition(State::Initialize, Reason::Startup, None)];
        out.push(self.arm_master_down(now + self.master_down_interval()));
        out
    }

    /// Into FAULT from any state: a master gives up its VIPs at once (its
    /// adverts cannot leave, so the peer takes over after its master-down
    /// interval, and the lease ends the data path's claim), a backup stops
    /// waiting for a master it cannot hear.
    fn link_down(&mut self) -> Vec<Action> {
        let from = self.state;
        self.state = State::Fault;
        let mut out = vec![self.transition(from, Reason::LinkDown, None)];
        match from {
            State::Master => out.extend([
                Action::CancelTimer {
                    timer: TimerKind::Advert,
                },
                Action::RemoveVips,
            ]),
            State::Backup => out.push(Action::CancelTimer {
                timer: TimerKind::MasterDown,
            }),
            State::Initialize | State::Fault => {}
        }
        self.master_down_at = None;
        self.preempt_deadline = None;
        self.master = None;
        self.master_resigned = false;
        out
    }

    /// Out of FAULT as from a start: backup, waiting a master-down interval
    /// for a master before taking over (an address owner takes over at once).
    fn link_up(&mut self, now: Instant) -> Vec<Action> {
        if self.priority == 255 {
            return self.become_master(now, Reason::LinkUp);
        }
        self.state = State::Backup;
        self.master_adver_interval = self.cfg.advert_interval;
        let mut out = vec![self.transition(State::Fault, Reason::LinkUp, None)];
        out.push(self.arm_master_down(now + self.master_down_interval()));
        out
    }

    fn shutdown(&mut self) -> Vec<Action> {
        let from = self.state;
        self.state = State::Initialize;
        let mut out = vec![self.transition(from, Reason::Shutdown, None)];
        match from {
            State::Master => out.extend([
                Action::CancelTimer {
                    timer: TimerKind::Advert,
                },
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
            ]),
            _ => out.push(Action::CancelTimer {
                timer: TimerKind::MasterDown,
            }),
        }
        self.master_down_at = None;
        self.preempt_deadline = None;
        self.master = None;
        out
    }

    fn backup_rx(&mut self, now: Instant, a: AdvertSeen) -> Vec<Action> {
        let peer = Peer {
            addr: a.src,
            priority: a.priority,
        };
        if a.priority == 0 {
            self.master_resigned = true;
            self.master = Some(peer);
            return vec![self.arm_master_down(now + self.skew_time())];
        }
        let delaying = !self.cfg.preempt_delay.is_zero()
            && self.preempt_deadline.is_none_or(|deadline| now < deadline);
        if self.cfg.preempt && a.priority < self.priority && !delaying {
            // Ignored: the running master-down timer lets us take over.
            return vec![];
        }
        if !self.cfg.preempt_delay.is_zero() {
            if a.priority >= self.priority {
                self.preempt_deadline = None;
            } else if self.preempt_deadline.is_none() {
                self.preempt_deadline = Some(now + self.cfg.preempt_delay);
            }
        }
        if self.cfg.version == Version::V3 {
            self.master_adver_interval = a.interval;
        }
        self.master = Some(peer);
        self.master_resigned = false;
        vec![self.arm_master_down(now + self.master_down_interval())]
    }

    fn master_rx(&mut self, now: Instant, a: AdvertSeen) -> Vec<Action> {
        if a.priority == 0 {
            return self.advertise(now);
        }
        let peer = Peer {
            addr: a.src,
            priority: a.priority,
        };
        let reason = if a.priority > self.priority {
            Reason::HigherPriority
        } else if a.priority == self.priority && a.src > self.cfg.primary_addr {
            Reason::EqualPriorityHigherAddress
        } else if a.priority == self.priority && a.src == self.cfg.primary_addr {
            // Our own address: a loop or a misconfiguration; nothing to win.
            return vec![];
        } else {
            return vec![Action::SendAdvert {
                priority: self.priority,
            }];
        };
        self.state = State::Backup;
        if self.cfg.version == Version::V3 {
            self.master_adver_interval = a.interval;
        }
        self.master = Some(peer);
        self.master_resigned = false;
        self.preempt_deadline = None;
        let mut out = vec![
            self.transition(State::Master, reason, Some(peer)),
            Action::CancelTimer {
                timer: TimerKind::Advert,
            },
            Action::RemoveVips,
        ];
        out.push(self.arm_master_down(now + self.master_down_interval()));
        out
    }

    fn priority_changed(&mut self, now: Instant, new: u8) -> Vec<Action> {
        let old_interval = self.master_down_interval();
        if !self.set_priority(new) {
            return vec![];
        }
        match self.state {
            State::Master => self.advertise(now),
            State::Backup => match self.master_down_at {
                Some(at) => {
                    let new_interval = self.master_down_interval();
                    let at = if new_interval >= old_interval {
                        at + (new_interval - old_interval)
                    } else {
                        at.checked_sub(old_interval - new_interval).unwrap_or(now)
                    };
                    vec![self.arm_master_down(at.max(now))]
                }
                None => vec![],
            },
            State::Initialize | State::Fault => vec![],
        }
    }

    /// Returns whether the effective priority changed; an owner's never does.
    fn set_priority(&mut self, new: u8) -> bool {
        if self.cfg.priority == 255 || new == self.priority || new == 0 {
            return false;
        }
        self.priority = new;
        true
    }

    fn become_master(&mut self, now: Instant, reason: Reason) -> Vec<Action> {
        let from = self.state;
        let peer = self.master.take();
        self.state = State::Master;
        self.master_adver_interval = self.cfg.advert_interval;
        self.master_down_at = None;
        self.preempt_deadline = None;
        self.master_resigned = false;
        let mut out = vec![
            self.transition(from, reason, peer),
            Action::SendAdvert {
                priority: self.priority,
            },
            Action::AddVips,
            Action::SendGratuitousArp(self.cfg.garp),
        ];
        out.push(self.arm_advert(now));
        out
    }

    fn advertise(&mut self, now: Instant) -> Vec<Action> {
        vec![
            Action::SendAdvert {
                priority: self.priority,
            },
            self.arm_advert(now),
        ]
    }

    fn arm_advert(&self, now: Instant) -> Action {
        Action::SetTimer {
            timer: TimerKind::Advert,
            at: now + self.cfg.advert_interval,
        }
    }

    fn arm_master_down(&mut self, at: Instant) -> Action {
        self.master_down_at = Some(at);
        Action::SetTimer {
            timer: TimerKind::MasterDown,
            at,
        }
    }

    fn transition(&self, from: State, reason: Reason, peer: Option<Peer>) -> Action {
        Action::StateChanged(Transition {
            from,
            to: self.state,
            reason,
            priority: self.priority,
            peer,
        })
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
