//! The demo web app (static files compiled into the binary), the browser
//! client (`clients/js/switchyard.js`, the npm package's module, compiled in
//! from there) and demo sign-in.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::validate_user_id;
use super::doc::{
    BadRequest, BodyTooLarge, HeadTooLarge, NotFound, RequestTimeout, UnsupportedMediaType,
};
use super::extract::AppJson;
use crate::auth::{now_secs, Claims};
use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = include_str!("../../static/index.html");
const APP: &str = include_str!("../../static/app.js");
const CLIENT: &str = include_str!("../../../clients/js/switchyard.js");
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
#[utoipa::path(
    get,
    path = "/",
    operation_id = "demoApp",
    tag = "web",
    summary = "The demo app.",
    security(),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/html"),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /app.js`.
#[utoipa::path(
    get,
    path = "/app.js",
    operation_id = "demoScript",
    tag = "web",
    summary = "The demo app's script.",
    security(),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/javascript"),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn app() -> Response {
    file(APP, "text/javascript; charset=utf-8")
}

/// `GET /switchyard.js`: the reusable client module.
#[utoipa::path(
    get,
    path = "/switchyard.js",
    operation_id = "browserClient",
    tag = "web",
    summary = "The browser client (ES module, `clients/js`).",
    security(),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/javascript"),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn client() -> Response {
    file(CLIENT, "text/javascript; charset=utf-8")
}

/// `GET /style.css`.
#[utoipa::path(
    get,
    path = "/style.css",
    operation_id = "demoStyle",
    tag = "web",
    summary = "The demo app's style sheet.",
    security(),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/css"),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

/// The body of `POST /api/demo/token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoUser {
    /// The demo user's id.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9._@-]+$",
        example = "alice"
    )]
    user: String,
    /// Lifetime in seconds, 1 to 3600 (default 3600): short-lived tokens
    /// show the client renewing them.
    #[schema(minimum = 1, maximum = 3600, default = 3600)]
    ttl_secs: Option<u64>,
}

/// What `POST /api/demo/token` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoToken {
    /// A client token (JWT) for `Authorization: Bearer`.
    token: String,
    /// The user it is for.
    user: String,
    /// Always `demo`.
    tenant: &'static str,
}

/// Mints a token (one hour unless asked for less) for a demo user of the
/// `demo` tenant. Only when demo sign-in is on (by default in embedded mode
/// only).
#[utoipa::path(
    post,
    path = "/api/demo/token",
    operation_id = "demoToken",
    tag = "web",
    summary = "Demo sign-in: a client token for a user of the `demo` tenant.",
    description = "Only when demo sign-in is on (`SWITCHYARD_DEMO_TOKENS=true`; off by default); otherwise 404.",
    security(),
    request_body = DemoUser,
    responses(
        (status = 200, description = "The token.", body = DemoToken),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
    )
)]
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
    let ttl = b.ttl_secs.unwrap_or(3600);
    if !(1..=3600).contains(&ttl) {
        return Err(ApiError::invalid(
            "invalid_ttl_secs",
            "`ttl_secs` must be between 1 and 3600",
        ));
    }
    let now = now_secs();
    let token = state.keys.sign(&Claims {
        sub: b.user.clone(),
        tenant: crate::DEMO_TENANT.into(),
        exp: now + ttl,
        iat: now,
    });
    Ok((
        StatusCode::OK,
        axum::Json(DemoToken {
            token,
            user: b.user,
            tenant: crate::DEMO_TENANT,
        }),
    )
        .into_response())
}
