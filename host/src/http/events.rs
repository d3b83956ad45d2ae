//! `POST /api/events`: the generic producer endpoint, for the admin token and
//! publisher tokens (`switchyard token --service`), which may publish only
//! to the topics their patterns match, in their own tenant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{self, Caller};
use super::extract::AppJson;
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
    caller: Caller,
    AppJson(body): AppJson<PublishBody>,
) -> Result<Response, ApiError> {
    may_publish(&state, &caller)?;
    let tenant = access::tenant(&state, &caller, Some(&body.tenant), "tenant").await?;
    let kind = classify_topic(&body.topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`topic`: {e}")))?;
    may_publish_to(&caller, &body.topic)?;
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

/// Publishing needs the admin token or a publisher token.
fn may_publish(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin | Caller::Service(_) => Ok(()),
        Caller::User(_) => Err(ApiError::forbidden(
            "publishing needs the admin token or a publisher token (switchyard token --service), not a user's",
        )),
        Caller::Anonymous if state.config.admin_token.is_none() => Err(ApiError::unauthorized(
            "publishing needs a publisher token (switchyard token --service) in Authorization: Bearer",
        )),
        Caller::Anonymous => Err(ApiError::unauthorized(
            "publishing needs the admin token or a publisher token in Authorization: Bearer",
        )),
    }
}

/// A publisher token publishes only to topics its patterns match.
fn may_publish_to(caller: &Caller, topic: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Service(s) if !crate::auth::publish::allows(&s.publish, topic) => {
            let shown: String = topic.chars().take(80).collect();
            Err(ApiError::forbidden(format!(
                "this publisher token may publish only to topics matching {}, not {shown:?}",
                s.publish.join(", ")
            )))
        }
        _ => Ok(()),
    }
}
