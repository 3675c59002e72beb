//! `[[vrrp]]`: keepalived's `vrrp_instance` under plain names. Rules that
//! need other tables (node names, service VIPs, tracked services) live in
//! `validate`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::Duration;

use toml_edit::Item;

use super::report::Report;
use super::schema::{AuthType, Garp, Track, TrackCondition, Vrrp, VrrpAuth, VrrpVersion};
use super::section::{At, Section, array, boolean, integer, text};
use super::values;

/// An instance as written; each field `None` when its error was reported.
pub(super) struct VrrpDraft {
    pub path: String,
    pub span: Option<Range<usize>>,
    pub name: Option<At<String>>,
    pub interface: Option<Option<String>>,
    pub virtual_router_id: Option<At<u8>>,
    pub priority: Option<At<BTreeMap<String, u8>>>,
    pub advert_interval: Option<Duration>,
    pub version: Option<VrrpVersion>,
    pub auth: Option<Option<VrrpAuth>>,
    pub unicast_peers: Option<Vec<Ipv4Addr>>,
    pub unicast_src: Option<At<BTreeMap<String, Ipv4Addr>>>,
    pub vips: Option<At<Vec<Ipv4Addr>>>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<Duration>,
    pub garp: Option<Garp>,
    pub track: Vec<Option<At<Track>>>,
}

pub(super) fn read_all(root: &mut Section, report: &mut Report) -> Vec<VrrpDraft> {
    root.array_of_tables(report, "vrrp")
        .into_iter()
        .map(|section| read_one(section, report))
        .collect()
}

fn read_one(mut section: Section, report: &mut Report) -> VrrpDraft {
    let name = section.required(report, "name", text(values::name));
    if let Some(name) = &name {
        section.path = format!("vrrp.{}", name.value);
    }
    let interface = section
        .optional(report, "interface", text(values::interface))
        .ok()
        .map(|found| found.map(|at| at.value));
    let virtual_router_id = section.required(report, "virtual_router_id", integer(vrid));
    let priority = section.required(report, "priority", per_node(priority_value));
    let auth = read_auth(&mut section, report);
    let version = read_version(&mut section, report, auth.as_ref());
    let advert_interval = match section.optional(report, "advert_interval", text(values::duration))
    {
        Err(_) => None,
        Ok(found) => {
            let at = found.unwrap_or(At {
                value: Duration::from_secs(1),
                span: None,
            });
            match version.and_then(|v| advert_interval_fits(at.value, v)) {
                Some(message) => {
                    report.push(at.span, &section.key_path("advert_interval"), message);
                    None
                }
                None => Some(at.value),
            }
        }
    };
    let unicast_peers = section.or_default(report, "unicast_peers", Vec::new(), array(address));
    let unicast_src = section
        .optional(report, "unicast_src", per_node(address))
        .ok()
        .map(|found| {
            found.unwrap_or(At {
                value: BTreeMap::new(),
                span: None,
            })
        });
    let vips = section.required(report, "vips", array(address));
    if let Some(at) = &vips
        && at.value.is_empty()
    {
        report.push(
            at.span.clone(),
            &section.key_path("vips"),
            "list at least one virtual IP",
        );
    }
    let preempt = section.or_default(report, "preempt", true, boolean());
    let preempt_delay = section
        .optional(report, "preempt_delay", text(humantime_or_zero))
        .ok()
        .map(|found| found.map_or(Duration::ZERO, |at| at.value));
    let garp = read_garp(&mut section, report);
    let track = section
        .array_of_tables(report, "track")
        .into_iter()
        .map(|track| read_track(track, report))
        .collect();
    let draft = VrrpDraft {
        path: section.path.clone(),
        span: section.span.clone(),
        name,
        interface,
        virtual_router_id,
        priority,
        advert_interval,
        version,
        auth,
        unicast_peers,
        unicast_src,
        vips,
        preempt,
        preempt_delay,
        garp,
        track,
    };
    section.finish(report);
    draft
}

fn vrid(value: i64) -> Result<u8, String> {
    match u8::try_from(value) {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(format!("virtual_router_id {value} is out of range 1..=255")),
    }
}

fn priority_value(value: &toml_edit::Value) -> Result<u8, String> {
    match value.as_integer().map(u8::try_from) {
        Some(Ok(p)) if p >= 1 => Ok(p),
        _ => Err(format!(
            "priority {value} is not in 1..=255 (255: this node owns the addresses)"
        )),
    }
}

fn address(value: &toml_edit::Value) -> Result<Ipv4Addr, String> {
    match value.as_str() {
        Some(text) => values::unicast_ipv4(text),
        None => Err(format!("expected an address string, found {value}")),
    }
}

/// `{ lb1 = ..., lb2 = ... }`: one value per node name.
fn per_node<'d, T>(
    element: impl Fn(&toml_edit::Value) -> Result<T, String>,
) -> impl FnOnce(&'d Item) -> Result<BTreeMap<String, T>, String> {
    move |item| {
        let Some(table) = item.as_table_like() else {
            return Err("expected a table of node names, e.g. { lb1 = ..., lb2 = ... }".into());
        };
        let mut map = BTreeMap::new();
        for (node, value) in table.iter() {
            let Some(value) = value.as_value() else {
                return Err(format!("node `{node}`: expected a value, found a table"));
            };
            map.insert(
                node.to_string(),
                element(value).map_err(|e| format!("node `{node}`: {e}"))?,
            );
        }
        Ok(map)
    }
}

fn humantime_or_zero(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. \"0s\", \"30s\""))
}

/// v2 carries whole seconds (1..=255); v3 centiseconds (10ms..=40.95s).
fn advert_interval_fits(interval: Duration, version: VrrpVersion) -> Option<String> {
    let ms = interval.as_millis();
    match version {
        VrrpVersion::V2 if !ms.is_multiple_of(1000) || !(1..=255).contains(&(ms / 1000)) => {
            Some(format!(
                "VRRPv2 advertises whole seconds 1s..=255s; {} is not one",
                humantime::format_duration(interval)
            ))
        }
        VrrpVersion::V3 if !ms.is_multiple_of(10) || !(10..=40_950).contains(&ms) => Some(format!(
            "VRRPv3 advertises centiseconds, 10ms..=40950ms; {} is not one",
            humantime::format_duration(interval)
        )),
        _ => None,
    }
}

/// `auth` implies v2; `auth` with `version = 3` is an error; neither gives v3.
fn read_version(
    section: &mut Section,
    report: &mut Report,
    auth: Option<&Option<VrrpAuth>>,
) -> Option<VrrpVersion> {
    let versions = |v: i64| match v {
        2 => Ok(VrrpVersion::V2),
        3 => Ok(VrrpVersion::V3),
        _ => Err(format!("version {v} is not 2 or 3")),
    };
    let written = section
        .optional(report, "version", integer(versions))
        .ok()?;
    let has_auth = matches!(auth, Some(Some(_)));
    match written {
        Some(at) if at.value == VrrpVersion::V3 && has_auth => {
            report.push(
                at.span,
                &section.key_path("version"),
                "VRRPv3 has no authentication: remove `auth` or use version = 2 (keepalived's \
                 auth exists only in v2)",
            );
            None
        }
        Some(at) => Some(at.value),
        None if has_auth => Some(VrrpVersion::V2),
        None => Some(VrrpVersion::V3),
    }
}

fn read_auth(section: &mut Section, report: &mut Report) -> Option<Option<VrrpAuth>> {
    let mut auth = match section.table(report, "auth") {
        Ok(Some(auth)) => auth,
        Ok(None) => return Some(None),
        Err(_) => return None,
    };
    let kinds = [("pass", AuthType::Pass), ("ah", AuthType::Ah)];
    let kind = auth.required(report, "type", text(|t| values::choice(t, &kinds, &[])));
    let password = auth.required(
        report,
        "password",
        text(|t| match t.len() {
            1..=8 => Ok(t.to_string()),
            n => Err(format!(
                "the password is {n} bytes; VRRPv2 carries 1 to 8 (keepalived cuts longer ones)"
            )),
        }),
    );
    auth.finish(report);
    Some(Some(VrrpAuth {
        kind: kind?.value,
        password: password?.value,
    }))
}

fn read_garp(section: &mut Section, report: &mut Report) -> Option<Garp> {
    let mut garp = match section.table(report, "garp") {
        Ok(Some(garp)) => garp,
        Ok(None) => return Some(Garp::default()),
        Err(_) => return None,
    };
    let default = Garp::default();
    let count = garp.or_default(
        report,
        "count",
        default.count,
        integer(|v| match u32::try_from(v) {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(format!("count {v} is out of range 1..=100")),
        }),
    );
    let interval = garp.or_default(
        report,
        "interval",
        default.interval,
        text(humantime_or_zero),
    );
    let delay = garp.or_default(report, "delay", default.delay, text(humantime_or_zero));
    garp.finish(report);
    Some(Garp {
        count: count?,
        interval: interval?,
        delay: delay?,
    })
}

fn read_track(mut section: Section, report: &mut Report) -> Option<At<Track>> {
    let kinds = [("xdp-attached", 0), ("service-up", 1), ("script", 2)];
    let kind = section.required(report, "kind", text(|t| values::choice(t, &kinds, &[])));
    let weight = section.required(
        report,
        "weight",
        integer(|w| match i16::try_from(w) {
            Ok(0) => Err(
                "weight 0 is refused: lbd has no FAULT state; use -N to lower the \
                          priority while the condition fails, +N to raise it while it holds"
                    .to_string(),
            ),
            Ok(w) if (-253..=253).contains(&w) => Ok(w),
            _ => Err(format!("weight {w} is out of range -253..=253")),
        }),
    );
    let condition = match kind.as_ref().map(|k| k.value) {
        Some(0) => Some(TrackCondition::XdpAttached),
        Some(1) => section
            .required(report, "service", text(values::name))
            .map(|at| TrackCondition::ServiceUp { service: at.value }),
        Some(2) => {
            let command = section.required(
                report,
                "command",
                text(|t| match t.trim().is_empty() {
                    true => Err("the command is empty".to_string()),
                    false => Ok(t.to_string()),
                }),
            );
            let interval = section.or_default(
                report,
                "interval",
                Duration::from_secs(1),
                text(values::duration),
            );
            Some(TrackCondition::Script {
                command: command?.value,
                interval: interval?,
            })
        }
        _ => None,
    };
    let span = section.span.clone();
    section.finish(report);
    Some(At {
        value: Track {
            condition: condition?,
            weight: weight?.value,
        },
        span,
    })
}

impl VrrpDraft {
    pub fn build(self) -> Option<Vrrp> {
        Some(Vrrp {
            name: self.name?.value,
            interface: self.interface?,
            virtual_router_id: self.virtual_router_id?.value,
            priority: self.priority?.value,
            advert_interval: self.advert_interval?,
            version: self.version?,
            auth: self.auth?,
            unicast_peers: self.unicast_peers?,
            unicast_src: self.unicast_src?.value,
            vips: self.vips?.value,
            preempt: self.preempt?,
            preempt_delay: self.preempt_delay?,
            garp: self.garp?,
            track: self
                .track
                .into_iter()
                .map(|t| t.map(|at| at.value))
                .collect::<Option<Vec<_>>>()?,
        })
    }
}
