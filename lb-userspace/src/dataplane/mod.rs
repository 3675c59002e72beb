//! The data plane as the agent sees it: the XDP program on one interface, its
//! pinned maps, and the operations the rest of the agent needs (apply a
//! desired state, read counters, collect idle flows).
//!
//! Pure parts (the plan, the GC decision, range and name checks) live in
//! their own files and are unit-tested; [`Dataplane`] is the thin I/O shell.

pub mod desired;
pub mod gc;
pub mod host;
pub mod iface_move;
pub mod ifaces;
pub mod lease;
pub mod limits;
pub mod load;
pub mod maps;
pub mod neigh;
pub mod pins;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use aya::Ebpf;
use lb_common::{TrafficStats, map_names};

pub use desired::{AppliedState, DesiredService, DesiredState, MapOp};
pub use gc::{FlowTimeouts, GcPolicy, GcReport};
pub use lease::Lease;
pub use limits::MapSizes;
pub use load::{AttachMode, Attachment};
pub use maps::Maps;
pub use pins::PinDir;

/// What [`Dataplane::open`] needs.
#[derive(Clone, Debug)]
pub struct DataplaneOptions<'a> {
    /// This node's name: part of the pin path.
    pub node: String,
    /// The interface the XDP program runs on.
    pub iface: String,
    pub mode: AttachMode,
    /// Where bpffs is (mounted there if missing); normally [`pins::BPFFS_ROOT`].
    pub bpffs: PathBuf,
    pub limits: MapSizes,
    /// The eBPF object, normally [`crate::objects::LB`].
    pub object: &'a [u8],
}

/// The loaded and attached XDP program with its maps.
pub struct Dataplane {
    /// Keeps the program (and, once adopted, the link) alive.
    _ebpf: Ebpf,
    attachment: Attachment,
    maps: Maps,
    pins: PinDir,
    applied: AppliedState,
    /// The interface: its addresses join `local_addrs` at every apply.
    iface: String,
    mode: AttachMode,
    /// The interface's index and MAC, for the acceptance policy; rewritten
    /// when the program moves to a re-created device.
    iface_map: aya::maps::Array<aya::maps::MapData, lb_common::Iface>,
}

impl Dataplane {
    /// Loads the program with its maps pinned under the node's directory and
    /// attaches it, adopting the maps and link an earlier agent left.
    pub fn open(opts: &DataplaneOptions<'_>) -> Result<Self> {
        opts.limits.validate()?;
        pins::ensure_bpffs(&opts.bpffs)?;
        let pins = PinDir::new(&opts.bpffs, &opts.node)?;
        pins.create()?;
        let had_maps = map_names::ALL.iter().any(|m| pins.map(m).exists());
        if had_maps {
            maps::check_pinned(&pins, &opts.limits)?;
        }
        let mut ebpf = load::load(opts.object, &pins, &opts.limits)?;
        let maps = Maps::from_ebpf(&mut ebpf, &opts.limits)?;
        // Before the program sees a frame: the MAC it checks them against.
        let mut iface_map: aya::maps::Array<_, lb_common::Iface> = ebpf
            .take_map(map_names::IFACES)
            .with_context(|| format!("the XDP object has no map named {}", map_names::IFACES))?
            .try_into()
            .with_context(|| {
                format!(
                    "map {} does not have the layout lb-common declares",
                    map_names::IFACES
                )
            })?;
        let mac = ifaces::mac_of(&opts.iface)?;
        ifaces::write(&mut iface_map, load::if_index(&opts.iface)?, mac)?;
        tracing::info!(iface = %opts.iface, mac = %show_mac(&mac), "data path accepts frames to {}", show_mac(&mac));
        let attachment = load::attach(&mut ebpf, &pins, &opts.iface, opts.mode)?;
        let applied = if had_maps {
            let applied = maps
                .read_applied()
                .context("reading back the state an earlier agent left")?;
            tracing::info!(
                services = applied.services.len(),
                backends = applied.backends.len(),
                "adopted the pinned maps"
            );
            applied
        } else {
            AppliedState::default()
        };
        Ok(Dataplane {
            _ebpf: ebpf,
            attachment,
            maps,
            pins,
            applied,
            iface: opts.iface.clone(),
            mode: opts.mode,
            iface_map,
        })
    }

    /// Attaches the loaded program to the interface again after its device
    /// was removed and created anew under the same name (the old attachment
    /// died with the old device). Maps, flows and counters are untouched.
    /// `old_index`: the old device's, whose flows move to the new one.
    pub fn reattach(&mut self, old_index: Option<u32>) -> Result<()> {
        let index = load::if_index(&self.iface)?;
        let mac = ifaces::mac_of(&self.iface)?;
        ifaces::write(&mut self.iface_map, index, mac)?;
        tracing::info!(iface = %self.iface, mac = %show_mac(&mac), "data path accepts frames to {}", show_mac(&mac));
        if let Some(old) = old_index.filter(|old| *old != index) {
            let moved = self
                .maps
                .move_flows(old, index)
                .context("moving the flows to the new device")?;
            tracing::info!(moved, "flow entries now leave through the new device");
        }
        // Each CPU's cached next hops name the old device too; a new flow
        // that took one would keep it for the life of its handshake.
        self.forget_next_hops()?;
        self.attachment = load::attach_again(&mut self._ebpf, &self.pins, &self.iface, self.mode)?;
        Ok(())
    }

    /// Empties `hop_cache` on every CPU: the next packet to each backend
    /// asks the FIB again.
    fn forget_next_hops(&mut self) -> Result<()> {
        let mut cache: aya::maps::PerCpuArray<_, lb_common::HopCache> = self
            ._ebpf
            .map_mut(map_names::HOP_CACHE)
            .with_context(|| format!("the XDP object has no map named {}", map_names::HOP_CACHE))?
            .try_into()
            .with_context(|| {
                format!(
                    "map {} does not have the layout lb-common declares",
                    map_names::HOP_CACHE
                )
            })?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting the CPUs")?;
        for id in 0..cache.len() {
            let empty =
                aya::maps::PerCpuValues::try_from(vec![lb_common::HopCache::default(); cpus])
                    .context("building an empty hop_cache row")?;
            cache
                .set(id, empty, 0)
                .with_context(|| format!("clearing hop_cache row {id}"))?;
        }
        Ok(())
    }

    /// Whether the program was swapped into an earlier agent's link.
    pub fn adopted(&self) -> bool {
        matches!(self.attachment, Attachment::Adopted)
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    pub fn limits(&self) -> &MapSizes {
        self.maps.limits()
    }

    /// What the maps hold, as far as this agent knows.
    pub fn applied(&self) -> &AppliedState {
        &self.applied
    }

    /// Typed map access for what the operations below do not cover.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Brings the maps to `desired`; returns the number of writes. The lease
    /// deadline in `settings` is never written here: it stays as the VRRP
    /// thread's [`Lease`] (or [`set_lease`](Self::set_lease)) last wrote it.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<usize> {
        // The interface's addresses are read anew each time, so an address
        // added or removed on the host counts from the next apply on.
        let host = ifaces::node_addrs(&ifaces::ipv4_addrs(&self.iface)?);
        let mut desired = desired.clone();
        desired.local_addrs = ifaces::merge(&desired.local_addrs, &host);
        apply(&mut self.maps, &mut self.applied, &desired)
    }

    /// Sets the lease deadline (CLOCK_MONOTONIC ns, 0 = expired) through
    /// this data plane's descriptor; [`Lease`] does the same from any thread.
    pub fn set_lease(&mut self, deadline_ns: u64) -> Result<()> {
        self.maps
            .set_lease_deadline(deadline_ns)
            .context("writing the VRRP lease deadline")?;
        if let Some(s) = self.applied.settings.as_mut() {
            s.lease_deadline_ns = deadline_ns;
        }
        Ok(())
    }

    /// A [`Lease`] on this data plane's pinned settings map.
    pub fn lease(&self) -> Result<Lease> {
        Lease::open_in(&self.pins)
    }

    /// One flow collection pass at the current time.
    pub fn collect_garbage(&mut self, policy: &GcPolicy) -> Result<GcReport> {
        self.maps.collect_garbage(policy, gc::monotonic_coarse_ns())
    }

    pub fn service_stats(&self, service_id: u32) -> Result<TrafficStats> {
        self.maps.service_stats(service_id)
    }

    pub fn backend_stats(&self, backend_id: u32) -> Result<TrafficStats> {
        self.maps.backend_stats(backend_id)
    }

    /// Drop/pass/answer counters with their labels.
    pub fn reasons(&self) -> Result<Vec<(&'static str, u64)>> {
        self.maps.reasons()
    }

    /// Detaches the program for good: removes the link pin (and so the
    /// attachment) and every map pin of this node. `lbd stop --detach`.
    pub fn detach(self) -> Result<()> {
        let pins = self.pins.clone();
        drop(self);
        pins::remove_all(pins.bpffs(), pins.node())?;
        Ok(())
    }
}

fn show_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Plans and executes; records every write that succeeded, so after an error
/// the next call retries only what is missing. Counters of ids that start
/// being used are zeroed first (an id may have served before).
pub fn apply(maps: &mut Maps, applied: &mut AppliedState, desired: &DesiredState) -> Result<usize> {
    // The deadline is not the plan's to compare or write (`Maps::set_settings`
    // keeps the live one): align it so only the other fields decide.
    let mut desired = desired.clone();
    if let Some(current) = applied.settings {
        desired.settings.lease_deadline_ns = current.lease_deadline_ns;
    }
    let ops = desired::plan(applied, &desired, maps.limits())?;
    let known_services: BTreeSet<u32> = applied.services.values().map(|s| s.info.id).collect();
    for (i, op) in ops.iter().enumerate() {
        let result = match op {
            MapOp::SetBackend { id, .. } if !applied.backends.contains_key(id) => {
                maps.reset_backend_stats(*id)
            }
            MapOp::UpsertService { info, .. } if !known_services.contains(&info.id) => {
                maps.reset_service_stats(info.id)
            }
            _ => Ok(()),
        }
        .and_then(|()| maps.execute(op));
        if let Err(e) = result {
            applied.record_all(&ops[..i]);
            return Err(e);
        }
    }
    applied.record_all(&ops);
    if !ops.is_empty() {
        tracing::info!(
            writes = ops.len(),
            services = applied.services.len(),
            backends = applied.backends.len(),
            "maps updated"
        );
    }
    Ok(ops.len())
}
