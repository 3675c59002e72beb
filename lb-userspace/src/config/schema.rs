//! The validated configuration: typed values only, every default resolved.
//! Nothing here can be out of range; `parse` builds it only when the file had
//! no error at all.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lb_common::default_size;

/// The whole file: identical on both nodes, with the per-node values under
/// `[node.NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub nodes: BTreeMap<String, Node>,
    pub limits: Limits,
    pub services: Vec<Service>,
}

/// What differs between the two load-balancer hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The device the XDP program attaches to.
    pub interface: String,
    pub xdp_mode: XdpMode,
    /// Source ports this node hands out when it SNATs; the nodes' ranges are
    /// disjoint so that flow-state sync can never see one port twice.
    pub snat_ports: PortRange,
}

/// How the XDP program is attached. Native is asked for explicitly: letting
/// the kernel choose silently falls back to the slow generic path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

/// An inclusive range of ports, `min <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// How many ports the range holds (at least 1).
    pub fn len(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    /// Never true for a range built by the parser; present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.max < self.min
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// BPF map sizes. Defaults are the compiled-in sizes of lb-common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Entries of the services map, and number of Maglev rings.
    pub max_services: u32,
    /// Rows of the backends map; ids run 1..max_backends (0 means "none").
    pub max_backends: u32,
    /// Maglev ring size M (prime).
    pub maglev_size: u32,
    /// Established flow entries; each connection takes two (both directions).
    pub flows: u32,
    /// TCP handshakes in progress, kept apart so a SYN flood cannot evict
    /// established flows.
    pub half_open: u32,
    /// Client -> backend persistence entries.
    pub persistence: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: default_size::SERVICES,
            max_backends: default_size::BACKENDS,
            maglev_size: default_size::RING,
            flows: default_size::FLOWS,
            half_open: default_size::HALF_OPEN,
            persistence: default_size::PERSIST,
        }
    }
}

/// One virtual service: what HAProxy calls a tcp-mode frontend plus its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    pub scheduler: Scheduler,
    /// Source address of the packets sent to the backends; the VIP unless set.
    pub snat_address: Ipv4Addr,
    /// How long a client sticks to its backend after its last flow; `None`
    /// means no persistence table (the hash alone decides).
    pub persistence_timeout: Option<Duration>,
    pub timeouts: Timeouts,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number the data path keys on.
    pub fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::IPPROTO_TCP,
            Protocol::Udp => lb_common::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Forwarding mode. Only full NAT exists so far; `dsr` is planned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    #[default]
    Nat,
}

/// What the Maglev lookup hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// The client address only, like HAProxy's `balance source`: a client
    /// keeps its backend across connections.
    #[default]
    Source,
    /// The 5-tuple: spreads one client's connections over the backends.
    Flow,
}

/// Idle timeouts after which the agent collects a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: Duration,
    /// After a FIN or RST was seen.
    pub tcp_closing: Duration,
    /// A handshake that has not completed.
    pub tcp_syn: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_closing: Duration::from_secs(30),
            tcp_syn: Duration::from_secs(10),
            udp: Duration::from_secs(30),
        }
    }
}

/// One real server behind a service (HAProxy's `server` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddrV4,
    /// Share of new clients, 0..=256; 0 takes no new clients but keeps its
    /// flows and persistent clients.
    pub weight: u32,
}
