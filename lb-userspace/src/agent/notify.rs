//! Tells the service manager what the agent is doing (systemd's
//! `Type=notify` protocol): READY once the program is attached and the maps
//! are programmed, RELOADING/READY around a reload, STOPPING on the way out,
//! and WATCHDOG pings so a hung agent is restarted.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing. A failed
//! notification is logged and otherwise ignored: the data path must never
//! depend on the service manager.

use std::time::Duration;

use sd_notify::NotifyState;

/// READY=1 with a one-line STATUS= shown by `systemctl status`.
pub fn ready(status: &str) {
    send("READY", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 before a reload. MONOTONIC_USEC tells systemd (253+,
/// `Type=notify-reload`) which reload this is; older ones ignore it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("RELOADING", &[NotifyState::Reloading, now]),
        Err(_) => send("RELOADING", &[NotifyState::Reloading]),
    }
}

/// STOPPING=1 once the agent leaves its loop.
pub fn stopping() {
    send(
        "STOPPING",
        &[NotifyState::Stopping, NotifyState::Status("stopping")],
    );
}

fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("could not tell the service manager {what}: {e}");
    }
}

/// The watchdog systemd asked for (`WatchdogSec=` sets `WATCHDOG_USEC`):
/// pinged at half its period from the agent loop, so a stuck loop stops the
/// pings and systemd restarts the agent.
pub struct Watchdog {
    interval: Option<tokio::time::Interval>,
}

impl Watchdog {
    /// The watchdog of this process, if systemd enabled one.
    pub fn from_env() -> Self {
        Watchdog::every(sd_notify::watchdog_enabled().and_then(ping_interval))
    }

    fn every(period: Option<Duration>) -> Self {
        let interval = period.map(|period| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Watchdog { interval }
    }

    /// How often it pings, if enabled.
    pub fn period(&self) -> Option<Duration> {
        self.interval.as_ref().map(|interval| interval.period())
    }

    /// Waits for the next ping time and sends WATCHDOG=1; never returns
    /// when no watchdog is enabled (a `select!` branch that never fires).
    pub async fn ping(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
                send("WATCHDOG", &[NotifyState::Watchdog]);
            }
            None => std::future::pending().await,
        }
    }
}

/// Half the watchdog timeout, as sd_watchdog_enabled(3) advises; none for a
/// zero timeout (which would ask for pings without pause).
fn ping_interval(timeout: Duration) -> Option<Duration> {
    let half = timeout / 2;
    (!half.is_zero()).then_some(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout() {
        assert_eq!(
            ping_interval(Duration::from_secs(30)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            ping_interval(Duration::from_micros(3)),
            Some(Duration::from_nanos(1500))
        );
        assert_eq!(ping_interval(Duration::ZERO), None);
        assert_eq!(ping_interval(Duration::from_nanos(1)), None);
    }

    #[tokio::test]
    async fn a_disabled_watchdog_never_fires() {
        let mut watchdog = Watchdog::every(None);
        assert_eq!(watchdog.period(), None);
        let waited = tokio::time::timeout(Duration::from_millis(200), watchdog.ping()).await;
        assert!(waited.is_err(), "a disabled watchdog must never ping");
    }

    // On tokio's paused clock: time moves only when every task waits, so
    // the ticks are counted exactly, whatever the machine is doing.
    #[tokio::test(start_paused = true)]
    async fn an_enabled_watchdog_ticks_at_its_period() {
        let period = Duration::from_millis(50);
        let mut watchdog = Watchdog::every(Some(period));
        assert_eq!(watchdog.period(), Some(period));
        let start = tokio::time::Instant::now();
        watchdog.ping().await; // the first tick is immediate
        assert_eq!(start.elapsed(), Duration::ZERO);
        watchdog.ping().await;
        watchdog.ping().await;
        assert_eq!(start.elapsed(), 2 * period);
    }
}
