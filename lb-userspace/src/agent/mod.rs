//! The running agent: loads the data path, programs it from the config, and
//! keeps it in step (flow collection, neighbours, health checks, reloads)
//! until told to stop.
//!
//! Stopping the agent does not stop forwarding: the XDP link and maps are
//! pinned, so traffic keeps flowing while the agent restarts, and a new agent
//! adopts them. `lbd stop --detach` removes the data path for good.

pub mod admin_view;
mod control_socket;
pub mod health_file;
pub mod health_view;
pub mod iface_watch;
pub mod notify;
pub mod observed;
pub mod pressure;
pub mod state;
pub mod state_file;
pub mod status_report;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::control::AdminState;
use crate::control::{Answer, Pending, Request};
use crate::paths::RUN_DIR;
use crate::{
    config::{self, Config, Node, XdpMode},
    dataplane::{
        AttachMode, Dataplane, DataplaneOptions, GcPolicy, host, load,
        neigh::{ManagedNeighbours, Reach},
        pins,
    },
    health::{self, Checker, HealthEvent, Scheduler},
    objects,
    vips::VipAddresses,
    vrrp::{
        self,
        runtime::{Condition, LeaseStore, RuntimeOptions, TransitionReport, VrrpHandle},
        state::State,
    },
};
use admin_view::AdminView;
use control_socket::ControlSocket;
use health_view::HealthView;
use iface_watch::{IfaceChange, IfaceWatch};
use observed::Observed;
use state::Ids;
use state_file::SavedState;

/// How often idle flows are collected. Timeouts are seconds to hours, so a
/// few seconds of lateness is harmless.
const GC_INTERVAL: Duration = Duration::from_secs(5);
/// How often the backends' paths are looked at again (routes come and go,
/// next hops stop answering ARP): a backend without one is held DOWN until
/// the sync after its path returns.
const PATH_INTERVAL: Duration = Duration::from_secs(2);
/// How often the interface is looked at (removed, re-created, MTU, link).
/// The VRRP thread watches the link itself, faster, for FAULT.
const IFACE_INTERVAL: Duration = Duration::from_secs(1);

/// `lbd run`.
pub fn run(config_path: &Path, node: Option<&str>) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, _) = config.node(node)?;
    let node_name = node_name.to_string();
    require_root("lbd run")?;
    let _lock = lock_node(&node_name)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut agent = Agent::start(config_path.to_path_buf(), config, node_name).await?;
        agent.serve().await
    })
}

/// `lbd stop`: with `detach`, removes this node's pinned link and maps (which
/// detaches the program), its forward-drop table and the VIPs.
pub fn stop(config_path: &Path, node: Option<&str>, detach: bool) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, node) = config.node(node)?;
    if !detach && !config.vrrp.is_empty() {
        return stop_vrrp(&config, node_name, &node.interface);
    }
    if !detach {
        println!(
            "lbd stop: nothing to do without --detach: in single-node mode the pinned XDP \
             program keeps forwarding while no agent runs; `lbd stop --detach` removes it"
        );
        return Ok(());
    }
    require_root("lbd stop --detach")?;
    let removed = pins::remove_all(Path::new(pins::BPFFS_ROOT), node_name)
        .context("removing the pinned data path")?;
    if removed {
        tracing::info!(
            node = node_name,
            "pinned XDP link and maps removed: the program is detached"
        );
    }
    host::remove_forward_drop(node_name)?;
    let mut vips = state::vips(&config);
    vips.extend(state::vrrp_vips(&config));
    let iface = node.interface.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let ifindex = load::if_index(&iface)?;
        VipAddresses::new(&iface, ifindex)?.remove_all(&vips).await
    })
}

/// `lbd stop` in VRRP mode (systemd's ExecStopPost): the agent is gone, so
/// this node must stop holding the VIPs: they are removed from the
/// interface and the lease is expired, so the data path serves none of
/// them even before the peer's master-down timer fires. The pinned program
/// stays (`--detach` removes it).
fn stop_vrrp(config: &Config, node_name: &str, iface: &str) -> Result<()> {
    require_root("lbd stop")?;
    // Taking the lock proves no agent runs (it would fight us for the VIPs).
    let _lock = lock_node(node_name)?;
    match node_lease(node_name) {
        Ok(Some(lease)) => lease
            .expire()
            .context("expiring the VRRP lease of this node")?,
        Ok(None) => {}
        Err(e) => tracing::warn!("no lease to expire (no data path pinned?): {e:#}"),
    }
    let vips = state::vrrp_vips(config);
    let iface = iface.to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let ifindex = load::if_index(&iface)?;
        VipAddresses::new(&iface, ifindex)?.remove_all(&vips).await
    })?;
    println!(
        "lbd stop: the VRRP VIPs are removed and the lease expired; the pinned XDP program \
         stays (`lbd stop --detach` removes it)"
    );
    Ok(())
}

/// The data-path lease of `node` (its pinned settings map).
fn node_lease(node: &str) -> Result<Option<Arc<dyn LeaseStore>>> {
    let lease = crate::dataplane::lease::Lease::open(node)?;
    Ok(Some(Arc::new(lease)))
}

/// Takes `/run/lbd/<node>.lock` for the life of the process: two agents for
/// one node would fight over the same pinned maps and link.
fn lock_node(node: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(RUN_DIR)
        .with_context(|| format!("creating {RUN_DIR}"))?;
    let path = Path::new(RUN_DIR).join(format!("{node}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another lbd is already running for node {node} (it holds {}); stop it first",
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    // The pid lets `lbd reload` find the agent.
    use std::io::Write;
    let mut f = &file;
    let _ = f.set_len(0);
    let _ = writeln!(f, "{}", std::process::id());
    Ok(file)
}

/// `lbd reload`: validates the config, then asks the running agent to re-read
/// it (SIGHUP). An invalid config is reported here and not sent.
pub fn reload(config_path: &Path, node: Option<&str>) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, _) = config.node(node)?;
    let path = Path::new(RUN_DIR).join(format!("{node_name}.lock"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no lbd is running for node {node_name} ({} does not exist)",
            path.display()
        )
    })?;
    let pid: libc::pid_t = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", path.display()))?;
    // A stale file: the lock is free, so no agent holds it.
    let probe =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        bail!(
            "no lbd is running for node {node_name} (nothing holds {})",
            path.display()
        );
    }
    // SAFETY: kill with a pid read from the agent's lock file.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling lbd (pid {pid}) to reload"));
    }
    println!(
        "lbd (pid {pid}) is reloading {}; its log says what changed",
        config_path.display()
    );
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} must run as root: it loads an XDP program, pins BPF maps and changes sysctls"
        );
    }
    Ok(())
}

/// Seconds on the monotonic clock, for id quarantines.
fn monotonic_s() -> u64 {
    crate::dataplane::gc::monotonic_coarse_ns() / 1_000_000_000
}

struct Agent {
    config_path: PathBuf,
    config: Config,
    node_name: String,
    dataplane: Dataplane,
    ids: Ids,
    neighbours: ManagedNeighbours,
    vips: VipAddresses,
    gc_policy: GcPolicy,
    /// Runs the health checks; a state change arrives on `health_events`.
    checks: Scheduler,
    health_events: UnboundedReceiver<HealthEvent>,
    /// The checked backends held DOWN; what `program` builds the rings from.
    health: HealthView,
    /// Where `health`'s DOWN backends are kept for the next agent.
    health_path: PathBuf,
    /// The operator's admin states (drain, maint), also in `state_path`.
    admin: AdminView,
    state_path: PathBuf,
    /// Requests from the control socket, answered in the agent loop.
    control_requests: UnboundedReceiver<Pending>,
    /// Held for its Drop: stops listening and removes the socket file.
    _control: ControlSocket,
    /// The VRRP thread, with `[[vrrp]]`; `None` in single-node mode.
    vrrp: Option<VrrpHandle>,
    vrrp_reports: Option<UnboundedReceiver<TransitionReport>>,
    /// The instances this node is master of: their VIPs' services are
    /// ACTIVE in the maps.
    masters: BTreeSet<String>,
    /// Counters, rates and change times for the status.
    observed: Observed,
    /// The admin page and redirects, if configured; held for its Drop.
    http: Option<crate::admin::HttpServers>,
    iface_watch: IfaceWatch,
    /// A re-created interface still waits for the program (an attach that
    /// failed is tried again at the next look): the old device's index, if
    /// known.
    reattach_pending: Option<Option<u32>>,
    /// Why the last try failed, so a cause that lasts is logged once.
    reattach_failure: Option<String>,
}

impl Agent {
    async fn start(config_path: PathBuf, config: Config, node_name: String) -> Result<Self> {
        let node = config.nodes[&node_name].clone();
        let vrrp_mode = !config.vrrp.is_empty();
        let iface = node.interface.clone();
        // Checked first, so that nothing (sysctls, nftables) is half set up
        // for a name the config got wrong.
        if load::if_index(&iface).is_err() {
            bail!(
                "interface {iface} (`interface` of [node.{node_name}] in {}) does not exist in \
                 this network namespace: lbd attaches its XDP program there; fix the config or \
                 create the interface first (`ip link show` lists them)",
                config_path.display()
            );
        }
        let snat = host::PortRange::new(node.snat_ports.min, node.snat_ports.max)?;
        host::prepare(&node_name, &iface, snat)?;

        let limits = state::limits(&config);
        let mode = match node.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Generic => AttachMode::Generic,
        };
        let dataplane = Dataplane::open(&DataplaneOptions {
            node: node_name.clone(),
            iface: iface.clone(),
            mode,
            bpffs: PathBuf::from(pins::BPFFS_ROOT),
            limits,
            object: objects::LB,
        })?;

        // Ids and admin states from the last agent, if any: the pinned
        // maps hold those ids, and the operator's states outlive restarts.
        let state_path = state_file::path_for(&node_name);
        let saved = state_file::load_or_set_aside(&state_path, SystemTime::now())?;
        let now = monotonic_s();
        let mut ids = match &saved {
            Some(saved) => Ids::restore(&limits, saved, now, state::id_quarantine(&config)),
            None => Ids::new(&limits),
        };
        ids.sync(&config, now)?;
        let admin = saved
            .as_ref()
            .map(SavedState::admin_view)
            .unwrap_or_default()
            .retained_for(&config);
        // A state directory that cannot be written costs persistence, not
        // service: the next change tries again.
        if let Err(e) = save_state(&state_path, &admin, &ids) {
            tracing::warn!(
                "serving, but the state is not saved (admin states and ids may be lost at \
                 restart; lbd tries again at the next change): {e:#}"
            );
        }

        // A backend without a path starts DOWN; the others serve.
        let mut neighbours = ManagedNeighbours::new()?;
        let reach = neighbours.sync(&backend_addresses(&config)).await?;
        // Backends the checks held DOWN before a restart stay DOWN until
        // their checks pass; the others start UP (HAProxy's rule).
        let health_path = health_file::path_for(&node_name);
        let checked: BTreeSet<health::BackendKey> = state::checks(&config, &admin)
            .into_iter()
            .map(|(key, _, _)| key)
            .collect();
        let restored: Vec<(health::BackendKey, u64)> = health_file::load(&health_path)
            .map(|saved| saved.down())
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| checked.contains(key))
            .collect();
        let mut health = HealthView::with_down(restored.iter().map(|(key, _)| key.clone()));
        for (key, _) in &restored {
            tracing::info!(
                "{key} stays DOWN as before the restart (from {}) until its checks pass",
                health_path.display()
            );
        }
        let changes = health.set_unreachable(state::unreachable_backends(&config, &reach));
        for (key, reason) in &changes.lost {
            tracing::warn!("{key} DOWN: {reason}");
        }
        let vips = VipAddresses::new(&iface, load::if_index(&iface)?)?;
        // With VRRP the VIPs move with the instances: the VRRP thread adds
        // them on becoming master, never the agent.
        let (vrrp, vrrp_reports, masters) = if vrrp_mode {
            let (handle, reports) = start_vrrp(
                &config, &node_name, &iface, &dataplane, &vips, &admin, &health,
            )
            .await?;
            let masters = handle.resumed().clone();
            (Some(handle), Some(reports), masters)
        } else {
            vips.add_all(&state::vips(&config)).await?;
            (None, None, BTreeSet::new())
        };

        let gc_policy = state::gc_policy(&config, &ids);
        // Every backend starts UP (HAProxy's rule), so the maps are
        // programmed at once and the checks take out what does not answer.
        let (events, health_events) = mpsc::unbounded_channel();
        let checker = Checker::new().context("setting up the TLS client of the health checks")?;
        let mut checks = Scheduler::new(checker, events);
        checks.sync_with(state::checks(&config, &admin), |key| {
            !health.is_up(&key.service, &key.backend)
        });
        hold_checked_down(&checks, &mut health);
        let (control_tx, control_requests) = mpsc::unbounded_channel();
        let http =
            crate::admin::start(config.admin.as_ref(), &config.redirects, control_tx.clone())?;
        let control = ControlSocket::bind(crate::control::socket_path(&node_name), control_tx)?;
        let mut observed = Observed::new(config_version(&config_path));
        for (key, at) in restored {
            if at > 0 {
                observed.changed(key, std::time::UNIX_EPOCH + Duration::from_millis(at));
            }
        }
        let mut agent = Agent {
            config_path,
            config,
            node_name,
            dataplane,
            ids,
            neighbours,
            vips,
            gc_policy,
            checks,
            health_events,
            health,
            health_path,
            admin,
            state_path,
            control_requests,
            _control: control,
            vrrp,
            vrrp_reports,
            masters,
            observed,
            http,
            iface_watch: IfaceWatch::new(iface_watch::look(&iface)),
            reattach_pending: None,
            reattach_failure: None,
        };
        agent.program()?;
        tracing::info!(
            node = %agent.node_name,
            iface = %iface,
            mode = ?node.xdp_mode,
            adopted = agent.dataplane.adopted(),
            services = agent.config.services.len(),
            backends = agent.config.backend_count(),
            checked = agent.checks.keys().len(),
            not_ready = agent.admin.not_ready().count(),
            "forwarding"
        );
        for (key, state) in agent.admin.not_ready() {
            tracing::info!("{key} is in {state} (from {})", agent.state_path.display());
        }
        notify::ready(&agent.status_line());
        Ok(agent)
    }

    /// Writes the maps for the current config and health.
    fn program(&mut self) -> Result<()> {
        let node = &self.config.nodes[&self.node_name];
        let active = state::active_vips(&self.config, &self.masters);
        let desired = state::desired_state(
            &self.config,
            node,
            &self.ids,
            &self.health,
            &self.admin,
            &active,
        );
        self.dataplane
            .apply(&desired)
            .context("programming the BPF maps")?;
        Ok(())
    }

    async fn serve(&mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut gc = tokio::time::interval(GC_INTERVAL);
        let mut paths = tokio::time::interval(PATH_INTERVAL);
        paths.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        paths.tick().await;
        let mut iface = tokio::time::interval(IFACE_INTERVAL);
        iface.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iface.tick().await;
        let mut watchdog = notify::Watchdog::from_env();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    notify::reloading();
                    if let Err(e) = self.reload().await {
                        tracing::error!("reload refused, the running config keeps serving: {e:#}");
                    }
                    notify::ready(&self.status_line());
                }
                _ = watchdog.ping() => {}
                Some(event) = self.health_events.recv() => {
                    // Checks passing to a backend held for its path suggest
                    // the path is back: look now, not at the next tick.
                    let look = event.up && self.health.unreachable(&event.key()).is_some();
                    self.health_changed(event);
                    if look {
                        self.refresh_paths().await;
                    }
                }
                report = next_report(&mut self.vrrp_reports) => match report {
                    Some(report) => self.vrrp_changed(report),
                    None => {
                        tracing::error!("the VRRP thread stopped: this node no longer takes part in VRRP");
                        self.vrrp_reports = None;
                    }
                },
                Some(pending) = self.control_requests.recv() => {
                    let answer = self.answer(pending.request);
                    // The client may have hung up; nothing to do then.
                    let _ = pending.reply.send(answer);
                }
                _ = gc.tick() => self.collect_garbage(),
                _ = paths.tick() => self.refresh_paths().await,
                _ = iface.tick() => self.watch_interface().await,
            }
        }
        if let Some(vrrp) = self.vrrp.take() {
            self.hand_over(vrrp).await;
        }
        notify::stopping();
        tracing::info!(
            "agent stopping; the pinned XDP program keeps forwarding (`lbd stop --detach` removes it)"
        );
        Ok(())
    }

    /// Looks at the interface; logs each change once and brings the data
    /// path (and VRRP) onto a re-created device.
    async fn watch_interface(&mut self) {
        let iface = self.node().interface.clone();
        for change in self.iface_watch.observe(iface_watch::look(&iface)) {
            match change {
                IfaceChange::Gone => {
                    self.reattach_pending = None;
                    tracing::error!(
                        "interface {iface} is gone: nothing is forwarded until it is back; lbd \
                         attaches to it again when an interface of that name appears"
                    );
                }
                IfaceChange::Recreated { from, index } => {
                    tracing::warn!(
                        "interface {iface} is a new device (index {index}): attaching the XDP \
                         program to it again (flows, persistence and counters are kept)"
                    );
                    self.reattach_pending = Some(from);
                }
                IfaceChange::Mtu { from, to } => {
                    tracing::info!("interface {iface}: MTU {from} -> {to}")
                }
                IfaceChange::LinkDown => tracing::warn!(
                    "interface {iface}: link down (no carrier or set down): nothing is \
                     forwarded while it lasts"
                ),
                IfaceChange::LinkUp => tracing::info!("interface {iface}: link up"),
            }
        }
        if let Some(from) = self.reattach_pending {
            match self.reattach(&iface, from).await {
                Ok(()) => {
                    self.reattach_pending = None;
                    self.reattach_failure = None;
                    tracing::info!("interface {iface}: forwarding again on the new device");
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.reattach_failure.as_ref() != Some(&why) {
                        tracing::error!(
                            "interface {iface}: the new device cannot be served yet (lbd tries \
                             again every {}s): {why}",
                            IFACE_INTERVAL.as_secs()
                        );
                        self.reattach_failure = Some(why);
                    }
                }
            }
        }
    }

    /// Everything bound to the old device, onto the new one: the XDP
    /// attachment and the MAC it accepts, forwarding (a per-device sysctl),
    /// the VIPs (single-node mode) or the VRRP instances (their sockets and
    /// addresses were the old device's; they start again as at start-up).
    async fn reattach(&mut self, iface: &str, old_index: Option<u32>) -> Result<()> {
        self.dataplane.reattach(old_index)?;
        host::set_forwarding(iface, true)?;
        let index = load::if_index(iface)?;
        self.vips = VipAddresses::new(iface, index)?;
        if !self.config.vrrp.is_empty() {
            if let Some(vrrp) = self.vrrp.take() {
                if let Err(e) = vrrp.shutdown().await {
                    tracing::warn!("VRRP on the old device did not stop cleanly: {e:#}");
                }
                self.vrrp_reports = None;
                self.masters.clear();
                self.program()?;
            }
            let (handle, reports) = start_vrrp(
                &self.config,
                &self.node_name,
                iface,
                &self.dataplane,
                &self.vips,
                &self.admin,
                &self.health,
            )
            .await?;
            self.masters = handle.resumed().clone();
            self.vrrp = Some(handle);
            self.vrrp_reports = Some(reports);
        } else {
            self.vips.add_all(&state::vips(&self.config)).await?;
        }
        self.program()?;
        self.refresh_paths().await;
        Ok(())
    }

    /// Graceful stop with VRRP: masters resign with priority 0 so the peer
    /// takes over within its skew time, the VIPs go, the lease is expired
    /// and every service is made inactive.
    async fn hand_over(&mut self, vrrp: VrrpHandle) {
        tracing::info!("VRRP handover: resigning mastership before stopping");
        if let Err(e) = vrrp.shutdown().await {
            tracing::error!("VRRP handover incomplete: {e:#}");
        }
        self.masters.clear();
        match self.program() {
            Ok(()) => tracing::info!(
                "VRRP handover done: priority 0 sent, VIPs removed, lease expired, services inactive"
            ),
            Err(e) => {
                tracing::error!("VRRP handover: the services could not be made inactive: {e:#}")
            }
        }
    }

    /// An instance changed state: its VIPs' services follow (ACTIVE only
    /// while master). The VRRP thread has logged the transition.
    fn vrrp_changed(&mut self, report: TransitionReport) {
        let changed = if report.transition.to == State::Master {
            self.masters.insert(report.instance.clone())
        } else {
            self.masters.remove(&report.instance)
        };
        if !changed {
            return;
        }
        let active = report.transition.to == State::Master;
        match self.program() {
            Ok(()) => tracing::info!(
                vips = ?report.vips,
                "VRRP {}: services on its VIPs are {}",
                report.instance,
                if active { "active" } else { "inactive" }
            ),
            Err(e) => tracing::error!(
                "VRRP {}: the services could not be made {}: {e:#}",
                report.instance,
                if active { "active" } else { "inactive" }
            ),
        }
    }

    /// Keeps the checked backends held DOWN for the next agent. A file that
    /// cannot be written costs only that: a restart relearns health.
    fn save_health(&self) {
        let down = self.health.down().map(|key| {
            let at = self
                .observed
                .changed_at
                .get(key)
                .map_or(0, |at| observed::unix_ms(*at));
            (key, at)
        });
        if let Err(e) = health_file::save(&self.health_path, &health_file::SavedHealth::new(down)) {
            tracing::warn!("health not kept for a restart: {e:#}");
        }
    }

    /// Looks at every backend's path again; see [`Agent::paths_changed`].
    async fn refresh_paths(&mut self) {
        match self.neighbours.sync(&backend_addresses(&self.config)).await {
            Ok(reach) => self.paths_changed(&reach),
            Err(e) => tracing::warn!("looking at the backends' paths: {e:#}"),
        }
    }

    /// Backends that lost their path go DOWN at once (logged once, with the
    /// reason) and a checked one restarts its checks fully DOWN; when the
    /// path returns an unchecked backend is UP again, a checked one after
    /// `rise` successful checks (HAProxy's rule, through the scheduler).
    fn paths_changed(&mut self, reach: &BTreeMap<Ipv4Addr, Reach>) {
        let changes = self
            .health
            .set_unreachable(state::unreachable_backends(&self.config, reach));
        if changes.lost.is_empty() && changes.back.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for (key, _) in &changes.lost {
            if self.checks.hold_down(key) {
                self.health.record(key.clone(), false);
            }
            self.observed.changed(key.clone(), now);
        }
        for key in &changes.back {
            self.observed.changed(key.clone(), now);
        }
        self.save_health();
        self.push_services_up();
        // The maps first: once the line is logged, the data path agrees.
        if let Err(e) = self.program() {
            tracing::error!("the maps could not follow the backends' paths: {e:#}");
        }
        for (key, reason) in &changes.lost {
            tracing::warn!("{key} DOWN: {reason}");
        }
        for key in &changes.back {
            match self.checks.status(key) {
                Some(status) if !status.up => tracing::info!(
                    "{key}: its path is back; UP after {} successful checks",
                    status.check.rise
                ),
                _ => tracing::info!("{key} UP: its path is back"),
            }
        }
    }

    /// Tells the VRRP thread which services can take new clients
    /// (`service-up` tracking).
    fn push_services_up(&self) {
        if let Some(vrrp) = &self.vrrp {
            for (service, up) in state::services_up(&self.config, &self.health, &self.admin) {
                vrrp.set_condition(Condition::ServiceUp(service), up);
            }
        }
    }

    /// A backend went UP or DOWN (the scheduler has logged it with its
    /// reason): rebuild its service's ring and write the maps at once, so
    /// the change reaches the data path within the check interval.
    fn health_changed(&mut self, event: HealthEvent) {
        let key = event.key();
        // An event from a check stopped since (backend removed or its check
        // dropped by a reload) no longer describes a checked backend.
        if self.checks.is_up(&key).is_none() {
            tracing::debug!("{key}: ignoring a health event of a backend no longer checked");
            return;
        }
        if !self.health.record(key.clone(), event.up) {
            return;
        }
        self.push_services_up();
        self.observed.changed(key.clone(), event.at);
        self.save_health();
        let started = Instant::now();
        match self.program() {
            Ok(()) => tracing::debug!(
                backend = %key,
                up = event.up,
                took_us = started.elapsed().as_micros() as u64,
                "maps updated for the health change"
            ),
            Err(e) => tracing::error!(
                "{key} is {} but the maps could not be updated: {e:#}",
                if event.up { "UP" } else { "DOWN" }
            ),
        }
    }

    fn collect_garbage(&mut self) {
        let started = Instant::now();
        match self.dataplane.collect_garbage(&self.gc_policy) {
            Ok(report) => {
                tracing::debug!(
                    scanned = report.scanned,
                    flows_deleted = report.flows_deleted,
                    half_open_deleted = report.half_open_deleted,
                    persist_deleted = report.persist_deleted,
                    active = report.active_per_backend.values().sum::<u64>(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "flow collection"
                );
                self.observed.active = Some((SystemTime::now(), report.active_per_backend));
                self.observed.ports = report.ports;
            }
            Err(e) => tracing::warn!("flow collection failed: {e:#}"),
        }
        let exhausted = lb_common::reason::label(lb_common::reason::DROP_SNAT_EXHAUSTED);
        if let Ok(reasons) = self.dataplane.reasons() {
            let count = reasons
                .iter()
                .find(|(label, _)| *label == exhausted)
                .map_or(0, |(_, n)| *n);
            if let Some(dropped) = self.observed.snat_exhausted.observe(count, Instant::now()) {
                tracing::warn!(
                    dropped,
                    "SNAT ports ran out: {dropped} new connections dropped since the last report \
                     (drop_snat_exhausted); `lbd status --json` shows snat_ports_in_use per \
                     backend, `lbd check` the ceiling of the config"
                );
            }
        }
        // New flows per second: the counters' increase since the last pass.
        let counters: Vec<(u32, u64)> = self
            .backend_ids()
            .into_iter()
            .filter_map(|id| Some((id, self.dataplane.backend_stats(id).ok()?.new_flows)))
            .collect();
        self.observed.rates.sample(Instant::now(), counters);
    }

    /// Re-reads the config and updates the maps in place. A config that does
    /// not validate, or that changes what only a restart can change, is
    /// refused and changes nothing.
    async fn reload(&mut self) -> Result<()> {
        let new = config::load_or_explain(&self.config_path)?;
        let old_node = &self.config.nodes[&self.node_name];
        let Some(new_node) = new.nodes.get(&self.node_name) else {
            bail!("the new config has no [node.{}]", self.node_name);
        };
        if new_node.interface != old_node.interface || new_node.xdp_mode != old_node.xdp_mode {
            bail!(
                "changing the interface or XDP mode needs a restart (`lbd stop --detach`, then start)"
            );
        }
        if new.vrrp != self.config.vrrp {
            bail!(
                "changing [[vrrp]] needs a restart of lbd (on the backup first); the running \
                 instances keep going as they are"
            );
        }
        let vrrp_mode = !new.vrrp.is_empty();
        if state::limits(&new) != state::limits(&self.config) {
            bail!(
                "changing [limits] needs a restart with `lbd stop --detach` first (map sizes are fixed at load)"
            );
        }
        if new_node.snat_ports != old_node.snat_ports {
            host::prepare(
                &self.node_name,
                &new_node.interface,
                host::PortRange::new(new_node.snat_ports.min, new_node.snat_ports.max)?,
            )?;
        }
        let mut ids = self.ids.clone();
        ids.sync(&new, monotonic_s())?;
        let reach = self.neighbours.sync(&backend_addresses(&new)).await?;
        let old_vips = state::vips(&self.config);
        let new_vips = state::vips(&new);
        if !vrrp_mode {
            self.vips.add_all(&new_vips).await?;
        }
        // Admin states of backends still there carry over; health carries
        // over to the backends still checked; the checks follow the new
        // config only once the maps have taken it.
        let admin = self.admin.retained_for(&new);
        let new_checks = state::checks(&new, &admin);
        let mut health = self
            .health
            .carried_over(new_checks.iter().map(|(key, _, _)| key));
        let reach_changes = health.set_unreachable(state::unreachable_backends(&new, &reach));
        let active = state::active_vips(&new, &self.masters);
        let desired = state::desired_state(&new, new_node, &ids, &health, &admin, &active);
        self.dataplane
            .apply(&desired)
            .context("programming the BPF maps")?;
        self.checks
            .sync_with(new_checks, |key| !health.is_up(&key.service, &key.backend));
        for (key, reason) in &reach_changes.lost {
            tracing::warn!("{key} DOWN: {reason}");
            self.checks.hold_down(key);
        }
        hold_checked_down(&self.checks, &mut health);
        self.health = health;
        let gone: std::collections::BTreeSet<Ipv4Addr> =
            old_vips.difference(&new_vips).copied().collect();
        if !vrrp_mode {
            self.vips.remove_all(&gone).await?;
        }
        self.gc_policy = state::gc_policy(&new, &ids);
        self.ids = ids;
        self.admin = admin;
        if let Some(http) = &mut self.http {
            http.update(new.admin.as_ref(), &new.redirects);
        } else if new.admin.is_some() || !new.redirects.is_empty() {
            tracing::warn!("[admin] or [[redirect]] added: they start when lbd restarts");
        }
        self.config = new;
        self.save_health();
        self.push_services_up();
        self.observed.config_version = config_version(&self.config_path);
        if let Err(e) = save_state(&self.state_path, &self.admin, &self.ids) {
            tracing::error!(
                "the new config serves, but its ids are not saved (a restart may renumber): {e:#}"
            );
        }
        tracing::info!(
            services = self.config.services.len(),
            backends = self.config.backend_count(),
            "config reloaded"
        );
        Ok(())
    }
}

impl Agent {
    /// Answers one control socket request.
    fn answer(&mut self, request: Request) -> Answer {
        match request {
            Request::Status => Answer {
                status: Some(self.status()),
                ..Answer::ok("status")
            },
            Request::SetState {
                service,
                backend,
                state,
            } => match self.set_state(&service, &backend, &state) {
                Ok(message) => Answer::ok(message),
                Err(e) => {
                    tracing::warn!("set-state {service}/{backend} {state} refused: {e:#}");
                    Answer::error(format!("{e:#}"))
                }
            },
        }
    }

    /// Sets a backend's admin state: maps first, then the state file, then
    /// the checks. When the maps refuse, nothing changed; when only the
    /// state file cannot be written, the change is in effect and the answer
    /// says it is not saved.
    fn set_state(&mut self, service: &str, backend: &str, word: &str) -> Result<String> {
        let state: AdminState = word.parse().map_err(|e: String| anyhow!(e))?;
        let key =
            status_report::find_backend(&self.config, service, backend).map_err(|e| anyhow!(e))?;
        let old = self.admin.state(service, backend);
        if old == state {
            return Ok(format!("{key} is already {state}"));
        }
        let mut admin = self.admin.clone();
        admin.set(key.clone(), state);
        // A backend in maint is not checked, so it is neither UP nor DOWN;
        // leaving maint, its check starts again from UP.
        let mut health = self.health.clone();
        if !state.is_checked() {
            health.record(key.clone(), true);
        }
        let node = self.node().clone();
        let active = state::active_vips(&self.config, &self.masters);
        let desired =
            state::desired_state(&self.config, &node, &self.ids, &health, &admin, &active);
        self.dataplane
            .apply(&desired)
            .context("the maps could not be updated; nothing changed")?;
        // The change serves even when it cannot be saved (a full or
        // read-only /var/lib/lbd must not stop an operator draining a
        // backend); the caller is told it will not survive a restart.
        let unsaved = save_state(&self.state_path, &admin, &self.ids).err();
        self.admin = admin;
        self.health = health;
        self.save_health();
        if state.is_checked() {
            self.checks.sync(state::checks(&self.config, &self.admin));
        } else {
            self.checks.stop(&key);
        }
        self.push_services_up();
        self.observed.changed(key.clone(), SystemTime::now());
        tracing::info!("{key}: admin state {old} -> {state}");
        match unsaved {
            None => Ok(format!("{key}: {old} -> {state}")),
            Some(e) => {
                tracing::warn!("{key}: admin state {state} is not saved: {e:#}");
                Ok(format!(
                    "{key}: {old} -> {state}, in effect but NOT SAVED (it is lost if lbd \
                     restarts): {e:#}"
                ))
            }
        }
    }

    /// The status with the data path's counters, flows and checks.
    fn status(&self) -> crate::control::NodeStatus {
        let mut status = status_report::status(
            &self.node_name,
            &self.config,
            &self.ids,
            &self.health,
            &self.admin,
            |key| self.checks.is_up(key).is_some(),
        );
        let backend_stats = |id: u32| self.dataplane.backend_stats(id).ok();
        let service_stats = |id: u32| self.dataplane.service_stats(id).ok();
        let check = |key: &health::BackendKey| self.checks.status(key);
        let readings = observed::Readings {
            backend_stats: &backend_stats,
            service_stats: &service_stats,
            reasons: self.dataplane.reasons().unwrap_or_default(),
            check: &check,
        };
        observed::enrich(&mut status, &self.observed, &readings);
        status.vrrp = self
            .vrrp
            .as_ref()
            .map(VrrpHandle::status)
            .unwrap_or_default();
        status
    }

    /// The ids of the configured backends.
    fn backend_ids(&self) -> Vec<u32> {
        self.config
            .services
            .iter()
            .flat_map(|s| {
                s.backends.iter().filter_map(|b| {
                    self.ids
                        .backends
                        .get(&crate::ids::backend_key(&s.name, &b.name))
                })
            })
            .collect()
    }

    /// One line for `systemctl status` (the service manager's STATUS=).
    fn status_line(&self) -> String {
        let node = self.node();
        format!(
            "forwarding {} services, {} backends on {} ({:?} XDP)",
            self.config.services.len(),
            self.config.backend_count(),
            node.interface,
            node.xdp_mode
        )
    }

    fn node(&self) -> &Node {
        &self.config.nodes[&self.node_name]
    }
}

/// The short hash of the config file shown on the stats page.
fn config_version(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(text) => observed::config_version(&text),
        Err(_) => "unreadable".to_string(),
    }
}

/// Writes the admin states and ids to the state file.
fn save_state(path: &Path, admin: &AdminView, ids: &Ids) -> Result<()> {
    state_file::save(
        path,
        &SavedState::new(admin, ids.services.snapshot(), ids.backends.snapshot()),
    )
}

/// Starts the VRRP thread for this node's instances; service-up starts
/// from the agent's start state (restored health, paths).
async fn start_vrrp(
    config: &Config,
    node_name: &str,
    iface: &str,
    dataplane: &Dataplane,
    vips: &VipAddresses,
    admin: &AdminView,
    health: &HealthView,
) -> Result<(VrrpHandle, UnboundedReceiver<TransitionReport>)> {
    let address = vips.primary_address().await?;
    let instances = vrrp::config::for_node(config, node_name, address)?;
    let conditions = state::services_up(config, health, admin)
        .into_iter()
        .map(|(service, up)| (Condition::ServiceUp(service), up))
        .collect();
    vrrp::runtime::start(RuntimeOptions {
        instances,
        lease: node_lease(node_name)?,
        xdp_link: dataplane.pins().link(),
        xdp_ifindex: load::if_index(iface)?,
        conditions,
        seq_file: Some(Path::new(RUN_DIR).join(format!("{node_name}.ahseq"))),
    })
    .await
    .context("starting VRRP")
}

/// The next VRRP transition; never ready in single-node mode.
async fn next_report(
    reports: &mut Option<UnboundedReceiver<TransitionReport>>,
) -> Option<TransitionReport> {
    match reports {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}

/// Records DOWN in `health` every checked backend whose check runs DOWN,
/// so the view and the scheduler agree (a backend started DOWN comes UP
/// only through a check's UP event).
fn hold_checked_down(checks: &Scheduler, health: &mut HealthView) {
    for key in checks.keys() {
        if checks.is_up(&key) == Some(false) {
            health.record(key, false);
        }
    }
}

fn backend_addresses(config: &Config) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| *b.address.ip()))
        .collect();
    v.sort();
    v.dedup();
    v
}
