//! Routes, body limit, CORS and per-route metrics.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{admin, events, messages, openapi, ops, plugins, products, streams, topics, web};
use crate::config::Cors;
use crate::error::ApiError;
use crate::state::AppState;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors);
    let limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app))
        .route("/switchyard.js", get(web::client))
        .route("/style.css", get(web::style))
        .route("/api/demo/token", post(web::demo_token))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::document))
        .route(
            "/admin/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/plugins", get(plugins::list))
        .route(
            "/admin/plugins/{slot}",
            put(plugins::upload)
                .layer(DefaultBodyLimit::max(plugins::MAX_COMPONENT_BYTES))
                .delete(plugins::deactivate),
        )
        .route("/admin/plugins/{slot}/rollback", post(plugins::rollback))
        .route("/admin/plugins/{slot}/promote", post(plugins::promote))
        .route(
            "/admin/plugins/{slot}/shadow",
            axum::routing::delete(plugins::drop_shadow),
        )
        .route("/admin/plugins/{slot}/config", put(plugins::configure))
        .route("/api/events", post(events::publish))
        .route("/api/events/batch", post(events::publish_batch))
        .route("/api/topics/{topic}", get(topics::state))
        .route("/api/topics/{topic}/events", get(topics::events))
        .route("/events", get(streams::multi))
        .route("/events/tenants/{slug}", get(streams::tenant))
        .route("/events/users/{id}", get(streams::user))
        .route("/events/products/{id}", get(streams::product))
        .route("/api/products", post(products::create))
        .route("/api/products/{id}", get(products::get))
        .route("/api/products/{id}/bids", post(products::bid))
        .route("/api/bids/{id}", get(products::get_bid))
        .route("/api/messages", post(messages::post))
        .route("/api/users/{id}/messages", get(messages::list))
        .route("/api/users/{id}/messages/read", post(messages::mark_read))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::deadline::body_deadline,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(limit));
    let api = match cors {
        Some(c) => api.layer(c),
        None => api,
    };
    api.with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Counts requests by route template and status class, and times them to
/// the response head (streams are timed to their first byte, not their end).
/// The span names the method and route template only: never the path's
/// values, the query (it may hold `?token=`), headers or bodies.
#[tracing::instrument(
    name = "http.request",
    skip_all,
    fields(method = %req.method(), route = tracing::field::Empty, status = tracing::field::Empty)
)]
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    let res = next.run(req).await;
    span.record("status", res.status().as_u16());
    let class = (res.status().as_u16() / 100).clamp(1, 5) as usize;
    state
        .metrics
        .request(method, &route, class, started.elapsed());
    if class == 5 {
        state.metrics.http_errors.inc();
    }
    res
}

fn cors(policy: &Cors) -> Option<CorsLayer> {
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER]);
    match policy {
        Cors::Off => None,
        Cors::Any => Some(base.allow_origin(AllowOrigin::any())),
        Cors::List(origins) => {
            let list: Vec<HeaderValue> = origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            Some(
                base.allow_origin(AllowOrigin::list(list))
                    .allow_credentials(true),
            )
        }
    }
}
