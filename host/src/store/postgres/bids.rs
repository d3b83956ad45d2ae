//! `BidStore` on Postgres: reads on the pool, new bids and products through
//! the batch, and each decision round's commit in a transaction of its own
//! (the steps below, the events through `append_tx`). The row mappers are
//! here too.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{append_tx, PostgresStore};
use crate::bids::{Bid, Product};
use crate::event::StoredEvent;
use crate::store::bids::*;
use crate::store::Error;

#[async_trait]
impl BidStore for PostgresStore {
    async fn create_product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error> {
        self.batch.product(p).await
    }

    async fn product(&self, id: &str) -> Result<Option<Product>, Error> {
        let mut conn = self.pool.acquire().await?;
        load_product(&mut conn, id, false).await
    }

    async fn submit_bid(&self, bid: &Bid) -> Result<(Bid, bool), Error> {
        self.batch.bid(bid).await
    }

    async fn bid(&self, id: &str) -> Result<Option<Bid>, Error> {
        let row = sqlx::query(&format!("SELECT {BID_COLS} FROM bids WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(bid_row).transpose()?)
    }

    async fn read_round(
        &self,
        product_id: &str,
        limit: usize,
    ) -> Result<Option<RoundInput>, Error> {
        // One snapshot for the product and its bids.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let read = read_round(&mut tx, product_id, limit).await?;
        tx.commit().await?;
        Ok(read)
    }

    /// Rounds of different products commit in parallel, each in a
    /// transaction of its own (not in the shared batch: a product's row lock
    /// must not wait on other writes), holding the product's row lock only
    /// for the check and the write.
    async fn commit_round(&self, write: RoundWrite) -> Result<Option<RoundSummary>, Error> {
        let mut tx = self.pool.begin().await?;
        if !commit_round(&mut tx, &write).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let stored = append_tx(&mut tx, &write.round.events).await?;
        tx.commit().await?;
        self.commits.committed(&stored);
        Ok(Some(RoundSummary::of(&write.round, stored)))
    }

    async fn due(&self, queued_before: i64, ended_before: i64) -> Result<Vec<String>, Error> {
        // Not a moved tenant's old copy, kept for a grace period (`moving.rs`).
        let rows = sqlx::query(
            "SELECT id FROM (SELECT DISTINCT product_id AS id, tenant FROM bids \
         WHERE status = 'queued' AND created_at < $1 \
         UNION SELECT id, tenant FROM products WHERE status = 'open' AND ends_at < $2) d \
         WHERE tenant NOT IN (SELECT slug FROM tenants WHERE moved_at IS NOT NULL) LIMIT 1000",
        )
        .bind(queued_before)
        .bind(ended_before)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    async fn queued(&self) -> Result<(u64, Option<i64>), Error> {
        let row = sqlx::query(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM bids WHERE status = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get::<i64, _>("n")? as u64, row.try_get("oldest")?))
    }

    async fn decided(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Bid, String)>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {BID_COLS}, decision_input FROM bids \
             WHERE decision_input IS NOT NULL AND ($1::text IS NULL OR tenant = $1) \
             ORDER BY n DESC LIMIT $2"
        ))
        .bind(tenant)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| Ok((bid_row(r)?, r.try_get::<String, _>("decision_input")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.reverse();
        Ok(out)
    }
}

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

/// A round's read: the product, its first `limit` queued bids in order,
/// and whether more are queued (`None`: no such product).
pub(crate) async fn read_round(
    conn: &mut PgConnection,
    product_id: &str,
    limit: usize,
) -> Result<Option<RoundInput>, Error> {
    let Some(product) = load_product(conn, product_id, false).await? else {
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
    Ok(Some(RoundInput {
        product,
        bids,
        more,
    }))
}

/// Writes a round inside the caller's transaction if what it read still
/// holds (the product row locked to the transaction's end): its version,
/// each of its bids still queued, and (when it closes the auction) no other
/// bid queued. Returns whether it wrote; on `false` the caller rolls back.
/// The caller appends the round's events.
pub(crate) async fn commit_round(conn: &mut PgConnection, w: &RoundWrite) -> Result<bool, Error> {
    let round = &w.round;
    let p = &round.product;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM products WHERE id = $1 FOR UPDATE")
            .bind(&p.id)
            .fetch_optional(&mut *conn)
            .await?;
    if version != Some(w.read_version) {
        return Ok(false);
    }
    let now = crate::event::now_ms();
    let o = &round.outcomes;
    let ids: Vec<&str> = o.iter().map(|o| o.bid_id.as_str()).collect();
    let statuses: Vec<&str> = o.iter().map(|o| o.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = o.iter().map(|o| o.reason.as_deref()).collect();
    let inputs: Vec<Option<&str>> = o.iter().map(|o| o.input.as_deref()).collect();
    let decided = sqlx::query(
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
    if decided.rows_affected() != o.len() as u64 {
        return Ok(false);
    }
    if w.closes() {
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bids WHERE product_id = $1 AND status = 'queued'",
        )
        .bind(&p.id)
        .fetch_one(&mut *conn)
        .await?;
        if queued != 0 {
            return Ok(false);
        }
    }
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
    Ok(true)
}
