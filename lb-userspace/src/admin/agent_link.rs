//! How the HTTP side talks to the agent: the same [`Pending`] requests the
//! control socket sends, answered in the agent's own loop (the only writer
//! of the maps and states). Nothing here touches agent state directly.

use std::time::Duration;

use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::control::{Answer, NodeStatus, Pending, Request};

/// An agent busy longer than this (a reload with many backends) gets the
/// page a 503 instead of a hanging browser.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent did not answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Unavailable(pub &'static str);

#[derive(Clone)]
pub struct AgentLink {
    requests: UnboundedSender<Pending>,
}

impl AgentLink {
    pub fn new(requests: UnboundedSender<Pending>) -> Self {
        AgentLink { requests }
    }

    pub async fn ask(&self, request: Request) -> Result<Answer, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Pending { request, reply })
            .map_err(|_| Unavailable("the agent is stopping"))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unavailable("the agent is stopping")),
            Err(_) => Err(Unavailable("the agent did not answer in time")),
        }
    }

    /// The agent's status, as the page, the API and `/metrics` show it.
    pub async fn status(&self) -> Result<NodeStatus, Unavailable> {
        self.ask(Request::Status)
            .await?
            .status
            .ok_or(Unavailable("the agent answered without a status"))
    }

    pub async fn set_state(
        &self,
        service: &str,
        backend: &str,
        state: &str,
    ) -> Result<Answer, Unavailable> {
        self.ask(Request::SetState {
            service: service.to_string(),
            backend: backend.to_string(),
            state: state.to_string(),
        })
        .await
    }
}
