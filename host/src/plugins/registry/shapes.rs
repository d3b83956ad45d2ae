//! What the event filter's work is multiplied by, kept small: subscription
//! shapes and replayed answers.
//!
//! - A stream's shape is what its tenant's filter sees of its query: only
//!   the parameters the filter declares (its configuration's
//!   `shape_params`, comma-separated names), or, for a filter that declares
//!   none, every parameter the host does not own. Shapes are interned per
//!   tenant, and a tenant's streams may hold at most `MAX_SHAPES_PER_TENANT`
//!   distinct ones at a time (the filter runs once per event per shape):
//!   past it a new shape is refused (`429 too_many_shapes`), while streams
//!   of a shape already open still open.
//! - Replay calls the filter once per shape, not once per stream: the
//!   answers for replayed events are kept per tenant, by (shape, event id),
//!   for the active version (a new version starts afresh), bounded in
//!   entries and in bytes of replaced data. Only answers are kept, never a
//!   failure (filters fail closed, and a timeout under load is no answer
//!   for the next stream).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use super::{FilterOutcome, Plugins, TenantFilter, Version};
use crate::event::{event_json, StoredEvent};
use crate::plugins::world::Filter;
use crate::plugins::Shape;

/// Most distinct subscription shapes one tenant's open streams may have.
pub const MAX_SHAPES_PER_TENANT: usize = 64;
/// The configuration key in which an event filter declares the
/// subscription parameters it reads (comma-separated names).
pub const SHAPE_PARAMS_KEY: &str = "shape_params";
/// Replayed answers kept per tenant.
const REPLAY_ENTRIES: usize = 4_096;
/// Bytes of replaced data kept per tenant among them.
const REPLAY_BYTES: usize = 4 << 20;

/// A new shape past the tenant's limit.
#[derive(Debug)]
pub struct TooManyShapes;

/// Interned shapes, per tenant: by their parameters (a copy, so that the
/// map holds no shape alive), the live one while a stream holds it.
#[derive(Default)]
pub(super) struct Shapes(Mutex<HashMap<String, HashMap<Params, Weak<Params>>>>);

type Params = Vec<(String, String)>;

/// Replayed answers, per tenant.
#[derive(Default)]
pub(super) struct ReplayAnswers(Mutex<HashMap<Arc<str>, TenantAnswers>>);

#[derive(Default)]
struct TenantAnswers {
    /// The version (with its configuration) the answers are from: a weak
    /// reference keeps its allocation, so no later version can be mistaken
    /// for it by address, and keeps nothing else of it alive.
    version: Weak<Version<Filter>>,
    answers: HashMap<(Shape, u64), FilterOutcome>,
    order: VecDeque<(Shape, u64)>,
    bytes: usize,
}

fn size(o: &FilterOutcome) -> usize {
    match o {
        FilterOutcome::Replace(d) => d.len(),
        _ => 0,
    }
}

impl TenantAnswers {
    fn put(&mut self, key: (Shape, u64), outcome: FilterOutcome) {
        let bytes = size(&outcome);
        if bytes > REPLAY_BYTES {
            return;
        }
        while self.order.len() >= REPLAY_ENTRIES || self.bytes + bytes > REPLAY_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(o) = self.answers.remove(&old) {
                self.bytes -= size(&o);
            }
        }
        if let Some(o) = self.answers.insert(key.clone(), outcome) {
            self.bytes -= size(&o);
        } else {
            self.order.push_back(key);
        }
        self.bytes += bytes;
    }
}

impl Plugins {
    /// The shape of a stream of `tenant` whose query parameters the host
    /// does not own are `params` (sorted, without duplicates).
    pub fn subscription_shape(
        &self,
        tenant: &str,
        params: Vec<(String, String)>,
    ) -> Result<Shape, TooManyShapes> {
        let Some(active) = self.resolve::<Filter>(tenant) else {
            // No filter runs: nothing is multiplied (a filter activated
            // later sees these streams' parameters as they came).
            return Ok(Shape::new(params));
        };
        let shadow = self.shadow_of::<Filter>(tenant);
        let declared: Vec<&str> = [Some(&active), shadow.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.call.config.get(SHAPE_PARAMS_KEY))
            .flat_map(|names| names.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let any_declared = [Some(&active), shadow.as_ref()]
            .into_iter()
            .flatten()
            .any(|(_, v)| v.call.config.contains_key(SHAPE_PARAMS_KEY));
        let params: Vec<(String, String)> = if any_declared {
            params
                .into_iter()
                .filter(|(k, _)| declared.contains(&k.as_str()))
                .collect()
        } else {
            params
        };
        if params.is_empty() {
            return Ok(Shape::default());
        }
        let mut all = self
            .inner
            .shapes
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mine = all.entry(tenant.to_string()).or_default();
        if let Some(live) = mine.get(&params).and_then(Weak::upgrade) {
            return Ok(live);
        }
        if mine.len() >= MAX_SHAPES_PER_TENANT {
            mine.retain(|_, w| w.strong_count() > 0);
            if mine.len() >= MAX_SHAPES_PER_TENANT {
                return Err(TooManyShapes);
            }
        }
        let shape = Shape::new(params.clone());
        mine.insert(params, Shape::downgrade(&shape));
        Ok(shape)
    }
}

impl TenantFilter {
    /// [`TenantFilter::event_json`] for a replayed event: the answer for
    /// this shape and event is asked of the filter once, then shared by the
    /// tenant's other streams of the same shape replaying it.
    pub fn replay_json<'a>(&self, e: &'a StoredEvent, shape: &Shape) -> Option<Cow<'a, str>> {
        let cache = &self.plugins.inner.replay_answers;
        let key = (shape.clone(), e.seq);
        let known = {
            let mut all = cache.0.lock().unwrap_or_else(|p| p.into_inner());
            let mine = all.entry(e.tenant.clone()).or_default();
            if !std::ptr::eq(mine.version.as_ptr(), Arc::as_ptr(&self.active.1)) {
                *mine = TenantAnswers {
                    version: Arc::downgrade(&self.active.1),
                    ..TenantAnswers::default()
                };
            }
            mine.answers.get(&key).cloned()
        };
        let outcome = match known {
            Some(o) => o,
            None => {
                let input = crate::plugins::convert::event(e);
                let (outcome, answered) = self.decide(&input, shape);
                if answered {
                    let mut all = cache.0.lock().unwrap_or_else(|p| p.into_inner());
                    let mine = all.entry(e.tenant.clone()).or_default();
                    if std::ptr::eq(mine.version.as_ptr(), Arc::as_ptr(&self.active.1)) {
                        mine.put(key, outcome.clone());
                    }
                }
                outcome
            }
        };
        match outcome {
            FilterOutcome::Pass => Some(Cow::Borrowed(e.json.as_str())),
            FilterOutcome::Drop => None,
            FilterOutcome::Replace(data) => Some(Cow::Owned(event_json(
                e.seq, &e.tenant, &e.topic, &e.kind, &data, e.ts,
            ))),
        }
    }
}
