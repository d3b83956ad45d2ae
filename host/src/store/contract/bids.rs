//! `BidStore`: bids queued once per idempotency key, rounds that decide
//! each bid once.

use std::collections::BTreeSet;

use super::{contract, Db};
use crate::bids::decision::{self, BuiltinOutbid, BuiltinValidator};
use crate::bids::{Bid, BidStatus, Product, ProductStatus};
use crate::store::bids::{BidStore, RoundSummary, RoundWrite};
use crate::store::{ConflictReason, Error};

contract!(
    a_bid_is_queued_once_per_key,
    racing_rounds_decide_each_bid_once,
    a_round_past_the_end_closes_the_auction,
    a_stale_round_writes_nothing,
);

/// The built-in rules, as a round's.
fn builtin(p: Product, bids: &[Bid], more: bool) -> decision::Round {
    decision::decide(
        p,
        bids,
        crate::event::now_ms(),
        more,
        &BuiltinValidator,
        &BuiltinOutbid,
    )
}

/// One round over `limit` queued bids with the built-in rules.
async fn round(bids: &dyn BidStore, limit: usize) -> Result<RoundSummary, Error> {
    crate::bids::round::run(bids, "p1", limit, builtin).await
}

fn product(ends_at: Option<i64>) -> Product {
    Product {
        id: "p1".into(),
        tenant: "acme".into(),
        seller_id: "seller".into(),
        title: "Lamp".into(),
        starting_price: 100,
        min_increment: 10,
        anti_snipe_ms: 0,
        ends_at,
        status: ProductStatus::Open,
        current_bid: None,
        leader: None,
        bid_count: 0,
        version: 1,
        created_at: crate::event::now_ms(),
    }
}

fn bid(n: usize, amount: i64, key: Option<&str>) -> Bid {
    Bid {
        id: format!("b{n:03}"),
        tenant: "acme".into(),
        product_id: "p1".into(),
        bidder_id: format!("u{}", n % 7),
        amount,
        idempotency_key: key.map(str::to_string),
        status: BidStatus::Queued,
        reason: None,
        decided_by: None,
        created_at: crate::event::now_ms(),
        decided_at: None,
    }
}

async fn setup(db: &Db, ends_at: Option<i64>) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let events = db
        .bids
        .create_product(&product(ends_at))
        .await
        .expect("product");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "product.created");
}

/// A bid resubmitted under its idempotency key answers the stored one (not
/// new); the key with another amount is `BidKeyReused`.
async fn a_bid_is_queued_once_per_key(db: &Db) {
    setup(db, None).await;
    let (stored, new) = db
        .bids
        .submit_bid(&bid(1, 150, Some("k")))
        .await
        .expect("bid");
    assert!(new);
    let mut again = bid(2, 150, Some("k"));
    again.bidder_id = stored.bidder_id.clone();
    let (same, new) = db.bids.submit_bid(&again).await.expect("again");
    assert_eq!((same.id.as_str(), new), ("b001", false));
    again.amount = 170;
    match db.bids.submit_bid(&again).await {
        Err(Error::Conflict(ConflictReason::BidKeyReused)) => {}
        other => panic!("another bid under the key: {other:?}"),
    }
    assert_eq!(db.bids.queued().await.expect("queued").0, 1);
    let b = db.bids.bid("b001").await.expect("read").expect("bid");
    assert_eq!(b.status, BidStatus::Queued);
}

/// Two rounds racing over 60 queued bids decide every bid exactly once:
/// the decided ids are disjoint and cover them all, each summary's counts
/// match its events, and the product's count is the accepted total.
async fn racing_rounds_decide_each_bid_once(db: &Db) {
    setup(db, None).await;
    for n in 0..60 {
        let amount = 100 + 10 * (n as i64 / 2) + (n as i64 % 2);
        db.bids
            .submit_bid(&bid(n, amount, None))
            .await
            .expect("bid");
    }
    let spawn = |limit| {
        let bids = db.bids.clone();
        tokio::spawn(async move { round(bids.as_ref(), limit).await })
    };
    let mut summaries: Vec<RoundSummary> = Vec::new();
    while summaries.iter().map(RoundSummary::len).sum::<usize>() < 60 {
        let (a, b) = (spawn(25), spawn(25));
        for done in [a.await, b.await] {
            summaries.push(done.expect("task").expect("round"));
        }
        assert!(summaries.len() < 40, "rounds stopped deciding");
    }
    let mut decided = BTreeSet::new();
    let (mut accepted, mut rejected) = (0, 0);
    for s in &summaries {
        assert_eq!(s.accepted + s.rejected, s.len());
        let events = |kind| s.events.iter().filter(|e| e.kind == kind).count();
        assert_eq!(events("bid.accepted"), s.accepted);
        assert_eq!(events("bid.rejected"), s.rejected);
        for id in &s.decided {
            assert!(decided.insert(id.clone()), "{id} decided twice");
        }
        accepted += s.accepted;
        rejected += s.rejected;
    }
    assert_eq!(decided.len(), 60);
    assert_eq!(accepted + rejected, 60);
    assert_eq!(db.bids.queued().await.expect("queued").0, 0);
    let p = db.bids.product("p1").await.expect("read").expect("product");
    assert_eq!(p.bid_count, accepted as i64);
    for n in [0, 31, 59] {
        let b = db
            .bids
            .bid(&format!("b{n:03}"))
            .await
            .expect("read")
            .expect("bid");
        assert_ne!(b.status, BidStatus::Queued);
        assert!(b.decided_by.is_some());
    }
    // Nothing is left to decide.
    let idle = round(db.bids.as_ref(), 25).await.expect("round");
    assert!(idle.is_empty() && idle.events.is_empty());
}

/// An auction past its end (and its grace) is closed by a round, once:
/// bids queued before the round are decided first, and it is then `due`
/// no more.
async fn a_round_past_the_end_closes_the_auction(db: &Db) {
    let ended = crate::event::now_ms() - decision::CLOSE_GRACE_MS - 1_000;
    setup(db, Some(ended)).await;
    let now = crate::event::now_ms();
    let due = db.bids.due(0, now).await.expect("due");
    assert_eq!(due, ["p1"]);
    let done = round(db.bids.as_ref(), 10).await.expect("round");
    assert!(done.is_empty(), "no bid to decide");
    assert!(done.events.iter().any(|e| e.kind == "auction.closed"));
    let p = db.bids.product("p1").await.expect("read").expect("product");
    assert_eq!(p.status, ProductStatus::Closed);
    assert!(db.bids.due(0, now).await.expect("due").is_empty());
    let again = round(db.bids.as_ref(), 10).await.expect("round");
    assert!(again.events.is_empty(), "closed once");
}

/// A round whose product changed after its read (here another round
/// committed meanwhile) writes nothing: the commit answers `None`, and the
/// bids, the product and the log are as the other round left them.
async fn a_stale_round_writes_nothing(db: &Db) {
    setup(db, None).await;
    for (n, amount) in [(1, 150), (2, 160)] {
        db.bids
            .submit_bid(&bid(n, amount, None))
            .await
            .expect("bid");
    }
    let read = db
        .bids
        .read_round("p1", 10)
        .await
        .expect("read")
        .expect("product");
    assert_eq!((read.bids.len(), read.more), (2, false));
    let done = round(db.bids.as_ref(), 10).await.expect("round");
    assert_eq!((done.accepted, done.rejected), (2, 0));
    let after = db.bids.product("p1").await.expect("read").expect("product");
    let head = db.store.heads().await.expect("heads");

    let stale = builtin(read.product.clone(), &read.bids, read.more);
    assert!(!stale.outcomes.is_empty());
    let answer = db
        .bids
        .commit_round(RoundWrite::new(&read.product, stale))
        .await
        .expect("commit");
    assert!(answer.is_none(), "a stale round is refused");
    let now = db.bids.product("p1").await.expect("read").expect("product");
    assert_eq!(now, after, "the product is as the winning round left it");
    assert_eq!(
        db.store.heads().await.expect("heads"),
        head,
        "no event appended"
    );
    for n in [1, 2] {
        let b = db
            .bids
            .bid(&format!("b{n:03}"))
            .await
            .expect("read")
            .expect("bid");
        assert_eq!(b.status, BidStatus::Accepted);
    }
}
