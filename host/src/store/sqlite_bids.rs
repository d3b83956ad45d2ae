//! `BidStore` on SQLite: reads on the store's read connections, writes
//! through its batch writer (whose transaction runs the steps in
//! `bids::sqlite_impl`). Decision rounds are optimistic: read, decide on a
//! blocking thread of the round's own, then commit through the batch only if
//! the product and its bids are unchanged (see `bids.rs`).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::bids::sqlite_impl::{bid_row, product_row, read_round};
use super::bids::*;
use super::sqlite::SqliteStore;
use super::Error;
use crate::bids::{Bid, Product};
use crate::event::StoredEvent;

/// Times a round is decided again after finding what it read changed
/// before it could commit. Only a round of another process on the same
/// data, or a bug, makes one stale: this node runs one round per product at
/// a time.
const ROUND_ATTEMPTS: u32 = 5;

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

    /// Reads the product and its queued bids, decides them off the writer
    /// (the tenant's validator and shaper may take up to their deadlines),
    /// and submits the result to the batch, which writes it only if the
    /// product's version and the bids' `queued` state are still what was
    /// read; otherwise the round runs again from the read, up to
    /// `ROUND_ATTEMPTS` times (then the bids stay queued for the sweeper).
    async fn decide(
        &self,
        product_id: &str,
        limit: usize,
        rules: Rules,
    ) -> Result<RoundSummary, Error> {
        for attempt in 1..=ROUND_ATTEMPTS {
            let id = product_id.to_string();
            let read = self
                .readers
                .with(move |c| read_round(c, &id, limit))
                .await?;
            let Some((product, bids, more)) = read else {
                return Ok(RoundSummary::default());
            };
            let (read_version, read_status) = (product.version, product.status);
            let rules = rules.clone();
            let (round, before) = tokio::task::spawn_blocking(move || {
                let before = product.clone();
                (rules(product, &bids, more), before)
            })
            .await
            .map_err(|e| Error::Internal(format!("a decision round failed: {e}")))?;
            if idle(&round, &before) {
                return Ok(RoundSummary::default());
            }
            let write = RoundWrite {
                read_version,
                read_status,
                round,
            };
            match self.batch.round(write).await? {
                Some(done) => return Ok(done),
                None => {
                    tracing::debug!(product = %product_id, attempt, "decision round was stale; deciding again")
                }
            }
        }
        Err(Error::Conflict(super::ConflictReason::RoundsContended(
            ROUND_ATTEMPTS,
        )))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::bids::decision::{self, BuiltinOutbid, BuiltinValidator};
    use crate::store::Store;

    fn builtin() -> Rules {
        Arc::new(|p: Product, bids: &[Bid], more| {
            decision::decide(
                p,
                bids,
                crate::event::now_ms(),
                more,
                &BuiltinValidator,
                &BuiltinOutbid,
            )
        })
    }

    fn bid(id: &str, who: &str, amount: i64) -> Bid {
        Bid {
            id: id.into(),
            tenant: "acme".into(),
            product_id: "p1".into(),
            bidder_id: who.into(),
            amount,
            idempotency_key: None,
            status: crate::bids::BidStatus::Queued,
            reason: None,
            decided_by: None,
            created_at: crate::event::now_ms(),
            decided_at: None,
        }
    }

    /// A round whose product changes while it decides (here another round
    /// commits meanwhile) writes nothing and is decided again from a fresh
    /// read: every bid is decided once, and only the winning round's events
    /// are appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_round_writes_nothing_and_is_decided_again() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-rounds-{}", crate::bids::new_id("t")));
        let store = Arc::new(SqliteStore::open(&dir).await.expect("open"));
        store.create_tenant("acme", "Acme").await.expect("tenant");
        let now = crate::event::now_ms();
        let product = Product {
            id: "p1".into(),
            tenant: "acme".into(),
            seller_id: "seller".into(),
            title: "Lamp".into(),
            starting_price: 100,
            min_increment: 10,
            anti_snipe_ms: 0,
            ends_at: None,
            status: crate::bids::ProductStatus::Open,
            current_bid: None,
            leader: None,
            bid_count: 0,
            version: 1,
            created_at: now,
        };
        store.create_product(&product).await.expect("product");
        for b in [bid("b1", "u1", 150), bid("b2", "u2", 160)] {
            store.submit_bid(&b).await.expect("bid");
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let competing = Arc::new(std::sync::Mutex::new(None));
        let rules: Rules = {
            let (store, calls, competing) = (store.clone(), calls.clone(), competing.clone());
            Arc::new(move |p: Product, bids: &[Bid], more| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Another round decides the same bids while this one is
                    // deciding (it runs on a blocking thread of its own).
                    let done = tokio::runtime::Handle::current()
                        .block_on(store.decide("p1", 10, builtin()))
                        .expect("competing round");
                    *competing.lock().expect("lock") = Some(done);
                }
                decision::decide(
                    p,
                    bids,
                    crate::event::now_ms(),
                    more,
                    &BuiltinValidator,
                    &BuiltinOutbid,
                )
            })
        };
        let done = store.decide("p1", 10, rules).await.expect("round");
        assert_eq!(
            (done.len(), done.events.len()),
            (0, 0),
            "the stale round wrote nothing"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "decided again after a fresh read"
        );
        let done = competing.lock().expect("lock").take().expect("competed");
        assert_eq!((done.len(), done.accepted, done.rejected), (2, 2, 0));
        assert_eq!(done.decided, ["b1", "b2"]);
        let accepted: Vec<&str> = done
            .events
            .iter()
            .filter(|e| e.kind == "bid.accepted")
            .map(|e| e.topic.as_str())
            .collect();
        assert_eq!(accepted, ["product:p1", "product:p1"]);
        let p = store.product("p1").await.expect("read").expect("product");
        assert_eq!(
            (p.current_bid, p.leader.as_deref()),
            (Some(160), Some("u2"))
        );
        assert_eq!((p.bid_count, p.version), (2, 3));
        for id in ["b1", "b2"] {
            let b = store.bid(id).await.expect("read").expect("bid");
            assert_eq!(b.status, crate::bids::BidStatus::Accepted, "{b:?}");
        }
        let page = store
            .read("acme", &["product:p1".into()], Some(0), 100)
            .await
            .expect("read");
        let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["product.created", "bid.accepted", "bid.accepted"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
