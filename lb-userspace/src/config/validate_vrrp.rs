//! Checks of `[[vrrp]]` against the other tables: every node has a
//! priority (and a unicast source when unicast), every service VIP moves
//! with some instance, tracked services exist, and no two instances share a
//! name, a router id on one interface, or a VIP.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::node::NodeDraft;
use super::report::Report;
use super::schema::TrackCondition;
use super::service::ServiceDraft;
use super::vrrp::VrrpDraft;

pub(super) fn cross_check(
    nodes: &[NodeDraft],
    services: &[ServiceDraft],
    instances: &[VrrpDraft],
    report: &mut Report,
) {
    let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.name.value.as_str()).collect();
    for instance in instances {
        per_node_maps_match_nodes(instance, &node_names, report);
        tracked_services_exist(instance, services, report);
    }
    unique_instances(instances, report);
    if !instances.is_empty() {
        service_vips_covered(services, instances, report);
    }
}

/// `priority` names exactly the nodes; `unicast_src` too when unicast, and
/// is absent when multicast.
fn per_node_maps_match_nodes(instance: &VrrpDraft, nodes: &BTreeSet<&str>, report: &mut Report) {
    if let Some(priority) = &instance.priority {
        let key = format!("{}.priority", instance.path);
        compare_keys(priority.value.keys(), nodes, &priority.span, &key, report);
    }
    let (Some(peers), Some(src)) = (&instance.unicast_peers, &instance.unicast_src) else {
        return;
    };
    let key = format!("{}.unicast_src", instance.path);
    match (peers.is_empty(), src.value.is_empty()) {
        (true, false) => report.push(
            src.span.clone(),
            &key,
            "unicast_src without unicast_peers: list the peers, or drop it to use multicast",
        ),
        (false, true) => report.push(
            instance.span.clone(),
            &key,
            "missing: with unicast_peers every node needs its source address, \
             e.g. unicast_src = { lb1 = \"192.0.2.11\", lb2 = \"192.0.2.12\" }",
        ),
        (false, false) => compare_keys(src.value.keys(), nodes, &src.span, &key, report),
        (true, true) => {}
    }
}

fn compare_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    nodes: &BTreeSet<&str>,
    span: &Option<std::ops::Range<usize>>,
    key: &str,
    report: &mut Report,
) {
    let written: BTreeSet<&str> = keys.map(String::as_str).collect();
    for unknown in written.difference(nodes) {
        report.push(
            span.clone(),
            key,
            format!("`{unknown}` is not a node; define [node.{unknown}] or remove it"),
        );
    }
    for missing in nodes.difference(&written) {
        report.push(
            span.clone(),
            key,
            format!("node `{missing}` has no entry; add `{missing} = ...`"),
        );
    }
}

fn tracked_services_exist(instance: &VrrpDraft, services: &[ServiceDraft], report: &mut Report) {
    let known: BTreeSet<&str> = services
        .iter()
        .filter_map(|s| s.name.as_ref().map(|n| n.value.as_str()))
        .collect();
    for (i, track) in instance.track.iter().enumerate() {
        let Some(track) = track else { continue };
        if let TrackCondition::ServiceUp { service } = &track.value.condition
            && !known.contains(service.as_str())
        {
            report.push(
                track.span.clone(),
                &format!("{}.track[{}].service", instance.path, i + 1),
                format!("no service is named `{service}`"),
            );
        }
    }
}

fn unique_instances(instances: &[VrrpDraft], report: &mut Report) {
    let mut names: HashMap<&str, &VrrpDraft> = HashMap::new();
    let mut ids: HashMap<(Option<&str>, u8), &VrrpDraft> = HashMap::new();
    let mut vips: HashMap<Ipv4Addr, &VrrpDraft> = HashMap::new();
    for instance in instances {
        if let Some(name) = &instance.name
            && let Some(first) = names.insert(&name.value, instance)
        {
            let line = report.line_of(&first.span);
            report.push(
                name.span.clone(),
                &format!("{}.name", instance.path),
                format!("duplicate VRRP instance name: already used on line {line}"),
            );
        }
        if let (Some(iface), Some(id)) = (&instance.interface, &instance.virtual_router_id)
            && let Some(first) = ids.insert((iface.as_deref(), id.value), instance)
        {
            let line = report.line_of(&first.span);
            report.push(
                id.span.clone(),
                &format!("{}.virtual_router_id", instance.path),
                format!(
                    "virtual_router_id {} is already used on this interface (line {line})",
                    id.value
                ),
            );
        }
        for vip in instance.vips.iter().flat_map(|v| &v.value) {
            if let Some(first) = vips.insert(*vip, instance)
                && !std::ptr::eq(first, instance)
            {
                report.push(
                    instance.vips.as_ref().and_then(|v| v.span.clone()),
                    &format!("{}.vips", instance.path),
                    format!("{vip} is already in `{}`", first.path),
                );
            }
        }
    }
}

/// With VRRP a VIP is held only by the master; a service VIP outside every
/// instance would never be added on any node.
fn service_vips_covered(services: &[ServiceDraft], instances: &[VrrpDraft], report: &mut Report) {
    let covered: BTreeSet<Ipv4Addr> = instances
        .iter()
        .flat_map(|i| i.vips.iter().flat_map(|v| v.value.iter().copied()))
        .collect();
    for service in services {
        let Some(vip) = &service.vip else { continue };
        if !covered.contains(&vip.value) {
            report.push(
                vip.span.clone(),
                &format!("{}.vip", service.path),
                format!(
                    "{} is in no [[vrrp]] instance's `vips`, so no node would hold it",
                    vip.value
                ),
            );
        }
    }
}
