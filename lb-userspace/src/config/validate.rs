//! Checks across tables: duplicates, map sizes against what the file asks
//! for, SNAT ranges against the ports the host owns. Each check uses only the
//! fields that parsed, so one bad value does not hide an unrelated conflict.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use lb_common::default_size;

use super::limits::LimitsDraft;
use super::node::NodeDraft;
use super::report::Report;
use super::schema::Protocol;
use super::service::ServiceDraft;

/// A Maglev ring needs many slots per backend to spread clients evenly;
/// 100x keeps every backend's share within about 1% of its weight.
const MAGLEV_SLOTS_PER_BACKEND: u64 = 100;

pub(super) fn cross_check(
    nodes: &[NodeDraft],
    limits: &LimitsDraft,
    services: &[ServiceDraft],
    report: &mut Report,
) {
    unique_service_names(services, report);
    unique_listeners(services, report);
    for service in services {
        unique_backends(service, report);
        checks_fit_their_kind(service, report);
    }
    services_fit(limits, services, report);
    backends_fit(limits, services, report);
    maglev_fits(limits, services, report);
    snat_ranges_avoid_service_ports(nodes, services, report);
    snat_ranges_disjoint(nodes, report);
    local_addresses_fit(services, report);
}

fn unique_service_names(services: &[ServiceDraft], report: &mut Report) {
    let mut seen: HashMap<&str, &ServiceDraft> = HashMap::new();
    for service in services {
        let Some(name) = &service.name else { continue };
        if let Some(first) = seen.get(name.value.as_str()) {
            let line = report.line_of(&first.span);
            report.push(
                name.span.clone(),
                &format!("{}.name", service.path),
                format!(
                    "duplicate service name `{}`: already used on line {line}",
                    name.value
                ),
            );
        } else {
            seen.insert(&name.value, service);
        }
    }
}

/// Two services on one VIP, port and protocol would fight over the same packets.
fn unique_listeners(services: &[ServiceDraft], report: &mut Report) {
    let mut seen: HashMap<(Ipv4Addr, u16, Protocol), &ServiceDraft> = HashMap::new();
    for service in services {
        let (Some(vip), Some(port), Some(protocol)) =
            (&service.vip, &service.port, service.protocol)
        else {
            continue;
        };
        let listener = (vip.value, port.value, protocol);
        if let Some(first) = seen.get(&listener) {
            let line = report.line_of(&first.span);
            report.push(
                port.span.clone(),
                &format!("{}.port", service.path),
                format!(
                    "{}:{}/{protocol} is already served by `{}` (line {line})",
                    vip.value, port.value, first.path
                ),
            );
        } else {
            seen.insert(listener, service);
        }
    }
}

fn unique_backends(service: &ServiceDraft, report: &mut Report) {
    let mut names = HashMap::new();
    let mut addresses = HashMap::new();
    for backend in &service.backends {
        if let Some(name) = &backend.name {
            if let Some(first) = names.get(name.value.as_str()) {
                let line = report.line_of(first);
                report.push(
                    name.span.clone(),
                    &format!("{}.name", backend.path),
                    format!(
                        "duplicate backend name `{}` in {}: already used on line {line}",
                        name.value, service.path
                    ),
                );
            } else {
                names.insert(name.value.as_str(), backend.span.clone());
            }
        }
        if let Some(address) = &backend.address {
            if let Some(first) = addresses.get(&address.value) {
                let line = report.line_of(first);
                report.push(
                    address.span.clone(),
                    &format!("{}.address", backend.path),
                    format!(
                        "{} is already a backend of this service (line {line}); use `weight` \
                         to give a server a larger share",
                        address.value
                    ),
                );
            } else {
                addresses.insert(address.value, backend.span.clone());
            }
        }
    }
}

/// A key the check's kind does not use is a mistake (an http path on a tcp
/// check would silently do nothing). Judged on each backend's effective
/// check, since a backend may change the kind; each key is named once.
fn checks_fit_their_kind(service: &ServiceDraft, report: &mut Report) {
    let Some(service_check) = service.check.as_ref() else {
        return;
    };
    let mut reported = BTreeSet::new();
    for backend in &service.backends {
        let Some(Some(check)) = backend.effective_check(service_check.as_ref()) else {
            continue;
        };
        if check.kind.is_none() && check.invalid {
            continue; // the kind itself was wrong; nothing to compare with
        }
        let kind = check.kind();
        for (key, span, used_by) in check.misplaced_keys() {
            if !reported.insert(key.to_string()) {
                continue;
            }
            let whose = match &check.kind {
                Some(written) if written.key.starts_with(&backend.path) => {
                    format!("{}'s check", backend.path)
                }
                Some(_) => "this check".to_string(),
                None => "this check (by default)".to_string(),
            };
            let name = key.rsplit('.').next().unwrap_or(key);
            report.push(
                span,
                key,
                format!("`{name}` is used by {used_by} checks only, and {whose} is `{kind}`"),
            );
        }
    }
}

fn services_fit(limits: &LimitsDraft, services: &[ServiceDraft], report: &mut Report) {
    let Some(max) = &limits.max_services else {
        return;
    };
    if services.len() as u64 > u64::from(max.value) {
        // Point at the limit if written, else at the first service too many.
        let span = max
            .span
            .clone()
            .or_else(|| services[max.value as usize].span.clone());
        report.push(
            span,
            "limits.max_services",
            format!(
                "{} services are defined but max_services is {}",
                services.len(),
                max.value
            ),
        );
    }
}

fn backends_fit(limits: &LimitsDraft, services: &[ServiceDraft], report: &mut Report) {
    let Some(max) = &limits.max_backends else {
        return;
    };
    let total: usize = services.iter().map(|s| s.backends.len()).sum();
    if total as u64 >= u64::from(max.value) {
        let span = max.span.clone().or_else(|| {
            services
                .iter()
                .flat_map(|s| &s.backends)
                .nth(max.value.saturating_sub(1) as usize)
                .and_then(|b| b.span.clone())
        });
        report.push(
            span,
            "limits.max_backends",
            format!(
                "{total} {} max_backends of at least {} (backend id 0 is reserved); it is {}",
                if total == 1 {
                    "backend needs"
                } else {
                    "backends need"
                },
                total + 1,
                max.value
            ),
        );
    }
}

fn maglev_fits(limits: &LimitsDraft, services: &[ServiceDraft], report: &mut Report) {
    let Some(ring) = &limits.maglev_size else {
        return;
    };
    let Some(largest) = services.iter().max_by_key(|s| s.backends.len()) else {
        return;
    };
    let needed = largest.backends.len() as u64 * MAGLEV_SLOTS_PER_BACKEND;
    if u64::from(ring.value) < needed {
        report.push(
            ring.span.clone().or_else(|| largest.span.clone()),
            "limits.maglev_size",
            format!(
                "{} has {} backends, so maglev_size must be at least {needed} \
                 ({MAGLEV_SLOTS_PER_BACKEND} slots per backend); it is {}",
                largest.path,
                largest.backends.len(),
                ring.value
            ),
        );
    }
}

/// Replies to SNATed packets come back to (SNAT address, SNAT port). If that
/// pair is also a service the host serves, the data path cannot tell a reply
/// from a new client. So no node's range may contain the port of a service
/// whose VIP some service uses as its SNAT address.
fn snat_ranges_avoid_service_ports(
    nodes: &[NodeDraft],
    services: &[ServiceDraft],
    report: &mut Report,
) {
    let snat_addresses: BTreeSet<Ipv4Addr> = services
        .iter()
        .filter_map(ServiceDraft::effective_snat)
        .collect();
    let owned_ports: Vec<(u16, &ServiceDraft, Ipv4Addr)> = services
        .iter()
        .filter_map(|s| Some((s.port.as_ref()?.value, s, s.vip.as_ref()?.value)))
        .filter(|(_, _, vip)| snat_addresses.contains(vip))
        .collect();
    for node in nodes {
        let Some(range) = &node.snat_ports else {
            continue;
        };
        let mut reported = BTreeSet::new();
        for (port, service, vip) in &owned_ports {
            if range.value.contains(*port) && reported.insert(*port) {
                report.push(
                    range.span.clone(),
                    &format!("{}.snat_ports", node.path),
                    format!(
                        "{} contains port {port} of {} on {vip}, an address used for SNAT; \
                         replies to that port would be taken for new clients",
                        range.value, service.path
                    ),
                );
            }
        }
    }
}

/// Flow-state sync (planned) needs each node to own its SNAT ports.
fn snat_ranges_disjoint(nodes: &[NodeDraft], report: &mut Report) {
    for (i, node) in nodes.iter().enumerate() {
        let Some(range) = &node.snat_ports else {
            continue;
        };
        for earlier in &nodes[..i] {
            let Some(other) = &earlier.snat_ports else {
                continue;
            };
            if range.value.overlaps(&other.value) {
                report.push(
                    range.span.clone(),
                    &format!("{}.snat_ports", node.path),
                    format!(
                        "{} overlaps {} of node `{}`; give each node its own part of the \
                         range so the nodes never hand out the same port",
                        range.value, other.value, earlier.name.value
                    ),
                );
            }
        }
    }
}

/// The data path keeps the addresses it owns (VIPs and SNAT addresses) in a
/// fixed-size map.
fn local_addresses_fit(services: &[ServiceDraft], report: &mut Report) {
    let mut addresses = BTreeSet::new();
    for service in services {
        addresses.extend(service.vip.as_ref().map(|at| at.value));
        addresses.extend(service.effective_snat());
        if addresses.len() > default_size::LOCAL_ADDRS as usize {
            report.push(
                service.span.clone(),
                &service.path,
                format!(
                    "more than {} distinct VIP and SNAT addresses",
                    default_size::LOCAL_ADDRS
                ),
            );
            return;
        }
    }
}
