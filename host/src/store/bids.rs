//! Products and bids in the system of record (`BidStore`), for SQLite and
//! Postgres. Only `queued` bids are decided, so a round that runs twice (two
//! workers, a retried wake-up) decides nothing twice.
//!
//! New bids and products go through the store's batch (group commit).
//! Decision rounds differ by backend:
//!
//! - Postgres: each round is one transaction of its own that locks the
//!   product row, reads its queued bids in order, applies the rules and writes
//!   outcomes, product and events; rounds of different products run in
//!   parallel and a product's row lock never waits on unrelated writes.
//! - SQLite (optimistic): the round reads the product and its queued bids in
//!   one read transaction, applies the rules (the tenant's validator and
//!   shaper included) on a blocking thread of its own, and only then submits
//!   the result to the batch (`RoundWrite`). Inside the writer's transaction
//!   the write checks that the product's `version` is the one read and that
//!   every bid it decides is still `queued`, else it writes nothing and the
//!   round is run again from the read. The one writer thread therefore never
//!   waits on a tenant's plugin.

use async_trait::async_trait;

use super::Error;
use crate::bids::decision::Round;
use crate::bids::{Bid, BidStatus, Product, ProductStatus};

/// A product's columns, in the order the row readers take them.
pub(crate) const PRODUCT_COLS: &str = "id, tenant, seller_id, title, starting_price, min_increment, anti_snipe_ms, ends_at, status, current_bid, leader, bid_count, version, created_at";
/// A bid's columns, in the order the row readers take them.
pub(crate) const BID_COLS: &str = "id, tenant, product_id, bidder_id, amount, idempotency_key, status, reason, decided_by, created_at, decided_at";

/// A round's bid outcomes have not changed the product and decided nothing:
/// there is nothing to write.
pub(crate) fn idle(round: &Round, before: &Product) -> bool {
    round.outcomes.is_empty() && round.product == *before
}
use crate::event::StoredEvent;

/// The rules of a decision round: product, queued bids (in order), and
/// whether more are queued than were read.
pub type RulesFn = dyn Fn(Product, &[Bid], bool) -> Round + Send + Sync;

/// The rules a decision round applies: product, queued bids (in order), and
/// whether more are queued than were read.
pub type Rules = std::sync::Arc<RulesFn>;

/// Products and bids.
#[async_trait]
pub trait BidStore: Send + Sync + 'static {
    /// Stores a product with its `product.created` event.
    async fn create_product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error>;

    /// A product by id.
    async fn product(&self, id: &str) -> Result<Option<Product>, Error>;

    /// Stores a queued bid. With an idempotency key already used by this
    /// bidder: the same product and amount return the stored bid (`false`),
    /// anything else is a `Conflict(BidKeyReused)`.
    async fn submit_bid(&self, bid: &Bid) -> Result<(Bid, bool), Error>;

    /// A bid by id.
    async fn bid(&self, id: &str) -> Result<Option<Bid>, Error>;

    /// One decision round for a product over at most `limit` queued bids:
    /// what it decided and the committed events.
    async fn decide(
        &self,
        product_id: &str,
        limit: usize,
        rules: Rules,
    ) -> Result<RoundSummary, Error>;

    /// Products needing a round: queued bids older than `queued_before`, or
    /// open auctions that ended before `ended_before`.
    async fn due(&self, queued_before: i64, ended_before: i64) -> Result<Vec<String>, Error>;

    /// Queued bids in total (queue depth) and the oldest one's `created_at`.
    async fn queued(&self) -> Result<(u64, Option<i64>), Error>;

    /// The latest `limit` decisions the validator rule took part in (oldest
    /// first), each with what the rule was asked (JSON), optionally of one tenant.
    async fn decided(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Bid, String)>, Error>;
}

/// What a committed decision round did.
#[derive(Debug, Clone, Default)]
pub struct RoundSummary {
    /// Bids accepted.
    pub accepted: usize,
    /// Bids rejected.
    pub rejected: usize,
    /// The bids decided, in order.
    pub decided: Vec<String>,
    /// The committed events.
    pub events: Vec<StoredEvent>,
}

impl RoundSummary {
    /// The summary of a committed round with its committed events.
    pub(crate) fn of(round: &Round, events: Vec<StoredEvent>) -> RoundSummary {
        let accepted = round
            .outcomes
            .iter()
            .filter(|o| o.status == BidStatus::Accepted)
            .count();
        RoundSummary {
            accepted,
            rejected: round.outcomes.len() - accepted,
            decided: round.outcomes.iter().map(|o| o.bid_id.clone()).collect(),
            events,
        }
    }

    /// How many bids the round decided.
    pub fn len(&self) -> usize {
        self.decided.len()
    }

    /// Whether it decided no bid.
    pub fn is_empty(&self) -> bool {
        self.decided.is_empty()
    }
}

/// The bid stored under `bid`'s idempotency key, if it is the same bid; a
/// key used for another bid is refused.
pub(crate) fn same_bid(existing: Option<Bid>, bid: &Bid) -> Result<(Bid, bool), Error> {
    match existing {
        Some(e) if e.product_id == bid.product_id && e.amount == bid.amount => Ok((e, false)),
        Some(_) => Err(Error::Conflict(super::ConflictReason::BidKeyReused)),
        // Only the random bid id itself can have collided.
        None => Err(Error::Internal(format!(
            "bid id {:?} already exists",
            bid.id
        ))),
    }
}

/// A round decided off the writer, to be committed only if what it read
/// still holds.
#[derive(Debug)]
pub(crate) struct RoundWrite {
    /// The product's `version` when the round read it.
    pub(crate) read_version: i64,
    /// The product's `status` when the round read it.
    pub(crate) read_status: ProductStatus,
    /// The result (`round.product.id` names the product).
    pub(crate) round: Round,
}

impl RoundWrite {
    /// The round closes the auction: it may only do so while no bid other
    /// than its own is queued (a bid queued after the read may have been
    /// placed before the end).
    pub(crate) fn closes(&self) -> bool {
        self.read_status == ProductStatus::Open && self.round.product.status != ProductStatus::Open
    }
}
