//! Who may read or write which tenant and topic.
//!
//! The tenant of a request is resolved by one rule, documented in the README:
//! the `tenant` field of a JSON body for producers, otherwise the `tenant`
//! query parameter (a client token's tenant claim takes over with client auth).

use crate::error::ApiError;
use crate::event::{classify_topic, validate_slug, TopicKind};
use crate::state::AppState;
use crate::store::Tenant;

/// Resolves and checks a tenant slug given by the client as `field`.
pub async fn tenant(state: &AppState, slug: Option<&str>, field: &str) -> Result<Tenant, ApiError> {
    let Some(slug) = slug.filter(|s| !s.is_empty()) else {
        return Err(ApiError::invalid(
            "missing_tenant",
            format!("`{field}` is required: the tenant's slug"),
        ));
    };
    validate_slug(slug)
        .map_err(|e| ApiError::invalid("invalid_tenant", format!("`{field}`: {e}")))?;
    Ok(state.tenants.get(slug).await?)
}

/// What a caller proved about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// The admin (or service) token.
    Admin,
}

/// Checks that `caller` may read `topic` of `tenant`.
pub fn may_read(topic: &str, tenant: &str, caller: Caller) -> Result<TopicKind, ApiError> {
    let kind = classify_topic(topic)
        .map_err(|e| ApiError::invalid("invalid_topic", format!("`topic`: {e}")))?;
    match kind {
        TopicKind::Tenant if &topic["tenant:".len()..] != tenant => Err(ApiError::forbidden(
            format!("topic {topic:?} belongs to another tenant"),
        )),
        TopicKind::User if caller != Caller::Admin => Err(ApiError::unauthorized(format!(
            "topic {topic:?} is private: it needs a token"
        ))),
        _ => Ok(kind),
    }
}
