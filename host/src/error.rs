//! `ApiError`: the one error type HTTP handlers return, rendered as
//! `{"error":{"code","message"}}` with a fitting status.
//!
//! 4xx messages say what was wrong with the request (and name the field);
//! 5xx messages stay generic and the cause is logged here, once.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (a stream authorizer's refusal brings
    /// its own).
    pub code: std::borrow::Cow<'static, str>,
    /// Human-readable message; safe to show to the client.
    pub message: String,
    /// Seconds for a `Retry-After` header, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for a malformed or invalid field.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an unknown resource.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401: credentials missing or invalid.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: credentials valid but not for this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 503 with a `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500; the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong; the error has been logged",
        )
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// Every error: a stable machine-readable `code` and a message for people
/// (a 4xx names the field or parameter that is wrong).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
pub struct Body<'a> {
    /// The error.
    #[schema(inline)]
    error: Inner<'a>,
}

/// The error's code and message.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Inner<'a> {
    /// Stable and machine-readable.
    #[schema(examples("unknown_tenant", "invalid_json", "unauthorized"))]
    code: &'a str,
    /// For people.
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: &self.code,
                message: &self.message,
            },
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::Error as E;
        match e {
            E::Unavailable(msg) => {
                tracing::warn!(error = %msg, "store unavailable");
                ApiError::unavailable("store_unavailable", "the database is not answering; retry")
            }
            E::UnknownTenant(slug) => {
                ApiError::not_found("unknown_tenant", format!("tenant {slug:?} does not exist"))
            }
            // Our own words only: a driver's text stays in the source.
            E::Conflict(reason) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", reason.to_string())
            }
            // A move took longer than the placement layer waits for it.
            E::Moved(_) => ApiError::unavailable(
                "tenant_moving",
                "the tenant is being moved to another database; retry",
            ),
            e @ (E::KeyReused | E::KeyRaced) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // Caused by bad user input, so it is not logged.
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the server accepts",
                )
            }
            other => ApiError::invalid("invalid_json", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid("invalid_query", r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConflictReason, Error as StoreError};

    fn driver_error() -> Box<dyn std::error::Error + Send + Sync> {
        "UNIQUE constraint failed: secret_table.secret_column".into()
    }

    /// A store error's response says what happened in our own words: a
    /// driver's text (table and column names, SQL) stays in the log; so does
    /// `/ready`'s naming of it.
    #[test]
    fn store_errors_answer_in_our_own_words() {
        let cases = [
            (
                StoreError::Conflict(ConflictReason::Duplicate(driver_error())),
                StatusCode::CONFLICT,
                "a unique key already exists",
            ),
            (
                StoreError::Conflict(ConflictReason::TenantExists("acme".into())),
                StatusCode::CONFLICT,
                "tenant \"acme\" already exists",
            ),
            (
                StoreError::KeyReused,
                StatusCode::CONFLICT,
                crate::store::KEY_REUSED,
            ),
            (
                StoreError::Database(driver_error()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong; the error has been logged",
            ),
            (
                StoreError::unavailable("connection refused by secret-host:5432"),
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not answering; retry",
            ),
        ];
        for (error, status, message) in cases {
            let e = ApiError::from(error);
            assert_eq!((e.status, e.message.as_str()), (status, message));
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
        let ready = crate::backend::Unready::Store(StoreError::Database(driver_error()));
        assert_eq!(ready.to_string(), "database error");
        let ready = crate::backend::Unready::Store(StoreError::unavailable("pool timed out"));
        assert_eq!(ready.to_string(), "the database is not answering");
    }
}
