//! What every handler of the HTTP side shares: the link to the agent, the
//! sessions, the password-hash pool and the settings a reload may swap.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use super::{agent_link::AgentLink, auth::Auth, pool::HashPool, session::Sessions};
use crate::config::Admin;

/// What every handler shares.
pub struct AppState {
    pub agent: AgentLink,
    pub sessions: Sessions,
    pool: HashPool,
    failure_delay: Duration,
    /// Users and refresh interval; a reload swaps them.
    settings: RwLock<Arc<Settings>>,
}

/// What a reload of `[admin]` may change without a restart.
pub struct Settings {
    pub auth: Auth,
    pub refresh: Duration,
}

impl AppState {
    pub fn new(agent: AgentLink, admin: &Admin, pool: HashPool, failure_delay: Duration) -> Self {
        AppState {
            agent,
            sessions: Sessions::default(),
            settings: RwLock::new(Arc::new(Settings {
                auth: Auth::new(&admin.users, pool.clone(), failure_delay),
                refresh: admin.refresh,
            })),
            pool,
            failure_delay,
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the users and refresh interval of a reloaded `[admin]`.
    /// Sessions of users removed, or whose role changed, end; remembered
    /// basic-auth credentials are forgotten (a changed password must not
    /// keep working).
    pub fn update(&self, admin: &Admin) {
        let settings = Arc::new(Settings {
            auth: Auth::new(&admin.users, self.pool.clone(), self.failure_delay),
            refresh: admin.refresh,
        });
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        self.sessions
            .retain(|user, role| admin.users.iter().any(|u| u.name == user && u.role == role));
    }
}

pub type Shared = Arc<AppState>;
