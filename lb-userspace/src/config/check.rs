//! `[service.check]` and a backend's `check = { ... }`: the health check of
//! a service, and per-backend overrides laid over it key by key.

use std::ops::Range;
use std::time::Duration;

use toml_edit::Item;

use super::report::Report;
use super::schema::{CheckKind, HealthCheck, StatusMatch};
use super::section::{Section, array, boolean, integer, text};
use super::values;

/// A value as written, with the dotted key it was written under (a
/// backend's effective check mixes keys of two tables).
#[derive(Clone, Debug)]
pub(super) struct Written<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
    pub key: String,
}

/// The keys of one check table as written; `None` when not written.
#[derive(Clone, Debug, Default)]
pub(super) struct CheckDraft {
    pub kind: Option<Written<CheckKind>>,
    pub path: Option<Written<String>>,
    pub expect: Option<Written<Vec<StatusMatch>>>,
    pub host: Option<Written<String>>,
    pub sni: Option<Written<String>>,
    pub verify: Option<Written<bool>>,
    pub inter: Option<Written<Duration>>,
    pub fastinter: Option<Written<Duration>>,
    pub downinter: Option<Written<Duration>>,
    pub rise: Option<Written<u32>>,
    pub fall: Option<Written<u32>>,
    pub timeout: Option<Written<Duration>>,
    pub port: Option<Written<u16>>,
    /// Some value was invalid (and reported): no check can be built.
    pub invalid: bool,
}

/// Reads the `check` table of `parent` (a service or a backend). `Ok(None)`
/// when absent; `Err` when `check` is not a table (reported).
pub(super) fn read(parent: &mut Section, report: &mut Report) -> Result<Option<CheckDraft>, ()> {
    let mut section = match parent.table(report, "check") {
        Ok(Some(section)) => section,
        Ok(None) => return Ok(None),
        Err(_) => return Err(()),
    };
    let kinds = [
        ("tcp", CheckKind::Tcp),
        ("tls-hello", CheckKind::TlsHello),
        ("http", CheckKind::Http),
        ("https", CheckKind::Https),
    ];
    let mut invalid = false;
    let s = &mut section;
    let i = &mut invalid;
    let draft = CheckDraft {
        kind: field(
            s,
            report,
            i,
            "kind",
            text(|t| values::choice(t, &kinds, &[])),
        ),
        path: field(s, report, i, "path", text(values::http_path)),
        expect: field(s, report, i, "expect", array(values::status_match)),
        host: field(s, report, i, "host", text(values::host_header)),
        sni: field(s, report, i, "sni", text(values::server_name)),
        verify: field(s, report, i, "verify", boolean()),
        inter: field(s, report, i, "inter", text(values::duration)),
        fastinter: field(s, report, i, "fastinter", text(values::duration)),
        downinter: field(s, report, i, "downinter", text(values::duration)),
        rise: field(s, report, i, "rise", integer(values::check_count)),
        fall: field(s, report, i, "fall", integer(values::check_count)),
        timeout: field(s, report, i, "timeout", text(values::duration)),
        port: field(s, report, i, "port", integer(values::port)),
        invalid: false,
    };
    if let Some(expect) = draft.expect.as_ref().filter(|e| e.value.is_empty()) {
        report.push(
            expect.span.clone(),
            &expect.key,
            "no status would count as healthy; leave `expect` out for 2xx and 3xx",
        );
        invalid = true;
    }
    section.finish(report);
    Ok(Some(CheckDraft { invalid, ..draft }))
}

fn field<'d, T>(
    section: &mut Section<'d>,
    report: &mut Report,
    invalid: &mut bool,
    key: &'static str,
    convert: impl FnOnce(&'d Item) -> Result<T, String>,
) -> Option<Written<T>> {
    match section.optional(report, key, convert) {
        Ok(found) => found.map(|at| Written {
            value: at.value,
            span: at.span,
            key: section.key_path(key),
        }),
        Err(_) => {
            *invalid = true;
            None
        }
    }
}

impl CheckDraft {
    /// The backend's keys over the service's; `None` when neither table exists.
    pub fn effective(service: Option<&CheckDraft>, backend: Option<&CheckDraft>) -> Option<Self> {
        let (service, backend) = match (service, backend) {
            (None, None) => return None,
            (Some(only), None) | (None, Some(only)) => return Some(only.clone()),
            (Some(service), Some(backend)) => (service, backend),
        };
        fn pick<T: Clone>(
            top: &Option<Written<T>>,
            below: &Option<Written<T>>,
        ) -> Option<Written<T>> {
            top.clone().or_else(|| below.clone())
        }
        Some(CheckDraft {
            kind: pick(&backend.kind, &service.kind),
            path: pick(&backend.path, &service.path),
            expect: pick(&backend.expect, &service.expect),
            host: pick(&backend.host, &service.host),
            sni: pick(&backend.sni, &service.sni),
            verify: pick(&backend.verify, &service.verify),
            inter: pick(&backend.inter, &service.inter),
            fastinter: pick(&backend.fastinter, &service.fastinter),
            downinter: pick(&backend.downinter, &service.downinter),
            rise: pick(&backend.rise, &service.rise),
            fall: pick(&backend.fall, &service.fall),
            timeout: pick(&backend.timeout, &service.timeout),
            port: pick(&backend.port, &service.port),
            invalid: service.invalid || backend.invalid,
        })
    }

    /// The kind, `tcp` when not written.
    pub fn kind(&self) -> CheckKind {
        self.kind.as_ref().map_or(CheckKind::Tcp, |k| k.value)
    }

    /// Keys written that the check's kind does not use, with the kinds that
    /// would use them: `(key path, span, used by)`.
    pub fn misplaced_keys(&self) -> Vec<(&str, Option<Range<usize>>, &'static str)> {
        use CheckKind::*;
        fn at<T>(w: &Option<Written<T>>) -> Option<(&str, Option<Range<usize>>)> {
            w.as_ref().map(|w| (w.key.as_str(), w.span.clone()))
        }
        let kind = self.kind();
        let rules: [(_, &[CheckKind], &'static str); 5] = [
            (at(&self.path), &[Http, Https], "http and https"),
            (at(&self.expect), &[Http, Https], "http and https"),
            (at(&self.host), &[Http, Https], "http and https"),
            (at(&self.sni), &[TlsHello, Https], "tls-hello and https"),
            (at(&self.verify), &[Https], "https"),
        ];
        rules
            .into_iter()
            .filter(|(_, kinds, _)| !kinds.contains(&kind))
            .filter_map(|(written, _, used_by)| written.map(|(key, span)| (key, span, used_by)))
            .collect()
    }

    /// The resolved check; `None` when a value was invalid.
    pub fn build(&self) -> Option<HealthCheck> {
        if self.invalid {
            return None;
        }
        let mut check = HealthCheck::new(self.kind());
        fn set<T: Clone>(target: &mut T, written: &Option<Written<T>>) {
            if let Some(w) = written {
                *target = w.value.clone();
            }
        }
        set(&mut check.path, &self.path);
        set(&mut check.expect, &self.expect);
        set(&mut check.verify, &self.verify);
        set(&mut check.inter, &self.inter);
        set(&mut check.rise, &self.rise);
        set(&mut check.fall, &self.fall);
        set(&mut check.timeout, &self.timeout);
        let value = |w: &Option<Written<_>>| w.as_ref().map(|w: &Written<_>| w.value);
        check.host = self.host.as_ref().map(|w| w.value.clone());
        check.sni = self.sni.as_ref().map(|w| w.value.clone());
        check.fastinter = value(&self.fastinter);
        check.downinter = value(&self.downinter);
        check.port = self.port.as_ref().map(|w| w.value);
        Some(check)
    }
}
