//! The parts of the OpenAPI document that many operations share, declared
//! in code: the error responses (each answers the one error body,
//! `error::Body`, named `Error`) and the parameters several operations take.
//! A handler's `#[utoipa::path]` names them (`(status = 503, response =
//! Unavailable)`, `params(TenantParam)`), and `openapi.rs` puts the
//! responses, with the `Error` schema, into the document's components.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// An error response: `description`, the error body, and a `Retry-After`
/// header when the client is asked to come back.
fn error_response(description: &str, retry_after: bool) -> Response {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(
                crate::error::Body::name().into_owned(),
            )))
            .build(),
    );
    if retry_after {
        r = r.header(
            "Retry-After",
            HeaderBuilder::new()
                .description(Some("Seconds to wait before retrying."))
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .build(),
        );
    }
    r.build()
}

macro_rules! error_responses {
    ($($name:ident, $retry:literal, $description:literal;)*) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'s> utoipa::ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<Response>) {
                    (stringify!($name), RefOr::T(error_response($description, $retry)))
                }
            }
        )*

        /// Every shared error response, by name.
        pub fn error_responses() -> Vec<(&'static str, RefOr<Response>)> {
            vec![$(<$name as utoipa::ToResponse>::response()),*]
        }
    };
}

error_responses! {
    BadRequest, false, "A malformed or invalid field, parameter or header; the message names it.";
    Unauthorized, false, "No credentials where they are needed, or an invalid token (also a `?token=` when `SWITCHYARD_QUERY_TOKENS=false`: `query_token_refused`).";
    Forbidden, false, "Valid credentials, but not for this (another user's or tenant's, a publisher token's pattern, a viewer's change, or the admin API is off).";
    NotFound, false, "An unknown tenant, product, bid, slot or route.";
    Conflict, false, "A conflict: a taken tenant slug, an idempotency key used for another request, or a plugin change that does not apply.";
    BodyTooLarge, false, "The body is larger than `SWITCHYARD_MAX_BODY_BYTES` (32 MiB for a component).";
    RequestTimeout, false, "The request body did not arrive in full within `SWITCHYARD_BODY_TIMEOUT_MS` of its head (`body_timeout`); the connection is closed.";
    UnsupportedMediaType, false, "A JSON body whose `Content-Type` is not `application/json` or `application/*+json` (by the parsed type, parameters aside).";
    Refused, false, "The component was refused (it does not compile or does not fit the slot's world); the active version stays.";
    TooManyRequests, true, "A rate limit or a stream cap: retry after `Retry-After` seconds.";
    Unavailable, true, "A dependency is not answering, or the node is shutting down: retry (after `Retry-After` seconds).";
    HeadTooLarge, false, "The request head is larger than the server accepts (`SWITCHYARD_MAX_HEADER_BYTES`, default 16 KiB, or more than `SWITCHYARD_MAX_HEADERS` lines).";
}

/// The schemas declared in code that no operation's body names but the
/// shared parts do: the error body.
pub fn shared_schemas() -> Vec<(String, RefOr<Schema>)> {
    vec![(
        crate::error::Body::name().into_owned(),
        crate::error::Body::schema(),
    )]
}

/// A topic in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the router from the path; this declares it.
pub struct TopicParam {
    /// `global`, or `kind:id`: a kind of 1-32 of `a-z`, `0-9`, `_` and `-`
    /// starting with a letter, and an id of 1-128 letters, digits, `-`, `_`,
    /// `.` and `@`. `tenant:{slug}` must name the request's tenant;
    /// `user:{id}` is private to that user. A topic but a `user:` one has
    /// its presence, `{topic}~occupancy` and `{topic}~members`, read like
    /// the topic; `tenant:{slug}~lifecycle` (the tenant's lifecycle events)
    /// takes the admin token or a publisher token.
    #[param(
        pattern = r"^(global|[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128}|(global|(?!user:)[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128})~(occupancy|members)|tenant:[A-Za-z0-9._@-]{1,128}~lifecycle)$",
        example = "status:api"
    )]
    topic: String,
}

/// The request's tenant, in the query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by `access::tenant`; this declares it.
pub struct TenantParam {
    /// The tenant's slug: needed with the admin token or no token; a client
    /// or publisher token names its tenant (a different `tenant` is a 403).
    #[param(
        required = false,
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9][a-z0-9-]*$",
        example = "demo"
    )]
    tenant: String,
}

/// A page of a log: a cursor and a size.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the query by the handlers; this declares it.
pub struct PageParams {
    /// Events after this id.
    #[param(required = false, minimum = 0)]
    after: u64,
    /// At most this many (1 to 1000, default 100).
    #[param(required = false, minimum = 1, maximum = 1000, default = 100)]
    limit: u64,
}

/// A user's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the router from the path; this declares it.
pub struct UserIdParam {
    /// The user's id.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._@-]+$",
        example = "bob"
    )]
    id: String,
}

/// The schema of one topic name a request reads (as in a list of topics).
pub fn topic_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`global`, or `kind:id`: a kind of 1-32 of `a-z`, `0-9`, `_` and `-` starting with \
             a letter, and an id of 1-128 letters, digits, `-`, `_`, `.` and `@`. \
             `tenant:{slug}` must name the request's tenant; `user:{id}` is private to that user. \
             A topic but a `user:` one has its presence, `{topic}~occupancy` and \
             `{topic}~members`, read like the topic; `tenant:{slug}~lifecycle` (the tenant's \
             lifecycle events) takes the admin token or a publisher token.",
        ))
        .pattern(Some(
            r"^(global|[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128}|(global|(?!user:)[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9._@-]{1,128})~(occupancy|members)|tenant:[A-Za-z0-9._@-]{1,128}~lifecycle)$",
        ))
        .examples(["global", "product:p_1", "status:api"])
}

/// An `Idempotency-Key` header, for a write that may be retried.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read from the headers by the handlers; this declares it.
pub struct IdempotencyKeyParam {
    /// 1-255 visible ASCII characters. A retry of the same request with the
    /// same key (within `SWITCHYARD_IDEMPOTENCY_SECONDS`) stores nothing and
    /// answers the first answer again, with `idempotent-replayed: true`; the
    /// key with another request is a 409.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    key: String,
}

/// The value of the `idempotent-replayed` header: `true` when the answer is
/// the stored answer to an earlier request with the same `Idempotency-Key`.
#[derive(serde::Serialize, ToSchema)]
pub enum Replayed {
    /// Replayed.
    #[serde(rename = "true")]
    True,
}
