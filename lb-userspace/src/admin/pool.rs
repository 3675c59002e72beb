//! Password hashes are checked on a small pool of threads of their own with
//! a bounded queue: argon2 costs tens of milliseconds of CPU and memory per
//! check by design, so a flood of logins must queue here (or be turned away)
//! instead of taking the runtime that serves the page, or the agent's.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
};

use anyhow::{Context, Result};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use tokio::sync::oneshot;

/// Threads checking hashes; two keep one core free on a small appliance.
pub const WORKERS: usize = 2;
/// Checks waiting for a thread; more are answered "busy" at once.
pub const QUEUE: usize = 8;

struct Job {
    hash: Arc<str>,
    password: String,
    answer: oneshot::Sender<bool>,
}

/// The pool is full: the caller answers 503.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// Handle to the pool; cloning shares it. The threads end when every handle
/// is dropped.
#[derive(Clone)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    /// Checks accepted so far (tests see sessions spare the pool).
    accepted: Arc<AtomicU64>,
}

impl HashPool {
    pub fn start(workers: usize, queue: usize) -> Result<Self> {
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = receiver.clone();
            thread::Builder::new()
                .name(format!("lbd-passwd-{i}"))
                .spawn(move || work(&receiver))
                .context("starting a password-check thread")?;
        }
        Ok(HashPool {
            jobs,
            accepted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether `password` matches `hash`; `Err(Busy)` at once when the
    /// queue is full. A hash that does not parse never matches.
    pub async fn verify(&self, hash: Arc<str>, password: String) -> Result<bool, Busy> {
        let (answer, answered) = oneshot::channel();
        match self.jobs.try_send(Job {
            hash,
            password,
            answer,
        }) {
            Ok(()) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => return Err(Busy),
            // The threads are gone (a panic): refuse rather than let in.
            Err(TrySendError::Disconnected(_)) => return Ok(false),
        }
        Ok(answered.await.unwrap_or(false))
    }
}

impl HashPool {
    /// How many checks the pool has taken on.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let ok = matches(&job.hash, &job.password);
        let _ = job.answer.send(ok);
    }
}

/// Checks a password against an argon2 PHC string with the parameters the
/// string carries.
pub fn matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::admin::passwd::hash_password;

    #[tokio::test]
    async fn right_and_wrong_passwords() {
        let hash: Arc<str> = hash_password("correct horse").unwrap().into();
        let pool = HashPool::start(1, 2).unwrap();
        assert_eq!(
            pool.verify(hash.clone(), "correct horse".into()).await,
            Ok(true)
        );
        assert_eq!(pool.verify(hash.clone(), "wrong".into()).await, Ok(false));
        assert_eq!(
            pool.verify("not a hash".into(), "x".into()).await,
            Ok(false)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flood_is_turned_away_and_the_runtime_keeps_running() {
        let hash: Arc<str> = hash_password("pw").unwrap().into();
        let pool = HashPool::start(1, 2).unwrap();
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let (pool, hash) = (pool.clone(), hash.clone());
                tokio::spawn(async move { pool.verify(hash, "pw".into()).await })
            })
            .collect();
        // While the hashes run, this single-threaded runtime still ticks.
        let mut ticks = 0;
        while ticks < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks += 1;
        }
        // Counted, not timed: the runtime ticked while hashes still ran.
        assert!(
            checks.iter().any(|check| !check.is_finished()),
            "the runtime was blocked until every hash had ended"
        );
        let mut busy = 0;
        let mut ok = 0;
        for check in checks {
            match check.await.unwrap() {
                Ok(true) => ok += 1,
                Ok(false) => panic!("the right password was refused"),
                Err(Busy) => busy += 1,
            }
        }
        // One running plus two queued at most when the flood arrived.
        assert!((1..=3).contains(&ok), "ok {ok}");
        assert_eq!(ok + busy, 20);
    }
}
