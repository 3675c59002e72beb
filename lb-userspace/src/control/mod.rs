//! The control protocol and the status model, below both the agent (which
//! answers) and every view (which asks and renders): `lbd status` and
//! `lbd backend set-state` on the command line ([`client`]), and the stats
//! page, its JSON API and `/metrics` on the HTTP side (`admin`). One typed
//! model, rendered four ways.

mod admin_state;
pub mod client;
pub mod format;
mod protocol;
mod status;
pub mod status_table;

pub use admin_state::AdminState;
pub use protocol::{Answer, Pending, Request, socket_path};
pub use status::{BackendStatus, LastCheck, NodeStatus, ServiceStatus, Traffic};
