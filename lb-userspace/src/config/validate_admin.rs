//! Checks of `[admin]` and `[[redirect]]` against the other tables: their
//! listeners must not take a service's VIP:port (the XDP program would take
//! the packets first) nor each other's, and their ports must stay out of
//! every node's SNAT range (replies to SNAT ports are taken for backend
//! traffic by the data path).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::ops::Range;

use super::admin::{AdminDraft, RedirectDraft};
use super::node::NodeDraft;
use super::report::Report;
use super::schema::Protocol;
use super::section::At;
use super::service::ServiceDraft;

pub(super) fn cross_check(
    nodes: &[NodeDraft],
    services: &[ServiceDraft],
    admin: Option<&AdminDraft>,
    redirects: &[RedirectDraft],
    report: &mut Report,
) {
    let mut listeners: Vec<(String, &At<SocketAddrV4>)> = Vec::new();
    if let Some(admin) = admin
        && let Some(listen) = &admin.listen
    {
        listeners.push((format!("{}.listen", admin.path), listen));
    }
    for redirect in redirects {
        if let Some(listen) = &redirect.listen {
            listeners.push((format!("{}.listen", redirect.path), listen));
        }
    }
    distinct_listeners(&listeners, report);
    for (key, listen) in &listeners {
        clear_of_services(key, listen, services, report);
        clear_of_snat_ranges(key, listen, nodes, report);
    }
}

fn distinct_listeners(listeners: &[(String, &At<SocketAddrV4>)], report: &mut Report) {
    let mut seen: HashMap<SocketAddrV4, &Option<Range<usize>>> = HashMap::new();
    for (key, listen) in listeners {
        if let Some(first) = seen.get(&listen.value) {
            let line = report.line_of(first);
            report.push(
                listen.span.clone(),
                key,
                format!("{} is already a listener on line {line}", listen.value),
            );
        } else {
            seen.insert(listen.value, &listen.span);
        }
    }
}

fn clear_of_services(
    key: &str,
    listen: &At<SocketAddrV4>,
    services: &[ServiceDraft],
    report: &mut Report,
) {
    for service in services {
        let (Some(vip), Some(port)) = (&service.vip, &service.port) else {
            continue;
        };
        // The HTTP listeners are TCP; a UDP service on the same port is no clash.
        if service.protocol == Some(Protocol::Udp) {
            continue;
        }
        if vip.value == *listen.value.ip() && port.value == listen.value.port() {
            report.push(
                listen.span.clone(),
                key,
                format!(
                    "{} is the VIP and port of {}: the data path forwards those packets to \
                     the backends, so this listener would never see them; pick another port",
                    listen.value, service.path
                ),
            );
        }
    }
}

fn clear_of_snat_ranges(
    key: &str,
    listen: &At<SocketAddrV4>,
    nodes: &[NodeDraft],
    report: &mut Report,
) {
    let port = listen.value.port();
    for node in nodes {
        let Some(range) = &node.snat_ports else {
            continue;
        };
        if range.value.contains(port) {
            report.push(
                listen.span.clone(),
                key,
                format!(
                    "port {port} is inside {}.snat_ports ({}): packets to it would be taken \
                     for replies of backends; pick a port outside every node's SNAT range",
                    node.path, range.value
                ),
            );
        }
    }
}
