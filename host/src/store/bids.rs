//! Products and bids in the system of record (`BidStore`), for SQLite and
//! Postgres. Only `queued` bids are decided, so a round that runs twice (two
//! workers, a retried wake-up) decides nothing twice.
//!
//! New bids and products go through the store's batch (group commit).
//! Decision rounds are optimistic on both backends, and the store never
//! calls the rules: the caller (`bids::round`) reads a round's input
//! (`read_round`: the product and its queued bids, in one consistent read),
//! decides it (the tenant's validator and shaper included) with no
//! transaction open and no connection held, and submits the result
//! (`commit_round`, a `RoundWrite`). The commit checks that the product's
//! `version` is the one read, that every bid it decides is still `queued`
//! and, when it closes the auction, that no other bid is queued; otherwise
//! it writes nothing and answers `None`, and the round is decided again
//! from a fresh read.
//!
//! - Postgres: the commit is a transaction of its own (the product row
//!   locked for the check and the write only), not the shared batch, so
//!   rounds of different products run in parallel and never wait on
//!   unrelated writes.
//! - SQLite: the commit runs inside the batch writer's transaction, so the
//!   one writer thread never waits on a tenant's plugin.

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

/// What a decision round reads: the product, its first queued bids in
/// order, and whether more are queued than were read.
#[derive(Debug, Clone)]
pub struct RoundInput {
    /// The product as read.
    pub product: Product,
    /// Its queued bids, oldest first, at most the round's limit.
    pub bids: Vec<Bid>,
    /// More bids are queued than were read.
    pub more: bool,
}

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

    /// A decision round's consistent read of a product and its first
    /// `limit` queued bids (`None`: no such product).
    async fn read_round(&self, product_id: &str, limit: usize)
        -> Result<Option<RoundInput>, Error>;

    /// Commits a round decided from a `read_round`, if what it read still
    /// holds: the bids' outcomes, the product and the events in one
    /// transaction, the events handed to the commit path. `None`: stale,
    /// nothing written; decide again from a fresh read.
    async fn commit_round(&self, write: RoundWrite) -> Result<Option<RoundSummary>, Error>;

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

/// A round decided from a `read_round`, to be committed only if what it
/// read still holds.
#[derive(Debug)]
pub struct RoundWrite {
    /// The product's `version` when the round read it.
    pub(crate) read_version: i64,
    /// The product's `status` when the round read it.
    pub(crate) read_status: ProductStatus,
    /// The result (`round.product.id` names the product).
    pub(crate) round: Round,
}

impl RoundWrite {
    /// The round `round` decided from the product as `read`.
    pub fn new(read: &Product, round: Round) -> RoundWrite {
        RoundWrite {
            read_version: read.version,
            read_status: read.status,
            round,
        }
    }

    /// The round closes the auction: it may only do so while no bid other
    /// than its own is queued (a bid queued after the read may have been
    /// placed before the end).
    pub(crate) fn closes(&self) -> bool {
        self.read_status == ProductStatus::Open && self.round.product.status != ProductStatus::Open
    }
}
