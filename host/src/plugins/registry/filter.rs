//! The event filter's calls: once per event per subscription shape, failing
//! closed.

use std::sync::Arc;

use serde_json::json;

use super::shadow::compare;
use super::slot::{SlotState, Version};
use super::stats::timed;
use super::Plugins;
use crate::plugins::wasm::{bindings::types, CallError, Linked};
use crate::plugins::Slot;

impl Plugins {
    /// The event filter for `tenant`, if a component is active for it.
    pub fn filter(&self, tenant: &str) -> Option<TenantFilter> {
        let active = self.resolve(tenant, Slot::EventFilter)?;
        Some(TenantFilter {
            plugins: self.clone(),
            active,
            shadow: self.shadow_of(tenant, Slot::EventFilter),
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
    pub(super) active: (Arc<SlotState>, Arc<Version>),
    shadow: Option<(Arc<SlotState>, Arc<Version>)>,
}

impl TenantFilter {
    fn run(
        &self,
        v: &Version,
        event: &types::Event,
        shape: &Vec<(String, String)>,
    ) -> Result<FilterOutcome, CallError> {
        let Linked::Filter(pre) = &v.linked else {
            unreachable!("a filter slot holds filters")
        };
        let out = self.plugins.inner.wasm.filter(pre, &v.call, event, shape)?;
        crate::plugins::convert::filter_result(out)
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
        let (outcome, answered) = match timed(&st.stats, || self.run(v, event, shape)) {
            Ok(o) => (o, true),
            Err(e) => {
                tracing::warn!(plugin = %v.call.label, event = %event.id, error = %e, "event filter failed; not delivering the event to this subscription");
                (FilterOutcome::Drop, false)
            }
        };
        if let Some((sst, cand)) = &self.shadow {
            let theirs = self.run(cand, event, shape);
            compare(
                &sst.shadow_stats,
                || json!({ "event": event.id, "topic": event.topic, "subscription": shape }),
                crate::plugins::convert::filter_json(&outcome),
                theirs.map(|o| crate::plugins::convert::filter_json(&o)),
            );
        }
        (outcome, answered)
    }

    /// The active version's tag.
    pub fn version(&self) -> String {
        self.active.1.tag()
    }
}
