//! Reading lbd's pinned counters from bpffs, for the demo and for tests
//! that want the data path's own view (bytes and new flows per backend,
//! drop/pass reasons). bpffs is not per network namespace, so the pins are
//! readable from the test process directly.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use lb_common::{BackendInfo, Flow, FlowKey, TrafficStats, backend_flags, map_names, reason};

/// One backend row of the data path with its summed per-CPU counters.
#[derive(Clone, Debug)]
pub struct BackendCounters {
    pub id: u32,
    pub address: SocketAddrV4,
    pub stats: TrafficStats,
}

/// A snapshot of lbd's counters.
#[derive(Clone, Debug)]
pub struct DatapathCounters {
    /// Backends in use, by id.
    pub backends: Vec<BackendCounters>,
    /// Non-zero reason counters, with their labels.
    pub reasons: Vec<(&'static str, u64)>,
    /// Entries in the established-flow table (two per connection).
    pub flow_entries: usize,
}

/// Finds the directory holding the maps: `<node dir>/v<layout>/` as docs/architecture.md ("Pins and the layout version")
/// lays out, or the node directory itself.
pub fn map_dir(node_pin_dir: &Path) -> Result<PathBuf> {
    let versioned = node_pin_dir.join(format!("v{}", lb_common::LAYOUT_VERSION));
    for dir in [versioned, node_pin_dir.to_path_buf()] {
        if dir.join(map_names::BACKEND_STATS).exists() {
            return Ok(dir);
        }
    }
    bail!(
        "no pinned {} map under {}",
        map_names::BACKEND_STATS,
        node_pin_dir.display()
    )
}

fn open(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("could not open the pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("unsupported map type at {}", path.display()))
}

/// Reads backends, their traffic counters, the reason counters and the
/// size of the flow table from lbd's pins under `node_pin_dir`.
pub fn read_pinned(node_pin_dir: &Path) -> Result<DatapathCounters> {
    let dir = map_dir(node_pin_dir)?;
    let rows: Array<_, BackendInfo> = open(&dir, map_names::BACKENDS)?
        .try_into()
        .context("the backends map has an unexpected layout")?;
    let stats: PerCpuArray<_, TrafficStats> = open(&dir, map_names::BACKEND_STATS)?
        .try_into()
        .context("the backend_stats map has an unexpected layout")?;
    let mut backends = Vec::new();
    for id in 1..rows.len() {
        let row = rows.get(&id, 0).context("could not read a backends row")?;
        if row.flags & backend_flags::IN_USE == 0 {
            continue;
        }
        let mut sum = TrafficStats::default();
        if id < stats.len() {
            for per_cpu in stats
                .get(&id, 0)
                .context("could not read backend_stats")?
                .iter()
            {
                sum.add(per_cpu);
            }
        }
        backends.push(BackendCounters {
            id,
            address: SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(row.ip)),
                u16::from_be(row.port),
            ),
            stats: sum,
        });
    }
    let reason_map: PerCpuArray<_, u64> = open(&dir, map_names::REASONS)?
        .try_into()
        .context("the reasons map has an unexpected layout")?;
    let mut reasons = Vec::new();
    for r in 0..reason_map.len().min(reason::COUNT) {
        let total: u64 = reason_map
            .get(&r, 0)
            .context("could not read reasons")?
            .iter()
            .sum();
        if total > 0 {
            reasons.push((reason::label(r), total));
        }
    }
    let flows: HashMap<_, FlowKey, Flow> = open(&dir, map_names::FLOWS)?
        .try_into()
        .context("the flows map has an unexpected layout")?;
    let flow_entries = flows.keys().filter(Result::is_ok).count();
    Ok(DatapathCounters {
        backends,
        reasons,
        flow_entries,
    })
}

/// The client-side source addresses of the connection entries in lbd's
/// tables: the key of every entry that carries a client's packets to a
/// backend, in `half_open` (handshakes) and in `flows` (established), for
/// tests that look for entries a spoofed source must not have.
#[derive(Clone, Debug, Default)]
pub struct ClientEntries {
    pub half_open: Vec<Ipv4Addr>,
    pub flows: Vec<Ipv4Addr>,
}

pub fn client_entries(node_pin_dir: &Path) -> Result<ClientEntries> {
    let dir = map_dir(node_pin_dir)?;
    let read = |name: &str| -> Result<Vec<Ipv4Addr>> {
        let map: HashMap<_, FlowKey, Flow> = open(&dir, name)?
            .try_into()
            .with_context(|| format!("the {name} map has an unexpected layout"))?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, flow)| flow.direction == lb_common::direction::TO_BACKEND)
            .map(|(key, _)| Ipv4Addr::from(u32::from_be(key.src_ip)))
            .collect())
    };
    Ok(ClientEntries {
        half_open: read(map_names::HALF_OPEN)?,
        flows: read(map_names::FLOWS)?,
    })
}
