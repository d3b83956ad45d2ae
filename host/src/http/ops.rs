//! `/health`, `/ready` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::doc::{Forbidden, HeadTooLarge, Unauthorized, Unavailable};
use crate::backend::CHECK_TIMEOUT;
use crate::error::ApiError;
use crate::http::extract::{bearer, constant_time_eq};
use crate::state::AppState;

/// What `/health` answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// `ok`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process answers.
    Ok,
}

/// What `/ready` answers when every dependency answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// Always `ready`.
    pub status: ReadyStatus,
    /// The node's mode.
    pub mode: ModeName,
    /// Each configured source's state on this node (a failing source does
    /// not make the node unready: it serves streams all the same).
    pub sources: Vec<crate::sources::SourceState>,
}

/// `ready`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Every dependency answers.
    Ready,
}

/// A node's mode.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// SQLite and an in-process bus.
    Embedded,
    /// Redis and Postgres.
    Cluster,
}

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "ops",
    summary = "Alive: the process answers.",
    security(),
    responses(
        (status = 200, description = "Alive.", body = Health),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Ready: every dependency answers. 503 names each one that does not.
/// Answers within a second: the mode asks its dependencies at once, each
/// within `CHECK_TIMEOUT`, and this bounds the whole as well.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "ops",
    summary = "Ready: every dependency answers.",
    description = "503 names the dependency that does not (or says the node is shutting down).",
    security(),
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 431, response = HeadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.streams.shutdown.is_cancelled() {
        return ApiError::unavailable("shutting_down", "this node is shutting down")
            .into_response();
    }
    let bound = CHECK_TIMEOUT + Duration::from_millis(100);
    let Ok(checks) = tokio::time::timeout(bound, state.backend.mode.check()).await else {
        return ApiError::unavailable(
            "not_ready",
            format!("the checks did not finish within {} ms", bound.as_millis()),
        )
        .into_response();
    };
    let problems: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if problems.is_empty() {
        let mode = match state.backend.mode.name() {
            "cluster" => ModeName::Cluster,
            _ => ModeName::Embedded,
        };
        let body = Ready {
            status: ReadyStatus::Ready,
            mode,
            sources: state.sources.states(),
        };
        (StatusCode::OK, Json(body)).into_response()
    } else {
        ApiError::unavailable("not_ready", problems.join("; ")).into_response()
    }
}

/// Prometheus text, for the metrics token or the admin token in
/// `Authorization: Bearer` (its series name every tenant), or for anyone
/// with `SWITCHYARD_METRICS_PUBLIC=true`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics.",
    description = "Its series name every tenant: it takes the metrics token or the admin token, unless `SWITCHYARD_METRICS_PUBLIC=true` serves it to anyone.",
    security(("metricsToken" = []), ("adminToken" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn metrics(State(state): State<AppState>, parts: Parts) -> Response {
    if let Err(e) = metrics_allowed(&state, &parts) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Whether `/metrics` may answer this request. The metrics token opens
/// nothing else (the admin API and the extractors never read it).
fn metrics_allowed(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    let config = &state.config;
    if config.metrics_public {
        return Ok(());
    }
    let accepted: Vec<&str> = [
        config.metrics_token.as_deref(),
        config.admin_token.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if accepted.is_empty() {
        return Err(ApiError::forbidden(
            "/metrics is closed: set SWITCHYARD_METRICS_TOKEN (or SWITCHYARD_ADMIN_TOKEN) and scrape \
             with it in Authorization: Bearer, or SWITCHYARD_METRICS_PUBLIC=true to serve it to anyone",
        ));
    }
    match bearer(parts) {
        None => Err(ApiError::unauthorized(
            "/metrics needs the metrics token (SWITCHYARD_METRICS_TOKEN) or the admin token in \
             Authorization: Bearer",
        )),
        Some(given) => {
            // Every candidate is compared, so the time taken does not tell
            // which token was near.
            let ok = accepted.iter().fold(false, |ok, t| {
                constant_time_eq(given.as_bytes(), t.as_bytes()) | ok
            });
            if ok {
                Ok(())
            } else {
                Err(ApiError::unauthorized("the metrics token is not valid"))
            }
        }
    }
}
