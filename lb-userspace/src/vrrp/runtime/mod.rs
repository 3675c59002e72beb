//! The VRRP runtime: every instance of this node on a dedicated OS thread
//! with its own current-thread tokio runtime, so that nothing else in the
//! agent (health checks, the admin page, map writes) can delay an advert or
//! a timer. The agent talks to it through [`VrrpHandle`] and hears about
//! state changes on a channel of [`TransitionReport`]s.
//!
//! Start-up: the sockets, GARP senders and netlink handles are opened on
//! the thread before [`start`] returns, so a missing interface or
//! capability fails the agent's start with a clear error. An instance whose
//! VIPs are on the interface while the lease is still fresh resumes as
//! master (`resume`); otherwise VIPs left behind are removed and it starts
//! as backup. The lease is renewed while the thread runs and expired after
//! a graceful shutdown.

pub mod advert;
pub mod instance;
pub mod lease;
pub mod probes;
pub mod resume;
pub mod seq;
pub mod status;
pub mod timers;
pub mod tracking;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::vips::VipAddresses;
use crate::vrrp::config::NodeInstance;
use crate::vrrp::garp::GarpSender;
use crate::vrrp::socket::{VrrpSocket, interface_index};
use crate::vrrp::state::{Event, Transition};
use instance::{Command, Instance, Io, XdpProbe};

pub use lease::LeaseStore;
pub use status::InstanceStatus;
pub use tracking::Condition;

/// How long a graceful shutdown may take before the agent stops waiting.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// One state change of one instance, for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionReport {
    pub instance: String,
    pub transition: Transition,
    /// The instance's VIPs (held by this node while it is master).
    pub vips: Vec<Ipv4Addr>,
}

/// What the runtime needs from the agent.
pub struct RuntimeOptions {
    pub instances: Vec<NodeInstance>,
    /// The data-path lease; `None` runs without one (never resumes).
    pub lease: Option<Arc<dyn LeaseStore>>,
    /// The pinned XDP link and the interface it serves (xdp-attached).
    pub xdp_link: PathBuf,
    pub xdp_ifindex: u32,
    /// Observations known at start (service-up, from the agent's health).
    pub conditions: Vec<(Condition, bool)>,
}

/// The agent's handle on the VRRP thread.
pub struct VrrpHandle {
    commands: Vec<UnboundedSender<Command>>,
    cells: Vec<status::StatusCell>,
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
    resumed: BTreeSet<String>,
}

impl VrrpHandle {
    /// The instances that resumed as master at start (fresh lease, VIPs in
    /// place): the agent serves their VIPs from its first map write.
    pub fn resumed(&self) -> &BTreeSet<String> {
        &self.resumed
    }

    /// Reports a tracked condition to every instance (those that do not
    /// track it ignore it; repeating the last value changes nothing).
    pub fn set_condition(&self, condition: Condition, holds: bool) {
        for tx in &self.commands {
            let _ = tx.send(Command::SetCondition(condition.clone(), holds));
        }
    }

    /// Every instance's status, in config order.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.cells.iter().map(|c| c.snapshot()).collect()
    }

    /// Hands over: every master sends priority 0 and removes its VIPs, then
    /// the lease is expired. Waits for that (at most a few seconds).
    pub async fn shutdown(self) -> Result<()> {
        for tx in &self.commands {
            let _ = tx.send(Command::Shutdown);
        }
        tokio::time::timeout(SHUTDOWN_TIMEOUT, self.done)
            .await
            .map_err(|_| {
                anyhow!(
                    "the VRRP thread did not finish its handover within {}s",
                    SHUTDOWN_TIMEOUT.as_secs()
                )
            })?
            .map_err(|_| anyhow!("the VRRP thread ended without finishing its handover"))?;
        self.thread
            .join()
            .map_err(|_| anyhow!("the VRRP thread panicked"))
    }
}

/// Starts the VRRP thread; returns once every instance's sockets are open.
pub async fn start(
    options: RuntimeOptions,
) -> Result<(VrrpHandle, UnboundedReceiver<TransitionReport>)> {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let mut commands = Vec::new();
    let mut receivers = Vec::new();
    let mut cells = Vec::new();
    for i in &options.instances {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        receivers.push(rx);
        cells.push(status::StatusCell::new(
            &i.name,
            i.machine.priority,
            i.rx.vips.clone(),
        ));
    }
    let thread_cells = cells.clone();
    let thread = std::thread::Builder::new()
        .name("vrrp".into())
        .spawn(move || {
            thread_main(
                options,
                thread_cells,
                receivers,
                reports_tx,
                ready_tx,
                done_tx,
            )
        })
        .context("starting the VRRP thread")?;
    let resumed = ready
        .await
        .map_err(|_| anyhow!("the VRRP thread ended while starting"))??;
    Ok((
        VrrpHandle {
            commands,
            cells,
            done,
            thread,
            resumed,
        },
        reports,
    ))
}

fn thread_main(
    options: RuntimeOptions,
    cells: Vec<status::StatusCell>,
    receivers: Vec<UnboundedReceiver<Command>>,
    reports: UnboundedSender<TransitionReport>,
    ready: oneshot::Sender<Result<BTreeSet<String>>>,
    done: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(anyhow!(e).context("starting the VRRP thread's runtime")));
            return;
        }
    };
    runtime.block_on(async move {
        let plan = lease::plan(&options.instances);
        let lease = options.lease.clone();
        let prepared = match prepare(options, cells, reports).await {
            Ok(prepared) => prepared,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let resumed = prepared
            .iter()
            .filter(|(_, start)| *start == Event::Resume)
            .map(|(instance, _)| instance.name().to_string())
            .collect();
        let _ = ready.send(Ok(resumed));
        let keeper = match (&lease, plan) {
            (Some(lease), Some(plan)) => Some(tokio::spawn(lease::keep(lease.clone(), plan))),
            _ => None,
        };
        let tasks: Vec<_> = prepared
            .into_iter()
            .zip(receivers)
            .map(|((instance, start), commands)| tokio::spawn(instance.run(start, commands)))
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!("a VRRP instance task failed: {e}");
            }
        }
        if let Some(keeper) = keeper {
            keeper.abort();
        }
        if let Some(lease) = lease {
            match lease.expire() {
                Ok(()) => tracing::info!(
                    "VRRP lease expired: this node's data path serves none of the VIPs"
                ),
                Err(e) => tracing::error!("expiring the VRRP lease failed: {e:#}"),
            }
        }
    });
    let _ = done.send(());
}

/// Opens every instance's sockets and decides how each starts.
async fn prepare(
    options: RuntimeOptions,
    cells: Vec<status::StatusCell>,
    reports: UnboundedSender<TransitionReport>,
) -> Result<Vec<(Instance, Event)>> {
    let remaining = match &options.lease {
        Some(lease) => lease.remaining().unwrap_or_else(|e| {
            tracing::warn!("reading the VRRP lease failed; starting as backup: {e:#}");
            None
        }),
        None => None,
    };
    let mut out = Vec::new();
    for (spec, cell) in options.instances.into_iter().zip(cells) {
        let iface = spec.interface.clone();
        let ifindex = interface_index(&iface)?;
        let socket = VrrpSocket::open(&iface, spec.uses_ah())
            .with_context(|| format!("VRRP instance {}", spec.name))?;
        let garp = Arc::new(
            GarpSender::open(&iface).with_context(|| format!("VRRP instance {}", spec.name))?,
        );
        let vips = VipAddresses::new(&iface, ifindex.get())?;
        let vip_set: BTreeSet<Ipv4Addr> = spec.rx.vips.iter().copied().collect();
        let present = vips.present(&vip_set).await?;
        let start = if resume::should_resume(remaining, &vip_set, &present) {
            tracing::info!(
                left_ms = remaining.unwrap_or_default().as_millis() as u64,
                "VRRP {}: the lease is fresh and the VIPs are in place: resuming as master",
                spec.name
            );
            Event::Resume
        } else {
            if !present.is_empty() {
                tracing::info!(
                    "VRRP {}: removing {} VIP(s) an earlier agent left (its lease is not fresh)",
                    spec.name,
                    present.len()
                );
                vips.remove_all(&present).await?;
            }
            Event::Startup
        };
        let xdp = XdpProbe {
            link_pin: options.xdp_link.clone(),
            ifindex: options.xdp_ifindex,
        };
        let mut instance =
            Instance::new(spec, Io { socket, garp, vips }, xdp, cell, reports.clone());
        for (condition, holds) in &options.conditions {
            instance.preset(condition, *holds);
        }
        out.push((instance, start));
    }
    Ok(out)
}
