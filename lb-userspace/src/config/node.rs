//! `[node.NAME]`: the values that differ between the two hosts.

use super::report::Report;
use super::schema::{Node, PortRange, SynCookies, XdpMode};
use super::section::{At, Section, text};
use super::values;

/// A node as written, each field `None` when its error was reported.
pub(super) struct NodeDraft {
    pub name: At<String>,
    pub path: String,
    pub interface: Option<String>,
    pub xdp_mode: Option<XdpMode>,
    pub snat_ports: Option<At<PortRange>>,
    pub syn_cookies: Option<SynCookies>,
}

/// Reads `[node]`; a config without any node is an error, since the agent
/// could not tell which interface to attach to.
pub(super) fn read_all(root: &mut Section, report: &mut Report) -> Vec<NodeDraft> {
    match root.table(report, "node") {
        Ok(Some(mut nodes)) => {
            let empty = nodes.is_empty();
            let span = nodes.span.clone();
            let found = nodes
                .named_tables(report)
                .into_iter()
                .filter_map(|(name, section)| read_one(name, section, report))
                .collect::<Vec<_>>();
            nodes.finish(report);
            if empty {
                report.push(
                    span,
                    "node",
                    "no nodes defined; add a [node.NAME] table per host",
                );
            }
            found
        }
        Ok(None) => {
            report.push(
                root.span.clone(),
                "node",
                "no nodes defined; add a [node.NAME] table per host (NAME is its host name)",
            );
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

fn read_one(name: At<&str>, mut section: Section, report: &mut Report) -> Option<NodeDraft> {
    let name = match values::node_name(name.value) {
        Ok(valid) => At {
            value: valid,
            span: name.span,
        },
        Err(message) => {
            report.push(name.span, &section.path, message);
            return None;
        }
    };
    let modes = [("native", XdpMode::Native), ("generic", XdpMode::Generic)];
    let cookies = [
        ("auto", SynCookies::Auto),
        ("always", SynCookies::Always),
        ("never", SynCookies::Never),
    ];
    let draft = NodeDraft {
        interface: section
            .required(report, "interface", text(values::interface))
            .map(|at| at.value),
        xdp_mode: section.or_default(
            report,
            "xdp_mode",
            XdpMode::Native,
            text(|t| values::choice(t, &modes, &[])),
        ),
        snat_ports: section.required(report, "snat_ports", text(values::snat_port_range)),
        syn_cookies: section.or_default(
            report,
            "syn_cookies",
            SynCookies::Never,
            text(|t| values::choice(t, &cookies, &[])),
        ),
        path: section.path.clone(),
        name,
    };
    section.finish(report);
    Some(draft)
}

impl NodeDraft {
    pub fn build(self) -> Option<(String, Node)> {
        let node = Node {
            interface: self.interface?,
            xdp_mode: self.xdp_mode?,
            snat_ports: self.snat_ports?.value,
            syn_cookies: self.syn_cookies?,
        };
        Some((self.name.value, node))
    }
}
