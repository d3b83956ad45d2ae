//! SSE endpoints: `GET /events?tenant=…&topic=…`, `GET /events/tenants/{slug}`,
//! `GET /events/users/{id}` and `GET /events/products/{id}`.
//!
//! Query parameters the host owns: `tenant`, `topic` (repeatable), `events`
//! (comma-separated types to keep), `lastEventId` (the `Last-Event-ID` header
//! wins over it), `snapshot` (repeatable: topics of the stream whose snapshot
//! is sent even on a resume), `frames` (`message`: event frames without their
//! `event:` line, so `EventSource`'s `onmessage` gets every type), `token`.
//! Anything else is a subscription parameter for plugins.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Required, ResponseBuilder};
use utoipa::IntoParams;

use super::access::{self, Caller};
use super::doc::{
    topic_schema, BadRequest, Forbidden, HeadTooLarge, NotFound, TenantParam, TooManyRequests,
    Unauthorized, Unavailable, UserIdParam,
};
use super::extract::QueryPairs;
use crate::auth::now_secs;
use crate::error::ApiError;
use crate::event::TopicKind;
use crate::event::{validate_kind_filter, FrameForm, Seq};
use crate::sse::caps::{Holder, Refusal};
use crate::sse::session::{Session, StreamRequest, StreamSlot};
use crate::state::AppState;

/// Most topics one stream may subscribe to.
const MAX_TOPICS: usize = 32;
/// Most event types a stream's `events=` may name: each frame is matched
/// against the list, so it is bounded like the topics.
const MAX_TYPES: usize = 32;

/// What every stream's description says.
macro_rules! stream_description {
    () => {
        "A Server-Sent Events stream (`text/event-stream`) that stays open: first a `retry:` hint, \
         then a `snapshot` event per topic with retained state, then the replay after \
         `Last-Event-ID`, then live events; every event has `id:` and `event:` (with \
         `frames=message`, events have no `event:` line, so a browser's `EventSource` hands every \
         type to `onmessage`; the type is in the event's JSON); a `heartbeat` on an interval. \
         Server events (which keep their names): `snapshot`, `reset` (history no longer covers the cursor: \
         refetch), `shutdown` (the node is stopping: reconnect elsewhere), `auth.expired` (the \
         token ended). Errors are answered before the stream starts, as JSON."
    };
}

/// `GET /events`.
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "stream",
    tag = "streams",
    summary = "A stream of one or more topics.",
    description = stream_description!(),
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(TenantParam, TopicsParam, StreamParams),
    responses(
        (status = 200, response = inline(EventStream)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn multi(
    State(state): State<AppState>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let topics: Vec<String> = q.all("topic").map(str::to_string).collect();
    open(state, caller, parts, &q, q.get("tenant"), topics).await
}

/// `GET /events/tenants/{slug}`: the tenant's broadcasts.
#[utoipa::path(
    get,
    path = "/events/tenants/{slug}",
    operation_id = "tenantStream",
    tag = "streams",
    summary = "The tenant's broadcasts (`tenant:{slug}`).",
    description = stream_description!(),
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(
        ("slug" = String, Path, min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$"),
        StreamParams
    ),
    responses(
        (status = 200, response = inline(EventStream)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn tenant(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let topic = format!("tenant:{slug}");
    open(state, caller, parts, &q, Some(&slug), vec![topic]).await
}

/// `GET /events/users/{id}`: a user's private stream (that user's token).
#[utoipa::path(
    get,
    path = "/events/users/{id}",
    operation_id = "userStream",
    tag = "streams",
    summary = "A user's private stream (`user:{id}`): messages, outbid and rejection notices; its snapshot is the unread count.",
    description = concat!(
        stream_description!(),
        " Needs that user's client token (or the admin token)."
    ),
    security(
        ("adminToken" = []),
        ("clientToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(UserIdParam, TenantParam, StreamParams),
    responses(
        (status = 200, response = inline(EventStream)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    access::validate_user_id(&id, "id")?;
    access::may_act_as(&id, &caller)?;
    let topic = format!("user:{id}");
    open(state, caller, parts, &q, q.get("tenant"), vec![topic]).await
}

/// `GET /events/products/{id}`: a product's bid activity, starting with a
/// snapshot of its state.
#[utoipa::path(
    get,
    path = "/events/products/{id}",
    operation_id = "productStream",
    tag = "streams",
    summary = "A product's bid activity (`product:{id}`), starting with a snapshot of its state.",
    description = stream_description!(),
    security(
        (),
        ("adminToken" = []),
        ("clientToken" = []),
        ("publisherToken" = []),
        ("tokenCookie" = []),
        ("tokenQuery" = [])
    ),
    params(("id" = String, Path), TenantParam, StreamParams),
    responses(
        (status = 200, response = inline(EventStream)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    parts: Parts,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let p = super::products::visible_product(&state, &caller, &id, q.get("tenant")).await?;
    let topic = format!("product:{}", p.id);
    open(state, caller, parts, &q, Some(&p.tenant), vec![topic]).await
}

async fn open(
    state: AppState,
    caller: Caller,
    parts: Parts,
    q: &QueryPairs,
    tenant: Option<&str>,
    mut topics: Vec<String>,
) -> Result<Response, ApiError> {
    if state.streams.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "this node is shutting down; reconnect",
        ));
    }
    let tenant = access::tenant(&state, &caller, tenant, "tenant").await?;
    if topics.is_empty() {
        return Err(ApiError::invalid(
            "missing_topic",
            "at least one `topic` query parameter is required",
        ));
    }
    topics.sort();
    topics.dedup();
    if topics.len() > MAX_TOPICS {
        return Err(ApiError::invalid(
            "too_many_topics",
            format!("a stream may subscribe to at most {MAX_TOPICS} topics"),
        ));
    }
    let mut snapshots: Vec<String> = q.all("snapshot").map(str::to_string).collect();
    snapshots.sort();
    snapshots.dedup();
    if let Some(t) = snapshots.iter().find(|t| topics.binary_search(t).is_err()) {
        let shown: String = t.chars().take(80).collect();
        return Err(ApiError::invalid(
            "invalid_snapshot",
            format!("`snapshot` must name a `topic` of the stream, got {shown:?}"),
        ));
    }
    let mut defaults = Vec::new();
    // The topics the stream counts on (presence): neither a user's private
    // topic nor a presence topic itself.
    let mut present = Vec::new();
    for t in &topics {
        let kind = access::may_read(t, &tenant.slug, &caller)?;
        if !matches!(kind, TopicKind::User | TopicKind::Derived) {
            present.push(t.clone());
        }
        if kind == TopicKind::User {
            // A user's snapshot is their unread count, even before any message.
            let unread = state
                .backend
                .store
                .unread(&tenant.slug, &t["user:".len()..])
                .await?;
            defaults.push((t.clone(), format!("{{\"unread\":{unread}}}")));
        }
    }
    access::authorize(&state, &caller, &parts, &tenant.slug, &topics, q)?;
    let types = match q.get("events").filter(|s| !s.is_empty()) {
        None => None,
        Some(list) => {
            let mut types: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if types.len() > MAX_TYPES {
                return Err(ApiError::invalid(
                    "invalid_events",
                    format!("`events` may name at most {MAX_TYPES} event types"),
                ));
            }
            for t in &types {
                validate_kind_filter(t)
                    .map_err(|e| ApiError::invalid("invalid_events", format!("`events`: {e}")))?;
            }
            types.sort();
            types.dedup();
            Some(types)
        }
    };
    let frames = match q.get("frames") {
        None | Some("named") => FrameForm::Named,
        Some("message") => FrameForm::Message,
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(ApiError::invalid(
                "invalid_frames",
                format!("`frames` must be `named` or `message`, got {shown:?}"),
            ));
        }
    };
    let header_id = parts
        .headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_string());
    let last_event_id = resume_cursor(
        &state,
        &tenant.slug,
        header_id.as_deref().or(q.get("lastEventId")),
    )
    .await?;
    let holder = match &caller {
        Caller::User(c) => Holder::User(&c.sub),
        Caller::Service(_) | Caller::Admin => Holder::Service,
        Caller::Anonymous => Holder::Anonymous(
            crate::net::client_ip(&parts, &state.config.trusted_proxies)
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ),
    };
    let lease = state
        .caps
        .acquire(&tenant.slug, holder)
        .await
        .map_err(|r| {
            state.metrics.streams_refused.inc();
            match r {
                Refusal::User => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "this user has as many open streams as allowed; close one or retry later",
                )
                .retry_after(5),
                Refusal::Tenant => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "this tenant has as many open streams as allowed; retry later",
                )
                .retry_after(5),
                Refusal::AnonymousTenant => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "this tenant has as many anonymous streams as allowed; sign in or retry later",
                )
                .retry_after(5),
                Refusal::Address => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    "this address has as many anonymous streams as allowed; close one or retry later",
                )
                .retry_after(5),
                Refusal::Unavailable => ApiError::unavailable(
                    "caps_unavailable",
                    "connection limits cannot be checked now; retry",
                ),
            }
        })?;
    // A stream ends when its token does.
    let exp = match &caller {
        Caller::User(c) => Some(c.exp),
        Caller::Service(c) => Some(c.exp),
        _ => None,
    };
    let expires_at = exp.map(|exp| {
        let left = exp.saturating_sub(now_secs());
        tokio::time::Instant::now() + std::time::Duration::from_secs(left)
    });
    let req = StreamRequest {
        tenant: tenant.slug.clone(),
        topics,
        types,
        frames,
        last_event_id,
        expires_at,
        defaults,
        snapshots,
        shape: subscription_shape(&state, &tenant.slug, q)?,
    };
    let topics_read = req.topics.clone();
    let mut session = Session::open(state.streams.clone(), req).await?;
    session.hold(lease);
    if let Caller::User(c) = &caller {
        let listed = state
            .console
            .list(&tenant.slug, &c.sub, &topics_read, session.kicker());
        session.hold_listed(listed);
    }
    if !present.is_empty() {
        // Member data come from the verified token only, read when a topic
        // of the stream announces its members.
        let settings = &state.config.presence;
        let claims = match caller {
            Caller::User(_) if present.iter().any(|t| settings.members_of(t)) => {
                access::verified_claims(&parts)
            }
            _ => None,
        };
        let guard = state
            .presence
            .join(&tenant.slug, present, caller.user(), claims.as_deref())
            .await;
        session.hold_presence(guard);
    }
    tracing::debug!(tenant = %tenant.slug, resume = ?last_event_id, "stream opened");
    Ok(sse_response(session))
}

/// Query parameters the host itself reads; every other one is part of the
/// subscription shape the event filter sees.
pub(crate) const HOST_PARAMS: [&str; 7] = [
    "tenant",
    "topic",
    "events",
    "lastEventId",
    "snapshot",
    "frames",
    "token",
];
/// Most parameters a shape may have.
pub(crate) const MAX_SHAPE_PARAMS: usize = 16;

/// The subscription shape: of the parameters the host does not own, those
/// the tenant's event filter declares (all of them if it declares none),
/// sorted, so equal subscriptions share one filter call per event; a new
/// shape past the tenant's limit of distinct shapes is refused
/// (`plugins::registry::shapes`).
fn subscription_shape(
    state: &AppState,
    tenant: &str,
    q: &QueryPairs,
) -> Result<crate::plugins::Shape, ApiError> {
    let shape = shape_params(q)?;
    state.plugins.subscription_shape(tenant, shape).map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_shapes",
            format!(
                "this tenant's open streams already have {} distinct sets of event filter parameters; reuse one or retry later",
                crate::plugins::registry::MAX_SHAPES_PER_TENANT
            ),
        )
        .retry_after(5)
    })
}

/// The parameters the host does not own, bounded, sorted and without
/// repeats: what a subscription shape is made of.
pub(crate) fn shape_params(q: &QueryPairs) -> Result<Vec<(String, String)>, ApiError> {
    let mut shape: Vec<(String, String)> =
        q.0.iter()
            .filter(|(k, _)| !HOST_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect();
    if shape.len() > MAX_SHAPE_PARAMS || shape.iter().any(|(k, v)| k.len() > 64 || v.len() > 256) {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("at most {MAX_SHAPE_PARAMS} subscription parameters, names up to 64 and values up to 256 bytes"),
        ));
    }
    shape.sort();
    shape.dedup();
    Ok(shape)
}

/// The cursor of a stream: its `Last-Event-ID`, or, during a source's
/// migration window, the event a foreign id (a Redis stream entry id the
/// replaced service sent) became (`sources::migration`); an entry no such
/// source stored starts the stream over with a `reset` (an id past the
/// tenant's head does that).
async fn resume_cursor(
    state: &AppState,
    tenant: &str,
    v: Option<&str>,
) -> Result<Option<Seq>, ApiError> {
    use crate::sources::migration::{resume_point, Resume};
    if let Some(id) = v.map(str::trim).filter(|id| id.contains('-')) {
        match resume_point(&state.sources, state.backend.store.as_ref(), tenant, id).await {
            Ok(Some(Resume::After(seq))) => return Ok(Some(seq)),
            Ok(Some(Resume::Unknown)) => return Ok(Some(i64::MAX as Seq)),
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
    }
    parse_last_event_id(v)
}

/// An empty id means "no cursor"; anything but a decimal id is a 400.
pub(crate) fn parse_last_event_id(v: Option<&str>) -> Result<Option<Seq>, ApiError> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => crate::event::parse_seq(s).map(Some).ok_or_else(|| {
            let shown: String = s.chars().take(40).collect();
            ApiError::invalid(
                "invalid_last_event_id",
                format!("Last-Event-ID must be an event id (a decimal number) from this tenant, got {shown:?}"),
            )
        }),
    }
}

/// The response to a stream request: `200 text/event-stream` whose session
/// the server's stream writer takes from the extensions
/// ([`StreamSlot`]); a writer that does not (a stream on a keep-alive
/// connection served by hyper) polls the body, which takes it instead.
fn sse_response(session: Session) -> Response {
    enum Source {
        Slot(StreamSlot),
        Taken(Box<Session>),
    }
    let slot = StreamSlot::new(session);
    let stream = futures_util::stream::unfold(Source::Slot(slot.clone()), |src| async move {
        let mut s = match src {
            Source::Slot(slot) => Box::new(slot.take()?),
            Source::Taken(s) => s,
        };
        let b = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(b), Source::Taken(s)))
    });
    let mut res = Response::new(Body::from_stream(stream));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res.extensions_mut().insert(slot);
    res
}

/// The 200 of every stream: `text/event-stream`, not cached.
pub struct EventStream;

impl<'s> utoipa::ToResponse<'s> for EventStream {
    fn response() -> (&'s str, utoipa::openapi::RefOr<utoipa::openapi::Response>) {
        let response = ResponseBuilder::new()
            .description("The stream (it does not end by itself).")
            .header(
                "Cache-Control",
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["no-cache"])),
                    )
                    .build(),
            )
            .content(
                "text/event-stream",
                ContentBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .description(Some(
                                "SSE frames: `id: N`, `event: TYPE` (left out for events with \
                             `frames=message`), `data: EVENT-JSON` (an `Event`).",
                            )),
                    ))
                    .build(),
            )
            .build();
        ("EventStream", response.into())
    }
}

/// The topics of `GET /events`, in the query.
pub struct TopicsParam;

impl IntoParams for TopicsParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name("topic")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .schema(Some(
                ArrayBuilder::new()
                    .items(topic_schema())
                    .min_items(Some(1))
                    .max_items(Some(MAX_TOPICS)),
            ))
            .description(Some("1-32 topics (repeatable)."))
            .build()]
    }
}

/// The query parameters and headers every stream reads (what `open` does
/// with them), declared by hand: the shape is an open set of query
/// parameters, which a struct of fields cannot say.
pub struct StreamParams;

impl IntoParams for StreamParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        vec![
            ParameterBuilder::new()
                .name("events")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .schema(Some(string()))
                .description(Some(
                    "Comma-separated event types to keep; the rest are not sent.",
                ))
                .example(Some("bid.accepted,bid.rejected".into()))
                .build(),
            ParameterBuilder::new()
                .name("Last-Event-ID")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(string().pattern(Some("^ *([0-9]*|[0-9]+-[0-9]+) *$"))))
                .description(Some(
                    "Resume after this event id: exactly the missed events of the stream's \
                     topics, in order. Wins over `lastEventId`; empty: no cursor. Older than the \
                     retained history: a `reset` event first. During a Redis stream source's \
                     migration window (`migration_until`), also an entry id of that stream \
                     (`1700000000000-0`): the stream resumes after the event the entry became.",
                ))
                .build(),
            ParameterBuilder::new()
                .name("lastEventId")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .schema(Some(string().pattern(Some("^([0-9]*|[0-9]+-[0-9]+)$"))))
                .description(Some(
                    "`Last-Event-ID` for clients that cannot set headers (`EventSource` on a \
                     first connect).",
                ))
                .build(),
            ParameterBuilder::new()
                .name("snapshot")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .style(Some(ParameterStyle::Form))
                .explode(Some(true))
                .schema(Some(ArrayBuilder::new().items(topic_schema())))
                .description(Some(
                    "Topics of the stream whose snapshot is sent even on a resume (repeatable).",
                ))
                .build(),
            ParameterBuilder::new()
                .name("frames")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .schema(Some(
                    string()
                        .enum_values(Some(["named", "message"]))
                        .default(Some("named".into())),
                ))
                .description(Some(
                    "How events are framed. `named` (the default): `id:`, `event: TYPE`, `data:`. \
                     `message`: `id:` and `data:` only, so a browser's `EventSource` hands every \
                     event to `onmessage` whatever its type (the type is in the event's JSON), \
                     where a listener per type would miss types it does not know of. The \
                     server's own frames (`heartbeat`, `snapshot`, `reset`, `auth.expired`, \
                     `shutdown`) keep their names either way; `events=` filters the same.",
                ))
                .build(),
            ParameterBuilder::new()
                .name("shape")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .style(Some(ParameterStyle::Form))
                .explode(Some(true))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .max_properties(Some(16))
                        .additional_properties(Some(string().max_length(Some(256))))
                        .property_names(Some(string().max_length(Some(64)))),
                ))
                .description(Some(
                    "Every query parameter the server does not read itself (not `tenant`, \
                     `topic`, `events`, `lastEventId`, `snapshot`, `frames` or `token`) is the \
                     subscription's shape, handed to the event-filter plugin: at most 16, names \
                     up to 64 and values up to 256 bytes.",
                ))
                .build(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_parsing() {
        assert_eq!(parse_last_event_id(None).ok(), Some(None));
        assert_eq!(parse_last_event_id(Some("")).ok(), Some(None));
        assert_eq!(parse_last_event_id(Some("42")).ok(), Some(Some(42)));
        assert!(parse_last_event_id(Some("abc")).is_err());
        assert!(parse_last_event_id(Some("-1")).is_err());
        assert!(parse_last_event_id(Some("1-0")).is_err());
        // Ids are stored as signed 64-bit numbers: one past them is no id.
        assert_eq!(
            parse_last_event_id(Some("9223372036854775807")).ok(),
            Some(Some(i64::MAX as u64))
        );
        assert!(parse_last_event_id(Some("9223372036854775808")).is_err());
        assert!(parse_last_event_id(Some("18446744073709551615")).is_err());
    }
}
