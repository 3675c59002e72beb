//! Why a packet was passed to the host, dropped, or answered by the program
//! itself: the index into the per-CPU `reasons` counter array. Forwarded
//! packets are counted per service and backend instead (`TrafficStats`).

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $label:literal;)*) => {
        $($(#[$doc])* pub const $name: u32 = $value;)*
        /// Number of reasons: the size of the `reasons` map.
        pub const COUNT: u32 = [$($value),*].len() as u32;
        /// Stable snake_case label of a reason, for logs, JSON and metrics.
        pub const fn label(reason: u32) -> &'static str {
            match reason {
                $($value => $label,)*
                _ => "unknown",
            }
        }
    };
}

reasons! {
    /// Not IPv4 (ARP, IPv6, LLDP...): the host's business.
    PASS_NOT_IPV4 = 0, "pass_not_ipv4";
    /// IPv4 but neither for a VIP:port we serve nor a reply to one of our flows.
    PASS_NOT_OURS = 1, "pass_not_ours";
    /// Frame shorter than its Ethernet (or 802.1Q) header.
    DROP_MALFORMED_L2 = 2, "drop_malformed_l2";
    /// Truncated IPv4 header, IHL < 5 or beyond the packet, total length
    /// shorter than the header or longer than the frame.
    DROP_MALFORMED_IP = 3, "drop_malformed_ip";
    /// Truncated TCP/UDP/ICMP header, TCP data offset < 5 or beyond the
    /// packet, bad UDP length.
    DROP_MALFORMED_L4 = 4, "drop_malformed_l4";
    /// A fragment addressed to a VIP or SNAT address (no ports to steer by).
    DROP_FRAGMENT = 5, "drop_fragment";
    /// IP options on a packet to a VIP or SNAT address.
    DROP_IP_OPTIONS = 6, "drop_ip_options";
    /// For a service whose VIP is not active on this node.
    DROP_INACTIVE = 7, "drop_inactive";
    /// A TCP SYN with no backend available: answered with a RST.
    TX_RST_NO_BACKEND = 8, "tx_rst_no_backend";
    /// A UDP datagram with no backend available.
    DROP_NO_BACKEND = 9, "drop_no_backend";
    /// A mid-stream TCP packet for a VIP:port with no flow: answered with a RST.
    TX_RST_NO_FLOW = 10, "tx_rst_no_flow";
    /// A mid-stream RST with no flow (never answer a RST with a RST).
    DROP_RST_NO_FLOW = 11, "drop_rst_no_flow";
    /// To a SNAT address inside the SNAT port range but matching no flow.
    DROP_REPLY_NO_FLOW = 12, "drop_reply_no_flow";
    /// An ICMP error to a VIP/SNAT address quoting no flow of ours.
    DROP_ICMP_NO_FLOW = 13, "drop_icmp_no_flow";
    /// bpf_fib_lookup found no neighbour entry for the next hop.
    DROP_FIB_NO_NEIGH = 14, "drop_fib_no_neigh";
    /// bpf_fib_lookup failed otherwise (no route, forwarding disabled...).
    DROP_FIB_FAILED = 15, "drop_fib_failed";
    /// Flow table insert failed.
    DROP_TABLE_FULL = 16, "drop_table_full";
    /// No free SNAT port found in the bounded number of tries.
    DROP_SNAT_EXHAUSTED = 17, "drop_snat_exhausted";
    /// A Maglev slot or flow pointed at a backend row not in use.
    DROP_BAD_BACKEND = 18, "drop_bad_backend";
    /// An ICMP error translated back along its flow.
    TX_ICMP_TRANSLATED = 19, "tx_icmp_translated";
    /// A SYN for a flow already opening (a retransmission, or two CPUs racing
    /// on one SYN): the packet followed the existing entry.
    SYN_ALREADY_OPENING = 20, "syn_already_opening";
    /// To an address that moves with VRRP while the agent's lease is expired
    /// (the agent died; the peer holds the VIPs now).
    LEASE_EXPIRED = 21, "lease_expired";
    /// An ARP request for an address that moves with VRRP while the agent's
    /// lease is expired: the host must not answer for it any more.
    ARP_LEASE_EXPIRED = 22, "arp_lease_expired";
    /// To a unicast MAC that is not the interface's: another host's frame
    /// (seen in promiscuous mode, or a macvlan/bridge port's). Never
    /// forwarded or answered; the host hands it to its owner or drops it.
    PASS_MAC_OTHER_HOST = 23, "pass_mac_other_host";
    /// To a broadcast or multicast MAC, not for a VIP or SNAT address (VRRP
    /// adverts, mDNS, DHCP...): the host's business, never forwarded.
    PASS_MAC_GROUP = 24, "pass_mac_group";
    /// To a broadcast or multicast MAC but for a VIP or SNAT address: a host's
    /// TCP drops these, and we never forward one.
    DROP_MAC_GROUP = 25, "drop_mac_group";
    /// On an interface the agent has not described in `ifaces` (no MAC to
    /// check against): handed to the host untouched.
    PASS_UNKNOWN_IFACE = 26, "pass_unknown_iface";
    /// From a broadcast, multicast or all-zero source MAC: no real sender.
    DROP_BAD_SOURCE_MAC = 27, "drop_bad_source_mac";
    /// IPv4 header checksum wrong.
    DROP_IP_CHECKSUM = 28, "drop_ip_checksum";
    /// Would leave with TTL 0: arrived with TTL 0 or 1 (router semantics).
    DROP_TTL_EXPIRED = 29, "drop_ttl_expired";
    /// From a source no host may use: 0/8, 127/8, 224/4, 240/4, or an
    /// address of this node (VIP, SNAT, interface, subnet broadcast).
    DROP_MARTIAN_SOURCE = 30, "drop_martian_source";
    /// A TCP flag combination a host's TCP discards (SYN with FIN or RST;
    /// none of SYN, ACK, RST).
    DROP_TCP_FLAGS = 31, "drop_tcp_flags";
    /// A segment we would answer with a RST whose TCP checksum is wrong (a
    /// host's TCP drops it unanswered), or too long to verify.
    DROP_TCP_CHECKSUM = 32, "drop_tcp_checksum";
    /// An ICMP error we would translate whose ICMP checksum is wrong.
    DROP_ICMP_CHECKSUM = 33, "drop_icmp_checksum";
    /// A client segment on a handshake in progress that does not complete
    /// it: before the backend's SYN-ACK passed, or whose ACK number is not
    /// the backend's ISN + 1 (a blind spoof). Dropped, never promoted.
    DROP_HANDSHAKE_ACK = 34, "drop_handshake_ack";
    /// A new connection took over the SNAT port of a closed one (FIN both
    /// ways and acknowledged, or RST) before the agent collected it.
    SNAT_PORT_TAKEN_OVER = 35, "snat_port_taken_over";
    /// A SYN answered by the program itself with a SYN cookie SYN-ACK (SYN
    /// rate over `syn_cookie_rate`, no SNAT port free, or
    /// `syn_cookies = "always"`): no entry, no SNAT port.
    TX_SYN_COOKIE = 36, "tx_syn_cookie";
    /// A client ACK carrying a valid SYN cookie: the backend connection was
    /// opened for it.
    SYN_COOKIE_OK = 37, "syn_cookie_ok";
    /// A SYN cookie handshake that cannot go on: the backend answered the
    /// program's SYN with something else than its SYN-ACK or RST (or with a
    /// wrong ACK number), or the kernel makes no cookies. Dropped.
    DROP_SYN_COOKIE_BAD = 38, "drop_syn_cookie_bad";
    /// The backend refused (RST) the connection a SYN cookie stood for: the
    /// client, already connected in its view, was sent a RST.
    TX_RST_COOKIE_REFUSED = 39, "tx_rst_cookie_refused";
    /// A SYN refused because `half_open` is full: as many handshakes are in
    /// progress as it holds (a SYN flood, or `[limits] half_open` too small
    /// for the rate times `tcp_syn`). Handshakes never evict each other.
    DROP_HALF_OPEN_FULL = 40, "drop_half_open_full";
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_unique_and_dense() {
        let mut seen = [""; super::COUNT as usize];
        for r in 0..super::COUNT {
            let l = super::label(r);
            assert_ne!(l, "unknown", "reason {r} has no label");
            assert!(!seen.contains(&l), "duplicate label {l}");
            seen[r as usize] = l;
        }
        assert_eq!(super::label(super::COUNT), "unknown");
    }
}
