//! `/admin/plugins`: list, upload, shadow, promote, roll back, deactivate and
//! configure plugins (admin token). `?tenant=slug` addresses a tenant's own
//! slot; without it, the default slot of every tenant.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::extract::{Admin, AppJson, QueryPairs};
use crate::error::ApiError;
use crate::plugins::registry::PluginsView;
use crate::plugins::{Mode, PluginError, Slot};
use crate::state::AppState;

/// Largest component accepted by `PUT /admin/plugins/{slot}`.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Refused(m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_refused",
                format!("component refused; the active version stays: {m}"),
            ),
            PluginError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            PluginError::Store(e) => e.into(),
        }
    }
}

fn slot(name: &str) -> Result<Slot, ApiError> {
    Slot::parse(name).ok_or_else(|| {
        ApiError::not_found(
            "unknown_slot",
            format!("no plugin slot {name:?}; slots are bid-validator, notification-shaper, event-filter"),
        )
    })
}

/// The `tenant` query parameter: a known tenant, or `""` for the default.
async fn tenant(state: &AppState, q: &QueryPairs) -> Result<String, ApiError> {
    match q.get("tenant").filter(|t| !t.is_empty()) {
        None => Ok(String::new()),
        Some(t) => {
            crate::event::validate_slug(t)
                .map_err(|e| ApiError::invalid("invalid_tenant", format!("`tenant`: {e}")))?;
            Ok(state.tenants.get(t).await?.slug)
        }
    }
}

/// One slot as `GET /admin/plugins` shows it (`null`: a tenant's slot
/// never configured).
fn slot_view(state: &AppState, tenant: &str, slot: Slot) -> Response {
    axum::Json(state.plugins.describe_slot(tenant, slot)).into_response()
}

/// `GET /admin/plugins`.
#[derive(serde::Serialize)]
struct ListView {
    #[serde(flatten)]
    plugins: PluginsView,
    limits: LimitsView,
}

/// The sandbox limits every call runs under.
#[derive(serde::Serialize)]
struct LimitsView {
    timeout_ms: u64,
    memory_bytes: usize,
    fuel: Option<u64>,
}

/// `202` to an upload compiling in the background.
#[derive(serde::Serialize)]
struct CompilingView<'a> {
    slot: &'static str,
    tenant: Option<&'a str>,
    version: String,
    mode: &'static str,
    state: &'static str,
}

/// `GET /admin/plugins`: every slot with its active version, shadow
/// candidate (with disagreements), history, configuration and statistics.
#[utoipa::path(
    get,
    path = "/admin/plugins",
    operation_id = "listPlugins",
    tag = "plugins"
)]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Response {
    let limits = state.plugins.wasm().limits();
    axum::Json(ListView {
        plugins: state.plugins.describe(),
        limits: LimitsView {
            timeout_ms: limits.timeout.as_millis() as u64,
            memory_bytes: limits.memory,
            fuel: limits.fuel,
        },
    })
    .into_response()
}

/// `PUT /admin/plugins/{slot}` with the component as the body
/// (`?mode=shadow` runs it beside the active version instead).
///
/// A component whose compiled code is at hand (compiled before, here or in
/// the disk cache) is checked and activated before the answer: `200` with
/// the slot. Otherwise the compile runs off the serving path and the answer
/// is at once `202 {"version","state":"compiling"}`; `GET /admin/plugins`
/// shows the slot's `compiling` upload until it is active, or refused with
/// the reason as `last_error`. `?wait=true` waits for the compile and
/// answers `200` or `422`.
#[utoipa::path(
    put,
    path = "/admin/plugins/{slot}",
    operation_id = "uploadPlugin",
    tag = "plugins"
)]
pub async fn upload(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let mode = match q.get("mode") {
        None | Some("active") => Mode::Active,
        Some("shadow") => Mode::Shadow,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_mode",
                format!("`mode` is `active` or `shadow`, not {other:?}"),
            ))
        }
    };
    if body.is_empty() {
        return Err(ApiError::invalid(
            "empty_body",
            "the body must be a WebAssembly component",
        ));
    }
    // What is not a component at all is refused at once (and recorded) by
    // the install below, without a compile.
    let not_a_component = crate::plugins::wasm::WasmHost::precheck(&body).is_err();
    let wait = matches!(q.get("wait"), Some("true" | "1"));
    if !wait && !not_a_component && !state.plugins.ready(&body, slot) {
        let job = state
            .plugins
            .install_in_background(&tenant, slot, body.to_vec(), "admin", mode);
        let answer = CompilingView {
            slot: slot.as_str(),
            tenant: (!tenant.is_empty()).then_some(tenant.as_str()),
            version: job.version,
            mode: job.mode,
            state: "compiling",
        };
        return Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response());
    }
    state
        .plugins
        .install(&tenant, slot, body.to_vec(), "admin", mode)
        .await?;
    Ok((StatusCode::OK, slot_view(&state, &tenant, slot)).into_response())
}

/// `POST /admin/plugins/{slot}/rollback`: the previous version again.
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/rollback",
    operation_id = "rollbackPlugin",
    tag = "plugins"
)]
pub async fn rollback(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    state.plugins.rollback(&tenant, slot).await?;
    Ok(slot_view(&state, &tenant, slot))
}

/// `POST /admin/plugins/{slot}/promote`: the shadow candidate becomes active.
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/promote",
    operation_id = "promotePlugin",
    tag = "plugins"
)]
pub async fn promote(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    state.plugins.promote(&tenant, slot).await?;
    Ok(slot_view(&state, &tenant, slot))
}

/// `DELETE /admin/plugins/{slot}/shadow`: stops the shadow candidate.
#[utoipa::path(
    delete,
    path = "/admin/plugins/{slot}/shadow",
    operation_id = "dropPluginShadow",
    tag = "plugins"
)]
pub async fn drop_shadow(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    state.plugins.drop_shadow(&tenant, slot).await?;
    Ok(slot_view(&state, &tenant, slot))
}

/// `DELETE /admin/plugins/{slot}`: the built-in rule (or, for a tenant, the
/// default slot) answers again; the version stays in history for rollback.
#[utoipa::path(
    delete,
    path = "/admin/plugins/{slot}",
    operation_id = "deactivatePlugin",
    tag = "plugins"
)]
pub async fn deactivate(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    state.plugins.deactivate(&tenant, slot).await?;
    Ok(slot_view(&state, &tenant, slot))
}

/// `PUT /admin/plugins/{slot}/config` with a JSON object of strings.
#[utoipa::path(
    put,
    path = "/admin/plugins/{slot}/config",
    operation_id = "configurePlugin",
    tag = "plugins"
)]
pub async fn configure(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
    AppJson(config): AppJson<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    if config.len() > 256 || config.iter().any(|(k, v)| k.len() > 128 || v.len() > 4096) {
        return Err(ApiError::invalid(
            "invalid_config",
            "at most 256 keys, keys up to 128 and values up to 4096 bytes",
        ));
    }
    state.plugins.configure(&tenant, slot, config).await?;
    Ok(slot_view(&state, &tenant, slot))
}
