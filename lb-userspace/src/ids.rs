//! Stable numeric ids for services and backends.
//!
//! The data path knows services and backends only by number: flows,
//! persistence entries and Maglev slots hold backend ids, stats are indexed by
//! them. So an id must stay with its (service, backend) name across reloads and
//! restarts, and must not be handed to someone else while an old flow or
//! persistence entry may still point at it: a freed id rests for a quarantine
//! period before reuse.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Ids of one kind (services or backends) in `first..limit`. Backend ids
/// start at 1 (0 means "none" in the data path); service ids at 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdTable {
    first: u32,
    limit: u32,
    by_name: BTreeMap<String, u32>,
    /// Freed ids and the monotonic time (seconds) from which they may be reused.
    resting: BTreeMap<u32, u64>,
}

impl IdTable {
    /// A table handing out ids in `1..limit` (backends).
    pub fn new(limit: u32) -> Self {
        Self::starting_at(1, limit)
    }

    /// A table handing out ids in `first..limit`.
    pub fn starting_at(first: u32, limit: u32) -> Self {
        Self {
            first,
            limit,
            ..Self::default()
        }
    }

    /// The id of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// All (name, id) pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_name.iter().map(|(n, id)| (n.as_str(), *id))
    }

    /// Makes the table hold exactly `names`: keeps existing ids, frees the ids
    /// of names no longer present (they rest for `quarantine`), and gives each
    /// new name the lowest id that is neither taken nor resting. `now_s` is a
    /// monotonic clock in seconds.
    pub fn sync<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        now_s: u64,
        quarantine: Duration,
    ) -> Result<(), IdsExhausted> {
        let wanted: std::collections::BTreeSet<&str> = names.into_iter().collect();
        let gone: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(id) = self.by_name.remove(&name) {
                self.resting.insert(id, now_s + quarantine.as_secs());
            }
        }
        self.resting.retain(|_, until| *until > now_s);
        let taken: std::collections::BTreeSet<u32> = self
            .by_name
            .values()
            .chain(self.resting.keys())
            .copied()
            .collect();
        let mut candidates = (self.first..self.limit).filter(|id| !taken.contains(id));
        for name in wanted {
            if self.by_name.contains_key(name) {
                continue;
            }
            let id = candidates
                .next()
                .ok_or(IdsExhausted { limit: self.limit })?;
            self.by_name.insert(name.to_string(), id);
        }
        Ok(())
    }
}

/// What of an [`IdTable`] must outlive the agent (kept in its state file):
/// who holds which id, and which freed ids still rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdSnapshot {
    pub by_name: BTreeMap<String, u32>,
    /// Freed id -> monotonic second from which it may be reused.
    pub resting: BTreeMap<u32, u64>,
}

impl IdTable {
    /// The part of the table worth saving.
    pub fn snapshot(&self) -> IdSnapshot {
        IdSnapshot {
            by_name: self.by_name.clone(),
            resting: self.resting.clone(),
        }
    }

    /// A table in `first..limit` holding `saved`. Ids outside the range (the
    /// limits changed) are dropped, as are names sharing an id (a hand-edited
    /// file): those names get fresh ids at the next `sync`. A rest is capped
    /// at `now_s + quarantine`, since the monotonic clock restarts at boot
    /// and a saved deadline may lie far in the new clock's future.
    pub fn restore(
        first: u32,
        limit: u32,
        saved: IdSnapshot,
        now_s: u64,
        quarantine: Duration,
    ) -> Self {
        let in_range = |id: &u32| (first..limit).contains(id);
        let mut by_name = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, id) in saved.by_name {
            if in_range(&id) && seen.insert(id) {
                by_name.insert(name, id);
            }
        }
        let latest = now_s + quarantine.as_secs();
        let resting = saved
            .resting
            .into_iter()
            .filter(|(id, _)| in_range(id) && !seen.contains(id))
            .map(|(id, until)| (id, until.min(latest)))
            .collect();
        IdTable {
            first,
            limit,
            by_name,
            resting,
        }
    }
}

/// More names than ids (including resting ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsExhausted {
    pub limit: u32,
}

impl std::fmt::Display for IdsExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no free id below {} (ids of removed entries rest before reuse); raise the limit in [limits]",
            self.limit
        )
    }
}

impl std::error::Error for IdsExhausted {}

/// The name a backend is known by in its id table: unique across services.
pub fn backend_key(service: &str, backend: &str) -> String {
    format!("{service}/{backend}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(60);

    #[test]
    fn ids_are_stable_and_start_at_one() {
        let mut t = IdTable::new(10);
        t.sync(["b", "a", "c"], 0, Q).unwrap();
        assert_eq!(
            (t.get("a"), t.get("b"), t.get("c")),
            (Some(1), Some(2), Some(3))
        );
        t.sync(["c", "a", "b", "d"], 1, Q).unwrap();
        assert_eq!(
            (t.get("a"), t.get("b"), t.get("c"), t.get("d")),
            (Some(1), Some(2), Some(3), Some(4))
        );
    }

    #[test]
    fn freed_ids_rest_before_reuse() {
        let mut t = IdTable::new(10);
        t.sync(["a", "b"], 0, Q).unwrap();
        t.sync(["a"], 10, Q).unwrap();
        assert_eq!(t.get("b"), None);
        t.sync(["a", "x"], 20, Q).unwrap();
        assert_eq!(t.get("x"), Some(3), "id 2 is resting until t=70");
        t.sync(["a", "x", "y"], 71, Q).unwrap();
        assert_eq!(
            t.get("y"),
            Some(2),
            "id 2 is free again after its quarantine"
        );
    }

    #[test]
    fn exhaustion_is_an_error_not_a_reuse() {
        let mut t = IdTable::new(3);
        t.sync(["a", "b"], 0, Q).unwrap();
        t.sync(["a"], 1, Q).unwrap();
        assert_eq!(t.sync(["a", "c"], 2, Q), Err(IdsExhausted { limit: 3 }));
        assert!(t.sync(["a", "c"], 100, Q).is_ok());
        assert_eq!(t.get("c"), Some(2));
    }

    #[test]
    fn service_tables_start_at_zero() {
        let mut t = IdTable::starting_at(0, 2);
        t.sync(["a", "b"], 0, Q).unwrap();
        assert_eq!((t.get("a"), t.get("b")), (Some(0), Some(1)));
    }

    #[test]
    fn a_restored_table_keeps_ids_and_rests_whatever_the_config_became() {
        let mut t = IdTable::new(10);
        t.sync(["a", "b", "c"], 0, Q).unwrap();
        t.sync(["a", "c"], 10, Q).unwrap();
        let saved = t.snapshot();
        let json = serde_json::to_string(&saved).unwrap();
        let back: IdSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        // Restarted with a config that lost c and gained d and e.
        let mut r = IdTable::restore(1, 10, back, 20, Q);
        assert_eq!(r, t, "restored as saved");
        r.sync(["a", "d", "e"], 20, Q).unwrap();
        assert_eq!(r.get("a"), Some(1));
        assert_eq!(r.get("d"), Some(4), "2 (b) and 3 (c) rest");
        assert_eq!(r.get("e"), Some(5));
    }

    #[test]
    fn restore_drops_what_the_table_cannot_hold() {
        let saved = IdSnapshot {
            by_name: [("a", 1), ("b", 9), ("twin", 1)]
                .map(|(n, id)| (n.to_string(), id))
                .into(),
            resting: [(2, 1_000_000), (12, 5)].into(),
        };
        let t = IdTable::restore(1, 5, saved, 100, Q);
        assert_eq!(t.get("a"), Some(1));
        assert_eq!(t.get("b"), None, "9 is beyond the new limit");
        assert_eq!(t.get("twin"), None, "an id is held by one name only");
        assert_eq!(
            t.snapshot().resting,
            [(2, 160)].into(),
            "rest capped at now + quarantine; 12 out of range"
        );
    }

    #[test]
    fn id_zero_is_never_assigned() {
        let mut t = IdTable::new(2);
        t.sync(["only"], 0, Q).unwrap();
        assert_eq!(t.get("only"), Some(1));
        assert!(t.sync(["only", "second"], 0, Q).is_err());
    }
}
