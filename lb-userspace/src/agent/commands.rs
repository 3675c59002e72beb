//! The agent's commands: `lbd run` (the node lock, then the agent on its
//! runtime), `lbd stop` (with and without `--detach`, and in VRRP mode) and
//! `lbd reload` (validate here, then SIGHUP to the pid in the lock file).

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, anyhow, bail};

use super::Agent;
use super::desired_state;
use crate::paths::RUN_DIR;
use crate::{
    config::{self, Config},
    dataplane::{host, load, pins},
    vips::VipAddresses,
    vrrp::runtime::LeaseStore,
};

/// `lbd run`.
pub fn run(config_path: &Path, node: Option<&str>) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, _) = config.node(node)?;
    let node_name = node_name.to_string();
    require_root("lbd run")?;
    let _lock = lock_node(&node_name)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut agent = Agent::start(config_path.to_path_buf(), config, node_name).await?;
        agent.serve().await
    })
}

/// `lbd stop`: with `detach`, removes this node's pinned link and maps (which
/// detaches the program), its forward-drop table and the VIPs.
pub fn stop(config_path: &Path, node: Option<&str>, detach: bool) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, node) = config.node(node)?;
    if !detach && !config.vrrp.is_empty() {
        return stop_vrrp(&config, node_name, &node.interface);
    }
    if !detach {
        println!(
            "lbd stop: nothing to do without --detach: in single-node mode the pinned XDP \
             program keeps forwarding while no agent runs; `lbd stop --detach` removes it"
        );
        return Ok(());
    }
    require_root("lbd stop --detach")?;
    let removed = pins::remove_all(Path::new(pins::BPFFS_ROOT), node_name)
        .context("removing the pinned data path")?;
    if removed {
        tracing::info!(
            node = node_name,
            "pinned XDP link and maps removed: the program is detached"
        );
    }
    host::remove_forward_drop(node_name)?;
    let mut vips = desired_state::vips(&config);
    vips.extend(desired_state::vrrp_vips(&config));
    let iface = node.interface.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let ifindex = load::if_index(&iface)?;
        VipAddresses::new(&iface, ifindex)?.remove_all(&vips).await
    })
}

/// `lbd stop` in VRRP mode (systemd's ExecStopPost): the agent is gone, so
/// this node must stop holding the VIPs: they are removed from the
/// interface and the lease is expired, so the data path serves none of
/// them even before the peer's master-down timer fires. The pinned program
/// stays (`--detach` removes it).
fn stop_vrrp(config: &Config, node_name: &str, iface: &str) -> Result<()> {
    require_root("lbd stop")?;
    // Taking the lock proves no agent runs (it would fight us for the VIPs).
    let _lock = lock_node(node_name)?;
    match node_lease(node_name) {
        Ok(Some(lease)) => lease
            .expire()
            .context("expiring the VRRP lease of this node")?,
        Ok(None) => {}
        Err(e) => tracing::warn!("no lease to expire (no data path pinned?): {e:#}"),
    }
    let vips = desired_state::vrrp_vips(config);
    let iface = iface.to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let ifindex = load::if_index(&iface)?;
        VipAddresses::new(&iface, ifindex)?.remove_all(&vips).await
    })?;
    println!(
        "lbd stop: the VRRP VIPs are removed and the lease expired; the pinned XDP program \
         stays (`lbd stop --detach` removes it)"
    );
    Ok(())
}

/// The data-path lease of `node` (its pinned settings map).
pub(super) fn node_lease(node: &str) -> Result<Option<Arc<dyn LeaseStore>>> {
    let lease = crate::dataplane::lease::Lease::open(node)?;
    Ok(Some(Arc::new(lease)))
}

/// Takes `/run/lbd/<node>.lock` for the life of the process: two agents for
/// one node would fight over the same pinned maps and link.
fn lock_node(node: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(RUN_DIR)
        .with_context(|| format!("creating {RUN_DIR}"))?;
    let path = Path::new(RUN_DIR).join(format!("{node}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another lbd is already running for node {node} (it holds {}); stop it first",
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    // The pid lets `lbd reload` find the agent.
    use std::io::Write;
    let mut f = &file;
    let _ = f.set_len(0);
    let _ = writeln!(f, "{}", std::process::id());
    Ok(file)
}

/// `lbd reload`: validates the config, then asks the running agent to re-read
/// it (SIGHUP). An invalid config is reported here and not sent.
pub fn reload(config_path: &Path, node: Option<&str>) -> Result<()> {
    let config = config::load_or_explain(config_path)?;
    let (node_name, _) = config.node(node)?;
    let path = Path::new(RUN_DIR).join(format!("{node_name}.lock"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no lbd is running for node {node_name} ({} does not exist)",
            path.display()
        )
    })?;
    let pid: libc::pid_t = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", path.display()))?;
    // A stale file: the lock is free, so no agent holds it.
    let probe =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        bail!(
            "no lbd is running for node {node_name} (nothing holds {})",
            path.display()
        );
    }
    // SAFETY: kill with a pid read from the agent's lock file.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling lbd (pid {pid}) to reload"));
    }
    println!(
        "lbd (pid {pid}) is reloading {}; its log says what changed",
        config_path.display()
    );
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} must run as root: it loads an XDP program, pins BPF maps and changes sysctls"
        );
    }
    Ok(())
}
