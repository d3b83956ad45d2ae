//! The bid validator's calls: one version per decision round.

use std::sync::Arc;

use serde_json::json;

use super::shadow::compare;
use super::slot::{SlotState, Version};
use super::stats::timed;
use super::Plugins;
use crate::plugins::wasm::{CallError, Linked};
use crate::plugins::Slot;

impl Plugins {
    /// The bid validator for one decision round of `tenant`: resolved once,
    /// so every bid of the round is decided by the same version.
    pub fn validator(&self, tenant: &str) -> RoundValidator {
        RoundValidator {
            plugins: self.clone(),
            active: self.resolve(tenant, Slot::BidValidator),
            shadow: self.shadow_of(tenant, Slot::BidValidator),
        }
    }
}

/// The validator of one decision round.
pub struct RoundValidator {
    plugins: Plugins,
    active: Option<(Arc<SlotState>, Arc<Version>)>,
    shadow: Option<(Arc<SlotState>, Arc<Version>)>,
}

impl RoundValidator {
    fn run(
        &self,
        v: &Version,
        bid: &crate::bids::Bid,
        product: &crate::bids::Product,
        now: i64,
    ) -> Result<crate::bids::decision::Verdict, CallError> {
        let Linked::Validator(pre) = &v.linked else {
            unreachable!("a validator slot holds validators")
        };
        let out = self.plugins.inner.wasm.validate(
            pre,
            &v.call,
            &crate::plugins::convert::bid(bid),
            &crate::plugins::convert::product(product),
            now,
        )?;
        crate::plugins::convert::verdict(out, now)
    }
}

impl crate::bids::decision::BidValidator for RoundValidator {
    fn validate(
        &self,
        bid: &crate::bids::Bid,
        product: &crate::bids::Product,
        now: i64,
    ) -> crate::bids::decision::Verdict {
        use crate::bids::decision::{BuiltinValidator, Verdict};
        let verdict = match &self.active {
            None => BuiltinValidator.validate(bid, product, now),
            Some((st, v)) => match timed(&st.stats, || self.run(v, bid, product, now)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(plugin = %v.call.label, bid = %bid.id, error = %e, "bid validator failed; rejecting the bid");
                    Verdict::Reject {
                        code: "plugin_error".into(),
                        message: "the bid could not be validated; please try again".into(),
                    }
                }
            },
        };
        if let Some((st, cand)) = &self.shadow {
            let theirs = self.run(cand, bid, product, now);
            compare(
                &st.shadow_stats,
                || json!({ "bid": bid, "product": product, "now": now }),
                crate::plugins::convert::verdict_json(&verdict),
                theirs.map(|v| crate::plugins::convert::verdict_json(&v)),
            );
        }
        verdict
    }

    fn version(&self) -> String {
        match &self.active {
            Some((_, v)) => v.tag(),
            None => "builtin".into(),
        }
    }
}
