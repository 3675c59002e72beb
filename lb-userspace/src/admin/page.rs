//! The stats page and the login page: server-rendered HTML with inline
//! styles and no scripts or external assets, so it works from any browser
//! on the management network and is readable half asleep: one colour per
//! state, the words UP/DOWN/DRAIN/MAINT spelled out, times as "4m ago".
//!
//! Stable hooks for tests and tools: rows `id="row-SERVICE-BACKEND"` with
//! `data-state` (UP, DOWN, DRAIN, MAINT), checkboxes `id="sel-SERVICE-BACKEND"`
//! `name="backend" value="SERVICE/BACKEND"`,
//! buttons `id="set-ready|set-drain|set-maint"`, login fields `user`,
//! `password` and button `id="login"`.

use std::{
    fmt::Write,
    time::{Duration, SystemTime},
};

use crate::config::Role;
use crate::control::format::{bytes, millis, since, span};
use crate::control::{BackendStatus, NodeStatus, ServiceStatus};
use crate::vrrp::{runtime::InstanceStatus, state::State};

/// Who is looking and what the page may offer them.
pub struct Viewer<'a> {
    pub user: &'a str,
    pub role: Role,
    /// The session's CSRF token; `None` for basic-auth callers, who get
    /// the controls without a token field (their POSTs are exempt).
    pub csrf: Option<&'a str>,
    pub refresh: Duration,
    pub flash: &'a [String],
    pub now: SystemTime,
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:1rem;background:#fafafa;color:#111;font-size:15px}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.15rem;margin:1.2rem 0 .3rem}
.head{display:flex;flex-wrap:wrap;gap:.4rem 1.5rem;align-items:baseline}
.note{color:#555} .flash{background:#fff6d5;border:1px solid #e0c050;padding:.4rem .6rem;margin:.4rem 0}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #ccc;padding:.25rem .45rem;text-align:left;white-space:nowrap}
th{background:#eee;white-space:normal;vertical-align:bottom} td.num{text-align:right;font-variant-numeric:tabular-nums}
.st{font-weight:bold;padding:.1rem .45rem;border-radius:3px;color:#fff}
.UP{background:#1a7f37} .DOWN{background:#c62828} .DRAIN{background:#b26a00} .MAINT{background:#5a5a9a}
.master{color:#1a7f37;font-weight:bold} .backup{color:#555;font-weight:bold} .other{color:#c62828;font-weight:bold}
.bad{color:#c62828} .actions{margin:.6rem 0} button{font-size:1rem;padding:.3rem .8rem;margin-right:.4rem}
";

/// HTML-escapes text for element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn document(title: &str, head_extra: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">{head_extra}\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// The login form, with `message` above it (a refused login).
pub fn login(message: Option<&str>) -> String {
    let mut body = String::from("<h1>lbd: sign in</h1>");
    if let Some(message) = message {
        let _ = write!(body, "<p class=\"flash\">{}</p>", escape(message));
    }
    body.push_str(
        "<form method=\"post\" action=\"/login\">\
         <p><label>User <input name=\"user\" autocomplete=\"username\" autofocus></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label></p>\
         <p><button id=\"login\" type=\"submit\">Sign in</button></p></form>",
    );
    document("lbd sign in", "", &body)
}

/// A short page for an error answer.
pub fn error(title: &str, message: &str) -> String {
    document(
        title,
        "",
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/stats\">Back to the stats page</a></p>",
            escape(title),
            escape(message)
        ),
    )
}

/// The stats page.
pub fn stats(status: &NodeStatus, viewer: &Viewer) -> String {
    let refresh = viewer.refresh.as_secs().max(1);
    let mut body = String::new();
    let _ = write!(
        body,
        "<div class=\"head\"><h1>lbd on {node}</h1>\
         <span>up {uptime}</span><span>config {version}</span>\
         <span>as {user} ({role})</span>\
         <span><a href=\"/stats\">Refresh now</a> (every {refresh}s)</span>",
        node = escape(&status.node),
        uptime = if status.started_at_ms == 0 {
            "?".to_string()
        } else {
            span(since(viewer.now, status.started_at_ms))
        },
        version = escape(if status.config_version.is_empty() {
            "?"
        } else {
            &status.config_version
        }),
        user = escape(viewer.user),
        role = viewer.role.name(),
    );
    if let Some(csrf) = viewer.csrf {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/logout\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"logout\" type=\"submit\">Sign out</button></form>",
            escape(csrf)
        );
    }
    body.push_str("</div>");
    vrrp_line(&mut body, &status.vrrp);
    body.push_str(
        "<p class=\"note\">Admin states (ready, drain, maint) are per node: \
         set them on each node of the pair.</p>",
    );
    for message in viewer.flash {
        let _ = write!(body, "<p class=\"flash\">{}</p>", escape(message));
    }
    let controls = viewer.role == Role::Admin;
    if controls {
        body.push_str("<form method=\"post\" action=\"/stats/state\">");
        if let Some(csrf) = viewer.csrf {
            let _ = write!(
                body,
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                escape(csrf)
            );
        }
        buttons(&mut body, "");
    }
    for service in &status.services {
        service_table(&mut body, service, controls, viewer.now);
    }
    if controls {
        buttons(&mut body, "-below");
        body.push_str("</form>");
    }
    if !status.datapath_events.is_empty() || status.handshakes_in_progress > 0 {
        body.push_str("<h2>Data path events</h2><p>");
        let _ = write!(
            body,
            "handshakes in progress: {} &middot; ",
            status.handshakes_in_progress
        );
        let events: Vec<String> = status
            .datapath_events
            .iter()
            .map(|(reason, n)| format!("{}: {n}", escape(reason)))
            .collect();
        body.push_str(&events.join(" &middot; "));
        body.push_str("</p>");
    }
    let refresh_tag = format!("<meta http-equiv=\"refresh\" content=\"{refresh}; url=/stats\">");
    let head = match viewer.csrf {
        Some(csrf) => format!(
            "{refresh_tag}<meta name=\"csrf-token\" content=\"{}\">",
            escape(csrf)
        ),
        None => refresh_tag,
    };
    document(&format!("lbd {}", status.node), &head, &body)
}

fn vrrp_line(body: &mut String, instances: &[InstanceStatus]) {
    if instances.is_empty() {
        body.push_str("<p>VRRP: not configured on this node (it holds the VIPs itself).</p>");
        return;
    }
    body.push_str("<p>VRRP: ");
    let parts: Vec<String> = instances
        .iter()
        .map(|i| {
            let class = match i.state {
                State::Master => "master",
                State::Backup => "backup",
                _ => "other",
            };
            let mut text = format!(
                "{} <span class=\"{class}\">{}</span>, priority {}",
                escape(&i.name),
                i.state.name().to_uppercase(),
                i.priority
            );
            if i.base_priority != i.priority {
                let _ = write!(text, " (base {})", i.base_priority);
            }
            if let Some(master) = i.master {
                let _ = write!(text, ", master {master}");
            }
            let _ = write!(text, ", for {}", span(Duration::from_millis(i.since_ms)));
            text
        })
        .collect();
    body.push_str(&parts.join(" &middot; "));
    body.push_str("</p>");
}

/// The Ready/Drain/Maint buttons; `suffix` keeps the ids of the second
/// row of buttons (below the tables) unique.
fn buttons(body: &mut String, suffix: &str) {
    body.push_str("<div class=\"actions\">Selected backends: ");
    for (state, label) in [("ready", "Ready"), ("drain", "Drain"), ("maint", "Maint")] {
        let _ = write!(
            body,
            "<button id=\"set-{state}{suffix}\" name=\"state\" value=\"{state}\" \
             type=\"submit\">{label}</button>"
        );
    }
    body.push_str("</div>");
}

fn service_table(body: &mut String, service: &ServiceStatus, controls: bool, now: SystemTime) {
    let _ = write!(
        body,
        "<h2 id=\"svc-{name}\">{name} <span class=\"note\">{vip}:{port}, \
         RSTs for lack of a backend: <span class=\"{rst_class}\">{rst}</span></span></h2>",
        name = escape(&service.name),
        vip = escape(&service.vip),
        port = service.port,
        rst = service.rst_no_backend,
        rst_class = if service.rst_no_backend > 0 {
            "bad"
        } else {
            ""
        },
    );
    body.push_str("<table><tr>");
    if controls {
        body.push_str("<th></th>");
    }
    body.push_str(
        "<th>Backend</th><th>State</th><th>Since</th><th>Last check</th><th>Weight</th>\
         <th>Active flows</th><th>New/s</th><th>Packets to / from backend</th>\
         <th>Bytes to / from backend</th></tr>",
    );
    for backend in &service.backends {
        backend_row(body, &service.name, backend, controls, now);
    }
    body.push_str("</table>");
}

fn backend_row(
    body: &mut String,
    service: &str,
    backend: &BackendStatus,
    controls: bool,
    now: SystemTime,
) {
    let state = backend.summary();
    let key = format!("{service}/{}", backend.name);
    let _ = write!(
        body,
        "<tr id=\"row-{}-{}\" data-state=\"{state}\">",
        escape(service),
        escape(&backend.name)
    );
    if controls {
        let _ = write!(
            body,
            "<td><input type=\"checkbox\" name=\"backend\" value=\"{k}\" id=\"sel-{s}-{b}\" \
             aria-label=\"select {k}\"></td>",
            k = escape(&key),
            s = escape(service),
            b = escape(&backend.name),
        );
    }
    let detail = match (backend.admin.to_string().as_str(), backend.health.as_str()) {
        ("drain", "down") => " (draining)",
        (_, "unchecked") if state != "MAINT" => " (not checked)",
        _ => "",
    };
    let since_text = backend.since_ms.map_or_else(
        || "agent start".to_string(),
        |ms| span(since(now, ms)) + " ago",
    );
    let check = match (&backend.unreachable, &backend.last_check) {
        (Some(reason), _) => format!("<span class=\"bad\">unreachable: {}</span>", escape(reason)),
        (None, Some(c)) => format!(
            "<span class=\"{}\">{}</span> in {} ms, {} ago",
            if c.ok { "" } else { "bad" },
            escape(&c.result),
            millis(c.duration_us),
            span(since(now, c.at_ms))
        ),
        (None, None) => "&ndash;".to_string(),
    };
    let t = &backend.traffic;
    let _ = write!(
        body,
        "<td><b>{name}</b> <span class=\"note\">{addr}</span></td>\
         <td><span class=\"st {state}\">{state}</span>{detail}</td><td>{since_text}</td>\
         <td>{check}</td><td class=\"num\">{weight}</td><td class=\"num\">{active}<br><span class=\"note\" title=\"SNAT ports held toward this backend\">{ports} ports</span></td>\
         <td class=\"num\">{rate:.1}</td><td class=\"num\">{pin} / {pout}</td>\
         <td class=\"num\" title=\"{bin_exact} / {bout_exact} bytes\">{bin} / {bout}</td></tr>",
        name = escape(&backend.name),
        addr = escape(&backend.address),
        weight = backend.weight,
        active = backend.active_flows,
        ports = backend.snat_ports_in_use,
        rate = backend.new_flows_per_second,
        pin = t.packets_to_backend,
        pout = t.packets_to_client,
        bin = bytes(t.bytes_to_backend),
        bout = bytes(t.bytes_to_client),
        bin_exact = t.bytes_to_backend,
        bout_exact = t.bytes_to_client,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
