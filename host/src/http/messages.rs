//! Messages: `POST /api/messages`, `GET /api/users/{id}/messages`,
//! `POST /api/users/{id}/messages/read`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{self, Caller};
use super::extract::{stored_text, AppJson, QueryPairs};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::NewMessage;

/// Longest message body, in characters.
const MAX_BODY_CHARS: usize = 5_000;

/// The body of `POST /api/messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    from: String,
    to: String,
    #[serde(default)]
    product_id: Option<String>,
    body: String,
    /// Only for the admin token; a client token names its tenant.
    #[serde(default)]
    tenant: Option<String>,
}

/// Stores a message, shapes its notification and publishes it to `user:{to}`.
#[utoipa::path(
    post,
    path = "/api/messages",
    operation_id = "sendMessage",
    tag = "messages"
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
    tag = "messages"
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
    Ok(axum::Json(serde_json::json!({
        "messages": messages,
        "unread": unread,
        "last_id": last_id,
    }))
    .into_response())
}

/// The body of `POST /api/users/{id}/messages/read`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    up_to: i64,
    #[serde(default)]
    tenant: Option<String>,
}

/// Marks messages read up to `up_to`; publishes the new unread count.
#[utoipa::path(
    post,
    path = "/api/users/{id}/messages/read",
    operation_id = "markRead",
    tag = "messages"
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
    Ok(axum::Json(serde_json::json!({ "unread": unread })).into_response())
}
