//! The operator console's web UI: static files (the page's own from
//! `console/src/`, uPlot vendored into `host/static/console/` by
//! `npm --prefix console run build`) compiled into the binary and served under `SWITCHYARD_CONSOLE_PREFIX` (default
//! `/console`) when an admin token or a console role claim is configured.
//! The page reads the admin API with the token the operator signs in with
//! (kept in `sessionStorage`, sent as `Authorization: Bearer`); these files
//! themselves are public and hold no data. Every answer carries a strict
//! Content-Security-Policy: scripts, styles and requests from this origin
//! only, nothing inline, no framing.
//!
//! Not in the OpenAPI document: the prefix is a setting, and the files are
//! the UI, not the API.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The console's policy: everything from this origin, nothing inline, no
/// plugins, no framing, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `(name, body, content type)` of every file served.
const FILES: &[(&str, &[u8], &str)] = &[
    (
        "index.html",
        include_bytes!("../../../console/src/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "console.js",
        include_bytes!("../../../console/src/console.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "console.css",
        include_bytes!("../../../console/src/console.css"),
        "text/css; charset=utf-8",
    ),
    (
        "uPlot.iife.min.js",
        include_bytes!("../../static/console/uPlot.iife.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "uPlot.min.css",
        include_bytes!("../../static/console/uPlot.min.css"),
        "text/css; charset=utf-8",
    ),
];

fn serve(name: &str) -> Response {
    let Some((_, body, content_type)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("not_found", "no such console file").into_response();
    };
    let mut res = (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// The console's routes under `prefix` (checked by the config: `/a[/b[/c]]`).
pub fn router(prefix: &str) -> Router<AppState> {
    let slash = format!("{prefix}/");
    Router::new()
        .route(
            prefix,
            get(move || {
                let to = slash.clone();
                async move { Redirect::permanent(&to) }
            }),
        )
        .route(&format!("{prefix}/"), get(|| async { serve("index.html") }))
        .route(
            &format!("{prefix}/{{file}}"),
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn every_file_is_served_with_the_policy_and_others_are_not() {
        for (name, _, _) in FILES {
            let res = serve(name);
            assert_eq!(res.status(), StatusCode::OK, "{name}");
            assert_eq!(
                res.headers().get(header::CONTENT_SECURITY_POLICY),
                Some(&HeaderValue::from_static(CSP))
            );
        }
        for name in ["", "../Cargo.toml", "index.htm", "console.js.map"] {
            assert_eq!(serve(name).status(), StatusCode::NOT_FOUND, "{name}");
        }
    }
}
