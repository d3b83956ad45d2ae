//! The stream authorizer's calls: once per stream request (a stream being
//! opened, a topic's REST history), failing closed.
//!
//! The host's own topic rules run first (`http::access`); the authorizer may
//! refuse what they allow, never allow what they refuse. With no component
//! active, the built-in rule answers: allow, which with the host's rules is
//! the rule Switchyard always had.

use super::shadow::compare_call;
use super::slot::Version;
use super::stats::timed_us;
use super::{Plugins, Serving};
use crate::plugins::convert::{access_json, stream_request_json};
use crate::plugins::wasm::{bindings::types, CallResult};
use crate::plugins::world::Authorizer;
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
    /// An error, the guest's (inner) or the host's (outer): the active
    /// version gave no answer; refuse the request.
    pub fn authorize_stream(
        &self,
        tenant: &str,
        request: impl FnOnce() -> types::StreamRequest,
    ) -> CallResult<Access> {
        let authorizer = self.authorizer(tenant);
        if authorizer.is_none() && !self.records_stream_requests() {
            return Ok(Ok(Access::Allow));
        }
        let request = request();
        let (result, by) = match &authorizer {
            None => (Ok(Ok(Access::Allow)), "builtin".to_string()),
            Some(a) => (a.authorize(&request), a.version()),
        };
        if self.records_stream_requests() {
            let failed = |kind: &str| {
                serde_json::json!({
                    "decision": "refuse", "code": "plugin_error", "failed": kind,
                })
            };
            let decision = match &result {
                Ok(Ok(a)) => access_json(a),
                Ok(Err(e)) => failed(e.kind.as_str()),
                Err(_) => failed("host_fault"),
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
        let active = self.resolve::<Authorizer>(tenant);
        let shadow = self.shadow_of::<Authorizer>(tenant);
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
    active: Option<Serving<Authorizer>>,
    shadow: Option<Serving<Authorizer>>,
}

impl StreamAuthorizer {
    fn run(&self, v: &Version<Authorizer>, request: &types::StreamRequest) -> CallResult<Access> {
        let out = self.plugins.inner.wasm.call(&v.linked, &v.call, request)?;
        Ok(out.and_then(crate::plugins::convert::access))
    }

    /// Decides one request: the active version's answer (the built-in
    /// `Allow` when only a candidate runs), with the candidate compared
    /// beside it. An error (the guest's or the host's): the active
    /// version's call failed, and the request must be refused (the
    /// authorizer fails closed).
    pub fn authorize(&self, request: &types::StreamRequest) -> CallResult<Access> {
        let mut active_us = None;
        let result = match &self.active {
            None => Ok(Ok(Access::Allow)),
            Some((st, v)) => {
                let (r, us) = timed_us(&st.stats, || self.run(v, request));
                active_us = Some(us);
                match &r {
                    Ok(Err(e)) => {
                        tracing::warn!(plugin = %v.call.label, error = %e, "stream authorizer failed; refusing the request");
                    }
                    Err(e) => {
                        tracing::error!(plugin = %v.call.label, error = %e, "stream authorizer not run; refusing the request");
                    }
                    Ok(Ok(_)) => {}
                }
                r
            }
        };
        if let Some((st, cand)) = &self.shadow {
            let ours = match &result {
                Ok(Ok(a)) => access_json(a),
                _ => access_json(&Access::Refuse {
                    code: "plugin_error".into(),
                    message: "the active authorizer failed".into(),
                }),
            };
            compare_call(
                st,
                || serde_json::json!({ "request": stream_request_json(request) }),
                ours,
                active_us,
                || self.run(cand, request).map(|r| r.map(|a| access_json(&a))),
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
