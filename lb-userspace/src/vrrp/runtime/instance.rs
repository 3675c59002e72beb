//! One VRRP instance as a task on the VRRP thread: adverts in (checked,
//! counted when dropped), timers, tracked conditions and commands become
//! events for the state machine; its actions become adverts, VIP changes,
//! gratuitous ARP bursts, log lines and reports to the agent.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::TransitionReport;
use super::advert::Advertiser;
use super::lease::LeaseKeeper;
use super::probes;
use super::seq::{SeqStore, unix_now_ms};
use super::status::StatusCell;
use super::timers::Timers;
use super::tracking::{self, Condition, Tracking};
use crate::vips::VipAddresses;
use crate::vrrp::check::{RxContext, check_advert};
use crate::vrrp::config::NodeInstance;
use crate::vrrp::garp::{Burst, GarpSender};
use crate::vrrp::socket::{Datagram, VrrpSocket};
use crate::vrrp::state::{Action, AdvertSeen, Event, GarpBurst, Machine, State, Transition};

/// How often the interface's state is read (getifaddrs, one netlink dump).
const LINK_POLL: Duration = Duration::from_millis(200);

/// What the agent (through `VrrpHandle`) tells an instance.
#[derive(Clone, Debug)]
pub enum Command {
    SetCondition(Condition, bool),
    Shutdown,
}

/// Where the xdp-attached probe looks.
#[derive(Clone, Debug)]
pub struct XdpProbe {
    pub link_pin: PathBuf,
    pub ifindex: u32,
}

/// The instance's handles on the host.
pub struct Io {
    pub socket: VrrpSocket,
    pub garp: Arc<GarpSender>,
    pub vips: VipAddresses,
}

pub struct Instance {
    spec: NodeInstance,
    vip_set: BTreeSet<Ipv4Addr>,
    machine: Machine,
    timers: Timers,
    advertiser: Advertiser,
    tracking: Tracking,
    status: StatusCell,
    reports: UnboundedSender<TransitionReport>,
    io: Io,
    xdp: XdpProbe,
    garp_task: Option<JoinHandle<()>>,
    /// Renewed by our adverts while master; `None` without a data path.
    lease: Option<Arc<LeaseKeeper>>,
    /// Keeps our highest AH sequence number for the next agent.
    seq_store: Option<Arc<SeqStore>>,
    /// The highest AH sequence number accepted from a peer: replays are
    /// judged against it, not against our own send counter, or two nodes
    /// both master at once (clock-floored counters, equal) would refuse
    /// each other's adverts and never resolve the split.
    rx_seq: u32,
}

impl Instance {
    pub fn new(
        spec: NodeInstance,
        io: Io,
        xdp: XdpProbe,
        status: StatusCell,
        reports: UnboundedSender<TransitionReport>,
        lease: Option<Arc<LeaseKeeper>>,
        seq_store: Option<Arc<SeqStore>>,
    ) -> Self {
        let mut advertiser = Advertiser::new(&spec);
        if let Some(store) = &seq_store {
            advertiser.start_above(store.last());
        }
        Instance {
            vip_set: spec.rx.vips.iter().copied().collect(),
            machine: Machine::new(spec.machine.clone()),
            timers: Timers::default(),
            advertiser,
            tracking: Tracking::new(spec.machine.priority, &spec.track),
            status,
            reports,
            io,
            xdp,
            garp_task: None,
            lease,
            seq_store,
            rx_seq: 0,
            spec,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Records an observation made before the task starts.
    pub fn preset(&mut self, condition: &Condition, holds: bool) {
        self.tracking.set(condition, holds);
    }

    /// Runs until `Shutdown` (or the agent drops its handle), then resigns:
    /// a master sends priority 0 and removes its VIPs.
    pub async fn run(mut self, start: Event, mut commands: UnboundedReceiver<Command>) {
        let (script_tx, mut script_rx) = mpsc::unbounded_channel();
        let scripts: Vec<JoinHandle<()>> = tracking::scripts(&self.spec.track)
            .into_iter()
            .map(|(command, every)| tokio::spawn(script_loop(command, every, script_tx.clone())))
            .collect();
        drop(script_tx);
        let track_xdp = self.tracking.tracks(&Condition::XdpAttached);
        if track_xdp {
            let holds = probes::xdp_attached(&self.xdp.link_pin, self.xdp.ifindex);
            self.tracking.set(&Condition::XdpAttached, holds);
        }
        let priority = self.tracking.priority();
        self.handle(Event::PriorityChanged(priority)).await;
        self.handle(start).await;
        // The link is watched more often than the adverts go: a master
        // whose link went down must give up its VIPs before the peer takes
        // over, and a FAULT must end soon after the link is back.
        let mut link_up = probes::link_running(&self.spec.interface);
        if !link_up {
            self.handle(Event::LinkDown).await;
        }
        let mut link_tick = tokio::time::interval(LINK_POLL);
        link_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        link_tick.tick().await;
        let mut probe_tick = tokio::time::interval(self.spec.machine.advert_interval);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe_tick.tick().await;
        loop {
            let next = self.timers.next();
            let timer = async move {
                match next {
                    Some((_, at)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::SetCondition(condition, holds)) => {
                        self.observe(condition, holds).await
                    }
                    Some(Command::Shutdown) | None => break,
                },
                () = timer => {
                    if let Some((kind, at)) = next {
                        let event = self.timers.fire(kind);
                        self.handle_at(at.max(Instant::now()), event).await;
                    }
                }
                received = self.io.socket.recv() => match received {
                    Ok(datagram) => self.received(datagram).await,
                    Err(e) => {
                        tracing::warn!("VRRP {}: receiving adverts failed: {e}", self.spec.name);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = probe_tick.tick(), if track_xdp => {
                    let holds = probes::xdp_attached(&self.xdp.link_pin, self.xdp.ifindex);
                    self.observe(Condition::XdpAttached, holds).await;
                }
                Some((condition, holds)) = script_rx.recv() => self.observe(condition, holds).await,
                _ = link_tick.tick() => {
                    let now_up = probes::link_running(&self.spec.interface);
                    if now_up != link_up {
                        link_up = now_up;
                        let event = if now_up { Event::LinkUp } else { Event::LinkDown };
                        self.handle(event).await;
                    }
                }
            }
        }
        self.handle(Event::Shutdown).await;
        for script in scripts {
            script.abort();
        }
        if let Some(task) = self.garp_task.take() {
            task.abort();
        }
    }

    async fn handle(&mut self, event: Event) {
        self.handle_at(Instant::now(), event).await
    }

    async fn handle_at(&mut self, now: Instant, event: Event) {
        let actions = self.machine.handle(now, event);
        for action in self.timers.absorb(actions) {
            self.act(action).await;
        }
        let (state, priority) = (self.machine.state(), self.machine.priority());
        let master = match state {
            State::Master => Some(self.spec.src),
            State::Backup => self.machine.followed_master(),
            State::Initialize | State::Fault => None,
        };
        self.status.update(|s| {
            s.state = state;
            s.priority = priority;
            s.master = master;
        });
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::SendAdvert { priority } => self.send_advert(priority).await,
            Action::AddVips => {
                if let Err(e) = self.io.vips.add_all(&self.vip_set).await {
                    tracing::error!("VRRP {}: {e:#}", self.spec.name);
                }
            }
            Action::RemoveVips => {
                if let Some(task) = self.garp_task.take() {
                    task.abort();
                }
                if let Err(e) = self.io.vips.remove_all(&self.vip_set).await {
                    tracing::error!("VRRP {}: {e:#}", self.spec.name);
                }
            }
            Action::SendGratuitousArp(burst) => self.announce(burst),
            Action::StateChanged(transition) => self.changed(transition),
            Action::SetTimer { .. } | Action::CancelTimer { .. } => {}
        }
    }

    async fn send_advert(&mut self, priority: u8) {
        let datagrams = match self.advertiser.datagrams(priority, unix_now_ms()) {
            Ok(datagrams) => datagrams,
            Err(e) => {
                tracing::error!("VRRP {}: {e:#}", self.spec.name);
                return;
            }
        };
        if self.spec.uses_ah()
            && let Some(store) = &self.seq_store
        {
            // Before sending: a crash right after must not reuse it.
            store.record(self.advertiser.seq.value());
        }
        let mut sent = false;
        for (dst, datagram) in datagrams {
            match self.io.socket.send_datagram(dst, &datagram).await {
                Ok(()) => {
                    sent = true;
                    self.status.update(|s| s.adverts_sent += 1);
                }
                Err(e) => tracing::warn!("VRRP {}: {e:#}", self.spec.name),
            }
        }
        // Priority 0 resigns: it must not extend the lease.
        if sent
            && priority > 0
            && let Some(lease) = &self.lease
        {
            lease.advert_sent(&self.spec.name, self.spec.machine.advert_interval);
        }
    }

    /// The first burst now, the second `garp_again_after` later, in the
    /// background; leaving master stops it.
    fn announce(&mut self, first: GarpBurst) {
        if let Some(task) = self.garp_task.take() {
            task.abort();
        }
        let garp = self.io.garp.clone();
        let vips: Vec<Ipv4Addr> = self.vip_set.iter().copied().collect();
        let burst = Burst {
            count: first.count,
            interval: first.repeat_delay,
        };
        let again = self.spec.garp_again_after;
        let name = self.spec.name.clone();
        self.garp_task = Some(tokio::spawn(async move {
            if let Err(e) = garp.announce_burst(&vips, burst).await {
                tracing::warn!("VRRP {name}: {e:#}");
            }
            if let Some(delay) = again {
                tokio::time::sleep(delay).await;
                if let Err(e) = garp.announce_burst(&vips, burst).await {
                    tracing::warn!("VRRP {name}: {e:#}");
                }
            }
        }));
    }

    fn changed(&mut self, t: Transition) {
        match t.peer {
            Some(peer) => tracing::info!(
                peer = %peer.addr,
                peer_priority = peer.priority,
                "VRRP {}: {t}",
                self.spec.name
            ),
            None => tracing::info!("VRRP {}: {t}", self.spec.name),
        }
        if t.from == State::Master
            && let Some(lease) = &self.lease
        {
            lease.left_master(&self.spec.name);
        }
        self.status.update(|s| s.transitions += 1);
        // The agent may be gone (shutting down); nothing to tell then.
        let _ = self.reports.send(TransitionReport {
            instance: self.spec.name.clone(),
            transition: t,
            vips: self.vip_set.iter().copied().collect(),
        });
    }

    async fn received(&mut self, datagram: Datagram) {
        let ctx = RxContext {
            ah_seq: self.rx_seq,
            followed_master: self.machine.followed_master(),
        };
        match check_advert(&datagram.bytes, &self.spec.rx, ctx) {
            Err(reason) => {
                tracing::debug!(
                    src = %datagram.src,
                    "VRRP {}: advert dropped: {reason:?}",
                    self.spec.name
                );
                self.status
                    .update(|s| *s.drops.entry(reason.label().to_string()).or_default() += 1);
            }
            Ok(received) => {
                if let Some(seq) = received.ah_seq {
                    self.rx_seq = self.rx_seq.max(seq);
                    // Our own numbers continue above the peer's, as
                    // keepalived's shared counter does.
                    self.advertiser.seq.observe(seq);
                }
                self.status.update(|s| s.adverts_received += 1);
                self.handle(Event::AdvertReceived(AdvertSeen::from(&received)))
                    .await;
            }
        }
    }

    async fn observe(&mut self, condition: Condition, holds: bool) {
        if !self.tracking.set(&condition, holds) {
            return;
        }
        let priority = self.tracking.priority();
        tracing::info!(
            "VRRP {}: tracked {condition} {}, effective priority {priority}",
            self.spec.name,
            if holds { "holds" } else { "fails" },
        );
        self.handle(Event::PriorityChanged(priority)).await;
    }
}

/// Runs a track script every `every` (timeout = `every`) and reports.
async fn script_loop(
    command: String,
    every: Duration,
    results: UnboundedSender<(Condition, bool)>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = probes::run_script(&command, every).await;
        if results
            .send((Condition::Script(command.clone()), ok))
            .is_err()
        {
            return;
        }
    }
}
