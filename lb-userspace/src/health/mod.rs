//! Health checks with HAProxy's semantics: the health counter (pure), the
//! checkers (tcp, tls-hello, http, https) and the scheduler that runs one
//! task per backend and reports state changes on a channel.

pub mod check;
pub mod counter;
pub mod scheduler;

#[cfg(test)]
mod test_servers;
#[cfg(test)]
mod tests;

pub use check::{CheckResult, Checker, Failure};
pub use counter::{HealthCounter, Intervals, Transition};
pub use scheduler::{BackendKey, CheckRecord, HealthEvent, Scheduler, desired_checks};
