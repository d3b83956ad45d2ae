//! `GET /openapi.json`: the API description (OpenAPI 3.1), generated from
//! the declarations.
//!
//! Each handler declares its operation in `#[utoipa::path]`: method, path,
//! operation id, tag, summary, security, parameters, request body and every
//! answer, with typed bodies (`ToSchema`) and the shared error answers and
//! parameters of `doc.rs`. `router::routes()` both routes those handlers and
//! collects their operations and schemas, so a route cannot be served
//! without being described or described without being served. The frame
//! (info, servers, tags, security schemes) is [`Frame`]; the document is
//! built once per process. The unit tests below check that every operation
//! is complete and every reference resolves; `tests/openapi.rs` runs
//! schemathesis against a running node in both modes (status codes,
//! response schemas, content types, headers, no server errors).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, OpenApi as Document};
use utoipa::{Modify, OpenApi};

/// The document's frame: what no operation declares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION
    ),
    servers((url = "/")),
    tags(
        (name = "events"),
        (name = "topics"),
        (name = "streams"),
        (name = "products"),
        (name = "messages"),
        (name = "admin"),
        (name = "plugins"),
        (name = "ops"),
        (name = "web")
    ),
    modifiers(&SecuritySchemes)
)]
struct Frame;

/// What the whole API has in common.
const DESCRIPTION: &str = "Switchyard's HTTP API: products and bids, messages, generic producers, topics over REST, Server-Sent Events streams, operations and administration. Every error is `{\"error\": {\"code\", \"message\"}}` with a fitting status. Amounts are integers in minor units; times are milliseconds since the Unix epoch. Client tokens (JWTs naming a user and a tenant) go in `Authorization: Bearer`, the `switchyard_token` cookie, or `?token=` (browsers' `EventSource` cannot set headers), in that order of preference; a request that changes something with the cookie must come from the server's own origin or one in `SWITCHYARD_CORS_ORIGINS` (else 403 `origin_refused`). The admin token is accepted only in `Authorization: Bearer`. Event types the server sends itself (`snapshot`, `reset`, `shutdown`, `heartbeat`, `auth.expired`, `error`, `open`, `switchyard.*`) cannot be published, nor the presence types (`occupancy`, `member.joined`, `member.left`, `members.truncated`, `presence.reset`); a topic's presence, `{topic}~occupancy` and `{topic}~members`, is read like the topic and written by the server only (publishing to it: 403 `presence_topic`). A request head over the limits (16 KiB by default) gets 431.";

/// The ways a request proves who it is (each operation's `security` names
/// the ones it takes).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let bearer = |description: &str| {
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
        };
        let schemes = [
            (
                "metricsToken",
                SecurityScheme::Http(bearer("The operator's `SWITCHYARD_METRICS_TOKEN`, for a scraper: it opens `/metrics` and nothing else.").build()),
            ),
            (
                "adminToken",
                SecurityScheme::Http(bearer("The operator's `SWITCHYARD_ADMIN_TOKEN` (unset: the admin API is off, 403).").build()),
            ),
            (
                "operatorToken",
                SecurityScheme::Http(
                    bearer("An identity provider's token whose `SWITCHYARD_CONSOLE_ROLE_CLAIM` claim grants `operator` (everything the admin token may do) or `viewer` (the admin API's reads only: a change is 403). Its subject is recorded in the audit log.")
                    .bearer_format("JWT")
                    .build(),
                ),
            ),
            (
                "clientToken",
                SecurityScheme::Http(
                    bearer("A user's token: `sub` the user id, `tenant` the tenant (claim names configurable). HS256 with the server's secret (`switchyard token --sub ID --tenant SLUG`), or RS/ES/EdDSA from the identity provider (`SWITCHYARD_JWT_PUBLIC_KEY`, `SWITCHYARD_JWKS_URL`).")
                    .bearer_format("JWT")
                    .build(),
                ),
            ),
            (
                "publisherToken",
                SecurityScheme::Http(
                    bearer("A publisher token (`switchyard token --service NAME --tenant SLUG --publish 'PATTERN,...'` or `POST /admin/tokens`).")
                    .bearer_format("JWT")
                    .build(),
                ),
            ),
            (
                "tokenCookie",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    "switchyard_token",
                    "A client token in a cookie.",
                ))),
            ),
            (
                "tokenQuery",
                SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                    "token",
                    "A client token in the URL, for `EventSource`; refused (401) when `SWITCHYARD_QUERY_TOKENS=false`.",
                ))),
            ),
        ];
        let components = doc.components.get_or_insert_with(Components::default);
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
    }
}

/// The document, as served.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string(&document()).unwrap_or_default());

/// The frame, every declared operation with the schemas its declaration
/// names, and the shared parts of `doc.rs` (the error answers and the
/// `Error` schema).
fn document() -> Document {
    let mut doc = Frame::openapi();
    doc.merge(super::router::routes().into_openapi());
    let components = doc.components.get_or_insert_with(Components::default);
    for (name, schema) in super::doc::shared_schemas() {
        components.schemas.insert(name, schema);
    }
    for (name, response) in super::doc::error_responses() {
        components.responses.insert(name.to_string(), response);
    }
    doc
}

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

    use super::DOCUMENT;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

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

    /// What is served is exactly what the router declares, each operation
    /// with its answers declared.
    #[test]
    fn the_document_is_the_declared_routes() {
        let api = crate::http::router::routes().into_openapi();
        let paths = serde_json::to_value(&api.paths).expect("paths");
        let declared = routes_in_document(&serde_json::json!({ "paths": &paths }));
        assert!(declared.len() > 30, "the router declares only {declared:?}");
        for (method, path) in &declared {
            assert!(
                paths[path][method]["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}: no answers declared"
            );
        }
        assert_eq!(routes_in_document(&document()), declared);
    }

    /// Every `$ref` names a component the document holds.
    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let parts = r.strip_prefix("#/").expect("a local reference").split('/');
            let target = parts.fold(&doc, |v, part| &v[part]);
            assert!(!target.is_null(), "{r} names nothing");
        }
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
