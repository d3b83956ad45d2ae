//! `GET /api/topics/{topic}/events` (the log over REST, the polling fallback)
//! and `GET /api/topics/{topic}` (the topic's retained state and head).

use axum::extract::{Path, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::access::{self, Caller};
use super::extract::QueryPairs;
use crate::error::ApiError;
use crate::state::AppState;

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1_000;

/// Events of one topic: after `after` if given, else the newest `limit`.
///
/// Answers `{"events": [...], "last_id", "head", "reset"}`; `reset` is true
/// when history no longer covers `after` (refetch the topic's state).
#[utoipa::path(
    get,
    path = "/api/topics/{topic}/events",
    operation_id = "topicEvents",
    tag = "topics"
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
    // The events are already JSON text: splice them in rather than re-encode.
    let mut body =
        String::with_capacity(page.events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 96);
    body.push_str("{\"events\":[");
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    body.push_str(&format!(
        "],\"last_id\":{last_id},\"head\":{},\"reset\":{reset}}}",
        page.head
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A topic's retained state (what a `snapshot` carries) and the tenant's head.
#[utoipa::path(
    get,
    path = "/api/topics/{topic}",
    operation_id = "topicState",
    tag = "topics"
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
    let retained = page.topics.first().and_then(|t| t.retained.as_ref());
    let retained = match retained {
        Some(r) => format!(
            "{{\"data\":{},\"as_of\":{},\"ts\":{}}}",
            r.data, r.seq, r.ts
        ),
        None => "null".into(),
    };
    let body = format!(
        "{{\"tenant\":{},\"topic\":{},\"head\":{},\"retained\":{retained}}}",
        serde_json::to_string(&tenant.slug).unwrap_or_default(),
        serde_json::to_string(&topic).unwrap_or_default(),
        page.head
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
