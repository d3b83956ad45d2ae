//! `BidStore` on SQLite: reads on the store's read connections, writes
//! through its batch writer, whose transaction runs the steps below (the
//! inserts, and the check-then-write of a round decided by its caller; see
//! `store/bids.rs`). The row mappers are here too.

use async_trait::async_trait;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::bids::{Bid, BidStatus, Product, ProductStatus};
use crate::event::StoredEvent;
use crate::store::bids::*;
use crate::store::Error;

#[async_trait]
impl BidStore for SqliteStore {
    async fn create_product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error> {
        self.batch.product(p).await
    }

    async fn product(&self, id: &str) -> Result<Option<Product>, Error> {
        let id = id.to_string();
        self.readers
            .with(move |c| {
                Ok(
                    c.prepare_cached(&format!("SELECT {PRODUCT_COLS} FROM products WHERE id = ?"))?
                        .query_row([id], product_row)
                        .optional()?,
                )
            })
            .await
    }

    async fn submit_bid(&self, bid: &Bid) -> Result<(Bid, bool), Error> {
        self.batch.bid(bid).await
    }

    async fn bid(&self, id: &str) -> Result<Option<Bid>, Error> {
        let id = id.to_string();
        self.readers
            .with(move |c| {
                Ok(
                    c.prepare_cached(&format!("SELECT {BID_COLS} FROM bids WHERE id = ?"))?
                        .query_row([id], bid_row)
                        .optional()?,
                )
            })
            .await
    }

    async fn read_round(
        &self,
        product_id: &str,
        limit: usize,
    ) -> Result<Option<RoundInput>, Error> {
        let id = product_id.to_string();
        self.readers.with(move |c| read_round(c, &id, limit)).await
    }

    /// Inside the batch writer's transaction (`commit_round` below).
    async fn commit_round(&self, write: RoundWrite) -> Result<Option<RoundSummary>, Error> {
        self.batch.round(write).await
    }

    async fn due(&self, queued_before: i64, ended_before: i64) -> Result<Vec<String>, Error> {
        self.readers
            .with(move |c| {
                Ok(c.prepare_cached(
                    "SELECT DISTINCT product_id AS id FROM bids WHERE status = 'queued' AND created_at < ? \
                     UNION SELECT id FROM products WHERE status = 'open' AND ends_at < ? LIMIT 1000",
                )?
                .query_map([queued_before, ended_before], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn queued(&self) -> Result<(u64, Option<i64>), Error> {
        self.readers
            .with(|c| {
                Ok(c.prepare_cached(
                    "SELECT count(*), min(created_at) FROM bids WHERE status = 'queued'",
                )?
                .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?)
            })
            .await
    }

    async fn decided(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Bid, String)>, Error> {
        let tenant = tenant.map(str::to_string);
        let mut out = self
            .readers
            .with(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {BID_COLS}, decision_input FROM bids WHERE decision_input IS NOT NULL \
                     AND (?1 IS NULL OR tenant = ?1) ORDER BY n DESC LIMIT ?2"
                ))?
                .query_map(params![tenant, limit as i64], |r| {
                    Ok((bid_row(r)?, r.get(11)?))
                })?
                .collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        out.reverse();
        Ok(out)
    }
}

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
) -> Result<Option<RoundInput>, Error> {
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
    Ok(Some(RoundInput {
        product,
        bids,
        more,
    }))
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
            .prepare_cached("SELECT count(*) FROM bids WHERE product_id = ? AND status = 'queued'")?
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
