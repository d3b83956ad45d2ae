//! `Publisher`: every event enters the log here.
//!
//! Appends go through the store's batcher (group commit: one transaction and
//! one fsync for every write waiting); once committed, the events go to the
//! fan-out (which orders them by id) and the caller gets their ids.

use std::sync::Arc;

use super::retention::Retention;
use super::Fanout;
use crate::event::{NewEvent, StoredEvent};
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// What happens after every commit, whoever committed.
struct AfterCommit {
    fanout: Arc<dyn Fanout>,
    retention: Arc<Retention>,
    metrics: Arc<Metrics>,
}

impl AfterCommit {
    fn run(&self, stored: &[StoredEvent]) {
        if stored.is_empty() {
            return;
        }
        self.metrics.events_published.add(stored.len() as u64);
        self.fanout.publish(stored);
        self.retention.touched(stored);
    }
}

/// Handle to the appender; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Arc<dyn Store>,
    after: Arc<AfterCommit>,
}

impl Publisher {
    /// A publisher over `store` (whose batcher gives appends group commit).
    pub fn start(
        store: Arc<dyn Store>,
        fanout: Arc<dyn Fanout>,
        retention: Arc<Retention>,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        let after = Arc::new(AfterCommit {
            fanout,
            retention,
            metrics,
        });
        Publisher { store, after }
    }

    /// Hands events committed elsewhere (a message with its notifications, a
    /// bid decision with its events) to the fan-out.
    pub fn committed(&self, stored: &[StoredEvent]) {
        self.after.run(stored);
    }

    /// Appends events atomically under an idempotency key (see
    /// `Store::append_keyed`); only events stored now go to the fan-out.
    pub async fn publish_keyed(
        &self,
        key: store::PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<store::Keyed, store::Error> {
        let keyed = self.store.append_keyed(key, events).await?;
        if let store::Keyed::New(stored) = &keyed {
            self.after.run(stored);
        }
        Ok(keyed)
    }

    /// Appends events atomically and returns them with their ids.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, store::Error> {
        let stored = self.store.append(events).await?;
        self.after.run(&stored);
        Ok(stored)
    }
}
