//! The nftables configuration the bench compares lbd with: what an operator
//! would set up in the balancer's namespace without lb. DNAT of the VIP to
//! the backends chosen by a hash of the client's address (nftables'
//! equivalent of `balance source`, so one busy client lands on one backend
//! as with lbd), masquerade toward the backends (full NAT, as lbd does), and
//! conntrack underneath, at its defaults.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The table's name in the balancer's namespace.
pub const TABLE: &str = "lb_peer_bench";

/// The ruleset: one atomic transaction that replaces the table if present.
/// The backends listen on the VIP's port, so DNAT keeps the port.
pub fn ruleset(vip: SocketAddrV4, backends: &[Ipv4Addr], backend_port: u16, dev: &str) -> String {
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{i} : {addr}"))
        .collect();
    let set: Vec<String> = backends.iter().map(Ipv4Addr::to_string).collect();
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {vip_ip} tcp dport {vip_port} dnat to jhash ip saddr mod {n} map {{ {map} }}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{dev}\" ip daddr {{ {set} }} tcp dport {backend_port} masquerade\n\
         \t}}\n\
         }}\n",
        vip_ip = vip.ip(),
        vip_port = vip.port(),
        n = backends.len(),
        map = map.join(", "),
        set = set.join(", "),
    )
}

/// Removes the table (a missing one is fine).
pub fn removal() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_hashes_the_source_over_every_backend() {
        let text = ruleset(
            "192.0.2.10:80".parse().unwrap(),
            &[
                Ipv4Addr::new(198, 51, 100, 11),
                Ipv4Addr::new(198, 51, 100, 12),
            ],
            80,
            "eth0",
        );
        assert!(
            text.contains(
                "ip daddr 192.0.2.10 tcp dport 80 dnat to jhash ip saddr mod 2 map { 0 : 198.51.100.11, 1 : 198.51.100.12 }"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "oifname \"eth0\" ip daddr { 198.51.100.11, 198.51.100.12 } tcp dport 80 masquerade"
            ),
            "{text}"
        );
        assert!(text.starts_with("table ip lb_peer_bench\ndelete table ip lb_peer_bench\n"));
    }
}
