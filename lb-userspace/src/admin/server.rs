//! The admin HTTP server: routes and the page's own handlers (login, the
//! stats page, its state form, `/metrics`). The JSON API lives in `api`,
//! who may call what in `caller`. Every answer about backends comes from the agent
//! through [`AgentLink`]; this side keeps only sessions.

use std::{net::TcpListener, time::SystemTime};

use anyhow::{Context, Result};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};

use super::{
    api,
    app_state::Shared,
    auth::Denied,
    caller::{Caller, Peer, PeerAddr, caller, refusal, unavailable, wants_html},
    csrf::{self, Origin},
    metrics, page, session,
};
use crate::control::{AdminState, NodeStatus};

/// The routes of the admin page.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/stats") }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/stats", get(stats_page))
        .route("/stats/state", post(set_states))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(api::status))
        .route(
            "/api/v1/backends/{service}/{backend}/state",
            post(api::set_state),
        )
        .with_state(state)
}

/// Serves the admin page on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, state: Shared) -> Result<()> {
    let address = listener
        .local_addr()
        .context("reading the listen address")?;
    let listener = super::listener::Bounded::new(
        listener,
        super::listener::MAX_CONNECTIONS,
        super::listener::IDLE,
    )
    .context("registering the admin listener")?;
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<PeerAddr>(),
    )
    .await
    .with_context(|| format!("serving the admin page on {address}"))
}

async fn login_form() -> Html<String> {
    Html(page::login(None))
}

async fn login(
    State(state): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A login planted by another site would sign the browser in as the
    // attacker: same-origin rules apply to the form too.
    if let Origin::Cross(why) = csrf::origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            Html(page::error(
                "Refused",
                &format!("cross-site login refused ({why})"),
            )),
        )
            .into_response();
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(user), Some(password)) = (field("user"), field("password")) else {
        return (
            StatusCode::BAD_REQUEST,
            Html(page::login(Some("Enter a user name and a password."))),
        )
            .into_response();
    };
    let settings = state.settings();
    match settings.auth.check(user, password, peer.0).await {
        Ok(role) => {
            let id = state.sessions.create(user, role);
            tracing::info!(user, role = role.name(), peer = ?peer.0, "admin page: signed in");
            (
                [(header::SET_COOKIE, session::set_cookie(&id))],
                Redirect::to("/stats"),
            )
                .into_response()
        }
        Err(Denied::Busy) => refusal(Denied::Busy, true),
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            Html(page::login(Some("Wrong user name or password."))),
        )
            .into_response(),
    }
}

async fn logout(
    State(state): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers, &peer).await {
        Ok(caller) => caller,
        Err(_) => return Redirect::to("/login").into_response(),
    };
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if let Caller::Session { id, session } = &caller {
        let same = csrf::origin(&headers) == Origin::Same;
        if same && csrf::token_matches(&session.csrf, token) {
            state.sessions.remove(id);
        }
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

async fn stats_page(State(state): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers, &peer).await {
        Ok(caller) => caller,
        Err(denied) => return refusal(denied, wants_html(&headers)),
    };
    let status = match state.agent.status().await {
        Ok(status) => status,
        Err(e) => return unavailable(e),
    };
    let flash = match &caller {
        Caller::Session { id, .. } => state.sessions.take_flash(id),
        Caller::Basic { .. } => Vec::new(),
    };
    let viewer = page::Viewer {
        user: caller.user(),
        role: caller.role(),
        csrf: caller.csrf(),
        refresh: state.settings().refresh,
        flash: &flash,
        now: SystemTime::now(),
    };
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page::stats(&status, &viewer)),
    )
        .into_response()
}

/// The checked backends and the state of a form post.
struct StateForm {
    state: AdminState,
    backends: Vec<(String, String)>,
}

fn read_state_form(body: &[u8]) -> Result<StateForm, String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| format!("the form could not be read: {e}"))?;
    let mut state = None;
    let mut backends = Vec::new();
    for (name, value) in fields {
        match name.as_str() {
            // Checked before the form is read.
            "csrf" => {}
            "state" => state = Some(value),
            "backend" => {
                let (service, backend) = value
                    .split_once('/')
                    .filter(|(s, b)| !s.is_empty() && !b.is_empty())
                    .ok_or_else(|| format!("`{value}` is not SERVICE/BACKEND"))?;
                backends.push((service.to_string(), backend.to_string()));
            }
            other => return Err(format!("unexpected form field `{other}`")),
        }
    }
    let state = state
        .ok_or("no state chosen: press Ready, Drain or Maint")?
        .parse::<AdminState>()?;
    if backends.is_empty() {
        return Err("no backend selected: tick at least one".to_string());
    }
    Ok(StateForm { state, backends })
}

/// The form's ticked backends that the agent does not know.
pub fn unknown_backends<'a>(
    status: &NodeStatus,
    backends: impl IntoIterator<Item = &'a (String, String)>,
) -> Vec<String> {
    backends
        .into_iter()
        .filter(|(s, b)| !status.has_backend(s, b))
        .map(|(s, b)| format!("{s}/{b}"))
        .collect()
}

async fn set_states(
    State(state): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers, &peer).await {
        Ok(caller) => caller,
        Err(denied) => return refusal(denied, wants_html(&headers)),
    };
    let bad = |status: StatusCode, message: &str| {
        (status, Html(page::error("Nothing was changed", message))).into_response()
    };
    // The role and origin come first: a forged or readonly request learns
    // nothing about the form.
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|f| f.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    if let Err((status, message)) = caller.may_change(&headers, token.as_deref()) {
        return bad(status, &message);
    }
    let form = match read_state_form(&body) {
        Ok(form) => form,
        Err(message) => return bad(StatusCode::BAD_REQUEST, &message),
    };
    let status = match state.agent.status().await {
        Ok(status) => status,
        Err(e) => return unavailable(e),
    };
    let unknown = unknown_backends(&status, &form.backends);
    if !unknown.is_empty() {
        return bad(
            StatusCode::NOT_FOUND,
            &format!("no such backend: {}", unknown.join(", ")),
        );
    }
    let mut messages = Vec::new();
    for (service, backend) in &form.backends {
        let word = form.state.to_string();
        let message = match state.agent.set_state(service, backend, &word).await {
            Ok(answer) if answer.ok => answer.message.unwrap_or_default(),
            Ok(answer) => format!(
                "{service}/{backend}: refused: {}",
                answer.error.unwrap_or_default()
            ),
            Err(e) => format!("{service}/{backend}: {}", e.0),
        };
        tracing::info!(user = caller.user(), "admin page: {message}");
        messages.push(message);
    }
    match &caller {
        Caller::Session { id, .. } => {
            state.sessions.push_flash(id, messages);
            Redirect::to("/stats").into_response()
        }
        Caller::Basic { .. } => (StatusCode::OK, messages.join("\n") + "\n").into_response(),
    }
}

async fn metrics_text(State(state): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    if let Err(denied) = caller(&state, &headers, &peer).await {
        return refusal(denied, false);
    }
    match state.agent.status().await {
        Ok(status) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&status),
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}
