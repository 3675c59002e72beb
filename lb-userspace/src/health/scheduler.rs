//! Runs the checks of every backend, one tokio task each, so a backend that
//! hangs costs its own task one timeout and never delays another backend.
//! Each task feeds its results to a [`HealthCounter`]; a state change is
//! logged once with its reason and sent to the agent as a [`HealthEvent`].
//!
//! Backends start UP (HAProxy's default): no event is sent for the initial
//! state, only for changes.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::check::{CheckResult, Checker};
use super::counter::{HealthCounter, Intervals, Transition};
use crate::config::{Config, HealthCheck};

/// `service/backend`, as in logs and `lbd backend set-state`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub service: String,
    pub backend: String,
}

impl BackendKey {
    pub fn new(service: &str, backend: &str) -> Self {
        BackendKey {
            service: service.to_string(),
            backend: backend.to_string(),
        }
    }
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.backend)
    }
}

/// A backend changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub service: String,
    pub backend: String,
    pub up: bool,
    /// The last check's reason, e.g. "tls-hello timeout after 2s".
    pub reason: String,
    /// The checks in a row that decided it: (failed, fall) going DOWN,
    /// (succeeded, rise) going UP.
    pub checks: (u32, u32),
    pub at: SystemTime,
}

impl HealthEvent {
    pub fn key(&self) -> BackendKey {
        BackendKey::new(&self.service, &self.backend)
    }
}

impl fmt::Display for HealthEvent {
    /// "horizon/cs1 DOWN: tls-hello timeout after 2s, 3/3 failed".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, verb) = if self.up {
            ("UP", "succeeded")
        } else {
            ("DOWN", "failed")
        };
        write!(
            f,
            "{}/{} {state}: {}, {}/{} {verb}",
            self.service, self.backend, self.reason, self.checks.0, self.checks.1
        )
    }
}

/// The record of one checked backend's checks: what the status shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub address: SocketAddrV4,
    pub check: HealthCheck,
    pub up: bool,
    /// The health counter, 0..=rise+fall-1.
    pub health: u32,
    /// The last result (with its duration); `None` before the first check ends.
    pub last_result: Option<CheckResult>,
    pub last_check_at: Option<SystemTime>,
    /// When the state last changed; `None` while it is the initial UP.
    pub last_change: Option<SystemTime>,
    /// Checks done and failed since this task started.
    pub checks: u64,
    pub failures: u64,
}

/// The checks the config asks for: every backend with a check, in file order.
/// The agent filters out backends in maint before handing this to
/// [`Scheduler::sync`].
pub fn desired_checks(config: &Config) -> Vec<(BackendKey, SocketAddrV4, HealthCheck)> {
    config
        .services
        .iter()
        .flat_map(|service| {
            service.backends.iter().filter_map(|backend| {
                let check = backend.check.clone()?;
                Some((
                    BackendKey::new(&service.name, &backend.name),
                    backend.address,
                    check,
                ))
            })
        })
        .collect()
}

struct Task {
    handle: JoinHandle<()>,
    status: Arc<Mutex<CheckRecord>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The running checks. Dropping it stops them all.
pub struct Scheduler {
    checker: Checker,
    events: UnboundedSender<HealthEvent>,
    tasks: HashMap<BackendKey, Task>,
}

impl Scheduler {
    /// Must be created inside a tokio runtime; state changes go to `events`.
    pub fn new(checker: Checker, events: UnboundedSender<HealthEvent>) -> Self {
        Scheduler {
            checker,
            events,
            tasks: HashMap::new(),
        }
    }

    /// Starts checking `key` at `address`. A task already running for `key`
    /// is replaced; the new one starts in the old one's state (a DOWN
    /// backend stays DOWN until `rise` successes), a new backend starts UP.
    pub fn start(&mut self, key: BackendKey, address: SocketAddrV4, check: HealthCheck) {
        let up = self.status(&key).is_none_or(|status| status.up);
        self.start_in(key, address, check, up);
    }

    /// Starts checking `key` in a given state: DOWN needs `rise` successes
    /// to come UP (a backend restored DOWN after a restart, or one whose
    /// path is missing). No event is sent for the starting state.
    pub fn start_in(
        &mut self,
        key: BackendKey,
        address: SocketAddrV4,
        check: HealthCheck,
        up: bool,
    ) {
        let counter = HealthCounter::with_state(check.rise, check.fall, up);
        let status = Arc::new(Mutex::new(CheckRecord {
            address,
            up,
            health: counter.health(),
            check: check.clone(),
            last_result: None,
            last_check_at: None,
            last_change: None,
            checks: 0,
            failures: 0,
        }));
        let handle = tokio::spawn(run(
            key.clone(),
            address,
            check,
            counter,
            self.checker.clone(),
            status.clone(),
            self.events.clone(),
        ));
        // Inserting drops (and so aborts) the task it replaces.
        self.tasks.insert(key, Task { handle, status });
    }

    /// Stops checking `key` (backend removed, or put in maint). Returns
    /// whether it was checked.
    pub fn stop(&mut self, key: &BackendKey) -> bool {
        self.tasks.remove(key).is_some()
    }

    /// Makes the running checks match `desired` (see [`desired_checks`]):
    /// stops the ones not there, starts new ones, and replaces those whose
    /// address or check changed. Unchanged checks keep running undisturbed.
    pub fn sync(&mut self, desired: Vec<(BackendKey, SocketAddrV4, HealthCheck)>) {
        self.sync_with(desired, |_| false);
    }

    /// [`Scheduler::sync`] where a check started for a backend that
    /// `starts_down` names starts DOWN rather than UP.
    pub fn sync_with(
        &mut self,
        desired: Vec<(BackendKey, SocketAddrV4, HealthCheck)>,
        starts_down: impl Fn(&BackendKey) -> bool,
    ) {
        let wanted: HashMap<&BackendKey, ()> =
            desired.iter().map(|(key, _, _)| (key, ())).collect();
        self.tasks.retain(|key, _| wanted.contains_key(key));
        for (key, address, check) in desired {
            let unchanged = self
                .status(&key)
                .is_some_and(|status| status.address == address && status.check == check);
            if !unchanged {
                let up = match self.status(&key) {
                    Some(status) => status.up,
                    None => !starts_down(&key),
                };
                self.start_in(key, address, check, up);
            }
        }
    }

    /// Restarts a checked backend's counter fully DOWN (its path is gone):
    /// it comes back only after `rise` successful checks. Returns whether
    /// it was checked.
    pub fn hold_down(&mut self, key: &BackendKey) -> bool {
        let Some(status) = self.status(key) else {
            return false;
        };
        if status.up || status.health > 0 {
            self.start_in(key.clone(), status.address, status.check, false);
        }
        true
    }

    /// The backends being checked.
    pub fn keys(&self) -> Vec<BackendKey> {
        let mut keys: Vec<BackendKey> = self.tasks.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// A snapshot of one backend's status.
    pub fn status(&self, key: &BackendKey) -> Option<CheckRecord> {
        let task = self.tasks.get(key)?;
        Some(
            task.status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Whether a checked backend is UP; `None` when it is not checked.
    pub fn is_up(&self, key: &BackendKey) -> Option<bool> {
        self.status(key).map(|status| status.up)
    }
}

/// One backend's loop: check, count, report a change, wait the interval the
/// counter asks for.
async fn run(
    key: BackendKey,
    address: SocketAddrV4,
    check: HealthCheck,
    mut counter: HealthCounter,
    checker: Checker,
    status: Arc<Mutex<CheckRecord>>,
    events: UnboundedSender<HealthEvent>,
) {
    let intervals = Intervals {
        inter: check.inter,
        fastinter: check.fastinter,
        downinter: check.downinter,
    };
    loop {
        let result = checker.run(&check, address).await;
        let now = SystemTime::now();
        let transition = counter.record(result.is_ok());
        tracing::debug!(
            "{key} check: {} in {:?}, health {}",
            result.reason(),
            result.duration,
            counter.health()
        );
        let event = transition.map(|transition| {
            let up = transition == Transition::Up;
            HealthEvent {
                service: key.service.clone(),
                backend: key.backend.clone(),
                up,
                reason: result.reason(),
                checks: if up {
                    (counter.consecutive_successes(), counter.rise())
                } else {
                    (counter.consecutive_failures(), counter.fall())
                },
                at: now,
            }
        });
        {
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            status.checks += 1;
            status.failures += u64::from(!result.is_ok());
            status.up = counter.is_up();
            status.health = counter.health();
            status.last_result = Some(result);
            status.last_check_at = Some(now);
            if event.is_some() {
                status.last_change = Some(now);
            }
        }
        if let Some(event) = event {
            if event.up {
                tracing::info!("{event}");
            } else {
                tracing::warn!("{event}");
            }
            // The receiver is gone only when the agent shuts down.
            if events.send(event).is_err() {
                return;
            }
        }
        tokio::time::sleep(counter.next_interval(&intervals)).await;
    }
}
