//! `POST /api/events` and `POST /api/events/batch`: the generic producer
//! endpoints (with `Idempotency-Key` for safe retries), for the admin token and
//! publisher tokens (`switchyard token --service`), which may publish only
//! to the topics their patterns match, in their own tenant.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{self, Caller};
use super::doc::{
    BadRequest, BodyTooLarge, Conflict, Forbidden, HeadTooLarge, IdempotencyKeyParam, NotFound,
    Replayed, RequestTimeout, Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::extract::AppJson;
use crate::error::ApiError;
use crate::event::{classify_topic, validate_kind, NewEvent, Seq, TopicKind};
use crate::state::AppState;
use crate::store::{Keyed, PublishKey};

/// Most events in one batch.
const MAX_BATCH: usize = 1000;
/// Longest `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The request body of `POST /api/events` (and each of a batch's events).
// Its serialized form is what a request's idempotency hash covers.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewEvent)]
pub struct PublishBody {
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    tenant: String,
    /// `global`, or `kind:id`: a kind of 1-32 of `a-z`, `0-9`, `_` and `-`
    /// starting with a letter, and an id of 1-128 letters, digits, `-`, `_`,
    /// `.` and `@`. `tenant:{slug}` must name the request's tenant;
    /// `user:{id}` is private to that user. A topic's presence
    /// (`{topic}~occupancy`, `{topic}~members`) is written by the server
    /// only: 403 `presence_topic`.
    #[schema(
        pattern = r"^(global|[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128})$",
        examples("global", "product:p_1", "status:api")
    )]
    topic: String,
    /// Letters, digits, `.`, `_`, `-` and `:`; `snapshot`, `reset` and
    /// `shutdown` are the server's own.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._:-]+$",
        examples("price.changed")
    )]
    kind: String,
    /// Any JSON value; subscribers get it as the event's `data`.
    data: serde_json::Value,
    /// Keep `data` as the topic's retained state: the `snapshot` a new
    /// subscriber gets first.
    #[serde(default)]
    #[schema(default = false)]
    retain: bool,
}

/// The request body of `POST /api/events/batch`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewBatch)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<PublishBody>,
}

/// What `POST /api/events` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Published<'a> {
    /// An event id: ordered within the tenant, usable as `Last-Event-ID` on
    /// any node.
    #[schema(value_type = u64, minimum = 0)]
    id: Seq,
    tenant: &'a str,
    topic: &'a str,
    /// Milliseconds since the Unix epoch.
    ts: i64,
}

/// What `POST /api/events/batch` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedBatch {
    /// The events' ids in the order given.
    #[schema(value_type = Vec<u64>)]
    ids: Vec<Seq>,
}

/// Appends one event and answers `201 {"id", "tenant", "topic", "ts"}` once
/// it is durable. With an `Idempotency-Key`, a retry of the same request
/// answers the same, stores nothing, and says `idempotent-replayed: true`;
/// the key with another request is a 409.
#[utoipa::path(
    post,
    path = "/api/events",
    operation_id = "publish",
    tag = "events",
    summary = "Publishes one event.",
    description = "Answers once the event is durable. The admin token publishes to any tenant; a publisher token to the topics its patterns match in its own tenant.",
    security(("adminToken" = []), ("publisherToken" = [])),
    params(IdempotencyKeyParam),
    request_body(
        content = PublishBody,
        example = json!({"tenant": "demo", "topic": "status:api", "type": "status.changed", "data": {"up": true}, "retain": true})
    ),
    responses(
        (status = 201, description = "Stored.", body = Published, headers(
            ("idempotent-replayed" = inline(Replayed), description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.")
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<PublishBody>,
) -> Result<Response, ApiError> {
    may_publish(&state, &caller)?;
    let key = idempotency_key(&headers)?;
    let event = checked(&state, &caller, &body, "").await?;
    let answer = |id: Seq, ts: i64| Published {
        id,
        tenant: &event.tenant,
        topic: &event.topic,
        ts,
    };
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
    tag = "events",
    summary = "Publishes 1-1,000 events in one transaction: all or none.",
    description = "The ids come back in the order given (a tenant's ids are consecutive). Access and `Idempotency-Key` as for one event.",
    security(("adminToken" = []), ("publisherToken" = [])),
    params(IdempotencyKeyParam),
    request_body(
        content = BatchBody,
        example = json!({"events": [
            {"tenant": "demo", "topic": "status:api", "type": "status.changed", "data": {"up": false}},
            {"tenant": "demo", "topic": "status:db", "type": "status.changed", "data": {"up": true}}
        ]})
    ),
    responses(
        (status = 201, description = "Stored.", body = PublishedBatch, headers(
            ("idempotent-replayed" = inline(Replayed), description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.")
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
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
    let answer = |ids: Vec<Seq>| PublishedBatch { ids };
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
fn replayed(body: impl Serialize) -> Response {
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
