//! `BidStore` on SQLite: reads on the store's read connections, writes
//! through its batch writer, whose transaction runs the steps below (the
//! inserts, and the check-then-write of a round). Decision rounds are
//! optimistic: read, decide on a blocking thread of the round's own, then
//! commit through the batch only if the product and its bids are unchanged
//! (see `store/bids.rs`). The row mappers are here too.

use async_trait::async_trait;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::bids::{Bid, BidStatus, Product, ProductStatus};
use crate::event::StoredEvent;
use crate::store::bids::*;
use crate::store::Error;

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
