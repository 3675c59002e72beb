//! Debian's keepalived (2.2.x) as a VRRP peer of lbd in a lab namespace:
//! the interop labs replace one lbd node with it, as an operator migrating
//! a keepalived pair one node at a time would.
//!
//! [`VrrpSetup`] holds the wire settings both sides must share (VRID,
//! version, auth, interval, VIPs, unicast or multicast) plus each member's
//! address and priority, and renders both lbd's `[[vrrp]]` table and
//! keepalived's `vrrp_instance` from the same values, so the two can never
//! disagree by a typo; a test may also start keepalived with a config of
//! its own ([`Lab::start_keepalived_with`], the migration lab's operator
//! files). [`Keepalived`] is the running daemon: its state comes from a
//! notify script appending to a file (or, with a config of the test's own,
//! from its log's `Entering ... STATE` lines), its log (console logging, into
//! the lab directory) is scanned for the complaints keepalived prints about
//! packets it rejects. Dropping it kills it; the lab's teardown kills
//! whatever is left in the namespace anyway.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::child;
use super::{Lab, topology};

/// The interface every lab host uses.
const LAB_INTERFACE: &str = "eth0";

/// keepalived's `auth_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    Pass,
    Ah,
}

/// VRRPv2 authentication, the same on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub kind: AuthKind,
    /// 1 to 8 bytes: lbd refuses longer ones, keepalived would cut them.
    pub password: String,
}

/// One node of the VRRP instance: lbd or keepalived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// lbd's node name (`<prefix>-lb<n>`), also keepalived's router id.
    pub node: String,
    /// The address it sends from (its lab front address).
    pub addr: Ipv4Addr,
    pub priority: u8,
}

/// The settings of one VRRP instance shared by lbd and keepalived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpSetup {
    /// lbd's `name`, keepalived's `vrrp_instance` name.
    pub instance: String,
    pub vrid: u8,
    /// 2 or 3. Authentication needs 2.
    pub version: u8,
    pub auth: Option<Auth>,
    /// Whole seconds for v2, centiseconds for v3.
    pub advert_interval: Duration,
    pub vips: Vec<Ipv4Addr>,
    /// Unicast between the members' addresses; multicast (224.0.0.18)
    /// otherwise.
    pub unicast: bool,
    pub members: Vec<Member>,
    /// lbd's `preempt` and keepalived's `nopreempt` (inverted).
    pub preempt: bool,
}

impl VrrpSetup {
    /// An instance between the lab's LB nodes 1..=priorities.len(),
    /// node n with `priorities[n-1]`, sending from its front address.
    pub fn for_lab(
        lab: &Lab,
        vrid: u8,
        version: u8,
        auth: Option<Auth>,
        advert_interval: Duration,
        unicast: bool,
        priorities: &[u8],
    ) -> VrrpSetup {
        let members = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| Member {
                node: lab.lb_node_name(i + 1),
                addr: topology::lb_front_addr(i + 1),
                priority,
            })
            .collect();
        VrrpSetup {
            instance: "lb_vip".into(),
            vrid,
            version,
            auth,
            advert_interval,
            vips: lab.plan.shape.vips.clone(),
            unicast,
            members,
            preempt: true,
        }
    }

    /// The member running as lbd node `node`.
    pub fn member(&self, node: &str) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.node == node)
            .with_context(|| format!("VRRP instance {} has no member {node}", self.instance))
    }

    /// Sets `node`'s priority (e.g. to swap master and backup roles).
    pub fn set_priority(&mut self, node: &str, priority: u8) -> Result<()> {
        let instance = self.instance.clone();
        let member = self
            .members
            .iter_mut()
            .find(|m| m.node == node)
            .with_context(|| format!("VRRP instance {instance} has no member {node}"))?;
        member.priority = priority;
        Ok(())
    }

    /// The skew time of a member with `priority` (RFC 3768 for v2: whole
    /// seconds, RFC 5798 for v3: a share of the interval).
    pub fn skew(&self, priority: u8) -> Duration {
        let unit = if self.version == 2 {
            Duration::from_secs(1)
        } else {
            self.advert_interval
        };
        unit * u32::from(256 - u16::from(priority)) / 256
    }

    /// How long a backup with `priority` waits for a silent master.
    pub fn master_down(&self, priority: u8) -> Duration {
        3 * self.advert_interval + self.skew(priority)
    }

    /// lbd's `[[vrrp]]` table for this instance (appended to a lab config,
    /// whose `[node.*]` tables name the same nodes).
    pub fn lbd_toml(&self) -> String {
        let mut t = String::new();
        let quoted = |addrs: &mut dyn Iterator<Item = Ipv4Addr>| {
            addrs
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let per_node = |value: &dyn Fn(&Member) -> String| {
            self.members
                .iter()
                .map(|m| format!("\"{}\" = {}", m.node, value(m)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(t, "\n[[vrrp]]").unwrap();
        writeln!(t, "name = \"{}\"", self.instance).unwrap();
        writeln!(t, "virtual_router_id = {}", self.vrid).unwrap();
        writeln!(t, "version = {}", self.version).unwrap();
        writeln!(
            t,
            "priority = {{ {} }}",
            per_node(&|m| m.priority.to_string())
        )
        .unwrap();
        writeln!(
            t,
            "advert_interval = \"{}ms\"",
            self.advert_interval.as_millis()
        )
        .unwrap();
        if let Some(auth) = &self.auth {
            let kind = match auth.kind {
                AuthKind::Pass => "pass",
                AuthKind::Ah => "ah",
            };
            writeln!(
                t,
                "auth = {{ type = \"{kind}\", password = \"{}\" }}",
                auth.password
            )
            .unwrap();
        }
        if self.unicast {
            writeln!(
                t,
                "unicast_peers = [{}]",
                quoted(&mut self.members.iter().map(|m| m.addr))
            )
            .unwrap();
            writeln!(
                t,
                "unicast_src = {{ {} }}",
                per_node(&|m| format!("\"{}\"", m.addr))
            )
            .unwrap();
        }
        writeln!(t, "vips = [{}]", quoted(&mut self.vips.iter().copied())).unwrap();
        writeln!(t, "preempt = {}", self.preempt).unwrap();
        // One quick burst: the labs read addresses, not ARP caches.
        writeln!(
            t,
            "garp = {{ count = 2, interval = \"0s\", delay = \"0s\" }}"
        )
        .unwrap();
        t
    }

    /// keepalived.conf for member `node`, with the notify script and pid
    /// files of `files`.
    pub fn keepalived_conf(&self, node: &str, files: &KeepalivedFiles) -> Result<String> {
        let me = self.member(node)?;
        let mut c = String::new();
        writeln!(c, "global_defs {{").unwrap();
        writeln!(c, "    router_id {}", me.node).unwrap();
        writeln!(c, "    script_user root").unwrap();
        writeln!(c, "    enable_script_security").unwrap();
        writeln!(c, "    vrrp_version {}", self.version).unwrap();
        writeln!(c, "    vrrp_garp_master_delay 0").unwrap();
        writeln!(c, "    vrrp_garp_master_repeat 2").unwrap();
        writeln!(c, "}}").unwrap();
        writeln!(c, "vrrp_instance {} {{", self.instance).unwrap();
        writeln!(c, "    state BACKUP").unwrap();
        writeln!(c, "    interface {LAB_INTERFACE}").unwrap();
        writeln!(c, "    virtual_router_id {}", self.vrid).unwrap();
        writeln!(c, "    priority {}", me.priority).unwrap();
        writeln!(c, "    advert_int {}", advert_int(self.advert_interval)).unwrap();
        if !self.preempt {
            writeln!(c, "    nopreempt").unwrap();
        }
        if self.unicast {
            writeln!(c, "    unicast_src_ip {}", me.addr).unwrap();
            writeln!(c, "    unicast_peer {{").unwrap();
            for peer in self.members.iter().filter(|m| m.node != me.node) {
                writeln!(c, "        {}", peer.addr).unwrap();
            }
            writeln!(c, "    }}").unwrap();
        }
        if let Some(auth) = &self.auth {
            let kind = match auth.kind {
                AuthKind::Pass => "PASS",
                AuthKind::Ah => "AH",
            };
            writeln!(c, "    authentication {{").unwrap();
            writeln!(c, "        auth_type {kind}").unwrap();
            writeln!(c, "        auth_pass {}", auth.password).unwrap();
            writeln!(c, "    }}").unwrap();
        }
        writeln!(c, "    virtual_ipaddress {{").unwrap();
        for vip in &self.vips {
            writeln!(c, "        {vip}/32 dev {LAB_INTERFACE}").unwrap();
        }
        writeln!(c, "    }}").unwrap();
        writeln!(c, "    notify {}", files.notify_script.display()).unwrap();
        writeln!(c, "}}").unwrap();
        Ok(c)
    }
}

/// keepalived's `advert_int`: seconds, with a fraction for v3.
fn advert_int(interval: Duration) -> String {
    let ms = interval.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
            .trim_end_matches('0')
            .to_string()
    }
}

/// Where one keepalived of a lab keeps its files (all in the lab dir, so
/// teardown removes them and concurrent labs never share a pid file).
#[derive(Clone, Debug)]
pub struct KeepalivedFiles {
    pub config: PathBuf,
    pub log: PathBuf,
    pub notify_script: PathBuf,
    /// Appended to by the notify script: one `STATE` word per line.
    pub states: PathBuf,
    pub main_pid: PathBuf,
    pub vrrp_pid: PathBuf,
    pub checkers_pid: PathBuf,
    pub bfd_pid: PathBuf,
}

impl KeepalivedFiles {
    fn in_dir(dir: &Path, short: &str) -> Self {
        let f = |suffix: &str| dir.join(format!("{short}-keepalived{suffix}"));
        KeepalivedFiles {
            config: f(".conf"),
            log: f(".log"),
            notify_script: f("-notify.sh"),
            states: f("-states"),
            main_pid: f(".pid"),
            vrrp_pid: f("-vrrp.pid"),
            checkers_pid: f("-checkers.pid"),
            bfd_pid: f("-bfd.pid"),
        }
    }
}

/// What keepalived 2.2 logs when it rejects a received packet (its
/// `vrrp_check_packet` and AH checks); any of these about lbd's adverts
/// is an interop bug.
pub const PROTOCOL_COMPLAINTS: &[&str] = &[
    "invalid TTL",
    "TTL/HL",
    "vrrp packet too",
    "wrong version",
    "auth, expecting",
    "invalid passwd",
    "IPSEC-AH : invalid",
    "already processed",
    "advertisement interval mismatch",
    "Invalid packet type",
    "unexpected ip number count",
    "ip_tot_len mismatch",
    "icast packet but received",
    "VIPs but received",
    "not present in MASTER advert",
    "not a unicast peer",
    "Invalid VRRPv3 checksum",
    "Invalid VRRPv2 checksum",
    "Received AH header but auth type not AH",
    "No AH header but auth type is AH",
    "Unknown VRID",
];

/// The complaint lines of a keepalived log.
pub fn protocol_complaints(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| PROTOCOL_COMPLAINTS.iter().any(|c| line.contains(c)))
        .map(str::to_string)
        .collect()
}

/// A running keepalived (VRRP subsystem only) in an LB node's namespace.
pub struct Keepalived {
    child: Child,
    files: KeepalivedFiles,
    short: String,
    started: Instant,
    state_source: StateSource,
}

/// Where a keepalived's state changes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateSource {
    /// The notify script the lab added to the config.
    Notify,
    /// The log: an operator's config has no notify script of ours.
    Log,
}

/// The states of `log`'s `(instance) Entering MASTER STATE` lines, oldest
/// first.
pub fn logged_states(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("Entering ")? + "Entering ".len()..];
            let (state, _) = rest.split_once(" STATE")?;
            Some(state.to_string())
        })
        .collect()
}

impl Lab {
    /// Starts keepalived in LB node `n`'s namespace as `setup`'s member
    /// `lb_node_name(n)`, logging to `<lab dir>/lb<n>-keepalived.log`.
    pub fn start_keepalived(&self, n: usize, setup: &VrrpSetup) -> Result<Keepalived> {
        let short = format!("lb{n}");
        let files = KeepalivedFiles::in_dir(self.dir(), &short);
        write_notify_script(&files)?;
        let conf = setup.keepalived_conf(&self.lb_node_name(n), &files)?;
        self.spawn_keepalived(short, files, conf, StateSource::Notify)
    }

    /// Starts keepalived in LB node `n`'s namespace with a config written
    /// by the test as an operator would have it (no notify script): its
    /// states come from its log's `Entering ... STATE` lines.
    pub fn start_keepalived_with(&self, n: usize, conf: &str) -> Result<Keepalived> {
        let short = format!("lb{n}");
        let files = KeepalivedFiles::in_dir(self.dir(), &short);
        self.spawn_keepalived(short, files, conf.to_string(), StateSource::Log)
    }

    /// Where `start_keepalived_with` writes LB node `n`'s config.
    pub fn keepalived_conf_path(&self, n: usize) -> PathBuf {
        KeepalivedFiles::in_dir(self.dir(), &format!("lb{n}")).config
    }

    fn spawn_keepalived(
        &self,
        short: String,
        files: KeepalivedFiles,
        conf: String,
        state_source: StateSource,
    ) -> Result<Keepalived> {
        std::fs::write(&files.config, conf)
            .with_context(|| format!("could not write {}", files.config.display()))?;
        for stale in [&files.main_pid, &files.vrrp_pid, &files.states] {
            std::fs::remove_file(stale).ok();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .with_context(|| format!("could not open {}", files.log.display()))?;
        let mut cmd = self.command_in(&short, "keepalived")?;
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
        ])
        .args(["--dont-respawn", "--vrrp", "--use-file"])
        .arg(&files.config)
        .arg("--pid")
        .arg(&files.main_pid)
        .arg("--vrrp_pid")
        .arg(&files.vrrp_pid)
        .arg("--checkers_pid")
        .arg(&files.checkers_pid)
        .arg("--bfd_pid")
        .arg(&files.bfd_pid)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let child = cmd
            .spawn()
            .context("could not start keepalived (apt-get install keepalived)")?;
        Ok(Keepalived {
            child,
            files,
            short,
            started: Instant::now(),
            state_source,
        })
    }
}

fn write_notify_script(files: &KeepalivedFiles) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // keepalived calls: notify TYPE NAME STATE PRIORITY.
    let script = format!("#!/bin/sh\necho \"$3\" >> '{}'\n", files.states.display());
    std::fs::write(&files.notify_script, script)
        .with_context(|| format!("could not write {}", files.notify_script.display()))?;
    std::fs::set_permissions(&files.notify_script, std::fs::Permissions::from_mode(0o755))
        .context("could not make the notify script executable")
}

impl Keepalived {
    pub fn files(&self) -> &KeepalivedFiles {
        &self.files
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.files.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        child::last_lines(&self.log(), lines)
    }

    /// Lines where keepalived rejected a packet (see [`PROTOCOL_COMPLAINTS`]).
    pub fn protocol_complaints(&self) -> Vec<String> {
        protocol_complaints(&self.log())
    }

    /// The states the notify script (or the log) recorded, oldest first (`MASTER`,
    /// `BACKUP`, `FAULT`, `STOP`).
    pub fn states(&self) -> Vec<String> {
        if self.state_source == StateSource::Log {
            return logged_states(&self.log());
        }
        std::fs::read_to_string(&self.files.states)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The latest recorded state.
    pub fn state(&self) -> Option<String> {
        self.states().pop()
    }

    /// Fails, quoting the log, when keepalived has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("could not poll keepalived")? {
            bail!(
                "keepalived in {} exited with {status} after {:.1?}; its log ends with:\n{}",
                self.short,
                self.started.elapsed(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Waits until the notify script recorded `state` as the latest one;
    /// returns how long that took.
    pub fn wait_for_state(&mut self, state: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.state().as_deref() == Some(state) {
                return Ok(start.elapsed());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                bail!(
                    "keepalived in {} not {state} within {timeout:?} (states {:?}); log ends with:\n{}",
                    self.short,
                    self.states(),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, as `systemctl stop keepalived`: a master sends a priority 0
    /// advert and removes its VIPs. Waits for the exit, then kills.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.terminate()?;
        self.wait_exit(timeout)
    }

    /// Sends SIGTERM and returns at once (keepalived 2.2 takes about a
    /// second to exit, having handed over long before).
    pub fn terminate(&mut self) -> Result<()> {
        child::send_sigterm(&mut self.child)
    }

    /// Waits up to `timeout` for keepalived to exit, then kills it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = child::wait_exit(&mut self.child, timeout)? {
            return Ok(status);
        }
        self.kill();
        bail!(
            "keepalived in {} did not stop within {timeout:?} of SIGTERM and was killed",
            self.short
        )
    }

    /// SIGKILL to the VRRP process and its parent: a crash, no priority 0
    /// advert, the VIPs stay on the interface.
    pub fn kill(&mut self) {
        if let Some(pid) = read_pid(&self.files.vrrp_pid) {
            // The VRRP child is a process of this lab's namespace that our
            // keepalived wrote down; --dont-respawn keeps the parent from
            // starting another.
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- keepalived {} log (last lines of {}) ---\n{}",
                self.short,
                self.files.log.display(),
                self.log_tail(40)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(version: u8, auth: Option<Auth>, unicast: bool) -> VrrpSetup {
        VrrpSetup {
            instance: "lb_vip".into(),
            vrid: 42,
            version,
            auth,
            advert_interval: if version == 2 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(500)
            },
            vips: vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)],
            unicast,
            members: vec![
                Member {
                    node: "t1-lb1".into(),
                    addr: Ipv4Addr::new(192, 0, 2, 2),
                    priority: 101,
                },
                Member {
                    node: "t1-lb2".into(),
                    addr: Ipv4Addr::new(192, 0, 2, 3),
                    priority: 100,
                },
            ],
            preempt: true,
        }
    }

    fn ah() -> Option<Auth> {
        Some(Auth {
            kind: AuthKind::Ah,
            password: "Pass1234".into(),
        })
    }

    fn files() -> KeepalivedFiles {
        KeepalivedFiles::in_dir(Path::new("/tmp/lab"), "lb2")
    }

    /// lbd's table, read by lbd's own config code, gives the wire settings
    /// keepalived's file says.
    fn lbd_view(s: &VrrpSetup, node: &str) -> lb_userspace::vrrp::config::NodeInstance {
        let nodes: Vec<String> = s.members.iter().map(|m| m.node.clone()).collect();
        let mut text = super::super::LbdConfig::for_lab_nodes(&nodes, vec![])
            .render()
            .unwrap();
        text.push_str(&s.lbd_toml());
        let config = lb_userspace::config::parse(&text, "lab.toml")
            .unwrap_or_else(|e| panic!("lbd refuses the rendered [[vrrp]]: {e}\n{text}"));
        let me = s.member(node).unwrap().addr;
        let mut instances = lb_userspace::vrrp::config::for_node(&config, node, Some(me)).unwrap();
        assert_eq!(instances.len(), 1);
        instances.remove(0)
    }

    #[test]
    fn lbd_and_keepalived_get_the_same_unicast_ah_wire_settings() {
        let s = setup(2, ah(), true);
        let lbd = lbd_view(&s, "t1-lb1");
        assert_eq!(lbd.rx.vrid, 42);
        assert_eq!(lbd.rx.interval_cs, 100);
        assert_eq!(lbd.rx.vips, s.vips);
        assert_eq!(lbd.src, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(lbd.destinations, [Ipv4Addr::new(192, 0, 2, 3)]);
        assert!(lbd.uses_ah());
        assert_eq!(lbd.machine.priority, 101);
        let conf = s.keepalived_conf("t1-lb2", &files()).unwrap();
        for line in [
            "vrrp_version 2",
            "virtual_router_id 42",
            "priority 100",
            "advert_int 1\n",
            "unicast_src_ip 192.0.2.3",
            "        192.0.2.2\n",
            "auth_type AH",
            "auth_pass Pass1234",
            "192.0.2.10/32 dev eth0",
            "192.0.2.20/32 dev eth0",
            "state BACKUP",
        ] {
            assert!(conf.contains(line), "missing {line:?} in\n{conf}");
        }
        assert!(!conf.contains("nopreempt"));
        assert!(
            !conf.contains("192.0.2.3\n    }"),
            "lb2 is not its own peer"
        );
    }

    #[test]
    fn multicast_v3_has_no_peers_and_a_fractional_interval() {
        let mut s = setup(3, None, false);
        s.preempt = false;
        let lbd = lbd_view(&s, "t1-lb2");
        assert_eq!(lbd.destinations, [Ipv4Addr::new(224, 0, 0, 18)]);
        assert_eq!(lbd.rx.interval_cs, 50);
        assert!(!lbd.machine.preempt);
        assert!(!lbd.uses_ah());
        let conf = s.keepalived_conf("t1-lb1", &files()).unwrap();
        assert!(conf.contains("advert_int 0.5\n"), "{conf}");
        assert!(conf.contains("vrrp_version 3"), "{conf}");
        assert!(conf.contains("nopreempt"), "{conf}");
        assert!(!conf.contains("unicast") && !conf.contains("authentication"));
    }

    #[test]
    fn timers_follow_the_rfcs() {
        let v2 = setup(2, None, true);
        assert_eq!(v2.skew(100), Duration::from_micros(609_375));
        assert_eq!(v2.master_down(100), Duration::from_micros(3_609_375));
        let v3 = setup(3, None, false);
        assert_eq!(v3.skew(128), Duration::from_millis(250));
        assert_eq!(v3.master_down(128), Duration::from_millis(1750));
    }

    #[test]
    fn states_are_read_from_keepalived_2_2_log_lines() {
        let log = "Sun Dec  6 02:30:01 2026: (lb_vip) Entering BACKUP STATE (init)\n\
                   Sun Dec  6 02:30:04 2026: (lb_vip) Receive advertisement timeout\n\
                   Sun Dec  6 02:30:04 2026: (lb_vip) Entering MASTER STATE\n\
                   Sun Dec  6 02:30:09 2026: (lb_vip) Entering FAULT STATE\n";
        assert_eq!(logged_states(log), ["BACKUP", "MASTER", "FAULT"]);
    }

    #[test]
    fn complaints_are_found_and_normal_lines_are_not() {
        let log = "Sun Nov 22 (lb_vip) Entering MASTER STATE\n\
                   Sun Nov 22 (lb_vip) received an invalid passwd!\n\
                   Sun Nov 22 (lb_vip) Backup received priority 0 advertisement\n\
                   Sun Nov 22 (lb_vip) Invalid VRRPv3 checksum\n";
        assert_eq!(protocol_complaints(log).len(), 2);
    }

    /// keepalived itself accepts what we render (`--config-test`), when
    /// installed; the interop labs need it anyway.
    #[test]
    fn keepalived_accepts_the_rendered_configs() {
        let dir = std::env::temp_dir().join(format!("kad-conftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = KeepalivedFiles::in_dir(&dir, "lb2");
        write_notify_script(&f).unwrap();
        let pass = Some(Auth {
            kind: AuthKind::Pass,
            password: "secret".into(),
        });
        for s in [
            setup(2, ah(), true),
            setup(2, pass, true),
            setup(3, None, false),
        ] {
            std::fs::write(&f.config, s.keepalived_conf("t1-lb2", &f).unwrap()).unwrap();
            let out = std::process::Command::new("keepalived")
                .arg("--config-test")
                .arg("--use-file")
                .arg(&f.config)
                .output()
                .expect("keepalived is installed (apt-get install keepalived)");
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "keepalived -t failed:\n{text}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
