//! The control protocol: what a client (`lbd status`, `lbd backend
//! set-state`, the admin page) asks the agent and what it answers. On the
//! socket `/run/lbd/<node>.sock` it is one JSON request per line and one
//! JSON answer per line:
//!
//! ```text
//! {"request":"set-state","service":"web","backend":"be2","state":"drain"}
//! {"ok":true,"message":"web/be2: ready -> drain"}
//! {"request":"status"}
//! {"ok":true,"status":{"node":"lb1","services":[...]}}
//! ```
//!
//! The HTTP side sends the same requests in-process as [`Pending`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::status::NodeStatus;

/// `/run/lbd/<node>.sock`.
pub fn socket_path(node: &str) -> PathBuf {
    Path::new(crate::paths::RUN_DIR).join(format!("{node}.sock"))
}

/// What a client may ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Set a backend's admin state. `state` stays a word here so a bad one
    /// gets the agent's own error message.
    SetState {
        service: String,
        backend: String,
        state: String,
    },
    /// Every service and backend with health, admin state and ids.
    Status,
}

/// The answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

impl Answer {
    pub fn ok(message: impl Into<String>) -> Self {
        Answer {
            ok: true,
            message: Some(message.into()),
            ..Answer::default()
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(error.into()),
            ..Answer::default()
        }
    }
}

/// A request on its way to the agent loop, with where its answer goes.
pub struct Pending {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(
            r#"{"request":"set-state","service":"web","backend":"be2","state":"drain"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::SetState {
                service: "web".into(),
                backend: "be2".into(),
                state: "drain".into()
            }
        );
        let s: Request = serde_json::from_str(r#"{"request":"status"}"#).unwrap();
        assert_eq!(s, Request::Status);
        for bad in [
            r#"{"request":"shutdown"}"#,
            r#"{"request":"set-state","service":"web"}"#,
            r#"{"request":"set-state","service":"web","backend":"be2","state":"drain","x":1}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
