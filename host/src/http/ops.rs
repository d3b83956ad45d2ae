//! `/health`, `/ready` and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Alive: the process answers.
pub async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready: every dependency answers. 503 names the one that does not.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.streams.shutdown.is_cancelled() {
        return ApiError::unavailable("shutting_down", "this node is shutting down")
            .into_response();
    }
    let mut problems = Vec::new();
    if let Err(e) = state.backend.store.ping().await {
        let name = if state.backend.redis.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        problems.push(format!("{name}: {e}"));
    }
    if let Some(redis) = &state.backend.redis {
        if let Err(e) = redis.ping().await {
            problems.push(format!("redis: {e}"));
        }
    }
    if problems.is_empty() {
        let body = serde_json::json!({ "status": "ready", "mode": state.config.mode_name() });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        ApiError::unavailable("not_ready", problems.join("; ")).into_response()
    }
}

/// Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = state.metrics.render();
        state.plugins.render_metrics(&mut text);
        text
    })
        .into_response()
}
