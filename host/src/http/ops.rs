//! `/health`, `/ready` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::CHECK_TIMEOUT;
use crate::error::ApiError;
use crate::state::AppState;

/// Alive: the process answers.
pub async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready: every dependency answers. 503 names each one that does not.
/// Answers within a second: the mode asks its dependencies at once, each
/// within `CHECK_TIMEOUT`, and this bounds the whole as well.
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
        let body = serde_json::json!({ "status": "ready", "mode": state.backend.mode.name() });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        ApiError::unavailable("not_ready", problems.join("; ")).into_response()
    }
}

/// Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
