//! `POST /api/events`: the generic producer endpoint (admin/service token).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access;
use super::extract::{Admin, AppJson};
use crate::error::ApiError;
use crate::event::{classify_topic, validate_kind, NewEvent, TopicKind};
use crate::state::AppState;

/// The request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    tenant: String,
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    #[serde(default)]
    retain: bool,
}

/// Appends one event and answers `201 {"id", "topic", "ts"}` once it is durable.
pub async fn publish(
    State(state): State<AppState>,
    _admin: Admin,
    AppJson(body): AppJson<PublishBody>,
) -> Result<Response, ApiError> {
    let tenant =
        access::tenant(&state, &access::Caller::Admin, Some(&body.tenant), "tenant").await?;
    let kind = classify_topic(&body.topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`topic`: {e}")))?;
    if kind == TopicKind::Tenant && body.topic["tenant:".len()..] != tenant.slug {
        return Err(ApiError::invalid(
            "invalid_topic",
            format!(
                "`topic`: {:?} names another tenant than `tenant`",
                body.topic
            ),
        ));
    }
    validate_kind(&body.kind)
        .map_err(|e| ApiError::invalid("invalid_type", format!("`type`: {e}")))?;
    let event = NewEvent {
        tenant: tenant.slug,
        topic: body.topic,
        kind: body.kind,
        // Compact form: no raw newline can reach an SSE `data:` line.
        data: body.data.to_string(),
        retain: body.retain,
    };
    let stored = state.publisher.publish(vec![event]).await?;
    let e = stored
        .first()
        .ok_or_else(|| ApiError::internal("append returned no event"))?;
    let body =
        serde_json::json!({ "id": e.seq, "tenant": &*e.tenant, "topic": e.topic, "ts": e.ts });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
