//! VRRP between two lbd nodes (issue 4), in a namespace lab: lb1
//! (192.0.2.2, priority 101) and lb2 (192.0.2.3, priority 100) run one
//! VRRPv3 instance over unicast, 1 s adverts, with two VIPs (192.0.2.10 and
//! 192.0.2.20, a TCP service on port 80 of each over be1..be3). The client
//! namespace reaches the VIPs through whichever node holds them.
//!
//! 1. election: lb1 is master and holds every VIP, lb2 none; traffic goes
//!    through lb1 (its counters, not lb2's).
//! 2. kill -9 of lb1's agent: lb2 takes over within the master-down
//!    interval, the client's ARP cache follows lb2's gratuitous ARPs and its
//!    traffic lb2's counters, and lb1's XDP program (its lease expired)
//!    answers neither ARP nor traffic for the VIPs although the dead agent
//!    left them on lb1's interface. A new lb1 agent preempts back.
//! 3. kill -9 and an immediate restart: no failover at all, and no held or
//!    new connection fails.
//! 4. SIGTERM of lb1: lb2 takes over within about its skew time (priority
//!    0 advert) and lb1 takes back over when it returns; with `preempt =
//!    false` it does not.
//! 5. link down on the master's interface: it goes to FAULT and gives up
//!    its VIPs (keepalived's behaviour), lb2 takes over and serves; link up:
//!    lb1 is backup again, then preempts back, without a restart.
//! 6. tracking: all backends of the tracked service down (weight -50 on lb1)
//!    moves the VIPs to lb2 and back when they return; detaching lb1's XDP
//!    program (xdp-attached, weight -50) moves them too.
//!
//! Every bound is twice the nominal time plus 1 s; the measured times are
//! printed. Events are counted from the agents' status (`lbd status` over the
//! control socket) and their `VRRP <instance>: <from> -> <to>` log lines.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd`); run with `--test-threads=1 --nocapture`.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::lab::arp::mac_text;
use lb_tests::lab::bounds::protocol as bound;
use lb_tests::lab::vrrp::{
    self, InstanceView, TrackConfig, entered, instance, logged_transitions, master_down, skew,
    wait_for_instance,
};
use lb_tests::lab::{
    CheckConfig, Lab, LabServer, Lbd, ServiceConfig, SpreadReport, connect_from, counters,
    echo_all, read_line,
};
use lb_tests::packet::{FrameSpec, Mac, tcp_flags};
use lb_userspace::dataplane::lease::Lease;

const INSTANCE: &str = "lb_vip";
const VRID: u8 = 51;
const ADVERT: Duration = Duration::from_secs(1);
const PRIORITY: [u8; 2] = [101, 100];
const PORT: u16 = 80;
/// lb1's and lb2's addresses: their unicast sources, and what a backup
/// reports as its master.
const LB1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LB2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)];
/// The client address the ARP probes ask from.
const ASKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENTS: usize = 60;
/// How long an agent may take from its start to answering status.
const AGENT_START: Duration = Duration::from_secs(20);
/// Health checks of the service-up scenario: 200 ms, 2 to rise or fall.
const CHECK_INTER: Duration = Duration::from_millis(200);
const CHECK_COUNT: u32 = 2;

/// The lab's two-node setup and its running agents.
struct Pair {
    /// First, so the agents die (and print their logs on a panic) before
    /// the lab removes their directory.
    agents: [Option<Lbd>; 2],
    lab: Lab,
    configs: [PathBuf; 2],
    servers: Vec<LabServer>,
    macs: [Mac; 2],
    /// When each agent's status first answered after its last start.
    ready_at: [Option<Instant>; 2],
}

#[derive(Default)]
struct Options {
    no_preempt: bool,
    /// Tracks in lb1's config only.
    lb1_tracks: Vec<TrackConfig>,
    /// Tracks in both configs.
    tracks: Vec<TrackConfig>,
    /// Health-check the backends (tcp, 200 ms, rise/fall 2).
    checked: bool,
}

impl Pair {
    fn new(hint: &str, options: Options) -> Pair {
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::geteuid() }, 0, "lab_vrrp must run as root");
        let lab = Lab::builder(hint)
            .lb_nodes(2)
            .add_vips(false)
            .vips(&VIPS)
            .client_addrs(CLIENTS)
            .build()
            .expect("the two-node lab builds");
        let servers = lab.start_backend_servers(PORT).expect("servers start");
        let services: Vec<ServiceConfig> = VIPS
            .iter()
            .zip(["web", "web2"])
            .map(|(vip, name)| {
                let mut svc = ServiceConfig::tcp(name, *vip, PORT, lab.backend_configs(PORT, &[]));
                if options.checked {
                    svc.check = Some(CheckConfig {
                        inter: Some(format!("{}ms", CHECK_INTER.as_millis())),
                        rise: Some(CHECK_COUNT),
                        fall: Some(CHECK_COUNT),
                        timeout: Some("200ms".into()),
                        ..CheckConfig::tcp()
                    });
                }
                svc
            })
            .collect();
        let mut instance = lab.vrrp_config(INSTANCE, VRID, &VIPS, &PRIORITY);
        instance.preempt = !options.no_preempt;
        instance.tracks = options.tracks.clone();
        let mut config = lab.lbd_config(services);
        config.vrrp.push(instance);
        let lb2 = lab.write_config("lb2.toml", &config).unwrap();
        config.vrrp[0].tracks.extend(options.lb1_tracks);
        let lb1 = lab.write_config("lb1.toml", &config).unwrap();
        let macs = [lab.mac("lb1").unwrap(), lab.mac("lb2").unwrap()];
        Pair {
            lab,
            configs: [lb1, lb2],
            servers,
            agents: [None, None],
            macs,
            ready_at: [None, None],
        }
    }

    fn node(&self, n: usize) -> String {
        self.lab.lb_node_name(n)
    }

    fn agent(&mut self, n: usize) -> &mut Lbd {
        self.agents[n - 1].as_mut().expect("the agent runs")
    }

    /// Starts node `n`'s agent and waits until its status shows the
    /// instance; returns that first view.
    fn start(&mut self, n: usize) -> InstanceView {
        let lbd = self
            .lab
            .start_lbd(n, &self.configs[n - 1])
            .expect("lbd starts");
        self.agents[n - 1] = Some(lbd);
        let node = self.node(n);
        let started = Instant::now();
        let agent = self.agents[n - 1].as_mut().unwrap();
        let (view, took) = vrrp::poll(
            &format!("status of {node}"),
            AGENT_START,
            Duration::from_millis(20),
            || match instance(&node, INSTANCE) {
                Ok(view) => Ok(Some(view)),
                Err(e) => {
                    agent.check_running()?;
                    Err(e)
                }
            },
        )
        .expect("the agent answers status with its VRRP instance");
        self.ready_at[n - 1] = Some(Instant::now());
        println!(
            "lb{n}: agent answers status {took:.2?} after its start ({:.2?} in all), state {}",
            started.elapsed(),
            view.state
        );
        view
    }

    fn view(&self, n: usize) -> InstanceView {
        instance(&self.node(n), INSTANCE).expect("the agent answers status")
    }

    fn log(&self, n: usize) -> String {
        self.agents[n - 1]
            .as_ref()
            .map(Lbd::log)
            .unwrap_or_default()
    }

    /// Waits until node `n`'s instance satisfies `done`, within `bound`.
    fn wait(
        &mut self,
        n: usize,
        what: &str,
        bound: Duration,
        done: impl Fn(&InstanceView) -> bool,
    ) -> (InstanceView, Duration) {
        let node = self.node(n);
        match wait_for_instance(&node, INSTANCE, bound, done) {
            Ok(found) => found,
            Err(e) => {
                let tail = self.agents[n - 1]
                    .as_ref()
                    .map(|a| a.log_tail(30))
                    .unwrap_or_default();
                panic!("lb{n}: {what}: {e:#}\nlog ends with:\n{tail}");
            }
        }
    }

    /// lb1 starts first, lb2 once lb1's VRRP runs: lb1's master-down timer
    /// expires first, so the election is deterministic. Returns lb1's time
    /// from its first status answer to master.
    fn elect(&mut self) -> Duration {
        let first = self.start(1);
        assert!(
            !first.is_master(),
            "lb1 is master at once in a fresh lab: {first:?}"
        );
        self.start(2);
        let bound = bound(master_down(PRIORITY[0], ADVERT));
        self.wait(1, "becomes master", bound, InstanceView::is_master);
        let elected = self.ready_at[0].unwrap().elapsed();
        let (backup, _) = self.wait(2, "backup of lb1", bound, |v| {
            v.is_backup() && v.master == Some(LB1)
        });
        println!(
            "election: lb1 master {elected:.2?} after its VRRP started (nominal {:.2?}, bound {bound:.2?}); lb2 backup, master {:?}",
            master_down(PRIORITY[0], ADVERT),
            backup.master
        );
        assert!(elected <= bound, "lb1 took {elected:.2?} to become master");
        self.expect_holder(1);
        // Traffic through lb1 gives the client an ARP entry for the VIP,
        // which gratuitous ARPs then update (they never create one).
        self.traffic_through(1, 10, "after the election");
        self.client_points_at(1, Duration::ZERO);
        elected
    }

    /// Node `n` has every VIP on its interface, the other none (the VIPs
    /// are added with the master's status, so allow a moment).
    fn expect_holder(&self, n: usize) {
        let other = 3 - n;
        let (held, took) = vrrp::poll(
            &format!("lb{n} holds every VIP and lb{other} none"),
            Duration::from_secs(2),
            Duration::from_millis(20),
            || {
                let mine = self.lab.vips_held(&format!("lb{n}"), &VIPS)?;
                let theirs = self.lab.vips_held(&format!("lb{other}"), &VIPS)?;
                Ok((mine.len() == VIPS.len() && theirs.is_empty()).then_some(mine))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        println!("  lb{n} holds {held:?} (seen {took:.2?} after the status), lb{other} none");
    }

    /// New flows the data path of node `n` counted over all backends.
    fn new_flows(&self, n: usize) -> u64 {
        counters::read_pinned(&self.lab.lbd_pin_dir(n))
            .expect("the pinned counters are readable")
            .backends
            .iter()
            .map(|b| b.stats.new_flows)
            .sum()
    }

    /// Node `n`'s reason counter with `label`.
    fn reason(&self, n: usize, label: &str) -> u64 {
        counters::read_pinned(&self.lab.lbd_pin_dir(n))
            .expect("the pinned counters are readable")
            .reasons
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, count)| *count)
    }

    /// One connection from each of `sources` client addresses to the first
    /// VIP must all work, and be counted by node `n`'s data path only.
    fn traffic_through(&self, n: usize, sources: usize, what: &str) -> SpreadReport {
        let other = 3 - n;
        let before = (self.new_flows(n), self.new_flows(other));
        let report = self
            .lab
            .spread(SocketAddrV4::new(VIPS[0], PORT), sources, 1, &[])
            .expect("lab-client runs");
        report.assert_all_ok_and_sticky(sources, what);
        let after = (self.new_flows(n), self.new_flows(other));
        println!(
            "  {what}: {sources} connections, lb{n} counted {} new flows, lb{other} {}",
            after.0 - before.0,
            after.1 - before.1
        );
        assert_eq!(
            after.0 - before.0,
            sources as u64,
            "{what}: lb{n}'s data path did not count every connection"
        );
        assert_eq!(
            after.1, before.1,
            "{what}: lb{other}'s data path forwarded connections"
        );
        report
    }

    /// Waits until the client's ARP cache maps the first VIP to node `n`'s
    /// MAC (gratuitous ARPs); returns how long that took.
    fn client_points_at(&self, n: usize, timeout: Duration) -> Duration {
        let mac = self.macs[n - 1];
        let (_, took) = vrrp::poll(
            &format!(
                "client's ARP entry for {} = lb{n}'s MAC {}",
                VIPS[0],
                mac_text(&mac)
            ),
            timeout,
            Duration::from_millis(20),
            || Ok((self.lab.neigh("cl", VIPS[0])? == Some(mac)).then_some(())),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        took
    }

    /// SIGKILL to node `n`'s agent; returns when it was sent and the log
    /// of the dead agent.
    fn kill(&mut self, n: usize) -> (Instant, String) {
        kill_agent(&mut self.agents[n - 1])
    }

    /// SIGTERM to node `n`'s agent, which must exit cleanly; returns when
    /// it was sent and the agent's log.
    fn terminate(&mut self, n: usize) -> (Instant, String) {
        let at = Instant::now();
        let agent = self.agent(n);
        let status = agent
            .stop(Duration::from_secs(10))
            .expect("lbd stops on SIGTERM");
        assert!(status.success(), "lbd exited with {status} on SIGTERM");
        let log = agent.log();
        self.agents[n - 1] = None;
        (at, log)
    }

    /// Tears everything down and checks nothing is left.
    fn finish(mut self) {
        let prefix = self.lab.prefix().to_string();
        let pins = self.lab.lbd_pin_dir(1);
        self.agents = [None, None];
        self.lab.teardown().expect("teardown is clean");
        lb_tests::lab::assert_nothing_left(&prefix, &pins);
        lb_tests::lab::assert_nothing_left(&prefix, &self.lab.lbd_pin_dir(2));
    }
}

fn sorted(mut vips: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    vips.sort();
    vips
}

#[test]
fn election_puts_every_vip_on_the_higher_priority() {
    let mut pair = Pair::new("vrel", Options::default());
    pair.elect();
    let (one, two) = (pair.view(1), pair.view(2));
    println!("lb1: {one:?}\nlb2: {two:?}");
    assert_eq!((one.priority, one.base_priority), (101, 101));
    assert_eq!((two.priority, two.base_priority), (100, 100));
    assert_eq!(sorted(one.vips.clone()), VIPS.to_vec());
    assert_eq!(sorted(two.vips.clone()), VIPS.to_vec());
    let (log1, log2) = (pair.log(1), pair.log(2));
    assert_eq!(entered(&log1, INSTANCE, "master"), 1, "lb1 log:\n{log1}");
    assert_eq!(entered(&log2, INSTANCE, "master"), 0, "lb2 log:\n{log2}");
    assert_eq!(
        one.transitions,
        logged_transitions(&log1, INSTANCE).len() as u64,
        "lb1's status and log disagree on its transitions:\n{log1}"
    );
    assert_eq!(
        two.transitions,
        logged_transitions(&log2, INSTANCE).len() as u64,
        "lb2's status and log disagree on its transitions:\n{log2}"
    );

    // Adverts flow one way, one a second, and nothing is dropped.
    std::thread::sleep(Duration::from_secs(3));
    let (one_later, two_later) = (pair.view(1), pair.view(2));
    let sent = one_later.adverts_sent - one.adverts_sent;
    let received = two_later.adverts_received - two.adverts_received;
    println!("in 3 s: lb1 sent {sent} adverts, lb2 received {received}");
    assert!((2..=4).contains(&sent), "lb1 sent {sent} adverts in 3 s");
    assert!(
        (2..=4).contains(&received),
        "lb2 received {received} adverts in 3 s"
    );
    assert_eq!(two_later.adverts_sent, 0, "the backup advertised");
    assert_eq!(
        (one_later.transitions, two_later.transitions),
        (one.transitions, two.transitions),
        "a transition in steady state"
    );
    let drops = |v: &InstanceView| v.drops.values().sum::<u64>();
    assert_eq!(
        (drops(&one_later), drops(&two_later)),
        (0, 0),
        "adverts were dropped: lb1 {:?}, lb2 {:?}",
        one_later.drops,
        two_later.drops
    );

    pair.traffic_through(1, CLIENTS, "through the master");
    let name = pair
        .lab
        .fetch_name(SocketAddrV4::new(VIPS[1], PORT), Duration::from_secs(2))
        .expect("the second VIP answers");
    println!("  {} answered by {name}", VIPS[1]);
    pair.client_points_at(1, Duration::ZERO);
    pair.finish();
}

#[test]
fn kill_9_of_the_master_fails_over_and_the_dead_node_goes_quiet() {
    let mut pair = Pair::new("vrkill", Options::default());
    pair.elect();
    pair.traffic_through(1, 20, "before the kill");
    pair.client_points_at(1, Duration::ZERO);

    // The hardest moment for the lease: right after lb1 renewed it, when it
    // runs longest past lb1's last advert (which starts lb2's clock).
    let lease = Lease::open(&pair.node(1)).expect("lb1's lease is readable");
    just_renewed(&lease);
    let (killed_at, _) = pair.kill(1);
    let left = lease.remaining().unwrap();
    let nominal = master_down(PRIORITY[1], ADVERT);
    println!("kill -9 lb1 just after it renewed its lease: {left:?} left");
    assert!(
        left.is_some_and(|left| left <= nominal),
        "lb1's lease outlasts lb2's master-down interval {nominal:?}: {left:?} left"
    );
    let (_, _) = pair.wait(2, "takes over", bound(nominal), InstanceView::is_master);
    let took = killed_at.elapsed();
    // The moment lb2 is master, lb1 must be quiet: no VIP answered by two.
    let lease_left = lease.remaining().unwrap();
    let answers = pair
        .lab
        .arp_who_has("cl", ASKER, VIPS[1], Duration::from_millis(300))
        .unwrap();
    println!(
        "  lb2 master {took:.2?} after the kill (master-down {nominal:.2?}, bound {:.2?}); lb1's lease then: {lease_left:?}; who-has {} answered by {:?}",
        bound(nominal),
        VIPS[1],
        answers.iter().map(mac_text).collect::<Vec<_>>()
    );
    assert!(took <= bound(nominal));
    assert_eq!(lease_left, None, "lb1's lease still ran when lb2 took over");
    assert!(
        !answers.contains(&pair.macs[0]),
        "lb1 answered ARP for {} after lb2 took over",
        VIPS[1]
    );
    let log2 = pair.log(2);
    let last = logged_transitions(&log2, INSTANCE)
        .pop()
        .expect("lb2 logged its takeover");
    println!("  lb2 logged: {last:?}");
    assert_eq!((last.from.as_str(), last.to.as_str()), ("backup", "master"));
    assert_eq!(last.priority, PRIORITY[1]);
    assert_eq!(entered(&log2, INSTANCE, "master"), 1);
    // The dead agent could not remove its VIPs: only the lease keeps lb1
    // from answering for them.
    assert_eq!(
        pair.lab.vips_held("lb1", &VIPS).unwrap(),
        VIPS.to_vec(),
        "the killed agent's VIPs are no longer on lb1's interface"
    );
    let (held, _) = vrrp::poll(
        "lb2 holds every VIP",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || Ok(Some(pair.lab.vips_held("lb2", &VIPS)?).filter(|h| h.len() == VIPS.len())),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("  lb2 holds {held:?}; the dead lb1 agent left them on lb1 too");

    let garp = pair.client_points_at(2, Duration::from_secs(3));
    println!(
        "  the client's ARP entry for {} moved to lb2 ({}) {garp:.2?} after lb2 became master",
        VIPS[0],
        mac_text(&pair.macs[1])
    );
    pair.traffic_through(2, 20, "after the kill");

    // lb1's XDP program drops ARP requests and traffic for the VIPs.
    let arp_before = pair.reason(1, "arp_lease_expired");
    let answers = pair
        .lab
        .arp_who_has("cl", ASKER, VIPS[0], Duration::from_millis(500))
        .unwrap();
    let arp_after = pair.reason(1, "arp_lease_expired");
    println!(
        "  who-has {}: answered by {:?}; lb1 arp_lease_expired {arp_before} -> {arp_after}",
        VIPS[0],
        answers.iter().map(mac_text).collect::<Vec<_>>()
    );
    assert!(
        !answers.is_empty() && answers.iter().all(|m| *m == pair.macs[1]),
        "ARP for {} was not answered by lb2 alone: {:?}",
        VIPS[0],
        answers.iter().map(mac_text).collect::<Vec<_>>()
    );
    assert!(
        arp_after > arp_before,
        "lb1 did not count the ARP request it dropped"
    );
    let client_mac = pair.lab.mac("cl").unwrap();
    let syns: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut frame = FrameSpec::tcp(
                client_mac,
                pair.macs[0],
                ASKER,
                40_000 + i,
                VIPS[0],
                PORT,
                tcp_flags::SYN,
            );
            frame.pad_to = 60;
            frame.build()
        })
        .collect();
    let (dropped_before, flows_before) = (pair.reason(1, "lease_expired"), pair.new_flows(1));
    pair.lab.send_frames("cl", &syns).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (dropped_after, flows_after) = (pair.reason(1, "lease_expired"), pair.new_flows(1));
    println!(
        "  3 SYNs to {} sent to lb1's MAC: lease_expired {dropped_before} -> {dropped_after}, new flows {flows_before} -> {flows_after}",
        VIPS[0]
    );
    assert!(
        dropped_after >= dropped_before + 3,
        "lb1 did not drop the SYNs for the VIP as lease_expired"
    );
    assert_eq!(flows_after, flows_before, "lb1 forwarded for the VIP");

    // A new lb1 agent finds the lease expired: backup first, VIPs removed,
    // then it preempts lb2 (101 > 100) after its master-down interval.
    let restarted = pair.start(1);
    println!("  restarted lb1 starts as {}", restarted.state);
    assert!(
        !restarted.is_master(),
        "lb1 resumed as master on an expired lease"
    );
    let (view, _) = vrrp::poll(
        "the restarted lb1 removes the dead agent's VIPs",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || {
            let view = pair.view(1);
            let held = pair.lab.vips_held("lb1", &VIPS)?;
            Ok((view.is_master() || held.is_empty()).then_some(view))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        !view.is_master(),
        "lb1 became master before removing the stale VIPs as a backup"
    );
    let preempt = master_down(PRIORITY[0], ADVERT);
    pair.wait(1, "preempts lb2", bound(preempt), InstanceView::is_master);
    let took = pair.ready_at[0].unwrap().elapsed();
    println!("  lb1 preempted {took:.2?} after its restart answered (master-down {preempt:.2?})");
    pair.wait(2, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB1)
    });
    pair.expect_holder(1);
    let log2 = pair.log(2);
    assert_eq!(entered(&log2, INSTANCE, "master"), 1);
    assert_eq!(
        logged_transitions(&log2, INSTANCE)
            .last()
            .map(|t| t.to.clone()),
        Some("backup".into())
    );
    pair.client_points_at(1, Duration::from_secs(3));
    pair.traffic_through(1, 20, "after lb1 preempted");
    pair.finish();
}

#[test]
fn kill_9_and_restart_within_master_down_is_no_failover() {
    const HELD: usize = 20;
    let mut pair = Pair::new("vrbump", Options::default());
    pair.elect();
    let vip = SocketAddrV4::new(VIPS[0], PORT);
    let held_sources: Vec<Ipv4Addr> = pair
        .lab
        .client_addrs()
        .into_iter()
        .rev()
        .take(HELD)
        .collect();
    let mut held = pair
        .lab
        .run_in(
            "cl",
            move || -> anyhow::Result<Vec<(Ipv4Addr, TcpStream)>> {
                held_sources
                    .into_iter()
                    .map(|source| {
                        let mut stream = connect_from(source, vip, Duration::from_secs(2))?;
                        read_line(&mut stream)?;
                        Ok((source, stream))
                    })
                    .collect()
            },
        )
        .unwrap()
        .expect("the held connections open");
    echo_all(&mut held, "before");
    let lb2_before = pair.view(2);
    let flows_before = pair.new_flows(1);
    let reasons_before = counters::read_pinned(&pair.lab.lbd_pin_dir(1))
        .unwrap()
        .reasons;
    let node1 = pair.node(1);
    let node2 = pair.node(2);

    let stop = AtomicBool::new(false);
    let lab = &pair.lab;
    let observe_until = master_down(PRIORITY[1], ADVERT) * 2 + Duration::from_secs(1);
    let (spreads, samples, killed_at, resumed_at, lb1_log) = std::thread::scope(|scope| {
        // Stops the helper threads however this closure ends (a failed
        // assertion included), so the scope can join them.
        let _stop_on_exit = StopOnDrop(&stop);
        // New connections all along, 30 sources at a time, a few hundred
        // a second: well inside lb1's share of SNAT ports, so a failure
        // is the restart's.
        let traffic = scope.spawn(|| {
            let mut runs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let report = lab
                    .spread(vip, 30, 1, &["--timeout", "3"])
                    .expect("lab-client runs");
                runs.push((started, Instant::now(), report));
                std::thread::sleep(Duration::from_millis(50));
            }
            runs
        });
        // Who is master, and whether lb1 keeps its VIPs, every 100 ms.
        let watcher = scope.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let lb2 = instance(&node2, INSTANCE).map(|v| v.state);
                let lb1_vips = lab.vips_held("lb1", &VIPS).map(|v| v.len());
                samples.push((Instant::now(), lb2.ok(), lb1_vips.ok()));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        std::thread::sleep(Duration::from_secs(1));
        let (killed_at, _) = kill_agent(&mut pair.agents[0]);
        echo_all(&mut held, "no-agent");
        let mut lbd = lab
            .start_lbd(1, &pair.configs[0])
            .expect("lbd starts again");
        let (_, _) = vrrp::poll(
            "the restarted lb1 resumes as master",
            master_down(PRIORITY[1], ADVERT),
            Duration::from_millis(10),
            || {
                lbd.check_running()?;
                Ok(instance(&node1, INSTANCE)?.is_master().then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\nlb1 log:\n{}", lbd.log_tail(30)));
        let resumed_at = Instant::now();
        println!(
            "kill -9 lb1 and restart: master again {:.2?} after the kill",
            resumed_at - killed_at
        );
        std::thread::sleep(observe_until.saturating_sub(killed_at.elapsed()));
        stop.store(true, Ordering::Relaxed);
        let spreads = traffic.join().expect("the traffic thread finished");
        let samples = watcher.join().expect("the watcher finished");
        let log = lbd.log();
        pair.agents[0] = Some(lbd);
        (spreads, samples, killed_at, resumed_at, log)
    });
    echo_all(&mut held, "after");
    println!("  {HELD} held connections echoed before, during and after the gap");

    let lb2_after = pair.view(2);
    let log2 = pair.log(2);
    println!(
        "  lb2: transitions {} -> {}, adverts received {} -> {}",
        lb2_before.transitions,
        lb2_after.transitions,
        lb2_before.adverts_received,
        lb2_after.adverts_received
    );
    assert_eq!(
        lb2_after.transitions, lb2_before.transitions,
        "lb2 changed state:\n{log2}"
    );
    assert_eq!(entered(&log2, INSTANCE, "master"), 0, "{log2}");
    assert!(lb2_after.is_backup() && lb2_after.master == Some(LB1));
    assert!(
        lb2_after.adverts_received > lb2_before.adverts_received,
        "lb2 heard no adverts from the restarted lb1"
    );
    let seen = logged_transitions(&lb1_log, INSTANCE);
    println!("  the new lb1 agent logged {seen:?}");
    assert_eq!(entered(&lb1_log, INSTANCE, "master"), 1, "{lb1_log}");
    assert_eq!(
        entered(&lb1_log, INSTANCE, "backup"),
        0,
        "the new lb1 agent went through backup:\n{lb1_log}"
    );

    let lb2_master: Vec<_> = samples
        .iter()
        .filter(|(_, state, _)| state.as_deref() == Some("master"))
        .collect();
    let lb1_without: Vec<_> = samples
        .iter()
        .filter(|(_, _, held)| *held != Some(VIPS.len()))
        .map(|(at, _, held)| (at.saturating_duration_since(killed_at), held))
        .collect();
    println!(
        "  {} samples: lb2 never master, lb1 always holding both VIPs",
        samples.len()
    );
    assert!(lb2_master.is_empty(), "lb2 was seen as master");
    assert!(
        lb1_without.is_empty(),
        "lb1 was seen without its VIPs (time after the kill, VIPs held): {lb1_without:?}"
    );

    let attempts: u64 = spreads.iter().map(|(_, _, r)| r.attempts).sum();
    let errors: Vec<&String> = spreads
        .iter()
        .flat_map(|(_, _, r)| &r.error_samples)
        .collect();
    let in_gap = spreads
        .iter()
        .filter(|(start, end, _)| *start < resumed_at && *end > killed_at)
        .count();
    println!(
        "  {} spreads, {attempts} new connections, {in_gap} spreads overlapping the gap, {} errors",
        spreads.len(),
        errors.len()
    );
    for (start, end, report) in spreads.iter().filter(|(_, _, r)| r.errors > 0) {
        println!(
            "  a spread from {:.2}s to {:.2}s after the kill (resumed at {:.2?}) failed: {:?}",
            signed(*start, killed_at),
            signed(*end, killed_at),
            resumed_at - killed_at,
            report.error_samples
        );
    }
    let reasons_after = counters::read_pinned(&pair.lab.lbd_pin_dir(1))
        .unwrap()
        .reasons;
    println!(
        "  lb1's reason counters: {:?} -> {reasons_after:?}",
        reasons_before
    );
    let count_in = |list: &[(&'static str, u64)], label: &str| -> u64 {
        list.iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, c)| *c)
    };
    let new_drops: Vec<(&str, u64)> = reasons_after
        .iter()
        .filter(|(label, count)| {
            // Drops and refusals only: a port taken over from a closed
            // connection (snat_port_taken_over) is the data path working.
            (label.starts_with("drop_") || label.starts_with("tx_rst"))
                && *count != count_in(&reasons_before, label)
        })
        .copied()
        .collect();
    assert!(errors.is_empty(), "connections failed: {errors:?}");
    assert!(
        spreads.iter().all(|(_, _, r)| r.errors == 0),
        "connections failed"
    );
    assert!(
        new_drops.is_empty(),
        "lb1's data path dropped packets across the restart: {new_drops:?}"
    );
    assert!(in_gap >= 1, "no connection was made while lb1 restarted");
    assert!(
        pair.new_flows(1) >= flows_before + attempts,
        "lb1 did not forward every new connection"
    );
    pair.finish();
}

/// `at - origin` in signed seconds, for messages.
fn signed(at: Instant, origin: Instant) -> f64 {
    match at.checked_duration_since(origin) {
        Some(after) => after.as_secs_f64(),
        None => -(origin - at).as_secs_f64(),
    }
}

/// Raises a stop flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Returns as soon as `lease` has been renewed (its remaining time jumps).
fn just_renewed(lease: &Lease) {
    let mut last = lease.remaining().unwrap();
    let start = Instant::now();
    loop {
        let now = lease.remaining().unwrap();
        if let (Some(before), Some(after)) = (last, now)
            && after > before + Duration::from_millis(100)
        {
            return;
        }
        assert!(
            start.elapsed() < bound(ADVERT),
            "the lease was not renewed for {:?}: {now:?}",
            bound(ADVERT)
        );
        last = now;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGKILL to a running agent, reaped at once; returns when it was sent
/// and the dead agent's log.
fn kill_agent(slot: &mut Option<Lbd>) -> (Instant, String) {
    let agent = slot.as_mut().expect("the agent runs");
    // SAFETY: our own child, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) },
        0,
        "could not kill lbd"
    );
    let at = Instant::now();
    agent.stop(Duration::from_secs(5)).expect("lbd is reaped");
    let log = agent.log();
    *slot = None;
    (at, log)
}

/// SIGTERM to the master lb1: lb2 takes over within its skew time (lb1's
/// priority-0 advert), lb1 keeps no VIP, and the client follows lb2.
fn graceful_stop(pair: &mut Pair) {
    let (stopped_at, log1) = pair.terminate(1);
    let nominal = skew(PRIORITY[1], ADVERT);
    pair.wait(2, "takes over", bound(nominal), InstanceView::is_master);
    let took = stopped_at.elapsed();
    println!(
        "SIGTERM lb1: lb2 master {took:.2?} after the signal (skew {nominal:.2?}, bound {:.2?})",
        bound(nominal)
    );
    assert!(took <= bound(nominal));
    let last = logged_transitions(&log1, INSTANCE)
        .pop()
        .expect("lb1 logged its shutdown");
    println!("  lb1 logged: {last:?}");
    assert_eq!(last.from, "master");
    assert_eq!(
        pair.lab.vips_held("lb1", &VIPS).unwrap(),
        Vec::<Ipv4Addr>::new(),
        "lb1 kept VIPs after SIGTERM"
    );
    pair.expect_holder(2);
    let log2 = pair.log(2);
    let takeover = logged_transitions(&log2, INSTANCE).pop().unwrap();
    println!("  lb2 logged: {takeover:?}");
    assert_eq!(entered(&log2, INSTANCE, "master"), 1);
    pair.client_points_at(2, Duration::from_secs(3));
    pair.traffic_through(2, 20, "after SIGTERM");
    let answers = pair
        .lab
        .arp_who_has("cl", ASKER, VIPS[0], Duration::from_millis(300))
        .unwrap();
    assert!(
        !answers.is_empty() && answers.iter().all(|m| *m == pair.macs[1]),
        "ARP for {} was not answered by lb2 alone",
        VIPS[0]
    );
}

#[test]
fn sigterm_hands_over_and_the_returning_master_preempts() {
    let mut pair = Pair::new("vrterm", Options::default());
    pair.elect();
    graceful_stop(&mut pair);
    pair.start(1);
    let nominal = master_down(PRIORITY[0], ADVERT);
    pair.wait(1, "preempts lb2", bound(nominal), InstanceView::is_master);
    let took = pair.ready_at[0].unwrap().elapsed();
    println!(
        "  lb1 back as master {took:.2?} after it answered status (master-down {nominal:.2?})"
    );
    pair.wait(2, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB1)
    });
    pair.expect_holder(1);
    pair.client_points_at(1, Duration::from_secs(3));
    pair.traffic_through(1, 20, "after lb1 returned");
    pair.finish();
}

#[test]
fn sigterm_without_preempt_leaves_the_returning_node_backup() {
    let mut pair = Pair::new(
        "vrnopr",
        Options {
            no_preempt: true,
            ..Options::default()
        },
    );
    pair.elect();
    graceful_stop(&mut pair);
    let lb2_master = pair.view(2);
    pair.start(1);
    // Long enough for a preempting lb1 to have taken over twice.
    let wait = bound(master_down(PRIORITY[0], ADVERT));
    pair.wait(1, "backup of lb2", Duration::from_secs(5), |v| {
        v.is_backup() && v.master == Some(LB2)
    });
    std::thread::sleep(wait.saturating_sub(pair.ready_at[0].unwrap().elapsed()));
    let (one, two) = (pair.view(1), pair.view(2));
    println!(
        "  {:.2?} after lb1 returned: lb1 {} (master {:?}), lb2 {}",
        pair.ready_at[0].unwrap().elapsed(),
        one.state,
        one.master,
        two.state
    );
    assert!(one.is_backup() && one.master == Some(LB2), "{one:?}");
    assert!(two.is_master(), "{two:?}");
    assert_eq!(two.transitions, lb2_master.transitions, "lb2 changed state");
    assert_eq!(entered(&pair.log(1), INSTANCE, "master"), 0);
    pair.expect_holder(2);
    pair.traffic_through(2, 20, "lb1 back, not preempting");
    pair.finish();
}

#[test]
fn service_with_no_backend_up_moves_the_vips_and_back() {
    let mut pair = Pair::new(
        "vrsvc",
        Options {
            lb1_tracks: vec![TrackConfig::service_up("web", -50)],
            checked: true,
            ..Options::default()
        },
    );
    pair.elect();
    assert_eq!(pair.view(1).priority, 101);
    let detect = CHECK_INTER * CHECK_COUNT;

    let down_at = Instant::now();
    for server in &pair.servers {
        // SAFETY: a lab-server this test started; the lab reaps it.
        unsafe { libc::kill(server.pid as i32, libc::SIGKILL) };
    }
    let (_, lowered) = pair.wait(1, "priority 51", bound(detect) + ADVERT, |v| {
        v.priority == 51
    });
    let nominal = detect + master_down(PRIORITY[1], ADVERT);
    pair.wait(2, "takes over", bound(nominal), InstanceView::is_master);
    let took = down_at.elapsed();
    println!(
        "backends down: lb1 priority 51 after {lowered:.2?}, lb2 master {took:.2?} after the servers died (nominal {nominal:.2?}, bound {:.2?})",
        bound(nominal)
    );
    pair.wait(1, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB2)
    });
    pair.expect_holder(2);
    let step_down = logged_transitions(&pair.log(1), INSTANCE).pop().unwrap();
    println!("  lb1 logged: {step_down:?}");
    assert_eq!(
        (
            step_down.from.as_str(),
            step_down.to.as_str(),
            step_down.priority
        ),
        ("master", "backup", 51)
    );

    let up_at = Instant::now();
    pair.servers = pair
        .lab
        .start_backend_servers(PORT)
        .expect("servers restart");
    let nominal = detect + master_down(PRIORITY[0], ADVERT);
    pair.wait(1, "takes back over", bound(nominal), |v| {
        v.is_master() && v.priority == 101
    });
    let took = up_at.elapsed();
    println!(
        "backends up: lb1 master again {took:.2?} after the servers returned (nominal {nominal:.2?}, bound {:.2?})",
        bound(nominal)
    );
    pair.wait(2, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB1)
    });
    pair.expect_holder(1);
    assert_eq!(entered(&pair.log(1), INSTANCE, "master"), 2);
    assert_eq!(entered(&pair.log(2), INSTANCE, "master"), 1);
    pair.client_points_at(1, Duration::from_secs(3));
    pair.traffic_through(1, 20, "backends back");
    pair.finish();
}

#[test]
fn detached_xdp_program_moves_the_vips() {
    let mut pair = Pair::new(
        "vrxdp",
        Options {
            tracks: vec![TrackConfig::xdp_attached(-50)],
            ..Options::default()
        },
    );
    pair.elect();
    assert_eq!(pair.view(1).priority, 101);
    let detached_at = Instant::now();
    let link = pair.lab.detach_xdp(1).expect("bpftool detaches lb1's link");
    let (_, lowered) = pair.wait(1, "priority 51", bound(ADVERT), |v| v.priority == 51);
    let nominal = ADVERT + master_down(PRIORITY[1], ADVERT);
    pair.wait(2, "takes over", bound(nominal), InstanceView::is_master);
    let took = detached_at.elapsed();
    println!(
        "XDP link {link} of lb1 detached: priority 51 after {lowered:.2?}, lb2 master {took:.2?} after (nominal {nominal:.2?}, bound {:.2?})",
        bound(nominal)
    );
    pair.wait(1, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB2)
    });
    pair.expect_holder(2);
    assert_eq!(pair.view(2).priority, 100, "lb2's own XDP is attached");
    pair.client_points_at(2, Duration::from_secs(3));
    pair.traffic_through(2, 20, "lb1's XDP detached");
    pair.finish();
}

#[test]
fn link_down_puts_the_master_in_fault_and_link_up_brings_it_back() {
    let mut pair = Pair::new("vrlink", Options::default());
    pair.elect();
    let ip = |pair: &Pair, state: &str| {
        pair.lab
            .exec_in("lb1", &["ip", "link", "set", "eth0", state])
            .unwrap_or_else(|e| panic!("ip link set eth0 {state} on lb1: {e:#}"));
    };
    let down_at = Instant::now();
    ip(&pair, "down");
    let (_, faulted) = pair.wait(1, "goes to fault", bound(ADVERT), InstanceView::is_fault);
    let held = pair.lab.vips_held("lb1", &VIPS).expect("lb1's addresses");
    assert!(held.is_empty(), "lb1 in FAULT still holds {held:?}");
    let nominal = master_down(PRIORITY[1], ADVERT);
    pair.wait(2, "takes over", bound(nominal), InstanceView::is_master);
    let took = down_at.elapsed();
    println!(
        "lb1's link down: FAULT after {faulted:.2?}, VIPs released; lb2 master {took:.2?} after \
         (nominal {nominal:.2?}, bound {:.2?})",
        bound(nominal)
    );
    assert!(
        entered(&pair.log(1), INSTANCE, "fault") == 1,
        "one transition into fault: {}",
        pair.log(1)
    );
    pair.client_points_at(2, Duration::from_secs(3));
    pair.traffic_through(2, 20, "lb1's link down");

    let up_at = Instant::now();
    ip(&pair, "up");
    pair.wait(1, "leaves fault", bound(ADVERT), |v| !v.is_fault());
    let back = bound(master_down(PRIORITY[0], ADVERT));
    pair.wait(1, "preempts back", back, InstanceView::is_master);
    println!(
        "lb1's link up: master again {:.2?} after (bound {back:.2?})",
        up_at.elapsed()
    );
    assert!(
        pair.log(1).contains("fault -> backup (interface up)"),
        "lb1 does not log leaving fault: {}",
        pair.log(1)
    );
    pair.wait(2, "steps down", Duration::from_secs(3), |v| {
        v.is_backup() && v.master == Some(LB1)
    });
    pair.expect_holder(1);
    pair.client_points_at(1, Duration::from_secs(3));
    pair.traffic_through(1, 20, "lb1's link back up");
    pair.finish();
}
