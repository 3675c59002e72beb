//! The admin states an operator sets on a backend (`lbd backend set-state`,
//! the page's buttons), as the control protocol and the status spell them.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

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
    fn what_each_state_allows() {
        use AdminState::*;
        assert!(Ready.takes_new_clients() && Ready.keeps_persistent_clients());
        assert!(!Drain.takes_new_clients() && Drain.keeps_persistent_clients());
        assert!(!Maint.takes_new_clients() && !Maint.keeps_persistent_clients());
        assert!(Ready.is_checked() && Drain.is_checked() && !Maint.is_checked());
    }
}
