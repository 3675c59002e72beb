//! VRRP in a two-node lab: the `[[vrrp]]` table of the lab's config, the
//! agents' VRRP status (through their control sockets), their state-change
//! log lines, and which node has a VIP on its interface. What the rest of
//! the segment sees over ARP is in [`super::arp`].
//!
//! Everything here observes; nothing decides. The tests compare what they
//! see with the RFC's timers ([`master_down`], [`skew`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Lbd;
use super::setup::Lab;
use super::topology;

/// One `[[vrrp]]` instance as lbd reads it. Per-node maps are keyed by lbd
/// node name (the lab's namespace names).
#[derive(Clone, Debug, Serialize)]
pub struct VrrpConfig {
    pub name: String,
    pub virtual_router_id: u8,
    /// Written as lbd reads durations ("1s").
    pub advert_interval: String,
    /// Empty: multicast.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<Ipv4Addr>,
    pub vips: Vec<Ipv4Addr>,
    pub preempt: bool,
    pub priority: BTreeMap<String, u8>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unicast_src: BTreeMap<String, Ipv4Addr>,
    /// None: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// None: lbd's default gratuitous ARP burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp: Option<GarpConfig>,
    #[serde(rename = "track", skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackConfig>,
}

impl VrrpConfig {
    /// The same instance over multicast (no unicast peers or sources).
    pub fn multicast(mut self) -> Self {
        self.unicast_peers.clear();
        self.unicast_src.clear();
        self
    }
}

/// `auth = { type = "ah", password = "..." }` (or `"pass"`).
#[derive(Clone, Debug, Serialize)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub password: String,
}

impl AuthConfig {
    pub fn ah(password: &str) -> Self {
        AuthConfig {
            kind: "ah".into(),
            password: password.into(),
        }
    }
}

/// `garp = { count = .., interval = "..", delay = ".." }`.
#[derive(Clone, Debug, Serialize)]
pub struct GarpConfig {
    pub count: u32,
    /// Written as lbd reads durations ("100ms").
    pub interval: String,
    pub delay: String,
}

/// A `[[vrrp.track]]` entry: `xdp-attached`, `service-up` (with `service`)
/// or `script` (with `command`).
#[derive(Clone, Debug, Serialize)]
pub struct TrackConfig {
    pub kind: String,
    pub weight: i16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl TrackConfig {
    pub fn xdp_attached(weight: i16) -> Self {
        TrackConfig {
            kind: "xdp-attached".into(),
            weight,
            service: None,
        }
    }

    pub fn service_up(service: &str, weight: i16) -> Self {
        TrackConfig {
            kind: "service-up".into(),
            weight,
            service: Some(service.into()),
        }
    }
}

impl Lab {
    /// An instance over all of this lab's LB nodes: node `n` gets
    /// `priorities[n-1]` and speaks unicast from its front address
    /// (192.0.2.2, 192.0.2.3, ...) to the others; 1 s adverts, VRRPv3.
    pub fn vrrp_config(
        &self,
        name: &str,
        vrid: u8,
        vips: &[Ipv4Addr],
        priorities: &[u8],
    ) -> VrrpConfig {
        let nodes = self.plan.shape.lb_nodes;
        assert_eq!(priorities.len(), nodes, "one priority per LB node");
        let mut priority = BTreeMap::new();
        let mut unicast_src = BTreeMap::new();
        for n in 1..=nodes {
            priority.insert(self.lb_node_name(n), priorities[n - 1]);
            unicast_src.insert(self.lb_node_name(n), topology::lb_front_addr(n));
        }
        VrrpConfig {
            name: name.to_string(),
            virtual_router_id: vrid,
            advert_interval: "1s".into(),
            unicast_peers: (1..=nodes).map(topology::lb_front_addr).collect(),
            vips: vips.to_vec(),
            preempt: true,
            priority,
            unicast_src,
            auth: None,
            garp: None,
            tracks: Vec::new(),
        }
    }
}

/// RFC 5798 skew time of a backup with `priority`, 1 s adverts.
pub fn skew(priority: u8, advert: Duration) -> Duration {
    advert * (256 - u32::from(priority)) / 256
}

/// RFC 5798 master-down interval of a backup with `priority`: how long it
/// waits for adverts before it takes over (and how long a lease lasts).
pub fn master_down(priority: u8, advert: Duration) -> Duration {
    3 * advert + skew(priority, advert)
}

/// One instance of `lbd status`'s `"vrrp"` list (the contract between the
/// VRRP helpers). Unknown fields are ignored so the view survives additions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct InstanceView {
    pub name: String,
    /// `master`, `backup`, `fault` or `initialize`.
    pub state: String,
    pub priority: u8,
    pub base_priority: u8,
    pub master: Option<Ipv4Addr>,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    pub vips: Vec<Ipv4Addr>,
    pub since_ms: u64,
}

impl InstanceView {
    pub fn is_master(&self) -> bool {
        self.state == "master"
    }

    pub fn is_backup(&self) -> bool {
        self.state == "backup"
    }

    pub fn is_fault(&self) -> bool {
        self.state == "fault"
    }

    /// The drop counter `label` (0 when absent).
    pub fn dropped(&self, label: &str) -> u64 {
        self.drops.get(label).copied().unwrap_or(0)
    }

    /// The sum of all drop counters.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// How long the agent may take to answer a status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The whole `lbd status` answer of agent `node`, read from its control
/// socket (`/run/lbd/<node>.sock` is a path, so any namespace reaches it).
pub fn status_json(node: &str) -> Result<serde_json::Value> {
    let path = lb_userspace::control::socket_path(node);
    let stream = UnixStream::connect(&path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    stream.set_write_timeout(Some(STATUS_TIMEOUT))?;
    (&stream)
        .write_all(b"{\"request\":\"status\"}\n")
        .with_context(|| format!("could not ask {} for its status", path.display()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("{} sent no status", path.display()))?;
    let answer: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("{} sent an unreadable answer: {line}", path.display()))?;
    if answer["ok"] != serde_json::Value::Bool(true) {
        bail!("agent {node} refused the status request: {line}");
    }
    Ok(answer["status"].clone())
}

/// The VRRP instances in agent `node`'s status.
pub fn vrrp_status(node: &str) -> Result<Vec<InstanceView>> {
    let status = status_json(node)?;
    let list = status
        .get("vrrp")
        .with_context(|| format!("agent {node}'s status has no \"vrrp\" field: {status}"))?;
    serde_json::from_value(list.clone())
        .with_context(|| format!("agent {node}'s \"vrrp\" status is not as agreed: {list}"))
}

/// Instance `name` of agent `node`.
pub fn instance(node: &str, name: &str) -> Result<InstanceView> {
    vrrp_status(node)?
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| format!("agent {node} reports no VRRP instance {name}"))
}

/// The first (in the labs: the only) VRRP instance of agent `node`.
pub fn first_instance(node: &str) -> Result<InstanceView> {
    vrrp_status(node)?
        .into_iter()
        .next()
        .with_context(|| format!("agent {node} reports no VRRP instance"))
}

/// Polls `lbd`'s first instance until it is in `state` (`master`,
/// `backup`); returns how long that took and the instance then. Fails
/// quoting the last status and lbd's log when lbd exits or time runs out.
pub fn wait_for_state(
    lbd: &mut Lbd,
    state: &str,
    timeout: Duration,
) -> Result<(Duration, InstanceView)> {
    let start = Instant::now();
    loop {
        let last = match first_instance(lbd.node()) {
            Ok(i) if i.state == state => return Ok((start.elapsed(), i)),
            Ok(i) => format!("{i:?}"),
            Err(e) => format!("{e:#}"),
        };
        lbd.check_running()?;
        if start.elapsed() > timeout {
            bail!(
                "lbd not {state} within {timeout:?}; last status: {last}\nlbd log ends with:\n{}",
                lbd.log_tail(25)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `probe` every `every` until it yields a value; returns it and how
/// long that took. Fails with the last error (or "not yet") after `timeout`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(Some(value)) => return Ok((value, start.elapsed())),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?} (last: {last})");
        }
        std::thread::sleep(every);
    }
}

/// Waits until instance `name` of agent `node` satisfies `done`.
pub fn wait_for_instance(
    node: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(&InstanceView) -> bool,
) -> Result<(InstanceView, Duration)> {
    poll(
        &format!("VRRP {name} on {node}"),
        timeout,
        Duration::from_millis(20),
        || Ok(Some(instance(node, name)?).filter(|i| done(i))),
    )
}

/// One state-change line of lbd's log:
/// `VRRP <instance>: <from> -> <to> (<reason>), priority <p>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedTransition {
    pub from: String,
    pub to: String,
    pub reason: String,
    pub priority: u8,
}

/// The state changes of `instance` in `log`, in order.
pub fn logged_transitions(log: &str, instance: &str) -> Vec<LoggedTransition> {
    let marker = format!("VRRP {instance}: ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&marker)? + marker.len()..];
            let (from, rest) = rest.split_once(" -> ")?;
            let (to, rest) = rest.split_once(" (")?;
            let (reason, rest) = rest.rsplit_once("), priority ")?;
            let priority = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some(LoggedTransition {
                from: from.trim().to_string(),
                to: to.trim().to_string(),
                reason: reason.to_string(),
                priority,
            })
        })
        .collect()
}

/// How many times `instance` entered `state` according to `log`.
pub fn entered(log: &str, instance: &str, state: &str) -> usize {
    logged_transitions(log, instance)
        .iter()
        .filter(|t| t.to == state)
        .count()
}

impl Lab {
    /// The IPv4 addresses on `node`'s eth0 (`ip -4 addr`).
    pub fn addresses(&self, node: &str) -> Result<Vec<Ipv4Addr>> {
        let out = self.exec_in(node, &["ip", "-j", "-4", "addr", "show", "dev", "eth0"])?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -j addr in {node} printed no JSON"))?;
        let mut found = Vec::new();
        for link in links.as_array().into_iter().flatten() {
            for info in link["addr_info"].as_array().into_iter().flatten() {
                if let Some(addr) = info["local"].as_str().and_then(|a| a.parse().ok()) {
                    found.push(addr);
                }
            }
        }
        Ok(found)
    }

    /// Which of `vips` are on `node`'s eth0.
    pub fn vips_held(&self, node: &str, vips: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>> {
        let on_link = self.addresses(node)?;
        Ok(vips
            .iter()
            .copied()
            .filter(|v| on_link.contains(v))
            .collect())
    }

    /// Detaches LB node `n`'s XDP program the way an operator (or a crash
    /// of the driver) might: `bpftool link detach` on lbd's pinned link.
    /// Returns the link id.
    pub fn detach_xdp(&self, n: usize) -> Result<u32> {
        let pin = super::counters::map_dir(&self.lbd_pin_dir(n))?.join("link");
        let pin = pin.to_string_lossy().into_owned();
        let out = self.exec_in(
            &format!("lb{n}"),
            &["bpftool", "-j", "link", "show", "pinned", &pin],
        )?;
        let link: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bpftool printed no JSON for {pin}"))?;
        let id = link["id"]
            .as_u64()
            .with_context(|| format!("bpftool shows no link id for {pin}: {link}"))?;
        self.exec_in(
            &format!("lb{n}"),
            &["bpftool", "link", "detach", "id", &id.to_string()],
        )?;
        Ok(id as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_follow_rfc_5798() {
        let second = Duration::from_secs(1);
        assert_eq!(skew(100, second), Duration::from_micros(609_375));
        assert_eq!(master_down(100, second), Duration::from_micros(3_609_375));
        assert_eq!(
            master_down(255, second),
            Duration::from_nanos(3_003_906_250)
        );
    }

    #[test]
    fn transition_lines_parse_and_others_do_not() {
        let log = "\
2026-11-22T05:00:00Z  INFO lbd: forwarding
2026-11-22T05:00:01Z  INFO lb_userspace::vrrp: VRRP lb_vip: initialize -> backup (startup), priority 101
2026-11-22T05:00:04Z  INFO lb_userspace::vrrp: VRRP lb_vip: backup -> master (master down), priority 101
2026-11-22T05:00:05Z  INFO lb_userspace::vrrp: VRRP other: backup -> master (master down), priority 100
2026-11-22T05:00:09Z  INFO lb_userspace::vrrp: VRRP lb_vip: master -> backup (higher priority 120 from 192.0.2.3), priority 51
";
        let seen = logged_transitions(log, "lb_vip");
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[1],
            LoggedTransition {
                from: "backup".into(),
                to: "master".into(),
                reason: "master down".into(),
                priority: 101
            }
        );
        assert_eq!(seen[2].reason, "higher priority 120 from 192.0.2.3");
        assert_eq!(seen[2].priority, 51);
        assert_eq!(entered(log, "lb_vip", "master"), 1);
        assert_eq!(entered(log, "other", "master"), 1);
        assert_eq!(entered(log, "lb_vip", "fault"), 0);
    }

    #[test]
    fn instance_config_renders_as_lbd_reads_it() {
        let mut cfg = super::super::lbd::LbdConfig::for_lab_nodes(
            &["vr1x0-lb1".into(), "vr1x0-lb2".into()],
            vec![],
        );
        let mut priority = BTreeMap::new();
        priority.insert("vr1x0-lb1".to_string(), 101);
        priority.insert("vr1x0-lb2".to_string(), 100);
        let mut unicast_src = BTreeMap::new();
        unicast_src.insert("vr1x0-lb1".to_string(), Ipv4Addr::new(192, 0, 2, 2));
        unicast_src.insert("vr1x0-lb2".to_string(), Ipv4Addr::new(192, 0, 2, 3));
        cfg.vrrp.push(VrrpConfig {
            name: "lb_vip".into(),
            virtual_router_id: 51,
            advert_interval: "1s".into(),
            unicast_peers: vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)],
            vips: vec![Ipv4Addr::new(192, 0, 2, 10)],
            preempt: false,
            priority,
            unicast_src,
            auth: Some(AuthConfig::ah("smoke")),
            garp: Some(GarpConfig {
                count: 3,
                interval: "100ms".into(),
                delay: "0s".into(),
            }),
            tracks: vec![TrackConfig::service_up("web", -50)],
        });
        let text = cfg.render().unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        let vrrp = &parsed["vrrp"][0];
        assert_eq!(vrrp["name"].as_str(), Some("lb_vip"), "{text}");
        assert_eq!(vrrp["priority"]["vr1x0-lb1"].as_integer(), Some(101));
        assert_eq!(vrrp["unicast_src"]["vr1x0-lb2"].as_str(), Some("192.0.2.3"));
        assert_eq!(vrrp["preempt"].as_bool(), Some(false));
        assert_eq!(vrrp["track"][0]["kind"].as_str(), Some("service-up"));
        assert_eq!(vrrp["track"][0]["weight"].as_integer(), Some(-50));
        assert_eq!(vrrp["track"][0]["service"].as_str(), Some("web"));
        assert_eq!(vrrp["auth"]["type"].as_str(), Some("ah"));
        assert_eq!(vrrp["garp"]["interval"].as_str(), Some("100ms"));
        // lbd itself reads it (a service-up track needs a service: xdp-attached).
        cfg.vrrp[0].tracks = vec![TrackConfig::xdp_attached(2)];
        let text = cfg.render().unwrap();
        if let Err(e) = lb_userspace::config::parse(&text, "lab.toml") {
            panic!("lbd refuses the rendered config: {e}\n{text}");
        }
        let multicast = cfg.vrrp[0].clone().multicast();
        cfg.vrrp[0] = multicast;
        let text = cfg.render().unwrap();
        assert!(!text.contains("unicast"), "{text}");
        let single = super::super::lbd::LbdConfig::default().render().unwrap();
        assert!(!single.contains("vrrp"), "{single}");
    }
}
