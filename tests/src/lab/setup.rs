//! Building a lab from its [`Plan`] and tearing it down again, whatever
//! happened in between (a failed step, a panicking test, Ctrl-C in the demo).

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::lbd::{BackendConfig, Lbd, LbdConfig};
use super::topology::{self, Plan, Role, Shape};
use super::xdp_peer::SwitchPrograms;
use super::{binaries, names, netns};
use crate::packet::Mac;

/// Where lbd pins its maps and link, per node (docs/architecture.md, "Pins and the layout version").
pub const BPFFS_LB_DIR: &str = "/sys/fs/bpf/lb";

/// Offloads that must be off on every lab veth: locally generated packets
/// carry partial checksums, and TSO/GSO/GRO would hand XDP oversized frames.
const OFFLOADS_OFF: [&str; 8] = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"];

/// Builds a [`Lab`] with more options than [`Lab::datapath`].
#[derive(Clone, Debug)]
pub struct LabBuilder {
    hint: String,
    shape: Shape,
}

impl LabBuilder {
    /// `hint`: 1-6 lowercase letters naming the kind of lab (e.g. `dp`).
    pub fn new(hint: &str) -> Self {
        LabBuilder {
            hint: hint.to_string(),
            shape: Shape {
                lb_nodes: 1,
                backends: 3,
                client_addrs: 200,
                vips: vec![topology::DEFAULT_VIP],
                add_vips: true,
            },
        }
    }

    pub fn lb_nodes(mut self, n: usize) -> Self {
        self.shape.lb_nodes = n;
        self
    }

    pub fn backends(mut self, n: usize) -> Self {
        self.shape.backends = n;
        self
    }

    pub fn client_addrs(mut self, n: usize) -> Self {
        self.shape.client_addrs = n;
        self
    }

    pub fn vips(mut self, vips: &[Ipv4Addr]) -> Self {
        self.shape.vips = vips.to_vec();
        self
    }

    /// Whether the lab puts the VIPs on lb1 (default: yes). Turn it off when
    /// the agents add them (VRRP).
    pub fn add_vips(mut self, yes: bool) -> Self {
        self.shape.add_vips = yes;
        self
    }

    pub fn build(self) -> Result<Lab> {
        if !names::valid_hint(&self.hint) {
            bail!(
                "lab name hint {:?} must be 1-6 lowercase letters",
                self.hint
            );
        }
        require_root()?;
        let prefix = names::fresh_prefix(&self.hint);
        let plan = Plan::new(&prefix, self.shape)?;
        remove_stale_labs(&self.hint, &prefix);
        let dir = std::env::temp_dir().join(format!("{LAB_DIR_PREFIX}{prefix}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create the lab directory {}", dir.display()))?;
        let lab = Lab {
            plan,
            dir,
            switch_programs: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            torn_down: Mutex::new(false),
            next_stats_port: AtomicU16::new(STATS_PORT_BASE),
        };
        // From here on a failure drops `lab`, which removes what was made.
        let started = Instant::now();
        lab.wire()
            .with_context(|| format!("could not build lab {prefix}"))?;
        eprintln!(
            "lab {prefix}: {} namespaces, {} client addresses, built in {:.2?}",
            lab.plan.nodes.len(),
            lab.plan.shape.client_addrs,
            started.elapsed()
        );
        Ok(lab)
    }
}

/// Scratch directories are `<tmp>/lb-lab-<prefix>`.
const LAB_DIR_PREFIX: &str = "lb-lab-";

/// Stats listeners of lab servers: `127.0.0.1:<port>` inside their namespace.
const STATS_PORT_BASE: u16 = 9100;

/// A running lab: namespaces `<prefix>-sw` (bridge `br0`), `<prefix>-lb1..`,
/// `<prefix>-cl` (all client addresses), `<prefix>-be1..`. See
/// [`topology`] for the addresses. Dropping it tears everything down.
pub struct Lab {
    pub(crate) plan: Plan,
    dir: PathBuf,
    switch_programs: Mutex<Vec<SwitchPrograms>>,
    /// Processes the lab started and owns (servers); killed at teardown.
    children: Mutex<Vec<Child>>,
    /// Set once teardown has run; held while it runs, so a second caller
    /// (Ctrl-C handler vs. Drop) waits for the first to finish.
    torn_down: Mutex<bool>,
    next_stats_port: AtomicU16,
}

impl Lab {
    /// The standard data-path lab: one LB node with VIP 192.0.2.10,
    /// `backends` servers, `client_addrs` client source addresses.
    pub fn datapath(hint: &str, backends: usize, client_addrs: usize) -> Result<Lab> {
        LabBuilder::new(hint)
            .backends(backends)
            .client_addrs(client_addrs)
            .build()
    }

    pub fn builder(hint: &str) -> LabBuilder {
        LabBuilder::new(hint)
    }

    pub fn prefix(&self) -> &str {
        &self.plan.prefix
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The lab's scratch directory (configs, logs); removed at teardown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace of a node given by short name (`sw`, `lb1`, `cl`,
    /// `be2`); a full namespace name of this lab is accepted too.
    pub fn netns(&self, node: &str) -> Result<&str> {
        self.plan
            .nodes
            .iter()
            .find(|n| n.short == node || n.netns == node)
            .map(|n| n.netns.as_str())
            .with_context(|| format!("lab {} has no node {node}", self.plan.prefix))
    }

    /// lbd's node name for LB node `n`: the namespace name, so that pins,
    /// sockets and state files of concurrent labs never collide.
    pub fn lb_node_name(&self, n: usize) -> String {
        format!("{}-lb{n}", self.plan.prefix)
    }

    pub fn vip(&self) -> Ipv4Addr {
        self.plan
            .shape
            .vips
            .first()
            .copied()
            .unwrap_or(topology::DEFAULT_VIP)
    }

    pub fn backends(&self) -> usize {
        self.plan.shape.backends
    }

    /// Backend `n`'s address (1-based).
    pub fn backend_addr(&self, n: usize) -> Ipv4Addr {
        topology::backend_addr(n)
    }

    pub fn client_addrs(&self) -> Vec<Ipv4Addr> {
        topology::client_addrs(self.plan.shape.client_addrs).collect()
    }

    /// All client addresses as `first-last` (for `lab-client --sources`).
    pub fn client_range(&self) -> String {
        topology::client_range(self.plan.shape.client_addrs)
    }

    /// A command running `program` in `node`'s namespace, for callers that
    /// want to set up stdio themselves. The lab kills whatever still runs in
    /// its namespaces at teardown.
    pub fn command_in(&self, node: &str, program: impl AsRef<OsStr>) -> Result<Command> {
        Ok(netns::command_in(self.netns(node)?, program))
    }

    /// Starts `args` in `node`'s namespace with stdout and stderr appended
    /// to `<lab dir>/<node>-<program>.log`.
    pub fn spawn_in<S: AsRef<OsStr>>(&self, node: &str, args: &[S]) -> Result<Child> {
        let (program, rest) = args.split_first().context("spawn_in needs a program")?;
        let log = self.log_file(node, program.as_ref())?;
        let mut cmd = self.command_in(node, program)?;
        cmd.args(rest)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn().with_context(|| {
            format!(
                "could not start {} in {node}",
                program.as_ref().to_string_lossy()
            )
        })
    }

    /// Runs `args` to completion in `node`'s namespace; fails with the
    /// command's stderr when it exits non-zero.
    pub fn exec_in<S: AsRef<OsStr>>(&self, node: &str, args: &[S]) -> Result<Output> {
        let (program, rest) = args.split_first().context("exec_in needs a program")?;
        let mut cmd = self.command_in(node, program)?;
        cmd.args(rest);
        netns::run(&mut cmd)
    }

    /// Runs Rust code on a thread inside `node`'s namespace.
    pub fn run_in<F, R>(&self, node: &str, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        netns::run_in(self.netns(node)?, f)
    }

    /// Opens (appending) `<lab dir>/<node>-<name>.log`.
    pub fn log_file(&self, node: &str, name: &OsStr) -> Result<std::fs::File> {
        let base = Path::new(name)
            .file_name()
            .unwrap_or(name)
            .to_string_lossy()
            .into_owned();
        let path = self.dir.join(format!("{node}-{base}.log"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("could not open log file {}", path.display()))
    }

    /// Keeps `child` to be killed at teardown.
    pub fn adopt(&self, child: Child) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
    }

    pub(crate) fn next_stats_port(&self) -> u16 {
        self.next_stats_port.fetch_add(1, Ordering::Relaxed)
    }

    /// A config for this lab's LB nodes (eth0, disjoint SNAT slices) with
    /// the given services.
    pub fn lbd_config(&self, services: Vec<super::lbd::ServiceConfig>) -> LbdConfig {
        let nodes: Vec<String> = (1..=self.plan.shape.lb_nodes)
            .map(|n| self.lb_node_name(n))
            .collect();
        LbdConfig::for_lab_nodes(&nodes, services)
    }

    /// Backends `be1..beN` of this lab on `port`, with the given weights
    /// (missing weights count as 1).
    pub fn backend_configs(&self, port: u16, weights: &[u32]) -> Vec<BackendConfig> {
        (1..=self.backends())
            .map(|n| BackendConfig {
                name: format!("be{n}"),
                address: std::net::SocketAddrV4::new(self.backend_addr(n), port),
                weight: weights.get(n - 1).copied().unwrap_or(1),
            })
            .collect()
    }

    /// Writes `config` into the lab directory; returns its path.
    pub fn write_config(&self, file_name: &str, config: &LbdConfig) -> Result<PathBuf> {
        let path = self.dir.join(file_name);
        config.write(&path)?;
        Ok(path)
    }

    /// Starts `lbd run --config FILE --node <prefix>-lb<n>` in LB node `n`'s
    /// namespace (through nsenter, so bpffs stays visible).
    pub fn start_lbd(&self, n: usize, config: &Path) -> Result<Lbd> {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        self.start_lbd_logging(n, config, &filter)
    }

    /// [`Lab::start_lbd`] with lbd's log filter set to `rust_log` (e.g.
    /// `info,lb_userspace::health=debug` to see every health check).
    pub fn start_lbd_logging(&self, n: usize, config: &Path, rust_log: &str) -> Result<Lbd> {
        let lbd = binaries::lbd()?;
        let node = self.lb_node_name(n);
        let short = format!("lb{n}");
        let log = self.dir.join(format!("{short}-lbd.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("could not create {}", log.display()))?;
        let mut cmd = self.command_in(&short, &lbd)?;
        cmd.args(["run", "--config"])
            .arg(config)
            .args(["--node", &node])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {} in {short}", lbd.display()))?;
        Ok(Lbd {
            child,
            node,
            log,
            started: Instant::now(),
        })
    }

    /// Runs another lbd subcommand (`status`, `reload`, ...) for LB node
    /// `n` in its namespace: `lbd ARGS... --node <node name>`.
    /// `lbd status --json` of node `n`, parsed.
    pub fn lbd_status_json(&self, n: usize) -> Result<serde_json::Value> {
        let out = self.lbd_command(n, &["status", "--json"])?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "lbd status --json printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn lbd_command(&self, n: usize, args: &[&str]) -> Result<Output> {
        let lbd = binaries::lbd()?;
        let mut cmd = self.command_in(&format!("lb{n}"), &lbd)?;
        cmd.args(args).args(["--node", &self.lb_node_name(n)]);
        netns::run(&mut cmd)
    }

    /// Pin directory of LB node `n`'s agent.
    pub fn lbd_pin_dir(&self, n: usize) -> PathBuf {
        Path::new(BPFFS_LB_DIR).join(self.lb_node_name(n))
    }

    /// Whether `teardown` already ran.
    pub fn is_torn_down(&self) -> bool {
        *self.torn_down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes everything the lab made: processes in its namespaces, XDP
    /// links, lbd pins, control sockets and state files of its nodes, the
    /// namespaces, the scratch directory. Idempotent; Drop calls it. Fails
    /// (after doing all it can) naming what could not be removed.
    pub fn teardown(&self) -> Result<()> {
        let mut torn_down = self.torn_down.lock().unwrap_or_else(|e| e.into_inner());
        if *torn_down {
            return Ok(());
        }
        *torn_down = true;
        let mut problems = Vec::new();
        for mut child in self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            child.kill().ok();
            child.wait().ok();
        }
        for node in &self.plan.nodes {
            netns::kill_all_in(&node.netns);
        }
        for programs in self
            .switch_programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            programs.detach();
        }
        for n in 1..=self.plan.shape.lb_nodes {
            remove_agent_files(&self.lb_node_name(n), &mut problems);
        }
        // Hosts first, the switch (holding the bridge) last.
        for node in self.plan.nodes.iter().rev() {
            wait_until_empty(&node.netns);
            if let Err(e) = netns::delete(&node.netns) {
                problems.push(format!("{e:#}"));
            }
        }
        if let Err(e) = ignore_missing(std::fs::remove_dir_all(&self.dir)) {
            problems.push(format!("could not remove {}: {e}", self.dir.display()));
        }
        if !problems.is_empty() {
            bail!(
                "lab {} left things behind: {}",
                self.plan.prefix,
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// Creates namespaces, bridge, veths, addresses, offload settings and
    /// the switch-side XDP programs.
    fn wire(&self) -> Result<()> {
        for node in &self.plan.nodes {
            netns::run(Command::new("ip").args(["netns", "add", &node.netns]))?;
            // No IPv6: router solicitations and ND would only add noise to
            // the data path's counters.
            netns::run(netns::command_in(&node.netns, "sysctl").args([
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]))
            .ok();
        }
        let switch = self.plan.switch();
        let mut lines = vec![
            "link add br0 type bridge".to_string(),
            "link set br0 up".to_string(),
        ];
        for host in self.plan.hosts() {
            lines.push(format!(
                "link add {} type veth peer name eth0 netns {}",
                host.switch_port, host.netns
            ));
            lines.push(format!("link set {} master br0 up", host.switch_port));
        }
        netns::ip_batch(Some(&switch.netns), &lines)?;
        for host in self.plan.hosts() {
            let mut lines = vec!["link set lo up".to_string()];
            lines.extend(eth0_setup(host));
            netns::ip_batch(Some(&host.netns), &lines)?;
            offloads_off(host, &switch.netns)?;
        }
        let ports: Vec<String> = self.plan.hosts().map(|h| h.switch_port.clone()).collect();
        let programs = SwitchPrograms::attach(&switch.netns, &ports)?;
        self.switch_programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(programs);
        Ok(())
    }

    /// Deletes `node`'s eth0 (and so its veth pair) and wires a new one with
    /// the same MAC as the lab first did: a driver reload as the node sees
    /// it. Whatever was attached to the old device is gone with it.
    pub fn recreate_link(&self, node: &str) -> Result<()> {
        let mac = self.delete_link(node)?;
        self.create_link(node, &mac)
    }

    /// Deletes `node`'s eth0 (and its switch port); returns its MAC for
    /// [`Lab::create_link`]. The first half of [`Lab::recreate_link`], for
    /// tests that keep the device away for a while.
    pub fn delete_link(&self, node: &str) -> Result<Mac> {
        let host = self
            .plan
            .node(node)
            .with_context(|| format!("no lab node {node}"))?;
        let mac = self.mac(node)?;
        netns::ip_batch(Some(&host.netns), &["link delete eth0".to_string()])?;
        Ok(mac)
    }

    /// Wires a new eth0 into `node` with `mac` and the lab's addresses,
    /// routes, offload settings and switch program, as the lab first did.
    pub fn create_link(&self, node: &str, mac: &Mac) -> Result<()> {
        let host = self
            .plan
            .node(node)
            .with_context(|| format!("no lab node {node}"))?;
        let switch = self.plan.switch();
        // The new device keeps the old MAC, as a reloaded driver reads the
        // same one from the card: the neighbours' ARP caches stay right.
        let mac = super::arp::mac_text(mac);
        netns::ip_batch(
            Some(&switch.netns),
            &[
                format!(
                    "link add {} type veth peer name eth0 address {mac} netns {}",
                    host.switch_port, host.netns
                ),
                format!("link set {} master br0 up", host.switch_port),
            ],
        )?;
        netns::ip_batch(Some(&host.netns), &eth0_setup(host))?;
        offloads_off(host, &switch.netns)?;
        let programs =
            SwitchPrograms::attach(&switch.netns, std::slice::from_ref(&host.switch_port))?;
        self.switch_programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(programs);
        Ok(())
    }

    /// The role of a node, by short name.
    pub fn role(&self, node: &str) -> Option<&Role> {
        self.plan
            .nodes
            .iter()
            .find(|n| n.short == node)
            .map(|n| &n.role)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("{e:#}");
        }
    }
}

/// `ip` commands that bring a host's eth0 up with its addresses and routes.
fn eth0_setup(host: &super::topology::Node) -> Vec<String> {
    let mut lines = vec!["link set eth0 up".to_string()];
    lines.extend(
        host.addresses
            .iter()
            .map(|a| format!("address add {a} dev eth0")),
    );
    lines.extend(host.routes.iter().map(|r| format!("route add {r}")));
    lines
}

fn offloads_off(host: &super::topology::Node, switch_netns: &str) -> Result<()> {
    netns::run(
        netns::command_in(&host.netns, "ethtool")
            .args(["-K", "eth0"])
            .args(OFFLOADS_OFF),
    )?;
    netns::run(
        netns::command_in(switch_netns, "ethtool")
            .args(["-K", &host.switch_port])
            .args(OFFLOADS_OFF),
    )?;
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a lab needs root (network namespaces, veth, XDP); run the tests as root");
    }
    Ok(())
}

/// Removes lbd's pins, control socket, lock and state file for `node`.
fn remove_agent_files(node: &str, problems: &mut Vec<String>) {
    let pins = Path::new(BPFFS_LB_DIR).join(node);
    if let Err(e) = ignore_missing(std::fs::remove_dir_all(&pins)) {
        problems.push(format!("could not remove pins {}: {e}", pins.display()));
    }
    for file in [
        format!("/run/lbd/{node}.sock"),
        format!("/run/lbd/{node}.lock"),
        format!("/run/lbd/{node}.ahseq"),
        format!("/run/lbd/{node}.health"),
        format!("/var/lib/lbd/{node}.state"),
    ] {
        if let Err(e) = ignore_missing(std::fs::remove_file(&file)) {
            problems.push(format!("could not remove {file}: {e}"));
        }
    }
}

/// Removing what is already gone is success.
fn ignore_missing(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Waits briefly for killed processes to leave a namespace, so that links
/// they hold are gone before the namespace is deleted.
fn wait_until_empty(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !netns::pids(netns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes what labs of this kind left behind when their process died
/// (killed, or stopped before its teardown): namespaces with their
/// processes, pins and agent files, and the scratch directory. Also takes
/// anything carrying the prefix we are about to use (a dead process with
/// our pid made it). One line per lab, so a killed demo's leftovers read as
/// what they are, not as a conflict.
fn remove_stale_labs(hint: &str, our_prefix: &str) {
    let mut announced: Vec<String> = Vec::new();
    let mut announce = |prefix: &str, pid: u32| {
        if !announced.iter().any(|p| p == prefix) {
            eprintln!(
                "removing lab {prefix}, left behind by process {pid}, which is gone (killed before its teardown)"
            );
            announced.push(prefix.to_string());
        }
    };
    if let Ok(all) = netns::list() {
        for name in all {
            let Some((prefix, pid)) = names::parse(hint, &name) else {
                continue;
            };
            if names::is_stale(&prefix, pid, our_prefix) {
                announce(&prefix, pid);
                netns::kill_all_in(&name);
                wait_until_empty(&name);
                netns::delete(&name).ok();
            }
        }
    }
    if let Ok(pins) = std::fs::read_dir(BPFFS_LB_DIR) {
        for entry in pins.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((prefix, pid)) = names::parse(hint, &name) else {
                continue;
            };
            if names::is_stale(&prefix, pid, our_prefix) {
                announce(&prefix, pid);
                let mut ignored = Vec::new();
                remove_agent_files(&name, &mut ignored);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dirs.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_prefix(LAB_DIR_PREFIX) else {
                continue;
            };
            let Some((prefix, pid)) = names::parse_prefix(hint, prefix) else {
                continue;
            };
            if names::is_stale(&prefix, pid, our_prefix) {
                announce(&prefix, pid);
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
    }
}
