//! The bid pipeline.
//!
//! - A bid is stored `queued` in the system of record before its 202.
//! - `queue`: wake-ups saying "this product has queued bids" (in-process, or a
//!   Redis Stream with a consumer group in cluster mode).
//! - `worker`: takes wake-ups, and on an interval sweeps the store for queued
//!   bids and auctions past their end, so a lost wake-up only delays.
//! - `decision`: the pure rules. A decision round decides a product's queued
//!   bids in order against its latest state, and commits the bids' outcomes,
//!   the product and the events in one transaction; a bid is only decided
//!   while `queued`, so it is decided exactly once.
//! - `round`: one round on either backend: read, decide with no transaction
//!   open, commit only if the product's version and the bids' `queued`
//!   state are still what it read (else decided again from a fresh read).

pub mod decision;
pub mod queue;
pub mod round;
pub mod worker;

use serde::{Deserialize, Serialize};

/// Where an auction stands; stored and serialized as `open` / `closed`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProductStatus {
    /// Takes bids.
    Open,
    /// Ended; its last leader won.
    Closed,
}

/// Where a bid stands; stored and serialized as `queued` / `accepted` /
/// `rejected`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BidStatus {
    /// Stored, not decided yet.
    Queued,
    /// Decided: it leads (or led) the auction.
    Accepted,
    /// Decided: refused (its `reason` says why).
    Rejected,
}

/// A stored status text that names no status.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl ProductStatus {
    /// The stored (and serialized) text.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Open => "open",
            ProductStatus::Closed => "closed",
        }
    }
}

impl std::str::FromStr for ProductStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(ProductStatus::Open),
            "closed" => Ok(ProductStatus::Closed),
            other => Err(UnknownStatus(other.into())),
        }
    }
}

impl BidStatus {
    /// The stored (and serialized) text.
    pub fn as_str(self) -> &'static str {
        match self {
            BidStatus::Queued => "queued",
            BidStatus::Accepted => "accepted",
            BidStatus::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for BidStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(BidStatus::Queued),
            "accepted" => Ok(BidStatus::Accepted),
            "rejected" => Ok(BidStatus::Rejected),
            other => Err(UnknownStatus(other.into())),
        }
    }
}

impl std::fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for BidStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A product under auction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Unique across tenants.
    pub id: String,
    /// Tenant slug.
    pub tenant: String,
    /// The seller's user id.
    pub seller_id: String,
    /// Title.
    pub title: String,
    /// Lowest first bid, in minor units.
    pub starting_price: i64,
    /// Smallest raise over the current bid, in minor units.
    pub min_increment: i64,
    /// A bid this close to the end extends it to this far after the bid (0: off).
    pub anti_snipe_ms: i64,
    /// End, ms since the epoch (null: no end).
    #[schema(required = true)]
    pub ends_at: Option<i64>,
    /// Open or closed.
    pub status: ProductStatus,
    /// Highest accepted bid.
    #[schema(required = true)]
    pub current_bid: Option<i64>,
    /// Who placed it.
    #[schema(required = true)]
    pub leader: Option<String>,
    /// Accepted bids.
    pub bid_count: i64,
    /// Grows with every change.
    pub version: i64,
    /// ms since the epoch.
    pub created_at: i64,
}

/// A bid.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bid {
    /// Unique id.
    pub id: String,
    /// Tenant slug.
    pub tenant: String,
    /// The product.
    pub product_id: String,
    /// The bidder's user id.
    pub bidder_id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Client-chosen key making retries safe.
    #[schema(required = true)]
    pub idempotency_key: Option<String>,
    /// Queued, accepted or rejected.
    pub status: BidStatus,
    /// Why it was rejected (a code such as `below_minimum` or
    /// `plugin_error`).
    #[schema(required = true)]
    pub reason: Option<String>,
    /// Which rule version decided it.
    #[schema(required = true)]
    pub decided_by: Option<String>,
    /// When it was accepted for processing (its 202), ms since the epoch.
    pub created_at: i64,
    /// When it was decided.
    #[schema(required = true)]
    pub decided_at: Option<i64>,
}

/// A random id with a prefix, e.g. `b_3f9a…`.
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}_{hex}")
}
