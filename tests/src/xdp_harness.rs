//! Runs the XDP program `lb` on crafted frames with BPF_PROG_TEST_RUN, inside
//! a throwaway network namespace whose routes and neighbours its
//! bpf_fib_lookup sees.
//!
//! Topology of the namespace `lbt-xdp-<pid>-<n>` (documentation ranges only):
//! - `eth0` (MAC [`LB_MAC`]): 192.0.2.2/24 and 198.51.100.2/24, the clients'
//!   and the backends' side; permanent neighbours for the backends
//!   198.51.100.11/12/13; 198.51.100.14 has no neighbour entry.
//! - `eth1` (MAC [`LB_MAC1`]): 203.0.113.2/25, a neighbour 203.0.113.21 (a
//!   backend reached through another device, so forwarding there redirects);
//!   203.0.113.200 has no route at all.
//!
//! Each harness loads its own copy of the program and maps (loading takes a
//! few tens of milliseconds), so cases never see each other's state.

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    BackendInfo, Flow, FlowKey, Iface, Persist, PersistKey, ServiceInfo, ServiceKey, Settings,
    TrafficStats, map_names, reason,
};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::packet::Mac;

/// XDP verdicts (enum xdp_action).
pub mod verdict {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;

    pub fn name(v: u32) -> &'static str {
        match v {
            ABORTED => "XDP_ABORTED",
            DROP => "XDP_DROP",
            PASS => "XDP_PASS",
            TX => "XDP_TX",
            REDIRECT => "XDP_REDIRECT",
            _ => "unknown verdict",
        }
    }
}

pub const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
pub const LB_MAC1: Mac = [0x02, 0, 0, 0, 0, 0x03];
pub const LB_CLIENT_SIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const LB_BACKEND_SIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const LB_ETH1_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Backends with a permanent neighbour entry on eth0, and their MACs.
pub const NEIGHBOURS: [(Ipv4Addr, Mac); 3] = [
    (Ipv4Addr::new(198, 51, 100, 11), [0x02, 0, 0, 0, 0x01, 0x11]),
    (Ipv4Addr::new(198, 51, 100, 12), [0x02, 0, 0, 0, 0x01, 0x12]),
    (Ipv4Addr::new(198, 51, 100, 13), [0x02, 0, 0, 0, 0x01, 0x13]),
];
/// On eth0's subnet, but no neighbour entry: bpf_fib_lookup says NO_NEIGH.
pub const NO_NEIGH_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 14);
/// A neighbour behind eth1.
pub const ETH1_NEIGHBOUR: (Ipv4Addr, Mac) =
    (Ipv4Addr::new(203, 0, 113, 21), [0x02, 0, 0, 0, 0x01, 0x21]);
/// No route at all (eth1 holds only 203.0.113.0/25, no default route).
pub const NO_ROUTE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);

/// Ring size used by the tests: prime, small so the maglev map loads fast.
pub const RING_SIZE: u32 = 257;
/// Rings the maglev map holds (4 services, 2 rings each).
pub const RINGS: u32 = 8;
pub const SMALL_TABLE: u32 = 1024;

/// The map value of an address or port: network byte order, loaded natively.
pub fn ip_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// CLOCK_MONOTONIC_COARSE now, the clock of bpf_ktime_get_coarse_ns.
pub fn now_coarse_ns() -> u64 {
    lb_userspace::dataplane::gc::monotonic_coarse_ns()
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("could not run `ip` (is iproute2 installed?)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs `ip` with `args` inside namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Harness namespaces are `lbt-xdp-<pid>-<n>`.
const NETNS_PREFIX: &str = "lbt-xdp-";

/// Deletes the namespaces of harnesses whose process is gone: a test or
/// bench killed before its teardown leaves its namespace behind, and the
/// next run clears it rather than piling them up.
fn remove_stale_namespaces() {
    let Ok(names) = crate::lab::netns::list() else {
        return;
    };
    for name in names {
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "removing namespace {name}, left behind by process {pid}, which is gone (killed before its teardown)"
            );
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A network namespace deleted (with its veths) when dropped, also on panic.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])
            .with_context(|| format!("could not create network namespace {name}"))?;
        Ok(Netns {
            name: name.to_string(),
        })
    }

    /// Runs `f` on a thread that has joined this namespace: interface
    /// indexes and bpf_fib_lookup in a test run resolve in the caller's
    /// namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file =
                    std::fs::File::open(&path).with_context(|| format!("could not open {path}"))?;
                // SAFETY: setns on a valid namespace fd; it only affects this
                // thread, which ends with the scope.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!(
                        "could not enter {path}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread inside {} panicked", self.name))?
        })
    }

    fn sh(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Builds the test topology described in the module docs.
fn build_topology(ns: &Netns) -> Result<()> {
    ns.sh(&["link", "set", "lo", "up"])?;
    ns.sh(&[
        "link",
        "add",
        "eth0",
        "address",
        &mac_str(&LB_MAC),
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ])?;
    ns.sh(&[
        "link",
        "add",
        "eth1",
        "address",
        &mac_str(&LB_MAC1),
        "type",
        "veth",
        "peer",
        "name",
        "peer1",
    ])?;
    for dev in ["eth0", "peer0", "eth1", "peer1"] {
        ns.sh(&["link", "set", dev, "up"])?;
    }
    ns.sh(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
    ns.sh(&["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
    ns.sh(&["addr", "add", "203.0.113.2/25", "dev", "eth1"])?;
    for (addr, mac) in NEIGHBOURS {
        ns.sh(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &mac_str(&mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
    }
    let (addr, mac) = ETH1_NEIGHBOUR;
    ns.sh(&[
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        &mac_str(&mac),
        "dev",
        "eth1",
        "nud",
        "permanent",
    ])?;
    // bpf_fib_lookup answers FWD_DISABLED unless forwarding is on for the
    // ingress device. /proc/sys/net follows the opener's namespace.
    ns.run_in(|| {
        for dev in ["eth0", "eth1"] {
            let p = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
            std::fs::write(&p, "1").with_context(|| format!("could not write {p}"))?;
        }
        Ok(())
    })
}

/// Result of one test run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// Every piece of state a case may touch, to compare before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub flows: Vec<(FlowKey, Flow)>,
    pub half_open: Vec<(FlowKey, Flow)>,
    pub persist: Vec<(PersistKey, Persist)>,
    pub service_stats: Vec<TrafficStats>,
    pub backend_stats: Vec<TrafficStats>,
    pub reasons: Vec<u64>,
}

/// Max entries of the maps whose size the loader chooses.
#[derive(Clone, Copy, Debug)]
pub struct TableSizes {
    pub maglev: u32,
    pub flows: u32,
    pub half_open: u32,
    pub persist: u32,
}

impl Default for TableSizes {
    /// The tests' sizes: small, so every case loads fast.
    fn default() -> Self {
        TableSizes {
            maglev: RING_SIZE * RINGS,
            flows: SMALL_TABLE,
            half_open: SMALL_TABLE,
            persist: SMALL_TABLE,
        }
    }
}

/// Service ids and backend ids the snapshot covers.
pub const TRACKED_IDS: u32 = 32;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The loaded program, its maps, and the namespace it runs in.
pub struct XdpHarness {
    pub services: HashMap<MapData, ServiceKey, ServiceInfo>,
    pub backends: Array<MapData, BackendInfo>,
    pub maglev: Array<MapData, u32>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub half_open: HashMap<MapData, FlowKey, Flow>,
    pub persist: HashMap<MapData, PersistKey, Persist>,
    pub local_addrs: HashMap<MapData, u32, u32>,
    pub settings: Array<MapData, Settings>,
    pub service_stats: PerCpuArray<MapData, TrafficStats>,
    pub backend_stats: PerCpuArray<MapData, TrafficStats>,
    pub reasons: PerCpuArray<MapData, u64>,
    /// The program's per-CPU next-hop cache (not pinned by lbd).
    pub hop_cache: PerCpuArray<MapData, lb_common::HopCache>,
    /// The interfaces' MACs, written at load as lbd writes them.
    pub ifaces: Array<MapData, Iface>,
    ebpf: Ebpf,
    pub eth0: u32,
    pub eth1: u32,
    // Dropped last: the namespace outlives everything that refers to it.
    pub ns: Netns,
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).with_context(|| {
        format!("the XDP object has no map named {name:?} (is the program built?)")
    })?;
    T::try_from(map)
        .with_context(|| format!("map {name:?} does not have the layout lb-common declares"))
}

impl XdpHarness {
    /// Creates the namespace and loads a fresh copy of the program. Fails,
    /// with a message saying what is missing, when not root or when BPF is
    /// unavailable: these tests must never pass by skipping.
    pub fn new() -> Result<XdpHarness> {
        Self::with_sizes(TableSizes::default())
    }

    /// Like [`XdpHarness::new`], with map sizes of the caller's choosing (the
    /// benchmark needs room for tens of thousands of new flows and a
    /// production-size Maglev ring).
    pub fn with_sizes(sizes: TableSizes) -> Result<XdpHarness> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        ensure!(
            euid == 0,
            "the XDP test suite needs root (euid 0, it creates network namespaces and loads BPF); running as euid {euid}"
        );
        remove_stale_namespaces();
        let name = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns::create(&name)?;
        build_topology(&ns)
            .with_context(|| format!("could not build the test topology in {name}"))?;
        let (eth0, eth1) = ns.run_in(|| {
            let idx = |dev: &str| -> Result<u32> {
                let c = std::ffi::CString::new(dev).unwrap();
                // SAFETY: a valid NUL-terminated name.
                let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                ensure!(i != 0, "no interface {dev} in the test namespace");
                Ok(i)
            };
            Ok((idx("eth0")?, idx("eth1")?))
        })?;

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::MAGLEV, sizes.maglev)
            .map_max_entries(map_names::FLOWS, sizes.flows)
            .map_max_entries(map_names::HALF_OPEN, sizes.half_open)
            .map_max_entries(map_names::PERSIST, sizes.persist)
            .load(lb_userspace::objects::LB)
            .context(
                "could not load the lb eBPF object (BPF unavailable, or the object is broken)",
            )?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut("lb")
                .context("the eBPF object has no program named lb")?
                .try_into()
                .context("program lb is not an XDP program")?;
            lb_userspace::dataplane::load::load_program(prog)
                .context("the kernel refused to load program lb (verifier or BPF unavailable)")?;
        }
        let mut h = XdpHarness {
            services: take(&mut ebpf, map_names::SERVICES)?,
            backends: take(&mut ebpf, map_names::BACKENDS)?,
            maglev: take(&mut ebpf, map_names::MAGLEV)?,
            flows: take(&mut ebpf, map_names::FLOWS)?,
            half_open: take(&mut ebpf, map_names::HALF_OPEN)?,
            persist: take(&mut ebpf, map_names::PERSIST)?,
            local_addrs: take(&mut ebpf, map_names::LOCAL_ADDRS)?,
            settings: take(&mut ebpf, map_names::SETTINGS)?,
            service_stats: take(&mut ebpf, map_names::SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, map_names::BACKEND_STATS)?,
            reasons: take(&mut ebpf, map_names::REASONS)?,
            hop_cache: take(&mut ebpf, map_names::HOP_CACHE)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            ebpf,
            eth0,
            eth1,
            ns,
        };
        // As lbd does before it attaches: each interface's MAC, through the
        // same row writer.
        for (ifindex, mac) in [(eth0, LB_MAC), (eth1, LB_MAC1)] {
            lb_userspace::dataplane::ifaces::write(&mut h.ifaces, ifindex, mac)?;
        }
        Ok(h)
    }

    /// The loaded program, for callers that drive BPF_PROG_TEST_RUN
    /// themselves (from a thread inside [`XdpHarness::ns`]).
    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program("lb")
            .context("program lb vanished")?
            .try_into()
            .context("lb is not XDP")
    }

    /// Runs the program once on `frame` arriving on eth0.
    pub fn run(&self, frame: &[u8]) -> Result<RunResult> {
        self.run_on(self.eth0, frame)
    }

    /// Runs the program once on `frame` arriving on `ifindex` (an index in
    /// the test namespace). The kernel refuses frames under 14 bytes, even
    /// behind XDP metadata.
    pub fn run_on(&self, ifindex: u32, frame: &[u8]) -> Result<RunResult> {
        let prog = self.program()?;
        let data_in = frame;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: [u32; 6] = [0, data_in.len() as u32, 0, ifindex, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let (verdict, out) = self.ns.run_in(|| {
            let mut out = vec![0u8; 4096];
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(data_in),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx_bytes),
                    repeat: 1,
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN failed")?;
            out.truncate(r.data_size_out as usize);
            Ok((r.return_value, out))
        })?;
        Ok(RunResult {
            verdict,
            frame: out,
        })
    }

    // ------------------------------------------------------------ setup

    pub fn set_settings(&mut self, snat_port_min: u16, snat_port_max: u16) -> Result<()> {
        let s = Settings {
            snat_port_min,
            snat_port_max,
            ..Default::default()
        };
        self.settings
            .set(0, s, 0)
            .context("could not write settings[0]")
    }

    pub fn add_local_addr(&mut self, addr: Ipv4Addr, flags: u32) -> Result<()> {
        self.local_addrs
            .insert(ip_be(addr), flags, 0)
            .with_context(|| format!("could not add local address {addr}"))
    }

    pub fn set_backend(&mut self, id: u32, addr: Ipv4Addr, port: u16, flags: u16) -> Result<()> {
        let b = BackendInfo {
            ip: ip_be(addr),
            port: port_be(port),
            flags,
        };
        self.backends
            .set(id, b, 0)
            .with_context(|| format!("could not write backend {id}"))
    }

    pub fn service_key(vip: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
        ServiceKey {
            vip: ip_be(vip),
            port: port_be(port),
            proto,
            _pad: 0,
        }
    }

    pub fn set_service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        info: ServiceInfo,
    ) -> Result<()> {
        self.services
            .insert(Self::service_key(vip, port, proto), info, 0)
            .with_context(|| format!("could not write service {vip}:{port}/{proto}"))
    }

    /// Fills a service's live ring: slot i gets `ids[i % ids.len()]`. One id
    /// fills it entirely; several alternate.
    pub fn fill_ring(&mut self, svc: &ServiceInfo, ids: &[u32]) -> Result<()> {
        for slot in 0..svc.ring_size {
            let id = ids[(slot as usize) % ids.len()];
            self.maglev
                .set(svc.ring_offset + slot, id, 0)
                .context("could not write the maglev ring")?;
        }
        Ok(())
    }

    /// The backend id the ring holds at `slot`.
    pub fn ring_slot(&self, svc: &ServiceInfo, slot: u32) -> Result<u32> {
        Ok(self.maglev.get(&(svc.ring_offset + slot), 0)?)
    }

    // ------------------------------------------------------------ reading

    pub fn flows_all(&self) -> Result<Vec<(FlowKey, Flow)>> {
        sorted(&self.flows)
    }

    pub fn half_open_all(&self) -> Result<Vec<(FlowKey, Flow)>> {
        sorted(&self.half_open)
    }

    pub fn persist_all(&self) -> Result<Vec<(PersistKey, Persist)>> {
        let mut v: Vec<_> = self.persist.iter().collect::<Result<_, _>>()?;
        v.sort_by_key(|(k, _)| (k.service_id, k.client_ip));
        Ok(v)
    }

    pub fn service_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_stats(&self.service_stats.get(&id, 0)?)
    }

    pub fn backend_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_stats(&self.backend_stats.get(&id, 0)?)
    }

    /// The reason counters, summed over CPUs, indexed by reason.
    pub fn reasons(&self) -> Result<Vec<u64>> {
        (0..reason::COUNT)
            .map(|r| Ok(self.reasons.get(&r, 0)?.iter().sum()))
            .collect()
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            flows: self.flows_all()?,
            half_open: self.half_open_all()?,
            persist: self.persist_all()?,
            service_stats: (0..TRACKED_IDS.min(self.service_stats.len()))
                .map(|i| self.service_stats(i))
                .collect::<Result<_>>()?,
            backend_stats: (0..TRACKED_IDS.min(self.backend_stats.len()))
                .map(|i| self.backend_stats(i))
                .collect::<Result<_>>()?,
            reasons: self.reasons()?,
        })
    }
}

fn sorted(map: &HashMap<MapData, FlowKey, Flow>) -> Result<Vec<(FlowKey, Flow)>> {
    let mut v: Vec<_> = map.iter().collect::<Result<_, _>>()?;
    v.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
    Ok(v)
}

fn sum_stats(per_cpu: &PerCpuValues<TrafficStats>) -> Result<TrafficStats> {
    let mut t = TrafficStats::default();
    for s in per_cpu.iter() {
        t.add(s);
    }
    Ok(t)
}

/// A reasons vector with `count` at `reason` and zero elsewhere.
pub fn only_reason(reason: u32, count: u64) -> Vec<u64> {
    let mut v = vec![0; reason::COUNT as usize];
    v[reason as usize] = count;
    v
}

/// Names the non-zero reasons, for failure messages.
pub fn describe_reasons(r: &[u64]) -> String {
    let parts: Vec<String> = r
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != 0)
        .map(|(i, n)| format!("{}={n}", reason::label(i as u32)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
