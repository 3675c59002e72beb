//! The stats/admin page, its JSON API, `/metrics`, and the http-to-https
//! redirects. They run on a thread and runtime of their own, and password
//! hashes on a pool of their own, so a flood of logins never delays the
//! agent's loop (health checks, VRRP). They reach the agent only through
//! the control requests ([`control::Pending`]), which the agent loop
//! answers: it stays the single writer of maps and states.
//!
//! [`control::Pending`]: crate::control::Pending

pub mod agent_link;
pub mod api;
pub mod app_state;
pub mod auth;
pub mod caller;
pub mod csrf;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod passwd;
pub mod pool;
pub mod redirect;
pub mod server;
pub mod session;

#[cfg(test)]
mod tests;

use std::{net::SocketAddrV4, sync::Arc, thread};

use anyhow::{Context, Result};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::config::{Admin, Redirect};
use crate::control::Pending;
use agent_link::AgentLink;
use app_state::AppState;
use pool::HashPool;

/// The running HTTP servers; dropping it stops them.
pub struct HttpServers {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    /// The page's shared state and the config it was started with.
    page: Option<(app_state::Shared, Admin)>,
    redirects: Vec<Redirect>,
}

impl HttpServers {
    /// Applies a reloaded config: users and refresh interval change at
    /// once; listeners (added, removed or moved) need a restart, which the
    /// log says.
    pub fn update(&mut self, admin: Option<&Admin>, redirects: &[Redirect]) {
        match (&mut self.page, admin) {
            (Some((state, running)), Some(new)) if running.listen == new.listen => {
                if running != new {
                    state.update(new);
                    *running = new.clone();
                    tracing::info!(
                        users = new.users.len(),
                        "admin page users and refresh reloaded"
                    );
                }
            }
            (None, None) => {}
            _ => tracing::warn!(
                "the [admin] listen address changed (or [admin] was added or removed): \
                 the page keeps its old listener until lbd restarts"
            ),
        }
        if self.redirects != redirects {
            tracing::warn!(
                "[[redirect]] changed: the redirects keep their old listeners until lbd restarts"
            );
        }
    }
}

impl Drop for HttpServers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds the admin page and redirect listeners (errors here stop the agent
/// at start, naming the address) and serves them on a thread of their own.
/// `None` when the config asks for neither.
pub fn start(
    admin: Option<&Admin>,
    redirects: &[Redirect],
    requests: UnboundedSender<Pending>,
) -> Result<Option<HttpServers>> {
    if admin.is_none() && redirects.is_empty() {
        return Ok(None);
    }
    let page = match admin {
        Some(admin) => {
            let listener = listener::bind_freebind(admin.listen)
                .with_context(|| format!("starting the admin page on {}", admin.listen))?;
            let pool = HashPool::start(pool::WORKERS, pool::QUEUE)?;
            let state = Arc::new(AppState::new(
                AgentLink::new(requests),
                admin,
                pool,
                auth::FAILURE_DELAY,
            ));
            tracing::info!(listen = %admin.listen, users = admin.users.len(), "admin page listening");
            Some((listener, state))
        }
        None => None,
    };
    let mut redirect_listeners: Vec<(std::net::TcpListener, SocketAddrV4)> = Vec::new();
    for redirect in redirects {
        let listener = listener::bind_freebind(redirect.listen)
            .with_context(|| format!("starting the redirect on {}", redirect.listen))?;
        tracing::info!(listen = %redirect.listen, "http-to-https redirect listening");
        redirect_listeners.push((listener, redirect.listen));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime of the admin page")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let page_state = page
        .as_ref()
        .zip(admin)
        .map(|((_, state), admin)| (state.clone(), admin.clone()));
    let thread = thread::Builder::new()
        .name("lbd-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                if let Some((listener, state)) = page {
                    tasks.spawn(server::serve(listener, state));
                }
                for (listener, listen) in redirect_listeners {
                    tasks.spawn(redirect::serve(listener, listen));
                }
                tokio::select! {
                    _ = stopped => {}
                    Some(Ok(Err(e))) = tasks.join_next() => {
                        tracing::error!("the admin HTTP server stopped: {e:#}");
                    }
                }
                tasks.shutdown().await;
            });
        })
        .context("starting the admin page thread")?;
    Ok(Some(HttpServers {
        stop: Some(stop),
        thread: Some(thread),
        page: page_state,
        redirects: redirects.to_vec(),
    }))
}
