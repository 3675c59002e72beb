//! `lbd status` for a terminal: the stats page's picture as compact text
//! tables (header with node, uptime and config version; one line per VRRP
//! instance; per service one row per backend with state, weight, flows and
//! traffic). `lbd status --json` prints the agent's status as it is.
//!
//! Pure: it renders the same [`NodeStatus`] the page and `/metrics` read, at
//! a given `now`, so its output is tested without an agent.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::control::format::{bytes, since, span};
use crate::control::{BackendStatus, NodeStatus, ServiceStatus};
use crate::vrrp::runtime::InstanceStatus;

/// The status as text, ending with a newline.
pub fn render(status: &NodeStatus, now: SystemTime) -> String {
    let mut out = String::new();
    let uptime = if status.started_at_ms == 0 {
        "?".to_string()
    } else {
        span(since(now, status.started_at_ms))
    };
    let version = if status.config_version.is_empty() {
        "?"
    } else {
        &status.config_version
    };
    let _ = writeln!(out, "node {}  up {uptime}  config {version}", status.node);
    render_vrrp(&mut out, &status.vrrp);
    for service in &status.services {
        out.push('\n');
        render_service(&mut out, service, now);
    }
    let events: Vec<String> = status
        .datapath_events
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !events.is_empty() {
        let _ = writeln!(out, "\ndata path events: {}", events.join(", "));
    }
    let ports: u64 = status
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .map(|b| b.snat_ports_in_use)
        .sum();
    if ports > 0 || status.handshakes_in_progress > 0 {
        let _ = writeln!(
            out,
            "SNAT ports in use {ports} (per backend in --json), handshakes in progress {}",
            status.handshakes_in_progress
        );
    }
    out
}

fn render_vrrp(out: &mut String, instances: &[InstanceStatus]) {
    if instances.is_empty() {
        out.push_str("vrrp none (this node holds its VIPs itself)\n");
        return;
    }
    for i in instances {
        let mut line = format!(
            "vrrp {} {}  priority {}",
            i.name,
            i.state.name().to_uppercase(),
            i.priority
        );
        if i.base_priority != i.priority {
            let _ = write!(line, " (base {})", i.base_priority);
        }
        if let Some(master) = i.master {
            let _ = write!(line, "  master {master}");
        }
        let _ = write!(line, "  for {}", span(Duration::from_millis(i.since_ms)));
        if !i.vips.is_empty() {
            let vips: Vec<String> = i.vips.iter().map(ToString::to_string).collect();
            let _ = write!(line, "  vips {}", vips.join(","));
        }
        out.push_str(&line);
        out.push('\n');
    }
}

const HEADINGS: [&str; 10] = [
    "BACKEND",
    "ADDRESS",
    "STATE",
    "SINCE",
    "LAST CHECK",
    "WEIGHT",
    "FLOWS",
    "NEW/S",
    "PKTS IN/OUT",
    "BYTES IN/OUT",
];

/// Columns whose values line up on the right (numbers).
const RIGHT_ALIGNED: [bool; 10] = [
    false, false, false, false, false, true, true, true, true, true,
];

fn render_service(out: &mut String, service: &ServiceStatus, now: SystemTime) {
    let _ = writeln!(
        out,
        "service {}  {}:{}  rst-no-backend {}",
        service.name, service.vip, service.port, service.rst_no_backend
    );
    let mut rows = vec![HEADINGS.map(String::from).to_vec()];
    rows.extend(service.backends.iter().map(|b| backend_row(b, now)));
    out.push_str(&table(&rows));
}

fn backend_row(backend: &BackendStatus, now: SystemTime) -> Vec<String> {
    let mut state = backend.summary().to_string();
    match (backend.admin.to_string().as_str(), backend.health.as_str()) {
        ("drain", "down") => state.push_str(" (drain)"),
        (_, "unchecked") if state != "MAINT" => state.push_str(" (unchecked)"),
        _ => {}
    }
    let since_text = backend
        .since_ms
        .map_or_else(|| "start".to_string(), |ms| span(since(now, ms)));
    let last_check = backend.last_check.as_ref().map_or_else(
        || "-".to_string(),
        |c| {
            format!(
                "{} {} {:.1}ms {} ago",
                if c.ok { "ok" } else { "FAIL" },
                c.result,
                c.duration_us as f64 / 1000.0,
                span(since(now, c.at_ms))
            )
        },
    );
    // No path outranks any check result: it is why the backend is DOWN.
    let check = match &backend.unreachable {
        Some(reason) => format!("UNREACHABLE {reason}"),
        None => last_check,
    };
    let t = &backend.traffic;
    vec![
        backend.name.clone(),
        backend.address.clone(),
        state,
        since_text,
        check,
        backend.weight.to_string(),
        backend.active_flows.to_string(),
        format!("{:.1}", backend.new_flows_per_second),
        format!("{}/{}", t.packets_to_backend, t.packets_to_client),
        format!(
            "{}/{}",
            bytes(t.bytes_to_backend).replace(' ', ""),
            bytes(t.bytes_to_client).replace(' ', "")
        ),
    ]
}

/// Rows as aligned columns, two spaces apart, indented by two.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if RIGHT_ALIGNED.get(c).copied().unwrap_or(false) {
                    format!("{cell:>w$}", w = widths[c])
                } else {
                    format!("{cell:<w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::UNIX_EPOCH;

    /// A status as an agent sends it on the control socket.
    fn status_with(vrrp: serde_json::Value) -> NodeStatus {
        let at = |s: u64| 1_700_000_000_000 + s * 1000;
        serde_json::from_value(serde_json::json!({
            "node": "lb1",
            "started_at_ms": at(0),
            "config_version": "3f2a9c1b00de",
            "datapath_events": {"rst_no_flow": 3, "drop_fragment": 0},
            "services": [{
                "name": "horizon", "id": 1, "vip": "192.0.2.10", "port": 443,
                "rst_no_backend": 2,
                "backends": [
                    {"name": "cs1", "id": 1, "address": "198.51.100.11:443", "weight": 1,
                     "health": "up", "admin": "ready", "active_flows": 12,
                     "new_flows_per_second": 0.5, "since_ms": at(3600),
                     "traffic": {"packets_to_backend": 1200, "bytes_to_backend": 153600,
                                 "packets_to_client": 1100, "bytes_to_client": 3565158,
                                 "new_flows": 40},
                     "last_check": {"ok": true, "result": "tls-hello ok",
                                    "duration_us": 1234, "at_ms": at(7198)}},
                    {"name": "cs2", "id": 2, "address": "198.51.100.12:443", "weight": 2,
                     "health": "down", "admin": "drain",
                     "last_check": {"ok": false, "result": "connect refused",
                                    "duration_us": 300, "at_ms": at(7190)}},
                    {"name": "cs3", "id": 3, "address": "198.51.100.13:443", "weight": 1,
                     "health": "unchecked", "admin": "maint"}
                ]
            }],
            "vrrp": vrrp
        }))
        .unwrap()
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 7200 * 1000)
    }

    #[test]
    fn the_table_shows_every_backend_with_state_flows_and_traffic() {
        let text = render(&status_with(serde_json::json!([])), now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "node lb1  up 2h 00m  config 3f2a9c1b00de");
        assert!(lines[1].starts_with("vrrp none"), "{text}");
        assert!(
            text.contains("service horizon  192.0.2.10:443  rst-no-backend 2"),
            "{text}"
        );
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("cs1"),
            [
                "cs1",
                "198.51.100.11:443",
                "UP",
                "1h 00m",
                "ok tls-hello ok 1.2ms 2s ago",
                "1",
                "12",
                "0.5",
                "1200/1100",
                "150.0KiB/3.4MiB"
            ]
        );
        assert_eq!(row("cs2")[2], "DOWN (drain)");
        assert_eq!(row("cs2")[3], "start");
        assert!(row("cs2")[4].starts_with("FAIL connect refused"));
        assert_eq!(row("cs3")[2], "MAINT");
        assert_eq!(row("cs3")[4], "-");
        assert!(
            text.ends_with("data path events: rst_no_flow 3\n"),
            "{text}"
        );
    }

    #[test]
    fn columns_line_up() {
        let text = render(&status_with(serde_json::json!([])), now());
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("BACKEND"))
            .take(4)
            .collect();
        let weight_end = table[0].find("WEIGHT").unwrap() + "WEIGHT".len();
        for line in &table[1..] {
            let before = &line[..weight_end];
            assert!(
                before.ends_with(|c: char| c.is_ascii_digit()),
                "weight not right-aligned under its heading:\n{}",
                table.join("\n")
            );
        }
    }

    #[test]
    fn vrrp_instances_show_state_priority_and_master() {
        let text = render(
            &status_with(serde_json::json!([
                {"name": "lb_vip", "state": "master", "priority": 103, "base_priority": 101,
                 "since_ms": 65000, "vips": ["192.0.2.10"], "transitions": 1,
                 "adverts_sent": 65, "adverts_received": 0, "drops": {}},
                {"name": "other", "state": "backup", "priority": 100, "base_priority": 100,
                 "master": "192.0.2.3", "since_ms": 0, "vips": [], "transitions": 0,
                 "adverts_sent": 0, "adverts_received": 9, "drops": {}}
            ])),
            now(),
        );
        assert!(
            text.contains(
                "vrrp lb_vip MASTER  priority 103 (base 101)  for 1m 05s  vips 192.0.2.10\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("vrrp other BACKUP  priority 100  master 192.0.2.3  for 0s\n"),
            "{text}"
        );
    }
}
