//! `/admin/plugins`: list, upload, shadow, promote, roll back, deactivate and
//! configure plugins (admin token). `?tenant=slug` addresses a tenant's own
//! slot; without it, the default slot of every tenant.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::audit;
use super::doc::{
    BadRequest, BodyTooLarge, Conflict, Forbidden, HeadTooLarge, NotFound, Refused, RequestTimeout,
    Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::extract::{Admin, AdminRead, AppJson, QueryPairs};
use crate::error::ApiError;
use crate::plugins::registry::SlotView;
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

/// The `tenant` of a plugin operation, in the query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `tenant`; this declares it.
pub struct PluginTenantParam {
    /// A tenant's own slot; without it, the default slot of every tenant.
    #[param(
        required = false,
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$"
    )]
    tenant: String,
}

/// The query of `PUT /admin/plugins/{slot}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `upload`; this declares it.
pub struct UploadParams {
    /// `shadow`: run it beside the active version, comparing, without
    /// applying its verdicts.
    #[param(inline, required = false, default = "active")]
    mode: Mode,
    /// `true`: answer when the compile is done.
    #[param(inline, required = false)]
    wait: Wait,
}

/// The values `?wait=` takes.
#[derive(Serialize, ToSchema)]
pub enum Wait {
    /// Wait.
    #[serde(rename = "true")]
    True,
    /// Wait.
    #[serde(rename = "1")]
    One,
    /// Do not wait.
    #[serde(rename = "false")]
    False,
    /// Do not wait.
    #[serde(rename = "0")]
    Zero,
}

/// The body of `PUT /admin/plugins/{slot}`: a component's bytes.
pub struct ComponentBytes;

impl PartialSchema for ComponentBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for ComponentBytes {}

/// The body of `PUT /admin/plugins/{slot}/config`: the slot's whole
/// configuration (strings); plugins read it through the `config` import.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct PluginConfig(BTreeMap<String, String>);

impl PartialSchema for PluginConfig {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .max_properties(Some(256))
            .additional_properties(Some(string().max_length(Some(4096))))
            .property_names(Some(string().max_length(Some(128))))
            .description(Some(
                "The slot's whole configuration (strings); plugins read it through the `config` import.",
            ))
            .into()
    }
}

impl ToSchema for PluginConfig {}

/// What `GET /admin/plugins` answers: every slot, and the sandbox's limits.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginList)]
struct ListView {
    /// By slot, then tenant (the default slot first).
    slots: Vec<SlotView>,
    limits: LimitsView,
}

/// The sandbox limits every call runs under.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginLimits)]
struct LimitsView {
    /// The per-call deadline.
    timeout_ms: u64,
    /// The largest linear memory.
    memory_bytes: usize,
    /// Fuel per call; null: unmetered.
    #[schema(required = true)]
    fuel: Option<u64>,
}

/// `202` to an upload compiling in the background.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginCompiling)]
struct CompilingView<'a> {
    #[schema(value_type = Slot)]
    slot: &'static str,
    #[schema(required = true)]
    tenant: Option<&'a str>,
    version: String,
    #[schema(value_type = Mode)]
    mode: &'static str,
    #[schema(inline)]
    state: CompilingState,
}

/// `compiling`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum CompilingState {
    /// The compile runs.
    Compiling,
}

/// `GET /admin/plugins`: every slot with its active version, shadow
/// candidate (with disagreements), history, configuration and statistics.
#[utoipa::path(
    get,
    path = "/admin/plugins",
    operation_id = "listPlugins",
    tag = "plugins",
    summary = "Every plugin slot: active version, shadow candidate, history, configuration, statistics; and the sandbox's limits.",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The slots.", body = ListView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn list(State(state): State<AppState>, _reader: AdminRead) -> Response {
    let limits = state.plugins.wasm().limits();
    axum::Json(ListView {
        slots: state.plugins.describe().slots,
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
    tag = "plugins",
    summary = "Uploads a component (WebAssembly) to a slot.",
    description = "A component whose compiled code is at hand is checked and activated before the answer (200). Otherwise the compile runs off the serving path and the answer is at once 202; `GET /admin/plugins` shows the upload under `compiling` until it is active, or its reason as `last_error`. `?wait=true` waits for the compile (200 or 422). A component that does not compile or does not fit the slot is refused (422) and the active version stays. A change on one node takes effect on every node.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, UploadParams),
    request_body(
        content = inline(ComponentBytes),
        content_type = "application/octet-stream",
        description = "The component's bytes, at most 32 MiB, with any `Content-Type` (`application/wasm` is usual)."
    ),
    responses(
        (status = 200, description = "Installed.", body = Option<SlotView>),
        (status = 202, description = "Compiling; the slot changes when it is done.", body = CompilingView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 422, response = Refused),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let message = audit::message(&q, &headers)?;
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
        audit::record(
            &state,
            &admin.actor,
            "plugin.upload",
            Some(&tenant),
            Some(slot),
            Some(job.version.clone()),
            audit::with_mode(message, job.mode),
        )
        .await;
        let answer = CompilingView {
            slot: slot.as_str(),
            tenant: (!tenant.is_empty()).then_some(tenant.as_str()),
            version: job.version,
            mode: job.mode,
            state: CompilingState::Compiling,
        };
        return Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response());
    }
    let hash = crate::plugins::wasm::content_hash(&body);
    state
        .plugins
        .install(&tenant, slot, body.to_vec(), "admin", mode)
        .await?;
    let mode = match mode {
        Mode::Active => "active",
        Mode::Shadow => "shadow",
    };
    audit::record(
        &state,
        &admin.actor,
        "plugin.upload",
        Some(&tenant),
        Some(slot),
        Some(hash),
        audit::with_mode(message, mode),
    )
    .await;
    Ok((StatusCode::OK, slot_view(&state, &tenant, slot)).into_response())
}

/// `POST /admin/plugins/{slot}/rollback`: the previous version again.
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/rollback",
    operation_id = "rollbackPlugin",
    tag = "plugins",
    summary = "The previous version again.",
    description = "409 when there is none.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    responses(
        (status = 200, description = "The slot.", body = Option<SlotView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let row = state.plugins.rollback(&tenant, slot).await?;
    audit::record(
        &state,
        &admin.actor,
        "plugin.rollback",
        Some(&tenant),
        Some(slot),
        row.active.clone(),
        None,
    )
    .await;
    Ok(slot_view(&state, &tenant, slot))
}

/// `POST /admin/plugins/{slot}/promote`: the shadow candidate becomes active.
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/promote",
    operation_id = "promotePlugin",
    tag = "plugins",
    summary = "The shadow candidate becomes the active version.",
    description = "409 when there is no candidate.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    responses(
        (status = 200, description = "The slot.", body = Option<SlotView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let row = state.plugins.promote(&tenant, slot).await?;
    audit::record(
        &state,
        &admin.actor,
        "plugin.promote",
        Some(&tenant),
        Some(slot),
        row.active.clone(),
        None,
    )
    .await;
    Ok(slot_view(&state, &tenant, slot))
}

/// `DELETE /admin/plugins/{slot}/shadow`: stops the shadow candidate.
#[utoipa::path(
    delete,
    path = "/admin/plugins/{slot}/shadow",
    operation_id = "dropPluginShadow",
    tag = "plugins",
    summary = "Stops the shadow candidate.",
    description = "409 when there is none.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    responses(
        (status = 200, description = "The slot.", body = Option<SlotView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn drop_shadow(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    state.plugins.drop_shadow(&tenant, slot).await?;
    audit::record(
        &state,
        &admin.actor,
        "plugin.shadow_dropped",
        Some(&tenant),
        Some(slot),
        None,
        None,
    )
    .await;
    Ok(slot_view(&state, &tenant, slot))
}

/// `DELETE /admin/plugins/{slot}`: the built-in rule (or, for a tenant, the
/// default slot) answers again; the version stays in history for rollback.
#[utoipa::path(
    delete,
    path = "/admin/plugins/{slot}",
    operation_id = "deactivatePlugin",
    tag = "plugins",
    summary = "Deactivates the slot: the built-in rule (or, for a tenant, the default slot) answers again; the version stays in history for rollback.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    responses(
        (status = 200, description = "The slot.", body = Option<SlotView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn deactivate(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let row = state.plugins.deactivate(&tenant, slot).await?;
    audit::record(
        &state,
        &admin.actor,
        "plugin.deactivate",
        Some(&tenant),
        Some(slot),
        row.history.first().cloned(),
        None,
    )
    .await;
    Ok(slot_view(&state, &tenant, slot))
}

/// `PUT /admin/plugins/{slot}/config` with a JSON object of strings.
#[utoipa::path(
    put,
    path = "/admin/plugins/{slot}/config",
    operation_id = "configurePlugin",
    tag = "plugins",
    summary = "Replaces the slot's configuration.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    request_body(content = PluginConfig, example = json!({"greeting": "hello"})),
    responses(
        (status = 200, description = "The slot.", body = Option<SlotView>),
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
pub async fn configure(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
    AppJson(PluginConfig(config)): AppJson<PluginConfig>,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    if config.len() > 256 || config.iter().any(|(k, v)| k.len() > 128 || v.len() > 4096) {
        return Err(ApiError::invalid(
            "invalid_config",
            "at most 256 keys, keys up to 128 and values up to 4096 bytes",
        ));
    }
    let keys: Vec<String> = config.keys().cloned().collect();
    state.plugins.configure(&tenant, slot, config).await?;
    // The keys only: values may be secrets.
    audit::record(
        &state,
        &admin.actor,
        "plugin.configure",
        Some(&tenant),
        Some(slot),
        None,
        Some(format!("keys: {}", keys.join(", "))),
    )
    .await;
    Ok(slot_view(&state, &tenant, slot))
}
