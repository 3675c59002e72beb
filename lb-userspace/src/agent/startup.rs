//! Start-up: everything the agent sets up before its loop (host settings,
//! the data path loaded or adopted, ids and admin states from the state
//! file, health kept across a restart, paths, VIPs or VRRP, checks, the
//! control socket and the HTTP side), and the first programming of the maps.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::Agent;
use super::commands::node_lease;
use super::control_socket::ControlSocket;
use super::iface_watch::{self, IfaceWatch};
use super::state_file::{self, SavedState};
use super::{
    admin_view::AdminView,
    desired_state::Ids,
    health_view::HealthView,
    observed::{self, Observed},
};
use super::{desired_state, health_file, notify};
use crate::paths::RUN_DIR;
use crate::{
    config::{Config, XdpMode},
    dataplane::{
        AttachMode, Dataplane, DataplaneOptions, host, load, neigh::ManagedNeighbours, pins,
    },
    health::{self, Checker, Scheduler},
    objects,
    vips::VipAddresses,
    vrrp::{
        self,
        runtime::{Condition, RuntimeOptions, TransitionReport, VrrpHandle},
    },
};

impl Agent {
    pub(super) async fn start(
        config_path: PathBuf,
        config: Config,
        node_name: String,
    ) -> Result<Self> {
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

        let limits = desired_state::map_sizes(&config);
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
            Some(saved) => Ids::restore(&limits, saved, now, desired_state::id_quarantine(&config)),
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
        let checked: BTreeSet<health::BackendKey> = desired_state::checks(&config, &admin)
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
        let changes = health.set_unreachable(desired_state::unreachable_backends(&config, &reach));
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
            vips.add_all(&desired_state::vips(&config)).await?;
            (None, None, BTreeSet::new())
        };

        let gc_policy = desired_state::gc_policy(&config, &ids);
        // Every backend starts UP (HAProxy's rule), so the maps are
        // programmed at once and the checks take out what does not answer.
        let (events, health_events) = mpsc::unbounded_channel();
        let checker = Checker::new().context("setting up the TLS client of the health checks")?;
        let mut checks = Scheduler::new(checker, events);
        checks.sync_with(desired_state::checks(&config, &admin), |key| {
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
    pub(super) fn program(&mut self) -> Result<()> {
        let node = &self.config.nodes[&self.node_name];
        let active = desired_state::active_vips(&self.config, &self.masters);
        let desired = desired_state::desired_state(
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
}

/// Starts the VRRP thread for this node's instances; service-up starts
/// from the agent's start state (restored health, paths).
pub(super) async fn start_vrrp(
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
    let conditions = desired_state::services_up(config, health, admin)
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

/// Records DOWN in `health` every checked backend whose check runs DOWN,
/// so the view and the scheduler agree (a backend started DOWN comes UP
/// only through a check's UP event).
pub(super) fn hold_checked_down(checks: &Scheduler, health: &mut HealthView) {
    for key in checks.keys() {
        if checks.is_up(&key) == Some(false) {
            health.record(key, false);
        }
    }
}

pub(super) fn backend_addresses(config: &Config) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| *b.address.ip()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The short hash of the config file shown on the stats page.
pub(super) fn config_version(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(text) => observed::config_version(&text),
        Err(_) => "unreadable".to_string(),
    }
}

/// Writes the admin states and ids to the state file.
pub(super) fn save_state(path: &Path, admin: &AdminView, ids: &Ids) -> Result<()> {
    state_file::save(
        path,
        &SavedState::new(admin, ids.services.snapshot(), ids.backends.snapshot()),
    )
}

/// Seconds on the monotonic clock, for id quarantines.
pub(super) fn monotonic_s() -> u64 {
    crate::dataplane::gc::monotonic_coarse_ns() / 1_000_000_000
}
