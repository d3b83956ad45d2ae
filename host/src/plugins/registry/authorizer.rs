//! The stream authorizer's calls: once per stream request (a stream being
//! opened, a topic's REST history), failing closed.
//!
//! The host's own topic rules run first (`http::access`); the authorizer may
//! refuse what they allow, never allow what they refuse. With no component
//! active, the built-in rule answers: allow, which with the host's rules is
//! the rule Switchyard always had.

use std::sync::Arc;

use super::shadow::compare;
use super::slot::{SlotState, Version};
use super::stats::timed;
use super::Plugins;
use crate::plugins::convert::{access_json, stream_request_json};
use crate::plugins::wasm::{bindings::types, CallError, Linked};
use crate::plugins::Slot;
use crate::store::plugins::RecordedRequest;

/// What the authorizer decided about one stream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The request goes ahead.
    Allow,
    /// `403` with this code and message.
    Refuse {
        /// Machine-readable, `a-z0-9_`.
        code: String,
        /// For the caller.
        message: String,
    },
}

impl Plugins {
    /// Decides a stream request of `tenant` (built by `request` only when
    /// there is an authorizer to ask or a recorder to feed) and records it.
    /// `Err`: the active version failed; refuse the request.
    pub fn authorize_stream(
        &self,
        tenant: &str,
        request: impl FnOnce() -> types::StreamRequest,
    ) -> Result<Access, CallError> {
        let authorizer = self.authorizer(tenant);
        if authorizer.is_none() && !self.records_stream_requests() {
            return Ok(Access::Allow);
        }
        let request = request();
        let (result, by) = match &authorizer {
            None => (Ok(Access::Allow), "builtin".to_string()),
            Some(a) => (a.authorize(&request), a.version()),
        };
        if self.records_stream_requests() {
            let decision = match &result {
                Ok(a) => access_json(a),
                Err(e) => serde_json::json!({
                    "decision": "refuse", "code": "plugin_error", "failed": e.kind.as_str(),
                }),
            };
            self.record(RecordedRequest {
                tenant: tenant.to_string(),
                request: stream_request_json(&request).to_string(),
                decision: decision.to_string(),
                decided_by: by,
            });
        }
        result
    }

    /// The stream authorizer for `tenant`, if a component is active for it
    /// or a candidate runs in shadow; `None`: the built-in rule allows, and
    /// there is no request to build.
    pub fn authorizer(&self, tenant: &str) -> Option<StreamAuthorizer> {
        let active = self.resolve(tenant, Slot::StreamAuthorizer);
        let shadow = self.shadow_of(tenant, Slot::StreamAuthorizer);
        if active.is_none() && shadow.is_none() {
            return None;
        }
        Some(StreamAuthorizer {
            plugins: self.clone(),
            active,
            shadow,
        })
    }
}

/// A tenant's stream authorizer, resolved for one request.
pub struct StreamAuthorizer {
    plugins: Plugins,
    active: Option<(Arc<SlotState>, Arc<Version>)>,
    shadow: Option<(Arc<SlotState>, Arc<Version>)>,
}

impl StreamAuthorizer {
    fn run(&self, v: &Version, request: &types::StreamRequest) -> Result<Access, CallError> {
        let Linked::Authorizer(pre) = &v.linked else {
            unreachable!("an authorizer slot holds authorizers")
        };
        let out = self.plugins.inner.wasm.authorize(pre, &v.call, request)?;
        crate::plugins::convert::access(out)
    }

    /// Decides one request: the active version's answer (the built-in
    /// `Allow` when only a candidate runs), with the candidate compared
    /// beside it. `Err`: the active version's call failed, and the request
    /// must be refused (the authorizer fails closed).
    pub fn authorize(&self, request: &types::StreamRequest) -> Result<Access, CallError> {
        let result = match &self.active {
            None => Ok(Access::Allow),
            Some((st, v)) => timed(&st.stats, || self.run(v, request)).inspect_err(|e| {
                tracing::warn!(plugin = %v.call.label, error = %e, "stream authorizer failed; refusing the request");
            }),
        };
        if let Some((st, cand)) = &self.shadow {
            let theirs = self.run(cand, request);
            let ours = match &result {
                Ok(a) => access_json(a),
                Err(_) => access_json(&Access::Refuse {
                    code: "plugin_error".into(),
                    message: "the active authorizer failed".into(),
                }),
            };
            compare(
                &st.shadow_stats,
                || stream_request_json(request),
                ours,
                theirs.map(|a| access_json(&a)),
            );
        }
        result
    }

    /// The active version's tag, or `builtin`.
    pub fn version(&self) -> String {
        match &self.active {
            Some((_, v)) => v.tag(),
            None => "builtin".into(),
        }
    }
}
