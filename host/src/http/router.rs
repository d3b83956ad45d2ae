//! Routes (declared once, with the OpenAPI operations they answer), body
//! limit, CORS and per-route metrics.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::{
    admin, audit, console, console_ui, events, messages, openapi, ops, plugins, products, sources,
    streams, topics, web,
};
use crate::config::Cors;
use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API, declared once: each handler's `#[utoipa::path]`
/// names its method, path and operation, and this list registers the
/// handlers. axum routes what it holds, and the OpenAPI document describes
/// exactly what it holds (`openapi.rs`), as does the lean path's check for
/// stream routes (`stream_route`).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(web::index))
        .routes(routes!(web::app))
        .routes(routes!(web::client))
        .routes(routes!(web::style))
        .routes(routes!(web::demo_token))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::document_route))
        .routes(routes!(admin::list_tenants, admin::create_tenant))
        .routes(routes!(admin::move_tenant))
        .routes(routes!(admin::list_databases))
        .routes(routes!(admin::create_token))
        .routes(routes!(sources::list))
        .routes(routes!(audit::list))
        .routes(routes!(console::topics))
        .routes(routes!(console::user_streams, console::disconnect))
        .routes(routes!(console::stats))
        .routes(routes!(console::whoami))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::upload).layer(DefaultBodyLimit::max(plugins::MAX_COMPONENT_BYTES)))
        .routes(routes!(plugins::deactivate))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::promote))
        .routes(routes!(plugins::shadow_diffs, plugins::drop_shadow))
        .routes(routes!(plugins::configure))
        .routes(routes!(plugins::versions))
        .routes(routes!(plugins::shadow_cases))
        .routes(routes!(plugins::replay))
        .routes(routes!(plugins::logs))
        .routes(routes!(console::publish_test))
        .routes(routes!(console::tail_token))
        .routes(routes!(events::publish))
        .routes(routes!(events::publish_batch))
        .routes(routes!(topics::state))
        .routes(routes!(topics::events))
        .routes(routes!(topics::members))
        .routes(routes!(streams::multi))
        .routes(routes!(streams::tenant))
        .routes(routes!(streams::user))
        .routes(routes!(streams::product))
        .routes(routes!(products::create))
        .routes(routes!(products::get))
        .routes(routes!(products::bid))
        .routes(routes!(products::get_bid))
        .routes(routes!(messages::post))
        .routes(routes!(messages::list))
        .routes(routes!(messages::mark_read))
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors);
    let limit = state.config.max_body_bytes;
    let (api, _) = routes().split_for_parts();
    let api = match &state.config.console_prefix {
        Some(prefix) => api.merge(console_ui::router(prefix)),
        None => api,
    };
    let api = api
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

/// The path templates of the routes that answer with an event stream (the
/// operations tagged `streams`), split into segments; `{…}` is any one
/// non-empty segment.
fn stream_templates() -> &'static [Vec<String>] {
    static TEMPLATES: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let api = routes().into_openapi();
        api.paths
            .paths
            .iter()
            .filter(|(_, item)| {
                item.get
                    .as_ref()
                    .and_then(|op| op.tags.as_ref())
                    .is_some_and(|tags| tags.iter().any(|t| t == "streams"))
            })
            .map(|(path, _)| path.split('/').map(str::to_string).collect())
            .collect()
    })
}

/// Whether `path` (a query or fragment, if any, ignored, as the parsed URI
/// drops them) is one of the stream routes.
pub(crate) fn stream_route(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    stream_templates().iter().any(|template| {
        let mut segments = path.split('/');
        template.iter().all(|t| match segments.next() {
            Some(s) if t.starts_with('{') => !s.is_empty(),
            Some(s) => s == t,
            None => false,
        }) && segments.next().is_none()
    })
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

#[cfg(test)]
mod tests {
    use super::stream_route;

    #[test]
    fn the_stream_routes_are_the_declared_ones() {
        for p in [
            "/events",
            "/events?tenant=a&topic=b",
            "/events/users/u1",
            "/events/tenants/acme",
            "/events/products/p1?x=1",
            "/events/users/u1#frag",
        ] {
            assert!(stream_route(p), "{p}");
        }
        for p in [
            "/eventsx",
            "/events/",
            "/events/users/",
            "/events/users/u1/x",
            "/events/tenants/#emo",
            "/events/other/u1",
            "/api/events",
            "/",
        ] {
            assert!(!stream_route(p), "{p}");
        }
    }
}
