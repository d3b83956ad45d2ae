//! `POST /api/events` and `POST /api/events/batch`: the generic producer
//! endpoints (with `Idempotency-Key` for safe retries), for the admin token and
//! publisher tokens (`switchyard token --service`), which may publish only
//! to the topics their patterns match, in their own tenant.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::{self, Caller};
use super::extract::AppJson;
use crate::error::ApiError;
use crate::event::{classify_topic, validate_kind, NewEvent, TopicKind};
use crate::state::AppState;
use crate::store::{Keyed, PublishKey};

/// Most events in one batch.
const MAX_BATCH: usize = 1000;
/// Longest `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The request body of `POST /api/events` (and each of a batch's events).
#[derive(Deserialize, Serialize)]
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

/// The request body of `POST /api/events/batch`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    events: Vec<PublishBody>,
}

/// Appends one event and answers `201 {"id", "tenant", "topic", "ts"}` once
/// it is durable. With an `Idempotency-Key`, a retry of the same request
/// answers the same, stores nothing, and says `idempotent-replayed: true`;
/// the key with another request is a 409.
#[utoipa::path(post, path = "/api/events", operation_id = "publish", tag = "events")]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<PublishBody>,
) -> Result<Response, ApiError> {
    may_publish(&state, &caller)?;
    let key = idempotency_key(&headers)?;
    let event = checked(&state, &caller, &body, "").await?;
    let answer = |id: u64, ts: i64| serde_json::json!({ "id": id, "tenant": &event.tenant, "topic": &event.topic, "ts": ts });
    let Some(key) = key else {
        let stored = state.publisher.publish(vec![event.clone()]).await?;
        let e = stored
            .first()
            .ok_or_else(|| ApiError::internal("append returned no event"))?;
        return Ok((StatusCode::CREATED, axum::Json(answer(e.seq, e.ts))).into_response());
    };
    let key = PublishKey {
        tenant: event.tenant.clone(),
        key,
        hash: request_hash("event", &body),
        since_ms: crate::event::now_ms() - state.config.idempotency_window.as_millis() as i64,
    };
    match state
        .publisher
        .publish_keyed(key, vec![event.clone()])
        .await?
    {
        Keyed::New(stored) => {
            let e = stored
                .first()
                .ok_or_else(|| ApiError::internal("append returned no event"))?;
            Ok((StatusCode::CREATED, axum::Json(answer(e.seq, e.ts))).into_response())
        }
        Keyed::Repeated(ids, ts) => {
            let id = *ids
                .first()
                .ok_or_else(|| ApiError::internal("a stored idempotency key has no id"))?;
            Ok(replayed(answer(id, ts)))
        }
    }
}

/// Appends every event of the batch in one transaction, or none, and
/// answers `201 {"ids": [...]}` in the order given (a tenant's ids are
/// consecutive). `Idempotency-Key` as for one event.
#[utoipa::path(
    post,
    path = "/api/events/batch",
    operation_id = "publishBatch",
    tag = "events"
)]
pub async fn publish_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<BatchBody>,
) -> Result<Response, ApiError> {
    may_publish(&state, &caller)?;
    let key = idempotency_key(&headers)?;
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "invalid_batch",
            format!("`events` must hold 1 to {MAX_BATCH} events"),
        ));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for (i, e) in body.events.iter().enumerate() {
        events.push(checked(&state, &caller, e, &format!("events[{i}].")).await?);
    }
    let answer = |ids: Vec<u64>| serde_json::json!({ "ids": ids });
    let Some(key) = key else {
        let stored = state.publisher.publish(events).await?;
        let ids = stored.iter().map(|e| e.seq).collect();
        return Ok((StatusCode::CREATED, axum::Json(answer(ids))).into_response());
    };
    let key = PublishKey {
        tenant: events[0].tenant.clone(),
        key,
        hash: request_hash("batch", &body),
        since_ms: crate::event::now_ms() - state.config.idempotency_window.as_millis() as i64,
    };
    match state.publisher.publish_keyed(key, events).await? {
        Keyed::New(stored) => {
            let ids = stored.iter().map(|e| e.seq).collect();
            Ok((StatusCode::CREATED, axum::Json(answer(ids))).into_response())
        }
        Keyed::Repeated(ids, _) => Ok(replayed(answer(ids))),
    }
}

/// The answer to a retried request: the first answer again, marked.
fn replayed(body: serde_json::Value) -> Response {
    let mut res = (StatusCode::CREATED, axum::Json(body)).into_response();
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

/// The `Idempotency-Key` header, if any: 1-255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or("").trim();
    let ok =
        !key.is_empty() && key.len() <= MAX_KEY_LEN && key.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(ApiError::invalid(
            "invalid_idempotency_key",
            format!("`Idempotency-Key` must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// A hash of the request, so a retry is told from another request under
/// the same key. `data` is compared as JSON values, not as bytes.
fn request_hash(kind: &str, body: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One event checked for `caller`: the tenant, the topic (and the
/// publisher's patterns), the type. `at` prefixes the field names in errors.
async fn checked(
    state: &AppState,
    caller: &Caller,
    body: &PublishBody,
    at: &str,
) -> Result<NewEvent, ApiError> {
    let tenant = access::tenant(state, caller, Some(&body.tenant), &format!("{at}tenant")).await?;
    let kind = classify_topic(&body.topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`{at}topic`: {e}")))?;
    if kind == TopicKind::Derived {
        // Whatever the token: only the server writes a topic's presence.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "presence_topic",
            format!(
                "`{at}topic`: {:?} is a topic's presence, written by the server only",
                body.topic
            ),
        ));
    }
    may_publish_to(caller, &body.topic)?;
    if kind == TopicKind::Tenant && body.topic["tenant:".len()..] != tenant.slug {
        return Err(ApiError::invalid(
            "invalid_topic",
            format!(
                "`{at}topic`: {:?} names another tenant than `{at}tenant`",
                body.topic
            ),
        ));
    }
    validate_kind(&body.kind)
        .map_err(|e| ApiError::invalid("invalid_type", format!("`{at}type`: {e}")))?;
    Ok(NewEvent {
        tenant: tenant.slug,
        topic: body.topic.clone(),
        kind: body.kind.clone(),
        // Compact form: no raw newline can reach an SSE `data:` line.
        data: body.data.to_string(),
        retain: body.retain,
    })
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
