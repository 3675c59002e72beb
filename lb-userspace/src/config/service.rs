//! `[[service]]`, its `[service.timeouts]`, `[service.check]` and its
//! `[[service.backend]]`s.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::time::Duration;

use super::check::{self, CheckDraft};
use super::report::Report;
use super::schema::{Backend, Mode, Protocol, Scheduler, Service, Timeouts};
use super::section::{At, Section, integer, text};
use super::values;

/// A service as written; each field `None` when its error was reported.
/// Fields with a default hold the default when absent.
pub(super) struct ServiceDraft {
    /// `service.NAME`, or `service[N]` when the name is missing or invalid.
    pub path: String,
    pub span: Option<Range<usize>>,
    pub name: Option<At<String>>,
    pub vip: Option<At<Ipv4Addr>>,
    pub port: Option<At<u16>>,
    pub protocol: Option<Protocol>,
    pub mode: Option<Mode>,
    pub scheduler: Option<Scheduler>,
    /// `Some(None)`: not written, the VIP is used.
    pub snat_address: Option<Option<At<Ipv4Addr>>>,
    pub persistence_timeout: Option<Option<Duration>>,
    pub timeouts: Option<Timeouts>,
    /// `Some(None)`: not written.
    pub connection_rate: Option<Option<u32>>,
    /// `Some(None)`: no `[service.check]`.
    pub check: Option<Option<CheckDraft>>,
    pub backends: Vec<BackendDraft>,
}

pub(super) struct BackendDraft {
    pub path: String,
    pub span: Option<Range<usize>>,
    pub name: Option<At<String>>,
    pub address: Option<At<SocketAddrV4>>,
    pub weight: Option<u32>,
    /// `Some(None)`: no `check` overrides.
    pub check: Option<Option<CheckDraft>>,
}

pub(super) fn read_all(root: &mut Section, report: &mut Report) -> Vec<ServiceDraft> {
    root.array_of_tables(report, "service")
        .into_iter()
        .map(|section| read_one(section, report))
        .collect()
}

fn read_one(mut section: Section, report: &mut Report) -> ServiceDraft {
    // The name comes first: every other error is reported under it.
    let name = section.required(report, "name", text(values::name));
    if let Some(name) = &name {
        section.path = format!("service.{}", name.value);
    }
    let protocols = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
    let modes = [("nat", Mode::Nat)];
    let schedulers = [("source", Scheduler::Source), ("flow", Scheduler::Flow)];
    let vip = section.required(report, "vip", text(values::unicast_ipv4));
    let port = section.required(report, "port", integer(values::port));
    let protocol = section.or_default(
        report,
        "protocol",
        Protocol::Tcp,
        text(|t| values::choice(t, &protocols, &[])),
    );
    let mode = section.or_default(
        report,
        "mode",
        Mode::Nat,
        text(|t| values::choice(t, &modes, &["dsr"])),
    );
    let scheduler = section.or_default(
        report,
        "scheduler",
        Scheduler::Source,
        text(|t| values::choice(t, &schedulers, &[])),
    );
    let snat_address = section
        .optional(report, "snat_address", text(values::unicast_ipv4))
        .ok();
    let persistence_timeout = section
        .optional(report, "persistence_timeout", text(values::duration))
        .ok()
        .map(|found| found.map(|at| at.value));
    let timeouts = read_timeouts(&mut section, report);
    let connection_rate = section
        .optional(report, "connection_rate", integer(values::connection_rate))
        .ok()
        .map(|found| found.map(|at| at.value));
    let check = check::read(&mut section, report).ok();
    let backends = section
        .array_of_tables(report, "backend")
        .into_iter()
        .map(|backend| read_backend(&section.path, backend, report))
        .collect::<Vec<_>>();
    if backends.is_empty() && section.is_absent_or_empty("backend") {
        report.push(
            section.span.clone(),
            &section.key_path("backend"),
            "the service has no backend; add at least one [[service.backend]]",
        );
    }
    let draft = ServiceDraft {
        path: section.path.clone(),
        span: section.span.clone(),
        name,
        vip,
        port,
        protocol,
        mode,
        scheduler,
        snat_address,
        persistence_timeout,
        timeouts,
        connection_rate,
        check,
        backends,
    };
    section.finish(report);
    draft
}

/// `[service.timeouts]`: idle timeouts, each defaulting on its own.
fn read_timeouts(service: &mut Section, report: &mut Report) -> Option<Timeouts> {
    let defaults = Timeouts::default();
    let mut section = match service.table(report, "timeouts") {
        Ok(Some(section)) => section,
        Ok(None) => return Some(defaults),
        Err(_) => return None,
    };
    let mut timeout =
        |key, default| section.or_default(report, key, default, text(values::duration));
    let timeouts = (|| {
        Some(Timeouts {
            tcp_established: timeout("tcp_established", defaults.tcp_established)?,
            tcp_closing: timeout("tcp_closing", defaults.tcp_closing)?,
            tcp_closed: timeout("tcp_closed", defaults.tcp_closed)?,
            tcp_syn: timeout("tcp_syn", defaults.tcp_syn)?,
            udp: timeout("udp", defaults.udp)?,
        })
    })();
    section.finish(report);
    timeouts
}

fn read_backend(service_path: &str, mut section: Section, report: &mut Report) -> BackendDraft {
    let name = section.required(report, "name", text(values::name));
    if let Some(name) = &name {
        section.path = format!("{service_path}.backend.{}", name.value);
    }
    let draft = BackendDraft {
        address: section.required(report, "address", text(values::socket_address)),
        weight: section.or_default(report, "weight", 1, integer(values::weight)),
        check: check::read(&mut section, report).ok(),
        path: section.path.clone(),
        span: section.span.clone(),
        name,
    };
    section.finish(report);
    draft
}

impl ServiceDraft {
    /// The address the service's packets leave with: `snat_address`, else the VIP.
    pub fn effective_snat(&self) -> Option<Ipv4Addr> {
        match self.snat_address.as_ref()? {
            Some(at) => Some(at.value),
            None => self.vip.as_ref().map(|at| at.value),
        }
    }

    pub fn build(self) -> Option<Service> {
        let snat_address = self.effective_snat()?;
        let service_check = self.check.as_ref()?.as_ref();
        let backends = self
            .backends
            .into_iter()
            .map(|backend| backend.build(service_check))
            .collect::<Option<Vec<_>>>()?;
        Some(Service {
            name: self.name?.value,
            vip: self.vip?.value,
            port: self.port?.value,
            protocol: self.protocol?,
            mode: self.mode?,
            scheduler: self.scheduler?,
            snat_address,
            persistence_timeout: self.persistence_timeout?,
            timeouts: self.timeouts?,
            connection_rate: self.connection_rate?,
            backends,
        })
    }
}

impl BackendDraft {
    /// The check this backend runs: its own keys over the service's; `None`
    /// inside when neither table is written. `None` outside when invalid.
    pub fn effective_check(&self, service: Option<&CheckDraft>) -> Option<Option<CheckDraft>> {
        Some(CheckDraft::effective(
            service,
            self.check.as_ref()?.as_ref(),
        ))
    }

    fn build(self, service_check: Option<&CheckDraft>) -> Option<Backend> {
        let check = match self.effective_check(service_check)? {
            Some(draft) => Some(draft.build()?),
            None => None,
        };
        Some(Backend {
            name: self.name?.value,
            address: self.address?.value,
            weight: self.weight?,
            check,
        })
    }
}
