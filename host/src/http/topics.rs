//! `GET /api/topics/{topic}/events` (the log over REST, the polling fallback)
//! and `GET /api/topics/{topic}` (the topic's retained state and head).

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::access::{self, Caller};
use super::doc::{
    BadRequest, Forbidden, HeadTooLarge, NotFound, PageParams, TenantParam, TopicParam,
    Unauthorized, Unavailable,
};
use super::extract::QueryPairs;
use crate::error::ApiError;
use crate::event::{EventJson, Seq};
use crate::state::AppState;

/// What `GET /api/topics/{topic}/events` answers: a page of the log.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicEvents<'a> {
    /// The events, in id order. Each is already JSON text (as stored):
    /// spliced in, not re-encoded.
    #[schema(value_type = Vec<EventJson>)]
    events: Vec<&'a RawValue>,
    /// Pass as `after` to get the next page.
    #[schema(value_type = u64, minimum = 0)]
    last_id: Seq,
    /// The tenant's newest event id.
    #[schema(value_type = u64, minimum = 0)]
    head: Seq,
    /// History no longer covers `after`: refetch the topic's state.
    reset: bool,
}

/// What `GET /api/topics/{topic}` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicState<'a> {
    tenant: &'a str,
    topic: &'a str,
    #[schema(value_type = u64, minimum = 0)]
    head: Seq,
    /// The topic's retained data, if any (`null` when none).
    #[schema(required = true)]
    retained: Option<RetainedState<'a>>,
}

/// A topic's retained data (what a `snapshot` carries).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainedState<'a> {
    #[schema(value_type = serde_json::Value)]
    data: &'a RawValue,
    /// An event id: ordered within the tenant, usable as `Last-Event-ID` on
    /// any node.
    #[schema(value_type = u64, minimum = 0)]
    as_of: Seq,
    /// Milliseconds since the Unix epoch.
    ts: i64,
}

/// Stored JSON text as a value to splice in (checked, not re-encoded). The
/// store holds only text it rendered as JSON; anything else is a fault of
/// the store, answered as one rather than sent broken.
fn stored_json(text: &str) -> Result<&RawValue, ApiError> {
    serde_json::from_str::<&RawValue>(text).map_err(ApiError::internal)
}

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1_000;

/// Events of one topic: after `after` if given, else the newest `limit`.
#[utoipa::path(
    get,
    path = "/api/topics/{topic}/events",
    operation_id = "topicEvents",
    tag = "topics",
    summary = "A topic's events over REST (the polling fallback): after `after`, else the newest `limit`.",
    description = "`reset` is true when history no longer covers `after`: refetch the topic's state.",
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(TopicParam, TenantParam, PageParams),
    responses(
        (status = 200, description = "A page.", body = TopicEvents),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let tenant = access::tenant(&state, &caller, q.get("tenant"), "tenant").await?;
    access::may_read(&topic, &tenant.slug, &caller)?;
    access::authorize(
        &state,
        &caller,
        &parts,
        &tenant.slug,
        std::slice::from_ref(&topic),
        &q,
    )?;
    let limit = q.number("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("query parameter `limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let after = q.seq("after")?;
    let store = &state.backend.store;
    let page = match after {
        Some(after) => {
            store
                .read(
                    &tenant.slug,
                    std::slice::from_ref(&topic),
                    Some(after),
                    limit as usize,
                )
                .await?
        }
        None => store.latest(&tenant.slug, &topic, limit as usize).await?,
    };
    let reset = after.is_some_and(|a| a > page.head || page.topics.iter().any(|t| t.trimmed > a));
    let last_id = page
        .events
        .last()
        .map(|e| e.seq)
        .or(after)
        .unwrap_or(page.head);
    let events = page
        .events
        .iter()
        .map(|e| stored_json(&e.json))
        .collect::<Result<_, _>>()?;
    Ok(Json(TopicEvents {
        events,
        last_id,
        head: page.head,
        reset,
    })
    .into_response())
}

/// A topic's retained state (what a `snapshot` carries) and the tenant's head.
#[utoipa::path(
    get,
    path = "/api/topics/{topic}",
    operation_id = "topicState",
    tag = "topics",
    summary = "A topic's retained state (what a `snapshot` carries) and the tenant's head.",
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(TopicParam, TenantParam),
    responses(
        (status = 200, description = "The state.", body = TopicState),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn state(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let tenant = access::tenant(&state, &caller, q.get("tenant"), "tenant").await?;
    access::may_read(&topic, &tenant.slug, &caller)?;
    access::authorize(
        &state,
        &caller,
        &parts,
        &tenant.slug,
        std::slice::from_ref(&topic),
        &q,
    )?;
    let page = state
        .backend
        .store
        .read(&tenant.slug, std::slice::from_ref(&topic), None, 0)
        .await?;
    let retained = match page.topics.first().and_then(|t| t.retained.as_ref()) {
        Some(r) => Some(RetainedState {
            data: stored_json(&r.data)?,
            as_of: r.seq,
            ts: r.ts,
        }),
        None => None,
    };
    Ok(Json(TopicState {
        tenant: &tenant.slug,
        topic: &topic,
        head: page.head,
        retained,
    })
    .into_response())
}
