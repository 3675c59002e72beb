//! The JSON API: `GET /api/v1/status` (the model behind the page) and
//! `POST /api/v1/backends/{service}/{backend}/state` with `{"state":"drain"}`.
//! Browser sessions send their CSRF token in `X-CSRF-Token` (the page's
//! `<meta name="csrf-token">`, also returned by the status call); basic-auth
//! callers need none but must still be admins.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::app_state::Shared;
use super::caller::{Peer, caller, refusal, unavailable};
use crate::control::AdminState;

/// The header a browser session carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"ok": false, "error": message.into()})),
    )
        .into_response()
}

pub async fn status(State(state): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match caller(&state, &headers, &peer).await {
        Ok(caller) => caller,
        Err(denied) => return refusal(denied, false),
    };
    let status = match state.agent.status().await {
        Ok(status) => status,
        Err(e) => return unavailable(e),
    };
    let mut response = axum::Json(status).into_response();
    if let Some(token) = caller.csrf().and_then(|t| HeaderValue::from_str(t).ok()) {
        response.headers_mut().insert(CSRF_HEADER, token);
    }
    response
}

pub async fn set_state(
    State(state): State<Shared>,
    peer: Peer,
    Path((service, backend)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(&state, &headers, &peer).await {
        Ok(caller) => caller,
        Err(denied) => return refusal(denied, false),
    };
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if let Err((status, message)) = caller.may_change(&headers, token) {
        return error(status, message);
    }
    let wanted: StateBody = match serde_json::from_slice(&body) {
        Ok(wanted) => wanted,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"state\": \"ready|drain|maint\"}}: {e}"),
            );
        }
    };
    if let Err(e) = wanted.state.parse::<AdminState>() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let status = match state.agent.status().await {
        Ok(status) => status,
        Err(e) => return unavailable(e),
    };
    if !status.has_backend(&service, &backend) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no backend {service}/{backend}"),
        );
    }
    match state
        .agent
        .set_state(&service, &backend, &wanted.state)
        .await
    {
        Ok(answer) if answer.ok => {
            let message = answer.message.unwrap_or_default();
            tracing::info!(user = caller.user(), "admin API: {message}");
            axum::Json(json!({"ok": true, "message": message})).into_response()
        }
        Ok(answer) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            answer.error.unwrap_or_else(|| "the agent refused".into()),
        ),
        Err(e) => unavailable(e),
    }
}
