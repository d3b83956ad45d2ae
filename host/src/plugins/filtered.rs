//! What a subscription gets of an event once its tenant's event filter has
//! answered: the one place a filter's answer (pass, drop, replace) becomes
//! the JSON sent, for live delivery (`bus::lane`), replay pages and
//! snapshots (`sse::session`) alike; and the small traits the hub sees
//! the filters through (`EventFilters`, `ShapeFilter`), so that it knows
//! nothing of the sandbox.

use std::borrow::Cow;

use super::wasm::bindings::types;
use super::{FilterOutcome, Plugins, Shape, TenantFilter};
use crate::event::{event_json, StoredEvent};

/// What the hub needs of the tenants' event filters: whether any is
/// active, and a tenant's, resolved once for a batch of its events.
/// [`Plugins`] is the server's; the hub's tests use plain Rust ones.
pub trait EventFilters: Send + Sync + 'static {
    /// Whether some tenant may have a filter (a cheap check, per event).
    fn any(&self) -> bool;
    /// The filter active for `tenant`, if any.
    fn of_tenant(&self, tenant: &str) -> Option<Box<dyn ShapeFilter>>;
    /// Whether a filter is active for `tenant` (per event dispatched, so
    /// without making one).
    fn active_for(&self, tenant: &str) -> bool {
        self.of_tenant(tenant).is_some()
    }
}

/// One tenant's event filter as the hub sees it.
pub trait ShapeFilter: Send {
    /// The event's JSON as the subscriptions of each of `shapes` get it,
    /// in order: borrowed from the stored event when the filter passes it,
    /// none when it drops it (or fails: filters fail closed), rendered
    /// again around the filter's data when it replaces it.
    fn answers<'a>(&self, e: &'a StoredEvent, shapes: &[Shape]) -> Vec<Option<Cow<'a, str>>>;
}

/// No tenant has a filter: every event passes.
pub struct NoFilters;

impl EventFilters for NoFilters {
    fn any(&self) -> bool {
        false
    }

    fn of_tenant(&self, _: &str) -> Option<Box<dyn ShapeFilter>> {
        None
    }
}

impl EventFilters for Plugins {
    fn any(&self) -> bool {
        self.has_filters()
    }

    fn of_tenant(&self, tenant: &str) -> Option<Box<dyn ShapeFilter>> {
        self.filter(tenant)
            .map(|f| Box::new(f) as Box<dyn ShapeFilter>)
    }

    fn active_for(&self, tenant: &str) -> bool {
        self.filter(tenant).is_some()
    }
}

impl ShapeFilter for TenantFilter {
    fn answers<'a>(&self, e: &'a StoredEvent, shapes: &[Shape]) -> Vec<Option<Cow<'a, str>>> {
        // The guest's form of the event, made once for all shapes.
        let input = super::convert::event(e);
        shapes
            .iter()
            .map(|shape| self.event_json(e, &input, shape))
            .collect()
    }
}

impl TenantFilter {
    /// The event's JSON as a subscription of `shape` gets it: borrowed
    /// from the stored event when the filter passes it, none when it drops
    /// it (or fails: filters fail closed), and the event rendered again
    /// around the filter's data when it replaces it. `input` is `e` as the
    /// guest sees it (`convert::event`), made once for all shapes.
    pub fn event_json<'a>(
        &self,
        e: &'a StoredEvent,
        input: &types::Event,
        shape: &Vec<(String, String)>,
    ) -> Option<Cow<'a, str>> {
        match self.apply(input, shape) {
            FilterOutcome::Pass => Some(Cow::Borrowed(e.json.as_str())),
            FilterOutcome::Drop => None,
            FilterOutcome::Replace(data) => Some(Cow::Owned(event_json(
                e.seq, &e.tenant, &e.topic, &e.kind, &data, e.ts,
            ))),
        }
    }

    /// A topic's state as a snapshot for a subscription of `shape`: the
    /// filter sees it as an event of type `snapshot` (id `as_of`), so a
    /// redacting filter redacts the state too. Returns the data to send,
    /// none when the filter drops it.
    pub fn snapshot_data<'a>(
        &self,
        tenant: &str,
        topic: &str,
        as_of: u64,
        data: &'a str,
        ts: i64,
        shape: &Vec<(String, String)>,
    ) -> Option<Cow<'a, str>> {
        let ev = types::Event {
            id: as_of.to_string(),
            tenant: tenant.to_string(),
            topic: topic.to_string(),
            type_: "snapshot".into(),
            data: data.to_string(),
            ts,
        };
        match self.apply(&ev, shape) {
            FilterOutcome::Pass => Some(Cow::Borrowed(data)),
            FilterOutcome::Drop => None,
            FilterOutcome::Replace(d) => Some(Cow::Owned(d)),
        }
    }
}
