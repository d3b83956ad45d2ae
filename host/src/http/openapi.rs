//! `GET /openapi.json`: the API description (OpenAPI 3.1).
//!
//! Its operations are the router's: each handler declares its method, path,
//! operation id and tag (`#[utoipa::path]`), and `router::routes()` both
//! routes those handlers and lists them here, so a route cannot be served
//! without being described or described without being served. What each
//! operation takes and answers (parameters, bodies, responses) and the
//! shared components are still written out in `openapi.json`, by path and
//! method, and joined to the declared operations once per process; the
//! unit tests below fail when an operation has no such description or a
//! description no operation. `tests/openapi.rs` runs schemathesis against a
//! running node in both modes (status codes, response schemas, content
//! types, headers, no server errors).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The hand-written part: operation details by path and method, and the
/// components.
const DETAILS: &str = include_str!("openapi.json");

/// The document, as served.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let declared = super::router::routes().into_openapi();
    let details: Value = serde_json::from_str(DETAILS).unwrap_or_default();
    serde_json::to_string(&document(&declared, details)).unwrap_or_default()
});

/// The declared operations, each with its details: those it declares, or
/// (for an operation not yet declared in full) those written in
/// `openapi.json`; the components written there, with those declared in
/// code put over them. A description of no declared operation is left out
/// (the tests forbid it, and an operation declared nowhere in full).
fn document(declared: &utoipa::openapi::OpenApi, mut details: Value) -> Value {
    let declared_paths = serde_json::to_value(&declared.paths).unwrap_or_default();
    let written = details
        .get_mut("paths")
        .map(Value::take)
        .unwrap_or_default();
    let mut paths = Map::new();
    for (path, item) in declared_paths.as_object().into_iter().flatten() {
        let mut out = Map::new();
        for (method, op) in item.as_object().into_iter().flatten() {
            let merged = match written[path][method].as_object() {
                Some(w) => {
                    let mut w = w.clone();
                    // The declaration wins for what it says.
                    for key in ["operationId", "tags"] {
                        if let Some(v) = op.get(key) {
                            w.insert(key.into(), v.clone());
                        }
                    }
                    Value::Object(w)
                }
                None => op.clone(),
            };
            out.insert(method.clone(), merged);
        }
        // Path-level parts of a written description (shared parameters).
        for (key, v) in written[path].as_object().into_iter().flatten() {
            if !METHODS.contains(&key.as_str()) {
                out.insert(key.clone(), v.clone());
            }
        }
        paths.insert(path.clone(), Value::Object(out));
    }
    details["paths"] = Value::Object(paths);
    let components = &mut details["components"];
    let mut put = |kind: &str, name: &str, v: Value| {
        if !components[kind].is_object() {
            components[kind] = Value::Object(Map::new());
        }
        components[kind][name] = v;
    };
    if let Some(c) = &declared.components {
        for (name, schema) in &c.schemas {
            put(
                "schemas",
                name,
                serde_json::to_value(schema).unwrap_or_default(),
            );
        }
    }
    for (name, schema) in super::doc::shared_schemas() {
        put(
            "schemas",
            &name,
            serde_json::to_value(schema).unwrap_or_default(),
        );
    }
    for (name, response) in super::doc::error_responses() {
        put(
            "responses",
            name,
            serde_json::to_value(response).unwrap_or_default(),
        );
    }
    details
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `GET /openapi.json`: public, cacheable for an hour (it changes only with
/// the binary).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "ops",
    summary = "This description (OpenAPI 3.1).",
    security(),
    responses(
        (status = 200, description = "The document.", body = Object),
        (status = 431, response = super::doc::HeadTooLarge),
    )
)]
pub async fn document_route() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::{DETAILS, DOCUMENT, METHODS};

    fn document() -> Value {
        serde_json::from_str(&DOCUMENT).expect("the document is JSON")
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

    /// Each declared operation has its details from exactly one place: its
    /// declaration (responses declared) or `openapi.json`; and nothing is
    /// written there for an operation the router does not declare.
    #[test]
    fn every_declared_route_is_described_once_and_nothing_else() {
        let api = crate::http::router::routes().into_openapi();
        let paths = serde_json::to_value(&api.paths).expect("paths");
        let declared = routes_in_document(&serde_json::json!({ "paths": &paths }));
        assert!(declared.len() > 30, "the router declares only {declared:?}");
        let written: Value = serde_json::from_str(DETAILS).expect("openapi.json is JSON");
        let described = routes_in_document(&written);
        let extra: Vec<_> = described.difference(&declared).collect();
        assert!(
            extra.is_empty(),
            "described in openapi.json but not routed: {extra:?}"
        );
        for (method, path) in &declared {
            let in_code = paths[path][method]["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty());
            let in_file = described.contains(&(method.clone(), path.clone()));
            assert!(
                in_code != in_file,
                "{method} {path}: details declared in code: {in_code}, written in openapi.json: {in_file} (exactly one)"
            );
            if in_file {
                // Declared and written operation ids agree (clients are
                // generated from them).
                assert_eq!(
                    paths[path][method]["operationId"],
                    written["paths"][path][method]["operationId"],
                    "{method} {path}"
                );
            }
        }
        // What is served is what is declared.
        assert_eq!(routes_in_document(&document()), declared);
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
