//! The agent's view of backend health: which checked backends are DOWN right
//! now, and which backends cannot be reached at all (no route, next hop not
//! answering ARP). Pure; fed by the scheduler's events and the neighbour
//! sync, and read by `desired_state`.
//!
//! Only DOWN backends are recorded: a backend without a check, or one not
//! yet checked, counts as UP (HAProxy's `server` without `check`, and its
//! "start UP" rule), so the view never needs to know every backend.
//!
//! The two sets are kept apart because they heal differently: a backend
//! whose path returns is UP again at once when unchecked, but a checked one
//! stays DOWN until its checks pass `rise` times.

use std::collections::{BTreeMap, BTreeSet};

use crate::health::BackendKey;

/// Which backends the health checks hold DOWN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    down: BTreeSet<BackendKey>,
    /// Backends without a path, with the reason.
    unreachable: BTreeMap<BackendKey, String>,
}

/// What [`HealthView::set_unreachable`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachChanges {
    /// Backends that lost their path, with the reason.
    pub lost: Vec<(BackendKey, String)>,
    /// Backends whose path is back.
    pub back: Vec<BackendKey>,
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
            unreachable: BTreeMap::new(),
        }
    }

    pub fn is_up(&self, service: &str, backend: &str) -> bool {
        let key = BackendKey::new(service, backend);
        !self.down.contains(&key) && !self.unreachable.contains_key(&key)
    }

    /// Whether the health checks hold it DOWN (its path aside).
    pub fn is_checked_down(&self, key: &BackendKey) -> bool {
        self.down.contains(key)
    }

    /// Why a backend cannot be reached; `None` when its path is fine.
    pub fn unreachable(&self, key: &BackendKey) -> Option<&str> {
        self.unreachable.get(key).map(String::as_str)
    }

    /// Replaces the set of backends without a path; says which lost it and
    /// which got it back. A changed reason alone is no change.
    pub fn set_unreachable(&mut self, now: BTreeMap<BackendKey, String>) -> ReachChanges {
        let lost = now
            .iter()
            .filter(|(key, _)| !self.unreachable.contains_key(*key))
            .map(|(key, reason)| (key.clone(), reason.clone()))
            .collect();
        let back = self
            .unreachable
            .keys()
            .filter(|key| !now.contains_key(*key))
            .cloned()
            .collect();
        self.unreachable = now;
        ReachChanges { lost, back }
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
        HealthView {
            down: self
                .down
                .iter()
                .filter(|key| checked.contains(key))
                .cloned()
                .collect(),
            // The next neighbour sync recomputes it for the new config.
            unreachable: self.unreachable.clone(),
        }
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
    fn an_unreachable_backend_is_down_until_its_path_returns() {
        let key = BackendKey::new("web", "be1");
        let mut view = HealthView::all_up();
        let reason = "no route to 198.51.100.11 (Network is unreachable)".to_string();
        let changes = view.set_unreachable(BTreeMap::from([(key.clone(), reason.clone())]));
        assert_eq!(changes.lost, vec![(key.clone(), reason.clone())]);
        assert!(changes.back.is_empty());
        assert!(!view.is_up("web", "be1"));
        assert!(!view.is_checked_down(&key), "the checks said nothing");
        assert_eq!(view.unreachable(&key), Some(reason.as_str()));

        let again = view.set_unreachable(BTreeMap::from([(key.clone(), "other".into())]));
        assert_eq!(
            again,
            ReachChanges::default(),
            "still unreachable: no change"
        );

        // A checked backend held DOWN stays DOWN when the path returns.
        view.record(key.clone(), false);
        let changes = view.set_unreachable(BTreeMap::new());
        assert_eq!(changes.back, vec![key.clone()]);
        assert!(!view.is_up("web", "be1"), "DOWN until the checks pass");
        view.record(key, true);
        assert!(view.is_up("web", "be1"));
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
