//! Admin states set by an operator (`lbd backend set-state`): which backends
//! are drained or in maintenance. Pure; read by `desired_state` next to the
//! health view.
//!
//! Only backends not `ready` are recorded, so a backend the view has never
//! heard of is ready (the default, like a backend that just appeared in the
//! config).

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{config::Config, health::BackendKey};

/// What an operator allows a backend to receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Normal service.
    #[default]
    Ready,
    /// No new clients; clients inside their persistence timeout and
    /// established flows keep going, so a backend can empty out gently.
    Drain,
    /// No new or persistent traffic and no health checks (the backend may be
    /// down for work); established flows are left to end.
    Maint,
}

impl AdminState {
    /// Whether new clients may be hashed to it (it takes Maglev slots).
    pub fn takes_new_clients(self) -> bool {
        self == AdminState::Ready
    }

    /// Whether returning clients inside their persistence timeout may stay.
    pub fn keeps_persistent_clients(self) -> bool {
        self != AdminState::Maint
    }

    /// Whether its health checks run.
    pub fn is_checked(self) -> bool {
        self != AdminState::Maint
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        })
    }
}

impl FromStr for AdminState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            other => Err(format!(
                "unknown admin state `{other}`: use ready, drain or maint"
            )),
        }
    }
}

/// The admin state of every backend (ready unless recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminView {
    states: BTreeMap<BackendKey, AdminState>,
}

impl AdminView {
    /// Every backend ready.
    pub fn all_ready() -> Self {
        AdminView::default()
    }

    /// A view holding `states` (ready entries are not stored).
    pub fn with(states: impl IntoIterator<Item = (BackendKey, AdminState)>) -> Self {
        let mut view = AdminView::default();
        for (key, state) in states {
            view.set(key, state);
        }
        view
    }

    pub fn state(&self, service: &str, backend: &str) -> AdminState {
        self.states
            .get(&BackendKey::new(service, backend))
            .copied()
            .unwrap_or_default()
    }

    /// Sets `key`'s state; returns whether the view changed.
    pub fn set(&mut self, key: BackendKey, state: AdminState) -> bool {
        if state == AdminState::Ready {
            self.states.remove(&key).is_some()
        } else {
            self.states.insert(key, state) != Some(state)
        }
    }

    /// The view for `config`: states of backends no longer there are dropped
    /// (a backend added again later starts ready).
    pub fn retained_for(&self, config: &Config) -> Self {
        AdminView {
            states: self
                .states
                .iter()
                .filter(|(key, _)| {
                    config
                        .services
                        .iter()
                        .filter(|s| s.name == key.service)
                        .any(|s| s.backends.iter().any(|b| b.name == key.backend))
                })
                .map(|(key, state)| (key.clone(), *state))
                .collect(),
        }
    }

    /// The backends not ready, sorted.
    pub fn not_ready(&self) -> impl Iterator<Item = (&BackendKey, AdminState)> {
        self.states.iter().map(|(key, state)| (key, *state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_print_as_the_cli_spells_them() {
        for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            assert_eq!(state.to_string().parse::<AdminState>(), Ok(state));
        }
        let err = "down".parse::<AdminState>().unwrap_err();
        assert!(err.contains("`down`") && err.contains("ready, drain or maint"));
    }

    #[test]
    fn unknown_backends_are_ready_and_changes_are_reported_once() {
        let mut view = AdminView::all_ready();
        let key = BackendKey::new("web", "be2");
        assert_eq!(view.state("web", "be2"), AdminState::Ready);
        assert!(!view.set(key.clone(), AdminState::Ready));
        assert!(view.set(key.clone(), AdminState::Drain));
        assert!(!view.set(key.clone(), AdminState::Drain));
        assert!(view.set(key.clone(), AdminState::Maint));
        assert_eq!(view.state("web", "be2"), AdminState::Maint);
        assert_eq!(view.state("web", "be1"), AdminState::Ready);
        assert_eq!(view.state("other", "be2"), AdminState::Ready);
        assert!(view.set(key, AdminState::Ready));
        assert_eq!(view, AdminView::all_ready());
    }

    #[test]
    fn what_each_state_allows() {
        use AdminState::*;
        assert!(Ready.takes_new_clients() && Ready.keeps_persistent_clients());
        assert!(!Drain.takes_new_clients() && Drain.keeps_persistent_clients());
        assert!(!Maint.takes_new_clients() && !Maint.keeps_persistent_clients());
        assert!(Ready.is_checked() && Drain.is_checked() && !Maint.is_checked());
    }

    #[test]
    fn states_of_removed_backends_are_dropped() {
        let text = include_str!("../../../examples/horizon.toml");
        let config = crate::config::parse(text, "horizon.toml").unwrap();
        let service = &config.services[0];
        let kept = BackendKey::new(&service.name, &service.backends[0].name);
        let view = AdminView::with([
            (kept.clone(), AdminState::Drain),
            (BackendKey::new(&service.name, "gone"), AdminState::Maint),
            (BackendKey::new("nosuch", &kept.backend), AdminState::Maint),
        ]);
        let after = view.retained_for(&config);
        assert_eq!(
            after.not_ready().collect::<Vec<_>>(),
            vec![(&kept, AdminState::Drain)]
        );
    }
}
