//! Browser sessions: a good login gets a random session id in an HttpOnly,
//! SameSite=Strict cookie, so later requests need no password check. Each
//! session carries its own CSRF token for the forms and API calls it makes.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use argon2::password_hash::rand_core::{OsRng, RngCore};

use crate::config::Role;

/// The cookie holding the session id.
pub const COOKIE: &str = "lbd_session";
/// A session unused this long is forgotten (a console left open overnight
/// keeps its session through the page's own refreshes).
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the least recently used goes first.
pub const MAX_SESSIONS: usize = 256;

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request learns about its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

struct Entry {
    session: Session,
    last_used: Instant,
    /// Messages for the next page (results of a state change).
    flash: Vec<String>,
}

#[derive(Default)]
pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// Creates a session; returns its id (the cookie value).
    pub fn create(&self, user: &str, role: Role) -> String {
        let id = random_token();
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.last_used) < IDLE);
        if entries.len() >= MAX_SESSIONS
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            id.clone(),
            Entry {
                session: Session {
                    user: user.to_string(),
                    role,
                    csrf: random_token(),
                },
                last_used: now,
                flash: Vec::new(),
            },
        );
        id
    }

    /// The live session `id`, marking it used.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut entries = self.lock();
        let now = Instant::now();
        let entry = entries.get_mut(id)?;
        if now.duration_since(entry.last_used) >= IDLE {
            entries.remove(id);
            return None;
        }
        entry.last_used = now;
        Some(entry.session.clone())
    }

    /// Keeps only the sessions whose user and role `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str, Role) -> bool) {
        self.lock()
            .retain(|_, e| keep(&e.session.user, e.session.role));
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn push_flash(&self, id: &str, messages: Vec<String>) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.flash.extend(messages);
        }
    }

    pub fn take_flash(&self, id: &str) -> Vec<String> {
        self.lock()
            .get_mut(id)
            .map(|e| std::mem::take(&mut e.flash))
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The session id in a `Cookie` header value, if any.
pub fn id_from_cookies(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that starts session `id`. No `Secure`: the page
/// is served over plain HTTP on the management network.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_removed_and_carry_their_own_token() {
        let sessions = Sessions::default();
        let a = sessions.create("alice", Role::Admin);
        let b = sessions.create("bob", Role::Readonly);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = sessions.get(&a).unwrap();
        let sb = sessions.get(&b).unwrap();
        assert_eq!((sa.user.as_str(), sa.role), ("alice", Role::Admin));
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(sessions.get("nosuch"), None);
        sessions.push_flash(&a, vec!["done".into()]);
        assert_eq!(sessions.take_flash(&a), vec!["done".to_string()]);
        assert!(sessions.take_flash(&a).is_empty());
        sessions.remove(&a);
        assert_eq!(sessions.get(&a), None);
        assert!(sessions.get(&b).is_some());
    }

    #[test]
    fn the_oldest_session_goes_when_full() {
        let sessions = Sessions::default();
        let first = sessions.create("u", Role::Readonly);
        for _ in 1..MAX_SESSIONS {
            sessions.create("u", Role::Readonly);
        }
        assert!(sessions.get(&first).is_some(), "still room for all");
        let second_oldest_kept = sessions.create("u", Role::Readonly);
        assert!(sessions.get(&second_oldest_kept).is_some());
        assert!(sessions.get(&first).is_some(), "first was just used");
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_are_found_among_others() {
        assert_eq!(id_from_cookies("a=1; lbd_session=xyz; b=2"), Some("xyz"));
        assert_eq!(id_from_cookies("lbd_session="), None);
        assert_eq!(id_from_cookies("other=1"), None);
        let set = set_cookie("xyz");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    }
}
