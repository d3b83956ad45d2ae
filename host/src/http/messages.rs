//! Messages: `POST /api/messages`, `GET /api/users/{id}/messages`,
//! `POST /api/users/{id}/messages/read`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{self, Caller};
use super::doc::{
    BadRequest, BodyTooLarge, Forbidden, HeadTooLarge, NotFound, PageParams, RequestTimeout,
    TenantParam, TooManyRequests, Unauthorized, Unavailable, UnsupportedMediaType, UserIdParam,
};
use super::extract::{stored_text, AppJson, QueryPairs};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Message, NewMessage};

/// Longest message body, in characters.
const MAX_BODY_CHARS: usize = 5_000;

/// The body of `POST /api/messages`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewMessage)]
pub struct PostMessage {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    from: String,
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    to: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    product_id: Option<String>,
    /// 1-5,000 characters, not only white space.
    #[schema(min_length = 1, max_length = 5000)]
    body: String,
    /// Only with the admin token; a client token names its tenant.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    tenant: Option<String>,
}

/// What `GET /api/users/{id}/messages` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageList {
    messages: Vec<Message>,
    #[schema(minimum = 0)]
    unread: u64,
    /// Pass as `after` to get the next page.
    last_id: i64,
}

/// What `POST /api/users/{id}/messages/read` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unread {
    #[schema(minimum = 0)]
    unread: u64,
}

/// Stores a message, shapes its notification and publishes it to `user:{to}`.
#[utoipa::path(
    post,
    path = "/api/messages",
    operation_id = "sendMessage",
    tag = "messages",
    summary = "Sends a message: stored, shaped by the notification-shaper plugin, and published to `user:{to}`.",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    request_body(
        content = PostMessage,
        example = json!({"tenant": "demo", "from": "alice", "to": "bob", "body": "Is the lamp still there?"})
    ),
    responses(
        (status = 201, description = "Stored.", body = Message),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(m): AppJson<PostMessage>,
) -> Result<Response, ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized(
            "sending a message needs the sender's token",
        ));
    }
    state.rate.check(caller.rate_key(), &state.metrics)?;
    let tenant = access::tenant(&state, &caller, m.tenant.as_deref(), "tenant").await?;
    access::validate_user_id(&m.from, "from")?;
    access::validate_user_id(&m.to, "to")?;
    access::may_act_as(&m.from, &caller)?;
    if let Some(p) = &m.product_id {
        access::validate_user_id(p, "product_id")?;
    }
    stored_text(&m.body, "body")?;
    let chars = m.body.chars().count();
    if chars == 0 || chars > MAX_BODY_CHARS || m.body.trim().is_empty() {
        return Err(ApiError::invalid(
            "invalid_body",
            format!("`body` must be 1-{MAX_BODY_CHARS} characters of text"),
        ));
    }
    let msg = NewMessage {
        tenant: tenant.slug.clone(),
        from: m.from,
        to: m.to,
        product_id: m.product_id,
        body: m.body,
    };
    let plugins = state.plugins.clone();
    let (msg, notes) = tokio::task::spawn_blocking(move || {
        let notes = plugins.shape(&msg);
        (msg, notes)
    })
    .await
    .map_err(|e| ApiError::internal(format!("shaper task failed: {e}")))?;
    let (stored, _unread, _events) = state.backend.store.post_message(&msg, &notes).await?;
    state.metrics.messages_posted.inc();
    Ok((StatusCode::CREATED, axum::Json(stored)).into_response())
}

/// A user's messages (sent and received) after `after`, and their unread count.
#[utoipa::path(
    get,
    path = "/api/users/{id}/messages",
    operation_id = "listMessages",
    tag = "messages",
    summary = "A user's messages (sent and received) after `after`, and their unread count.",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(UserIdParam, TenantParam, PageParams),
    responses(
        (status = 200, description = "A page.", body = MessageList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Path(user): Path<String>,
    caller: Caller,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    access::validate_user_id(&user, "id")?;
    access::may_act_as(&user, &caller)?;
    let tenant = access::tenant(&state, &caller, q.get("tenant"), "tenant").await?;
    let after = q.seq("after")?.unwrap_or(0) as i64;
    let limit = q.number("limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(
            "invalid_query",
            "query parameter `limit` must be between 1 and 1000",
        ));
    }
    let store = &state.backend.store;
    let messages = store
        .messages(&tenant.slug, &user, after, limit as usize)
        .await?;
    let unread = store.unread(&tenant.slug, &user).await?;
    let last_id = messages.last().map(|m| m.id).unwrap_or(after);
    Ok(axum::Json(MessageList {
        messages,
        unread,
        last_id,
    })
    .into_response())
}

/// The body of `POST /api/users/{id}/messages/read`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// A message id: every message to the user up to it is read.
    #[schema(minimum = 0)]
    up_to: i64,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    tenant: Option<String>,
}

/// Marks messages read up to `up_to`; publishes the new unread count.
#[utoipa::path(
    post,
    path = "/api/users/{id}/messages/read",
    operation_id = "markRead",
    tag = "messages",
    summary = "Marks the user's messages read up to `up_to` and publishes the new unread count.",
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(UserIdParam),
    request_body(content = MarkRead, example = json!({"tenant": "demo", "up_to": 1})),
    responses(
        (status = 200, description = "The unread count.", body = Unread),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn mark_read(
    State(state): State<AppState>,
    Path(user): Path<String>,
    caller: Caller,
    AppJson(body): AppJson<MarkRead>,
) -> Result<Response, ApiError> {
    access::validate_user_id(&user, "id")?;
    access::may_act_as(&user, &caller)?;
    state.rate.check(caller.rate_key(), &state.metrics)?;
    let tenant = access::tenant(&state, &caller, body.tenant.as_deref(), "tenant").await?;
    if body.up_to < 0 {
        return Err(ApiError::invalid(
            "invalid_up_to",
            "`up_to` must be a message id",
        ));
    }
    let (unread, _events) = state
        .backend
        .store
        .mark_read(&tenant.slug, &user, body.up_to)
        .await?;
    Ok(axum::Json(Unread { unread }).into_response())
}
