//! Answers to the control requests (`status`, `set-state`) and the short
//! status line for the service manager.

use super::Agent;
use super::{observed, status_report};
use crate::control::{Answer, Request};
use crate::{
    config::Node,
    health::{self},
    vrrp::runtime::VrrpHandle,
};

impl Agent {
    /// Answers one control socket request.
    pub(super) fn answer(&mut self, request: Request) -> Answer {
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

    /// The status with the data path's counters, flows and checks.
    pub(super) fn status(&self) -> crate::control::NodeStatus {
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
    pub(super) fn backend_ids(&self) -> Vec<u32> {
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
    pub(super) fn status_line(&self) -> String {
        let node = self.node();
        format!(
            "forwarding {} services, {} backends on {} ({:?} XDP)",
            self.config.services.len(),
            self.config.backend_count(),
            node.interface,
            node.xdp_mode
        )
    }

    pub(super) fn node(&self) -> &Node {
        &self.config.nodes[&self.node_name]
    }
}
