//! The status model: the one picture of a node that `lbd status`, the
//! stats page, its JSON API and `/metrics` render. The agent fills it in
//! (agent/status_report.rs); it travels as JSON on the control socket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AdminState;

/// What `status` reports: the one model behind `lbd status`, the stats
/// page, its JSON API and `/metrics`. Counters are totals since the id of
/// the backend or service came into use; times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// When this agent started (Unix ms); 0 when not known.
    #[serde(default)]
    pub started_at_ms: u64,
    /// A short hash of the config file the agent runs with.
    #[serde(default)]
    pub config_version: String,
    /// When the active flows were last counted (the flow collection, every
    /// few seconds); `None` before the first count.
    #[serde(default)]
    pub flows_counted_at_ms: Option<u64>,
    /// The data path's reason counters (drops, passes, answers) by label.
    #[serde(default)]
    pub datapath_events: BTreeMap<String, u64>,
    /// TCP handshakes in progress at the last flow collection: each holds a
    /// SNAT port until the client's ACK or the `tcp_syn` timeout, so a
    /// number far above the new connections per second is a SYN flood.
    #[serde(default)]
    pub handshakes_in_progress: u64,
    pub services: Vec<ServiceStatus>,
    /// One entry per `[[vrrp]]` instance (empty without VRRP); filled in by
    /// the agent from `VrrpHandle::status`.
    #[serde(default)]
    pub vrrp: Vec<crate::vrrp::runtime::InstanceStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub id: u32,
    pub vip: String,
    pub port: u16,
    /// SYNs answered with a RST because no backend could take them.
    #[serde(default)]
    pub rst_no_backend: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub id: u32,
    pub address: String,
    pub weight: u32,
    /// `up`, `down`, or `unchecked` (no check configured, or in maint).
    pub health: String,
    pub admin: AdminState,
    #[serde(default)]
    pub traffic: Traffic,
    /// Open connections (both directions counted once), at the last count.
    #[serde(default)]
    pub active_flows: u64,
    /// SNAT ports held toward this backend at the last count (open, closing
    /// and recently closed connections, handshakes): the range of the
    /// node's `snat_ports` is spent per backend.
    #[serde(default)]
    pub snat_ports_in_use: u64,
    /// New connections per second over the last counting interval.
    #[serde(default)]
    pub new_flows_per_second: f64,
    /// The last health check; `None` when unchecked or not yet checked.
    #[serde(default)]
    pub last_check: Option<LastCheck>,
    /// When the health or admin state last changed (Unix ms); `None` while
    /// it is still the state the agent started with.
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Why packets cannot reach it ("no route to 198.51.100.21 (...)"),
    /// which holds it DOWN whatever its checks say; `None` when its path
    /// is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl BackendStatus {
    /// The one word an operator reads first: MAINT, DOWN, DRAIN or UP.
    pub fn summary(&self) -> &'static str {
        match (self.admin, self.health.as_str()) {
            (AdminState::Maint, _) => "MAINT",
            (_, "down") => "DOWN",
            (AdminState::Drain, _) => "DRAIN",
            _ => "UP",
        }
    }

    /// Whether the health checks count it up (an unchecked backend is up).
    pub fn is_up(&self) -> bool {
        self.health != "down"
    }
}

/// Packets and bytes each way, from the per-CPU counters of the data path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub new_flows: u64,
}

/// The last health check of a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheck {
    pub ok: bool,
    /// "tls-hello timeout after 2s", "http status 200".
    pub result: String,
    pub duration_us: u64,
    pub at_ms: u64,
}

impl NodeStatus {
    /// Whether `service/backend` exists.
    pub fn has_backend(&self, service: &str, backend: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.name == service && s.backends.iter().any(|b| b.name == backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::state::State;

    #[test]
    fn a_status_from_an_older_agent_reads_with_defaults() {
        // Fields added since (counters, VRRP details) take their defaults,
        // so `lbd status` of a newer build can read an agent not yet
        // restarted after an upgrade.
        let status: NodeStatus = serde_json::from_value(serde_json::json!({
            "node": "lb1",
            "services": [{"name": "web", "id": 1, "vip": "192.0.2.10", "port": 80,
                          "backends": [{"name": "be1", "id": 1, "address": "198.51.100.11:80",
                                        "weight": 1, "health": "up", "admin": "drain"}]}],
            "vrrp": [{"name": "lb_vip", "state": "master"}]
        }))
        .unwrap();
        assert!(status.has_backend("web", "be1") && !status.has_backend("web", "be2"));
        let backend = &status.services[0].backends[0];
        assert_eq!((backend.summary(), backend.snat_ports_in_use), ("DRAIN", 0));
        assert_eq!(status.vrrp[0].state, State::Master);
        assert_eq!((status.vrrp[0].priority, status.vrrp[0].master), (0, None));
    }
}
