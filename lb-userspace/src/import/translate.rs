//! The pure translation: parsed haproxy.cfg and keepalived.conf models in,
//! an lbd config model and the list of findings out. No I/O.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::haproxy::{HaproxyConfig, Password, Proxy, ProxyKind, Server};
use super::keepalived::{KeepalivedConfig, VrrpInstance};
use super::render::{Block, Lbd, quote};
use super::{Diagnostic, Finding, Pos};

/// The SNAT port space split between the nodes, as in the README's example
/// (lb1 20000-24999, lb2 25000-29999): above the well-known ports, below the
/// kernel's ephemeral range.
const SNAT_FIRST: u32 = 20000;
const SNAT_LAST: u32 = 29999;

pub struct Translation {
    pub lbd: Lbd,
    pub findings: Vec<Finding>,
}

struct Ctx<'a> {
    ha: &'a HaproxyConfig,
    findings: Vec<Finding>,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at(&self, line: usize) -> Pos {
        Pos::new(&self.ha.file, line)
    }
    fn note(&mut self, at: Pos, what: impl Into<String>, why: impl Into<String>) {
        self.findings.push(Finding {
            at,
            what: what.into(),
            why: why.into(),
            dropped: false,
        });
    }
    fn drop(&mut self, at: Pos, what: impl Into<String>, why: impl Into<String>) {
        self.findings.push(Finding {
            at,
            what: what.into(),
            why: why.into(),
            dropped: true,
        });
    }
    fn error(&mut self, at: Pos, what: impl Into<String>, why: impl Into<String>) {
        self.errors.push(Diagnostic {
            at,
            what: what.into(),
            why: why.into(),
        });
    }
}

/// HAProxy times are milliseconds unless a unit follows.
pub fn haproxy_duration(text: &str) -> Option<String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: u64 = digits.parse().ok()?;
    match unit {
        "" | "ms" => Some(format!("{number}ms")),
        "us" if number >= 1000 => Some(format!("{}ms", number / 1000)),
        "s" | "m" | "h" | "d" => Some(format!("{number}{unit}")),
        _ => None,
    }
}

/// keepalived intervals are seconds, possibly fractional.
fn keepalived_seconds(text: &str) -> Option<String> {
    let seconds: f64 = text.parse().ok()?;
    if !(seconds > 0.0 && seconds < 86400.0) {
        return None;
    }
    if seconds.fract() == 0.0 {
        Some(format!("{}s", seconds as u64))
    } else {
        Some(format!("{}ms", (seconds * 1000.0).round() as u64))
    }
}

pub fn translate(
    ha: &HaproxyConfig,
    nodes: &[(String, KeepalivedConfig)],
) -> Result<Translation, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        ha,
        findings: Vec::new(),
        errors: Vec::new(),
    };
    let mut lbd = Lbd::default();
    global(&mut ctx);
    frontends(&mut ctx, &mut lbd);
    unused_backends(&mut ctx, &lbd);
    if lbd.services.is_empty() && lbd.redirects.is_empty() && lbd.admin.is_none() {
        let at = ctx.at(0);
        ctx.error(
            at,
            "nothing to import",
            "no frontend or listen section with a `bind ADDRESS:PORT` and servers was found",
        );
    }
    vrrp(&mut ctx, &mut lbd, nodes);
    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }
    Ok(Translation {
        lbd,
        findings: ctx.findings,
    })
}

fn global(ctx: &mut Ctx) {
    for directive in ctx.ha.global.clone() {
        let at = ctx.at(directive.line);
        ctx.note(
            at,
            format!("global `{}`", directive.text()),
            "process settings of HAProxy; lbd has no counterpart and needs none",
        );
    }
    for directive in ctx.ha.defaults_other.clone() {
        let at = ctx.at(directive.line);
        ctx.drop(
            at,
            format!("defaults `{}`", directive.text()),
            "no lb equivalent",
        );
    }
    for section in ctx.ha.other_sections.clone() {
        let at = ctx.at(section.line);
        ctx.drop(
            at,
            format!("section `{}`", section.text()),
            "lb has no such section",
        );
    }
}

/// The backend a frontend sends to, or the listen section itself.
fn backend_of<'a>(ctx: &mut Ctx<'a>, front: &'a Proxy) -> Option<&'a Proxy> {
    if front.kind() == ProxyKind::Listen {
        return Some(front);
    }
    // One unconditional use_backend is a default_backend.
    let chosen = match (&front.default_backend, front.use_backends.as_slice()) {
        (Some(default), _) => Some((default.line, default.value.as_str())),
        (None, [only]) if only.value.1.is_empty() => Some((only.line, only.value.0.as_str())),
        _ => None,
    };
    for use_backend in &front.use_backends {
        if chosen.is_some_and(|(line, _)| line == use_backend.line) {
            continue;
        }
        let at = ctx.at(use_backend.line);
        ctx.drop(
            at,
            format!("use_backend {}", use_backend.value.0),
            "lb picks a service by VIP and port only, not by ACL; make it a service of its own \
             VIP or port",
        );
    }
    let (line, name) = chosen?;
    ctx.ha
        .proxy(name, |k| k != ProxyKind::Frontend)
        .or_else(|| missing_backend(ctx, line, name))
}

fn missing_backend<'a>(ctx: &mut Ctx, line: usize, name: &str) -> Option<&'a Proxy> {
    let at = ctx.at(line);
    ctx.error(
        at,
        format!("backend `{name}`"),
        "no backend or listen section has this name",
    );
    None
}

fn frontends(ctx: &mut Ctx, lbd: &mut Lbd) {
    let ha = ctx.ha;
    for front in ha.proxies.iter().filter(|p| p.kind() != ProxyKind::Backend) {
        let backend = backend_of(ctx, front);
        let stats = backend
            .filter(|b| b.stats_enabled())
            .or(if front.stats_enabled() {
                Some(front)
            } else {
                None
            });
        if let Some(stats) = stats {
            admin(ctx, lbd, front, stats);
            for proxy in [front, stats] {
                for directive in &proxy.other {
                    ctx.drop(
                        ctx.at(directive.line),
                        format!("`{}`", directive.text()),
                        "lb's stats page has no such setting",
                    );
                }
                if std::ptr::eq(front, stats) {
                    break;
                }
            }
            continue;
        }
        if !front.redirects.is_empty() && backend.is_none() {
            redirects(ctx, lbd, front);
            continue;
        }
        let Some(backend) = backend else {
            let at = ctx.at(front.line);
            ctx.drop(
                at,
                format!("{} {}", front.kind().word(), front.name),
                "it has no default_backend, so nothing is forwarded",
            );
            continue;
        };
        if !front.mode_is_tcp() || !backend.mode_is_tcp() {
            let at = ctx.at(front.line);
            ctx.drop(
                at,
                format!("{} {} (mode http)", front.kind().word(), front.name),
                "lb forwards TCP connections and does not parse HTTP; if the servers speak \
                 TLS, write the service by hand as mode tcp",
            );
            continue;
        }
        leftovers(ctx, front);
        if !std::ptr::eq(front, backend) {
            leftovers(ctx, backend);
        }
        for bind in &front.binds {
            service(ctx, lbd, front, backend, bind);
        }
    }
}

/// Lists what a proxy says that no rule above used.
fn leftovers(ctx: &mut Ctx, proxy: &Proxy) {
    for directive in proxy.other.iter().chain(&proxy.acls) {
        let at = ctx.at(directive.line);
        let why = match directive.keyword() {
            "acl" => "ACLs are HAProxy's request matching; lb matches VIP and port only",
            "http-request" | "http-response" | "http-after-response" | "cookie" | "option"
                if !proxy.mode_is_tcp() =>
            {
                "an HTTP (layer 7) feature; lb works at layer 4"
            }
            "cookie" => "cookie persistence needs HTTP; lb persists by client address",
            "maxconn" | "fullconn" => "no connection limit per service in lb",
            "log" | "option" => "no lb equivalent",
            _ => "unknown to the importer; no lb equivalent",
        };
        ctx.drop(at, format!("`{}`", directive.text()), why);
    }
    for rule in &proxy.stick_rules {
        if !(rule.args() == ["on", "src"] || rule.args() == ["match", "src"]) {
            let at = ctx.at(rule.line);
            ctx.drop(
                at,
                format!("`{}`", rule.text()),
                "lb persists by client address only (`stick on src`)",
            );
        }
    }
}

fn service(
    ctx: &mut Ctx,
    lbd: &mut Lbd,
    front: &Proxy,
    backend: &Proxy,
    bind: &super::haproxy::Bind,
) {
    let at = ctx.at(bind.line);
    let Some(address) = &bind.address else {
        ctx.drop(
            at,
            format!("bind *:{}", bind.port),
            "a service in lb is one VIP; bind an address (one of keepalived's virtual_ipaddress)",
        );
        return;
    };
    let Ok(vip) = address.parse::<Ipv4Addr>() else {
        ctx.error(
            at,
            format!("bind {address}:{}", bind.port),
            "lb serves IPv4 addresses only; write the VIP as a dotted IPv4 address",
        );
        return;
    };
    let Ok(port) = bind.port.parse::<u16>() else {
        ctx.drop(
            at,
            format!("bind {address}:{}", bind.port),
            "port ranges and lists are not services; write one [[service]] per port",
        );
        return;
    };
    for option in &bind.options {
        ctx.drop(
            at.clone(),
            format!("bind option `{option}`"),
            "lb passes TLS and TCP through untouched; bind options have no equivalent",
        );
    }
    if let Some(other) = lbd.services.iter().find(|s| s.vip == vip && s.port == port) {
        ctx.error(
            at,
            format!(
                "bind {vip}:{port} in {} {}",
                front.kind().word(),
                front.name
            ),
            format!(
                "{vip}:{port} is already bound by {}; one VIP and port can be one service only",
                other.origin
            ),
        );
        return;
    }
    let mut name = backend.name.clone();
    if lbd.services.iter().any(|s| s.name == name) {
        name = format!("{}-{port}", front.name);
        ctx.note(
            ctx.at(backend.line),
            format!("backend {} used by more than one bind", backend.name),
            format!(
                "each VIP:port is a service of its own in lb (here `{name}`), with its own copy \
                 of the servers and their checks"
            ),
        );
    }
    let mut block = Block::new(
        "[[service]]",
        format!(
            "{} {} (line {}), backend {} (line {})",
            front.kind().word(),
            front.name,
            front.line,
            backend.name,
            backend.line
        ),
        ctx.at(bind.line),
    );
    block.set("name", quote(&name));
    block.set("vip", quote(&vip.to_string()));
    block.set("port", port.to_string());
    block.set("protocol", quote("tcp"));
    let scheduler = match backend.balance.as_ref().map(|b| (b.line, b.value.as_str())) {
        None | Some((_, "source")) => "source",
        Some((line, other)) => {
            ctx.note(
                ctx.at(line),
                format!("balance {other}"),
                "lb has schedulers `source` (client address) and `flow` (each connection \
                 hashed on its 5-tuple); `flow` spreads connections like roundrobin but does \
                 not count them (no leastconn) and ignores weights over short runs",
            );
            "flow"
        }
    };
    block.set("scheduler", quote(scheduler));
    if let Some(table) = &backend.stick_table {
        let expire = table
            .value
            .iter()
            .position(|w| w == "expire")
            .and_then(|i| table.value.get(i + 1));
        let sticks = backend
            .stick_rules
            .iter()
            .any(|r| r.args() == ["on", "src"] || r.args() == ["match", "src"]);
        match (expire.and_then(|e| haproxy_duration(e)), sticks) {
            (Some(expire), true) => {
                block.set("persistence_timeout", quote(&expire));
            }
            _ => ctx.drop(
                ctx.at(table.line),
                format!("stick-table {}", table.value.join(" ")),
                "only `stick-table type ip ... expire T` with `stick on src` becomes \
                 persistence_timeout",
            ),
        }
    }
    let origin = format!(
        "{} {} ({})",
        front.kind().word(),
        front.name,
        ctx.at(bind.line)
    );
    let mut service = super::render::Service {
        vip,
        port,
        name: name.clone(),
        origin,
        block,
        timeouts: None,
        check: None,
        backends: Vec::new(),
    };
    timeouts(ctx, &mut service, front, backend);
    check(ctx, &mut service, backend);
    backends(ctx, &mut service, backend, port);
    if service.backends.is_empty() {
        ctx.drop(
            ctx.at(backend.line),
            format!("backend {} for {vip}:{port}", backend.name),
            "it has no server lb can use, so the service is left out",
        );
        return;
    }
    lbd.services.push(service);
}

fn timeouts(ctx: &mut Ctx, service: &mut super::render::Service, front: &Proxy, backend: &Proxy) {
    let mut block = Block::new(
        "[service.timeouts]",
        "timeouts".into(),
        ctx.at(backend.line),
    );
    let client = front.timeout("client");
    let server = backend.timeout("server");
    let idle: Vec<_> = client.iter().chain(server.iter()).collect();
    if let Some(longest) = idle
        .iter()
        .filter_map(|t| {
            let text = haproxy_duration(&t.value)?;
            Some((humantime::parse_duration(&text).ok()?, text, t.line))
        })
        .max_by_key(|(d, _, _)| *d)
    {
        block.source = ctx.at(longest.2);
        block.set("tcp_established", quote(&longest.1));
        ctx.note(
            ctx.at(longest.2),
            format!("timeout client/server -> tcp_established {}", longest.1),
            "lb closes a connection idle this long in either direction (the longer of the two \
             HAProxy timeouts); long-lived sessions such as Horizon want hours",
        );
    }
    if let Some(connect) = backend.timeout("connect")
        && let Some(text) = haproxy_duration(&connect.value)
    {
        block.set("tcp_syn", quote(&text));
    }
    for name in [
        "tunnel",
        "client-fin",
        "server-fin",
        "queue",
        "http-request",
        "http-keep-alive",
    ] {
        if let Some(t) = front.timeout(name).or(backend.timeout(name)) {
            ctx.drop(
                ctx.at(t.line),
                format!("timeout {name} {}", t.value),
                "no lb equivalent",
            );
        }
    }
    if !block.keys.is_empty() {
        service.timeouts = Some(block);
    }
}

fn check(ctx: &mut Ctx, service: &mut super::render::Service, backend: &Proxy) {
    let Some(first) = backend.servers.iter().find(|s| s.check) else {
        return;
    };
    let line = backend
        .httpchk
        .as_ref()
        .map(|h| h.line)
        .or(backend.ssl_hello_chk)
        .unwrap_or(first.line);
    let mut block = Block::new("[service.check]", "health check".into(), ctx.at(line));
    let kind = if let Some(httpchk) = &backend.httpchk {
        // option httpchk [METHOD] URI [VERSION]
        let words = &httpchk.value;
        let uri = match words.len() {
            0 => None,
            1 => Some(&words[0]),
            _ => Some(&words[1]),
        };
        if let Some(method) = words.first().filter(|_| words.len() > 1)
            && method != "GET"
        {
            ctx.note(
                ctx.at(httpchk.line),
                format!("option httpchk {method}"),
                "lb's http check always sends GET",
            );
        }
        if let Some(uri) = uri {
            block.set("path", quote(uri));
        }
        http_checks(ctx, &mut block, backend);
        if first.ssl { "https" } else { "http" }
    } else if backend.ssl_hello_chk.is_some() {
        "tls-hello"
    } else {
        "tcp"
    };
    block.set("kind", quote(kind));
    block.keys.rotate_right(1);
    for key in ["inter", "fastinter", "downinter"] {
        if let Some(value) = first.value(key) {
            match haproxy_duration(value) {
                Some(d) => block.set(key, quote(&d)),
                None => ctx.drop(
                    ctx.at(first.line),
                    format!("{key} {value}"),
                    "not a duration",
                ),
            }
        }
    }
    for key in ["rise", "fall", "port"] {
        if let Some(value) = first.value(key) {
            match value.parse::<u32>() {
                Ok(n) => block.set(key, n.to_string()),
                Err(_) => ctx.drop(ctx.at(first.line), format!("{key} {value}"), "not a number"),
            }
        }
    }
    if let Some(t) = backend.timeout("check")
        && let Some(d) = haproxy_duration(&t.value)
    {
        block.set("timeout", quote(&d));
    }
    if kind == "https" {
        let verify = first.value("verify") == Some("required");
        block.set("verify", verify.to_string());
    }
    service.check = Some(block);
}

fn http_checks(ctx: &mut Ctx, block: &mut Block, backend: &Proxy) {
    for directive in &backend.http_checks {
        let args = directive.args();
        let at = ctx.at(directive.line);
        match args.first().map(String::as_str) {
            Some("expect") if args.len() == 3 && args[1] == "status" => {
                let codes: Vec<String> = args[2]
                    .split(',')
                    .map(|c| match c.parse::<u16>() {
                        Ok(n) => n.to_string(),
                        Err(_) => quote(c),
                    })
                    .collect();
                block.set("expect", format!("[{}]", codes.join(", ")));
            }
            Some("send") => {
                let mut words = args[1..].iter();
                while let Some(word) = words.next() {
                    match (word.as_str(), words.next()) {
                        ("uri", Some(uri)) => block.set("path", quote(uri)),
                        ("meth", Some(m)) if m == "GET" => {}
                        ("hdr", Some(name)) if name.eq_ignore_ascii_case("host") => {
                            if let Some(host) = words.next() {
                                block.set("host", quote(host));
                            }
                        }
                        (other, value) => ctx.drop(
                            at.clone(),
                            format!("http-check send {other} {}", value.map_or("", |v| v)),
                            "lb's http check sends GET with a path and a Host header only",
                        ),
                    }
                }
            }
            _ => ctx.drop(
                at,
                format!("`{}`", directive.text()),
                "lb's http check matches status codes only (`http-check expect status`)",
            ),
        }
    }
}

fn backends(ctx: &mut Ctx, service: &mut super::render::Service, backend: &Proxy, port: u16) {
    let mut seen = BTreeSet::new();
    let first_check = backend.servers.iter().find(|s| s.check);
    for server in &backend.servers {
        let at = ctx.at(server.line);
        if !seen.insert(server.name.clone()) {
            ctx.error(
                at,
                format!("server {} in backend {}", server.name, backend.name),
                "a server of this name is already in this backend; HAProxy refuses this too",
            );
            continue;
        }
        if server.backup {
            ctx.drop(
                at,
                format!("server {} backup", server.name),
                "lb has no backup servers: every backend takes its share. Left out; add it \
                 with weight 0 and `lbd backend set-state` it to ready when needed",
            );
            continue;
        }
        let Ok(address) = server.address.parse::<Ipv4Addr>() else {
            ctx.error(
                at,
                format!("server {} {}", server.name, server.address),
                "lb needs the server's IPv4 address; HAProxy resolves names at start, lb does \
                 not: write the address",
            );
            continue;
        };
        let server_port = match server.port.as_deref() {
            None | Some("") => port,
            Some(text) => match text.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    ctx.error(
                        at,
                        format!("server {} port `{text}`", server.name),
                        "lb needs a fixed port (no offsets or ranges)",
                    );
                    continue;
                }
            },
        };
        for unknown in &server.unknown {
            ctx.drop(
                at.clone(),
                format!("server {} `{unknown}`", server.name),
                "no lb equivalent for this server parameter",
            );
        }
        let mut block = Block::new(
            "[[service.backend]]",
            format!("server {}", server.name),
            at.clone(),
        );
        block.set("name", quote(&server.name));
        block.set("address", quote(&format!("{address}:{server_port}")));
        let mut weight = match server.value("weight").map(str::parse::<u32>) {
            None => 1,
            Some(Ok(w)) if w <= 256 => w,
            Some(_) => {
                ctx.error(
                    at.clone(),
                    format!("server {} weight", server.name),
                    "weight must be 0..256",
                );
                1
            }
        };
        if server.disabled {
            weight = 0;
            ctx.note(
                at.clone(),
                format!("server {} disabled", server.name),
                "written with weight 0 (no new clients); to stop it fully run `lbd backend \
                 set-state SERVICE/NAME maint` once lbd runs",
            );
        }
        block.set("weight", weight.to_string());
        if let Some(first) = first_check {
            check_override(ctx, &mut block, first, server);
        }
        service.backends.push(block);
    }
}

/// A server whose check parameters differ from the service's check gets
/// them as `check = { ... }` of its own.
fn check_override(ctx: &mut Ctx, block: &mut Block, first: &Server, server: &Server) {
    if !server.check {
        ctx.note(
            ctx.at(server.line),
            format!("server {} without `check`", server.name),
            "lb checks every backend of a service that has a check; this one will be checked too",
        );
        return;
    }
    let mut keys = Vec::new();
    for key in ["inter", "fastinter", "downinter", "rise", "fall", "port"] {
        if server.value(key) != first.value(key) {
            let Some(value) = server.value(key) else {
                continue;
            };
            let rendered = if matches!(key, "rise" | "fall" | "port") {
                value.parse::<u32>().ok().map(|n| n.to_string())
            } else {
                haproxy_duration(value).map(|d| quote(&d))
            };
            match rendered {
                Some(r) => keys.push(format!("{key} = {r}")),
                None => ctx.drop(
                    ctx.at(server.line),
                    format!("{key} {value}"),
                    "not a valid value",
                ),
            }
        }
    }
    if !keys.is_empty() {
        block.set("check", format!("{{ {} }}", keys.join(", ")));
    }
}

fn unused_backends(ctx: &mut Ctx, lbd: &Lbd) {
    let _ = lbd;
    let ha = ctx.ha;
    for backend in ha.proxies.iter().filter(|p| p.kind() == ProxyKind::Backend) {
        let used = ha.proxies.iter().any(|f| {
            f.default_backend
                .as_ref()
                .is_some_and(|d| d.value == backend.name)
                || f.use_backends.iter().any(|u| u.value.0 == backend.name)
        });
        if !used {
            ctx.drop(
                ctx.at(backend.line),
                format!("backend {}", backend.name),
                "no frontend uses it",
            );
        }
    }
}

fn admin(ctx: &mut Ctx, lbd: &mut Lbd, front: &Proxy, stats: &Proxy) {
    let Some(bind) = front.binds.first() else {
        ctx.drop(
            ctx.at(front.line),
            format!("stats in {}", front.name),
            "no bind address for the page",
        );
        return;
    };
    let address = bind.address.clone().unwrap_or_default();
    if address.parse::<Ipv4Addr>().is_err() {
        ctx.drop(
            ctx.at(bind.line),
            format!("bind {address}:{} (stats)", bind.port),
            "lb's page listens on one IPv4 address; write `listen` in [admin] by hand",
        );
        return;
    }
    if lbd.admin.is_some() {
        ctx.drop(
            ctx.at(front.line),
            format!("second stats page in {}", front.name),
            "lb serves one admin page",
        );
        return;
    }
    let mut block = Block::new(
        "[admin]",
        format!(
            "stats page: {} {}, {} {}",
            front.kind().word(),
            front.name,
            stats.kind().word(),
            stats.name
        ),
        ctx.at(bind.line),
    );
    block.set("listen", quote(&format!("{address}:{}", bind.port)));
    let mut admin_acl: Option<String> = None;
    let mut admin_all = false;
    let mut plain_auth = Vec::new();
    for directive in &stats.stats {
        let args = directive.args();
        let at = ctx.at(directive.line);
        match args.first().map(String::as_str) {
            Some("enable") => {}
            Some("uri") => {
                if args.get(1).map(String::as_str) != Some("/stats") {
                    ctx.note(
                        at,
                        directive.text(),
                        "lb's page is always at /stats (and /api/v1/status, /metrics)",
                    );
                }
            }
            Some("refresh") => match args.get(1).and_then(|r| haproxy_duration(r)) {
                Some(r) => block.set("refresh", quote(&r)),
                None => ctx.drop(at, directive.text(), "not a duration"),
            },
            Some("auth") => {
                if let Some((user, _)) = args.get(1).and_then(|a| a.split_once(':')) {
                    plain_auth.push((directive.line, user.to_string()));
                }
            }
            Some("admin") => match (args.get(1).map(String::as_str), args.get(2)) {
                (Some("if"), Some(cond)) if cond == "TRUE" => admin_all = true,
                (Some("if"), Some(cond)) => admin_acl = Some(cond.clone()),
                _ => ctx.drop(
                    at,
                    directive.text(),
                    "only `stats admin if ACL` is understood",
                ),
            },
            Some("http-request") => {}
            Some("show-legends" | "show-node" | "show-desc" | "hide-version") => ctx.note(
                at,
                directive.text(),
                "lb's page always shows the node and needs no legend",
            ),
            _ => ctx.drop(at, directive.text(), "no lb equivalent"),
        }
    }
    // The group that may change states: `acl NAME http_auth_group(LIST) GROUP`.
    let mut admins: Option<(String, Vec<String>)> = None;
    for acl in &stats.acls {
        let words = acl.args();
        let Some(name) = words.first() else { continue };
        let matcher = words.get(1).map(String::as_str).unwrap_or("");
        if Some(name) == admin_acl.as_ref() {
            if let Some(list) = matcher
                .strip_prefix("http_auth_group(")
                .and_then(|r| r.strip_suffix(')'))
            {
                admins = Some((list.to_string(), words[2..].to_vec()));
            }
        } else if !matcher.starts_with("http_auth") {
            ctx.drop(
                ctx.at(acl.line),
                format!("`{}`", acl.text()),
                "no lb equivalent",
            );
        }
    }
    if admin_acl.is_some() && admins.is_none() && !admin_all {
        ctx.drop(
            ctx.at(stats.line),
            "stats admin condition",
            "only an `http_auth_group` ACL tells lb who is admin; every user is written readonly",
        );
    }
    let mut users = Vec::new();
    let mut pending = Vec::new();
    for list in &ctx.ha.userlists {
        let admin_members: Vec<&str> = match &admins {
            Some((name, groups)) if name == &list.name => {
                groups.iter().flat_map(|g| list.members(g)).collect()
            }
            _ => Vec::new(),
        };
        for user in &list.users {
            let role = if admin_all || admin_members.contains(&user.name.as_str()) {
                "admin"
            } else {
                "readonly"
            };
            match &user.password {
                Some(Password::Hash(hash)) if super::render::argon2_hash(hash) => {
                    let mut block = Block::new(
                        "[[admin.user]]",
                        format!("userlist {} user {}", list.name, user.name),
                        ctx.at(user.line),
                    );
                    block.set("name", quote(&user.name));
                    block.set("role", quote(role));
                    block.set("password_hash", quote(hash));
                    users.push(block);
                }
                password => {
                    let why = match password {
                        Some(Password::Insecure) => {
                            "its password is plain text (insecure-password)"
                        }
                        Some(Password::Hash(_)) => {
                            "its hash is crypt(3), which lbd does not accept (argon2 only)"
                        }
                        None => "it has no password",
                    };
                    ctx.drop(
                        ctx.at(user.line),
                        format!("user {} ({role})", user.name),
                        format!(
                            "{why}, so it is not written; run `lbd passwd` and add \
                             [[admin.user]] name = \"{}\", role = \"{role}\", password_hash = \
                             the printed hash",
                            user.name
                        ),
                    );
                    pending.push((user.name.clone(), role));
                }
            }
        }
        for other in &list.other {
            ctx.drop(
                ctx.at(other.line),
                format!("`{}`", other.text()),
                "no lb equivalent",
            );
        }
    }
    for (line, user) in plain_auth {
        ctx.drop(
            ctx.at(line),
            format!("stats auth {user}:..."),
            format!(
                "plain-text password, not written; run `lbd passwd` and add [[admin.user]] \
                 name = \"{user}\", role = \"{}\", password_hash = the printed hash",
                if admin_all { "admin" } else { "readonly" }
            ),
        );
        pending.push((user, if admin_all { "admin" } else { "readonly" }));
    }
    lbd.admin = Some(super::render::Admin {
        block,
        users,
        pending,
    });
}

fn redirects(ctx: &mut Ctx, lbd: &mut Lbd, front: &Proxy) {
    for directive in &front.redirects {
        let args = directive.args();
        let at = ctx.at(directive.line);
        let scheme_https = args.len() >= 2 && args[0] == "scheme" && args[1] == "https";
        // `if !{ ssl_fc }` on a plain bind is always true: the same redirect.
        let condition = &args[2.min(args.len())..];
        let always = condition.is_empty()
            || condition.join(" ") == "if !{ ssl_fc }"
            || condition.join(" ") == "unless { ssl_fc }";
        if !scheme_https {
            ctx.drop(
                at,
                format!("`{}`", directive.text()),
                "lb redirects http to https only",
            );
            continue;
        }
        if !always {
            ctx.drop(
                at.clone(),
                format!("condition `{}`", condition.join(" ")),
                "lb redirects every request on the address; the condition is not kept",
            );
        }
        for bind in &front.binds {
            let Some(address) = bind
                .address
                .as_ref()
                .filter(|a| a.parse::<Ipv4Addr>().is_ok())
            else {
                ctx.drop(
                    ctx.at(bind.line),
                    format!("bind *:{}", bind.port),
                    "a redirect listens on one IPv4 address",
                );
                continue;
            };
            let mut block = Block::new(
                "[[redirect]]",
                format!(
                    "{} {}: {}",
                    front.kind().word(),
                    front.name,
                    directive.text()
                ),
                ctx.at(bind.line),
            );
            block.set("listen", quote(&format!("{address}:{}", bind.port)));
            lbd.redirects.push(block);
        }
    }
    for directive in front.other.iter().chain(&front.acls) {
        ctx.drop(
            ctx.at(directive.line),
            format!("`{}`", directive.text()),
            "an HTTP (layer 7) feature; lb works at layer 4",
        );
    }
}

/// Scripts lb replaces with its own signal: HAProxy's liveness is lbd's XDP
/// program being attached.
fn watches_haproxy(script: &str) -> bool {
    script.contains("haproxy")
        && [
            "kill -0",
            "pidof",
            "killall -0",
            "pgrep",
            "systemctl is-active",
        ]
        .iter()
        .any(|probe| script.contains(probe))
}

fn vrrp(ctx: &mut Ctx, lbd: &mut Lbd, nodes: &[(String, KeepalivedConfig)]) {
    let count = nodes.len() as u32;
    let share = (SNAT_LAST - SNAT_FIRST + 1) / count.max(1);
    for (index, (node, conf)) in nodes.iter().enumerate() {
        let at = |line| Pos::new(&conf.file, line);
        let Some(first) = conf.instances.first() else {
            ctx.error(
                at(0),
                format!("node {node}"),
                "the file has no vrrp_instance, so lb cannot tell the node's interface",
            );
            continue;
        };
        let Some((line, interface)) = first.interface.clone() else {
            ctx.error(
                at(first.line),
                format!("vrrp_instance {}", first.name),
                "no `interface`",
            );
            continue;
        };
        let min = SNAT_FIRST + share * index as u32;
        let mut block = Block::new(
            &format!("[node.{node}]"),
            format!("vrrp_instance {} interface", first.name),
            at(line),
        );
        block.set("interface", quote(&interface));
        block.set("snat_ports", quote(&format!("{min}-{}", min + share - 1)));
        lbd.nodes.push(block);
        for global in &conf.global_defs {
            let why = match global.keyword() {
                "router_id" => "the node's name comes from --keepalived NODE=FILE instead",
                keyword if keyword.starts_with("vrrp_garp") || keyword.starts_with("vrrp_gna") => {
                    "lb sends gratuitous ARPs as keepalived's defaults do (garp = { count, \
                     interval, delay } in [[vrrp]] to change them)"
                }
                "vrrp_version" => "applied to every instance as its `version`",
                "vrrp_skip_check_adv_addr"
                | "vrrp_strict"
                | "enable_script_security"
                | "script_user" => "keepalived process setting with no lb counterpart",
                _ => "keepalived process setting; lbd ignores it",
            };
            ctx.note(
                at(global.line),
                format!("global_defs `{}`", global.text()),
                why,
            );
        }
        for other in &conf.other {
            ctx.drop(
                at(other.line),
                format!("`{}`", other.text()),
                "lb has no counterpart (it runs VRRP instances only)",
            );
        }
    }
    for (_, conf) in nodes {
        for script in &conf.scripts {
            let tracked = conf
                .instances
                .iter()
                .any(|i| i.track_scripts.iter().any(|(_, s)| s == &script.name));
            if !tracked {
                ctx.note(
                    Pos::new(&conf.file, script.line),
                    format!("vrrp_script {}", script.name),
                    "no vrrp_instance tracks it, so it is not imported",
                );
            }
        }
    }
    // Instances are matched by name across the nodes' files.
    let Some((_, first_conf)) = nodes.first() else {
        return;
    };
    for instance in &first_conf.instances {
        vrrp_instance(ctx, lbd, nodes, &instance.name);
    }
    for (_, conf) in nodes.iter().skip(1) {
        for instance in &conf.instances {
            if !first_conf.instances.iter().any(|i| i.name == instance.name) {
                ctx.error(
                    Pos::new(&conf.file, instance.line),
                    format!("vrrp_instance {}", instance.name),
                    format!(
                        "it is not in {}; every node must run the same instances",
                        first_conf.file
                    ),
                );
            }
        }
    }
    let vips: BTreeSet<Ipv4Addr> = lbd
        .vrrp
        .iter()
        .flat_map(|v| v.vips.iter().copied())
        .collect();
    if !lbd.vrrp.is_empty() {
        for service in &lbd.services {
            if !vips.contains(&service.vip) {
                ctx.error(
                    service.block.source.clone(),
                    format!("VIP {} of service {}", service.vip, service.name),
                    "no vrrp_instance has it in virtual_ipaddress, so no node would hold it; add \
                     it there",
                );
            }
        }
    }
}

fn vrrp_instance(ctx: &mut Ctx, lbd: &mut Lbd, nodes: &[(String, KeepalivedConfig)], name: &str) {
    let mut per_node: Vec<(&str, &KeepalivedConfig, &VrrpInstance)> = Vec::new();
    for (node, conf) in nodes {
        match conf.instances.iter().find(|i| i.name == name) {
            Some(instance) => per_node.push((node, conf, instance)),
            None => {
                ctx.error(
                    Pos::new(&conf.file, 0),
                    format!("vrrp_instance {name}"),
                    "missing in this node's file; every node must run the same instances",
                );
                return;
            }
        }
    }
    let (_, first_conf, first) = per_node[0];
    let at = |conf: &KeepalivedConfig, line| Pos::new(&conf.file, line);
    // What must agree on the wire, compared as written.
    let wire = |i: &VrrpInstance| {
        (
            i.virtual_router_id.as_ref().map(|v| v.1.clone()),
            i.advert_int.as_ref().map(|v| v.1.clone()),
            i.version.as_ref().map(|v| v.1.clone()),
            i.authentication
                .as_ref()
                .map(|a| (a.1.clone(), a.2.clone())),
            vip_list(i),
        )
    };
    for (_, conf, instance) in &per_node[1..] {
        if wire(instance) != wire(first) {
            ctx.error(
                at(conf, instance.line),
                format!("vrrp_instance {name}"),
                format!(
                    "virtual_router_id, advert_int, version, authentication or \
                     virtual_ipaddress differ from {}:{}; the peers must agree on them",
                    first_conf.file, first.line
                ),
            );
            return;
        }
    }
    let mut block = Block::new(
        "[[vrrp]]",
        format!("vrrp_instance {name}"),
        at(first_conf, first.line),
    );
    block.set("name", quote(&name.to_lowercase()));
    match first
        .virtual_router_id
        .as_ref()
        .map(|(l, v)| (l, v.parse::<u8>()))
    {
        Some((_, Ok(id))) if id > 0 => block.set("virtual_router_id", id.to_string()),
        Some((line, _)) => {
            ctx.error(at(first_conf, *line), "virtual_router_id", "must be 1..255");
            return;
        }
        None => {
            ctx.error(
                at(first_conf, first.line),
                format!("vrrp_instance {name}"),
                "no virtual_router_id",
            );
            return;
        }
    }
    let mut priorities = Vec::new();
    let mut sources = Vec::new();
    let mut peers: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for (node, conf, instance) in &per_node {
        let priority = match &instance.priority {
            None => 100,
            Some((line, text)) => match text.parse::<u8>() {
                Ok(p) if p > 0 => p,
                _ => {
                    ctx.error(
                        at(conf, *line),
                        format!("priority {text}"),
                        "must be 1..255",
                    );
                    continue;
                }
            },
        };
        priorities.push(format!("{node} = {priority}"));
        if let Some((line, state)) = &instance.state {
            ctx.note(
                at(conf, *line),
                format!("state {state}"),
                "lb elects the master by priority alone; the start state is not needed",
            );
        }
        if let Some((line, src)) = &instance.unicast_src_ip {
            match src.parse::<Ipv4Addr>() {
                Ok(a) => {
                    sources.push(format!("{node} = {}", quote(&a.to_string())));
                    peers.insert(a);
                }
                Err(_) => ctx.error(
                    at(conf, *line),
                    format!("unicast_src_ip {src}"),
                    "not an IPv4 address",
                ),
            }
        }
        for (line, peer) in &instance.unicast_peers {
            match peer.parse::<Ipv4Addr>() {
                Ok(a) => {
                    peers.insert(a);
                }
                Err(_) => ctx.error(
                    at(conf, *line),
                    format!("unicast_peer {peer}"),
                    "not an IPv4 address",
                ),
            }
        }
        if let Some(interface) = &instance.interface {
            let node_interface = conf.instances.first().and_then(|i| i.interface.as_ref());
            if node_interface.map(|n| &n.1) != Some(&interface.1) {
                ctx.drop(
                    at(conf, interface.0),
                    format!("interface {}", interface.1),
                    "lb runs every instance of a node on one interface per config; this one \
                     uses the node's interface",
                );
            }
        }
        for notify in &instance.notify {
            ctx.drop(
                at(conf, notify.line),
                format!("`{}`", notify.text()),
                "lb runs no notify scripts; watch `lbd status`, the page or the journal instead",
            );
        }
        for other in &instance.other {
            ctx.drop(
                at(conf, other.line),
                format!("`{}`", other.text()),
                "no lb equivalent for this vrrp_instance keyword",
            );
        }
    }
    block.set("priority", format!("{{ {} }}", priorities.join(", ")));
    if let Some((line, advert)) = &first.advert_int {
        match keepalived_seconds(advert) {
            Some(d) => block.set("advert_interval", quote(&d)),
            None => ctx.error(
                at(first_conf, *line),
                format!("advert_int {advert}"),
                "not a number of seconds",
            ),
        }
    }
    let global_version = first_conf
        .global_defs
        .iter()
        .find(|n| n.keyword() == "vrrp_version")
        .and_then(|n| n.arg(0).map(|v| (n.line, v.to_string())));
    if let Some((line, version)) = first.version.clone().or(global_version) {
        match version.as_str() {
            "2" | "3" => block.set("version", version),
            _ => ctx.error(
                at(first_conf, line),
                format!("version {version}"),
                "must be 2 or 3",
            ),
        }
    }
    if let Some((line, _, _)) = first
        .authentication
        .as_ref()
        .filter(|_| block.get("version") == Some("3"))
    {
        ctx.note(
            at(first_conf, *line),
            "authentication",
            "VRRPv3 has no authentication (keepalived ignores it too); not written",
        );
    } else if let Some((line, kind, password)) = &first.authentication {
        match (kind.as_deref().map(str::to_ascii_lowercase), password) {
            (Some(kind), Some(password)) if kind == "ah" || kind == "pass" => block.set(
                "auth",
                format!(
                    "{{ type = {}, password = {} }}",
                    quote(&kind),
                    quote(password)
                ),
            ),
            _ => ctx.error(
                at(first_conf, *line),
                "authentication",
                "needs auth_type PASS or AH and an auth_pass",
            ),
        }
    }
    if !peers.is_empty() {
        let list: Vec<String> = peers.iter().map(|p| quote(&p.to_string())).collect();
        block.set("unicast_peers", format!("[{}]", list.join(", ")));
        block.set("unicast_src", format!("{{ {} }}", sources.join(", ")));
    }
    let mut vips = Vec::new();
    for entry in &first.virtual_ipaddresses {
        let text = entry.keyword();
        let (address, prefix) = text.split_once('/').unwrap_or((text, "32"));
        match address.parse::<Ipv4Addr>() {
            Ok(a) => vips.push(a),
            Err(_) => {
                ctx.error(
                    at(first_conf, entry.line),
                    format!("virtual_ipaddress {text}"),
                    "lb takes IPv4 addresses only",
                );
                continue;
            }
        }
        if prefix != "32" || entry.words.len() > 1 {
            ctx.note(
                at(first_conf, entry.line),
                format!("virtual_ipaddress `{}`", entry.text()),
                "lb adds every VIP as /32 on the node's interface; prefix, dev and label are not kept",
            );
        }
    }
    let list: Vec<String> = vips.iter().map(|v| quote(&v.to_string())).collect();
    block.set("vips", format!("[{}]", list.join(", ")));
    let preempt = first.nopreempt.is_none();
    block.set("preempt", preempt.to_string());
    if let Some((line, delay)) = &first.preempt_delay {
        match keepalived_seconds(delay) {
            Some(d) => block.set("preempt_delay", quote(&d)),
            None => ctx.error(
                at(first_conf, *line),
                format!("preempt_delay {delay}"),
                "not a number of seconds",
            ),
        }
    }
    let mut tracks = Vec::new();
    for (line, script_name) in &first.track_scripts {
        let Some(script) = first_conf.scripts.iter().find(|s| &s.name == script_name) else {
            ctx.error(
                at(first_conf, *line),
                format!("track_script {script_name}"),
                "no vrrp_script of this name",
            );
            continue;
        };
        let weight = script
            .weight
            .as_ref()
            .and_then(|w| w.1.parse::<i16>().ok())
            .unwrap_or(0);
        if weight == 0 {
            ctx.drop(
                at(first_conf, script.line),
                format!("vrrp_script {} weight 0", script.name),
                "keepalived puts the instance in FAULT when it fails; lb tracks by weight only \
                 (nonzero). Add a [[vrrp.track]] with a weight larger than the priority gap",
            );
            continue;
        }
        let command = script
            .script
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let mut track = Block::new(
            "[[vrrp.track]]",
            format!("vrrp_script {}", script.name),
            at(first_conf, script.line),
        );
        let replaced_by_xdp = watches_haproxy(&command);
        if replaced_by_xdp {
            track.set("kind", quote("xdp-attached"));
            ctx.note(
                at(first_conf, script.line),
                format!("vrrp_script {} `{command}`", script.name),
                "there is no HAProxy under lb; its role is lbd's own XDP program being attached \
                 (kind xdp-attached, same weight)",
            );
        } else {
            track.set("kind", quote("script"));
            track.set("command", quote(&command));
            if let Some((_, interval)) = &script.interval
                && let Some(d) = keepalived_seconds(interval)
            {
                track.set("interval", quote(&d));
            }
            ctx.note(
                at(first_conf, script.line),
                format!("vrrp_script {}", script.name),
                "lb runs the command itself; check that it works without keepalived's environment",
            );
        }
        for (key, value) in [("fall", &script.fall), ("rise", &script.rise)] {
            let Some((line, v)) = value else { continue };
            if v == "1" {
                continue;
            }
            if replaced_by_xdp {
                // Nothing is run any more, so there are no results to
                // count: the count is moot, not lost.
                ctx.note(
                    at(first_conf, *line),
                    format!("{key} {v}"),
                    "applied to the HAProxy script, which lb does not run; xdp-attached is \
                     checked every advert interval and moves the priority at once",
                );
            } else {
                ctx.drop(
                    at(first_conf, *line),
                    format!("{key} {v}"),
                    "lb's track reacts to each result; there is no fall/rise count",
                );
            }
        }
        for other in &script.other {
            ctx.drop(
                at(first_conf, other.line),
                format!("`{}`", other.text()),
                "no lb equivalent",
            );
        }
        track.set("weight", weight.to_string());
        tracks.push(track);
    }
    lbd.vrrp.push(super::render::Vrrp {
        block,
        vips,
        tracks,
    });
}

fn vip_list(instance: &VrrpInstance) -> Vec<String> {
    let mut list: Vec<String> = instance
        .virtual_ipaddresses
        .iter()
        .map(|n| n.keyword().to_string())
        .collect();
    list.sort();
    list
}
