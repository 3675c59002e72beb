//! The agent's control socket `/run/lbd/<node>.sock`: how `lbd backend
//! set-state` and `lbd status` talk to a running agent.
//!
//! A Unix stream socket, mode 0660 in the root-only `/run/lbd`, so only root
//! can use it. One JSON request per line, one JSON answer per line:
//!
//! ```text
//! {"request":"set-state","service":"web","backend":"be2","state":"drain"}
//! {"ok":true,"message":"web/be2: ready -> drain"}
//! {"request":"status"}
//! {"ok":true,"status":{"node":"lb1","services":[...]}}
//! ```
//!
//! The listener only parses and forwards: every request is answered by the
//! agent's own loop, which owns the state, so requests never race a reload
//! or a health change.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{admin_view::AdminState, health_view::HealthView};
use crate::{
    agent::{admin_view::AdminView, state::Ids},
    config::Config,
    health::BackendKey,
    ids::backend_key,
};

/// A request line longer than this is refused (a request is a few dozen bytes).
const MAX_REQUEST: usize = 4096;

/// `/run/lbd/<node>.sock`.
pub fn socket_path(node: &str) -> PathBuf {
    Path::new(super::RUN_DIR).join(format!("{node}.sock"))
}

/// What a client may ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Set a backend's admin state. `state` stays a word here so a bad one
    /// gets the agent's own error message.
    SetState {
        service: String,
        backend: String,
        state: String,
    },
    /// Every service and backend with health, admin state and ids.
    Status,
}

/// The answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

impl Answer {
    pub fn ok(message: impl Into<String>) -> Self {
        Answer {
            ok: true,
            message: Some(message.into()),
            ..Answer::default()
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(error.into()),
            ..Answer::default()
        }
    }
}

/// What `status` reports: the one model behind `lbd status`, the stats
/// page, its JSON API and `/metrics`. Counters are totals since the id of
/// the backend or service came into use; times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// When this agent started (Unix ms); 0 when not known.
    #[serde(default)]
    pub started_at_ms: u64,
    /// A short hash of the config file the agent runs with.
    #[serde(default)]
    pub config_version: String,
    /// When the active flows were last counted (the flow collection, every
    /// few seconds); `None` before the first count.
    #[serde(default)]
    pub flows_counted_at_ms: Option<u64>,
    /// The data path's reason counters (drops, passes, answers) by label.
    #[serde(default)]
    pub datapath_events: BTreeMap<String, u64>,
    /// TCP handshakes in progress at the last flow collection: each holds a
    /// SNAT port until the client's ACK or the `tcp_syn` timeout, so a
    /// number far above the new connections per second is a SYN flood.
    #[serde(default)]
    pub handshakes_in_progress: u64,
    pub services: Vec<ServiceStatus>,
    /// One entry per `[[vrrp]]` instance (empty without VRRP); filled in by
    /// the agent from `VrrpHandle::status`.
    #[serde(default)]
    pub vrrp: Vec<crate::vrrp::runtime::InstanceStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub id: u32,
    pub vip: String,
    pub port: u16,
    /// SYNs answered with a RST because no backend could take them.
    #[serde(default)]
    pub rst_no_backend: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub id: u32,
    pub address: String,
    pub weight: u32,
    /// `up`, `down`, or `unchecked` (no check configured, or in maint).
    pub health: String,
    pub admin: AdminState,
    #[serde(default)]
    pub traffic: Traffic,
    /// Open connections (both directions counted once), at the last count.
    #[serde(default)]
    pub active_flows: u64,
    /// SNAT ports held toward this backend at the last count (open, closing
    /// and recently closed connections, handshakes): the range of the
    /// node's `snat_ports` is spent per backend.
    #[serde(default)]
    pub snat_ports_in_use: u64,
    /// New connections per second over the last counting interval.
    #[serde(default)]
    pub new_flows_per_second: f64,
    /// The last health check; `None` when unchecked or not yet checked.
    #[serde(default)]
    pub last_check: Option<LastCheck>,
    /// When the health or admin state last changed (Unix ms); `None` while
    /// it is still the state the agent started with.
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Why packets cannot reach it ("no route to 198.51.100.21 (...)"),
    /// which holds it DOWN whatever its checks say; `None` when its path
    /// is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl BackendStatus {
    /// The one word an operator reads first: MAINT, DOWN, DRAIN or UP.
    pub fn summary(&self) -> &'static str {
        match (self.admin, self.health.as_str()) {
            (AdminState::Maint, _) => "MAINT",
            (_, "down") => "DOWN",
            (AdminState::Drain, _) => "DRAIN",
            _ => "UP",
        }
    }

    /// Whether the health checks count it up (an unchecked backend is up).
    pub fn is_up(&self) -> bool {
        self.health != "down"
    }
}

/// Packets and bytes each way, from the per-CPU counters of the data path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub new_flows: u64,
}

/// The last health check of a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheck {
    pub ok: bool,
    /// "tls-hello timeout after 2s", "http status 200".
    pub result: String,
    pub duration_us: u64,
    pub at_ms: u64,
}

/// The status of every service and backend. `checked` says whether a
/// backend's health check runs.
pub fn status(
    node: &str,
    config: &Config,
    ids: &Ids,
    health: &HealthView,
    admin: &AdminView,
    checked: impl Fn(&BackendKey) -> bool,
) -> NodeStatus {
    let services = config
        .services
        .iter()
        .map(|svc| ServiceStatus {
            name: svc.name.clone(),
            id: ids.service(svc),
            vip: svc.vip.to_string(),
            port: svc.port,
            rst_no_backend: 0,
            backends: svc
                .backends
                .iter()
                .map(|b| {
                    let key = BackendKey::new(&svc.name, &b.name);
                    let unreachable = health.unreachable(&key).map(str::to_string);
                    let health = if unreachable.is_some() {
                        "down"
                    } else if !checked(&key) {
                        "unchecked"
                    } else if health.is_up(&svc.name, &b.name) {
                        "up"
                    } else {
                        "down"
                    };
                    BackendStatus {
                        name: b.name.clone(),
                        id: ids
                            .backends
                            .get(&backend_key(&svc.name, &b.name))
                            .unwrap_or_default(),
                        address: b.address.to_string(),
                        weight: b.weight,
                        health: health.to_string(),
                        admin: admin.state(&svc.name, &b.name),
                        traffic: Traffic::default(),
                        active_flows: 0,
                        snat_ports_in_use: 0,
                        new_flows_per_second: 0.0,
                        last_check: None,
                        since_ms: None,
                        unreachable,
                    }
                })
                .collect(),
        })
        .collect();
    NodeStatus {
        node: node.to_string(),
        started_at_ms: 0,
        config_version: String::new(),
        flows_counted_at_ms: None,
        datapath_events: BTreeMap::new(),
        handshakes_in_progress: 0,
        services,
        vrrp: Vec::new(),
    }
}

/// The backend a `set-state` names, or an error listing what exists.
pub fn find_backend(config: &Config, service: &str, backend: &str) -> Result<BackendKey, String> {
    let list = |names: Vec<&str>| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let Some(svc) = config.services.iter().find(|s| s.name == service) else {
        let names = config.services.iter().map(|s| s.name.as_str()).collect();
        return Err(format!("no service {service}; services: {}", list(names)));
    };
    if !svc.backends.iter().any(|b| b.name == backend) {
        let names = svc.backends.iter().map(|b| b.name.as_str()).collect();
        return Err(format!(
            "no backend {backend} in service {service}; backends: {}",
            list(names)
        ));
    }
    Ok(BackendKey::new(service, backend))
}

/// A request on its way to the agent loop, with where its answer goes.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
}

/// The listening socket; dropping it stops accepting and removes the file.
pub struct ControlSocket {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl ControlSocket {
    /// Binds `path` (replacing a stale file: the caller holds the node lock,
    /// so no other agent uses it) with mode 0660, and forwards every request
    /// to `requests`.
    pub fn bind(path: PathBuf, requests: mpsc::UnboundedSender<Pending>) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing the stale {}", path.display()));
            }
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("restricting {} to mode 0660", path.display()))?;
        let accept = tokio::spawn(accept_loop(listener, requests));
        Ok(ControlSocket { path, accept })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, requests: mpsc::UnboundedSender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, requests.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the requests of one client, one line each, until it hangs up.
async fn serve_client(stream: UnixStream, requests: mpsc::UnboundedSender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_REQUEST as u64 + 1);
        match limited.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("control socket: reading a request: {e}");
                return;
            }
        }
        let too_long = line.len() > MAX_REQUEST;
        let answer = if too_long {
            Answer::error(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            match serde_json::from_str::<Request>(line.trim_end()) {
                Err(e) => Answer::error(format!("unreadable request: {e}")),
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    if requests.send(Pending { request, reply }).is_err() {
                        return;
                    }
                    answer
                        .await
                        .unwrap_or_else(|_| Answer::error("the agent is stopping"))
                }
            }
        };
        let mut text = serde_json::to_string(&answer).expect("answers serialize");
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn horizon() -> Config {
        let text = include_str!("../../../examples/horizon.toml");
        crate::config::parse(text, "horizon.toml").unwrap()
    }

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(
            r#"{"request":"set-state","service":"web","backend":"be2","state":"drain"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::SetState {
                service: "web".into(),
                backend: "be2".into(),
                state: "drain".into()
            }
        );
        let s: Request = serde_json::from_str(r#"{"request":"status"}"#).unwrap();
        assert_eq!(s, Request::Status);
        for bad in [
            r#"{"request":"shutdown"}"#,
            r#"{"request":"set-state","service":"web"}"#,
            r#"{"request":"set-state","service":"web","backend":"be2","state":"drain","x":1}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_names_are_errors_listing_what_exists() {
        let c = horizon();
        let svc = &c.services[0];
        let names: Vec<&str> = svc.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            find_backend(&c, &svc.name, names[0]),
            Ok(BackendKey::new(&svc.name, names[0]))
        );
        assert_eq!(
            find_backend(&c, &svc.name, "cs9"),
            Err(format!(
                "no backend cs9 in service {}; backends: {}",
                svc.name,
                names.join(", ")
            ))
        );
        let err = find_backend(&c, "nosuch", names[0]).unwrap_err();
        assert!(err.starts_with("no service nosuch; services: "), "{err}");
        assert!(err.contains(&svc.name), "{err}");
    }

    #[test]
    fn status_shows_health_admin_state_and_ids() {
        let c = horizon();
        let mut ids = Ids::new(&super::super::state::limits(&c));
        ids.sync(&c, 0).unwrap();
        let svc = &c.services[0];
        let (first, second) = (&svc.backends[0].name, &svc.backends[1].name);
        let health = HealthView::with_down([BackendKey::new(&svc.name, first)]);
        let admin = AdminView::with([(BackendKey::new(&svc.name, second), AdminState::Maint)]);
        let s = status("lb1", &c, &ids, &health, &admin, |k| k.backend != *second);
        assert_eq!(s.node, "lb1");
        assert_eq!(s.services.len(), c.services.len());
        let got = &s.services[0];
        assert_eq!(got.id, ids.services.get(&svc.name).unwrap());
        let b0 = &got.backends[0];
        assert_eq!((b0.health.as_str(), b0.admin), ("down", AdminState::Ready));
        assert_eq!(
            b0.id,
            ids.backends.get(&backend_key(&svc.name, first)).unwrap()
        );
        let b1 = &got.backends[1];
        assert_eq!(
            (b1.health.as_str(), b1.admin),
            ("unchecked", AdminState::Maint)
        );
        let json = serde_json::to_string(&Answer {
            status: Some(s.clone()),
            ..Answer::ok("status")
        })
        .unwrap();
        assert!(json.contains(r#""admin":"maint""#), "{json}");
        let back: Answer = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, Some(s));
    }
}
