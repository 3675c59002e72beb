//! Who is asking: a browser session (cookie), or HTTP basic auth (curl,
//! scripts, Prometheus). Passwords are checked on the bounded hash pool; a
//! wrong one is answered only after a delay (without holding a thread) and
//! logged with the user name and peer address. Basic-auth credentials that
//! were right are remembered for a few minutes under a keyed hash, so a
//! scraper polling every 15 s does not cost an argon2 run each time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use siphasher::sip128::{Hasher128, SipHasher24};
use std::hash::Hasher;

use super::pool::{Busy, HashPool};
use crate::config::{AdminUser, Role};

/// How long a wrong password waits for its answer.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// How long right basic-auth credentials skip the hash check.
const REMEMBER: Duration = Duration::from_secs(300);
const REMEMBER_MAX: usize = 64;

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// Neither a session nor credentials.
    NoCredentials,
    /// Unknown user or wrong password (after the delay).
    Wrong,
    /// The hash pool is full.
    Busy,
    /// An Authorization header that is not basic auth.
    Malformed,
}

impl From<Busy> for Denied {
    fn from(_: Busy) -> Self {
        Denied::Busy
    }
}

/// The configured users and the means to check them.
pub struct Auth {
    users: HashMap<String, (Role, Arc<str>)>,
    /// Checked for unknown users too, so they cost the same time as a
    /// wrong password of a real user.
    stand_in: Option<Arc<str>>,
    pool: HashPool,
    failure_delay: Duration,
    keys: (u64, u64),
    remembered: Mutex<HashMap<u128, (String, Role, Instant)>>,
}

impl Auth {
    pub fn new(users: &[AdminUser], pool: HashPool, failure_delay: Duration) -> Self {
        let users: HashMap<String, (Role, Arc<str>)> = users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    (u.role, Arc::from(u.password_hash.as_str())),
                )
            })
            .collect();
        let stand_in = users.values().next().map(|(_, hash)| hash.clone());
        Auth {
            users,
            stand_in,
            pool,
            failure_delay,
            keys: (OsRng.next_u64(), OsRng.next_u64()),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a user name and password (the login form and basic auth).
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Role, Denied> {
        let known = self.users.get(user).cloned();
        let hash = match (&known, &self.stand_in) {
            (Some((_, hash)), _) => hash.clone(),
            (None, Some(stand_in)) => stand_in.clone(),
            (None, None) => return self.refuse(user, peer, "no users configured").await,
        };
        let matched = self.pool.verify(hash, password.to_string()).await?;
        match known {
            Some((role, _)) if matched => Ok(role),
            Some(_) => self.refuse(user, peer, "wrong password").await,
            None => self.refuse(user, peer, "unknown user").await,
        }
    }

    async fn refuse(
        &self,
        user: &str,
        peer: Option<SocketAddr>,
        why: &str,
    ) -> Result<Role, Denied> {
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        tracing::warn!(user = %user.escape_debug(), %peer, "admin page login refused: {why}");
        tokio::time::sleep(self.failure_delay).await;
        Err(Denied::Wrong)
    }

    /// Checks an `Authorization: Basic ...` header value.
    pub async fn basic(
        &self,
        header: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(String, Role), Denied> {
        let (user, password) = parse_basic(header).ok_or(Denied::Malformed)?;
        let key = self.remember_key(&user, &password);
        if let Some(role) = self.recall(key, &user) {
            return Ok((user, role));
        }
        let role = self.check(&user, &password, peer).await?;
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= REMEMBER_MAX {
            remembered.clear();
        }
        remembered.insert(key, (user.clone(), role, Instant::now()));
        Ok((user, role))
    }

    fn recall(&self, key: u128, user: &str) -> Option<Role> {
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (name, role, at) = remembered.get(&key)?;
        if at.elapsed() < REMEMBER && name == user {
            return Some(*role);
        }
        remembered.remove(&key);
        None
    }

    fn remember_key(&self, user: &str, password: &str) -> u128 {
        let mut hasher = SipHasher24::new_with_keys(self.keys.0, self.keys.1);
        hasher.write(user.as_bytes());
        hasher.write_u8(0);
        hasher.write(password.as_bytes());
        hasher.finish128().as_u128()
    }
}

/// User and password of a basic auth header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::passwd::hash_password;

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn basic_headers_parse() {
        assert_eq!(
            parse_basic(&basic("ops", "a:b")),
            Some(("ops".to_string(), "a:b".to_string()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[tokio::test]
    async fn wrong_passwords_wait_and_right_ones_are_remembered() {
        let users = vec![AdminUser {
            name: "ops".into(),
            role: Role::Admin,
            password_hash: hash_password("pw").unwrap(),
        }];
        let auth = Auth::new(
            &users,
            HashPool::start(1, 4).unwrap(),
            Duration::from_millis(200),
        );
        let started = Instant::now();
        assert_eq!(
            auth.basic(&basic("ops", "nope"), None).await,
            Err(Denied::Wrong)
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(
            auth.basic(&basic("eve", "pw"), None).await,
            Err(Denied::Wrong)
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            auth.basic(&basic("ops", "pw"), None).await,
            Ok(("ops".to_string(), Role::Admin))
        );
        // Remembered: answered without the pool (a zero-worker pool would hang).
        let key = auth.remember_key("ops", "pw");
        assert_eq!(auth.recall(key, "ops"), Some(Role::Admin));
        assert_eq!(auth.basic("Digest x", None).await, Err(Denied::Malformed));
    }
}
