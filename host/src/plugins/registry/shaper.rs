//! The notification shaper's calls: messages and outbid digests, with the
//! built-in notification when no shaper answers.

use serde_json::json;

use super::shadow::compare_call;
use super::slot::Version;
use super::stats::timed_us;
use super::Plugins;
use crate::plugins::wasm::{bindings::types, CallResult};
use crate::plugins::world::Shaper;

impl Plugins {
    /// Shapes a message with the tenant's shaper; a failed call falls back to
    /// the built-in notification.
    pub fn shape(&self, msg: &crate::store::NewMessage) -> Vec<crate::store::Notification> {
        self.shape_input(
            &msg.tenant,
            || message_input(msg),
            || {
                crate::plugins::NotificationShaper::shape(
                    &crate::plugins::builtin::BuiltinShaper,
                    msg,
                )
            },
        )
    }

    /// Runs the tenant's shaper (and its shadow candidate) on `input`; with
    /// no shaper, or when the call fails, `builtin` answers.
    fn shape_input(
        &self,
        tenant: &str,
        input: impl FnOnce() -> types::Message,
        builtin: impl Fn() -> Vec<crate::store::Notification>,
    ) -> Vec<crate::store::Notification> {
        let active = self.resolve::<Shaper>(tenant);
        let shadow = self.shadow_of::<Shaper>(tenant);
        if active.is_none() && shadow.is_none() {
            return builtin();
        }
        let input = input();
        let run = |v: &Version<Shaper>| -> CallResult<Vec<crate::store::Notification>> {
            let out = self.inner.wasm.call(&v.linked, &v.call, &input)?;
            Ok(out.and_then(crate::plugins::convert::notifications))
        };
        let called = active
            .as_ref()
            .map(|(st, v)| (v, timed_us(&st.stats, || run(v))));
        let active_us = called.as_ref().map(|(_, (_, us))| *us);
        let result = match called {
            Some((v, (r, _))) => match r {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(plugin = %v.call.label, kind = %input.kind, error = %e, "notification shaper failed; sending the built-in notification");
                    builtin()
                }
                Err(e) => {
                    tracing::error!(plugin = %v.call.label, kind = %input.kind, error = %e, "notification shaper not run; sending the built-in notification");
                    builtin()
                }
            },
            None => builtin(),
        };
        if let Some((st, cand)) = shadow {
            compare_call(
                &st,
                || crate::plugins::convert::message_case_json(&input),
                crate::plugins::convert::notifications_json(&result),
                active_us,
                || run(&cand).map(|r| r.map(|n| crate::plugins::convert::notifications_json(&n))),
            );
        }
        result
    }
}

fn message_input(msg: &crate::store::NewMessage) -> types::Message {
    types::Message {
        id: String::new(),
        tenant: msg.tenant.clone(),
        kind: "message".into(),
        from: msg.from.clone(),
        to: msg.to.clone(),
        product_id: msg.product_id.clone(),
        body: msg.body.clone(),
        created_at: crate::event::now_ms(),
    }
}

/// What the shaper is asked about an outbid digest: a message of kind
/// `outbid` to the user, whose body is the digest as JSON
/// (`{"product_id", "title", "times", "amount", "leader"}`).
pub fn outbid_input(
    tenant: &str,
    d: &crate::bids::decision::OutbidDigest,
    now: i64,
) -> types::Message {
    types::Message {
        id: d.bid_id.clone(),
        tenant: tenant.to_string(),
        kind: "outbid".into(),
        from: String::new(),
        to: d.user.clone(),
        product_id: Some(d.product_id.clone()),
        body: json!({
            "product_id": d.product_id, "title": d.title, "times": d.times,
            "amount": d.amount, "leader": d.leader,
        })
        .to_string(),
        created_at: now,
    }
}

/// Outbid notifications of a decision round go through the tenant's
/// notification shaper (a failed call: the built-in `bid.outbid`).
impl crate::bids::decision::OutbidNotifier for Plugins {
    fn outbid(
        &self,
        tenant: &str,
        digest: &crate::bids::decision::OutbidDigest,
        now: i64,
    ) -> Vec<crate::store::Notification> {
        use crate::bids::decision::BuiltinOutbid;
        self.shape_input(
            tenant,
            || outbid_input(tenant, digest, now),
            || BuiltinOutbid.outbid(tenant, digest, now),
        )
    }
}
