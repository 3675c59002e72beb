//! `[limits]`: sizes of the BPF maps, all optional.

use super::report::Report;
use super::schema::Limits;
use super::section::{At, Section, integer};
use super::values;

/// Each limit as written (span `None` = the default), or `None` when invalid.
pub(super) struct LimitsDraft {
    pub max_services: Option<At<u32>>,
    pub max_backends: Option<At<u32>>,
    pub maglev_size: Option<At<u32>>,
    pub flows: Option<At<u32>>,
    pub half_open: Option<At<u32>>,
    pub persistence: Option<At<u32>>,
}

pub(super) fn read(root: &mut Section, report: &mut Report) -> LimitsDraft {
    let defaults = Limits::default();
    // A `limits` that is not a table was reported; the defaults then stand
    // in, so the rest of the file is still checked against something sensible.
    let mut section = root.table(report, "limits").unwrap_or_default();
    let mut size = |key: &'static str, default: u32| -> Option<At<u32>> {
        let Some(section) = section.as_mut() else {
            return Some(At {
                value: default,
                span: None,
            });
        };
        match section.optional(report, key, integer(values::size)) {
            Ok(Some(found)) => Some(found),
            Ok(None) => Some(At {
                value: default,
                span: None,
            }),
            Err(_) => None,
        }
    };
    let draft = LimitsDraft {
        max_services: size("max_services", defaults.max_services),
        max_backends: size("max_backends", defaults.max_backends),
        maglev_size: size("maglev_size", defaults.maglev_size),
        flows: size("flows", defaults.flows),
        half_open: size("half_open", defaults.half_open),
        persistence: size("persistence", defaults.persistence),
    };
    if let Some(maglev) = draft
        .maglev_size
        .as_ref()
        .filter(|m| !values::prime(m.value))
    {
        report.push(
            maglev.span.clone(),
            "limits.maglev_size",
            format!(
                "{} is not prime; Maglev needs a prime ring size (e.g. 65537, 131071, 262139)",
                maglev.value
            ),
        );
    }
    if let Some(section) = section {
        section.finish(report);
    }
    draft
}

impl LimitsDraft {
    pub fn build(&self) -> Option<Limits> {
        let value = |limit: &Option<At<u32>>| limit.as_ref().map(|at| at.value);
        Some(Limits {
            max_services: value(&self.max_services)?,
            max_backends: value(&self.max_backends)?,
            maglev_size: value(&self.maglev_size)?,
            flows: value(&self.flows)?,
            half_open: value(&self.half_open)?,
            persistence: value(&self.persistence)?,
        })
    }
}
