//! What a subscription gets of an event once its tenant's event filter has
//! answered: the one place a filter's answer (pass, drop, replace) becomes
//! the JSON sent, for live delivery (`bus::lane`), replay pages and
//! snapshots (`sse::session`) alike.

use std::borrow::Cow;

use super::wasm::bindings::types;
use super::{FilterOutcome, TenantFilter};
use crate::event::{event_json, StoredEvent};

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
