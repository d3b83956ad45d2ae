//! `BidStore` on Postgres: reads on the pool, new bids and products through
//! the batch, and each decision round in a transaction of its own (the
//! steps in `bids::postgres_impl`, the events through `append_tx`).

use async_trait::async_trait;
use sqlx::Row;

use super::bids::postgres_impl::{bid_row, load_product, round};
use super::bids::*;
use super::postgres::{append_tx, PostgresStore};
use super::Error;
use crate::bids::{Bid, Product};
use crate::event::StoredEvent;

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

    /// Rounds of different products run in parallel, each in its own
    /// transaction (not in the shared batch: a product's row lock must
    /// not wait on other writes).
    async fn decide(
        &self,
        product_id: &str,
        limit: usize,
        rules: Rules,
    ) -> Result<RoundSummary, Error> {
        let mut tx = self.pool.begin().await?;
        let Some(round) = round(&mut tx, product_id, limit, rules.as_ref()).await? else {
            return Ok(RoundSummary::default());
        };
        let stored = append_tx(&mut tx, &round.events).await?;
        tx.commit().await?;
        self.commits.committed(&stored);
        Ok(RoundSummary::of(&round, stored))
    }

    async fn due(&self, queued_before: i64, ended_before: i64) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT DISTINCT product_id AS id FROM bids WHERE status = 'queued' AND created_at < $1 \
         UNION SELECT id FROM products WHERE status = 'open' AND ends_at < $2 LIMIT 1000")
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
