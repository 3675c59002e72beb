//! `/metrics`: the status as Prometheus metrics (OpenMetrics text, which
//! Prometheus reads). Built fresh from one snapshot per scrape, so every
//! number of a scrape comes from the same moment.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::control::NodeStatus;
use crate::vrrp::state::State;

/// The Content-Type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendStateLabels {
    service: String,
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    service: String,
    backend: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceStateLabels {
    instance: String,
    state: String,
}

const ADMIN_STATES: [&str; 3] = ["ready", "drain", "maint"];
const VRRP_STATES: [State; 4] = [
    State::Initialize,
    State::Backup,
    State::Master,
    State::Fault,
];

/// The metrics text of `status`.
pub fn render(status: &NodeStatus) -> String {
    let mut registry = Registry::default();
    let up = Family::<BackendLabels, Gauge>::default();
    let reachable = Family::<BackendLabels, Gauge>::default();
    let admin = Family::<BackendStateLabels, Gauge>::default();
    let packets = Family::<DirectionLabels, Counter>::default();
    let bytes = Family::<DirectionLabels, Counter>::default();
    let new_flows = Family::<BackendLabels, Counter>::default();
    let active = Family::<BackendLabels, Gauge>::default();
    let snat_ports = Family::<BackendLabels, Gauge>::default();
    let handshakes = Gauge::<i64>::default();
    let rst = Family::<ServiceLabels, Counter>::default();
    let events = Family::<ReasonLabels, Counter>::default();
    let vrrp_state = Family::<InstanceStateLabels, Gauge>::default();
    let vrrp_priority = Family::<InstanceLabels, Gauge>::default();
    let start = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "lb_backend_up",
        "1 when the health checks count the backend up (unchecked counts as up)",
        up.clone(),
    );
    registry.register(
        "lb_backend_reachable",
        "1 while the node has a route to the backend and its next hop answers ARP",
        reachable.clone(),
    );
    registry.register(
        "lb_backend_admin_state",
        "1 for the backend's admin state on this node, 0 for the others",
        admin.clone(),
    );
    registry.register(
        "lb_backend_packets",
        "Packets forwarded, by direction",
        packets.clone(),
    );
    registry.register(
        "lb_backend_bytes",
        "Bytes forwarded, by direction",
        bytes.clone(),
    );
    registry.register(
        "lb_backend_new_flows",
        "Connections sent to the backend",
        new_flows.clone(),
    );
    registry.register(
        "lb_backend_active_flows",
        "Open connections at the last flow collection",
        active.clone(),
    );
    registry.register(
        "lb_backend_snat_ports_in_use",
        "SNAT ports held toward the backend at the last flow collection (the range is spent per backend)",
        snat_ports.clone(),
    );
    registry.register(
        "lb_handshakes_in_progress",
        "TCP handshakes in progress at the last flow collection, each holding a SNAT port",
        handshakes.clone(),
    );
    registry.register(
        "lb_service_rst_no_backend",
        "SYNs answered with a RST because no backend could take them",
        rst.clone(),
    );
    registry.register(
        "lb_datapath_events",
        "Packets the data path dropped, passed to the host or answered, by reason",
        events.clone(),
    );
    registry.register(
        "lb_vrrp_state",
        "1 for the VRRP instance's current state, 0 for the others",
        vrrp_state.clone(),
    );
    registry.register(
        "lb_vrrp_priority",
        "Effective VRRP priority of the instance",
        vrrp_priority.clone(),
    );
    registry.register(
        "lb_agent_start_time_seconds",
        "When this lbd started, seconds since the Unix epoch",
        start.clone(),
    );

    start.set(status.started_at_ms as f64 / 1000.0);
    handshakes.set(i64::try_from(status.handshakes_in_progress).unwrap_or(i64::MAX));
    for service in &status.services {
        rst.get_or_create(&ServiceLabels {
            service: service.name.clone(),
        })
        .inc_by(service.rst_no_backend);
        for backend in &service.backends {
            let labels = BackendLabels {
                service: service.name.clone(),
                backend: backend.name.clone(),
            };
            up.get_or_create(&labels).set(i64::from(backend.is_up()));
            reachable
                .get_or_create(&labels)
                .set(i64::from(backend.unreachable.is_none()));
            for state in ADMIN_STATES {
                admin
                    .get_or_create(&BackendStateLabels {
                        service: service.name.clone(),
                        backend: backend.name.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::from(backend.admin.to_string() == state));
            }
            let t = &backend.traffic;
            for (direction, p, b) in [
                ("to_backend", t.packets_to_backend, t.bytes_to_backend),
                ("to_client", t.packets_to_client, t.bytes_to_client),
            ] {
                let labels = DirectionLabels {
                    service: service.name.clone(),
                    backend: backend.name.clone(),
                    direction: direction.to_string(),
                };
                packets.get_or_create(&labels).inc_by(p);
                bytes.get_or_create(&labels).inc_by(b);
            }
            new_flows.get_or_create(&labels).inc_by(t.new_flows);
            active
                .get_or_create(&labels)
                .set(i64::try_from(backend.active_flows).unwrap_or(i64::MAX));
            snat_ports
                .get_or_create(&labels)
                .set(i64::try_from(backend.snat_ports_in_use).unwrap_or(i64::MAX));
        }
    }
    for (reason, count) in &status.datapath_events {
        events
            .get_or_create(&ReasonLabels {
                reason: reason.clone(),
            })
            .inc_by(*count);
    }
    for instance in &status.vrrp {
        for state in VRRP_STATES {
            vrrp_state
                .get_or_create(&InstanceStateLabels {
                    instance: instance.name.clone(),
                    state: state.name().to_string(),
                })
                .set(i64::from(instance.state == state));
        }
        vrrp_priority
            .get_or_create(&InstanceLabels {
                instance: instance.name.clone(),
            })
            .set(i64::from(instance.priority));
    }
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String does not fail");
    text
}
