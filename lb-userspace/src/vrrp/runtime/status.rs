//! What `lbd status` reports per VRRP instance (the "vrrp" field), kept
//! up to date by the instance task and read by the agent at any time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::vrrp::state::State;

/// One instance as `lbd status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub state: State,
    /// The effective priority (base plus tracking).
    pub priority: u8,
    pub base_priority: u8,
    /// The master's address: ours while master, the followed one while
    /// backup, none before the first advert.
    pub master: Option<Ipv4Addr>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Received packets dropped by the checks, by `DropReason::label`.
    pub drops: BTreeMap<String, u64>,
    pub vips: Vec<Ipv4Addr>,
    /// Milliseconds since the last state change.
    pub since_ms: u64,
}

/// The live status of one instance: written by its task, read by `status`.
#[derive(Clone, Debug)]
pub struct StatusCell {
    inner: Arc<Mutex<(InstanceStatus, Instant)>>,
}

impl StatusCell {
    pub fn new(name: &str, base_priority: u8, vips: Vec<Ipv4Addr>) -> Self {
        let status = InstanceStatus {
            name: name.to_string(),
            state: State::Initialize,
            priority: base_priority,
            base_priority,
            master: None,
            transitions: 0,
            adverts_sent: 0,
            adverts_received: 0,
            drops: BTreeMap::new(),
            vips,
            since_ms: 0,
        };
        StatusCell {
            inner: Arc::new(Mutex::new((status, Instant::now()))),
        }
    }

    /// Applies `change`; `changed_state` restarts the `since_ms` clock.
    pub fn update(&self, change: impl FnOnce(&mut InstanceStatus)) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = guard.0.state;
        change(&mut guard.0);
        if guard.0.state != before {
            guard.1 = Instant::now();
        }
    }

    pub fn snapshot(&self) -> InstanceStatus {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut status = guard.0.clone();
        status.since_ms = guard.1.elapsed().as_millis() as u64;
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_contract_says() {
        let cell = StatusCell::new("lb_vip", 101, vec![Ipv4Addr::new(192, 0, 2, 250)]);
        cell.update(|s| {
            s.state = State::Master;
            s.priority = 103;
            s.master = Some(Ipv4Addr::new(192, 0, 2, 251));
            s.transitions = 1;
            *s.drops.entry("ttl".into()).or_default() += 2;
        });
        let json = serde_json::to_value(cell.snapshot()).unwrap();
        assert_eq!(json["state"], "master");
        assert_eq!(json["priority"], 103);
        assert_eq!(json["base_priority"], 101);
        assert_eq!(json["master"], "192.0.2.251");
        assert_eq!(json["drops"]["ttl"], 2);
        assert_eq!(json["vips"][0], "192.0.2.250");
        assert!(json["since_ms"].as_u64().unwrap() < 10_000);
        let fresh = serde_json::to_value(StatusCell::new("x", 100, vec![]).snapshot()).unwrap();
        assert_eq!(fresh["master"], serde_json::Value::Null);
        assert_eq!(fresh["state"], "initialize");
    }
}
