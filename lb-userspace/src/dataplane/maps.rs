//! Typed handles on the program's maps: the writers the plan executes and the
//! readers the stats page and the flow GC use. Byte order is the caller's:
//! addresses and ports are network order, as `lb_common` documents.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues};
use aya::sys::SyscallError;
use aya::util::nr_cpus;
use lb_common::{
    BackendInfo, Flow, FlowKey, Persist, PersistKey, ServiceInfo, ServiceKey, Settings,
    TrafficStats, map_names, reason,
};

use super::desired::{AppliedService, AppliedState, MapOp};
use super::limits::{MapSizes, REASONS_ENTRIES};
use super::pins::PinDir;

/// The program's maps, typed.
pub struct Maps {
    pub(super) services: HashMap<MapData, ServiceKey, ServiceInfo>,
    pub(super) backends: Array<MapData, BackendInfo>,
    pub(super) maglev: Array<MapData, u32>,
    /// A second descriptor of `maglev` for batch updates, which aya lacks.
    maglev_fd: OwnedFd,
    pub(super) flows: HashMap<MapData, FlowKey, Flow>,
    pub(super) half_open: HashMap<MapData, FlowKey, Flow>,
    pub(super) persist: HashMap<MapData, PersistKey, Persist>,
    pub(super) local_addrs: HashMap<MapData, u32, u32>,
    pub(super) settings: Array<MapData, Settings>,
    pub(super) service_stats: PerCpuArray<MapData, TrafficStats>,
    pub(super) backend_stats: PerCpuArray<MapData, TrafficStats>,
    pub(super) reasons: PerCpuArray<MapData, u64>,
    limits: MapSizes,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name).with_context(|| {
        format!("the XDP object has no map named {name:?}: agent and program disagree")
    })
}

macro_rules! typed {
    ($ebpf:expr, $name:expr) => {
        take($ebpf, $name)?.try_into().with_context(|| {
            format!(
                "map {:?} has another type or key/value size than lb-common's",
                $name
            )
        })?
    };
}

impl Maps {
    /// Takes every map out of a loaded object.
    pub fn from_ebpf(ebpf: &mut Ebpf, limits: &MapSizes) -> Result<Self> {
        let (maglev, maglev_fd) = with_fd(take(ebpf, map_names::MAGLEV)?)?;
        Ok(Maps {
            services: typed!(ebpf, map_names::SERVICES),
            backends: typed!(ebpf, map_names::BACKENDS),
            maglev,
            maglev_fd,
            flows: typed!(ebpf, map_names::FLOWS),
            half_open: typed!(ebpf, map_names::HALF_OPEN),
            persist: typed!(ebpf, map_names::PERSIST),
            local_addrs: typed!(ebpf, map_names::LOCAL_ADDRS),
            settings: typed!(ebpf, map_names::SETTINGS),
            service_stats: typed!(ebpf, map_names::SERVICE_STATS),
            backend_stats: typed!(ebpf, map_names::BACKEND_STATS),
            reasons: typed!(ebpf, map_names::REASONS),
            limits: *limits,
        })
    }

    /// Unpinned maps of the same types and sizes, created without the XDP
    /// program (plain hashes stand in for the LRU ones). Everything above the
    /// loader (plans, stats, flow GC) runs against them in tests and benches.
    pub fn standalone(limits: &MapSizes) -> Result<Self> {
        limits.validate()?;
        let maglev = limits.maglev_entries().context("maglev size")?;
        let ctx = |what: &'static str| {
            move || format!("creating a standalone {what} map (needs CAP_BPF)")
        };
        let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_ARRAY, 4, 4, maglev, 0);
        let (maglev, maglev_fd) = with_fd(Map::Array(
            MapData::create(def, "maglev", None).with_context(ctx("maglev"))?,
        ))?;
        Ok(Maps {
            services: HashMap::create(limits.max_services, 0).with_context(ctx("services"))?,
            backends: Array::create(limits.max_backends, 0).with_context(ctx("backends"))?,
            maglev,
            maglev_fd,
            flows: HashMap::create(limits.flows, 0).with_context(ctx("flows"))?,
            half_open: HashMap::create(limits.half_open, 0).with_context(ctx("half_open"))?,
            persist: HashMap::create(limits.persist, 0).with_context(ctx("persist"))?,
            local_addrs: HashMap::create(limits.local_addrs, 0).with_context(ctx("local_addrs"))?,
            settings: Array::create(1, 0).with_context(ctx("settings"))?,
            service_stats: PerCpuArray::create(limits.max_services, 0)
                .with_context(ctx("service_stats"))?,
            backend_stats: PerCpuArray::create(limits.max_backends, 0)
                .with_context(ctx("backend_stats"))?,
            reasons: PerCpuArray::create(REASONS_ENTRIES, 0).with_context(ctx("reasons"))?,
            limits: *limits,
        })
    }

    pub fn limits(&self) -> &MapSizes {
        &self.limits
    }

    /// Executes one planned write.
    pub fn execute(&mut self, op: &MapOp) -> Result<()> {
        match op {
            MapOp::SetSettings(s) => self.set_settings(s),
            MapOp::SetLocalAddr { ip, flags } => self.set_local_addr(*ip, *flags),
            MapOp::SetBackend { id, info } => self.set_backend(*id, info),
            MapOp::WriteRing {
                service_id,
                which,
                ring,
            } => self.write_ring(*service_id, *which, ring),
            MapOp::UpsertService { key, info } => self.upsert_service(key, info),
            MapOp::RemoveService { key } => self.remove_service(key),
            MapOp::ClearBackend { id } => self.clear_backend(*id),
            MapOp::RemoveLocalAddr { ip } => self.remove_local_addr(*ip),
        }
    }

    /// Writes `settings[0]` except the lease deadline, which stays as the
    /// VRRP thread (`Lease`) last wrote it: read-modify-write under the
    /// settings lock.
    pub fn set_settings(&mut self, s: &Settings) -> Result<()> {
        let _row = super::lease::settings_lock();
        let live = self.settings()?;
        let s = Settings {
            lease_deadline_ns: live.lease_deadline_ns,
            ..*s
        };
        self.settings.set(0, s, 0).context("writing settings[0]")
    }

    /// Writes only the lease deadline of `settings[0]`.
    pub fn set_lease_deadline(&mut self, deadline_ns: u64) -> Result<()> {
        let _row = super::lease::settings_lock();
        let mut s = self.settings()?;
        s.lease_deadline_ns = deadline_ns;
        self.settings.set(0, s, 0).context("writing settings[0]")
    }

    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).context("reading settings[0]")
    }

    pub fn upsert_service(&mut self, key: &ServiceKey, info: &ServiceInfo) -> Result<()> {
        self.services
            .insert(key, info, 0)
            .with_context(|| format!("writing service {} ({key:?}) to the services map", info.id))
    }

    /// Removes a service entry; a missing one is not an error.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        ignore_missing(self.services.remove(key))
            .with_context(|| format!("removing {key:?} from the services map"))
    }

    /// Every service entry, as an earlier agent left them.
    pub fn services(&self) -> Result<Vec<(ServiceKey, ServiceInfo)>> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the services map")
    }

    pub fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<()> {
        self.backends
            .set(id, info, 0)
            .with_context(|| format!("writing backends[{id}]"))
    }

    /// Resets a row to "not in use" (an array entry cannot be deleted).
    pub fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.backends
            .set(id, BackendInfo::default(), 0)
            .with_context(|| format!("clearing backends[{id}]"))
    }

    pub fn backend(&self, id: u32) -> Result<BackendInfo> {
        self.backends
            .get(&id, 0)
            .with_context(|| format!("reading backends[{id}]"))
    }

    /// Writes ring `which` (0 or 1) of a service: M slots at
    /// `(service_id * 2 + which) * M`, in one BPF_MAP_UPDATE_BATCH call
    /// (aya 0.14 has none; one syscall per slot took 80 ms for M = 65537
    /// here), falling back to single updates where the kernel lacks it.
    pub fn write_ring(&mut self, service_id: u32, which: u8, ring: &[u32]) -> Result<()> {
        ensure!(
            which < 2,
            "ring {which} does not exist: each service has rings 0 and 1"
        );
        ensure!(
            ring.len() == self.limits.ring_size as usize,
            "a ring of {} slots does not match the map's ring size {}",
            ring.len(),
            self.limits.ring_size
        );
        ensure!(
            service_id < self.limits.max_services,
            "service id {service_id} >= max_services"
        );
        let base = self.limits.ring_offset(service_id, which);
        let start = Instant::now();
        let keys: Vec<u32> = (base..base + self.limits.ring_size).collect();
        match update_batch(self.maglev_fd.as_fd(), &keys, ring) {
            Ok(()) => {}
            Err(e) if batch_unsupported(&e) => {
                tracing::debug!(error = %e, "no batch map updates: writing the ring slot by slot");
                self.write_ring_slots(base, ring)
                    .with_context(|| format!("writing ring {which} of service {service_id}"))?;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("writing ring {which} of service {service_id} to maglev")
                });
            }
        }
        tracing::debug!(service_id, which, slots = ring.len(), elapsed = ?start.elapsed(), "wrote ring");
        Ok(())
    }

    /// One update per slot from maglev index `base`: the fallback of
    /// [`write_ring`](Self::write_ring), public so its cost can be compared.
    pub fn write_ring_slots(&mut self, base: u32, ring: &[u32]) -> Result<()> {
        for (slot, backend) in ring.iter().enumerate() {
            let index = base + slot as u32;
            self.maglev
                .set(index, backend, 0)
                .with_context(|| format!("writing maglev[{index}]"))?;
        }
        Ok(())
    }

    /// Reads ring `which` of a service back (tests, debugging).
    pub fn read_ring(&self, service_id: u32, which: u8) -> Result<Vec<u32>> {
        let base = self.limits.ring_offset(service_id, which);
        (base..base + self.limits.ring_size)
            .map(|i| {
                self.maglev
                    .get(&i, 0)
                    .with_context(|| format!("reading maglev[{i}]"))
            })
            .collect()
    }

    pub fn set_local_addr(&mut self, ip: u32, flags: u32) -> Result<()> {
        self.local_addrs
            .insert(ip, flags, 0)
            .with_context(|| format!("writing local address {} to local_addrs", show_ip(ip)))
    }

    pub fn remove_local_addr(&mut self, ip: u32) -> Result<()> {
        ignore_missing(self.local_addrs.remove(&ip))
            .with_context(|| format!("removing local address {} from local_addrs", show_ip(ip)))
    }

    pub fn local_addrs(&self) -> Result<Vec<(u32, u32)>> {
        self.local_addrs
            .iter()
            .collect::<Result<_, _>>()
            .context("reading local_addrs")
    }

    /// A service's traffic counters, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_stats(self.service_stats.get(&id, 0))
            .with_context(|| format!("reading service_stats[{id}]"))
    }

    /// A backend's traffic counters, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_stats(self.backend_stats.get(&id, 0))
            .with_context(|| format!("reading backend_stats[{id}]"))
    }

    /// Every drop/pass/answer counter, summed over CPUs, with its label.
    pub fn reasons(&self) -> Result<Vec<(&'static str, u64)>> {
        (0..reason::COUNT)
            .map(|r| {
                let per_cpu = self
                    .reasons
                    .get(&r, 0)
                    .with_context(|| format!("reading reasons[{r}]"))?;
                Ok((reason::label(r), per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Zeroes a service's counters (a reused id must not inherit them).
    pub fn reset_service_stats(&mut self, id: u32) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![TrafficStats::default(); nr_cpus_checked()?])?;
        self.service_stats
            .set(id, zero, 0)
            .with_context(|| format!("zeroing service_stats[{id}]"))
    }

    /// Zeroes a backend's counters.
    pub fn reset_backend_stats(&mut self, id: u32) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![TrafficStats::default(); nr_cpus_checked()?])?;
        self.backend_stats
            .set(id, zero, 0)
            .with_context(|| format!("zeroing backend_stats[{id}]"))
    }

    /// What an earlier agent left in the maps, so the first plan after an
    /// adoption writes only differences. Ring contents are not read back (M
    /// lookups per service): they are unknown, and the first plan rewrites
    /// each spare ring and flips, which the data path never notices.
    pub fn read_applied(&self) -> Result<AppliedState> {
        let mut applied = AppliedState {
            settings: Some(self.settings()?),
            ..AppliedState::default()
        };
        for (key, info) in self.services()? {
            applied
                .services
                .insert(key.into(), AppliedService { info, ring: None });
        }
        for id in 0..self.limits.max_backends {
            let row = self.backend(id)?;
            if row != BackendInfo::default() {
                applied.backends.insert(id, row);
            }
        }
        applied.local_addrs = self.local_addrs()?.into_iter().collect();
        Ok(applied)
    }
}

/// Checks the kernel's view of every pinned map against the sizes and
/// layouts this agent expects. aya reuses an existing pin as it is, and its
/// own bounds checks use the object's sizes, not the pin's.
pub fn check_pinned(pins: &PinDir, limits: &MapSizes) -> Result<()> {
    let expect: std::collections::HashMap<&str, u32> = limits.map_sizes().into_iter().collect();
    let layouts = [
        (
            map_names::SERVICES,
            size_of::<ServiceKey>(),
            size_of::<ServiceInfo>(),
        ),
        (map_names::BACKENDS, 4, size_of::<BackendInfo>()),
        (map_names::MAGLEV, 4, 4),
        (map_names::FLOWS, size_of::<FlowKey>(), size_of::<Flow>()),
        (
            map_names::HALF_OPEN,
            size_of::<FlowKey>(),
            size_of::<Flow>(),
        ),
        (
            map_names::PERSIST,
            size_of::<PersistKey>(),
            size_of::<Persist>(),
        ),
        (map_names::LOCAL_ADDRS, 4, 4),
        (map_names::SETTINGS, 4, size_of::<Settings>()),
        (map_names::SERVICE_STATS, 4, size_of::<TrafficStats>()),
        (map_names::BACKEND_STATS, 4, size_of::<TrafficStats>()),
        (map_names::REASONS, 4, 8),
    ];
    for (name, key, value) in layouts {
        let path = pins.map(name);
        if !path.exists() {
            continue; // created by the loader
        }
        let info = MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        let (k, v) = (info.key_size() as usize, info.value_size() as usize);
        if (k, v) != (key, value) {
            bail!(
                "the pinned map {} has {k}-byte keys and {v}-byte values, this agent expects {key} and {value}: \
                 an agent of another layout left it; run `lbd stop --detach` (traffic stops) and start again",
                path.display()
            );
        }
        if name == map_names::REASONS && info.max_entries() != super::limits::REASONS_ENTRIES {
            bail!(
                "the pinned map {} counts {} reasons, this agent knows {}: an agent of another build left \
                 it; run `lbd stop --detach` (traffic stops) and start again",
                path.display(),
                info.max_entries(),
                super::limits::REASONS_ENTRIES
            );
        }
        if let Some(&want) = expect.get(name)
            && info.max_entries() != want
        {
            bail!(
                "the pinned map {} holds {} entries, the config asks for {want}: sizes change only with a fresh \
                 start; run `lbd stop --detach` (traffic stops) and start again, or restore the old limit",
                path.display(),
                info.max_entries()
            );
        }
    }
    Ok(())
}

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `union bpf_attr` for the batch commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// BPF_MAP_UPDATE_BATCH of u32 keys to u32 values.
fn update_batch(fd: BorrowedFd<'_>, keys: &[u32], values: &[u32]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len());
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: u32::try_from(keys.len() - done).map_err(io::Error::other)?,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: attr points at `count` keys and values that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr,
                size_of::<BatchAttr>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // the kernel reports how many it wrote; it may stop early on a signal
        if attr.count == 0 {
            return Err(io::Error::other("BPF_MAP_UPDATE_BATCH made no progress"));
        }
        done += attr.count as usize;
    }
    Ok(())
}

fn batch_unsupported(e: &io::Error) -> bool {
    const ENOTSUPP: i32 = 524; // the kernel's internal "not supported"
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// Splits an array map into its typed handle and a second descriptor.
fn with_fd(map: Map) -> Result<(Array<MapData, u32>, OwnedFd)> {
    let fd = match &map {
        Map::Array(data) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the maglev map fd")?,
        _ => bail!("map \"maglev\" is not an array"),
    };
    let array = map
        .try_into()
        .context("map \"maglev\" has another key/value size than lb-common's")?;
    Ok((array, fd))
}

fn nr_cpus_checked() -> Result<usize> {
    nr_cpus().map_err(|(what, e)| anyhow::anyhow!("reading {what}: {e}"))
}

fn sum_stats(values: Result<PerCpuValues<TrafficStats>, MapError>) -> Result<TrafficStats> {
    let mut total = TrafficStats::default();
    for v in values?.iter() {
        total.add(v);
    }
    Ok(total)
}

/// Deleting what is already gone is success (idempotent removals).
pub(super) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// A network-order address for messages.
pub(super) fn show_ip(ip: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from_be(ip))
}
