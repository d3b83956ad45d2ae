//! Filter lanes: where a tenant's live events meet its event filter.
//!
//! The dispatcher orders every tenant's events on one task. A filter is
//! guest code of one tenant's choosing, and a slow one (5 ms a call, say)
//! called there would delay every other tenant's deliveries. So each tenant
//! with a filter gets a lane: a task of its own that takes the tenant's
//! events in id order, runs the filter for a batch of them on a blocking
//! thread (once per event per subscription shape, off every runtime worker),
//! and offers the framed results to the subscribers' queues. Tenants without
//! a filter are offered their events by the dispatcher directly, except on a
//! topic of 512 subscribers or more: its offers (a send each) take
//! milliseconds, and run here too, off the dispatcher and the runtime.
//!
//! The `subs` lock is not held while guest code runs: a lane reads the
//! shapes of an event's subscribers, releases the lock, calls the filter,
//! and takes the lock again to offer. A connection that registered in
//! between has no answer for its shape and is skipped: it registered after
//! the event was committed, so its own read of the log has the event.
//!
//! Order: while a lane holds events of its tenant, the dispatcher sends it
//! the tenant's later events too (even if the filter was removed meanwhile),
//! so a connection never sees a later id before an earlier one.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::subscribers::{offer, Inner};
use crate::event::{Frame, StoredEvent};
use crate::plugins::{Shape, ShapeFilter};

/// Most events one blocking hand-off filters.
const BATCH: usize = 256;

/// One tenant's lane, as the dispatcher sees it.
pub(super) struct Lane {
    tx: mpsc::UnboundedSender<StoredEvent>,
    /// Events sent to the lane and not yet offered.
    pending: Arc<AtomicUsize>,
}

impl Lane {
    /// Starts a lane for one tenant's events.
    pub(super) fn start(hub: Arc<Inner>) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(hub, rx, pending.clone()));
        Lane { tx, pending }
    }

    /// Whether events sent earlier are still on their way.
    pub(super) fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Queues an event; false if the lane's task is gone (shutdown).
    pub(super) fn send(&self, e: StoredEvent) -> bool {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(e).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

async fn run(
    hub: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<StoredEvent>,
    pending: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let n = batch.len();
        let events = std::mem::take(&mut batch);
        let h = hub.clone();
        // A panic here is a host bug: the batch is lost for live delivery
        // (connections resume from the log) and the lane carries on.
        if let Err(e) = tokio::task::spawn_blocking(move || deliver(&h, events)).await {
            tracing::error!(error = %e, "filter lane failed on a batch of events");
        }
        pending.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Filters and offers a batch of one tenant's events, in order. Runs on a
/// blocking thread.
fn deliver(hub: &Inner, events: Vec<StoredEvent>) {
    let Some(first) = events.first() else {
        return;
    };
    // One resolution per batch: a swap takes effect at the next batch.
    let filter = hub.filters.of_tenant(&first.tenant);
    for e in &events {
        let shapes = hub.shapes(&e.tenant, &e.topic);
        if shapes.is_empty() {
            continue;
        }
        let frame = Arc::new(Frame::from_parts(e.seq, &e.topic, &e.kind, &e.json));
        let answers = match &filter {
            None => shapes
                .into_iter()
                .map(|s| (s, Some(frame.clone())))
                .collect(),
            Some(f) => filter_shapes(f.as_ref(), e, &frame, shapes),
        };
        offer(hub, e, &answers);
    }
}

/// The filter's answer for each shape: the frame to offer, or none.
fn filter_shapes(
    f: &dyn ShapeFilter,
    e: &StoredEvent,
    frame: &Arc<Frame>,
    shapes: Vec<Shape>,
) -> Vec<(Shape, Option<Arc<Frame>>)> {
    let answers = f.answers(e, &shapes);
    shapes
        .into_iter()
        .zip(answers)
        .map(|(shape, json)| {
            let out = json.map(|json| match json {
                Cow::Borrowed(_) => frame.clone(),
                Cow::Owned(json) => Arc::new(Frame::from_parts(e.seq, &e.topic, &e.kind, &json)),
            });
            (shape, out)
        })
        .collect()
}
