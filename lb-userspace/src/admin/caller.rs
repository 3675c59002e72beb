//! Who is calling and what they may do: the caller found from a session
//! cookie or HTTP basic auth, the role and CSRF rules for changes, and the
//! answers to a refused or unanswerable request. The same rules for the
//! page, its form and the JSON API.

use std::net::SocketAddr;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};

use super::{
    agent_link::Unavailable,
    app_state::AppState,
    auth::Denied,
    csrf::{self, Origin},
    session::{self, Session},
};
use crate::config::Role;

/// The caller's address as the server records it for each connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, super::listener::Bounded>,
    > for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::listener::Bounded>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The caller's address, when the server knows it (not in unit tests
/// that call the router directly).
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<PeerAddr>>()
                .map(|info| info.0.0),
        ))
    }
}

/// Someone let in.
pub enum Caller {
    /// A browser with a session cookie.
    Session { id: String, session: Session },
    /// HTTP basic auth (curl, scripts, Prometheus): no CSRF token, since
    /// browsers are caught by the origin check.
    Basic { user: String, role: Role },
}

impl Caller {
    pub fn user(&self) -> &str {
        match self {
            Caller::Session { session, .. } => &session.user,
            Caller::Basic { user, .. } => user,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Caller::Session { session, .. } => session.role,
            Caller::Basic { role, .. } => *role,
        }
    }

    pub fn csrf(&self) -> Option<&str> {
        match self {
            Caller::Session { session, .. } => Some(&session.csrf),
            Caller::Basic { .. } => None,
        }
    }

    /// Whether this state-changing request may go on: an admin, from a page
    /// of this server, with the session's token (`token` as sent). Returns
    /// the refusal otherwise.
    pub fn may_change(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
    ) -> Result<(), (StatusCode, String)> {
        if self.role() != Role::Admin {
            tracing::warn!(
                user = self.user(),
                "admin page: a readonly user tried to change a state"
            );
            return Err((
                StatusCode::FORBIDDEN,
                format!("{} is a readonly user: nothing was changed", self.user()),
            ));
        }
        let cross = |why: String| {
            tracing::warn!(
                user = self.user(),
                "admin page: cross-site request refused: {why}"
            );
            Err((
                StatusCode::FORBIDDEN,
                format!("cross-site request refused ({why}): nothing was changed"),
            ))
        };
        match (self, csrf::origin(headers)) {
            (_, Origin::Cross(why)) => return cross(why),
            (Caller::Session { .. }, Origin::Unknown) => {
                return cross("no Origin, Referer or Sec-Fetch-Site header".into());
            }
            _ => {}
        }
        if let Some(expected) = self.csrf()
            && !csrf::token_matches(expected, token)
        {
            return cross("missing or wrong CSRF token".into());
        }
        Ok(())
    }
}

/// Finds the caller: a live session cookie first, else basic auth.
pub async fn caller(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Caller, Denied> {
    if let Some(id) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::id_from_cookies)
        && let Some(session) = state.sessions.get(id)
    {
        return Ok(Caller::Session {
            id: id.to_string(),
            session,
        });
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Denied::NoCredentials);
    };
    let value = value.to_str().map_err(|_| Denied::Malformed)?;
    let (user, role) = state.settings().auth.basic(value, peer.0).await?;
    Ok(Caller::Basic { user, role })
}

/// Whether the client reads HTML (a browser) rather than a script.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The answer to a refused request: browsers are sent to the login form,
/// scripts get 401 with a basic-auth challenge.
pub fn refusal(denied: Denied, html: bool) -> Response {
    let challenge = [(
        header::WWW_AUTHENTICATE,
        "Basic realm=\"lbd\", charset=\"UTF-8\"",
    )];
    match denied {
        Denied::NoCredentials if html => Redirect::to("/login").into_response(),
        Denied::NoCredentials => (
            StatusCode::UNAUTHORIZED,
            challenge,
            "authentication required: use a session (POST /login) or HTTP basic auth\n",
        )
            .into_response(),
        Denied::Wrong => (
            StatusCode::UNAUTHORIZED,
            challenge,
            "wrong user name or password\n",
        )
            .into_response(),
        Denied::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many logins at once; try again in a moment\n",
        )
            .into_response(),
        Denied::Malformed => (
            StatusCode::BAD_REQUEST,
            "the Authorization header is not HTTP basic auth\n",
        )
            .into_response(),
    }
}

pub fn unavailable(error: Unavailable) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}; try again in a moment\n", error.0),
    )
        .into_response()
}
