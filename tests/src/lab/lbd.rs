//! The agent in a lab: its config file (rendered from typed values, in the
//! format `lbd run --config` reads) and the running process.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::child;

/// The SNAT ports lab LB nodes share, below ip_local_port_range
/// (32768-60999) and above the ports lab servers listen on. 10,000 ports: the
/// 10,000-connection test fills half of them toward its busiest backend,
/// which the data path's SNAT port search must handle without a failure
/// (with 8 hashed tries it lost about 4 SYNs in 10,000 there).
pub const LAB_SNAT_PORTS: (u16, u16) = (20_000, 29_999);

/// LB node `n`'s (1-based) share of [`LAB_SNAT_PORTS`] among `nodes` nodes:
/// disjoint slices, as lbd requires, so flow-state sync never sees a port
/// twice.
pub fn lab_snat_ports(n: usize, nodes: usize) -> String {
    let (min, max) = (u32::from(LAB_SNAT_PORTS.0), u32::from(LAB_SNAT_PORTS.1));
    let nodes = nodes.max(1) as u32;
    let slice = (max - min + 1) / nodes;
    let first = min + slice * (n as u32 - 1);
    let last = if n as u32 == nodes {
        max
    } else {
        first + slice - 1
    };
    format!("{first}-{last}")
}

/// An lbd config file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LbdConfig {
    #[serde(rename = "node")]
    pub nodes: BTreeMap<String, NodeConfig>,
    #[serde(rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// `[admin]`: the stats page; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    /// `[[redirect]]` listeners.
    #[serde(rename = "redirect", skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<RedirectConfig>,
    /// `[[vrrp]]` instances; none means single-node mode.
    #[serde(rename = "vrrp", skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<super::vrrp::VrrpConfig>,
}

/// `[admin]`: where the stats page listens and who may use it.
#[derive(Clone, Debug, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddrV4,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    #[serde(rename = "user")]
    pub users: Vec<AdminUserConfig>,
}

/// One `[[admin.user]]`.
#[derive(Clone, Debug, Serialize)]
pub struct AdminUserConfig {
    pub name: String,
    /// `admin` or `readonly`.
    pub role: String,
    /// From `lb_userspace::admin::passwd::hash_password` or `lbd passwd`.
    pub password_hash: String,
}

/// One `[[redirect]]`.
#[derive(Clone, Debug, Serialize)]
pub struct RedirectConfig {
    pub listen: SocketAddrV4,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeConfig {
    pub interface: String,
    pub snat_ports: String,
    /// `auto`, `always` or `never`; lbd's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_cookies: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `source` or `flow`.
    pub scheduler: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence_timeout: Option<String>,
    /// `[service.check]`: how every backend is health-checked; none means
    /// never checked, always UP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

/// A service's `[service.check]` table; unset keys take lbd's defaults.
/// Durations are written as lbd reads them ("200ms", "2s").
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckConfig {
    /// `tcp`, `tls-hello`, `http` or `https`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fastinter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downinter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl CheckConfig {
    /// A `tcp` (connect) check with every other key at lbd's default.
    pub fn tcp() -> Self {
        CheckConfig {
            kind: "tcp".into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddrV4,
    pub weight: u32,
}

impl ServiceConfig {
    /// A TCP service with source-hash scheduling and no persistence table.
    pub fn tcp(name: &str, vip: Ipv4Addr, port: u16, backends: Vec<BackendConfig>) -> Self {
        ServiceConfig {
            name: name.to_string(),
            vip,
            port,
            protocol: "tcp".into(),
            scheduler: "source".into(),
            persistence_timeout: None,
            check: None,
            backends,
        }
    }
}

impl LbdConfig {
    /// A config for lab LB nodes named `nodes` (node i gets `eth0` and the
    /// i-th slice of [`LAB_SNAT_PORTS`]) serving `services`.
    pub fn for_lab_nodes(nodes: &[String], services: Vec<ServiceConfig>) -> LbdConfig {
        let mut cfg = LbdConfig {
            services,
            ..Default::default()
        };
        for (i, name) in nodes.iter().enumerate() {
            cfg.nodes.insert(
                name.clone(),
                NodeConfig {
                    interface: "eth0".into(),
                    snat_ports: lab_snat_ports(i + 1, nodes.len()),
                    syn_cookies: None,
                },
            );
        }
        cfg
    }

    pub fn render(&self) -> Result<String> {
        toml::to_string(self).context("could not render the lab's lbd config as TOML")
    }

    /// Writes the config to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.render()?)
            .with_context(|| format!("could not write the lbd config {}", path.display()))
    }
}

/// A running `lbd run` inside an LB namespace. Dropping it kills it.
pub struct Lbd {
    pub(crate) child: Child,
    pub(crate) node: String,
    pub(crate) log: PathBuf,
    pub(crate) started: Instant,
}

impl Lbd {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node name lbd runs as (also its bpffs pin directory name).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where lbd's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        child::last_lines(&self.log(), lines)
    }

    /// Fails, quoting the log, when lbd has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("could not poll lbd")? {
            bail!(
                "lbd (node {}) exited with {status} after {:.1?}; its log ends with:\n{}",
                self.node,
                self.started.elapsed(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Sends `signal` (e.g. `libc::SIGHUP` to reload) to lbd.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.check_running()?;
        // SAFETY: our own child, not yet reaped (check_running just polled
        // it), so the pid is still ours.
        if unsafe { libc::kill(self.child.id() as i32, signal) } != 0 {
            bail!(
                "could not send signal {signal} to lbd (node {}): {}",
                self.node,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Polls the log until `done` holds; returns how long that took. Fails
    /// quoting the log when lbd exits or `timeout` passes first.
    pub fn wait_for_log(
        &mut self,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if done(&self.log()) {
                return Ok(start.elapsed());
            }
            self.check_running()?;
            if start.elapsed() > timeout {
                bail!(
                    "not within {timeout:?}; lbd log ends with:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks lbd to stop (SIGTERM) and waits up to `timeout`, then kills it.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        child::send_sigterm(&mut self.child)?;
        if let Some(status) = child::wait_exit(&mut self.child, timeout)? {
            return Ok(status);
        }
        self.child.kill().ok();
        let status = self.child.wait()?;
        bail!(
            "lbd (node {}) did not stop within {timeout:?} of SIGTERM and was killed ({status})",
            self.node
        )
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- lbd {} log (last lines of {}) ---\n{}",
                self.node,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snat_slices_are_disjoint_and_cover_the_range() {
        assert_eq!(lab_snat_ports(1, 1), "20000-29999");
        assert_eq!(lab_snat_ports(1, 2), "20000-24999");
        assert_eq!(lab_snat_ports(2, 2), "25000-29999");
    }

    #[test]
    fn rendered_config_has_the_layout_lbd_reads() {
        let mut cfg = LbdConfig::default();
        cfg.nodes.insert(
            "lab1-lb1".into(),
            NodeConfig {
                interface: "eth0".into(),
                snat_ports: lab_snat_ports(1, 1),
                syn_cookies: None,
            },
        );
        cfg.services.push(ServiceConfig::tcp(
            "web",
            Ipv4Addr::new(192, 0, 2, 10),
            80,
            vec![BackendConfig {
                name: "be1".into(),
                address: "198.51.100.11:80".parse().unwrap(),
                weight: 2,
            }],
        ));
        let text = cfg.render().unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["node"]["lab1-lb1"]["interface"].as_str(),
            Some("eth0")
        );
        assert_eq!(
            parsed["node"]["lab1-lb1"]["snat_ports"].as_str(),
            Some("20000-29999")
        );
        let svc = &parsed["service"][0];
        assert_eq!(svc["vip"].as_str(), Some("192.0.2.10"));
        assert_eq!(svc["port"].as_integer(), Some(80));
        assert_eq!(svc["scheduler"].as_str(), Some("source"));
        assert!(svc.get("persistence_timeout").is_none());
        assert_eq!(
            svc["backend"][0]["address"].as_str(),
            Some("198.51.100.11:80")
        );
        assert_eq!(svc["backend"][0]["weight"].as_integer(), Some(2));
        assert!(
            text.contains("[[service]]") && text.contains("[[service.backend]]"),
            "{text}"
        );
        assert!(svc.get("check").is_none(), "no check unless asked");
    }

    #[test]
    fn check_table_renders_under_its_service() {
        let mut cfg = LbdConfig::for_lab_nodes(&["lab1-lb1".into()], vec![]);
        let mut svc = ServiceConfig::tcp(
            "web",
            Ipv4Addr::new(192, 0, 2, 10),
            80,
            vec![BackendConfig {
                name: "be1".into(),
                address: "198.51.100.11:80".parse().unwrap(),
                weight: 1,
            }],
        );
        svc.check = Some(CheckConfig {
            inter: Some("200ms".into()),
            rise: Some(2),
            ..CheckConfig::tcp()
        });
        cfg.services.push(svc);
        let text = cfg.render().unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        let check = &parsed["service"][0]["check"];
        assert_eq!(check["kind"].as_str(), Some("tcp"), "{text}");
        assert_eq!(check["inter"].as_str(), Some("200ms"));
        assert_eq!(check["rise"].as_integer(), Some(2));
        assert!(check.get("fall").is_none(), "unset keys are left out");
        assert!(text.contains("[service.check]"), "{text}");
    }
}
