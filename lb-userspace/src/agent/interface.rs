//! The interface under the agent changing while it serves: each change
//! logged once, and a re-created device given the XDP program, forwarding,
//! the VIPs or VRRP again (see `iface_watch` for what counts as a change).

use anyhow::Result;

use super::Agent;
use super::desired_state;
use super::event_loop::IFACE_INTERVAL;
use super::iface_watch::{self, IfaceChange};
use super::startup::start_vrrp;
use crate::{
    dataplane::{host, load},
    vips::VipAddresses,
};

impl Agent {
    /// Looks at the interface; logs each change once and brings the data
    /// path (and VRRP) onto a re-created device.
    pub(super) async fn watch_interface(&mut self) {
        let iface = self.node().interface.clone();
        for change in self.iface_watch.observe(iface_watch::look(&iface)) {
            match change {
                IfaceChange::Gone => {
                    self.reattach_pending = None;
                    tracing::error!(
                        "interface {iface} is gone: nothing is forwarded until it is back; lbd \
                         attaches to it again when an interface of that name appears"
                    );
                }
                IfaceChange::Recreated { from, index } => {
                    tracing::warn!(
                        "interface {iface} is a new device (index {index}): attaching the XDP \
                         program to it again (flows, persistence and counters are kept)"
                    );
                    self.reattach_pending = Some(from);
                }
                IfaceChange::Mtu { from, to } => {
                    tracing::info!("interface {iface}: MTU {from} -> {to}")
                }
                IfaceChange::LinkDown => tracing::warn!(
                    "interface {iface}: link down (no carrier or set down): nothing is \
                     forwarded while it lasts"
                ),
                IfaceChange::LinkUp => tracing::info!("interface {iface}: link up"),
            }
        }
        if let Some(from) = self.reattach_pending {
            match self.reattach(&iface, from).await {
                Ok(()) => {
                    self.reattach_pending = None;
                    self.reattach_failure = None;
                    tracing::info!("interface {iface}: forwarding again on the new device");
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.reattach_failure.as_ref() != Some(&why) {
                        tracing::error!(
                            "interface {iface}: the new device cannot be served yet (lbd tries \
                             again every {}s): {why}",
                            IFACE_INTERVAL.as_secs()
                        );
                        self.reattach_failure = Some(why);
                    }
                }
            }
        }
    }

    /// Everything bound to the old device, onto the new one: the XDP
    /// attachment and the MAC it accepts, forwarding (a per-device sysctl),
    /// the VIPs (single-node mode) or the VRRP instances (their sockets and
    /// addresses were the old device's; they start again as at start-up).
    pub(super) async fn reattach(&mut self, iface: &str, old_index: Option<u32>) -> Result<()> {
        self.dataplane.reattach(old_index)?;
        host::set_forwarding(iface, true)?;
        let index = load::if_index(iface)?;
        self.vips = VipAddresses::new(iface, index)?;
        if !self.config.vrrp.is_empty() {
            if let Some(vrrp) = self.vrrp.take() {
                if let Err(e) = vrrp.shutdown().await {
                    tracing::warn!("VRRP on the old device did not stop cleanly: {e:#}");
                }
                self.vrrp_reports = None;
                self.masters.clear();
                self.program()?;
            }
            let (handle, reports) = start_vrrp(
                &self.config,
                &self.node_name,
                iface,
                &self.dataplane,
                &self.vips,
                &self.admin,
                &self.health,
            )
            .await?;
            self.masters = handle.resumed().clone();
            self.vrrp = Some(handle);
            self.vrrp_reports = Some(reports);
        } else {
            self.vips
                .add_all(&desired_state::vips(&self.config))
                .await?;
        }
        self.program()?;
        self.refresh_paths().await;
        Ok(())
    }
}
