//! The agent's TOML config: schema, parsing and validation.
//!
//! Validation does not stop at the first problem: the file is parsed into a
//! document that keeps the byte span of every key and value (`toml_edit`),
//! then each table is walked by its own function, which pushes every error it
//! sees with file, line, column and dotted key. Cross-table rules (duplicates,
//! map sizes, SNAT ranges) run last on whatever parsed. A `Config` is returned
//! only when the file has no error at all.
//!
//! Adding a table (`[admin]`, `[[vrrp]]`, ...) means: a type in `schema`, a
//! module with a `read` function walking its `Section`, one call in `parse`,
//! and its cross checks in `validate`.

mod admin;
pub mod capacity;
mod check;
mod limits;
mod node;
mod report;
mod schema;
mod section;
mod service;
mod syntax;
mod validate;
mod validate_admin;
mod validate_vrrp;
mod values;
mod vrrp;

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vrrp_tests;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

pub use admin::DEFAULT_REFRESH;
pub use report::{ConfigError, ConfigErrors};
pub use schema::{Admin, AdminUser, Redirect, Role};
pub use schema::{AuthType, Garp, Track, TrackCondition, Vrrp, VrrpAuth, VrrpVersion};
pub use schema::{
    Backend, CheckKind, Config, HealthCheck, Limits, Mode, Node, PortRange, Protocol, Scheduler,
    Service, StatusMatch, SynCookies, Timeouts, XdpMode,
};

use report::Report;
use section::Section;

/// Where `lbd run` and `lbd check` look when no file is named.
pub const DEFAULT_PATH: &str = "/etc/lb/lbd.toml";

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file_name),
        Err(error) => Err(ConfigErrors(vec![ConfigError {
            file: file_name,
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the config file: {error}"),
        }])),
    }
}

/// [`load`] for a command: every error in one message that names the file.
pub fn load_or_explain(path: &Path) -> anyhow::Result<Config> {
    load(path)
        .map_err(|errors| anyhow::anyhow!("{} is not a valid config:\n{errors}", path.display()))
}

/// Validates config text; `file_name` only appears in the errors.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(file_name, text);
    let Some(document) = syntax::parse_document(text, &mut report) else {
        return Err(ConfigErrors(report.into_errors()));
    };
    let mut root = Section::root(document.as_table());
    let nodes = node::read_all(&mut root, &mut report);
    let limits = limits::read(&mut root, &mut report);
    let services = service::read_all(&mut root, &mut report);
    let vrrp = vrrp::read_all(&mut root, &mut report);
    let admin = admin::read_admin(&mut root, &mut report);
    let redirects = admin::read_redirects(&mut root, &mut report);
    root.finish(&mut report);
    validate::cross_check(&nodes, &limits, &services, &mut report);
    validate_vrrp::cross_check(&nodes, &services, &vrrp, &mut report);
    validate_admin::cross_check(&nodes, &services, admin.as_ref(), &redirects, &mut report);

    if report.has_errors() {
        return Err(ConfigErrors(report.into_errors()));
    }
    let config = (|| {
        Some(Config {
            nodes: nodes
                .into_iter()
                .map(node::NodeDraft::build)
                .collect::<Option<BTreeMap<_, _>>>()?,
            limits: limits.build()?,
            services: services
                .into_iter()
                .map(service::ServiceDraft::build)
                .collect::<Option<Vec<_>>>()?,
            vrrp: vrrp
                .into_iter()
                .map(vrrp::VrrpDraft::build)
                .collect::<Option<Vec<_>>>()?,
            admin: match admin {
                Some(admin) => Some(admin.build()?),
                None => None,
            },
            redirects: redirects
                .into_iter()
                .map(admin::RedirectDraft::build)
                .collect::<Option<Vec<_>>>()?,
        })
    })();
    config.ok_or_else(|| {
        // Every missing field pushes an error, so this means a bug here.
        report.push(
            None,
            "",
            "internal error: the config validated but could not be built",
        );
        ConfigErrors(report.into_errors())
    })
}

impl Config {
    /// The node this agent runs as: `--node NAME` if given, else the one named
    /// like this host, else the only node of the file.
    pub fn node(&self, name: Option<&str>) -> anyhow::Result<(&str, &Node)> {
        let hostname = match name {
            Some(_) => None,
            None => hostname(),
        };
        self.choose_node(name, hostname.as_deref())
    }

    /// [`Config::node`] with the host name passed in.
    pub fn choose_node(
        &self,
        name: Option<&str>,
        hostname: Option<&str>,
    ) -> anyhow::Result<(&str, &Node)> {
        let defined = self
            .nodes
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let found = |wanted: &str| {
            self.nodes
                .get_key_value(wanted)
                .map(|(name, node)| (name.as_str(), node))
        };
        if let Some(name) = name {
            return match found(name) {
                Some(node) => Ok(node),
                None => bail!("node `{name}` is not in the config, which defines: {defined}"),
            };
        }
        if let Some(host) = hostname {
            // A fully qualified host name matches a node named by its first label.
            let short = host.split('.').next().unwrap_or(host);
            if let Some(node) = found(host).or_else(|| found(short)) {
                return Ok(node);
            }
        }
        if let [(name, node)] = self.nodes.iter().collect::<Vec<_>>()[..] {
            return Ok((name, node));
        }
        match hostname {
            Some(host) => bail!(
                "this host is named `{host}`, which is not a node in the config (it defines: \
                 {defined}); choose one with --node NAME"
            ),
            None => bail!(
                "cannot read this host's name to pick a node (the config defines: {defined}); \
                 choose one with --node NAME"
            ),
        }
    }

    /// Backends over all services.
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }
}

/// The kernel's host name (UTS namespace), as `hostname` prints it.
fn hostname() -> Option<String> {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return Some(name.to_string());
        }
    }
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The core of `lbd check FILE`: the one-line summary of a valid file.
pub fn check(path: &Path) -> Result<String, ConfigErrors> {
    let config = load(path)?;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let nodes = config
        .nodes
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut summary = format!(
        "{}: ok: {}, {}, nodes: {nodes}",
        path.display(),
        plural(config.services.len(), "service"),
        plural(config.backend_count(), "backend"),
    );
    let ceilings = capacity::ceilings(&config);
    if !ceilings.is_empty() {
        summary.push_str(
            "\nSNAT ceiling: new connections per second one backend takes from many clients with \
             no port reused while the backend may still hold it (a client's own closed ports \
             are reused at once; at most `ports` connections are open to a backend):",
        );
        for ceiling in &ceilings {
            summary.push_str(&format!("\n  {ceiling}"));
        }
        for warning in ceilings.iter().filter_map(capacity::Ceiling::warning) {
            summary.push_str(&format!("\nwarning: {warning}"));
        }
    }
    Ok(summary)
}

/// `lbd check FILE`: the summary on stdout and success, or every error on
/// stderr (one per line) and exit code 1.
pub fn check_command(path: &Path) -> ExitCode {
    match check(path) {
        Ok(summary) => {
            // A closed pipe (`lbd check | head`) is not an error of the file.
            let _ = writeln!(std::io::stdout(), "{summary}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}
