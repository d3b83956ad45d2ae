//! A Redis list as a bid queue (seed format: `LPUSH bids:pending
//! {"productId","bidderId","amount","timestamp"}`, field names
//! configurable): each message becomes a bid decided exactly once, like one
//! placed over HTTP, and its decision goes where a bid's always goes
//! (`bid.accepted` / `bid.rejected` on the product's topic).
//!
//! A message is moved off the list atomically (`BLMOVE` to the processing
//! list, oldest first), stored as a queued bid under the idempotency key
//! `src {source} {hash of the message}` (the bid store's own key, per
//! bidder), and removed from the processing list (`LREM`) only after that
//! commit. What the processing list holds at start (a crash between the move
//! and the removal) is stored again first: its key finds the bid stored
//! before, so a retry is never a second bid. Two byte-equal messages are one
//! bid (the seed's `timestamp` tells bids apart).

use std::time::Duration;

use redis::AsyncConnectionConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::lease::{short_conn, RedisDeadLetters};
use super::mapping::Reason;
use super::{Ctx, Fault, Item, Source};
use crate::bids::{Bid, BidStatus};

/// How long one `BLMOVE` blocks, in seconds.
const BLOCK_SECS: u64 = 1;

pub(super) struct RedisListBids;

#[async_trait::async_trait]
impl Source for RedisListBids {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault> {
        let spec = ctx.spec();
        let client = redis::Client::open(spec.redis_url.as_str())?;
        let mut short = short_conn(&client).await?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(BLOCK_SECS + 5));
        let mut reader = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let dead = RedisDeadLetters::new(short.clone(), &ctx.prefix, &spec.name);
        // Leftovers of a run that stopped between a move and its removal,
        // oldest (right-most) first.
        let mut left: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&spec.processing_key)
            .arg(0)
            .arg(-1)
            .query_async(&mut short)
            .await?;
        left.reverse();
        for raw in left {
            if owned.is_cancelled() {
                return Ok(());
            }
            handle(ctx, &dead, &mut short, raw).await?;
        }
        let mut measured = std::time::Instant::now() - Duration::from_secs(2);
        loop {
            if measured.elapsed() >= Duration::from_secs(2) {
                measured = std::time::Instant::now();
                let n: redis::RedisResult<u64> = redis::cmd("LLEN")
                    .arg(&spec.key)
                    .query_async(&mut short)
                    .await;
                if let Ok(n) = n {
                    ctx.status.lag(Some(n), None);
                }
            }
            let mut cmd = redis::cmd("BLMOVE");
            cmd.arg(&spec.key)
                .arg(&spec.processing_key)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(BLOCK_SECS);
            let moved: Option<Vec<u8>> = tokio::select! {
                r = cmd.query_async(&mut reader) => r?,
                _ = owned.cancelled() => return Ok(()),
            };
            let Some(raw) = moved else { continue };
            handle(ctx, &dead, &mut short, raw).await?;
            if owned.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Stores one message's bid (or its dead letter), then removes it from the
/// processing list.
async fn handle(
    ctx: &Ctx,
    dead: &RedisDeadLetters,
    short: &mut redis::aio::MultiplexedConnection,
    raw: Vec<u8>,
) -> Result<(), Fault> {
    let spec = ctx.spec();
    let digest = super::hash(&[&raw])[..32].to_string();
    match bid_of(ctx, &raw, &ctx.store_key(&digest)).await? {
        Ok(bid) => {
            ctx.status.m.read.inc();
            let (_, created) = ctx.bids.submit_bid(&bid).await?;
            if created {
                ctx.status.m.published.inc();
                ctx.metrics.bids_submitted.inc();
            }
            // Woken again for a retry: a bid stored before may still be queued.
            ctx.wakeups.wake(&bid.product_id).await;
        }
        Err(reason) => {
            let item = Item {
                origin: format!("list {}", spec.key),
                key: Some(digest),
                raw: raw.clone(),
                mapped: Err(reason),
            };
            ctx.commit(vec![item], dead).await?;
        }
    }
    let _: i64 = redis::cmd("LREM")
        .arg(&spec.processing_key)
        .arg(1)
        .arg(&raw)
        .query_async(short)
        .await?;
    Ok(())
}

/// The bid a message asks for, or why it is none.
async fn bid_of(ctx: &Ctx, raw: &[u8], key: &str) -> Result<Result<Bid, Reason>, Fault> {
    let spec = ctx.spec();
    let Some(fields) = &spec.bid_fields else {
        return Ok(Err("not a bid queue".into()));
    };
    let msg: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return Ok(Err(format!("not JSON: {e}"))),
    };
    let product_id = match fields.product.render(&[], Some(&msg)) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    let bidder = match fields.bidder.render(&[], Some(&msg)) {
        Ok(b) if crate::auth::valid_user_id(&b) => b,
        Ok(b) => return Ok(Err(format!("bidder {b:?} is not a valid user id"))),
        Err(r) => return Ok(Err(r)),
    };
    let amount = match msg.pointer(&fields.amount) {
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Some(_) => None,
        None => return Ok(Err(format!("field {} is missing", fields.amount))),
    };
    let Some(amount) = amount.filter(|a| *a >= 1) else {
        return Ok(Err(format!(
            "field {} must be a positive integer (minor units)",
            fields.amount
        )));
    };
    if !crate::auth::valid_user_id(&product_id) {
        return Ok(Err(format!("product {product_id:?} does not exist")));
    }
    let Some(product) = ctx.bids.product(&product_id).await? else {
        return Ok(Err(format!("product {product_id:?} does not exist")));
    };
    let tenant = match spec.mapping.tenant.render(&[], Some(&msg)) {
        Ok(t) => t,
        Err(r) => return Ok(Err(format!("tenant: {r}"))),
    };
    if tenant != product.tenant {
        // Said as unknown, as over HTTP: a queue places bids in its tenant only.
        return Ok(Err(format!("product {product_id:?} does not exist")));
    }
    Ok(Ok(Bid {
        id: crate::bids::new_id("b"),
        tenant,
        product_id,
        bidder_id: bidder,
        amount,
        idempotency_key: Some(key.to_string()),
        status: BidStatus::Queued,
        reason: None,
        decided_by: None,
        created_at: crate::event::now_ms(),
        decided_at: None,
    }))
}
