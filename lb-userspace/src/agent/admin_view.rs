//! Admin states set by an operator (`lbd backend set-state`): which backends
//! are drained or in maintenance. Pure; read by `desired_state` next to the
//! health view.
//!
//! Only backends not `ready` are recorded, so a backend the view has never
//! heard of is ready (the default, like a backend that just appeared in the
//! config).

use std::collections::BTreeMap;

use crate::{config::Config, control::AdminState, health::BackendKey};

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
