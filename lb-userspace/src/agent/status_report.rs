//! The agent's side of `status` and `set-state`: the status model filled
//! in from the config, the ids and the health and admin views (the data
//! path's counters are added by `observed`), and the backend a request names.

use std::collections::BTreeMap;

use super::{admin_view::AdminView, desired_state::Ids, health_view::HealthView};
use crate::{
    config::Config,
    control::{BackendStatus, NodeStatus, ServiceStatus, Traffic},
    health::BackendKey,
    ids::backend_key,
};

/// The status of every service and backend. `checked` says whether a
/// backend's health check runs.
pub fn status(
    node: &str,
    config: &Config,
    ids: &Ids,
    health: &HealthView,
    admin: &AdminView,
    checked: impl Fn(&BackendKey) -> bool,
) -> NodeStatus {
    let services = config
        .services
        .iter()
        .map(|svc| ServiceStatus {
            name: svc.name.clone(),
            id: ids.service(svc),
            vip: svc.vip.to_string(),
            port: svc.port,
            rst_no_backend: 0,
            backends: svc
                .backends
                .iter()
                .map(|b| {
                    let key = BackendKey::new(&svc.name, &b.name);
                    let unreachable = health.unreachable(&key).map(str::to_string);
                    let health = if unreachable.is_some() {
                        "down"
                    } else if !checked(&key) {
                        "unchecked"
                    } else if health.is_up(&svc.name, &b.name) {
                        "up"
                    } else {
                        "down"
                    };
                    BackendStatus {
                        name: b.name.clone(),
                        id: ids
                            .backends
                            .get(&backend_key(&svc.name, &b.name))
                            .unwrap_or_default(),
                        address: b.address.to_string(),
                        weight: b.weight,
                        health: health.to_string(),
                        admin: admin.state(&svc.name, &b.name),
                        traffic: Traffic::default(),
                        active_flows: 0,
                        snat_ports_in_use: 0,
                        new_flows_per_second: 0.0,
                        last_check: None,
                        since_ms: None,
                        unreachable,
                    }
                })
                .collect(),
        })
        .collect();
    NodeStatus {
        node: node.to_string(),
        started_at_ms: 0,
        config_version: String::new(),
        flows_counted_at_ms: None,
        datapath_events: BTreeMap::new(),
        handshakes_in_progress: 0,
        services,
        vrrp: Vec::new(),
    }
}

/// The backend a `set-state` names, or an error listing what exists.
pub fn find_backend(config: &Config, service: &str, backend: &str) -> Result<BackendKey, String> {
    let list = |names: Vec<&str>| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let Some(svc) = config.services.iter().find(|s| s.name == service) else {
        let names = config.services.iter().map(|s| s.name.as_str()).collect();
        return Err(format!("no service {service}; services: {}", list(names)));
    };
    if !svc.backends.iter().any(|b| b.name == backend) {
        let names = svc.backends.iter().map(|b| b.name.as_str()).collect();
        return Err(format!(
            "no backend {backend} in service {service}; backends: {}",
            list(names)
        ));
    }
    Ok(BackendKey::new(service, backend))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{AdminState, Answer};

    fn horizon() -> Config {
        let text = include_str!("../../../examples/horizon.toml");
        crate::config::parse(text, "horizon.toml").unwrap()
    }

    #[test]
    fn unknown_names_are_errors_listing_what_exists() {
        let c = horizon();
        let svc = &c.services[0];
        let names: Vec<&str> = svc.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            find_backend(&c, &svc.name, names[0]),
            Ok(BackendKey::new(&svc.name, names[0]))
        );
        assert_eq!(
            find_backend(&c, &svc.name, "cs9"),
            Err(format!(
                "no backend cs9 in service {}; backends: {}",
                svc.name,
                names.join(", ")
            ))
        );
        let err = find_backend(&c, "nosuch", names[0]).unwrap_err();
        assert!(err.starts_with("no service nosuch; services: "), "{err}");
        assert!(err.contains(&svc.name), "{err}");
    }

    #[test]
    fn status_shows_health_admin_state_and_ids() {
        let c = horizon();
        let mut ids = Ids::new(&super::super::desired_state::map_sizes(&c));
        ids.sync(&c, 0).unwrap();
        let svc = &c.services[0];
        let (first, second) = (&svc.backends[0].name, &svc.backends[1].name);
        let health = HealthView::with_down([BackendKey::new(&svc.name, first)]);
        let admin = AdminView::with([(BackendKey::new(&svc.name, second), AdminState::Maint)]);
        let s = status("lb1", &c, &ids, &health, &admin, |k| k.backend != *second);
        assert_eq!(s.node, "lb1");
        assert_eq!(s.services.len(), c.services.len());
        let got = &s.services[0];
        assert_eq!(got.id, ids.services.get(&svc.name).unwrap());
        let b0 = &got.backends[0];
        assert_eq!((b0.health.as_str(), b0.admin), ("down", AdminState::Ready));
        assert_eq!(
            b0.id,
            ids.backends.get(&backend_key(&svc.name, first)).unwrap()
        );
        let b1 = &got.backends[1];
        assert_eq!(
            (b1.health.as_str(), b1.admin),
            ("unchecked", AdminState::Maint)
        );
        let json = serde_json::to_string(&Answer {
            status: Some(s.clone()),
            ..Answer::ok("status")
        })
        .unwrap();
        assert!(json.contains(r#""admin":"maint""#), "{json}");
        let back: Answer = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, Some(s));
    }
}
