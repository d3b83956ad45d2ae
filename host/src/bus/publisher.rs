//! `Publisher`: every event enters the log here.
//!
//! Appends go through the store's batcher (group commit: one transaction and
//! one fsync for every write waiting); once committed, the events go to the
//! fan-out (which orders them by id) and the caller gets their ids.
//!
//! The fan-out is fed by the store's commit path (`store::Commits`), which
//! `Publisher::start` connects: every write that appends events (a publish,
//! a message, a read mark, a product, a decision round) reaches it there
//! once, whoever made it. The hub's tail check stays the backstop.

use std::sync::Arc;

use super::retention::Retention;
use super::Fanout;
use crate::event::{NewEvent, StoredEvent};
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// What happens after every commit, whoever committed: the store's commit
/// path ends here.
struct AfterCommit {
    fanout: Arc<dyn Fanout>,
    retention: Arc<Retention>,
    metrics: Arc<Metrics>,
}

impl store::Committed for AfterCommit {
    fn committed(&self, stored: &[StoredEvent]) {
        if stored.is_empty() {
            return;
        }
        self.metrics.events_published.add(stored.len() as u64);
        // Once per run of one tenant's events (a batch is mostly one tenant's).
        let mut i = 0;
        while i < stored.len() {
            let tenant = &stored[i].tenant;
            let n = stored[i..]
                .iter()
                .take_while(|e| e.tenant == *tenant)
                .count();
            self.metrics.tenant_published(tenant, n as u64);
            i += n;
        }
        self.fanout.publish(stored);
        self.retention.touched(stored);
    }
}

/// Handle to the appender; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Arc<dyn Store>,
}

impl Publisher {
    /// A publisher over `store` (whose batcher gives appends group commit),
    /// connecting the store's commit path to `fanout`.
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
        if !store.commits().connect(after) {
            tracing::warn!("the store's commit path was already connected; keeping that fan-out");
        }
        Publisher { store }
    }

    /// A publisher over `store` whose commits reach no fan-out: the log
    /// only (tests of what is appended).
    #[cfg(test)]
    pub(crate) fn log_only(store: Arc<dyn Store>) -> Publisher {
        Publisher { store }
    }

    /// Appends events atomically under an idempotency key (see
    /// `Store::append_keyed`); only events stored now go to the fan-out.
    pub async fn publish_keyed(
        &self,
        key: store::PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<store::Keyed, store::Error> {
        self.store.append_keyed(key, events).await
    }

    /// Appends events atomically and returns them with their ids.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, store::Error> {
        self.store.append(events).await
    }
}
