//! The two timers of an instance (master-down, advert) as deadlines: the
//! state machine's `SetTimer`/`CancelTimer` actions land here, and the
//! instance task sleeps until the earliest one. Pure.

use std::time::Instant;

use crate::vrrp::state::{Action, Event, TimerKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    master_down: Option<Instant>,
    advert: Option<Instant>,
}

impl Timers {
    fn slot(&mut self, kind: TimerKind) -> &mut Option<Instant> {
        match kind {
            TimerKind::MasterDown => &mut self.master_down,
            TimerKind::Advert => &mut self.advert,
        }
    }

    /// Takes the timer actions out of `actions`; returns the others, in order.
    pub fn absorb(&mut self, actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|action| match *action {
                Action::SetTimer { timer, at } => {
                    *self.slot(timer) = Some(at);
                    false
                }
                Action::CancelTimer { timer } => {
                    *self.slot(timer) = None;
                    false
                }
                _ => true,
            })
            .collect()
    }

    /// The earliest armed timer.
    pub fn next(&self) -> Option<(TimerKind, Instant)> {
        let down = self.master_down.map(|at| (TimerKind::MasterDown, at));
        let advert = self.advert.map(|at| (TimerKind::Advert, at));
        match (down, advert) {
            (Some(d), Some(a)) => Some(if a.1 < d.1 { a } else { d }),
            (d, a) => d.or(a),
        }
    }

    /// Disarms `kind` and gives the event to feed the machine.
    pub fn fire(&mut self, kind: TimerKind) -> Event {
        *self.slot(kind) = None;
        match kind {
            TimerKind::MasterDown => Event::MasterDownTimerFired,
            TimerKind::Advert => Event::AdvertTimerFired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn absorbs_timer_actions_and_keeps_the_rest_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let rest = timers.absorb(vec![
            Action::SendAdvert { priority: 100 },
            Action::SetTimer {
                timer: TimerKind::Advert,
                at: t0 + Duration::from_secs(1),
            },
            Action::AddVips,
            Action::SetTimer {
                timer: TimerKind::MasterDown,
                at: t0 + Duration::from_secs(3),
            },
        ]);
        assert_eq!(
            rest,
            vec![Action::SendAdvert { priority: 100 }, Action::AddVips]
        );
        assert_eq!(
            timers.next(),
            Some((TimerKind::Advert, t0 + Duration::from_secs(1)))
        );
        timers.absorb(vec![Action::CancelTimer {
            timer: TimerKind::Advert,
        }]);
        assert_eq!(
            timers.next(),
            Some((TimerKind::MasterDown, t0 + Duration::from_secs(3)))
        );
        assert_eq!(
            timers.fire(TimerKind::MasterDown),
            Event::MasterDownTimerFired
        );
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_rearmed_timer_replaces_its_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for secs in [5, 2, 9] {
            timers.absorb(vec![Action::SetTimer {
                timer: TimerKind::MasterDown,
                at: t0 + Duration::from_secs(secs),
            }]);
        }
        assert_eq!(
            timers.next(),
            Some((TimerKind::MasterDown, t0 + Duration::from_secs(9)))
        );
        assert_eq!(timers.fire(TimerKind::Advert), Event::AdvertTimerFired);
        assert!(timers.next().is_some(), "firing one kind leaves the other");
    }
}
