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

/// Most members one page of `/members` holds.
const MAX_MEMBERS_PAGE: u64 = 1_000;

/// What `GET /api/topics/{topic}/members` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MembersPage {
    /// The tenant.
    pub tenant: String,
    /// The topic (a base topic, never a derived one).
    pub topic: String,
    /// The topic's counts: the last `occupancy` event of `{topic}~occupancy`
    /// (zero before any).
    pub occupancy: crate::presence::Counts,
    /// The id of that event, if any.
    pub occupancy_as_of: Option<u64>,
    /// Members with a user id above `after`, by user id, at most `limit`:
    /// the member set of `{topic}~members` as of `members_as_of`.
    pub members: Vec<MemberOut>,
    /// Past the topic's cap of members: the set is given up (counts only).
    pub truncated: bool,
    /// The id of the last event folded into the set, if any.
    pub members_as_of: Option<u64>,
    /// The `after` of the next page, while there is one.
    pub next_after: Option<String>,
}

/// One member.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemberOut {
    /// The user id.
    pub user: String,
    /// The configured claims of the user's verified token.
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// A topic's current members (paginated by user id) and counts: what its
/// presence topics say as of their last events.
#[utoipa::path(
    get,
    path = "/api/topics/{topic}/members",
    operation_id = "topicMembers",
    tag = "topics",
    summary = "A topic's current members and counts.",
    description = "The member set of `{topic}~members` (by user id, after `after`, at most `limit`) and the counts of `{topic}~occupancy`, read with the same rules as the topic itself. `user:` and presence topics have no members (`400 invalid_topic`).",
    params(
        ("topic" = String, Path, description = "The topic: `global` or `kind:id`, not a `user:` one."),
        ("tenant" = Option<String>, Query, description = "The tenant's slug (a client or publisher token names its own)."),
        ("after" = Option<String>, Query, description = "Members with a user id above this one."),
        ("limit" = Option<u64>, Query, description = "Most members answered, 1 to 1000 (default 100)."),
    ),
    security((), ("adminToken" = []), ("clientToken" = []), ("publisherToken" = []), ("tokenCookie" = []), ("tokenQuery" = [])),
    responses(
        (status = 200, description = "The members and counts.", body = MembersPage),
        (status = 400, response = super::doc::BadRequest),
        (status = 401, response = super::doc::Unauthorized),
        (status = 403, response = super::doc::Forbidden),
        (status = 404, response = super::doc::NotFound),
        (status = 431, response = super::doc::HeadTooLarge),
        (status = 503, response = super::doc::Unavailable),
    )
)]
pub async fn members(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<axum::Json<MembersPage>, ApiError> {
    use crate::event::{Derived, TopicKind};
    let tenant = access::tenant(&state, &caller, q.get("tenant"), "tenant").await?;
    let kind = access::may_read(&topic, &tenant.slug, &caller)?;
    if matches!(kind, TopicKind::User | TopicKind::Derived) {
        return Err(ApiError::invalid(
            "invalid_topic",
            format!("topic {topic:?} has no presence"),
        ));
    }
    access::authorize(
        &state,
        &caller,
        &parts,
        &tenant.slug,
        std::slice::from_ref(&topic),
        &q,
    )?;
    let limit = q.number("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_MEMBERS_PAGE {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("query parameter `limit` must be between 1 and {MAX_MEMBERS_PAGE}"),
        ));
    }
    let after = q.get("after").unwrap_or("");
    let occupancy = Derived::Occupancy.of(&topic);
    let members = Derived::Members.of(&topic);
    let page = state
        .backend
        .store
        .read(&tenant.slug, &[occupancy.clone(), members.clone()], None, 0)
        .await?;
    let retained = |name: &str| {
        page.topics
            .iter()
            .find(|t| t.topic == name)
            .and_then(|t| t.retained.as_ref())
    };
    let counts = retained(&occupancy);
    let set = retained(&members);
    let folded: crate::event::MemberSet = set
        .and_then(|r| serde_json::from_str(&r.data).ok())
        .unwrap_or_default();
    let mut list: Vec<MemberOut> = folded
        .members
        .into_iter()
        .filter(|m| m.user.as_str() > after)
        .map(|m| MemberOut {
            user: m.user,
            claims: m.claims,
        })
        .collect();
    list.sort_by(|a, b| a.user.cmp(&b.user));
    let more = list.len() > limit as usize;
    list.truncate(limit as usize);
    let next_after = more.then(|| list.last().map(|m| m.user.clone())).flatten();
    Ok(axum::Json(MembersPage {
        tenant: tenant.slug.to_string(),
        topic,
        occupancy: counts
            .and_then(|r| serde_json::from_str(&r.data).ok())
            .unwrap_or_default(),
        occupancy_as_of: counts.map(|r| r.seq),
        members: list,
        truncated: folded.truncated,
        members_as_of: set.map(|r| r.seq),
        next_after,
    }))
}
