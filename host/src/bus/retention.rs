//! `Retention`: keeps each topic's replay history within a count and an age.
//!
//! The publisher notes which topics it appended to; a sweeper trims those by
//! count and the whole log by age on an interval. Every trim records the
//! highest id it removed per topic, so a resume from before it gets `reset`
//! instead of a silent gap. The sweep also forgets publish idempotency keys
//! older than their window.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::StoredEvent;
use crate::metrics::Metrics;
use crate::store::Store;

/// Retention policy and the topics touched since the last sweep.
pub struct Retention {
    keep: u64,
    max_age: Duration,
    /// How long publish idempotency keys are kept.
    key_window: Duration,
    /// How long sources' idempotency keys are kept.
    source_key_window: Duration,
    /// tenant -> topics appended to since the last sweep.
    touched: Mutex<HashMap<Arc<str>, HashSet<String>>>,
}

impl Retention {
    /// A policy keeping `keep` events per topic for at most `max_age`.
    pub fn new(keep: u64, max_age: Duration) -> Self {
        Retention {
            keep,
            max_age,
            key_window: Duration::from_secs(24 * 3600),
            source_key_window: Duration::from_secs(7 * 24 * 3600),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps publish idempotency keys for `window`.
    pub fn key_window(mut self, window: Duration) -> Self {
        self.key_window = window;
        self
    }

    /// Keeps sources' idempotency keys for `window`.
    pub fn source_key_window(mut self, window: Duration) -> Self {
        self.source_key_window = window;
        self
    }

    /// Notes the topics of committed events (once per batch).
    pub fn touched(&self, events: &[StoredEvent]) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            // Look up by reference: allocate only for a topic not seen yet.
            if !touched.contains_key(&e.tenant) {
                touched.insert(e.tenant.clone(), HashSet::new());
            }
            let topics = touched.get_mut(&e.tenant).expect("inserted above");
            if !topics.contains(e.topic.as_str()) {
                topics.insert(e.topic.clone());
            }
        }
    }

    /// One sweep: trims touched topics by count, then everything by age.
    pub async fn sweep(&self, store: &dyn Store, metrics: &Metrics) {
        let topics: Vec<(Arc<str>, String)> =
            std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .flat_map(|(tenant, topics)| topics.into_iter().map(move |t| (tenant.clone(), t)))
                .collect();
        for (tenant, topic) in topics {
            match store.trim_topic(&tenant, &topic, self.keep).await {
                Ok(n) => metrics.retention_trimmed.add(n),
                Err(e) => {
                    tracing::warn!(%tenant, %topic, error = %e, "retention trim failed");
                    self.touched
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(tenant)
                        .or_default()
                        .insert(topic);
                }
            }
        }
        let cutoff = crate::event::now_ms() - self.max_age.as_millis() as i64;
        match store.trim_older_than(cutoff).await {
            Ok(n) => metrics.retention_trimmed.add(n),
            Err(e) => tracing::warn!(error = %e, "retention by age failed"),
        }
        let now = crate::event::now_ms();
        let cutoff = now - self.key_window.as_millis() as i64;
        let source_cutoff = now - self.source_key_window.as_millis() as i64;
        if let Err(e) = store.trim_publish_keys(cutoff, source_cutoff).await {
            tracing::warn!(error = %e, "forgetting old idempotency keys failed");
        }
    }

    /// Sweeps on `every` until the token is cancelled.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.sweep(&*store, &metrics).await,
            }
        }
    }
}
