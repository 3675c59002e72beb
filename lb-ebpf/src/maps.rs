//! The program's maps. Sizes here are defaults: the agent sets each from the
//! config (`EbpfLoader::set_max_entries`) and pins them under the node's
//! directory. BTF maps, so `bpftool map dump` prints fields.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    BackendInfo, Flow, FlowKey, Persist, PersistKey, ServiceInfo, ServiceKey, Settings,
    TrafficStats, default_size as size, reason,
};

/// VIP:port:proto -> service.
#[btf_map(name = "services")]
pub static SERVICES: HashMap<ServiceKey, ServiceInfo, { size::SERVICES as usize }> = HashMap::new();

/// Backend id -> address and state.
#[btf_map(name = "backends")]
pub static BACKENDS: Array<BackendInfo, { size::BACKENDS as usize }> = Array::new();

/// Maglev rings: two per service (live and spare), M slots each, of backend ids.
#[btf_map(name = "maglev")]
pub static MAGLEV: Array<u32, { (size::SERVICES * 2 * size::RING) as usize }> = Array::new();

/// Established flows, both directions. Shared (not per-CPU): a reply may land
/// on another CPU than its request.
#[btf_map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, Flow, { size::FLOWS as usize }> = LruHashMap::new();

/// TCP handshakes in progress, apart so a SYN flood cannot evict `flows`.
/// A plain preallocated hash, not LRU: an insert takes an element from a
/// per-CPU free list in constant time, where an LRU refills its per-CPU
/// cache 128 elements at a time (~20 us every 64th SYN, the p99 of a new
/// connection), and a handshake must never evict another one: when the
/// table is full the SYN is refused (`drop_half_open_full`) until the
/// agent collects handshakes older than `tcp_syn`.
#[btf_map(name = "half_open")]
pub static HALF_OPEN: HashMap<FlowKey, Flow, { size::HALF_OPEN as usize }> = HashMap::new();

/// Client -> backend, per service with persistence.
#[btf_map(name = "persist")]
pub static PERSIST: LruHashMap<PersistKey, Persist, { size::PERSIST as usize }> = LruHashMap::new();

/// Addresses the node owns for the data path (VIPs, SNAT sources).
#[btf_map(name = "local_addrs")]
pub static LOCAL_ADDRS: HashMap<u32, u32, { size::LOCAL_ADDRS as usize }> = HashMap::new();

/// Node-wide settings, one row.
#[btf_map(name = "settings")]
pub static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map(name = "service_stats")]
pub static SERVICE_STATS: PerCpuArray<TrafficStats, { size::SERVICES as usize }> =
    PerCpuArray::new();

#[btf_map(name = "backend_stats")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats, { size::BACKENDS as usize }> =
    PerCpuArray::new();

/// Per-reason counters for everything not forwarded along a flow.
#[btf_map(name = "reasons")]
pub static REASONS: PerCpuArray<u64, { reason::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU next hop per backend id (see `HopCache`). Never pinned.
#[btf_map(name = "hop_cache")]
pub static HOP_CACHE: PerCpuArray<lb_common::HopCache, { size::BACKENDS as usize }> =
    PerCpuArray::new();

/// The interfaces the program runs on, at `ifindex % IFACE_SLOTS`: the MAC
/// the acceptance policy checks frames against. Never pinned: the agent
/// writes it before it attaches (or swaps in) the program.
#[btf_map(name = "ifaces")]
pub static IFACES: Array<lb_common::Iface, { lb_common::IFACE_SLOTS as usize }> = Array::new();

/// Per-CPU working memory for the new-flow path: the verifier allows 512
/// bytes of stack across a call chain, and a FIB request plus two flow
/// entries do not fit beside the parsed packet. Never pinned.
#[repr(C)]
pub struct Scratch {
    pub fib: aya_ebpf::bindings::bpf_fib_lookup,
    pub fwd: lb_common::Flow,
    pub rev: lb_common::Flow,
    /// The headers handed to the SYN cookie helpers (`syncookie.rs`): a copy,
    /// because a variable-length TCP header in the packet cannot be proven
    /// in bounds to the verifier, and the ACK's copy is edited.
    pub cookie_ip: lb_common::headers::Ipv4Hdr,
    pub cookie_tcp: [u32; 15],
    /// What a valid cookie's ACK tells `open` (`syncookie::check_ack`):
    /// the MSS the cookie encodes, for the SYN to the backend; the state
    /// (`flow_state::SYN_COOKIE`), our ISN and the client's window, for the
    /// half-open entry. `open` clears the last three, so they are 0 for
    /// every other packet.
    pub cookie_mss: u16,
    pub cookie_state: u8,
    pub _pad: u8,
    pub cookie_isn: u32,
    pub cookie_window: u32,
    /// This CPU's handshakes of the current one-second window not completed
    /// (yet): SYNs to services, less the ACKs that completed one (the SYN
    /// cookie trigger, `syncookie::pressure`).
    pub window_pending: u32,
    pub window_start_ns: u64,
}

#[btf_map(name = "scratch")]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();
