//! Who is calling, which tenant a request is for, and who may read what.
//!
//! The tenant of a request, by one rule: a client or publisher token's tenant
//! claim; for the admin token and anonymous callers, the `tenant` field of a
//! JSON body for producers, else the `tenant` query parameter. A `tenant`
//! that disagrees with the token's claim is a 403.
//!
//! A publisher token (`Caller::Service`) publishes to the topics its
//! patterns match and reads what an anonymous caller of its tenant may read;
//! it never reads a `user:` topic and never acts as a user.
//!
//! Reading topics (a stream, a topic's REST history) passes two rules: the
//! host's own (`may_read`: topic names, tenant isolation, `user:{id}` to that
//! user only), then the tenant's stream authorizer plugin (`authorize`),
//! which may refuse what the first allows but never allow what it refuses.
//! The admin token is not put to the authorizer.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::extract::{bearer, constant_time_eq, QueryPairs};
use crate::auth::{now_secs, Claims, Identity, ServiceClaims, TokenError};
use crate::error::ApiError;
use crate::event::{classify_topic, validate_slug, TopicKind};
use crate::state::AppState;
use crate::store::Tenant;

/// Name of the cookie that may carry a client token.
pub const TOKEN_COOKIE: &str = "switchyard_token";

/// What a caller proved about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// The admin token.
    Admin,
    /// A valid client token.
    User(Claims),
    /// A valid publisher token.
    Service(ServiceClaims),
}

impl Caller {
    /// What the POST rate limit counts this caller's requests by: (tenant,
    /// user) for a client token; none for the admin token, publishers
    /// (limited by their own issuer) and anonymous callers.
    pub fn rate_key(&self) -> Option<(&str, &str)> {
        match self {
            Caller::User(c) => Some((c.tenant.as_str(), c.sub.as_str())),
            _ => None,
        }
    }

    /// The user id, for a client token.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::User(c) => Some(&c.sub),
            _ => None,
        }
    }
}

/// The `?token=` of a request, if any.
fn query_token(parts: &Parts) -> Option<String> {
    let q = parts.uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// `Authorization: Bearer`.
    Header,
    /// The `switchyard_token` cookie, which a browser sends by itself, even
    /// on requests another site's page makes.
    Cookie,
    /// `?token=`.
    Query,
}

/// The token a request carries: `Authorization: Bearer`, then the cookie,
/// then `?token=`.
fn token<'a>(parts: &'a Parts) -> Option<std::borrow::Cow<'a, str>> {
    carried(parts).map(|(t, _)| t)
}

/// The token a request carries and where it came from.
fn carried<'a>(parts: &'a Parts) -> Option<(std::borrow::Cow<'a, str>, Carrier)> {
    if let Some(t) = bearer(parts) {
        return Some((t.into(), Carrier::Header));
    }
    for cookies in parts.headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for c in cookies.split(';') {
            if let Some((k, v)) = c.trim().split_once('=') {
                if k == TOKEN_COOKIE && !v.is_empty() {
                    return Some((v.to_string().into(), Carrier::Cookie));
                }
            }
        }
    }
    query_token(parts).map(|t| (t.into(), Carrier::Query))
}

/// Checks that a request authenticated by the cookie, which changes
/// something, comes from a page the server trusts: its `Origin` is this
/// server's own (the request's host) or one of the configured CORS origins
/// (a list; `*` trusts no other page with a user's cookie). A browser sends
/// `Origin` on every such request; a request without one is refused too,
/// as nothing then says which page made it. Reads (`GET`, `HEAD`) change
/// nothing and pass.
fn origin_allowed(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |why: &str| {
        state.metrics.origin_refused.inc();
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "origin_refused",
            format!(
                "{why}: a request that changes something with the `{TOKEN_COOKIE}` cookie must come from this server's own pages or an origin in SWITCHYARD_CORS_ORIGINS (or send the token in Authorization: Bearer)"
            ),
        ))
    };
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse("the request has no Origin");
    };
    if let crate::config::Cors::List(list) = &state.config.cors {
        if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Ok(());
        }
    }
    // Same origin: the origin's host and port are the ones the request was
    // sent to (`Host`, or the authority of an HTTP/2 request).
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => refuse("the request's Origin is not allowed"),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.config.query_tokens && query_token(parts).is_some() {
            // Refused even beside a cookie: the token has travelled in a URL,
            // and the client should learn to stop sending it there.
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "query_token_refused",
                "this server does not accept tokens in the URL (`?token=`): send the token in the `switchyard_token` cookie or an `Authorization: Bearer` header",
            ));
        }
        let Some((token, carrier)) = carried(parts) else {
            return Ok(Caller::Anonymous);
        };
        if carrier == Carrier::Cookie {
            origin_allowed(parts, state)?;
        }
        if let Some(admin) = state.config.admin_token.as_deref() {
            if constant_time_eq(token.as_bytes(), admin.as_bytes()) {
                if carrier != Carrier::Header && state.config.admin_token_header_only {
                    // Said plainly, without naming where it was found in a
                    // way that repeats it: the token is in a URL or cookie
                    // now and should be rotated.
                    return Err(ApiError::unauthorized(
                        "the admin token is accepted only in Authorization: Bearer (it was sent in a cookie or the URL, where it leaks: rotate it)",
                    ));
                }
                return Ok(Caller::Admin);
            }
        }
        match state.verifier.verify(&token, now_secs()).await {
            Ok(Identity::User(claims)) => Ok(Caller::User(claims)),
            Ok(Identity::Service(claims)) => Ok(Caller::Service(claims)),
            Err(TokenError::KeysUnavailable) => Err(ApiError::unavailable(
                "identity_unavailable",
                TokenError::KeysUnavailable.to_string(),
            )),
            Err(e) => Err(ApiError::unauthorized(format!("invalid token: {e}"))),
        }
    }
}

/// Resolves the request's tenant (see the module doc); `requested` came from
/// the client as `field`.
pub async fn tenant(
    state: &AppState,
    caller: &Caller,
    requested: Option<&str>,
    field: &str,
) -> Result<Tenant, ApiError> {
    let requested = requested.filter(|s| !s.is_empty());
    let slug = match (caller, requested) {
        (Caller::User(c), Some(r)) if r != c.tenant => {
            return Err(ApiError::forbidden(format!(
                "the token belongs to another tenant than `{field}` names"
            )))
        }
        (Caller::User(c), _) => c.tenant.as_str(),
        (Caller::Service(c), Some(r)) if r != c.tenant => {
            return Err(ApiError::forbidden(format!(
                "the token belongs to another tenant than `{field}` names"
            )))
        }
        (Caller::Service(c), _) => c.tenant.as_str(),
        (_, Some(r)) => r,
        (_, None) => {
            return Err(ApiError::invalid(
                "missing_tenant",
                format!("`{field}` is required: the tenant's slug"),
            ))
        }
    };
    validate_slug(slug)
        .map_err(|e| ApiError::invalid("invalid_tenant", format!("`{field}`: {e}")))?;
    Ok(state.tenants.get(slug).await?)
}

/// Checks that `caller` may read `topic` of `tenant`.
pub fn may_read(topic: &str, tenant: &str, caller: &Caller) -> Result<TopicKind, ApiError> {
    let kind = classify_topic(topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`topic`: {e}")))?;
    match kind {
        TopicKind::Tenant if &topic["tenant:".len()..] != tenant => Err(ApiError::forbidden(
            format!("topic {topic:?} belongs to another tenant"),
        )),
        TopicKind::User if matches!(caller, Caller::Service(_)) => Err(ApiError::forbidden(
            "a publisher token cannot read user streams or their history",
        )),
        TopicKind::User => may_act_as(&topic["user:".len()..], caller).map(|_| kind),
        // A topic's presence is read by whoever may read the topic.
        TopicKind::Derived => match crate::event::derived(topic) {
            // It names every user of the tenant: for its backends only.
            Some((_, crate::event::Derived::Lifecycle))
                if !matches!(caller, Caller::Admin | Caller::Service(_)) =>
            {
                Err(ApiError::forbidden(
                    "a tenant's lifecycle topic takes the admin token or a publisher token",
                ))
            }
            // Raw messages of the tenant's producers: for its backends only.
            Some((_, crate::event::Derived::DeadLetters))
                if !matches!(caller, Caller::Admin | Caller::Service(_)) =>
            {
                Err(ApiError::forbidden(
                    "a tenant's dead-letter topic takes the admin token or a publisher token",
                ))
            }
            Some((base, _)) => may_read(base, tenant, caller).map(|_| kind),
            None => Ok(kind),
        },
        _ => Ok(kind),
    }
}

/// Checks that `caller` is user `id` (or the admin).
pub fn may_act_as(id: &str, caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::User(c) if c.sub == id => Ok(()),
        Caller::User(_) => Err(ApiError::forbidden(format!(
            "user {id:?}'s messages and stream belong to that user"
        ))),
        Caller::Service(_) => Err(ApiError::forbidden(format!(
            "a publisher token cannot act as user {id:?}"
        ))),
        Caller::Anonymous => Err(ApiError::unauthorized(format!(
            "user {id:?}'s messages and stream need that user's token"
        ))),
    }
}

/// The claims of the token the request was authenticated with, as the JSON
/// text of its payload. Only for a caller whose token verified (`User`,
/// `Service`): the payload is then exactly the claims the signature covers.
pub(crate) fn verified_claims(parts: &Parts) -> Option<String> {
    use base64::Engine;
    let token = token(parts)?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => Some(v.to_string()),
        _ => None,
    }
}

/// Query parameters the authorizer gets as fields of its own, or never.
const NOT_PARAMS: [&str; 3] = ["tenant", "topic", "token"];

/// Puts a read of `topics` of `tenant`, which the host's rules allowed, to
/// the tenant's stream authorizer: `403` with the plugin's code when it
/// refuses, `503 plugin_error` when its call fails (it fails closed). With
/// no component for the tenant, the built-in rule allows; the admin token
/// is not asked about. The request is recorded for `plugin replay`.
pub fn authorize(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
    tenant: &str,
    topics: &[String],
    query: &QueryPairs,
) -> Result<(), ApiError> {
    if *caller == Caller::Admin {
        return Ok(());
    }
    let request = || {
        let mut topics = topics.to_vec();
        topics.sort();
        topics.dedup();
        let mut params: Vec<(String, String)> = query
            .0
            .iter()
            .filter(|(k, _)| !NOT_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect();
        params.sort();
        crate::plugins::wasm::bindings::types::StreamRequest {
            caller: match caller {
                Caller::User(_) | Caller::Service(_) => verified_claims(parts),
                _ => None,
            },
            user: caller.user().map(str::to_string),
            tenant: tenant.to_string(),
            topics,
            params,
            now: crate::event::now_ms(),
        }
    };
    match state.plugins.authorize_stream(tenant, request) {
        Ok(Ok(crate::plugins::Access::Allow)) => Ok(()),
        Ok(Ok(crate::plugins::Access::Refuse { code, message })) => {
            tracing::debug!(%tenant, %code, "stream request refused by the authorizer");
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                code,
                message,
            ))
        }
        // The guest failed, or the host could not run it: fail closed.
        Ok(Err(_)) | Err(_) => Err(ApiError::unavailable(
            "plugin_error",
            "the request could not be authorized; retry",
        )
        .retry_after(2)),
    }
}

/// Checks a user id as given in a path or body.
pub fn validate_user_id(id: &str, field: &str) -> Result<(), ApiError> {
    if crate::auth::valid_user_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_user",
            format!("`{field}` must be 1-128 characters of letters, digits, '-', '_', '.' and '@'"),
        ))
    }
}
