//! The health counter of one backend, with HAProxy's semantics, and the
//! choice of the next check interval. Pure: no clock, no I/O.
//!
//! The counter runs from 0 to `rise + fall - 1`; the backend is UP while it
//! is at least `rise`. A failure takes one step down and, when that leaves
//! the UP zone, the backend goes DOWN with the counter at 0, so that it needs
//! `rise` successes to come back. A success takes one step up and, when that
//! enters the UP zone, the counter jumps to the top, so that it takes `fall`
//! failures to go down again. A fresh backend starts UP at the bottom of the
//! UP zone (`rise`): its first failed check takes it DOWN at once, as in
//! HAProxy, instead of leaving a dead server in service for `fall` checks.

use std::time::Duration;

/// A change of the UP/DOWN state, returned by [`HealthCounter::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// Check intervals. `fastinter` and `downinter` fall back to `inter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Between checks of a backend that is fully UP.
    pub inter: Duration,
    /// While the backend is between states (or not checked yet), so that a
    /// change is confirmed quickly.
    pub fastinter: Option<Duration>,
    /// Between checks of a backend that is fully DOWN.
    pub downinter: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCounter {
    rise: u32,
    fall: u32,
    health: u32,
    /// Until the first result, the interval is `fastinter`.
    checked: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
}

impl HealthCounter {
    /// A backend never checked: UP, one failure away from DOWN.
    /// `rise` and `fall` are at least 1 (the config guarantees it; 0 is read as 1).
    pub fn new(rise: u32, fall: u32) -> Self {
        let rise = rise.max(1);
        HealthCounter {
            rise,
            fall: fall.max(1),
            health: rise,
            checked: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
        }
    }

    /// A backend whose state is already known, e.g. when its check is
    /// replaced on a reload: UP starts like [`HealthCounter::new`], DOWN
    /// starts fully DOWN, needing `rise` successes.
    pub fn with_state(rise: u32, fall: u32, up: bool) -> Self {
        let mut counter = HealthCounter::new(rise, fall);
        if !up {
            counter.health = 0;
        }
        counter
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    pub fn is_up(&self) -> bool {
        self.health >= self.rise
    }

    /// The raw counter, 0..=rise+fall-1 (for the stats page).
    pub fn health(&self) -> u32 {
        self.health
    }

    pub fn rise(&self) -> u32 {
        self.rise
    }

    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// Failed checks in a row (0 after a success), for "3/3 failed".
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Successful checks in a row (0 after a failure), for "2/2 succeeded".
    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    /// Applies one check result; returns the state change it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        self.checked = true;
        let was_up = self.is_up();
        if ok {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
            self.health = (self.health + 1).min(self.top());
            if !was_up && self.is_up() {
                self.health = self.top();
                return Some(Transition::Up);
            }
        } else {
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
            self.health = self.health.saturating_sub(1);
            if was_up && !self.is_up() {
                self.health = 0;
                return Some(Transition::Down);
            }
        }
        None
    }

    /// How long to wait before the next check.
    pub fn next_interval(&self, intervals: &Intervals) -> Duration {
        let fast = intervals.fastinter.unwrap_or(intervals.inter);
        if !self.checked {
            fast
        } else if self.health == self.top() {
            intervals.inter
        } else if self.health == 0 {
            intervals.downinter.unwrap_or(intervals.inter)
        } else {
            fast
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: rise, fall, the results as `S`/`F`, and after each result
    /// the expected state (`U`/`D`) and transition (`^` up, `v` down, `.` none).
    struct Row {
        rise: u32,
        fall: u32,
        results: &'static str,
        states: &'static str,
        transitions: &'static str,
    }

    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // Fresh backend: the first failure takes it down at once.
        Row { rise: 3, fall: 3, results: "F", states: "D", transitions: "v" },
        // ... and it needs exactly `rise` successes to come back.
        Row { rise: 3, fall: 3, results: "FSSS", states: "DDDU", transitions: "v..^" },
        // Once fully UP, exactly `fall` failures take it down.
        Row { rise: 3, fall: 3, results: "FSSSFFF", states: "DDDUUUD", transitions: "v..^..v" },
        // A success while DOWN is undone by a failure: the count restarts.
        Row { rise: 3, fall: 3, results: "FSFSSS", states: "DDDDDU", transitions: "v....^" },
        // Flapping while UP: F,S,F never reaches the bottom of the UP zone...
        Row { rise: 3, fall: 3, results: "FSSSFSFSF", states: "DDDUUUUUU", transitions: "v..^....." },
        // ...but F,F,S,F does (top 5 -> 4 -> 3 -> 4 -> 3 -> 2).
        Row { rise: 3, fall: 3, results: "FSSSFFSFF", states: "DDDUUUUUD", transitions: "v..^....v" },
        // Fresh and healthy: stays UP, no transition to report.
        Row { rise: 3, fall: 3, results: "SSSS", states: "UUUU", transitions: "...." },
        // Healthy at start, then down after `fall` failures from the top.
        Row { rise: 2, fall: 3, results: "SSFFF", states: "UUUUD", transitions: "....v" },
        // Healthy at start but not yet at the top: one failure is not enough
        // once a success moved it up, two are.
        Row { rise: 2, fall: 3, results: "SFF", states: "UUD", transitions: "..v" },
        // rise 1 fall 1: every result decides.
        Row { rise: 1, fall: 1, results: "SFSFFSS", states: "UDUDDUU", transitions: ".v^v.^." },
        // rise 2 fall 5.
        Row { rise: 2, fall: 5, results: "FSSFFFFF", states: "DDUUUUUD", transitions: "v.^....v" },
        // A success near the bottom of the UP zone buys exactly one more failure.
        Row { rise: 2, fall: 5, results: "FSSFFFFSFF", states: "DDUUUUUUUD", transitions: "v.^......v" },
        // Many failures while DOWN keep it at 0: still `rise` to come back.
        Row { rise: 2, fall: 5, results: "FFFFFFSS", states: "DDDDDDDU", transitions: "v......^" },
    ];

    #[test]
    fn counter_follows_the_table() {
        for row in TABLE {
            let mut counter = HealthCounter::new(row.rise, row.fall);
            assert!(counter.is_up(), "a fresh backend counts as UP");
            let mut states = String::new();
            let mut transitions = String::new();
            for result in row.results.chars() {
                let change = counter.record(result == 'S');
                states.push(if counter.is_up() { 'U' } else { 'D' });
                transitions.push(match change {
                    Some(Transition::Up) => '^',
                    Some(Transition::Down) => 'v',
                    None => '.',
                });
                assert!(
                    counter.health() < row.rise + row.fall,
                    "counter above its range"
                );
            }
            let case = format!("rise {} fall {} {}", row.rise, row.fall, row.results);
            assert_eq!(states, row.states, "states of {case}");
            assert_eq!(transitions, row.transitions, "transitions of {case}");
        }
    }

    #[test]
    fn known_down_state_needs_rise_successes() {
        let mut counter = HealthCounter::with_state(2, 3, false);
        assert!(!counter.is_up());
        assert_eq!(counter.record(true), None);
        assert_eq!(counter.record(true), Some(Transition::Up));
        let counter = HealthCounter::with_state(2, 3, true);
        assert_eq!(counter, HealthCounter::new(2, 3));
    }

    #[test]
    fn consecutive_counts_feed_the_log_line() {
        let mut counter = HealthCounter::new(3, 3);
        for _ in 0..3 {
            counter.record(true);
        }
        assert_eq!(counter.consecutive_successes(), 3);
        for _ in 0..3 {
            counter.record(false);
        }
        assert_eq!(counter.consecutive_failures(), 3);
        assert_eq!(counter.consecutive_successes(), 0);
        counter.record(true);
        assert_eq!(counter.consecutive_failures(), 0);
        assert_eq!(counter.consecutive_successes(), 1);
    }

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn interval_depends_on_the_zone() {
        let all = Intervals {
            inter: ms(30_000),
            fastinter: Some(ms(2_000)),
            downinter: Some(ms(5_000)),
        };
        let mut counter = HealthCounter::new(3, 3);
        assert_eq!(counter.next_interval(&all), ms(2_000), "not checked yet");
        counter.record(true); // 3 -> 4: still transitioning
        assert_eq!(counter.next_interval(&all), ms(2_000));
        counter.record(true); // 4 -> 5: fully UP
        assert_eq!(counter.next_interval(&all), ms(30_000));
        counter.record(false); // 5 -> 4: going down
        assert_eq!(counter.next_interval(&all), ms(2_000));
        counter.record(false);
        counter.record(false); // DOWN, counter 0
        assert!(!counter.is_up());
        assert_eq!(counter.next_interval(&all), ms(5_000));
        counter.record(true); // 0 -> 1: coming up
        assert_eq!(counter.next_interval(&all), ms(2_000));
        counter.record(true);
        counter.record(true); // UP at the top
        assert_eq!(counter.next_interval(&all), ms(30_000));
    }

    #[test]
    fn unset_intervals_fall_back_to_inter() {
        let inter_only = Intervals {
            inter: ms(2_000),
            fastinter: None,
            downinter: None,
        };
        let mut counter = HealthCounter::new(2, 3);
        assert_eq!(counter.next_interval(&inter_only), ms(2_000));
        counter.record(false); // DOWN at 0
        assert_eq!(counter.next_interval(&inter_only), ms(2_000));
        counter.record(true); // transitioning
        assert_eq!(counter.next_interval(&inter_only), ms(2_000));
    }

    #[test]
    fn rise_one_fall_one_is_always_at_an_end() {
        let all = Intervals {
            inter: ms(10),
            fastinter: Some(ms(20)),
            downinter: Some(ms(30)),
        };
        let mut counter = HealthCounter::new(1, 1);
        counter.record(true);
        assert_eq!(counter.next_interval(&all), ms(10));
        counter.record(false);
        assert_eq!(counter.next_interval(&all), ms(30));
    }
}
