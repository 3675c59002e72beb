//! The SNAT ceiling of a config: how many new connections per second one
//! backend can take before the data path runs out of SNAT ports, and the
//! warnings `lbd check` prints when that is below what the config states.
//!
//! A SNAT port only has to be unique per (backend address and port, SNAT
//! address, protocol), so the port range is spent per backend. With
//! `scheduler = "source"` one busy client address (an office NAT, a mail
//! relay) lands on one backend, so the per-backend figure is the one that
//! matters. A TCP connection's port is free for another client
//! [`SNAT_TAKEOVER_AGE_NS`] after it closed by FIN both ways or RST (for the
//! same client at once: its new SYN is newer than anything the backend's
//! TIME_WAIT holds, so the ceiling is what many clients sharing a backend
//! get); a UDP flow's only when it has been idle for the service's `udp`
//! timeout. Pure: the numbers come from the config alone.

use std::time::Duration;

use lb_common::SNAT_TAKEOVER_AGE_NS;

use super::schema::{Config, Protocol, Service};

/// Below this many new connections per second per backend, one busy client
/// address can use up the port range by itself; `lbd check` warns even when
/// the service states no `connection_rate`.
pub const CEILING_FLOOR: u64 = 1_000;

/// The SNAT ceiling of one service on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ceiling {
    pub service: String,
    pub protocol: Protocol,
    pub node: String,
    pub ports: u64,
    /// SNAT addresses the service's flows to one backend can use.
    pub addresses: u64,
    /// How long a finished connection keeps its port.
    pub hold: Duration,
    /// New connections per second to one backend, sustained.
    pub per_backend: u64,
    pub backends: usize,
    /// The service's `connection_rate`, if stated.
    pub stated: Option<u32>,
}

impl Ceiling {
    /// Why this ceiling deserves a warning, if it does.
    pub fn warning(&self) -> Option<String> {
        let below = match self.stated {
            Some(rate) if self.per_backend < u64::from(rate) => {
                format!("below its connection_rate of {rate}/s")
            }
            _ if self.per_backend < CEILING_FLOOR => {
                format!("below {CEILING_FLOOR}/s, so one busy client address can use up the ports")
            }
            _ => return None,
        };
        let remedy = match self.protocol {
            Protocol::Tcp => format!("widen node.{}.snat_ports", self.node),
            Protocol::Udp => format!(
                "widen node.{}.snat_ports or shorten service.{}.timeouts.udp",
                self.node, self.service
            ),
        };
        Some(format!(
            "service.{} on node {}: SNAT ceiling {}/s per backend is {below}; {remedy}",
            self.service, self.node, self.per_backend
        ))
    }
}

impl std::fmt::Display for Ceiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.protocol {
            Protocol::Tcp => "a closed connection's port is reused after",
            Protocol::Udp => "a flow's port is reused after its udp timeout,",
        };
        write!(
            f,
            "{} ({}) on {}: {} ports x {} address{} / {} ({why} {}) = {}/s per backend, {}/s over {} backend{}",
            self.service,
            self.protocol,
            self.node,
            self.ports,
            self.addresses,
            if self.addresses == 1 { "" } else { "es" },
            seconds(self.hold),
            seconds(self.hold),
            self.per_backend,
            self.per_backend * self.backends as u64,
            self.backends,
            if self.backends == 1 { "" } else { "s" },
        )
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// How long a finished flow of `service` keeps its SNAT port.
pub fn port_hold(service: &Service) -> Duration {
    match service.protocol {
        Protocol::Tcp => Duration::from_nanos(SNAT_TAKEOVER_AGE_NS),
        Protocol::Udp => service.timeouts.udp,
    }
}

/// Every service's ceiling on every node, in config order.
pub fn ceilings(config: &Config) -> Vec<Ceiling> {
    let mut out = Vec::new();
    for service in &config.services {
        for (node_name, node) in &config.nodes {
            let ports = u64::from(node.snat_ports.max - node.snat_ports.min) + 1;
            let addresses = 1;
            let hold = port_hold(service);
            // Whole seconds or more; a zero hold cannot come from the config.
            let hold_ms = hold.as_millis().max(1) as u64;
            out.push(Ceiling {
                service: service.name.clone(),
                protocol: service.protocol,
                node: node_name.clone(),
                ports,
                addresses,
                hold,
                per_backend: ports * addresses * 1000 / hold_ms,
                backends: service.backends.len(),
                stated: service.connection_rate,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(service_extra: &str, range: &str, protocol: &str) -> Config {
        let text = format!(
            r#"
[node.lb1]
interface = "eth0"
snat_ports = "{range}"

[[service]]
name = "web"
vip = "192.0.2.10"
port = 443
protocol = "{protocol}"
{service_extra}

[[service.backend]]
name = "be1"
address = "198.51.100.11:443"

[[service.backend]]
name = "be2"
address = "198.51.100.12:443"
"#
        );
        parse(&text, "test.toml").expect("valid config")
    }

    #[test]
    fn tcp_ceiling_is_ports_over_the_takeover_age() {
        let c = &ceilings(&config("", "20000-29999", "tcp"))[0];
        assert_eq!(c.ports, 10_000);
        assert_eq!(c.hold, Duration::from_secs(1));
        assert_eq!(c.per_backend, 10_000);
        assert_eq!(c.warning(), None);
        assert_eq!(
            c.to_string(),
            "web (tcp) on lb1: 10000 ports x 1 address / 1 s (a closed connection's port is \
             reused after 1 s) = 10000/s per backend, 20000/s over 2 backends"
        );
    }

    #[test]
    fn udp_ceiling_follows_the_udp_timeout() {
        let c = &ceilings(&config("", "20000-29999", "udp"))[0];
        assert_eq!(c.hold, Duration::from_secs(30));
        assert_eq!(c.per_backend, 333);
        let warning = c.warning().expect("333/s is below the floor");
        assert!(
            warning.contains("shorten service.web.timeouts.udp"),
            "{warning}"
        );
    }

    #[test]
    fn a_stated_rate_above_the_ceiling_warns() {
        let c = &ceilings(&config("connection_rate = 1500", "20000-20999", "tcp"))[0];
        assert_eq!(c.per_backend, 1000);
        assert_eq!(
            c.warning().as_deref(),
            Some(
                "service.web on node lb1: SNAT ceiling 1000/s per backend is below its \
                 connection_rate of 1500/s; widen node.lb1.snat_ports"
            )
        );
        let c = &ceilings(&config("connection_rate = 1000", "20000-20999", "tcp"))[0];
        assert_eq!(c.warning(), None);
    }

    #[test]
    fn a_small_range_warns_without_a_stated_rate() {
        let c = &ceilings(&config("", "20000-20499", "tcp"))[0];
        assert_eq!(c.per_backend, 500);
        assert!(c.warning().is_some());
    }

    #[test]
    fn connection_rate_out_of_range_names_the_key() {
        let text = r#"
[node.lb1]
interface = "eth0"
snat_ports = "20000-29999"

[[service]]
name = "web"
vip = "192.0.2.10"
port = 443
connection_rate = 0

[[service.backend]]
name = "be1"
address = "198.51.100.11:443"
"#;
        let errors = parse(text, "test.toml")
            .expect_err("0 is refused")
            .to_string();
        assert!(
            errors.contains("test.toml:10") && errors.contains("service.web.connection_rate"),
            "{errors}"
        );
    }
}
