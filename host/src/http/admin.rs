//! `/admin/tenants`: create and list tenants, and move one to another
//! database; `/admin/databases`: the databases and their tenants;
//! `/admin/tokens`: mint publisher tokens (admin token).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::doc::{
    BadRequest, BodyTooLarge, Conflict, Forbidden, HeadTooLarge, NotFound, RequestTimeout,
    Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::extract::{stored_text, Admin, AdminRead, AppJson};
use crate::error::ApiError;
use crate::event::validate_slug;
use crate::state::AppState;
use crate::store::Tenant;

/// The request body of `POST /admin/tenants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    slug: String,
    /// 1-200 characters after trimming.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The database to place it on (cluster mode with several databases);
    /// by `SWITCHYARD_TENANT_PLACEMENT` when absent.
    #[serde(default)]
    database: Option<String>,
}

/// What `GET /admin/tenants` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantList {
    tenants: Vec<Tenant>,
}

/// `POST /admin/tenants`: 201 with the tenant, 409 if the slug is taken.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    operation_id = "createTenant",
    tag = "admin",
    summary = "Creates a tenant.",
    description = "409 when the slug is taken.",
    security(("adminToken" = []), ("operatorToken" = [])),
    request_body(content = NewTenant, example = json!({"slug": "acme", "name": "Acme"})),
    responses(
        (status = 201, description = "Created.", body = Tenant),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    admin: Admin,
    AppJson(body): AppJson<NewTenant>,
) -> Result<Response, ApiError> {
    validate_slug(&body.slug)
        .map_err(|e| ApiError::invalid("invalid_slug", format!("`slug`: {e}")))?;
    let name = body.name.trim();
    stored_text(name, "name")?;
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid(
            "invalid_name",
            "`name` must be 1-200 characters",
        ));
    }
    let tenant = match (&state.backend.placement, body.database.as_deref()) {
        (Some(placed), on) => {
            if let Some(db) = on {
                known_database(&state, db)?;
            }
            placed.create_tenant_on(&body.slug, name, on).await?
        }
        (None, Some(db)) if db != crate::store::placed::HOME => {
            return Err(unknown_database(db));
        }
        (None, _) => state.backend.store.create_tenant(&body.slug, name).await?,
    };
    tracing::info!(tenant = %tenant.slug, "tenant created");
    audit::record(
        &state,
        &admin.actor,
        "tenant.create",
        Some(&tenant.slug),
        None,
        None,
        Some(name.to_string()),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
}

/// `GET /admin/tenants`.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    operation_id = "listTenants",
    tag = "admin",
    summary = "Every tenant.",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The tenants.", body = TenantList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    _reader: AdminRead,
) -> Result<Response, ApiError> {
    let tenants = state.backend.store.tenants().await?;
    Ok(axum::Json(TenantList { tenants }).into_response())
}

/// The request body of `POST /admin/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPublisherToken)]
pub struct NewServiceToken {
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._@-]+$")]
    service: String,
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    tenant: String,
    /// Topic patterns the token may publish to: a topic, or a prefix ending
    /// in `*` (`status:*`).
    publish: Vec<String>,
    /// `90s`, `15m`, `1h`, `30d`; default 30 days.
    #[serde(default)]
    #[schema(value_type = String, pattern = "^[0-9]+[smhd]?$", default = "30d")]
    ttl: Option<String>,
}

/// What `POST /admin/tokens` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublisherToken {
    /// A JWT for `Authorization: Bearer`.
    token: String,
    service: String,
    tenant: String,
    publish: Vec<String>,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

/// `POST /admin/tokens`: `201 {token, service, tenant, publish, expires_at}`,
/// a publisher token for an existing tenant.
#[utoipa::path(
    post,
    path = "/admin/tokens",
    operation_id = "createPublisherToken",
    tag = "admin",
    summary = "Mints a publisher token for an existing tenant.",
    description = "The token may publish (`POST /api/events`, `/api/events/batch`) to the topics its patterns match, in its tenant, and read what an anonymous caller of the tenant may read.",
    security(("adminToken" = []), ("operatorToken" = [])),
    request_body(
        content = NewServiceToken,
        example = json!({"service": "status-monitor", "tenant": "demo", "publish": ["status:*"], "ttl": "1h"})
    ),
    responses(
        (status = 201, description = "The token.", body = PublisherToken),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    admin: Admin,
    AppJson(body): AppJson<NewServiceToken>,
) -> Result<Response, ApiError> {
    let ttl = crate::auth::parse_ttl(body.ttl.as_deref().unwrap_or("30d")).ok_or_else(|| {
        ApiError::invalid("invalid_ttl", "`ttl` must look like 90s, 15m, 1h or 30d")
    })?;
    let claims = crate::auth::ServiceClaims::new(
        &body.service,
        &body.tenant,
        body.publish,
        ttl,
        crate::auth::now_secs(),
    )
    .map_err(|e| ApiError::invalid("invalid_token_request", e.to_string()))?;
    let tenant = state.tenants.get(&claims.tenant).await?;
    let token = state.keys.sign_service(&claims);
    tracing::info!(tenant = %tenant.slug, service = %claims.service, "publisher token minted");
    // The token itself is never recorded: who it is for and what it may do.
    audit::record(
        &state,
        &admin.actor,
        "token.mint",
        Some(&tenant.slug),
        None,
        None,
        Some(format!(
            "service {}, publish {}, expires {}",
            claims.service,
            claims.publish.join(","),
            claims.exp
        )),
    )
    .await;
    let answer = PublisherToken {
        token,
        service: claims.service,
        tenant: tenant.slug,
        publish: claims.publish,
        expires_at: claims.exp,
    };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// One database tenants are placed on.
#[derive(Serialize, ToSchema)]
pub struct DatabaseView {
    /// Its name (`main`: `DATABASE_URL`; the others from
    /// `SWITCHYARD_DATABASES`).
    name: String,
    /// Tenants placed on it.
    tenants: u64,
}

/// What `GET /admin/databases` answers.
#[derive(Serialize, ToSchema)]
pub struct DatabaseList {
    /// The databases, `main` first.
    databases: Vec<DatabaseView>,
}

/// `GET /admin/databases`: the databases tenants are placed on.
#[utoipa::path(
    get,
    path = "/admin/databases",
    operation_id = "listDatabases",
    tag = "admin",
    summary = "The databases tenants are placed on, with their tenant counts.",
    description = "One (`main`) unless `SWITCHYARD_DATABASES` lists more.",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The databases.", body = DatabaseList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list_databases(
    State(state): State<AppState>,
    _reader: AdminRead,
) -> Result<Response, ApiError> {
    let databases = match &state.backend.placement {
        Some(placed) => placed
            .tenant_counts()
            .await?
            .into_iter()
            .map(|(name, tenants)| DatabaseView { name, tenants })
            .collect(),
        None => vec![DatabaseView {
            name: crate::store::placed::HOME.into(),
            tenants: state.backend.store.tenants().await?.len() as u64,
        }],
    };
    Ok(axum::Json(DatabaseList { databases }).into_response())
}

/// The request body of `POST /admin/tenants/{slug}/move`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTenant {
    /// The database to move it to.
    database: String,
}

/// `POST /admin/tenants/{slug}/move`: moves a tenant to another database.
#[utoipa::path(
    post,
    path = "/admin/tenants/{slug}/move",
    operation_id = "moveTenant",
    tag = "admin",
    summary = "Moves a tenant to another database, keeping its ids.",
    description = "Its writes wait from the fence to the flip (`paused_ms`), its reads go on, \
        and no event is lost: its ids go on from the same head in the new database. \
        Run again after a failure, it finishes the move; to the database the tenant is on, \
        it undoes a move that stopped half-way. 409 while another move of the tenant runs, \
        or when there is one database.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slug" = String, Path, description = "The tenant.")),
    request_body(content = MoveTenant, example = json!({"database": "b"})),
    responses(
        (status = 200, description = "Moved (or already there).", body = crate::store::placed::MoveReport),
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
pub async fn move_tenant(
    State(state): State<AppState>,
    admin: Admin,
    Path(slug): Path<String>,
    AppJson(body): AppJson<MoveTenant>,
) -> Result<Response, ApiError> {
    validate_slug(&slug).map_err(|e| ApiError::invalid("invalid_slug", format!("tenant: {e}")))?;
    let Some(placed) = &state.backend.placement else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "one_database",
            "this deployment has one database: SWITCHYARD_DATABASES lists more",
        ));
    };
    known_database(&state, &body.database)?;
    let report = placed.move_tenant(&slug, &body.database).await?;
    audit::record(
        &state,
        &admin.actor,
        "tenant.move",
        Some(&slug),
        None,
        None,
        Some(format!(
            "{} -> {}: {} events, writes paused {} ms",
            report.from, report.to, report.events, report.paused_ms
        )),
    )
    .await;
    Ok(axum::Json(report).into_response())
}

/// 400 unless `name` is one of the deployment's databases.
fn known_database(state: &AppState, name: &str) -> Result<(), ApiError> {
    let known = match &state.backend.placement {
        Some(p) => p.databases().iter().any(|d| d.name() == name),
        None => name == crate::store::placed::HOME,
    };
    if known {
        Ok(())
    } else {
        Err(unknown_database(name))
    }
}

fn unknown_database(name: &str) -> ApiError {
    // The name is the client's: shown back only as far as it is plain.
    let shown: String = name
        .chars()
        .take(40)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    ApiError::invalid(
        "unknown_database",
        format!("there is no database {shown:?} (GET /admin/databases lists them)"),
    )
}
