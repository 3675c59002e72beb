//! How the HTTP side talks to the agent: the same [`Pending`] requests the
//! control socket sends, answered in the agent's own loop (the only writer
//! of the maps and states). Nothing here touches agent state directly.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::agent::control::{Answer, NodeStatus, Pending, Request};

/// An agent busy longer than this (a reload with many backends) gets the
/// page a 503 instead of a hanging browser.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent did not answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

#[derive(Clone)]
pub struct AgentLink {
    requests: UnboundedSender<Pending>,
}

/// One VRRP instance as the status reports it (the `vrrp` field, filled by
/// the VRRP runtime). Read loosely: whatever fields exist are shown.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VrrpInstance {
    pub name: String,
    pub state: String,
    pub priority: Option<u64>,
    pub base_priority: Option<u64>,
    pub master: Option<String>,
    pub since_ms: Option<u64>,
    pub transitions: Option<u64>,
    pub vips: Vec<String>,
}

/// What the page, the API and `/metrics` show: the agent's status, its JSON
/// form (which carries fields this side does not know, like `vrrp`), and
/// the VRRP instances read from it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub status: NodeStatus,
    pub json: serde_json::Value,
    pub vrrp: Vec<VrrpInstance>,
}

impl Snapshot {
    /// Builds the snapshot from the status JSON.
    pub fn from_json(json: serde_json::Value) -> Result<Self, String> {
        // `vrrp` is read loosely below; the typed status must not refuse a
        // partial entry.
        let mut strict = json.clone();
        if let Some(fields) = strict.as_object_mut() {
            fields.remove("vrrp");
        }
        let status: NodeStatus = serde_json::from_value(strict)
            .map_err(|e| format!("the agent's status is unreadable: {e}"))?;
        let vrrp = json
            .get("vrrp")
            .and_then(|v| v.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|v| serde_json::from_value(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Snapshot { status, json, vrrp })
    }

    /// Whether `service/backend` exists.
    pub fn has_backend(&self, service: &str, backend: &str) -> bool {
        self.status
            .services
            .iter()
            .any(|s| s.name == service && s.backends.iter().any(|b| b.name == backend))
    }
}

impl AgentLink {
    pub fn new(requests: UnboundedSender<Pending>) -> Self {
        AgentLink { requests }
    }

    pub async fn ask(&self, request: Request) -> Result<Answer, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Pending { request, reply })
            .map_err(|_| Unavailable("the agent is stopping"))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unavailable("the agent is stopping")),
            Err(_) => Err(Unavailable("the agent did not answer in time")),
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, Unavailable> {
        let answer = self.ask(Request::Status).await?;
        // The JSON form keeps fields this side may not know of (`vrrp`).
        let status = answer
            .status
            .ok_or(Unavailable("the agent answered without a status"))?;
        let json = serde_json::to_value(&status).map_err(|_| Unavailable("unreadable status"))?;
        Snapshot::from_json(json).map_err(|_| Unavailable("unreadable status"))
    }

    pub async fn set_state(
        &self,
        service: &str,
        backend: &str,
        state: &str,
    ) -> Result<Answer, Unavailable> {
        self.ask(Request::SetState {
            service: service.to_string(),
            backend: backend.to_string(),
            state: state.to_string(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrrp_entries_are_read_from_whatever_the_status_carries() {
        let json = serde_json::json!({
            "node": "lb1",
            "services": [],
            "vrrp": [
                {"name": "lb_vip", "state": "master", "priority": 103, "base_priority": 101,
                 "master": "192.0.2.251", "transitions": 1, "adverts_sent": 12,
                 "drops": {"auth": 1}, "vips": ["192.0.2.250"], "since_ms": 4000},
                {"name": "other", "state": "backup"}
            ]
        });
        let snapshot = Snapshot::from_json(json).unwrap();
        assert_eq!(snapshot.status.node, "lb1");
        assert_eq!(snapshot.vrrp.len(), 2);
        let first = &snapshot.vrrp[0];
        assert_eq!(
            (first.name.as_str(), first.state.as_str()),
            ("lb_vip", "master")
        );
        assert_eq!(
            (first.priority, first.base_priority),
            (Some(103), Some(101))
        );
        assert_eq!(first.vips, vec!["192.0.2.250".to_string()]);
        assert_eq!(snapshot.vrrp[1].priority, None);
        let without = Snapshot::from_json(serde_json::json!({"node": "x", "services": []}));
        assert!(without.unwrap().vrrp.is_empty());
    }
}
