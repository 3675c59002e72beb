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
    /// `[[vrrp]]` instances; empty: single node, the VIPs are always held.
    pub vrrp: Vec<Vrrp>,
    /// `[admin]`: no stats page when absent.
    pub admin: Option<Admin>,
    /// `[[redirect]]`: http-to-https redirect listeners.
    pub redirects: Vec<Redirect>,
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
    /// When the XDP program answers SYNs itself with SYN cookies.
    pub syn_cookies: SynCookies,
}

/// `syn_cookies`: when SYNs to a service are answered with a SYN cookie
/// instead of opening a handshake (half-open entry, SNAT port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SynCookies {
    /// When a CPU sees handshakes left incomplete faster than the SNAT range
    /// can hold them (`agent/state.rs`, `syn_cookie_rate`), or no SNAT port is
    /// free.
    Auto,
    /// For every SYN.
    Always,
    /// Never; a SYN finding no SNAT port is dropped. The default until a
    /// cookie connection survives a backend that still holds its SNAT port
    /// in TIME_WAIT (README, "SYN floods").
    #[default]
    Never,
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
    /// New connections per second the service must take from one client
    /// address (`connection_rate`): the worst case of `scheduler =
    /// "source"`, where one office NAT or relay lands on one backend.
    /// `lbd check` warns when the SNAT ceiling is below it.
    pub connection_rate: Option<u32>,
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
    /// Half-closed: a FIN was seen one way, the other way is still open.
    pub tcp_closing: Duration,
    /// Closed: FIN both ways and acknowledged, or a RST. The data path may
    /// hand the SNAT port to a new connection before this; it is how long
    /// the pair stays to carry late retransmissions.
    pub tcp_closed: Duration,
    /// A handshake that has not completed.
    pub tcp_syn: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_closing: Duration::from_secs(30),
            tcp_closed: Duration::from_secs(2),
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
    /// The service's `[service.check]` with this backend's `check` keys laid
    /// over it; `None` when neither is written: the backend is never checked
    /// and always counts as UP (HAProxy's `server` without `check`).
    pub check: Option<HealthCheck>,
}

/// How one backend's health is checked, every default resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Request path of http and https checks.
    pub path: String,
    /// Statuses that count as healthy (http and https).
    pub expect: Vec<StatusMatch>,
    /// Host header of http and https checks; the backend's address when unset.
    pub host: Option<String>,
    /// Server name sent in the TLS ClientHello (tls-hello and https); none
    /// when unset, since the backend is known by its address.
    pub sni: Option<String>,
    /// Verify the certificate of an https check against the web PKI roots.
    pub verify: bool,
    /// Between checks while the backend is fully UP.
    pub inter: Duration,
    /// While it is changing state; `inter` when unset.
    pub fastinter: Option<Duration>,
    /// While it is fully DOWN; `inter` when unset.
    pub downinter: Option<Duration>,
    /// Consecutive successes that bring a DOWN backend UP.
    pub rise: u32,
    /// Consecutive failures that take an UP backend DOWN.
    pub fall: u32,
    /// Bound on one whole check (connect, handshake, answer).
    pub timeout: Duration,
    /// Port checked instead of the backend's own.
    pub port: Option<u16>,
}

impl HealthCheck {
    /// HAProxy's defaults: `inter 2s rise 2 fall 3`, and the timeout of one
    /// check equal to `inter`.
    pub const DEFAULT_INTER: Duration = Duration::from_secs(2);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_PATH: &str = "/";

    /// A check of `kind` with every other setting at its default.
    pub fn new(kind: CheckKind) -> Self {
        HealthCheck {
            kind,
            path: Self::DEFAULT_PATH.to_string(),
            expect: StatusMatch::DEFAULT.to_vec(),
            host: None,
            sni: None,
            verify: false,
            inter: Self::DEFAULT_INTER,
            fastinter: None,
            downinter: None,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
            timeout: Self::DEFAULT_TIMEOUT,
            port: None,
        }
    }
}

/// What a health check does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// The TCP connection is accepted.
    #[default]
    Tcp,
    /// A TLS ClientHello is answered by a ServerHello (HAProxy's
    /// `option ssl-hello-chk`).
    TlsHello,
    /// `GET path` over plain HTTP/1.1 answers an expected status.
    Http,
    /// The same over TLS.
    Https,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::TlsHello => "tls-hello",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of `expect`: an exact status, or a class like `2xx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusMatch {
    Code(u16),
    /// The hundreds digit, 1..=5.
    Class(u8),
}

impl StatusMatch {
    /// Healthy unless told otherwise: success and redirection.
    pub const DEFAULT: [StatusMatch; 2] = [StatusMatch::Class(2), StatusMatch::Class(3)];

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => code == status,
            StatusMatch::Class(class) => status / 100 == u16::from(class),
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(code) => write!(f, "{code}"),
            StatusMatch::Class(class) => write!(f, "{class}xx"),
        }
    }
}

/// One `[[vrrp]]` instance: keepalived's `vrrp_instance`, identical on both
/// nodes; what differs per node (priority, unicast source) is a map keyed by
/// node name inside the instance, so the instance reads as one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vrrp {
    pub name: String,
    /// `None`: the node's `interface`.
    pub interface: Option<String>,
    pub virtual_router_id: u8,
    /// Base priority per node name (1..=255; 255 = address owner).
    pub priority: BTreeMap<String, u8>,
    pub advert_interval: Duration,
    pub version: VrrpVersion,
    pub auth: Option<VrrpAuth>,
    /// Empty: multicast to 224.0.0.18. A node sends to every entry except
    /// its own `unicast_src`.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Source address per node name; set for every node when unicast.
    pub unicast_src: BTreeMap<String, Ipv4Addr>,
    pub vips: Vec<Ipv4Addr>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub garp: Garp,
    pub track: Vec<Track>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpVersion {
    V2,
    V3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthType {
    Pass,
    Ah,
}

/// keepalived's `authentication { auth_type; auth_pass }` (VRRPv2 only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpAuth {
    pub kind: AuthType,
    /// 1..=8 bytes, as keepalived truncates longer ones.
    pub password: String,
}

/// Gratuitous ARPs on becoming master (keepalived's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Garp {
    /// `vrrp_garp_master_repeat`: announcements per VIP in a burst.
    pub count: u32,
    /// `vrrp_garp_interval`: between announcements of a burst.
    pub interval: Duration,
    /// `vrrp_garp_master_delay`: a second burst this long after the first;
    /// zero for none.
    pub delay: Duration,
}

impl Default for Garp {
    fn default() -> Self {
        Garp {
            count: 5,
            interval: Duration::ZERO,
            delay: Duration::from_secs(5),
        }
    }
}

/// A tracked condition and its keepalived-signed weight (never 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub condition: TrackCondition,
    pub weight: i16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackCondition {
    /// The XDP program is attached to the node's interface.
    XdpAttached,
    /// The named service has at least one backend up.
    ServiceUp { service: String },
    /// `command` run every `interval` exits 0.
    Script { command: String, interval: Duration },
}

/// `[admin]`: the stats/admin page, its JSON API and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Bound with IP_FREEBIND, so it may be a VIP this node does not hold yet.
    pub listen: SocketAddrV4,
    /// How often the page reloads itself.
    pub refresh: Duration,
    pub users: Vec<AdminUser>,
}

/// One `[[admin.user]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    pub role: Role,
    /// An argon2 PHC string (`lbd passwd` prints one); checked to parse.
    pub password_hash: String,
}

/// What a user of the admin page may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sees everything and sets ready, drain or maint.
    Admin,
    /// Sees everything, changes nothing.
    Readonly,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
        }
    }
}

/// One `[[redirect]]`: answers every HTTP request with a 301 to https.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub listen: SocketAddrV4,
}
