//! `Store`: ids, keyed appends, retained state, retention, messages.

use std::collections::BTreeSet;

use super::{contract, Db};
use crate::event::NewEvent;
use crate::event::StoredEvent;
use crate::store::{Committed, ConflictReason, Error, Keyed, NewMessage, PublishKey};

contract!(
    ids_are_gapless_under_concurrent_appends,
    an_unknown_tenant_fails_its_append_alone,
    a_keyed_append_repeats_conflicts_and_expires,
    racing_keyed_appends_store_once,
    the_last_retained_value_wins,
    a_trim_leaves_its_watermark,
    a_tenant_is_created_once,
    messages_count_unread_until_marked_read,
    every_write_hands_its_events_to_the_commit_path,
);

fn event(topic: &str, n: usize, retain: bool) -> NewEvent {
    NewEvent {
        tenant: "acme".into(),
        topic: topic.into(),
        kind: "note".into(),
        data: format!("{{\"n\":{n}}}"),
        retain,
    }
}

fn key(key: &str, hash: &str, since_ms: i64) -> PublishKey {
    PublishKey {
        tenant: "acme".into(),
        key: key.into(),
        hash: hash.into(),
        since_ms,
    }
}

/// 200 concurrent appends (of one to three events) get ids 1..=N with no
/// gap and no repeat, and the log reads back in id order.
async fn ids_are_gapless_under_concurrent_appends(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..200 {
        let store = db.store.clone();
        let events = (0..=n % 3)
            .map(|i| event("feed:1", n * 10 + i, false))
            .collect();
        writes.spawn(async move { store.append(events).await });
    }
    let mut ids = BTreeSet::new();
    let mut total = 0;
    while let Some(done) = writes.join_next().await {
        let stored = done.expect("task").expect("append");
        let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "one append's ids are consecutive: {seqs:?}"
        );
        total += stored.len();
        ids.extend(seqs);
    }
    assert_eq!(ids.len(), total, "no id is given twice");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&(total as u64)));
    let page = db
        .store
        .read("acme", &["feed:1".into()], Some(0), 10_000)
        .await
        .expect("read");
    assert_eq!(page.head, total as u64);
    let read: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(read, (1..=total as u64).collect::<Vec<_>>());
}

/// Appends sharing a batch with one that names an unknown tenant succeed;
/// that one fails with `UnknownTenant` and stores nothing.
async fn an_unknown_tenant_fails_its_append_alone(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..50 {
        let store = db.store.clone();
        let mut e = event("feed:1", n, false);
        if n == 17 {
            e.tenant = "nobody".into();
        }
        writes.spawn(async move { (n, store.append(vec![e]).await) });
    }
    while let Some(done) = writes.join_next().await {
        match done.expect("task") {
            (17, Err(Error::UnknownTenant(t))) => assert_eq!(t, "nobody"),
            (n, Ok(stored)) if n != 17 => assert_eq!(stored.len(), 1),
            (n, other) => panic!("append {n}: {other:?}"),
        }
    }
    let heads = db.store.heads().await.expect("heads");
    assert_eq!(heads, [("acme".to_string(), 49)]);
}

/// The first keyed append stores; the same key and request again stores
/// nothing and answers the first ids; the key with another request is
/// `KeyReused`; an expired key is used anew.
async fn a_keyed_append_repeats_conflicts_and_expires(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let events = || vec![event("feed:1", 1, false), event("feed:1", 2, false)];
    let first = match db.store.append_keyed(key("k", "h1", 0), events()).await {
        Ok(Keyed::New(stored)) => stored,
        other => panic!("first: {other:?}"),
    };
    let ids: Vec<u64> = first.iter().map(|e| e.seq).collect();
    assert_eq!(ids, [1, 2]);
    match db.store.append_keyed(key("k", "h1", 0), events()).await {
        Ok(Keyed::Repeated(again, ts)) => {
            assert_eq!(again, ids);
            assert_eq!(ts, first[0].ts);
        }
        other => panic!("repeat: {other:?}"),
    }
    match db.store.append_keyed(key("k", "h2", 0), events()).await {
        Err(Error::KeyReused) => {}
        other => panic!("another request: {other:?}"),
    }
    assert_eq!(
        db.store.heads().await.expect("heads")[0].1,
        2,
        "nothing stored"
    );
    // Keys created before `since_ms` count as unused.
    let later = crate::event::now_ms() + 1_000;
    match db.store.append_keyed(key("k", "h2", later), events()).await {
        Ok(Keyed::New(stored)) => {
            assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4])
        }
        other => panic!("expired: {other:?}"),
    }
    // And a trim of old keys removes them.
    let removed = db
        .store
        .trim_publish_keys(
            crate::event::now_ms() + 10_000,
            crate::event::now_ms() + 10_000,
        )
        .await
        .expect("trim keys");
    assert_eq!(removed, 1);
}

/// Twenty appends of the same key and request at once store once: every
/// one answers the same ids.
async fn racing_keyed_appends_store_once(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let mut writes = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = db.store.clone();
        writes.spawn(async move {
            store
                .append_keyed(key("race", "h", 0), vec![event("feed:1", 1, false)])
                .await
        });
    }
    let (mut new, mut answers) = (0, BTreeSet::new());
    while let Some(done) = writes.join_next().await {
        match done.expect("task").expect("keyed append") {
            Keyed::New(stored) => {
                new += 1;
                answers.insert(stored.iter().map(|e| e.seq).collect::<Vec<_>>());
            }
            Keyed::Repeated(ids, _) => {
                answers.insert(ids);
            }
        }
    }
    assert_eq!(new, 1, "stored once");
    assert_eq!(answers.into_iter().collect::<Vec<_>>(), [vec![1]]);
}

/// A topic's retained state is its last retained event's: within one
/// append, across appends, and across concurrent appends (the highest id).
async fn the_last_retained_value_wins(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let retained = |topic: &'static str| {
        let store = db.store.clone();
        async move {
            let page = store
                .read("acme", &[topic.into()], None, 0)
                .await
                .expect("read");
            let r = page.topics[0].retained.clone().expect("retained");
            (r.seq, r.data)
        }
    };
    let stored = db
        .store
        .append(vec![
            event("a", 1, true),
            event("a", 2, true),
            event("a", 3, false),
            event("b", 4, true),
        ])
        .await
        .expect("append");
    assert_eq!(retained("a").await, (stored[1].seq, r#"{"n":2}"#.into()));
    assert_eq!(retained("b").await, (stored[3].seq, r#"{"n":4}"#.into()));
    let stored = db
        .store
        .append(vec![event("a", 5, true)])
        .await
        .expect("append");
    assert_eq!(retained("a").await, (stored[0].seq, r#"{"n":5}"#.into()));
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..50 {
        let store = db.store.clone();
        writes.spawn(async move { store.append(vec![event("a", 100 + n, true)]).await });
    }
    let mut last = (0, String::new());
    while let Some(done) = writes.join_next().await {
        let stored = done.expect("task").expect("append");
        let seq = stored[0].seq;
        if seq > last.0 {
            let v: serde_json::Value = serde_json::from_str(&stored[0].json).expect("json");
            last = (seq, v["data"].to_string());
        }
    }
    assert_eq!(retained("a").await, last, "the highest id's value");
}

/// Trimming a topic to its newest events records the highest id removed
/// (`trimmed`), which stays when the topic is read; trimming by age too.
async fn a_trim_leaves_its_watermark(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let events = (1..=10).map(|n| event("feed:1", n, false)).collect();
    db.store.append(events).await.expect("append");
    db.store
        .append(vec![event("other", 11, false)])
        .await
        .expect("append");
    let removed = db
        .store
        .trim_topic("acme", "feed:1", 3)
        .await
        .expect("trim");
    assert_eq!(removed, 7);
    let page = db
        .store
        .read("acme", &["feed:1".into()], Some(0), 100)
        .await
        .expect("read");
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    assert_eq!(page.topics[0].trimmed, 7);
    assert_eq!(page.head, 11);
    // Nothing more to trim: the watermark stays.
    assert_eq!(
        db.store
            .trim_topic("acme", "feed:1", 3)
            .await
            .expect("trim"),
        0
    );
    let removed = db
        .store
        .trim_older_than(crate::event::now_ms() + 1_000)
        .await
        .expect("trim by age");
    assert_eq!(removed, 4);
    let page = db
        .store
        .read("acme", &["feed:1".into(), "other".into()], Some(0), 100)
        .await
        .expect("read");
    assert!(page.events.is_empty());
    let mut marks: Vec<(String, u64)> = page
        .topics
        .iter()
        .map(|t| (t.topic.clone(), t.trimmed))
        .collect();
    marks.sort();
    assert_eq!(marks, [("feed:1".into(), 10), ("other".into(), 11)]);
}

/// A slug is taken once: the second creation is `TenantExists`.
async fn a_tenant_is_created_once(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    match db.store.create_tenant("acme", "Again").await {
        Err(Error::Conflict(ConflictReason::TenantExists(slug))) => assert_eq!(slug, "acme"),
        other => panic!("second creation: {other:?}"),
    }
    let t = db
        .store
        .tenant("acme")
        .await
        .expect("read")
        .expect("tenant");
    assert_eq!(t.name, "Acme");
}

/// Posted messages count as unread until a read mark passes them; a mark
/// never goes backwards; each write appends the recipient's retained
/// `unread` event.
async fn messages_count_unread_until_marked_read(db: &Db) {
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let msg = |body: &str| NewMessage {
        tenant: "acme".into(),
        from: "u1".into(),
        to: "u2".into(),
        product_id: None,
        body: body.into(),
    };
    let mut ids = Vec::new();
    for (i, body) in ["a", "b", "c"].into_iter().enumerate() {
        let (m, unread, events) = db.store.post_message(&msg(body), &[]).await.expect("post");
        assert_eq!(unread, i as u64 + 1);
        assert_eq!(events.last().map(|e| e.kind.as_str()), Some("unread"));
        ids.push(m.id);
    }
    let (unread, events) = db
        .store
        .mark_read("acme", "u2", ids[1])
        .await
        .expect("mark");
    assert_eq!((unread, events.len()), (1, 1));
    let (unread, _) = db
        .store
        .mark_read("acme", "u2", ids[0])
        .await
        .expect("mark");
    assert_eq!(unread, 1, "a mark never goes backwards");
    assert_eq!(db.store.unread("acme", "u2").await.expect("unread"), 1);
    let listed = db
        .store
        .messages("acme", "u1", 0, 10)
        .await
        .expect("messages");
    assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}

/// Records what reaches the commit path.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<u64>>);

impl Committed for Recorder {
    fn committed(&self, events: &[StoredEvent]) {
        let mut seen = self.0.lock().expect("recorder");
        seen.extend(events.iter().map(|e| e.seq));
    }
}

/// Every write that appends (a publish, a keyed publish, a message, a read
/// mark, a product, a bid round) hands its committed events to the commit
/// path once, before it answers; a repeated keyed publish hands nothing.
async fn every_write_hands_its_events_to_the_commit_path(db: &Db) {
    let seen = std::sync::Arc::new(Recorder::default());
    assert!(db.store.commits().connect(seen.clone()));
    db.store
        .create_tenant("acme", "Acme")
        .await
        .expect("tenant");
    let mut answered: Vec<u64> = Vec::new();
    let mut note = |events: &[StoredEvent]| answered.extend(events.iter().map(|e| e.seq));
    note(
        &db.store
            .append(vec![event("feed:1", 1, true)])
            .await
            .expect("append"),
    );
    for _ in 0..2 {
        if let Keyed::New(stored) = db
            .store
            .append_keyed(key("k", "h", 0), vec![event("feed:1", 2, false)])
            .await
            .expect("keyed")
        {
            note(&stored);
        }
    }
    let msg = NewMessage {
        tenant: "acme".into(),
        from: "u1".into(),
        to: "u2".into(),
        product_id: None,
        body: "hi".into(),
    };
    let (m, _, stored) = db.store.post_message(&msg, &[]).await.expect("post");
    note(&stored);
    note(
        &db.store
            .mark_read("acme", "u2", m.id)
            .await
            .expect("mark")
            .1,
    );
    let p = crate::bids::Product {
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
        created_at: crate::event::now_ms(),
    };
    note(&db.bids.create_product(&p).await.expect("product"));
    let bid = crate::bids::Bid {
        id: "b1".into(),
        tenant: "acme".into(),
        product_id: "p1".into(),
        bidder_id: "u1".into(),
        amount: 150,
        idempotency_key: None,
        status: crate::bids::BidStatus::Queued,
        reason: None,
        decided_by: None,
        created_at: crate::event::now_ms(),
        decided_at: None,
    };
    db.bids.submit_bid(&bid).await.expect("bid");
    let rules = |p, bids: &[_], more| {
        crate::bids::decision::decide(
            p,
            bids,
            crate::event::now_ms(),
            more,
            &crate::bids::decision::BuiltinValidator,
            &crate::bids::decision::BuiltinOutbid,
        )
    };
    let round = crate::bids::round::run(db.bids.as_ref(), "p1", 10, rules)
        .await
        .expect("round");
    assert_eq!(round.accepted, 1);
    note(&round.events);
    let seen = seen.0.lock().expect("recorder").clone();
    assert_eq!(seen, answered, "each committed event once, in commit order");
    let head = db.store.heads().await.expect("heads")[0].1;
    assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "and nothing else");
}
