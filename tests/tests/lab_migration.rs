//! The README's migration from a keepalived + HAProxy pair to lbd, one node
//! at a time, in a namespace lab with real keepalived 2.2 and HAProxy 2.6
//! (issue 15).
//!
//! lb1 and lb2 start as the pair an operator has: HAProxy on both (the same
//! haproxy.cfg, `balance source` over be1..be3 with `check inter 2s rise 2
//! fall 3`), keepalived on both (VRRPv2 unicast with PASS, priorities
//! 101/100, `nopreempt`, a track script on HAProxy's pid file); lb1 holds
//! the VIP. Then, as the guide says:
//!
//! - import: `lbd import` on the three files with the lab's node names and
//!   `lbd check` on its output both succeed; the parsed output has the
//!   service, its backends and checks, both nodes and the VRRP instance.
//! - phase 1, the backup replaced: keepalived and HAProxy stop on lb2, lbd
//!   starts there with the imported file and is VRRP backup under
//!   keepalived's master, its backends UP, no dropped advert; lb1 keeps the
//!   VIP.
//! - phase 2, the master switched off: keepalived stops on lb1, lbd on lb2
//!   takes the VIP within the master-down interval, then HAProxy stops on
//!   lb1. The long connections opened at the start through lb1's HAProxy
//!   die with it.
//! - phase 3, the old master replaced: lbd starts on lb1 with the same file;
//!   the pair settles by that file (`preempt = false`, imported from
//!   `nopreempt`): lb1 backup, lb2 keeps the VIP and the traffic.
//!
//! All along, a sampler on the client side of the switch asks who has the
//! VIP every 50 ms, and clients make real connections to it (connect, name
//! line, payload echo, close), counted per phase. At no sample may two MACs
//! answer; the longest unanswered stretch must stay within the master-down
//! interval plus a sampling margin; connections fail only in phase 2.
//!
//! Needs root, keepalived and haproxy installed, and lbd built next to this
//! test (`cargo build --release -p lb-userspace --bin lbd`); run with
//! `--test-threads=1 --nocapture`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_tests::lab::arp::{self, ArpSample, mac_text};
use lb_tests::lab::haproxy::Haproxy;
use lb_tests::lab::vrrp::{self, InstanceView, master_down};
use lb_tests::lab::{Lab, Lbd, assert_nothing_left, binaries, counters, echo_line};
use lb_tests::packet::Mac;
use lb_userspace::config::{self, CheckKind, Scheduler, TrackCondition};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PORT: u16 = 80;
const VRID: u8 = 51;
const INSTANCE: &str = "lb_vip";
const ADVERT: Duration = Duration::from_secs(1);
const PRIORITY: [u8; 2] = [101, 100];
const LB_ADDR: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];
/// Client addresses making short connections, one each per round.
const SOURCES: usize = 20;
/// Client addresses holding one long connection each from the start.
const HELD: usize = 6;
/// The address the ARP sampler asks from (the first client address).
const ASKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const ARP_PERIOD: Duration = Duration::from_millis(50);
/// What the measured longest ARP silence may exceed the master-down
/// interval by: it is measured between answered probes, so it overstates
/// the real silence by up to one period, a reply arriving just after its
/// window adds another, and on a loaded 2-core machine the sampler thread
/// and the daemons may be descheduled for a few hundred milliseconds.
const ARP_MARGIN: Duration = Duration::from_secs(1);
/// How long an agent may take from its start to a VRRP state and its
/// backends UP (XDP load, a master-down wait, two 2 s checks).
const AGENT_READY: Duration = Duration::from_secs(20);
/// Time for the daemons to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(5);

const PHASES: [&str; 4] = [
    "0 keepalived+HAProxy",
    "1 backup -> lbd",
    "2 master off",
    "3 old master -> lbd",
];
/// The only phase whose connections may fail: the one that switches the
/// HAProxy master off.
const MASTER_OFF: usize = 2;

fn lab() -> Lab {
    Lab::builder("mg")
        .lb_nodes(2)
        .backends(3)
        .client_addrs(SOURCES + HELD)
        .vips(&[VIP])
        .add_vips(false)
        .build()
        .expect("the lab builds (root, iproute2, bpffs)")
}

/// The pair's haproxy.cfg, the same on both nodes.
fn haproxy_cfg(lab: &Lab) -> String {
    let servers: String = (1..=lab.backends())
        .map(|n| {
            format!(
                "    server be{n} {}:{PORT} check inter 2s rise 2 fall 3\n",
                lab.backend_addr(n)
            )
        })
        .collect();
    format!(
        "global\n\
         \x20   log stderr format raw daemon notice\n\
         \x20   maxconn 4096\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \n\
         listen web\n\
         \x20   bind {VIP}:{PORT}\n\
         \x20   balance source\n\
         {servers}"
    )
}

/// Node `n`'s keepalived.conf: what the operator runs, without anything of
/// the lab's own (its state is read from the log).
fn keepalived_conf(lab: &Lab, n: usize) -> String {
    let me = n - 1;
    let peer = 1 - me;
    format!(
        "global_defs {{\n\
         \x20   router_id {node}\n\
         \x20   script_user root\n\
         \x20   enable_script_security\n\
         }}\n\
         \n\
         vrrp_script chk_haproxy {{\n\
         \x20   script \"/usr/bin/pgrep -F {pid_file} haproxy\"\n\
         \x20   interval 1\n\
         \x20   fall 2\n\
         \x20   rise 2\n\
         \x20   weight -20\n\
         }}\n\
         \n\
         vrrp_instance {INSTANCE} {{\n\
         \x20   state BACKUP\n\
         \x20   interface eth0\n\
         \x20   virtual_router_id {VRID}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert}\n\
         \x20   nopreempt\n\
         \x20   unicast_src_ip {src}\n\
         \x20   unicast_peer {{\n\
         \x20       {peer_addr}\n\
         \x20   }}\n\
         \x20   authentication {{\n\
         \x20       auth_type PASS\n\
         \x20       auth_pass Mg2kq7xw\n\
         \x20   }}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {VIP}/32 dev eth0\n\
         \x20   }}\n\
         \x20   track_script {{\n\
         \x20       chk_haproxy\n\
         \x20   }}\n\
         }}\n",
        node = lab.lb_node_name(n),
        pid_file = lab.haproxy_pid_file(n).display(),
        priority = PRIORITY[me],
        advert = ADVERT.as_secs(),
        src = LB_ADDR[me],
        peer_addr = LB_ADDR[peer],
    )
}

/// Runs the real `lbd` binary with `args`; returns its exit code, stdout
/// and stderr.
fn run_lbd(args: &[&str]) -> (i32, String, String) {
    let lbd = binaries::lbd().expect("lbd is built next to the tests");
    let out = std::process::Command::new(&lbd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", lbd.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lbd import` and `lbd check`, as step 1 of the guide; the imported file
/// must say what the pair's files say.
fn import(lab: &Lab, haproxy: &Path, keepalived: [&Path; 2]) -> PathBuf {
    let output = lab.dir().join("lbd.toml");
    let (node1, node2) = (lab.lb_node_name(1), lab.lb_node_name(2));
    let arg1 = format!("{node1}={}", keepalived[0].display());
    let arg2 = format!("{node2}={}", keepalived[1].display());
    let (code, _, stderr) = run_lbd(&[
        "import",
        "--haproxy",
        &haproxy.to_string_lossy(),
        "--keepalived",
        &arg1,
        "--keepalived",
        &arg2,
        "-o",
        &output.to_string_lossy(),
    ]);
    println!("lbd import said:\n{stderr}");
    assert_eq!(code, 0, "lbd import must succeed completely:\n{stderr}");
    let (code, stdout, stderr) = run_lbd(&["check", &output.to_string_lossy()]);
    assert_eq!(code, 0, "lbd check refuses the import:\n{stdout}{stderr}");

    let text = std::fs::read_to_string(&output).unwrap();
    let config = config::parse(&text, "lbd.toml")
        .unwrap_or_else(|e| panic!("lbd's parser refuses the import: {e}\n{text}"));
    let nodes: BTreeSet<&str> = config.nodes.keys().map(String::as_str).collect();
    assert_eq!(nodes, BTreeSet::from([node1.as_str(), node2.as_str()]));
    for node in config.nodes.values() {
        assert_eq!(node.interface, "eth0");
    }
    assert_eq!(config.services.len(), 1, "{text}");
    let service = &config.services[0];
    assert_eq!(
        (service.name.as_str(), service.vip, service.port),
        ("web", VIP, PORT)
    );
    assert_eq!(service.scheduler, Scheduler::Source);
    let backends: Vec<(String, SocketAddrV4)> = service
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.address))
        .collect();
    let expected: Vec<(String, SocketAddrV4)> = (1..=lab.backends())
        .map(|n| {
            (
                format!("be{n}"),
                SocketAddrV4::new(lab.backend_addr(n), PORT),
            )
        })
        .collect();
    assert_eq!(backends, expected);
    for backend in &service.backends {
        let check = backend.check.as_ref().expect("every server was checked");
        assert_eq!(check.kind, CheckKind::Tcp);
        assert_eq!(check.inter, Duration::from_secs(2));
        assert_eq!((check.rise, check.fall), (2, 3));
    }
    assert_eq!(config.vrrp.len(), 1);
    let instance = &config.vrrp[0];
    assert_eq!(instance.name, INSTANCE);
    assert_eq!(instance.virtual_router_id, VRID);
    assert_eq!(instance.vips, [VIP]);
    assert_eq!(instance.priority[&node1], PRIORITY[0]);
    assert_eq!(instance.priority[&node2], PRIORITY[1]);
    assert_eq!(instance.unicast_src[&node1], LB_ADDR[0]);
    assert_eq!(instance.unicast_src[&node2], LB_ADDR[1]);
    assert_eq!(instance.advert_interval, ADVERT);
    assert!(!instance.preempt, "nopreempt must carry over");
    let tracks: Vec<_> = instance
        .track
        .iter()
        .map(|t| (&t.condition, t.weight))
        .collect();
    assert_eq!(tracks, [(&TrackCondition::XdpAttached, -20)]);
    output
}

/// One round of short connections.
struct Round {
    phase: usize,
    attempts: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// Which phase the test is in, and which phase the round in flight started
/// in: a phase's disruptive steps wait until the first round of that phase
/// has started, so every round's failures belong to the phase it started in.
struct Phases {
    current: AtomicUsize,
    round: AtomicUsize,
    stop: AtomicBool,
    started: [std::sync::Mutex<Option<Instant>>; 4],
}

impl Phases {
    fn new() -> Phases {
        Phases {
            current: AtomicUsize::new(0),
            round: AtomicUsize::new(usize::MAX),
            stop: AtomicBool::new(false),
            started: Default::default(),
        }
    }

    fn enter(&self, phase: usize) {
        self.current.store(phase, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.round.load(Ordering::SeqCst) != phase {
            assert!(
                Instant::now() < deadline,
                "no round of connections started in phase {phase} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        *self.started[phase].lock().unwrap() = Some(Instant::now());
        println!("--- phase {}", PHASES[phase]);
    }

    fn started(&self, phase: usize) -> Instant {
        self.started[phase].lock().unwrap().expect("phase entered")
    }
}

/// Sets the flag however the scope ends, so the traffic thread stops and
/// the scope can join it even when an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// New flows node `n`'s data path counted over all backends.
fn new_flows(lab: &Lab, n: usize) -> u64 {
    counters::read_pinned(&lab.lbd_pin_dir(n))
        .expect("the pinned counters are readable")
        .backends
        .iter()
        .map(|b| b.stats.new_flows)
        .sum()
}

/// Waits until node `n`'s agent reports every backend UP: the guide's
/// "backends UP" before the VIP may come.
fn wait_backends_up(lab: &Lab, lbd: &mut Lbd) {
    let n = if lbd.node() == lab.lb_node_name(1) {
        1
    } else {
        2
    };
    let (_, took) = vrrp::poll(
        &format!("every backend UP on lb{n}"),
        AGENT_READY,
        Duration::from_millis(100),
        || {
            lbd.check_running()?;
            let status = lab.lbd_status_json(n)?;
            let backends = status["services"][0]["backends"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(
                (backends.len() == lab.backends() && backends.iter().all(|b| b["health"] == "up"))
                    .then_some(()),
            )
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\nlbd log:\n{}", lbd.log_tail(30)));
    println!("  lb{n}: every backend UP {took:.2?} after asking");
}

fn no_drops(view: &InstanceView, what: &str) {
    assert_eq!(view.total_drops(), 0, "{what}: dropped adverts {view:?}");
}

/// The distinct MACs that answered ARP in `samples`, in order of first
/// answer.
fn answerers(samples: &[&ArpSample]) -> Vec<Mac> {
    let mut seen = Vec::new();
    for mac in samples.iter().flat_map(|s| &s.answers) {
        if !seen.contains(mac) {
            seen.push(*mac);
        }
    }
    seen
}

#[test]
fn keepalived_haproxy_pair_migrates_to_lbd_one_node_at_a_time() {
    let test_start = Instant::now();
    let lab = lab();
    let vip = SocketAddrV4::new(VIP, PORT);
    let (node1, node2) = (lab.lb_node_name(1), lab.lb_node_name(2));
    for n in 1..=2 {
        // HAProxy binds the VIP when it starts, and both nodes run it while
        // keepalived gives the VIP to one: the backup has to bind an
        // address it does not hold yet, or HAProxy refuses to start there.
        lab.exec_in(
            &format!("lb{n}"),
            &["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"],
        )
        .expect("sysctl in the node namespace");
    }
    let _servers = lab.start_backend_servers(PORT).unwrap();

    // The pair as the operator runs it.
    let haproxy_path = lab.dir().join("haproxy.cfg");
    std::fs::write(&haproxy_path, haproxy_cfg(&lab)).unwrap();
    lab.check_haproxy_config(&haproxy_path).unwrap();
    let mut haproxy: [Option<Haproxy>; 2] = [1, 2].map(|n| {
        Some(
            lab.start_haproxy(n, &haproxy_path, Duration::from_secs(10))
                .unwrap(),
        )
    });
    let conf1 = keepalived_conf(&lab, 1);
    let conf2 = keepalived_conf(&lab, 2);
    let mut ka1 = lab.start_keepalived_with(1, &conf1).unwrap();
    ka1.wait_for_state(
        "MASTER",
        master_down(PRIORITY[0], ADVERT) + Duration::from_secs(5),
    )
    .unwrap();
    let mut ka2 = lab.start_keepalived_with(2, &conf2).unwrap();
    ka2.wait_for_state("BACKUP", Duration::from_secs(5))
        .unwrap();
    let keepalived_paths = [lab.keepalived_conf_path(1), lab.keepalived_conf_path(2)];
    let macs = [lab.mac("lb1").unwrap(), lab.mac("lb2").unwrap()];
    let name_of = |mac: &Mac| match macs.iter().position(|m| m == mac) {
        Some(i) => format!("lb{}", i + 1),
        None => mac_text(mac),
    };

    let served = lab
        .fetch_name(vip, Duration::from_secs(2))
        .expect("the VIP answers through HAProxy on lb1");
    println!(
        "pair up {:.1?} after the start: keepalived lb1 MASTER, lb2 BACKUP; {vip} answers ({served})",
        test_start.elapsed()
    );
    assert_eq!(lab.vips_held("lb1", &[VIP]).unwrap(), [VIP]);

    let sampler = lab.sample_arp("cl", ASKER, VIP, ARP_PERIOD).unwrap();
    let held_sources: Vec<Ipv4Addr> = lab.client_addrs().into_iter().skip(SOURCES).collect();
    let mut held = lab
        .open_held(held_sources, vip, Duration::from_secs(2))
        .expect("the long connections open through HAProxy");

    let phases = Phases::new();
    let mut lbd: [Option<Lbd>; 2] = [None, None];
    let mut held_died = 0;
    let mut takeover = Duration::ZERO;
    let mut flows = [0u64; 2];
    let rounds = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&phases.stop);
        let traffic = scope.spawn(|| {
            let mut rounds = Vec::new();
            while !phases.stop.load(Ordering::SeqCst) {
                let phase = phases.current.load(Ordering::SeqCst);
                phases.round.store(phase, Ordering::SeqCst);
                let report = lab
                    .spread(
                        vip,
                        SOURCES,
                        1,
                        &["--payload", "64", "--timeout", "3", "--parallel", "4"],
                    )
                    .expect("lab-client runs");
                rounds.push(Round {
                    phase,
                    attempts: report.attempts,
                    errors: report.errors,
                    error_samples: report.error_samples,
                });
                std::thread::sleep(Duration::from_millis(50));
            }
            rounds
        });

        // Phase 0: the pair serves; then step 1 of the guide.
        phases.enter(0);
        std::thread::sleep(Duration::from_secs(3));
        for (source, stream) in held.iter_mut() {
            echo_line(stream, &format!("phase0-{source}"))
                .unwrap_or_else(|e| panic!("held connection from {source}: {e:#}"));
        }
        let imported = import(
            &lab,
            &haproxy_path,
            [&keepalived_paths[0], &keepalived_paths[1]],
        );

        // Phase 1: replace the backup.
        phases.enter(1);
        ka2.stop(STOP).unwrap();
        haproxy[1].take().unwrap().stop(STOP).unwrap();
        let agent = lbd[1].insert(lab.start_lbd(2, &imported).unwrap());
        vrrp::wait_for_state(agent, "backup", AGENT_READY).unwrap();
        wait_backends_up(&lab, agent);
        // Long enough for lb2 to have taken over had it missed adverts.
        std::thread::sleep(master_down(PRIORITY[1], ADVERT) + ADVERT);
        let view = vrrp::instance(&node2, INSTANCE).unwrap();
        assert!(view.is_backup(), "phase 1: lbd on lb2 backup: {view:?}");
        assert_eq!(view.master, Some(LB_ADDR[0]), "phase 1: {view:?}");
        assert!(view.adverts_received > 0, "{view:?}");
        no_drops(&view, "phase 1");
        assert_eq!(ka1.state().as_deref(), Some("MASTER"));
        assert!(
            ka1.protocol_complaints().is_empty(),
            "keepalived complains about lbd: {:?}",
            ka1.protocol_complaints()
        );
        assert_eq!(lab.vips_held("lb1", &[VIP]).unwrap(), [VIP]);
        assert!(lab.vips_held("lb2", &[VIP]).unwrap().is_empty());
        for (source, stream) in held.iter_mut() {
            echo_line(stream, &format!("phase1-{source}"))
                .unwrap_or_else(|e| panic!("held connection from {source} in phase 1: {e:#}"));
        }
        println!("  lbd on lb2 backup under keepalived on lb1; {HELD} long connections alive");

        // Phase 2: switch the master off. keepalived first, and HAProxy
        // only once lbd holds the VIP, as the guide says: until the VIP has
        // moved, new connections still reach this node, and a stopped
        // HAProxy would refuse them.
        phases.enter(2);
        let off = Instant::now();
        ka1.terminate().unwrap();
        let (view, _) = vrrp::wait_for_instance(
            &node2,
            INSTANCE,
            master_down(PRIORITY[1], ADVERT) + Duration::from_secs(5),
            InstanceView::is_master,
        )
        .unwrap();
        takeover = off.elapsed();
        haproxy[0].take().unwrap().stop(STOP).unwrap();
        no_drops(&view, "phase 2");
        ka1.wait_exit(STOP).unwrap();
        println!("  lbd on lb2 master {takeover:.2?} after keepalived on lb1 was stopped");
        for (source, stream) in held.iter_mut() {
            if let Err(e) = echo_line(stream, &format!("phase2-{source}")) {
                println!("  long connection from {source} died: {e:#}");
                held_died += 1;
            }
        }
        let before = new_flows(&lab, 2);
        std::thread::sleep(Duration::from_secs(3));
        flows[0] = new_flows(&lab, 2) - before;

        // Phase 3: replace the old master with the same file.
        phases.enter(3);
        let agent = lbd[0].insert(lab.start_lbd(1, &imported).unwrap());
        vrrp::wait_for_state(agent, "backup", AGENT_READY).unwrap();
        wait_backends_up(&lab, agent);
        let before = (new_flows(&lab, 1), new_flows(&lab, 2));
        // preempt = false: lb1 must not take the VIP back, however long.
        std::thread::sleep(master_down(PRIORITY[0], ADVERT) + 2 * ADVERT);
        flows[1] = new_flows(&lab, 2) - before.1;
        let lb1_flows = new_flows(&lab, 1) - before.0;
        let view1 = vrrp::instance(&node1, INSTANCE).unwrap();
        let view2 = vrrp::instance(&node2, INSTANCE).unwrap();
        assert!(view1.is_backup(), "phase 3: lb1 backup: {view1:?}");
        assert_eq!(view1.master, Some(LB_ADDR[1]), "phase 3: {view1:?}");
        assert!(view2.is_master(), "phase 3: lb2 stays master: {view2:?}");
        let lb2_log = lbd[1].as_ref().unwrap().log();
        assert_eq!(
            vrrp::entered(&lb2_log, INSTANCE, "master"),
            1,
            "lb2 became master once, in phase 2"
        );
        no_drops(&view1, "phase 3 lb1");
        no_drops(&view2, "phase 3 lb2");
        assert_eq!(lb1_flows, 0, "lb1 (backup) forwarded new connections");
        assert_eq!(lab.vips_held("lb2", &[VIP]).unwrap(), [VIP]);
        assert!(lab.vips_held("lb1", &[VIP]).unwrap().is_empty());
        let status = lab.lbd_status_json(2).unwrap();
        let per_backend: Vec<String> = status["services"][0]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{} {} {}",
                    b["name"], b["health"], b["traffic"]["new_flows"]
                )
            })
            .collect();
        println!(
            "  lbd status on lb2: VRRP {} {}, new flows per backend: {}",
            view2.state,
            view2.priority,
            per_backend.join(", ")
        );

        phases.stop.store(true, Ordering::SeqCst);
        traffic.join().expect("the traffic thread finished")
    });
    let samples = sampler.finish().expect("the ARP sampler ran");
    let end = Instant::now();

    // The summary, then the verdicts.
    println!(
        "{:<22} {:>9} {:>12} {:>9}  {:<12} {:>10}",
        "phase", "duration", "connections", "failures", "ARP answers", "worst gap"
    );
    let mut failures = [0u64; 4];
    let mut attempts = [0u64; 4];
    let mut phase_answerers = Vec::new();
    for (phase, name) in PHASES.iter().enumerate() {
        let from = phases.started(phase);
        let to = if phase + 1 < PHASES.len() {
            phases.started(phase + 1)
        } else {
            end
        };
        for round in rounds.iter().filter(|r| r.phase == phase) {
            attempts[phase] += round.attempts;
            failures[phase] += round.errors;
            if round.errors > 0 {
                println!(
                    "  phase {name}: {} of {} failed: {:?}",
                    round.errors, round.attempts, round.error_samples
                );
            }
        }
        let held_failures = if phase == MASTER_OFF { held_died } else { 0 };
        let in_phase: Vec<&ArpSample> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .collect();
        // A silence that began in the previous phase ends in this one: start
        // from the last answered probe before it.
        let first = samples.partition_point(|s| s.at < from);
        let lead = samples[..first]
            .iter()
            .rposition(|s| !s.answers.is_empty())
            .unwrap_or(first);
        let end_index = samples.partition_point(|s| s.at < to);
        let gap = arp::longest_silence(&samples[lead..end_index]);
        let who = answerers(&in_phase);
        println!(
            "{:<22} {:>8.1?} {:>12} {:>9}  {:<12} {:>8.0}ms",
            name,
            to - from,
            attempts[phase] + held_failures as u64,
            format!("{}+{held_failures}", failures[phase]),
            who.iter().map(&name_of).collect::<Vec<_>>().join(","),
            gap.as_secs_f64() * 1000.0,
        );
        phase_answerers.push(who);
    }
    let worst_gap = arp::longest_silence(&samples);
    let gap_bound = master_down(PRIORITY[1], ADVERT) + ARP_MARGIN;
    println!(
        "{} ARP samples; worst gap {worst_gap:.2?} (bound {gap_bound:.2?}); takeover {takeover:.2?}; \
         {held_died} of {HELD} long connections died with HAProxy; new flows through lbd on lb2: \
         {} in phase 2, {} in phase 3",
        samples.len(),
        flows[0],
        flows[1]
    );

    let contested = arp::contested(&samples);
    assert!(
        contested.is_empty(),
        "two MACs answered ARP for {VIP} at {} samples, first: {:?}",
        contested.len(),
        contested
            .first()
            .map(|s| s.answers.iter().map(&name_of).collect::<Vec<_>>())
    );
    assert!(
        worst_gap <= gap_bound,
        "nobody answered ARP for {VIP} for {worst_gap:?}, bound {gap_bound:?}"
    );
    assert_eq!(phase_answerers[0], [macs[0]], "phase 0: lb1 answers");
    assert_eq!(phase_answerers[1], [macs[0]], "phase 1: lb1 answers");
    // lb1 may give the VIP up before the first probe of phase 2.
    assert!(
        phase_answerers[2] == macs || phase_answerers[2] == [macs[1]],
        "phase 2: lb1 (until it stops), then lb2: {:?}",
        phase_answerers[2].iter().map(&name_of).collect::<Vec<_>>()
    );
    assert_eq!(phase_answerers[3], [macs[1]], "phase 3: lb2 answers");
    assert!(
        samples.last().is_some_and(|s| s.answers == [macs[1]]),
        "lb2 answers at the end"
    );
    assert!(
        takeover <= master_down(PRIORITY[1], ADVERT),
        "lbd took {takeover:?} to take over, master-down is {:?}",
        master_down(PRIORITY[1], ADVERT)
    );
    for phase in 0..PHASES.len() {
        assert!(
            attempts[phase] > 0,
            "no connection in phase {}",
            PHASES[phase]
        );
        if phase != MASTER_OFF {
            assert_eq!(
                failures[phase], 0,
                "connections failed in phase {}",
                PHASES[phase]
            );
        }
    }
    assert_eq!(
        held_died, HELD,
        "the long connections through lb1's HAProxy die with it"
    );
    assert!(flows[0] > 0 && flows[1] > 0, "traffic flows through lbd");

    for agent in lbd.iter_mut().flatten() {
        agent.stop(STOP).unwrap();
    }
    drop(lbd);
    drop(ka2);
    drop(ka1);
    drop(haproxy);
    let prefix = lab.prefix().to_string();
    let pins = [lab.lbd_pin_dir(1), lab.lbd_pin_dir(2)];
    lab.teardown().unwrap();
    drop(lab);
    for pin_dir in &pins {
        assert_nothing_left(&prefix, pin_dir);
    }
    println!("run time {:.1?}", test_start.elapsed());
}
