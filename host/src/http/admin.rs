//! `/admin/tenants`: create and list tenants; `/admin/tokens`: mint
//! publisher tokens (admin token).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{stored_text, Admin, AppJson};
use crate::error::ApiError;
use crate::event::validate_slug;
use crate::state::AppState;

/// The request body of `POST /admin/tenants`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    slug: String,
    name: String,
}

/// `POST /admin/tenants`: 201 with the tenant, 409 if the slug is taken.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    operation_id = "createTenant",
    tag = "admin"
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
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
    let tenant = state.backend.store.create_tenant(&body.slug, name).await?;
    tracing::info!(tenant = %tenant.slug, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant)).into_response())
}

/// `GET /admin/tenants`.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    operation_id = "listTenants",
    tag = "admin"
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Response, ApiError> {
    let tenants = state.backend.store.tenants().await?;
    Ok(axum::Json(serde_json::json!({ "tenants": tenants })).into_response())
}

/// The request body of `POST /admin/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServiceToken {
    service: String,
    tenant: String,
    publish: Vec<String>,
    /// `90s`, `15m`, `1h`, `30d`; default 30 days.
    #[serde(default)]
    ttl: Option<String>,
}

/// `POST /admin/tokens`: `201 {token, service, tenant, publish, expires_at}`,
/// a publisher token for an existing tenant.
#[utoipa::path(
    post,
    path = "/admin/tokens",
    operation_id = "createPublisherToken",
    tag = "admin"
)]
pub async fn create_token(
    State(state): State<AppState>,
    _admin: Admin,
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
    let answer = serde_json::json!({
        "token": token,
        "service": claims.service,
        "tenant": tenant.slug,
        "publish": claims.publish,
        "expires_at": claims.exp,
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}
