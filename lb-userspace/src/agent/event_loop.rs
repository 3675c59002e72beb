//! The event loop: signals, health events, VRRP transitions, control
//! requests and the periodic work (flow collection, backend paths, the
//! interface), each handled to completion before the next, so the agent is
//! the one writer of the maps and its state never races itself.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Agent;
use super::startup::backend_addresses;
use super::{desired_state, notify};
use super::{health_file, observed};
use crate::{
    dataplane::neigh::Reach,
    health::HealthEvent,
    vrrp::{
        runtime::{Condition, TransitionReport, VrrpHandle},
        state::State,
    },
};

/// How often idle flows are collected. Timeouts are seconds to hours, so a
/// few seconds of lateness is harmless.
const GC_INTERVAL: Duration = Duration::from_secs(5);

/// How often the backends' paths are looked at again (routes come and go,
/// next hops stop answering ARP): a backend without one is held DOWN until
/// the sync after its path returns.
const PATH_INTERVAL: Duration = Duration::from_secs(2);

/// How often the interface is looked at (removed, re-created, MTU, link).
/// The VRRP thread watches the link itself, faster, for FAULT.
pub(super) const IFACE_INTERVAL: Duration = Duration::from_secs(1);

impl Agent {
    pub(super) async fn serve(&mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut gc = tokio::time::interval(GC_INTERVAL);
        let mut paths = tokio::time::interval(PATH_INTERVAL);
        paths.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        paths.tick().await;
        let mut iface = tokio::time::interval(IFACE_INTERVAL);
        iface.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iface.tick().await;
        let mut watchdog = notify::Watchdog::from_env();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    notify::reloading();
                    if let Err(e) = self.reload().await {
                        tracing::error!("reload refused, the running config keeps serving: {e:#}");
                    }
                    notify::ready(&self.status_line());
                }
                _ = watchdog.ping() => {}
                Some(event) = self.health_events.recv() => {
                    // Checks passing to a backend held for its path suggest
                    // the path is back: look now, not at the next tick.
                    let look = event.up && self.health.unreachable(&event.key()).is_some();
                    self.health_changed(event);
                    if look {
                        self.refresh_paths().await;
                    }
                }
                report = next_report(&mut self.vrrp_reports) => match report {
                    Some(report) => self.vrrp_changed(report),
                    None => {
                        tracing::error!("the VRRP thread stopped: this node no longer takes part in VRRP");
                        self.vrrp_reports = None;
                    }
                },
                Some(pending) = self.control_requests.recv() => {
                    let answer = self.answer(pending.request);
                    // The client may have hung up; nothing to do then.
                    let _ = pending.reply.send(answer);
                }
                _ = gc.tick() => self.collect_garbage(),
                _ = paths.tick() => self.refresh_paths().await,
                _ = iface.tick() => self.watch_interface().await,
            }
        }
        if let Some(vrrp) = self.vrrp.take() {
            self.hand_over(vrrp).await;
        }
        notify::stopping();
        tracing::info!(
            "agent stopping; the pinned XDP program keeps forwarding (`lbd stop --detach` removes it)"
        );
        Ok(())
    }

    /// Graceful stop with VRRP: masters resign with priority 0 so the peer
    /// takes over within its skew time, the VIPs go, the lease is expired
    /// and every service is made inactive.
    pub(super) async fn hand_over(&mut self, vrrp: VrrpHandle) {
        tracing::info!("VRRP handover: resigning mastership before stopping");
        if let Err(e) = vrrp.shutdown().await {
            tracing::error!("VRRP handover incomplete: {e:#}");
        }
        self.masters.clear();
        match self.program() {
            Ok(()) => tracing::info!(
                "VRRP handover done: priority 0 sent, VIPs removed, lease expired, services inactive"
            ),
            Err(e) => {
                tracing::error!("VRRP handover: the services could not be made inactive: {e:#}")
            }
        }
    }

    /// An instance changed state: its VIPs' services follow (ACTIVE only
    /// while master). The VRRP thread has logged the transition.
    pub(super) fn vrrp_changed(&mut self, report: TransitionReport) {
        let changed = if report.transition.to == State::Master {
            self.masters.insert(report.instance.clone())
        } else {
            self.masters.remove(&report.instance)
        };
        if !changed {
            return;
        }
        let active = report.transition.to == State::Master;
        match self.program() {
            Ok(()) => tracing::info!(
                vips = ?report.vips,
                "VRRP {}: services on its VIPs are {}",
                report.instance,
                if active { "active" } else { "inactive" }
            ),
            Err(e) => tracing::error!(
                "VRRP {}: the services could not be made {}: {e:#}",
                report.instance,
                if active { "active" } else { "inactive" }
            ),
        }
    }

    /// A backend went UP or DOWN (the scheduler has logged it with its
    /// reason): rebuild its service's ring and write the maps at once, so
    /// the change reaches the data path within the check interval.
    pub(super) fn health_changed(&mut self, event: HealthEvent) {
        let key = event.key();
        // An event from a check stopped since (backend removed or its check
        // dropped by a reload) no longer describes a checked backend.
        if self.checks.is_up(&key).is_none() {
            tracing::debug!("{key}: ignoring a health event of a backend no longer checked");
            return;
        }
        if !self.health.record(key.clone(), event.up) {
            return;
        }
        self.push_services_up();
        self.observed.changed(key.clone(), event.at);
        self.save_health();
        let started = Instant::now();
        match self.program() {
            Ok(()) => tracing::debug!(
                backend = %key,
                up = event.up,
                took_us = started.elapsed().as_micros() as u64,
                "maps updated for the health change"
            ),
            Err(e) => tracing::error!(
                "{key} is {} but the maps could not be updated: {e:#}",
                if event.up { "UP" } else { "DOWN" }
            ),
        }
    }

    /// Keeps the checked backends held DOWN for the next agent. A file that
    /// cannot be written costs only that: a restart relearns health.
    pub(super) fn save_health(&self) {
        let down = self.health.down().map(|key| {
            let at = self
                .observed
                .changed_at
                .get(key)
                .map_or(0, |at| observed::unix_ms(*at));
            (key, at)
        });
        if let Err(e) = health_file::save(&self.health_path, &health_file::SavedHealth::new(down)) {
            tracing::warn!("health not kept for a restart: {e:#}");
        }
    }

    /// Tells the VRRP thread which services can take new clients
    /// (`service-up` tracking).
    pub(super) fn push_services_up(&self) {
        if let Some(vrrp) = &self.vrrp {
            for (service, up) in desired_state::services_up(&self.config, &self.health, &self.admin)
            {
                vrrp.set_condition(Condition::ServiceUp(service), up);
            }
        }
    }

    /// Looks at every backend's path again; see [`Agent::paths_changed`].
    pub(super) async fn refresh_paths(&mut self) {
        match self.neighbours.sync(&backend_addresses(&self.config)).await {
            Ok(reach) => self.paths_changed(&reach),
            Err(e) => tracing::warn!("looking at the backends' paths: {e:#}"),
        }
    }

    /// Backends that lost their path go DOWN at once (logged once, with the
    /// reason) and a checked one restarts its checks fully DOWN; when the
    /// path returns an unchecked backend is UP again, a checked one after
    /// `rise` successful checks (HAProxy's rule, through the scheduler).
    pub(super) fn paths_changed(&mut self, reach: &BTreeMap<Ipv4Addr, Reach>) {
        let changes = self
            .health
            .set_unreachable(desired_state::unreachable_backends(&self.config, reach));
        if changes.lost.is_empty() && changes.back.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for (key, _) in &changes.lost {
            if self.checks.hold_down(key) {
                self.health.record(key.clone(), false);
            }
            self.observed.changed(key.clone(), now);
        }
        for key in &changes.back {
            self.observed.changed(key.clone(), now);
        }
        self.save_health();
        self.push_services_up();
        // The maps first: once the line is logged, the data path agrees.
        if let Err(e) = self.program() {
            tracing::error!("the maps could not follow the backends' paths: {e:#}");
        }
        for (key, reason) in &changes.lost {
            tracing::warn!("{key} DOWN: {reason}");
        }
        for key in &changes.back {
            match self.checks.status(key) {
                Some(status) if !status.up => tracing::info!(
                    "{key}: its path is back; UP after {} successful checks",
                    status.check.rise
                ),
                _ => tracing::info!("{key} UP: its path is back"),
            }
        }
    }

    pub(super) fn collect_garbage(&mut self) {
        let started = Instant::now();
        match self.dataplane.collect_garbage(&self.gc_policy) {
            Ok(report) => {
                tracing::debug!(
                    scanned = report.scanned,
                    flows_deleted = report.flows_deleted,
                    half_open_deleted = report.half_open_deleted,
                    persist_deleted = report.persist_deleted,
                    active = report.active_per_backend.values().sum::<u64>(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "flow collection"
                );
                self.observed.active = Some((SystemTime::now(), report.active_per_backend));
                self.observed.ports = report.ports;
            }
            Err(e) => tracing::warn!("flow collection failed: {e:#}"),
        }
        let exhausted = lb_common::reason::label(lb_common::reason::DROP_SNAT_EXHAUSTED);
        if let Ok(reasons) = self.dataplane.reasons() {
            let count = reasons
                .iter()
                .find(|(label, _)| *label == exhausted)
                .map_or(0, |(_, n)| *n);
            if let Some(dropped) = self.observed.snat_exhausted.observe(count, Instant::now()) {
                tracing::warn!(
                    dropped,
                    "SNAT ports ran out: {dropped} new connections dropped since the last report \
                     (drop_snat_exhausted); `lbd status --json` shows snat_ports_in_use per \
                     backend, `lbd check` the ceiling of the config"
                );
            }
        }
        // New flows per second: the counters' increase since the last pass.
        let counters: Vec<(u32, u64)> = self
            .backend_ids()
            .into_iter()
            .filter_map(|id| Some((id, self.dataplane.backend_stats(id).ok()?.new_flows)))
            .collect();
        self.observed.rates.sample(Instant::now(), counters);
    }
}

/// The next VRRP transition; never ready in single-node mode.
pub(super) async fn next_report(
    reports: &mut Option<UnboundedReceiver<TransitionReport>>,
) -> Option<TransitionReport> {
    match reports {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}
