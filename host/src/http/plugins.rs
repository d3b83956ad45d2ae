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
use crate::plugins::registry::{ShadowExample, SlotView, DISAGREEMENT_KINDS};
use crate::plugins::{Mode, PluginError, Slot};
use crate::state::AppState;
use crate::store::plugins::UploadRow;

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
        let by = crate::plugins::registry::By {
            actor: Some(admin.actor.clone()),
            message: message.clone(),
        };
        let job =
            state
                .plugins
                .install_in_background(&tenant, slot, body.to_vec(), "admin", mode, by);
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
    let by = crate::plugins::registry::By {
        actor: Some(admin.actor.clone()),
        message: message.clone(),
    };
    state
        .plugins
        .install_as(&tenant, slot, body.to_vec(), "admin", mode, &by)
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

/// The query of `POST /admin/plugins/{slot}/rollback`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `rollback`; this declares it.
pub struct RollbackParams {
    /// One of the slot's earlier versions (its content hash, as `history`
    /// lists it); without it, the previous one.
    #[param(
        required = false,
        min_length = 64,
        max_length = 64,
        pattern = "^[0-9a-f]{64}$"
    )]
    version: String,
}

/// A content hash from the query: 64 lowercase hex digits.
fn version_param(q: &QueryPairs) -> Result<Option<String>, ApiError> {
    match q.get("version") {
        None => Ok(None),
        Some(v)
            if v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(Some(v.to_string()))
        }
        Some(_) => Err(ApiError::invalid(
            "invalid_version",
            "`version` is a content hash: 64 lowercase hexadecimal digits",
        )),
    }
}

/// `POST /admin/plugins/{slot}/rollback`: the previous version again, or
/// any earlier one kept (`?version=`).
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/rollback",
    operation_id = "rollbackPlugin",
    tag = "plugins",
    summary = "The previous version again, or any earlier version kept (`version`).",
    description = "409 when there is none, or `version` is not one of the slot's earlier versions (`history`). Rolling back to an older one puts the active version into the history.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, RollbackParams),
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
    let version = version_param(&q)?;
    let row = state.plugins.rollback_to(&tenant, slot, version).await?;
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

// ---- the console's plugin pages: history, shadow diffs, replay, logs ----

/// One kept version of a slot, and what the upload history says of it.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginVersion)]
struct VersionView {
    /// Its content hash.
    version: String,
    /// `active`, `shadow`, `previous` (kept for rollback) or `compiling`.
    state: &'static str,
    /// Its latest upload (who, when, message, origin); null: none recorded.
    #[schema(required = true)]
    upload: Option<UploadRow>,
}

/// What `GET /admin/plugins/{slot}/versions` answers.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginVersions)]
struct VersionsView {
    #[schema(value_type = Slot)]
    slot: &'static str,
    #[schema(required = true)]
    tenant: Option<String>,
    /// The file in the plugins dir that owns this slot (it overwrites an
    /// upload when it changes, and at start when it is newer); null: none.
    #[schema(required = true)]
    managed_by: Option<String>,
    /// The kept versions: compiling, active, shadow, then earlier ones
    /// newest first (any of them a rollback target).
    versions: Vec<VersionView>,
    /// Every component the slot was given, newest first (at most 100):
    /// uploads, watched-dir files and bundled ones, installed or refused.
    uploads: Vec<UploadRow>,
}

/// `GET /admin/plugins/{slot}/versions`: a slot's kept versions and its
/// upload history.
#[utoipa::path(
    get,
    path = "/admin/plugins/{slot}/versions",
    operation_id = "listPluginVersions",
    tag = "plugins",
    summary = "A slot's kept versions (each a rollback target) and its upload history: who, when, message, origin, installed or refused with the error.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam),
    responses(
        (status = 200, description = "The versions and uploads.", body = VersionsView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn versions(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let view = state.plugins.describe_slot(&tenant, slot);
    let uploads = state
        .backend
        .plugins
        .plugin_uploads(&tenant, slot.as_str(), 100)
        .await?;
    let row = state.plugins.row(&tenant, slot);
    let mut kept: Vec<(String, &'static str)> = Vec::new();
    if let Some(c) = view
        .as_ref()
        .and_then(|v| v.details.as_ref())
        .and_then(|d| d.compiling.as_ref())
    {
        kept.push((c.version.clone(), "compiling"));
    }
    if let Some(a) = &row.active {
        kept.push((a.clone(), "active"));
    }
    if let Some(s) = &row.shadow {
        kept.push((s.clone(), "shadow"));
    }
    kept.extend(row.history.iter().map(|h| (h.clone(), "previous")));
    let versions = kept
        .into_iter()
        .map(|(version, st)| VersionView {
            upload: uploads
                .iter()
                .find(|u| u.hash == version && u.outcome == "installed")
                .or_else(|| uploads.iter().find(|u| u.hash == version))
                .cloned(),
            version,
            state: st,
        })
        .collect();
    let managed_by = crate::plugins::watch::managed_file(&state.config.plugins_dir, &tenant, slot)
        .map(|p| p.display().to_string());
    Ok(axum::Json(VersionsView {
        slot: slot.as_str(),
        tenant: (!tenant.is_empty()).then_some(tenant),
        managed_by,
        versions,
        uploads,
    })
    .into_response())
}

/// The query of the shadow diff routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by the handlers; this declares it.
pub struct DiffParams {
    /// Only disagreements of this kind: `answer` (both answered,
    /// differently), or how the candidate failed (`trap`, `timeout`,
    /// `memory`, `bad_output`).
    #[param(required = false, inline)]
    kind: DisagreementKind,
}

/// The kinds of disagreement.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisagreementKind {
    /// Both answered, differently.
    Answer,
    /// The candidate trapped.
    Trap,
    /// The candidate ran out of time.
    Timeout,
    /// The candidate ran out of memory.
    Memory,
    /// The candidate's answer broke the output rules.
    BadOutput,
}

fn kind_param(q: &QueryPairs) -> Result<Option<&'static str>, ApiError> {
    match q.get("kind").filter(|k| !k.is_empty()) {
        None => Ok(None),
        Some(k) => DISAGREEMENT_KINDS
            .iter()
            .find(|x| **x == k)
            .map(|x| Some(*x))
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_kind",
                    format!("`kind` is one of {}", DISAGREEMENT_KINDS.join(", ")),
                )
            }),
    }
}

/// What `GET /admin/plugins/{slot}/shadow` answers.
#[derive(Serialize, ToSchema)]
#[schema(as = ShadowDiff)]
struct DiffView {
    /// The candidate's content hash; null: no candidate runs (and nothing
    /// else is there).
    #[schema(required = true)]
    version: Option<String>,
    /// Answers compared with the active version's.
    compared: u64,
    /// Of those, how many differed.
    disagreed: u64,
    /// Calls of the candidate that failed.
    failed: u64,
    /// The disagreements kept (the latest 50 on this node), of `kind` when
    /// asked, oldest first.
    disagreements: Vec<ShadowExample>,
}

fn diffs(
    state: &AppState,
    tenant: &str,
    slot: Slot,
    kind: Option<&str>,
) -> Result<DiffView, ApiError> {
    let Some(report) = state.plugins.shadow_report(tenant, slot) else {
        return Ok(DiffView {
            version: None,
            compared: 0,
            disagreed: 0,
            failed: 0,
            disagreements: Vec::new(),
        });
    };
    Ok(DiffView {
        version: Some(report.version),
        compared: report.compared,
        disagreed: report.disagreed,
        failed: report.failed,
        disagreements: report
            .examples
            .into_iter()
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .collect(),
    })
}

/// `GET /admin/plugins/{slot}/shadow`: the shadow candidate's
/// disagreements with the active version.
#[utoipa::path(
    get,
    path = "/admin/plugins/{slot}/shadow",
    operation_id = "listShadowDiffs",
    tag = "plugins",
    summary = "The shadow candidate's disagreements: each input, the active and the candidate answer, both latencies.",
    description = "Counts since the candidate started, and the latest 50 disagreements this node saw (comparisons run where the calls run: each node keeps its own). With no candidate, `version` is null and the list empty.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, DiffParams),
    responses(
        (status = 200, description = "The disagreements.", body = DiffView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn shadow_diffs(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let kind = kind_param(&q)?;
    Ok(axum::Json(diffs(&state, &tenant, slot, kind)?).into_response())
}

/// A cases file (`plugin test`), as `GET /admin/plugins/{slot}/shadow/cases`
/// answers it.
#[derive(Serialize, ToSchema)]
#[schema(as = CasesFile)]
struct CasesView {
    /// The slot.
    #[schema(value_type = Slot)]
    slot: &'static str,
    /// The slot's configuration (as every case's).
    config: BTreeMap<String, String>,
    /// One case per disagreement: its input, and the active version's
    /// answer as what to expect.
    cases: Vec<serde_json::Value>,
}

/// `GET /admin/plugins/{slot}/shadow/cases`: the disagreements as a cases
/// file, each one a `plugin test` case expecting the active version's
/// answer.
#[utoipa::path(
    get,
    path = "/admin/plugins/{slot}/shadow/cases",
    operation_id = "shadowDiffCases",
    tag = "plugins",
    summary = "The shadow candidate's disagreements as a cases file for `switchyard plugin test` (each case expects the active version's answer).",
    description = "An attachment (`Content-Disposition`). The configuration is the slot's: values may be secrets, so it takes the same rights as `GET /admin/plugins`. With no candidate, no cases.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, DiffParams),
    responses(
        (status = 200, description = "The cases file.", body = CasesView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn shadow_cases(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let kind = kind_param(&q)?;
    let d = diffs(&state, &tenant, slot, kind)?;
    let row = state.plugins.row(&tenant, slot);
    let cases = d
        .disagreements
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": format!(
                    "shadow {} disagreed ({}) at {}: active answered this",
                    d.version.as_deref().map_or("", |v| &v[..12.min(v.len())]),
                    e.kind,
                    e.at
                ),
                "input": e.input,
                "expect": e.active,
            })
        })
        .collect();
    let file = CasesView {
        slot: slot.as_str(),
        config: row.config,
        cases,
    };
    let name = format!(
        "{}{}-shadow-cases.json",
        slot.as_str(),
        if tenant.is_empty() {
            String::new()
        } else {
            format!("-{tenant}")
        }
    );
    Ok((
        [(
            axum::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )],
        axum::Json(file),
    )
        .into_response())
}

/// The query of `POST /admin/plugins/{slot}/replay`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `replay`; this declares it.
pub struct ReplayParams {
    /// The version to replay: one the slot keeps (its content hash); without
    /// it, the shadow candidate.
    #[param(
        required = false,
        min_length = 64,
        max_length = 64,
        pattern = "^[0-9a-f]{64}$"
    )]
    version: String,
    /// How many recorded inputs (1 to 1000, default 200).
    #[param(required = false, minimum = 1, maximum = 1000, default = 200)]
    limit: u64,
}

/// What `POST /admin/plugins/{slot}/replay` answers.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginReplay)]
struct ReplayView {
    /// The version replayed.
    version: String,
    /// Recorded inputs whose answer differs from what was decided then.
    differ: usize,
    /// The report `switchyard plugin replay` prints.
    report: String,
}

/// One replay at a time per node: a replay compiles the version and runs
/// up to 1,000 calls on a blocking thread.
static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `POST /admin/plugins/{slot}/replay`: a kept version over the inputs the
/// server recorded for the slot, with `plugin replay`'s summary.
#[utoipa::path(
    post,
    path = "/admin/plugins/{slot}/replay",
    operation_id = "replayPlugin",
    tag = "plugins",
    summary = "Replays a kept version (the shadow candidate by default) over recorded inputs; the summary `switchyard plugin replay` prints.",
    description = "Decisions (bid validator), messages (notification shaper), stream requests (stream authorizer) or the latest events (event filter, for a subscription with no parameters, against the active filter) of the tenant, or of every tenant for the default slot. Changes nothing; one replay at a time per node (409 `replay_running` while one runs); 409 when no candidate runs and no `version` is named, or the version is not kept.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, ReplayParams),
    responses(
        (status = 200, description = "The summary.", body = ReplayView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Refused),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    _operator: Admin,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    use crate::plugins::cli;
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let limit = match q.get("limit") {
        None => 200,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_limit", "`limit` is 1 to 1000"))?,
    };
    let row = state.plugins.row(&tenant, slot);
    let version = match version_param(&q)? {
        Some(v) => v,
        None => row.shadow.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "no candidate is running in shadow; name a kept `version`",
            )
        })?,
    };
    let kept = row.active.as_ref() == Some(&version)
        || row.shadow.as_ref() == Some(&version)
        || row.history.contains(&version);
    if !kept {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "that version is not one the slot keeps (active, shadow or history)",
        ));
    }
    let Ok(_permit) = REPLAYS.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replay_running",
            "a replay is running on this node; try again when it is done",
        ));
    };
    let bytes = state
        .backend
        .plugins
        .plugin_wasm(&version)
        .await?
        .ok_or_else(|| ApiError::internal("the version's component is missing from the store"))?;
    let config = row.config.clone();
    let scope = (!tenant.is_empty()).then_some(tenant.as_str());
    let failed = |e: crate::store::Error| ApiError::from(e);
    // The node's own engine: its limits, and its code cache (the version
    // was compiled when it was uploaded).
    let host = state.plugins.wasm().clone();
    let run = match slot {
        Slot::BidValidator => {
            let recorded: Vec<cli::Recorded> = state
                .backend
                .bids
                .decided(scope, limit)
                .await
                .map_err(failed)?
                .into_iter()
                .filter_map(|(bid, input)| {
                    Some(cli::Recorded {
                        bid,
                        input: serde_json::from_str(&input).ok()?,
                    })
                })
                .collect();
            tokio::task::spawn_blocking(move || cli::replay_bids(&host, &bytes, &recorded, config))
                .await
        }
        Slot::NotificationShaper => {
            let recorded = state
                .backend
                .plugins
                .recorded_messages(scope, limit)
                .await
                .map_err(failed)?;
            tokio::task::spawn_blocking(move || {
                cli::replay_messages(&host, &bytes, &recorded, config)
            })
            .await
        }
        Slot::StreamAuthorizer => {
            let recorded = state
                .backend
                .plugins
                .recorded_stream_requests(scope, limit)
                .await
                .map_err(failed)?;
            tokio::task::spawn_blocking(move || {
                cli::replay_requests(&host, &bytes, &recorded, config)
            })
            .await
        }
        Slot::EventFilter => {
            let mut events = Vec::new();
            for (t, head) in state.backend.store.heads().await.map_err(failed)? {
                if scope.is_some_and(|want| want != t) {
                    continue;
                }
                events.extend(
                    state
                        .backend
                        .store
                        .range(&t, head.saturating_sub(limit as u64), head)
                        .await
                        .map_err(failed)?,
                );
            }
            let mut baselines = BTreeMap::new();
            if let Some(active) = row.active.as_ref().filter(|a| **a != version) {
                if let Some(b) = state.backend.plugins.plugin_wasm(active).await? {
                    baselines.insert(
                        tenant.clone(),
                        cli::Baseline {
                            tag: format!("event-filter@{}", &active[..12]),
                            bytes: b,
                            config: row.config.clone(),
                        },
                    );
                }
            }
            tokio::task::spawn_blocking(move || {
                cli::replay_events(&host, &bytes, &events, &[], config, &baselines)
            })
            .await
        }
    };
    let (report, differ) = run
        .map_err(|e| ApiError::internal(format!("the replay stopped: {e}")))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "replay_failed",
                format!("the replay could not run: {e}"),
            )
        })?;
    Ok(axum::Json(ReplayView {
        version,
        differ,
        report,
    })
    .into_response())
}

/// The query of `GET /admin/plugins/{slot}/logs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `logs`; this declares it.
pub struct LogParams {
    /// The version (its content hash); without it, the active one.
    #[param(
        required = false,
        min_length = 64,
        max_length = 64,
        pattern = "^[0-9a-f]{64}$"
    )]
    version: String,
    /// Only lines after this one (the `seq` of the last line read).
    #[param(required = false, minimum = 0)]
    after: u64,
}

/// What `GET /admin/plugins/{slot}/logs` answers.
#[derive(Serialize, ToSchema)]
#[schema(as = PluginLogs)]
struct LogsView {
    /// The version.
    #[schema(required = true)]
    version: Option<String>,
    /// Its latest lines on this node (at most 200 kept), oldest first.
    lines: Vec<crate::plugins::logs::LogLine>,
}

/// `GET /admin/plugins/{slot}/logs`: a version's latest log lines on this
/// node, for tailing (`after`).
#[utoipa::path(
    get,
    path = "/admin/plugins/{slot}/logs",
    operation_id = "pluginLogs",
    tag = "plugins",
    summary = "A version's latest log lines on this node (the active one by default), after `after`.",
    description = "A bounded ring per tenant, slot and version (200 lines, in memory, this node's calls only); the slot's configuration values, JWTs and `Bearer` credentials are redacted before a line is kept.",
    security(("adminToken" = []), ("operatorToken" = [])),
    params(("slot" = Slot, Path), PluginTenantParam, LogParams),
    responses(
        (status = 200, description = "The lines.", body = LogsView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    _reader: AdminRead,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let slot = slot(&name)?;
    let tenant = tenant(&state, &q).await?;
    let after = match q.get("after") {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("invalid_after", "`after` is a line's `seq`"))?,
    };
    let version = match version_param(&q)? {
        Some(v) => Some(v),
        None => state.plugins.row(&tenant, slot).active,
    };
    let lines = match &version {
        None => Vec::new(),
        Some(v) => {
            let label = if tenant.is_empty() {
                format!("{}#{}", slot.as_str(), &v[..12])
            } else {
                format!("{}@{}#{}", slot.as_str(), tenant, &v[..12])
            };
            crate::plugins::logs::lines(&label, after)
        }
    };
    Ok(axum::Json(LogsView { version, lines }).into_response())
}
