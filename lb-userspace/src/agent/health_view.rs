//! The agent's view of backend health: which checked backends are DOWN right
//! now. Pure; fed by the scheduler's events and read by `desired_state`.
//!
//! Only DOWN backends are recorded: a backend without a check, or one not
//! yet checked, counts as UP (HAProxy's `server` without `check`, and its
//! "start UP" rule), so the view never needs to know every backend.

use std::collections::BTreeSet;

use crate::health::BackendKey;

/// Which backends the health checks hold DOWN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    down: BTreeSet<BackendKey>,
}

impl HealthView {
    /// Every backend UP: the state at agent start.
    pub fn all_up() -> Self {
        HealthView::default()
    }

    /// A view with `down` held DOWN and everything else UP.
    pub fn with_down(down: impl IntoIterator<Item = BackendKey>) -> Self {
        HealthView {
            down: down.into_iter().collect(),
        }
    }

    pub fn is_up(&self, service: &str, backend: &str) -> bool {
        !self.down.contains(&BackendKey::new(service, backend))
    }

    /// Records a state change; returns whether the view changed (an event
    /// repeating what the view already holds changes nothing).
    pub fn record(&mut self, key: BackendKey, up: bool) -> bool {
        if up {
            self.down.remove(&key)
        } else {
            self.down.insert(key)
        }
    }

    /// The view after a reload: a backend that stays checked keeps its
    /// state (the scheduler keeps or restarts its check in that state); one
    /// removed, or no longer checked, leaves the view (unchecked is UP).
    pub fn carried_over<'a>(&self, checked: impl IntoIterator<Item = &'a BackendKey>) -> Self {
        let checked: BTreeSet<&BackendKey> = checked.into_iter().collect();
        HealthView::with_down(
            self.down
                .iter()
                .filter(|key| checked.contains(key))
                .cloned(),
        )
    }

    /// The backends held DOWN, sorted.
    pub fn down(&self) -> impl Iterator<Item = &BackendKey> {
        self.down.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backends_are_up_and_changes_are_reported_once() {
        let mut view = HealthView::all_up();
        assert!(view.is_up("web", "be1"));
        assert!(view.record(BackendKey::new("web", "be1"), false));
        assert!(!view.record(BackendKey::new("web", "be1"), false));
        assert!(!view.is_up("web", "be1"));
        assert!(view.is_up("web", "be2"), "only be1 is down");
        assert!(view.is_up("other", "be1"), "keys are per service");
        assert!(view.record(BackendKey::new("web", "be1"), true));
        assert!(!view.record(BackendKey::new("web", "be1"), true));
        assert!(view.is_up("web", "be1"));
        assert_eq!(view, HealthView::all_up());
    }

    #[test]
    fn a_reload_keeps_the_state_of_backends_still_checked() {
        let view = HealthView::with_down(["x", "y", "z"].map(|b| BackendKey::new("s", b)));
        let still = [BackendKey::new("s", "x"), BackendKey::new("s", "w")];
        let after = view.carried_over(&still);
        assert!(!after.is_up("s", "x"), "still checked: stays DOWN");
        assert!(after.is_up("s", "y"), "removed or unchecked: UP");
        assert!(after.is_up("s", "w"), "a new check starts UP");
        assert_eq!(after.down().count(), 1);
    }

    #[test]
    fn with_down_holds_exactly_those() {
        let view = HealthView::with_down([BackendKey::new("a", "x"), BackendKey::new("b", "y")]);
        assert!(!view.is_up("a", "x"));
        assert!(!view.is_up("b", "y"));
        assert!(view.is_up("a", "y"));
        assert_eq!(view.down().count(), 2);
    }
}
