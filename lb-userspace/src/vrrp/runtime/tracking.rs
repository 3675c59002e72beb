//! What an instance tracks and what it last saw of each condition, giving
//! the effective priority (`track::effective_priority`). Pure: the probes
//! (xdp-attached, scripts) and the agent (service-up) report here.
//!
//! A condition not observed yet counts for nothing either way, so a script
//! that has not finished its first run neither raises nor lowers the
//! priority.

use std::time::Duration;

use crate::config::{Track, TrackCondition};
use crate::vrrp::track::{Tracked, effective_priority};

/// A tracked condition, as reported to the runtime.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// The node's interface has our XDP program attached.
    XdpAttached,
    /// The service has at least one backend up (pushed by the agent).
    ServiceUp(String),
    /// The command exits 0 (run by the runtime).
    Script(String),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::XdpAttached => f.write_str("xdp-attached"),
            Condition::ServiceUp(service) => write!(f, "service-up {service}"),
            Condition::Script(command) => write!(f, "script `{command}`"),
        }
    }
}

#[derive(Clone, Debug)]
struct Item {
    condition: Condition,
    weight: i16,
    holds: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct Tracking {
    base: u8,
    items: Vec<Item>,
}

impl Tracking {
    pub fn new(base: u8, tracks: &[Track]) -> Self {
        let items = tracks
            .iter()
            .map(|t| Item {
                condition: match &t.condition {
                    TrackCondition::XdpAttached => Condition::XdpAttached,
                    TrackCondition::ServiceUp { service } => Condition::ServiceUp(service.clone()),
                    TrackCondition::Script { command, .. } => Condition::Script(command.clone()),
                },
                weight: t.weight,
                holds: None,
            })
            .collect();
        Tracking { base, items }
    }

    /// Records an observation; returns whether anything changed.
    pub fn set(&mut self, condition: &Condition, holds: bool) -> bool {
        let mut changed = false;
        for item in self.items.iter_mut().filter(|i| &i.condition == condition) {
            changed |= item.holds != Some(holds);
            item.holds = Some(holds);
        }
        changed
    }

    pub fn tracks(&self, condition: &Condition) -> bool {
        self.items.iter().any(|i| &i.condition == condition)
    }

    /// The priority to advertise now.
    pub fn priority(&self) -> u8 {
        let seen: Vec<Tracked> = self
            .items
            .iter()
            .filter_map(|i| {
                i.holds.map(|holds| Tracked {
                    weight: i.weight,
                    holds,
                })
            })
            .collect();
        effective_priority(self.base, &seen)
    }
}

/// The scripts of `tracks` with their intervals (each runs on its own).
pub fn scripts(tracks: &[Track]) -> Vec<(String, Duration)> {
    tracks
        .iter()
        .filter_map(|t| match &t.condition {
            TrackCondition::Script { command, interval } => Some((command.clone(), *interval)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(condition: TrackCondition, weight: i16) -> Track {
        Track { condition, weight }
    }

    #[test]
    fn unseen_conditions_are_neutral_then_count_by_sign() {
        let tracks = [
            track(TrackCondition::XdpAttached, 2),
            track(
                TrackCondition::ServiceUp {
                    service: "web".into(),
                },
                -20,
            ),
            track(
                TrackCondition::Script {
                    command: "true".into(),
                    interval: Duration::from_secs(1),
                },
                5,
            ),
        ];
        let mut t = Tracking::new(101, &tracks);
        assert_eq!(t.priority(), 101);
        assert!(t.set(&Condition::XdpAttached, true));
        assert_eq!(t.priority(), 103);
        assert!(!t.set(&Condition::XdpAttached, true), "no change");
        assert!(t.set(&Condition::ServiceUp("web".into()), false));
        assert_eq!(t.priority(), 83);
        assert!(!t.set(&Condition::ServiceUp("other".into()), false));
        assert!(t.set(&Condition::Script("true".into()), true));
        assert_eq!(t.priority(), 88);
        assert!(t.tracks(&Condition::XdpAttached));
        assert!(!t.tracks(&Condition::ServiceUp("other".into())));
        assert_eq!(
            scripts(&tracks),
            vec![("true".to_string(), Duration::from_secs(1))]
        );
    }
}
