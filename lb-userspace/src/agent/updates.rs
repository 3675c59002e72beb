//! The all-or-nothing updates: a reload and an admin state change are
//! computed in full and written to the maps first; if the maps refuse,
//! nothing of the agent's state changed.

use std::{net::Ipv4Addr, time::SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use super::Agent;
use super::startup::{
    backend_addresses, config_version, hold_checked_down, monotonic_s, save_state,
};
use super::{desired_state, status_report};
use crate::control::AdminState;
use crate::{
    config::{self},
    dataplane::host,
};

impl Agent {
    /// Re-reads the config and updates the maps in place. A config that does
    /// not validate, or that changes what only a restart can change, is
    /// refused and changes nothing.
    pub(super) async fn reload(&mut self) -> Result<()> {
        let new = config::load_or_explain(&self.config_path)?;
        let old_node = &self.config.nodes[&self.node_name];
        let Some(new_node) = new.nodes.get(&self.node_name) else {
            bail!("the new config has no [node.{}]", self.node_name);
        };
        if new_node.interface != old_node.interface || new_node.xdp_mode != old_node.xdp_mode {
            bail!(
                "changing the interface or XDP mode needs a restart (`lbd stop --detach`, then start)"
            );
        }
        if new.vrrp != self.config.vrrp {
            bail!(
                "changing [[vrrp]] needs a restart of lbd (on the backup first); the running \
                 instances keep going as they are"
            );
        }
        let vrrp_mode = !new.vrrp.is_empty();
        if desired_state::map_sizes(&new) != desired_state::map_sizes(&self.config) {
            bail!(
                "changing [limits] needs a restart with `lbd stop --detach` first (map sizes are fixed at load)"
            );
        }
        if new_node.snat_ports != old_node.snat_ports {
            host::prepare(
                &self.node_name,
                &new_node.interface,
                host::PortRange::new(new_node.snat_ports.min, new_node.snat_ports.max)?,
            )?;
        }
        let mut ids = self.ids.clone();
        ids.sync(&new, monotonic_s())?;
        let reach = self.neighbours.sync(&backend_addresses(&new)).await?;
        let old_vips = desired_state::vips(&self.config);
        let new_vips = desired_state::vips(&new);
        if !vrrp_mode {
            self.vips.add_all(&new_vips).await?;
        }
        // Admin states of backends still there carry over; health carries
        // over to the backends still checked; the checks follow the new
        // config only once the maps have taken it.
        let admin = self.admin.retained_for(&new);
        let new_checks = desired_state::checks(&new, &admin);
        let mut health = self
            .health
            .carried_over(new_checks.iter().map(|(key, _, _)| key));
        let reach_changes =
            health.set_unreachable(desired_state::unreachable_backends(&new, &reach));
        let active = desired_state::active_vips(&new, &self.masters);
        let desired = desired_state::desired_state(&new, new_node, &ids, &health, &admin, &active);
        self.dataplane
            .apply(&desired)
            .context("programming the BPF maps")?;
        self.checks
            .sync_with(new_checks, |key| !health.is_up(&key.service, &key.backend));
        for (key, reason) in &reach_changes.lost {
            tracing::warn!("{key} DOWN: {reason}");
            self.checks.hold_down(key);
        }
        hold_checked_down(&self.checks, &mut health);
        self.health = health;
        let gone: std::collections::BTreeSet<Ipv4Addr> =
            old_vips.difference(&new_vips).copied().collect();
        if !vrrp_mode {
            self.vips.remove_all(&gone).await?;
        }
        self.gc_policy = desired_state::gc_policy(&new, &ids);
        self.ids = ids;
        self.admin = admin;
        if let Some(http) = &mut self.http {
            http.update(new.admin.as_ref(), &new.redirects);
        } else if new.admin.is_some() || !new.redirects.is_empty() {
            tracing::warn!("[admin] or [[redirect]] added: they start when lbd restarts");
        }
        self.config = new;
        self.save_health();
        self.push_services_up();
        self.observed.config_version = config_version(&self.config_path);
        if let Err(e) = save_state(&self.state_path, &self.admin, &self.ids) {
            tracing::error!(
                "the new config serves, but its ids are not saved (a restart may renumber): {e:#}"
            );
        }
        tracing::info!(
            services = self.config.services.len(),
            backends = self.config.backend_count(),
            "config reloaded"
        );
        Ok(())
    }

    /// Sets a backend's admin state: maps first, then the state file, then
    /// the checks. When the maps refuse, nothing changed; when only the
    /// state file cannot be written, the change is in effect and the answer
    /// says it is not saved.
    pub(super) fn set_state(&mut self, service: &str, backend: &str, word: &str) -> Result<String> {
        let state: AdminState = word.parse().map_err(|e: String| anyhow!(e))?;
        let key =
            status_report::find_backend(&self.config, service, backend).map_err(|e| anyhow!(e))?;
        let old = self.admin.state(service, backend);
        if old == state {
            return Ok(format!("{key} is already {state}"));
        }
        let mut admin = self.admin.clone();
        admin.set(key.clone(), state);
        // A backend in maint is not checked, so it is neither UP nor DOWN;
        // leaving maint, its check starts again from UP.
        let mut health = self.health.clone();
        if !state.is_checked() {
            health.record(key.clone(), true);
        }
        let node = self.node().clone();
        let active = desired_state::active_vips(&self.config, &self.masters);
        let desired =
            desired_state::desired_state(&self.config, &node, &self.ids, &health, &admin, &active);
        self.dataplane
            .apply(&desired)
            .context("the maps could not be updated; nothing changed")?;
        // The change serves even when it cannot be saved (a full or
        // read-only /var/lib/lbd must not stop an operator draining a
        // backend); the caller is told it will not survive a restart.
        let unsaved = save_state(&self.state_path, &admin, &self.ids).err();
        self.admin = admin;
        self.health = health;
        self.save_health();
        if state.is_checked() {
            self.checks
                .sync(desired_state::checks(&self.config, &self.admin));
        } else {
            self.checks.stop(&key);
        }
        self.push_services_up();
        self.observed.changed(key.clone(), SystemTime::now());
        tracing::info!("{key}: admin state {old} -> {state}");
        match unsaved {
            None => Ok(format!("{key}: {old} -> {state}")),
            Some(e) => {
                tracing::warn!("{key}: admin state {state} is not saved: {e:#}");
                Ok(format!(
                    "{key}: {old} -> {state}, in effect but NOT SAVED (it is lost if lbd \
                     restarts): {e:#}"
                ))
            }
        }
    }
}
