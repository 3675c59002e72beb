//! CPU time spent on the bench's traffic, for CPU per request.
//!
//! The machine is shared (other builds and labs run beside the bench), so
//! machine-wide /proc/stat deltas would charge their work to our requests.
//! Instead the bench process moves itself into a cgroup of its own before it
//! starts anything: every process it starts (nginx, lbd, wrk, lab-client,
//! through nsenter) inherits it, and the cgroup's CPU time is theirs alone.
//! Packet processing in softirq (the XDP program, netfilter, veth and bridge
//! forwarding) is charged to the task it interrupts, which under this load is
//! almost always one of ours; what the kernel defers to ksoftirqd is added
//! from the ksoftirqd threads' own counters. The machine-wide /proc/stat
//! figure is kept beside it as a cross-check.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A cgroup holding the bench process and everything it starts. Dropping
/// it moves the bench back where it came from and removes the cgroup.
pub struct BenchCgroup {
    dir: PathBuf,
    /// The cgroup the process came from, to return to.
    home: PathBuf,
    kind: Hierarchy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hierarchy {
    /// cgroup v2: `cpu.stat` `usage_usec` (present without the cpu controller).
    Unified,
    /// cgroup v1 with the cpuacct controller: `cpuacct.usage` in ns.
    Cpuacct,
}

impl BenchCgroup {
    /// Creates `<hierarchy root>/<name>` and moves this process into it.
    /// Prefers cgroup v2, falls back to a v1 cpuacct hierarchy.
    pub fn enter(name: &str) -> Result<BenchCgroup> {
        let mounts =
            std::fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .context("could not read /proc/self/cgroup")?;
        let (root, kind) = hierarchy(&mounts).context(
            "no cgroup v2 and no cgroup v1 cpuacct hierarchy is mounted: CPU per request cannot be measured",
        )?;
        let relative = own_cgroup(&own, kind)
            .context("/proc/self/cgroup does not name this process's cgroup")?;
        let home = root.join(relative.trim_start_matches('/'));
        remove_stale(&root, name);
        let dir = root.join(name);
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("could not create the cgroup {}", dir.display()))?;
        }
        let group = BenchCgroup { dir, home, kind };
        std::fs::write(
            group.dir.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .with_context(|| format!("could not move the bench into {}", group.dir.display()))?;
        Ok(group)
    }

    /// CPU time used by the cgroup's processes so far, in ns.
    pub fn usage_ns(&self) -> Result<u64> {
        match self.kind {
            Hierarchy::Unified => {
                let path = self.dir.join("cpu.stat");
                let text = read(&path)?;
                cpu_stat_usage_usec(&text)
                    .map(|us| us * 1000)
                    .with_context(|| format!("no usage_usec in {}", path.display()))
            }
            Hierarchy::Cpuacct => {
                let path = self.dir.join("cpuacct.usage");
                read(&path)?
                    .trim()
                    .parse()
                    .with_context(|| format!("{} does not hold a number", path.display()))
            }
        }
    }

    pub fn describe(&self) -> String {
        let file = match self.kind {
            Hierarchy::Unified => "cpu.stat usage_usec",
            Hierarchy::Cpuacct => "cpuacct.usage",
        };
        format!("{} ({file})", self.dir.display())
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let me = std::process::id().to_string();
        if let Err(e) = std::fs::write(self.home.join("cgroup.procs"), &me) {
            eprintln!(
                "could not move the bench back to {}: {e}",
                self.home.display()
            );
        }
        // Processes the lab killed may take a moment to leave the cgroup.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        eprintln!(
            "could not remove the cgroup {}: processes are still in it",
            self.dir.display()
        );
    }
}

/// Removes cgroups left by benches that were killed before their cleanup:
/// named like `name` (`<word>-<pid>`) but for a process that is gone. Only
/// empty cgroups can be removed, so a live one is never touched.
fn remove_stale(root: &Path, name: &str) {
    let Some((stem, _)) = name.rsplit_once('-') else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let found = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = found
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && std::fs::remove_dir(entry.path()).is_ok()
        {
            eprintln!("removed the cgroup {found}, left by a bench that was killed");
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

/// The mount point of cgroup v2, else of a v1 hierarchy with cpuacct.
fn hierarchy(mounts: &str) -> Option<(PathBuf, Hierarchy)> {
    let mut v1 = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, point, fstype, options, ..] = fields[..] else {
            continue;
        };
        if fstype == "cgroup2" {
            return Some((PathBuf::from(point), Hierarchy::Unified));
        }
        if fstype == "cgroup" && options.split(',').any(|o| o == "cpuacct") && v1.is_none() {
            v1 = Some((PathBuf::from(point), Hierarchy::Cpuacct));
        }
    }
    v1
}

/// This process's cgroup path in `kind`'s hierarchy, from /proc/self/cgroup.
fn own_cgroup(text: &str, kind: Hierarchy) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match kind {
            Hierarchy::Unified => id == "0" && controllers.is_empty(),
            Hierarchy::Cpuacct => controllers.split(',').any(|c| c == "cpuacct"),
        };
        matches.then(|| path.to_string())
    })
}

fn cpu_stat_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Clock ticks per second of /proc/stat and /proc/PID/stat.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Busy ticks of the whole machine from the `cpu` line of /proc/stat:
/// user, nice, system, irq and softirq (guest time is inside user; idle,
/// iowait and steal are not ours).
pub fn machine_busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 7 {
        return None;
    }
    Some(v[0] + v[1] + v[2] + v[5] + v[6])
}

/// utime + stime (ticks) from a /proc/PID/stat line. The command name may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn task_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The pids of the kernel's ksoftirqd threads (one per CPU).
pub fn ksoftirqd_pids() -> Vec<u32> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// One reading of every counter.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuReading {
    pub group_ns: u64,
    pub ksoftirqd_ns: u64,
    pub machine_ns: u64,
}

/// Reads the counters the bench uses.
pub struct CpuMeter {
    group: BenchCgroup,
    ksoftirqd: Vec<u32>,
    tick_ns: u64,
}

/// CPU spent over one run, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuSpent {
    /// The bench's cgroup plus ksoftirqd: what the per-request figure uses.
    pub ours_ns: u64,
    /// The whole machine, other users included (a cross-check).
    pub machine_ns: u64,
}

impl CpuMeter {
    pub fn new(group: BenchCgroup) -> Result<CpuMeter> {
        let meter = CpuMeter {
            group,
            ksoftirqd: ksoftirqd_pids(),
            tick_ns: 1_000_000_000 / ticks_per_second(),
        };
        if meter.ksoftirqd.is_empty() {
            bail!("no ksoftirqd thread found in /proc: is /proc mounted?");
        }
        meter.read()?;
        Ok(meter)
    }

    pub fn describe(&self) -> String {
        self.group.describe()
    }

    pub fn read(&self) -> Result<CpuReading> {
        let ksoftirqd_ticks: u64 = self
            .ksoftirqd
            .iter()
            .filter_map(|pid| {
                task_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
            })
            .sum();
        let stat = read(Path::new("/proc/stat"))?;
        let machine = machine_busy_ticks(&stat).context("/proc/stat has no readable cpu line")?;
        Ok(CpuReading {
            group_ns: self.group.usage_ns()?,
            ksoftirqd_ns: ksoftirqd_ticks * self.tick_ns,
            machine_ns: machine * self.tick_ns,
        })
    }

    /// What was spent since `before`.
    pub fn since(&self, before: &CpuReading) -> Result<CpuSpent> {
        let now = self.read()?;
        Ok(CpuSpent {
            ours_ns: (now.group_ns.saturating_sub(before.group_ns))
                + now.ksoftirqd_ns.saturating_sub(before.ksoftirqd_ns),
            machine_ns: now.machine_ns.saturating_sub(before.machine_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS_HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn cgroup_v2_is_preferred_and_v1_cpuacct_is_the_fallback() {
        assert_eq!(
            hierarchy(MOUNTS_HYBRID),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), Hierarchy::Unified))
        );
        let v1_only: String = MOUNTS_HYBRID
            .lines()
            .filter(|l| !l.starts_with("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            hierarchy(&v1_only),
            Some((PathBuf::from("/sys/fs/cgroup/cpuacct"), Hierarchy::Cpuacct))
        );
        assert_eq!(hierarchy("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn own_cgroup_is_found_per_hierarchy() {
        let own = "4:memory:/x\n2:cpu,cpuacct:/bench\n0::/user.slice/a.scope\n";
        assert_eq!(
            own_cgroup(own, Hierarchy::Unified).as_deref(),
            Some("/user.slice/a.scope")
        );
        assert_eq!(
            own_cgroup(own, Hierarchy::Cpuacct).as_deref(),
            Some("/bench")
        );
    }

    #[test]
    fn counters_are_read_from_kernel_text() {
        assert_eq!(
            cpu_stat_usage_usec("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n"),
            Some(1234)
        );
        let stat =
            "cpu  706691 180 101268 1515387 2414 0 1798 758 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(machine_busy_ticks(stat), Some(706691 + 180 + 101268 + 1798));
        let task = "15 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 7 118 0 0 20 0 1 0 5 0 0";
        assert_eq!(task_ticks(task), Some(125));
        let odd = "99 (a) b (c) R 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        assert_eq!(task_ticks(odd), Some(7));
    }
}
