//! Extractors that fail with `ApiError`: JSON bodies whose errors name the
//! field, the admin bearer token, and raw query pairs (repeated keys allowed).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body; a 400 names the field that is missing or of the wrong type.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::invalid("invalid_body", r.body_text())
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(AppJson(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let message = if path == "." || path == "?" || path.is_empty() {
                    format!("invalid JSON body: {inner}")
                } else {
                    format!("invalid field `{path}`: {inner}")
                };
                Err(ApiError::invalid("invalid_json", message))
            }
        }
    }
}

/// True for a JSON media type by its parsed essence: `application/json` or
/// `application/*+json`, parameters aside. A substring test would take
/// `text/plain; x=+json`, a type a browser sends cross-site without asking
/// first (a "simple" request), and with it a forged write.
pub fn is_json_type(content_type: &str) -> bool {
    let Ok(m) = content_type.parse::<mime::Mime>() else {
        return false;
    };
    m.type_() == mime::APPLICATION && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
}

/// Proof that the request may change what the admin API changes: the
/// admin token, or an identity provider's token granting `operator`
/// (`SWITCHYARD_CONSOLE_ROLE_CLAIM`). A `viewer` gets 403.
pub struct Admin {
    /// Who, as the audit log names them: `admin` or `operator:{subject}`.
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match signed_in(parts, state).await? {
            (actor, Role::Operator) => Ok(Admin { actor }),
            (_, Role::Viewer) => Err(ApiError::forbidden(
                "a viewer may read the admin API but not change anything",
            )),
        }
    }
}

/// Proof that the request may read the admin API: the admin token, or an
/// identity provider's token granting `operator` or `viewer`.
pub struct AdminRead {
    /// Who: `admin`, `operator:{subject}` or `viewer:{subject}`.
    pub actor: String,
}

impl FromRequestParts<AppState> for AdminRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (actor, _) = signed_in(parts, state).await?;
        Ok(AdminRead { actor })
    }
}

/// Who signs in to the admin API, and with which role: the admin token is
/// an operator named `admin`; a provider's token is its subject with the
/// role its claim grants.
async fn signed_in(parts: &Parts, state: &AppState) -> Result<(String, Role), ApiError> {
    let config = &state.config;
    let roles = config.console_role_claim.as_deref();
    if config.admin_token.is_none() && roles.is_none() {
        return Err(ApiError::forbidden(
            "the admin API is disabled: set SWITCHYARD_ADMIN_TOKEN (or SWITCHYARD_CONSOLE_ROLE_CLAIM) to enable it",
        ));
    }
    let Some(given) = bearer(parts) else {
        return Err(ApiError::unauthorized(
            "this endpoint needs the admin token (or an operator's token) in Authorization: Bearer",
        ));
    };
    if let Some(expected) = config.admin_token.as_deref() {
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Ok(("admin".into(), Role::Operator));
        }
    }
    let Some(claim) = roles else {
        return Err(ApiError::unauthorized("the admin token is not valid"));
    };
    // Not a JWT: a wrong admin token (said so without parsing it as one).
    if given.split('.').count() != 3 {
        return Err(ApiError::unauthorized("the admin token is not valid"));
    }
    match state
        .verifier
        .verify_operator(given, crate::auth::now_secs(), claim)
        .await
    {
        Ok(Some((sub, Role::Operator))) => Ok((format!("operator:{sub}"), Role::Operator)),
        Ok(Some((sub, Role::Viewer))) => Ok((format!("viewer:{sub}"), Role::Viewer)),
        Ok(None) => Err(ApiError::forbidden(format!(
            "this token grants no console role: its `{claim}` claim names neither operator nor viewer"
        ))),
        Err(crate::auth::TokenError::KeysUnavailable) => Err(ApiError::unavailable(
            "keys_unavailable",
            "the identity provider's keys cannot be fetched now; retry",
        )),
        Err(e) => Err(ApiError::unauthorized(e.to_string())),
    }
}

/// The `Authorization: Bearer` token, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks text the store keeps as given (names, titles, bodies, keys): no
/// NUL character, which Postgres text cannot hold, so that both modes refuse
/// it alike with a 400 naming `field`.
pub fn stored_text(value: &str, field: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_text",
            format!("`{field}` must not contain a NUL character"),
        ));
    }
    Ok(())
}

/// The query string as pairs, in order, repeated keys kept.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl QueryPairs {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An event id (`after=`), with a 400 naming the parameter when it is
    /// not one: a decimal number from 0 to the largest id there can be.
    pub fn seq(&self, key: &str) -> Result<Option<crate::event::Seq>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => crate::event::parse_seq(v).map(Some).ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                ApiError::invalid(
                    "invalid_query",
                    format!(
                        "query parameter `{key}` must be an event id, 0 to {}, got {shown:?}",
                        crate::event::MAX_SEQ
                    ),
                )
            }),
        }
    }

    /// A number, with a 400 naming the parameter when it is not one.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::invalid(
                    "invalid_query",
                    format!("query parameter `{key}` must be a non-negative integer, got {v:?}"),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_by_essence() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json_type(ok), "{ok}");
        }
        for bad in [
            "text/plain; x=+json",
            "text/plain;application/json",
            "application/jsonx",
            "text/json+plain",
            "multipart/form-data; boundary=+json",
            "",
        ] {
            assert!(!is_json_type(bad), "{bad}");
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"short", b"longer"));
    }
}
