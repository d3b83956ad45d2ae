//! `BidWakeups`: telling workers which product has queued bids.
//!
//! The bids themselves are in the system of record; a wake-up is only a
//! hint, and every node's sweeper finds queued bids whose wake-up was lost.
//! Embedded mode marks this node's worker (`LocalWakeups`); cluster mode
//! sends wake-ups through Redis to one node's worker (in `backend::cluster`).

use super::worker::Worker;

/// How a stored bid's product reaches a worker.
#[async_trait::async_trait]
pub trait BidWakeups: Send + Sync + 'static {
    /// Announces queued bids on `product`.
    async fn wake(&self, product: &str);
}

/// This node's worker, directly.
pub struct LocalWakeups(pub Worker);

#[async_trait::async_trait]
impl BidWakeups for LocalWakeups {
    async fn wake(&self, product: &str) {
        self.0.mark(product);
    }
}
