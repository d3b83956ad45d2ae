//! The bid validator's calls: one version per decision round.

use super::shadow::compare_call;
use super::slot::Version;
use super::stats::timed_us;
use super::{Plugins, Serving};
use crate::plugins::wasm::CallResult;
use crate::plugins::world::{ValidateInput, Validator};

impl Plugins {
    /// The bid validator for one decision round of `tenant`: resolved once,
    /// so every bid of the round is decided by the same version.
    pub fn validator(&self, tenant: &str) -> RoundValidator {
        RoundValidator {
            plugins: self.clone(),
            active: self.resolve(tenant),
            shadow: self.shadow_of(tenant),
        }
    }
}

/// The validator of one decision round.
pub struct RoundValidator {
    plugins: Plugins,
    active: Option<Serving<Validator>>,
    shadow: Option<Serving<Validator>>,
}

impl RoundValidator {
    fn run(
        &self,
        v: &Version<Validator>,
        bid: &crate::bids::Bid,
        product: &crate::bids::Product,
        now: i64,
    ) -> CallResult<crate::bids::decision::Verdict> {
        let (bid, product) = (
            crate::plugins::convert::bid(bid),
            crate::plugins::convert::product(product),
        );
        let input = ValidateInput {
            bid: &bid,
            product: &product,
            now,
        };
        let out = self.plugins.inner.wasm.call(&v.linked, &v.call, input)?;
        Ok(out.and_then(|out| crate::plugins::convert::verdict(out, now)))
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
        let mut active_us = None;
        let verdict = match &self.active {
            None => BuiltinValidator.validate(bid, product, now),
            Some((st, v)) => {
                let (r, us) = timed_us(&st.stats, || self.run(v, bid, product, now));
                active_us = Some(us);
                let failed = match r {
                    Ok(Ok(v)) => Some(v),
                    Ok(Err(e)) => {
                        tracing::warn!(plugin = %v.call.label, bid = %bid.id, error = %e, "bid validator failed; rejecting the bid");
                        None
                    }
                    Err(e) => {
                        tracing::error!(plugin = %v.call.label, bid = %bid.id, error = %e, "bid validator not run; rejecting the bid");
                        None
                    }
                };
                failed.unwrap_or_else(|| Verdict::Reject {
                    code: "plugin_error".into(),
                    message: "the bid could not be validated; please try again".into(),
                })
            }
        };
        if let Some((st, cand)) = &self.shadow {
            compare_call(
                st,
                || crate::plugins::convert::bid_case_json(bid, product, now),
                crate::plugins::convert::verdict_json(&verdict),
                active_us,
                || {
                    self.run(cand, bid, product, now)
                        .map(|r| r.map(|v| crate::plugins::convert::verdict_json(&v)))
                },
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
