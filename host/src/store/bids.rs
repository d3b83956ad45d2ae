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

/// SQLite (rusqlite): the row mappers, and the inserts and rounds the batch
/// writer runs inside its transaction (`sqlite_writer.rs`); `sqlite_bids.rs`
/// implements `BidStore` with them.
pub(crate) mod sqlite_impl {
    use super::*;

    use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
    use rusqlite::{params, Connection, OptionalExtension, Row};

    impl ToSql for ProductStatus {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::from(self.as_str()))
        }
    }

    impl FromSql for ProductStatus {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            value
                .as_str()?
                .parse()
                .map_err(|e| FromSqlError::Other(Box::new(e)))
        }
    }

    impl ToSql for BidStatus {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::from(self.as_str()))
        }
    }

    impl FromSql for BidStatus {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            value
                .as_str()?
                .parse()
                .map_err(|e| FromSqlError::Other(Box::new(e)))
        }
    }

    /// Inserts a product (its event is appended by the batch).
    pub(crate) fn insert_product(conn: &Connection, p: &Product) -> Result<(), Error> {
        conn.prepare_cached(&format!(
            "INSERT INTO products ({PRODUCT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))?
        .execute(params![
            p.id,
            p.tenant,
            p.seller_id,
            p.title,
            p.starting_price,
            p.min_increment,
            p.anti_snipe_ms,
            p.ends_at,
            p.status,
            p.current_bid,
            p.leader,
            p.bid_count,
            p.version,
            p.created_at
        ])?;
        Ok(())
    }

    /// Inserts a queued bid, or finds the one stored under its idempotency key
    /// (a key used for another bid is refused inside, with nothing written).
    pub(crate) fn insert_bid(
        conn: &Connection,
        bid: &Bid,
    ) -> Result<Result<(Bid, bool), Error>, Error> {
        let inserted = conn
            .prepare_cached(&format!(
                "INSERT INTO bids ({BID_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING"
            ))?
            .execute(params![
                bid.id,
                bid.tenant,
                bid.product_id,
                bid.bidder_id,
                bid.amount,
                bid.idempotency_key,
                bid.status,
                bid.reason,
                bid.decided_by,
                bid.created_at,
                bid.decided_at
            ])?;
        if inserted == 1 {
            return Ok(Ok((bid.clone(), true)));
        }
        let existing = conn
            .prepare_cached(&format!(
                "SELECT {BID_COLS} FROM bids WHERE tenant = ? AND bidder_id = ? AND idempotency_key = ?"
            ))?
            .query_row(
                params![bid.tenant, bid.bidder_id, bid.idempotency_key],
                bid_row,
            )
            .optional()?;
        Ok(same_bid(existing, bid))
    }

    /// A round's consistent read, in one read transaction: the product,
    /// its first `limit` queued bids in order, and whether more are queued
    /// (`None`: no such product).
    pub(crate) fn read_round(
        conn: &Connection,
        product_id: &str,
        limit: usize,
    ) -> Result<Option<(Product, Vec<Bid>, bool)>, Error> {
        let tx = conn.unchecked_transaction()?;
        let product = tx
            .prepare_cached(&format!("SELECT {PRODUCT_COLS} FROM products WHERE id = ?"))?
            .query_row(params![product_id], product_row)
            .optional()?;
        let Some(product) = product else {
            return Ok(None);
        };
        let mut bids = tx
            .prepare_cached(&format!(
                "SELECT {BID_COLS} FROM bids WHERE product_id = ? AND status = 'queued' \
                 ORDER BY n LIMIT ?"
            ))?
            .query_map(params![product_id, limit as i64 + 1], bid_row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(tx);
        let more = bids.len() > limit;
        bids.truncate(limit);
        Ok(Some((product, bids, more)))
    }

    /// Commits a round decided off the writer, inside the batch's
    /// transaction, if what it read still holds: the product's version, each
    /// of its bids still queued, and (when it closes the auction) no other
    /// bid queued. Returns whether it wrote (`false`: stale, nothing
    /// written; the round is run again from its read); the batch appends the
    /// round's events.
    pub(crate) fn commit_round(conn: &Connection, w: &RoundWrite) -> Result<bool, Error> {
        let round = &w.round;
        let p = &round.product;
        let version: Option<i64> = conn
            .prepare_cached("SELECT version FROM products WHERE id = ?")?
            .query_row(params![p.id], |r| r.get(0))
            .optional()?;
        if version != Some(w.read_version) {
            return Ok(false);
        }
        let mut status = conn.prepare_cached("SELECT status FROM bids WHERE id = ?")?;
        for o in &round.outcomes {
            let s: Option<BidStatus> = status
                .query_row(params![o.bid_id], |r| r.get(0))
                .optional()?;
            if s != Some(BidStatus::Queued) {
                return Ok(false);
            }
        }
        if w.closes() {
            let queued: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM bids WHERE product_id = ? AND status = 'queued'",
                )?
                .query_row(params![p.id], |r| r.get(0))?;
            if queued != round.outcomes.len() as i64 {
                return Ok(false);
            }
        }
        let now = crate::event::now_ms();
        let mut decide = conn.prepare_cached(
            "UPDATE bids SET status = ?, reason = ?, decided_by = ?, decided_at = ?, \
             decision_input = ? WHERE id = ? AND status = 'queued'",
        )?;
        for o in &round.outcomes {
            decide.execute(params![
                o.status,
                o.reason,
                round.decided_by,
                now,
                o.input,
                o.bid_id
            ])?;
        }
        conn.prepare_cached(
            "UPDATE products SET status = ?, current_bid = ?, leader = ?, bid_count = ?, \
             version = ?, ends_at = ? WHERE id = ?",
        )?
        .execute(params![
            p.status,
            p.current_bid,
            p.leader,
            p.bid_count,
            p.version,
            p.ends_at,
            p.id
        ])?;
        Ok(true)
    }

    pub(crate) fn product_row(r: &Row<'_>) -> rusqlite::Result<Product> {
        Ok(Product {
            id: r.get(0)?,
            tenant: r.get(1)?,
            seller_id: r.get(2)?,
            title: r.get(3)?,
            starting_price: r.get(4)?,
            min_increment: r.get(5)?,
            anti_snipe_ms: r.get(6)?,
            ends_at: r.get(7)?,
            status: r.get(8)?,
            current_bid: r.get(9)?,
            leader: r.get(10)?,
            bid_count: r.get(11)?,
            version: r.get(12)?,
            created_at: r.get(13)?,
        })
    }

    pub(crate) fn bid_row(r: &Row<'_>) -> rusqlite::Result<Bid> {
        Ok(Bid {
            id: r.get(0)?,
            tenant: r.get(1)?,
            product_id: r.get(2)?,
            bidder_id: r.get(3)?,
            amount: r.get(4)?,
            idempotency_key: r.get(5)?,
            status: r.get(6)?,
            reason: r.get(7)?,
            decided_by: r.get(8)?,
            created_at: r.get(9)?,
            decided_at: r.get(10)?,
        })
    }
}

/// Postgres (sqlx): the row mappers, and the inserts and rounds that run
/// inside a transaction (the batch's, or a round's own); `postgres_bids.rs`
/// implements `BidStore` with them.
pub(crate) mod postgres_impl {
    use super::*;

    use sqlx::postgres::PgRow;
    use sqlx::{PgConnection, Row};

    /// A status column read as its enum.
    fn status<T: std::str::FromStr>(r: &PgRow, col: &str) -> Result<T, sqlx::Error>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        r.try_get::<String, _>(col)?
            .parse()
            .map_err(|e| sqlx::Error::ColumnDecode {
                index: col.into(),
                source: Box::new(e),
            })
    }

    pub(crate) fn product_row(r: &PgRow) -> Result<Product, sqlx::Error> {
        Ok(Product {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            seller_id: r.try_get("seller_id")?,
            title: r.try_get("title")?,
            starting_price: r.try_get("starting_price")?,
            min_increment: r.try_get("min_increment")?,
            anti_snipe_ms: r.try_get("anti_snipe_ms")?,
            ends_at: r.try_get("ends_at")?,
            status: status(r, "status")?,
            current_bid: r.try_get("current_bid")?,
            leader: r.try_get("leader")?,
            bid_count: r.try_get("bid_count")?,
            version: r.try_get("version")?,
            created_at: r.try_get("created_at")?,
        })
    }

    pub(crate) fn bid_row(r: &PgRow) -> Result<Bid, sqlx::Error> {
        Ok(Bid {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            product_id: r.try_get("product_id")?,
            bidder_id: r.try_get("bidder_id")?,
            amount: r.try_get("amount")?,
            idempotency_key: r.try_get("idempotency_key")?,
            status: status(r, "status")?,
            reason: r.try_get("reason")?,
            decided_by: r.try_get("decided_by")?,
            created_at: r.try_get("created_at")?,
            decided_at: r.try_get("decided_at")?,
        })
    }

    pub(crate) async fn load_product(
        conn: &mut PgConnection,
        id: &str,
        lock: bool,
    ) -> Result<Option<Product>, Error> {
        let sql = format!(
            "SELECT {PRODUCT_COLS} FROM products WHERE id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.as_ref().map(product_row).transpose()?)
    }

    /// Inserts a product (its event is appended by the caller).
    pub(crate) async fn insert_product(conn: &mut PgConnection, p: &Product) -> Result<(), Error> {
        sqlx::query(&format!(
            "INSERT INTO products ({PRODUCT_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&p.id)
        .bind(&p.tenant)
        .bind(&p.seller_id)
        .bind(&p.title)
        .bind(p.starting_price)
        .bind(p.min_increment)
        .bind(p.anti_snipe_ms)
        .bind(p.ends_at)
        .bind(p.status.as_str())
        .bind(p.current_bid)
        .bind(&p.leader)
        .bind(p.bid_count)
        .bind(p.version)
        .bind(p.created_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Inserts a queued bid, or finds the one stored under its idempotency
    /// key. A key used for another bid is refused (`Err` inside), with nothing
    /// written.
    pub(crate) async fn insert_bid(
        conn: &mut PgConnection,
        bid: &Bid,
    ) -> Result<Result<(Bid, bool), Error>, Error> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO bids ({BID_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&bid.id)
        .bind(&bid.tenant)
        .bind(&bid.product_id)
        .bind(&bid.bidder_id)
        .bind(bid.amount)
        .bind(&bid.idempotency_key)
        .bind(bid.status.as_str())
        .bind(&bid.reason)
        .bind(&bid.decided_by)
        .bind(bid.created_at)
        .bind(bid.decided_at)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Ok((bid.clone(), true)));
        }
        let row = sqlx::query(&format!(
            "SELECT {BID_COLS} FROM bids \
             WHERE tenant = $1 AND bidder_id = $2 AND idempotency_key = $3"
        ))
        .bind(&bid.tenant)
        .bind(&bid.bidder_id)
        .bind(&bid.idempotency_key)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(same_bid(row.as_ref().map(bid_row).transpose()?, bid))
    }

    /// One decision round inside the caller's transaction (the product row
    /// is locked to its end): the round, whose events the caller appends
    /// (`None`: nothing to write).
    pub(crate) async fn round(
        conn: &mut PgConnection,
        product_id: &str,
        limit: usize,
        rules: &RulesFn,
    ) -> Result<Option<Round>, Error> {
        let Some(product) = load_product(conn, product_id, true).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(&format!(
            "SELECT {BID_COLS} FROM bids WHERE product_id = $1 AND status = 'queued' \
             ORDER BY n LIMIT $2"
        ))
        .bind(product_id)
        .bind(limit as i64 + 1)
        .fetch_all(&mut *conn)
        .await?;
        let mut bids = rows.iter().map(bid_row).collect::<Result<Vec<_>, _>>()?;
        let more = bids.len() > limit;
        bids.truncate(limit);
        let before = product.clone();
        let round = rules(product, &bids, more);
        if idle(&round, &before) {
            return Ok(None);
        }
        let now = crate::event::now_ms();
        let o = &round.outcomes;
        let ids: Vec<&str> = o.iter().map(|o| o.bid_id.as_str()).collect();
        let statuses: Vec<&str> = o.iter().map(|o| o.status.as_str()).collect();
        let reasons: Vec<Option<&str>> = o.iter().map(|o| o.reason.as_deref()).collect();
        let inputs: Vec<Option<&str>> = o.iter().map(|o| o.input.as_deref()).collect();
        sqlx::query(
            "UPDATE bids SET status = u.status, reason = u.reason, decided_by = $5, \
             decided_at = $6, decision_input = u.input \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(id, status, reason, input) \
             WHERE bids.id = u.id AND bids.status = 'queued'",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&reasons)
        .bind(&inputs)
        .bind(&round.decided_by)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let p = &round.product;
        sqlx::query(
            "UPDATE products SET status = $1, current_bid = $2, leader = $3, bid_count = $4, \
             version = $5, ends_at = $6 WHERE id = $7",
        )
        .bind(p.status.as_str())
        .bind(p.current_bid)
        .bind(&p.leader)
        .bind(p.bid_count)
        .bind(p.version)
        .bind(p.ends_at)
        .bind(&p.id)
        .execute(&mut *conn)
        .await?;
        Ok(Some(round))
    }
}
