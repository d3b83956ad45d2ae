//! The demo web app (static files compiled into the binary) and demo sign-in.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::validate_user_id;
use super::extract::AppJson;
use crate::auth::{now_secs, Claims};
use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = include_str!("../../static/index.html");
const APP: &str = include_str!("../../static/app.js");
const CLIENT: &str = include_str!("../../static/switchyard.js");
const STYLE: &str = include_str!("../../static/style.css");

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /app.js`.
pub async fn app() -> Response {
    file(APP, "text/javascript; charset=utf-8")
}

/// `GET /switchyard.js`: the reusable client module.
pub async fn client() -> Response {
    file(CLIENT, "text/javascript; charset=utf-8")
}

/// `GET /style.css`.
pub async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

/// The body of `POST /api/demo/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUser {
    user: String,
}

/// Mints a one-hour token for a demo user of the `demo` tenant. Only when
/// demo sign-in is on (by default in embedded mode only).
pub async fn demo_token(
    State(state): State<AppState>,
    AppJson(b): AppJson<DemoUser>,
) -> Result<Response, ApiError> {
    if !state.config.demo_tokens {
        return Err(ApiError::not_found(
            "not_found",
            "demo sign-in is off on this server",
        ));
    }
    validate_user_id(&b.user, "user")?;
    let now = now_secs();
    let token = state.keys.sign(&Claims {
        sub: b.user.clone(),
        tenant: crate::DEMO_TENANT.into(),
        exp: now + 3600,
        iat: now,
    });
    Ok((
        StatusCode::OK,
        axum::Json(
            serde_json::json!({ "token": token, "user": b.user, "tenant": crate::DEMO_TENANT }),
        ),
    )
        .into_response())
}
