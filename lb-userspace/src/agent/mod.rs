//! The running agent: loads the data path, programs it from the config, and
//! keeps it in step (flow collection, neighbours, health checks, reloads)
//! until told to stop.
//!
//! Stopping the agent does not stop forwarding: the XDP link and maps are
//! pinned, so traffic keeps flowing while the agent restarts, and a new agent
//! adopts them. `lbd stop --detach` removes the data path for good.

pub mod admin_view;
mod commands;
mod control_socket;
pub mod desired_state;
mod event_loop;
pub mod health_file;
pub mod health_view;
pub mod iface_watch;
mod interface;
pub mod notify;
pub mod observed;
pub mod pressure;
mod requests;
mod startup;
pub mod state_file;
pub mod status_report;
mod updates;

pub use commands::{reload, run, stop};

use std::{collections::BTreeSet, path::PathBuf};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    config::Config,
    control::Pending,
    dataplane::{Dataplane, GcPolicy, neigh::ManagedNeighbours},
    health::{HealthEvent, Scheduler},
    vips::VipAddresses,
    vrrp::runtime::{TransitionReport, VrrpHandle},
};
use admin_view::AdminView;
use control_socket::ControlSocket;
use desired_state::Ids;
use health_view::HealthView;
use iface_watch::IfaceWatch;
use observed::Observed;

/// A running agent: what it holds between events. Where each part of its
/// life is: `commands` (run, stop, reload from the command line), `startup`
/// (from nothing to forwarding), `event_loop` (what each event does),
/// `interface` (the device changing under it), `updates` (reload and
/// set-state, all or nothing), `requests` (status and control answers).
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
