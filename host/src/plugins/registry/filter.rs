//! The event filter's calls: once per event per subscription shape, failing
//! closed.

use super::shadow::compare_call;
use super::slot::Version;
use super::stats::timed_us;
use super::{Plugins, Serving};
use crate::plugins::wasm::{bindings::types, CallResult};
use crate::plugins::world::{Filter, FilterInput};

impl Plugins {
    /// The event filter for `tenant`, if a component is active for it.
    pub fn filter(&self, tenant: &str) -> Option<TenantFilter> {
        let active = self.resolve(tenant)?;
        Some(TenantFilter {
            plugins: self.clone(),
            active,
            shadow: self.shadow_of(tenant),
        })
    }
}

/// What the filter decided for one event and one subscription shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Deliver as is.
    Pass,
    /// Do not deliver (also what a failed call means: filters fail closed).
    Drop,
    /// Deliver with this data (JSON text).
    Replace(String),
}

/// A tenant's event filter, resolved for a batch of events.
pub struct TenantFilter {
    pub(super) plugins: Plugins,
    pub(super) active: Serving<Filter>,
    shadow: Option<Serving<Filter>>,
}

impl TenantFilter {
    fn run(
        &self,
        v: &Version<Filter>,
        event: &types::Event,
        shape: &Vec<(String, String)>,
    ) -> CallResult<FilterOutcome> {
        let input = FilterInput {
            event,
            subscription: shape,
        };
        let out = self.plugins.inner.wasm.call(&v.linked, &v.call, input)?;
        Ok(out.and_then(crate::plugins::convert::filter_result))
    }

    /// Filters one event for one shape. `event` is built once per event by
    /// the caller (`convert::event`).
    pub fn apply(&self, event: &types::Event, shape: &Vec<(String, String)>) -> FilterOutcome {
        self.decide(event, shape).0
    }

    /// [`TenantFilter::apply`], and whether the filter answered (`false`:
    /// the call failed, and the event is dropped for it).
    pub(super) fn decide(
        &self,
        event: &types::Event,
        shape: &Vec<(String, String)>,
    ) -> (FilterOutcome, bool) {
        let (st, v) = &self.active;
        let (r, active_us) = timed_us(&st.stats, || self.run(v, event, shape));
        let (outcome, answered) = match r {
            Ok(Ok(o)) => (o, true),
            Ok(Err(e)) => {
                tracing::warn!(plugin = %v.call.label, event = %event.id, error = %e, "event filter failed; not delivering the event to this subscription");
                (FilterOutcome::Drop, false)
            }
            Err(e) => {
                tracing::error!(plugin = %v.call.label, event = %event.id, error = %e, "event filter not run; not delivering the event to this subscription");
                (FilterOutcome::Drop, false)
            }
        };
        if let Some((sst, cand)) = &self.shadow {
            compare_call(
                sst,
                || crate::plugins::convert::event_case_json(event, shape),
                crate::plugins::convert::filter_json(&outcome),
                Some(active_us),
                || {
                    self.run(cand, event, shape)
                        .map(|r| r.map(|o| crate::plugins::convert::filter_json(&o)))
                },
            );
        }
        (outcome, answered)
    }

    /// The active version's tag.
    pub fn version(&self) -> String {
        self.active.1.tag()
    }
}
