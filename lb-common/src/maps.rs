//! Keys and values of the BPF maps. Map names follow Katran's plain style and
//! are listed in [`map_names`].
//!
//! IPv6 will get parallel maps (`services6`, `flows6`, ...) rather than 16-byte
//! address keys everywhere: v4 keys stay small (16-byte flow keys hash faster
//! and cost less memory per entry at millions of flows), and the v6 parse path
//! is a separate branch of the program anyway.

/// Names of the pinned maps, shared by loader, tests and documentation.
pub mod map_names {
    pub const SERVICES: &str = "services";
    pub const BACKENDS: &str = "backends";
    pub const MAGLEV: &str = "maglev";
    pub const FLOWS: &str = "flows";
    pub const HALF_OPEN: &str = "half_open";
    pub const PERSIST: &str = "persist";
    pub const LOCAL_ADDRS: &str = "local_addrs";
    pub const SETTINGS: &str = "settings";
    pub const SERVICE_STATS: &str = "service_stats";
    pub const BACKEND_STATS: &str = "backend_stats";
    pub const REASONS: &str = "reasons";
    /// Per-CPU next-hop cache of the new-flow path; program-private, never
    /// pinned (a new program starts with an empty one), sized like `backends`.
    pub const HOP_CACHE: &str = "hop_cache";
    /// The interfaces the program runs on ([`crate::Iface`]); program-private,
    /// never pinned: the agent writes it before every attach or swap.
    pub const IFACES: &str = "ifaces";
    pub const ALL: [&str; 11] = [
        SERVICES,
        BACKENDS,
        MAGLEV,
        FLOWS,
        HALF_OPEN,
        PERSIST,
        LOCAL_ADDRS,
        SETTINGS,
        SERVICE_STATS,
        BACKEND_STATS,
        REASONS,
    ];
}

/// Compile-time default sizes; the agent overrides each from the config with
/// `EbpfLoader::set_max_entries`.
pub mod default_size {
    pub const SERVICES: u32 = 32;
    pub const BACKENDS: u32 = 1024;
    /// Maglev ring size M: prime, larger than 100x the backends of a service.
    pub const RING: u32 = 65537;
    pub const FLOWS: u32 = 1_048_576;
    pub const HALF_OPEN: u32 = 131_072;
    pub const PERSIST: u32 = 262_144;
    pub const LOCAL_ADDRS: u32 = 256;
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Backend id 0 means "none": an empty Maglev slot or a free `backends` row.
pub const NO_BACKEND: u32 = 0;

/// `services` key: what a client addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IP, network byte order.
    pub vip: u32,
    /// Port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// `ServiceInfo::flags`
pub mod service_flags {
    /// Forward for this service. Cleared on a node that is not VRRP master.
    pub const ACTIVE: u32 = 1 << 0;
    /// Hash the 5-tuple (`scheduler = "flow"`) instead of the source address.
    pub const SCHED_FLOW: u32 = 1 << 1;
    /// Keep a client on its backend for `persist_timeout_ns` (`persist` map).
    pub const PERSISTENCE: u32 = 1 << 2;
}

/// `services` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Index into `service_stats`; also part of the persistence key.
    pub id: u32,
    pub flags: u32,
    /// Source address of translated packets toward backends, network order.
    pub snat_ip: u32,
    /// Index in `maglev` of slot 0 of the live ring. Each service owns two
    /// rings; the agent fills the spare one and then flips this offset, so the
    /// data path never sees a half-built table.
    pub ring_offset: u32,
    /// Ring size M (prime).
    pub ring_size: u32,
    pub _pad: u32,
    pub persist_timeout_ns: u64,
}

/// `BackendInfo::flags`
pub mod backend_flags {
    /// Row in use.
    pub const IN_USE: u16 = 1 << 0;
    /// May take clients whose persistence entry points at it (up, not in
    /// maint). New clients come only through the Maglev ring.
    pub const PERSIST_OK: u16 = 1 << 1;
}

/// `backends` value, indexed by backend id (an array map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendInfo {
    /// Network byte order.
    pub ip: u32,
    /// Network byte order.
    pub port: u16,
    pub flags: u16,
}

/// `flows` / `half_open` key: a 5-tuple exactly as received. Both directions
/// of a translated connection have an entry, so every packet of a known flow
/// (request or reply) costs one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of the packets flowing the other way.
    #[inline(always)]
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// `Flow::direction`
pub mod direction {
    /// Client -> VIP, rewritten to SNAT -> backend.
    pub const TO_BACKEND: u8 = 0;
    /// Backend -> SNAT, rewritten to VIP -> client.
    pub const TO_CLIENT: u8 = 1;
}

/// `Flow::state`
pub mod flow_state {
    /// TCP SYN seen, handshake not complete (lives in `half_open`).
    pub const SYN: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    /// A FIN was seen in one direction at least, but the connection is not
    /// closed yet (half-closed): the `tcp_closing` timeout applies.
    pub const CLOSING: u8 = 3;
    pub const UDP: u8 = 4;
    /// The client-to-backend half-open entry once the backend's SYN-ACK was
    /// forwarded: `Flow::expect_ack` holds the backend's ISN + 1, which the
    /// client's ACK must carry to be promoted.
    pub const SYN_ACKED: u8 = 5;
    /// FIN seen both ways and both acknowledged, or a RST passed: nothing
    /// more is owed, so a new connection may take over the SNAT port at once
    /// and the agent collects the pair after `tcp_closed`.
    pub const CLOSED: u8 = 6;
    /// Both half-open entries of a connection the program accepted with a
    /// SYN cookie: the client's handshake is complete, the backend's is in
    /// progress (the program sent the SYN and completes it itself). The
    /// client's segments are dropped until then; the client-side entry keeps
    /// our ISN (the cookie) in `Flow::expect_ack` and the client's window in
    /// `Flow::seq_offset`.
    pub const SYN_COOKIE: u8 = 7;
}

/// `Flow::fin`: how far the close of a TCP connection got, seen from the
/// direction of one entry. Written only on segments with FIN or RST, or on
/// entries no longer ESTABLISHED, so an open connection pays nothing.
pub mod fin_flags {
    /// This direction sent its FIN.
    pub const SENT: u8 = 1 << 0;
    /// The other direction sent its FIN; `Flow::expect_ack` is the sequence
    /// number right after it.
    pub const PEER_SENT: u8 = 1 << 1;
    /// This direction acknowledged the other direction's FIN.
    pub const PEER_ACKED: u8 = 1 << 2;
}

/// `flows` / `half_open` value: how to rewrite the packets of one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Rewritten source address/port, network order.
    pub nat_src_ip: u32,
    pub nat_dst_ip: u32,
    pub nat_src_port: u16,
    pub nat_dst_port: u16,
    /// Next hop's MAC. Toward a client: the MAC its packets came from (the
    /// client or its router), never looked up. Toward a backend: from
    /// bpf_fib_lookup, refreshed about once a second.
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Egress interface: XDP_TX when it is the ingress one, else redirect.
    pub ifindex: u32,
    pub backend_id: u32,
    pub service_id: u32,
    pub direction: u8,
    pub state: u8,
    /// [`fin_flags`] (TCP).
    pub fin: u8,
    pub _pad: u8,
    /// Host byte order. The acknowledgement number this direction's segments
    /// must reach: the backend's ISN + 1 on a `SYN_ACKED` half-open entry,
    /// the sequence number after the other direction's FIN with
    /// `fin_flags::PEER_SENT`.
    pub expect_ack: u32,
    /// Host byte order. The backend's ISN minus ours (the SYN cookie) on
    /// both entries of a connection accepted with a SYN cookie, 0 on every
    /// other: TO_BACKEND segments get `ack_seq += seq_offset`, TO_CLIENT
    /// segments `seq -= seq_offset`. (A `SYN_COOKIE` half-open entry uses it
    /// otherwise, see there.)
    pub seq_offset: u32,
    /// bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE) of the last packet,
    /// written at most about once per [`REFRESH_NS`], and at every change of
    /// `state` (a closed pair's age counts from its close).
    pub last_seen_ns: u64,
}

/// `hop_cache` value: this CPU's last FIB answer toward one backend, so a
/// burst of new flows does not pay a FIB lookup each. Refreshed as often as an
/// established flow's next hop (every [`REFRESH_NS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopCache {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ifindex: u32,
    /// The SNAT source address the lookup was made with, network order.
    pub src_ip: u32,
    pub expires_ns: u64,
}

/// How long ago a connection of another client must have closed (FIN both
/// ways and acknowledged, or RST) before the data path hands its SNAT port
/// to a new connection: past the backend's first FIN retransmission (initial
/// RTO 1 s, 200 ms at least), in case the final ACK we forwarded was lost.
/// It is what a closed connection costs the port space, so `lbd check`
/// computes the SNAT ceiling from it.
pub const SNAT_TAKEOVER_AGE_NS: u64 = 1_000_000_000;

/// How stale `Flow::last_seen_ns` may get before a packet rewrites it (and
/// re-checks the peer entry and the next-hop MAC).
pub const REFRESH_NS: u64 = 1_000_000_000;

/// `persist` key: a client of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub service_id: u32,
    /// Network byte order.
    pub client_ip: u32,
}

/// `persist` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_seen_ns: u64,
}

/// `local_addrs` value flags: addresses the node owns for the data path.
pub mod local_addr_flags {
    /// A VIP of at least one service: fragments and IP options to it are
    /// dropped, never passed (the host would answer with RSTs).
    pub const VIP: u32 = 1 << 0;
    /// A SNAT source address: traffic to it inside the SNAT port range is ours.
    pub const SNAT: u32 = 1 << 1;
    /// An address that moves with VRRP: while the agent's lease is expired
    /// the program drops traffic to it and ARP requests for it, so a node
    /// whose agent died stops answering for it (the peer has taken over).
    pub const VRRP: u32 = 1 << 2;
    /// An address of the node's interface: never a client's source.
    pub const NODE: u32 = 1 << 3;
    /// The broadcast address of a subnet the interface is connected to:
    /// never a source either.
    pub const BROADCAST: u32 = 1 << 4;
}

/// Rows of `ifaces`: an array indexed by `ifindex % IFACE_SLOTS` (an array
/// lookup costs the per-packet path a few instructions, a hash lookup tens
/// of nanoseconds). A row counts only if its `ifindex` is the frame's.
pub const IFACE_SLOTS: u32 = 64;

/// `ifaces` value: what the program must know of an interface it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    /// 0: an empty row.
    pub ifindex: u32,
    /// The interface's own MAC: the only unicast destination the program
    /// forwards or answers frames to, and the source of what it sends.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `Settings::flags`
pub mod settings_flags {
    /// VRRP mode: the agent's lease (`Settings::lease_deadline_ns`) is
    /// enforced. Without it the deadline is ignored (single node: this node
    /// always holds its VIPs).
    pub const LEASE: u32 = 1 << 0;
    /// `syn_cookies = "always"`: every SYN to a service is answered with a
    /// SYN cookie (tests, or a node known to be under attack).
    pub const SYN_COOKIES_ALWAYS: u32 = 1 << 1;
    /// `syn_cookies = "never"`: no SYN cookie is sent or accepted.
    pub const SYN_COOKIES_NEVER: u32 = 1 << 2;
}

/// `settings[0]`: node-wide knobs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// SNAT source port range, host byte order, inclusive.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// [`settings_flags`].
    pub flags: u32,
    /// The VRRP lease (agent liveness): CLOCK_MONOTONIC nanoseconds until
    /// which the agent vouches for its VIPs. With `settings_flags::LEASE`
    /// set, the lease is expired once the program's clock
    /// (bpf_ktime_get_coarse_ns) is past it; 0 means expired or never set.
    /// Written by the agent's VRRP thread only.
    pub lease_deadline_ns: u64,
    /// `syn_cookies = "auto"` (neither `SYN_COOKIES_*` flag): a CPU answers
    /// SYNs with SYN cookies once more than this many handshakes begun in
    /// the current one-second window are incomplete; 0: never for the rate
    /// (SYNs still get a cookie when no SNAT port is free).
    pub syn_cookie_rate: u32,
    pub _pad: u32,
}

impl Settings {
    /// Whether traffic to `local_addr_flags::VRRP` addresses must be dropped
    /// at time `now_ns` (CLOCK_MONOTONIC).
    #[inline(always)]
    pub const fn lease_expired(&self, now_ns: u64) -> bool {
        self.flags & settings_flags::LEASE != 0 && now_ns > self.lease_deadline_ns
    }
}

/// Per-service and per-backend traffic counters (per-CPU; the agent sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub new_flows: u64,
    /// SYNs answered with a RST because no backend was available.
    pub rst_no_backend: u64,
}

impl TrafficStats {
    pub fn add(&mut self, other: &TrafficStats) {
        self.packets_to_backend += other.packets_to_backend;
        self.bytes_to_backend += other.bytes_to_backend;
        self.packets_to_client += other.packets_to_client;
        self.bytes_to_client += other.bytes_to_client;
        self.new_flows += other.new_flows;
        self.rst_no_backend += other.rst_no_backend;
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)] plain integers and byte arrays with
    // explicit padding fields, valid for any bit pattern.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceInfo {}
    unsafe impl aya::Pod for BackendInfo {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for Persist {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for HopCache {}
    unsafe impl aya::Pod for Iface {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceInfo>(), 32);
        assert_eq!(size_of::<BackendInfo>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<Flow>(), 56);
        assert_eq!(size_of::<PersistKey>(), 8);
        assert_eq!(size_of::<Persist>(), 16);
        assert_eq!(size_of::<Settings>(), 24);
        assert_eq!(size_of::<TrafficStats>(), 48);
        assert_eq!(size_of::<HopCache>(), 32);
    }

    #[test]
    fn lease_is_enforced_only_with_the_flag() {
        let mut s = Settings {
            lease_deadline_ns: 1_000,
            ..Settings::default()
        };
        assert!(!s.lease_expired(5_000), "no LEASE flag: deadline ignored");
        s.flags = settings_flags::LEASE;
        assert!(!s.lease_expired(999));
        assert!(
            !s.lease_expired(1_000),
            "expired only once past the deadline"
        );
        assert!(s.lease_expired(1_001));
        s.lease_deadline_ns = 0;
        assert!(s.lease_expired(1), "a zero deadline is an expired lease");
    }

    #[test]
    fn reversed_swaps_ends() {
        let k = FlowKey {
            src_ip: 1,
            dst_ip: 2,
            src_port: 3,
            dst_port: 4,
            proto: 6,
            _pad: [0; 3],
        };
        let r = k.reversed();
        assert_eq!(
            (r.src_ip, r.dst_ip, r.src_port, r.dst_port, r.proto),
            (2, 1, 4, 3, 6)
        );
        assert_eq!(r.reversed(), k);
    }
}
