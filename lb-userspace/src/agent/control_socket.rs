//! The agent's control socket `/run/lbd/<node>.sock` (the protocol is in
//! `control::protocol`): a Unix stream socket, mode 0660 in the root-only
//! `/run/lbd`, so only root can use it.
//!
//! The listener only parses and forwards: every request is answered by the
//! agent's own loop, which owns the state, so requests never race a reload
//! or a health change.

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::control::{Answer, Pending, Request};

/// A request line longer than this is refused (a request is a few dozen bytes).
const MAX_REQUEST: usize = 4096;

/// The listening socket; dropping it stops accepting and removes the file.
pub struct ControlSocket {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl ControlSocket {
    /// Binds `path` (replacing a stale file: the caller holds the node lock,
    /// so no other agent uses it) with mode 0660, and forwards every request
    /// to `requests`.
    pub fn bind(path: PathBuf, requests: mpsc::UnboundedSender<Pending>) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing the stale {}", path.display()));
            }
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("restricting {} to mode 0660", path.display()))?;
        let accept = tokio::spawn(accept_loop(listener, requests));
        Ok(ControlSocket { path, accept })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, requests: mpsc::UnboundedSender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, requests.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers the requests of one client, one line each, until it hangs up.
async fn serve_client(stream: UnixStream, requests: mpsc::UnboundedSender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_REQUEST as u64 + 1);
        match limited.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("control socket: reading a request: {e}");
                return;
            }
        }
        let too_long = line.len() > MAX_REQUEST;
        let answer = if too_long {
            Answer::error(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            match serde_json::from_str::<Request>(line.trim_end()) {
                Err(e) => Answer::error(format!("unreadable request: {e}")),
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    if requests.send(Pending { request, reply }).is_err() {
                        return;
                    }
                    answer
                        .await
                        .unwrap_or_else(|_| Answer::error("the agent is stopping"))
                }
            }
        };
        let mut text = serde_json::to_string(&answer).expect("answers serialize");
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}
