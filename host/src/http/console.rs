//! What the operator console reads and does beyond plugins: a tenant's
//! topics (head, retained state, watermark, subscribers across every node),
//! a user's open streams (node, age) and their disconnect, and every live
//! node's figures (`/admin/stats`). Admin token or an operator's token;
//! reads also a viewer's.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::audit;
use super::doc::{BadRequest, Forbidden, HeadTooLarge, NotFound, Unauthorized, Unavailable};
use super::extract::{Admin, AdminRead, QueryPairs};
use crate::console::{NodeStats, StreamInfo};
use crate::error::ApiError;
use crate::event::Seq;
use crate::presence::Counts;
use crate::state::AppState;

/// A tenant in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the router from the path; this declares it.
pub struct TenantPath {
    /// The tenant's slug.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "demo"
    )]
    tenant: String,
}

/// A tenant and a user in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the router from the path; this declares it.
pub struct UserPath {
    /// The tenant's slug.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "demo"
    )]
    tenant: String,
    /// The user's id.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._@-]+$",
        example = "bob"
    )]
    user: String,
}

/// The query of `GET /admin/tenants/{tenant}/topics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `topics`; this declares it.
pub struct TopicPageParams {
    /// Topics named after this one (the `next` of the page before).
    #[param(required = false, max_length = 200)]
    after: String,
    /// At most this many (1 to 500, default 100).
    #[param(required = false, minimum = 1, maximum = 500, default = 100)]
    limit: u64,
}

/// One topic of a tenant.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicView {
    /// The topic.
    topic: String,
    /// Its newest event's id in the log (`null`: every event trimmed).
    #[schema(required = true)]
    head: Option<Seq>,
    /// Whether it has retained state (what a new subscriber gets as `snapshot`).
    retained: bool,
    /// The retained state's event id (`null`: none).
    #[schema(required = true)]
    retained_id: Option<Seq>,
    /// The retention watermark: the highest id removed from it (0: none); a
    /// resume below it gets `reset`.
    trimmed: Seq,
    /// Open streams and distinct users on it across every node, as its
    /// occupancy last said (`null`: not counted: a `user:` topic, one
    /// `SWITCHYARD_PRESENCE_OCCUPANCY` leaves out, or never subscribed).
    #[schema(required = true)]
    subscribers: Option<Counts>,
}

/// What `GET /admin/tenants/{tenant}/topics` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicPage {
    /// By name.
    topics: Vec<TopicView>,
    /// The `after` of the next page; `null`: this is the last.
    #[schema(required = true)]
    next: Option<String>,
}

/// A known tenant's slug from the path.
async fn known_tenant(state: &AppState, tenant: &str) -> Result<String, ApiError> {
    crate::event::validate_slug(tenant)
        .map_err(|e| ApiError::invalid("invalid_tenant", format!("`tenant`: {e}")))?;
    Ok(state.tenants.get(tenant).await?.slug)
}

fn valid_user(user: &str) -> Result<(), ApiError> {
    if crate::auth::valid_user_id(user) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_user",
            "`user` must be 1-128 letters, digits, '-', '_', '.' and '@'",
        ))
    }
}

/// `GET /admin/tenants/{tenant}/topics`.
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant}/topics",
    operation_id = "listTopics",
    tag = "admin",
    summary = "A tenant's topics: head id, retained state, retention watermark and open subscribers across every node.",
    description = "By name, paginated by `after` (the `next` of the page before). Derived topics (`~occupancy`, `~members`, `~lifecycle`) are not listed; a topic's subscribers are its occupancy's counts.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(TenantPath, TopicPageParams),
    responses(
        (status = 200, description = "A page of topics.", body = TopicPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn topics(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path(tenant): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&state, &tenant).await?;
    let after = q.get("after").unwrap_or("");
    if after.len() > 200 || after.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_query",
            "query parameter `after` must be a topic name (at most 200 bytes)",
        ));
    }
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
    let rows = state
        .backend
        .admin
        .topic_list(&tenant, after, limit)
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.topic.clone()))
        .flatten();
    let topics = rows
        .into_iter()
        .map(|r| TopicView {
            subscribers: r
                .occupancy
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok()),
            topic: r.topic,
            head: r.head,
            retained: r.retained,
            retained_id: r.retained_seq,
            trimmed: r.trimmed,
        })
        .collect();
    Ok(axum::Json(TopicPage { topics, next }).into_response())
}

/// One open stream of a user.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamView {
    #[serde(flatten)]
    stream: StreamInfo,
    /// How long it has been open, in milliseconds.
    age_ms: i64,
}

/// What `GET` and `DELETE /admin/tenants/{tenant}/users/{user}/streams` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStreams {
    /// Oldest first (for `DELETE`: those asked to end).
    streams: Vec<StreamView>,
}

fn views(streams: Vec<StreamInfo>) -> UserStreams {
    let now = crate::event::now_ms();
    UserStreams {
        streams: streams
            .into_iter()
            .map(|s| StreamView {
                age_ms: now.saturating_sub(s.opened_at).max(0),
                stream: s,
            })
            .collect(),
    }
}

/// `GET /admin/tenants/{tenant}/users/{user}/streams`.
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant}/users/{user}/streams",
    operation_id = "listUserStreams",
    tag = "admin",
    summary = "A user's open streams on every live node, with the node holding each and its age.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The streams.", body = UserStreams),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn user_streams(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&state, &tenant).await?;
    valid_user(&user)?;
    let streams = state
        .console
        .directory
        .user_streams(&tenant, &user)
        .await
        .map_err(|_| unavailable())?;
    Ok(axum::Json(views(streams)).into_response())
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "directory_unavailable",
        "the nodes' streams cannot be reached now; retry",
    )
}

/// `DELETE /admin/tenants/{tenant}/users/{user}/streams`.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{tenant}/users/{user}/streams",
    operation_id = "disconnectUser",
    tag = "admin",
    summary = "Ends a user's open streams on every node.",
    description = "Each stream gets a last `switchyard.disconnected` event (with `resume_from`) and ends; the node holding it closes it. Answers the streams asked to end. A client may reconnect: this closes streams, it does not revoke tokens.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The streams asked to end.", body = UserStreams),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn disconnect(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&state, &tenant).await?;
    valid_user(&user)?;
    let directory = &state.console.directory;
    let streams = directory
        .user_streams(&tenant, &user)
        .await
        .map_err(|_| unavailable())?;
    directory
        .disconnect(&tenant, &user)
        .await
        .map_err(|_| unavailable())?;
    audit::record(
        &state,
        &admin.actor,
        "streams.disconnect",
        Some(&tenant),
        None,
        None,
        Some(format!("user {user}: {} streams", streams.len())),
    )
    .await;
    Ok(axum::Json(views(streams)).into_response())
}

/// What `GET /admin/stats` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsView {
    /// Every live node's latest figures, by node id.
    nodes: Vec<NodeStats>,
}

/// `GET /admin/stats`.
#[utoipa::path(
    get,
    path = "/admin/stats",
    operation_id = "stats",
    tag = "admin",
    summary = "Live figures of every node: open streams, deliveries, publishes, slow clients caught up, dropped streams, bus lag, plugin calls, by node and tenant, and what `/ready` says per dependency.",
    description = "Each node samples its figures every 2 s (rates are over that interval); in cluster mode each publishes them to Redis with a 10 s expiry, so a node gone is gone from the list.",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The nodes' figures.", body = StatsView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    _reader: AdminRead,
) -> Result<Response, ApiError> {
    let nodes = state
        .console
        .directory
        .stats()
        .await
        .map_err(|_| unavailable())?;
    Ok(axum::Json(StatsView { nodes }).into_response())
}

/// What `GET /admin/whoami` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoAmI {
    /// Who, as the audit log names them: `admin`, `operator:{subject}` or
    /// `viewer:{subject}`.
    actor: String,
    /// `operator` (may change things) or `viewer` (reads only).
    #[schema(pattern = "^(operator|viewer)$")]
    role: &'static str,
}

/// `GET /admin/whoami`: who the token signs in as, and its role (the
/// console shows write buttons to operators only; the API refuses a
/// viewer's writes either way).
#[utoipa::path(
    get,
    path = "/admin/whoami",
    operation_id = "whoami",
    tag = "admin",
    summary = "Who this token signs in as: the actor and its role (`operator` or `viewer`).",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The actor and role.", body = WhoAmI),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn whoami(reader: AdminRead) -> Response {
    let role = if reader.actor.starts_with("viewer:") {
        "viewer"
    } else {
        "operator"
    };
    axum::Json(WhoAmI {
        actor: reader.actor,
        role,
    })
    .into_response()
}

/// A tenant and a topic in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the router from the path; this declares it.
pub struct TopicPath {
    /// The tenant's slug.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "demo"
    )]
    tenant: String,
    /// The topic (`global` or `kind:id`; not a user's, not a derived one).
    #[param(
        max_length = 161,
        pattern = r"^(global|[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128})$",
        example = "product:p_1"
    )]
    topic: String,
}

/// A topic the console may tail or publish a test event to: a shared one
/// (not a user's private topic, not one the server derives).
fn console_topic(tenant: &str, topic: &str) -> Result<(), ApiError> {
    use crate::event::TopicKind;
    let kind = crate::event::classify_topic(topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`topic`: {e}")))?;
    match kind {
        TopicKind::User | TopicKind::Derived => Err(ApiError::invalid(
            "invalid_topic",
            "`topic`: a user's private topic or a derived one cannot be tailed or published to from the console",
        )),
        TopicKind::Tenant if topic["tenant:".len()..] != *tenant => Err(ApiError::invalid(
            "invalid_topic",
            "`topic`: names another tenant",
        )),
        _ => Ok(()),
    }
}

/// The body of `POST /admin/tenants/{tenant}/topics/{topic}/events`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// The event's type (default `console.test`).
    #[serde(rename = "type", default)]
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9._:-]+$")]
    kind: Option<String>,
    /// Its data (default `{}`), at most 16 KiB as JSON.
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// What `POST /admin/tenants/{tenant}/topics/{topic}/events` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPublished {
    /// The event's id.
    id: Seq,
    /// Its topic.
    topic: String,
    /// Its type.
    #[serde(rename = "type")]
    kind: String,
}

/// Largest test event's data, as JSON.
const MAX_TEST_DATA: usize = 16 * 1024;

/// `POST /admin/tenants/{tenant}/topics/{topic}/events`: publishes a test
/// event (operators only; recorded in the audit log).
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant}/topics/{topic}/events",
    operation_id = "publishTestEvent",
    tag = "admin",
    summary = "Publishes a test event to a tenant's topic (recorded in the audit log).",
    description = "Not a user's private topic, not a derived one. The event is a real one: every subscriber of the topic gets it.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(TopicPath),
    request_body(content = TestEvent, example = json!({"type": "console.test", "data": {"hello": "world"}})),
    responses(
        (status = 201, description = "Published.", body = TestPublished),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = super::doc::RequestTimeout),
        (status = 413, response = super::doc::BodyTooLarge),
        (status = 415, response = super::doc::UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn publish_test(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, topic)): Path<(String, String)>,
    super::extract::AppJson(body): super::extract::AppJson<TestEvent>,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&state, &tenant).await?;
    console_topic(&tenant, &topic)?;
    let kind = body.kind.unwrap_or_else(|| "console.test".to_string());
    crate::event::validate_kind(&kind)
        .map_err(|e| ApiError::invalid("invalid_type", format!("`type`: {e}")))?;
    let data = body
        .data
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
        .to_string();
    if data.len() > MAX_TEST_DATA {
        return Err(ApiError::invalid(
            "invalid_data",
            "`data` is at most 16 KiB as JSON",
        ));
    }
    let stored = state
        .publisher
        .publish(vec![crate::event::NewEvent {
            tenant: tenant.clone(),
            topic: topic.clone(),
            kind: kind.clone(),
            data,
            retain: false,
        }])
        .await?;
    let id = stored
        .first()
        .map(|e| e.seq)
        .ok_or_else(|| ApiError::internal("append returned no event"))?;
    audit::record(
        &state,
        &admin.actor,
        "event.publish",
        Some(&tenant),
        None,
        None,
        Some(format!("test event {kind} to {topic}, id {id}")),
    )
    .await;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(TestPublished { id, topic, kind }),
    )
        .into_response())
}

/// What `POST /admin/tenants/{tenant}/topics/{topic}/tail-token` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TailToken {
    /// A publisher token of service `console` for this tenant, whose only
    /// pattern is the topic: it reads what the tenant's publishers read,
    /// and may publish to this topic only. Send it as `Authorization:
    /// Bearer`, never in a URL.
    token: String,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

/// How long a tail token lives.
const TAIL_TOKEN_SECS: u64 = 600;

/// `POST /admin/tenants/{tenant}/topics/{topic}/tail-token`: a short-lived
/// token for reading the topic's stream (`GET /events`), for the console's
/// live tail (operators only; recorded in the audit log).
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant}/topics/{topic}/tail-token",
    operation_id = "createTailToken",
    tag = "admin",
    summary = "Mints a 10-minute token for reading a topic's stream (the console's live tail).",
    description = "A publisher token (service `console`) scoped to the topic: no more than the operator may do. Not for a user's private topic or a derived one.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(TopicPath),
    responses(
        (status = 201, description = "The token.", body = TailToken),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn tail_token(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, topic)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = known_tenant(&state, &tenant).await?;
    console_topic(&tenant, &topic)?;
    let claims = crate::auth::ServiceClaims::new(
        "console",
        &tenant,
        vec![topic.clone()],
        TAIL_TOKEN_SECS,
        crate::auth::now_secs(),
    )
    .map_err(|e| ApiError::invalid("invalid_topic", e.to_string()))?;
    let token = state.keys.sign_service(&claims);
    audit::record(
        &state,
        &admin.actor,
        "token.mint",
        Some(&tenant),
        None,
        None,
        Some(format!("console tail of {topic}, expires {}", claims.exp)),
    )
    .await;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(TailToken {
            token,
            expires_at: claims.exp,
        }),
    )
        .into_response())
}
