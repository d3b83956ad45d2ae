//! `BidStore` on SQLite: reads on the store's read connections, writes
//! through its batch writer (whose transaction runs the steps in
//! `bids::sqlite_impl`).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::bids::sqlite_impl::{bid_row, product_row};
use super::bids::*;
use super::sqlite::SqliteStore;
use super::Error;
use crate::bids::{Bid, Product};
use crate::event::StoredEvent;

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

    async fn decide(
        &self,
        product_id: &str,
        limit: usize,
        rules: Rules,
    ) -> Result<(usize, Vec<StoredEvent>), Error> {
        self.batch.decide(product_id, limit, rules).await
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
