//! `GET /openapi.json`: the API description (OpenAPI 3.1), a hand-written
//! document compiled into the binary.
//!
//! It is kept true by tests rather than generated from the handlers: the unit
//! test below checks that every route of `router.rs` (path and method) is in
//! the document and the other way round, and that the plugin slots it names
//! are the host's; `tests/openapi.rs` runs schemathesis against a running
//! node in both modes (status codes, response schemas, content types,
//! headers, no server errors).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`: public, cacheable for an hour (it changes only with
/// the binary).
pub async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// `(method, path)` of every `.route(...)` in `router.rs`, read from its
    /// source: axum cannot list a router's routes.
    fn routes_in_router() -> BTreeSet<(String, String)> {
        let src = include_str!("router.rs");
        let mut out = BTreeSet::new();
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's text, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a .route( call closes");
            let call = &rest[..end];
            rest = &rest[end..];
            // `.route("/path", ...)`, not another method of that name.
            let Some(path) = call.trim_start().strip_prefix('"') else {
                continue;
            };
            let path = path.split('"').next().unwrap_or_default();
            for m in METHODS {
                let called = call.match_indices(&format!("{m}(")).any(|(i, _)| {
                    // `get(`, `.post(`, `routing::delete(`, not `max(`/`forget(`.
                    i == 0 || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                });
                if called {
                    out.insert((m.to_string(), path.to_string()));
                }
            }
        }
        out
    }

    fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let doc = document();
        let router = routes_in_router();
        assert!(router.len() > 30, "found only {router:?} in router.rs");
        let described = routes_in_document(&doc);
        let missing: Vec<_> = router.difference(&described).collect();
        let extra: Vec<_> = described.difference(&router).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "openapi.json and router.rs disagree: routes not described {missing:?}; described but not routed {extra:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_operation_complete() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                let at = format!("{m} {path}");
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: operationId"));
                assert!(ids.insert(id.to_string()), "{at}: operationId {id} twice");
                let security = op["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: security (empty for public)"));
                for requirement in security {
                    for name in requirement.as_object().expect("requirement").keys() {
                        assert!(schemes.contains_key(name), "{at}: unknown scheme {name}");
                    }
                }
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|c| c.starts_with('2')),
                    "{at}: no success answer"
                );
                // Every error answer is the one error body.
                for (code, r) in responses.iter().filter(|(c, _)| !c.starts_with('2')) {
                    let r = match r["$ref"].as_str() {
                        Some(name) => {
                            let name = name.rsplit('/').next().expect("a reference names");
                            &doc["components"]["responses"][name]
                        }
                        None => r,
                    };
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at}: {code} is not the error body"
                    );
                }
            }
        }
    }

    #[test]
    fn the_slots_are_the_hosts() {
        let doc = document();
        let described: BTreeSet<&str> = doc["components"]["schemas"]["SlotName"]["enum"]
            .as_array()
            .expect("slot names")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let host: BTreeSet<&str> = crate::plugins::Slot::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(described, host);
    }
}
