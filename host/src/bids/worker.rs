//! `Worker`: runs decision rounds for products that need one.
//!
//! Products are marked dirty by wake-ups (a bid was queued here, or the queue
//! delivered one from another node) and by a sweeper that asks the store on
//! an interval for queued bids nobody woke us for (a lost wake-up, a node that
//! died, a flushed Redis) and for auctions past their end. Different products
//! run in parallel (bounded); one product is never run twice at once on a
//! node. A round (`round`) decides with no transaction open and commits
//! only if the product is unchanged (`store::bids`), so rounds of one
//! product on two nodes decide each bid once, and a slow validator delays
//! its own product's round and no other write.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::decision::{self, CLOSE_GRACE_MS};
use crate::event::now_ms;
use crate::metrics::Metrics;
use crate::store::bids::BidStore;

/// Bids decided per transaction at most.
const ROUND: usize = 500;
/// Products decided in parallel per node.
const PARALLEL: usize = 8;
/// How often the sweeper looks for work nobody announced.
const SWEEP: Duration = Duration::from_millis(500);
/// A queued bid this old is picked up by the sweeper.
const STALE_MS: i64 = 1_500;

struct Inner {
    store: Arc<dyn BidStore>,
    plugins: crate::plugins::Plugins,
    metrics: Arc<Metrics>,
    dirty: Mutex<HashSet<String>>,
    in_flight: Mutex<HashSet<String>>,
    notify: Notify,
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    /// Starts the worker and its sweeper.
    pub fn start(
        store: Arc<dyn BidStore>,
        plugins: crate::plugins::Plugins,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Worker {
        let w = Worker {
            inner: Arc::new(Inner {
                store,
                plugins,
                metrics,
                dirty: Mutex::new(HashSet::new()),
                in_flight: Mutex::new(HashSet::new()),
                notify: Notify::new(),
            }),
        };
        tokio::spawn(w.clone().run(stop.clone()));
        tokio::spawn(w.clone().sweep(stop));
        w
    }

    /// Asks for a decision round for `product`.
    pub fn mark(&self, product: &str) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(product.to_string());
        self.inner.notify.notify_one();
    }

    async fn run(self, stop: CancellationToken) {
        let permits = Arc::new(Semaphore::new(PARALLEL));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.notify.notified() => {}
            }
            let ready: Vec<String> = {
                let mut dirty = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
                let mut in_flight = self
                    .inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let ready: Vec<String> = dirty
                    .iter()
                    .filter(|p| !in_flight.contains(*p))
                    .cloned()
                    .collect();
                for p in &ready {
                    dirty.remove(p);
                    in_flight.insert(p.clone());
                }
                ready
            };
            for product in ready {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let w = self.clone();
                tokio::spawn(async move {
                    w.decide(&product).await;
                    drop(permit);
                    w.inner
                        .in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&product);
                    // Marked again while running: go round once more.
                    if w.inner
                        .dirty
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&product)
                    {
                        w.inner.notify.notify_one();
                    }
                });
            }
        }
    }

    /// Decision rounds for one product until none of its bids is queued.
    async fn decide(&self, product: &str) {
        let i = &self.inner;
        loop {
            // One validator version per round: every bid of the round is
            // decided (and recorded) under the same version.
            let plugins = i.plugins.clone();
            let rules = move |p: super::Product, bids: &[super::Bid], more| {
                let validator = plugins.validator(&p.tenant);
                decision::decide(p, bids, now_ms(), more, &validator, &plugins)
            };
            let started = std::time::Instant::now();
            match super::round::run(i.store.as_ref(), product, ROUND, rules).await {
                Ok(done) => {
                    if !done.is_empty() {
                        i.metrics.bids_accepted.add(done.accepted as u64);
                        i.metrics.bids_rejected.add(done.rejected as u64);
                        i.metrics.bid_round_latency.observe(started.elapsed());
                    }
                    if done.len() < ROUND {
                        return;
                    }
                }
                Err(e) => {
                    // The bids stay queued (a stale round wrote nothing);
                    // the sweeper retries.
                    tracing::warn!(%product, error = %e, "decision round failed");
                    return;
                }
            }
        }
    }

    async fn sweep(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = now_ms();
            match self
                .inner
                .store
                .due(now - STALE_MS, now - CLOSE_GRACE_MS)
                .await
            {
                Ok(products) => {
                    for p in products {
                        self.mark(&p);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "bid sweep failed"),
            }
            if let Ok((depth, oldest)) = self.inner.store.queued().await {
                let m = &self.inner.metrics;
                m.bids_queued.set(depth as i64);
                m.bids_queue_lag_ms
                    .set(oldest.map(|o| (now - o).max(0)).unwrap_or(0));
            }
        }
    }
}
