//! `lbd status` on a terminal: the stats page's picture as text, one table
//! per service. Pure: the status (as the agent's JSON answer, which may
//! carry a `vrrp` field) and the current time in, lines out.

use std::{
    fmt::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::admin::{
    agent_link::Snapshot,
    page::{bytes, span},
};

/// The picture of `snapshot` at `now`.
pub fn render(snapshot: &Snapshot, now: SystemTime) -> String {
    let status = &snapshot.status;
    let ago = |ms: u64| {
        let then = UNIX_EPOCH + Duration::from_millis(ms);
        span(now.duration_since(then).unwrap_or_default())
    };
    let mut out = String::new();
    let uptime = if status.started_at_ms == 0 {
        "?".to_string()
    } else {
        ago(status.started_at_ms)
    };
    let _ = writeln!(
        out,
        "node {}, up {uptime}, config {}",
        status.node, status.config_version
    );
    if snapshot.vrrp.is_empty() {
        let _ = writeln!(
            out,
            "VRRP: not configured (this node holds the VIPs itself)"
        );
    }
    for i in &snapshot.vrrp {
        let mut line = format!("VRRP {}: {}", i.name, i.state.to_uppercase());
        if let Some(p) = i.priority {
            let _ = write!(line, ", priority {p}");
        }
        if let Some(master) = &i.master {
            let _ = write!(line, ", master {master}");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "admin states are per node");
    for service in &status.services {
        let _ = writeln!(
            out,
            "\n{} {}:{}  RSTs for lack of a backend: {}",
            service.name, service.vip, service.port, service.rst_no_backend
        );
        let mut rows = vec![
            [
                "BACKEND",
                "ADDRESS",
                "STATE",
                "SINCE",
                "LAST CHECK",
                "WEIGHT",
                "ACTIVE",
                "NEW/S",
                "PACKETS TO/FROM",
                "BYTES TO/FROM",
            ]
            .map(String::from),
        ];
        for b in &service.backends {
            let check = b.last_check.as_ref().map_or("-".to_string(), |c| {
                format!("{} ({} ms)", c.result, c.duration_us / 1000)
            });
            let t = &b.traffic;
            rows.push([
                b.name.clone(),
                b.address.clone(),
                b.summary().to_string(),
                b.since_ms
                    .map_or("start".to_string(), |ms| ago(ms) + " ago"),
                check,
                b.weight.to_string(),
                b.active_flows.to_string(),
                format!("{:.1}", b.new_flows_per_second),
                format!("{}/{}", t.packets_to_backend, t.packets_to_client),
                format!("{}/{}", bytes(t.bytes_to_backend), bytes(t.bytes_to_client)),
            ]);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_has_a_line_with_its_state() {
        let json = serde_json::json!({
            "node": "lb1", "started_at_ms": 1_700_000_000_000u64, "config_version": "abc",
            "services": [{"name": "web", "id": 1, "vip": "192.0.2.10", "port": 80,
                "rst_no_backend": 3,
                "backends": [
                    {"name": "be1", "id": 1, "address": "198.51.100.11:80", "weight": 1,
                     "health": "up", "admin": "drain", "active_flows": 5,
                     "traffic": {"packets_to_backend": 10, "bytes_to_backend": 2048,
                                 "packets_to_client": 9, "bytes_to_client": 100, "new_flows": 4},
                     "last_check": {"ok": true, "result": "tcp connected", "duration_us": 2500,
                                    "at_ms": 1_700_000_000_000u64}},
                    {"name": "be2", "id": 2, "address": "198.51.100.12:80", "weight": 2,
                     "health": "down", "admin": "ready"}
                ]}],
            "vrrp": [{"name": "lb_vip", "state": "master", "priority": 103}]
        });
        let snapshot = Snapshot::from_json(json).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_090);
        let text = render(&snapshot, now);
        assert!(
            text.starts_with("node lb1, up 1m 30s, config abc\n"),
            "{text}"
        );
        assert!(text.contains("VRRP lb_vip: MASTER, priority 103"), "{text}");
        assert!(text.contains("web 192.0.2.10:80  RSTs for lack of a backend: 3"));
        let be1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("be1"))
            .unwrap();
        assert!(
            be1.contains("DRAIN") && be1.contains("tcp connected (2 ms)"),
            "{be1}"
        );
        assert!(
            be1.contains("10/9") && be1.contains("2.0 KiB/100 B"),
            "{be1}"
        );
        let be2 = text
            .lines()
            .find(|l| l.trim_start().starts_with("be2"))
            .unwrap();
        assert!(be2.contains("DOWN"), "{be2}");
    }
}
