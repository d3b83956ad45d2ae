//! The audit log: every admin action recorded with who, when and what
//! (`record`, called by the handlers after the action), and
//! `GET /admin/audit` to read it, newest first.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::doc::{BadRequest, Forbidden, HeadTooLarge, Unauthorized, Unavailable};
use super::extract::{AdminRead, QueryPairs};
use crate::error::ApiError;
use crate::plugins::Slot;
use crate::state::AppState;
use crate::store::admin::{AuditEntry, NewAudit};

/// Longest message an upload may carry, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The header an upload's message may come in (instead of `?message=`).
pub const MESSAGE_HEADER: &str = "x-switchyard-message";

/// Records an admin action that was taken. A failure to record is logged
/// (never with a token or a body) and does not undo the action, which has
/// happened; the node keeps serving.
pub async fn record(
    state: &AppState,
    actor: &str,
    action: &str,
    tenant: Option<&str>,
    slot: Option<Slot>,
    hash: Option<String>,
    message: Option<String>,
) {
    let entry = NewAudit {
        actor: actor.to_string(),
        action: action.to_string(),
        tenant: tenant.filter(|t| !t.is_empty()).map(str::to_string),
        slot: slot.map(|s| s.as_str().to_string()),
        hash,
        message,
    };
    if let Err(e) = state.backend.admin.audit(entry).await {
        state.metrics.audit_errors.inc();
        tracing::error!(action, error = %e, "cannot record an admin action in the audit log");
    }
}

/// An upload's message: `?message=` or the `X-Switchyard-Message` header
/// (the query wins), at most 500 characters, no control characters.
pub fn message(q: &QueryPairs, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let given = match q.get("message") {
        Some(m) => Some(m.to_string()),
        None => match headers.get(MESSAGE_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| {
                        ApiError::invalid(
                            "invalid_message",
                            "the X-Switchyard-Message header must be visible ASCII; send other text as ?message=",
                        )
                    })?
                    .to_string(),
            ),
        },
    };
    let Some(m) = given
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
    else {
        return Ok(None);
    };
    if m.chars().count() > MAX_MESSAGE_CHARS || m.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_message",
            format!("`message` must be at most {MAX_MESSAGE_CHARS} characters without control characters"),
        ));
    }
    Ok(Some(m))
}

/// The message of an upload, with its mode (`active` or `shadow`).
pub fn with_mode(message: Option<String>, mode: &str) -> Option<String> {
    Some(match message {
        Some(m) => format!("{mode}: {m}"),
        None => mode.to_string(),
    })
}

/// The query of `GET /admin/audit`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `list`; this declares it.
pub struct AuditParams {
    /// Only this tenant's actions.
    #[param(
        required = false,
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$"
    )]
    tenant: String,
    /// Actions recorded before this one (the `next` of the page before).
    #[param(required = false, minimum = 1)]
    before: i64,
    /// At most this many (1 to 500, default 100).
    #[param(required = false, minimum = 1, maximum = 500, default = 100)]
    limit: u64,
}

/// What `GET /admin/audit` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// Newest first.
    entries: Vec<AuditEntry>,
    /// The `before` of the next page; `null`: this is the last.
    #[schema(required = true)]
    next: Option<i64>,
}

/// `GET /admin/audit`: recorded admin actions, newest first.
#[utoipa::path(
    get,
    path = "/admin/audit",
    operation_id = "listAudit",
    tag = "admin",
    summary = "The audit log: every admin action with who, when and what, newest first.",
    description = "In cluster mode one log for every node. Paginated by `before` (the `next` of the page before).",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of the log.", body = AuditPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _reader: AdminRead,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let tenant = match q.get("tenant").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => {
            crate::event::validate_slug(t)
                .map_err(|e| ApiError::invalid("invalid_tenant", format!("`tenant`: {e}")))?;
            Some(t)
        }
    };
    let before = match q.number("before")? {
        None => None,
        Some(b) => Some(i64::try_from(b).map_err(|_| {
            ApiError::invalid("invalid_query", "query parameter `before` is too large")
        })?),
    };
    let limit = match q.number("limit")? {
        None => 100,
        Some(n @ 1..=500) => n as usize,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_query",
                "query parameter `limit` must be 1 to 500",
            ))
        }
    };
    let entries = state.backend.admin.audit_log(tenant, before, limit).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(axum::Json(AuditPage { entries, next }).into_response())
}
