//! One decision round, the same on both backends: the store's consistent
//! read of the product and its queued bids, the rules on a blocking thread
//! (the tenant's validator and shaper may take up to their deadlines, and
//! no transaction is open and no connection held meanwhile), then the
//! store's commit, which writes only if what the round read still holds.
//! A stale round is decided again from a fresh read, up to `ATTEMPTS`
//! times; then its bids stay queued for the sweeper.

use super::decision::Round;
use super::{Bid, Product};
use crate::store::bids::{idle, BidStore, RoundInput, RoundSummary, RoundWrite};
use crate::store::{ConflictReason, Error};

/// Times a round is decided again after finding what it read changed
/// before it could commit. Only a round elsewhere on the same product (on
/// another node, or the sweeper's and a wake-up's here) makes one stale.
pub const ATTEMPTS: u32 = 5;

/// Decides and commits one round for `product_id` over at most `limit`
/// queued bids with `rules` (product, queued bids in order, whether more
/// are queued): what it decided and the committed events (empty when there
/// was nothing to decide).
pub async fn run<F>(
    store: &dyn BidStore,
    product_id: &str,
    limit: usize,
    rules: F,
) -> Result<RoundSummary, Error>
where
    F: Fn(Product, &[Bid], bool) -> Round + Clone + Send + 'static,
{
    for attempt in 1..=ATTEMPTS {
        let Some(input) = store.read_round(product_id, limit).await? else {
            return Ok(RoundSummary::default());
        };
        let rules = rules.clone();
        let write = tokio::task::spawn_blocking(move || {
            let RoundInput {
                product,
                bids,
                more,
            } = input;
            let read = product.clone();
            let round = rules(product, &bids, more);
            (!idle(&round, &read)).then(|| RoundWrite::new(&read, round))
        })
        .await
        .map_err(|e| Error::Internal(format!("a decision round failed: {e}")))?;
        let Some(write) = write else {
            return Ok(RoundSummary::default());
        };
        match store.commit_round(write).await? {
            Some(done) => return Ok(done),
            None => {
                tracing::debug!(product = %product_id, attempt, "decision round was stale; deciding again")
            }
        }
    }
    Err(Error::Conflict(ConflictReason::RoundsContended(ATTEMPTS)))
}
