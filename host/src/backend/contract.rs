//! The contract of each mode service (`CapStore`, `PresenceStore`, `Fanout`,
//! `BidWakeups`, the console's `Directory`, the secret), run against both implementations, so that embedded and
//! cluster mode cannot drift apart (the system of record's traits have
//! theirs in `store::contract`). The Redis side talks
//! to a real Redis (`SWITCHYARD_TEST_REDIS_URL`, default 127.0.0.1:6379),
//! each test under a key prefix of its own.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cluster::bid_wakeups::RedisWakeups;
use super::cluster::caps::RedisCaps;
use super::cluster::conn::RedisConn;
use super::cluster::fanout::RedisFanout;
use super::cluster::presence::RedisPresence;
use crate::bids::queue::{BidWakeups, LocalWakeups};
use crate::bids::worker::Worker;
use crate::bus::hub::Hub;
use crate::bus::memory::MemoryFanout;
use crate::bus::Fanout;
use crate::event::NewEvent;
use crate::metrics::Metrics;
use crate::plugins::wasm::{Limits, WasmHost};
use crate::plugins::{NoFilters, Plugins};
use crate::presence::{Entry, MemoryPresence, PresenceStore};
use crate::sse::caps::{CapLimits, CapStore, Caps, Holder, MemoryCaps, Refusal};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

fn unique(what: &str) -> String {
    crate::bids::new_id(what).replace('_', "-")
}

async fn redis(prefix: &str) -> RedisConn {
    let url = std::env::var("SWITCHYARD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    RedisConn::connect(&url, prefix, Duration::from_secs(5))
        .await
        .expect("the tests need Redis")
}

/// Polls `f` until it holds, for at most `secs`.
async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---- stream caps ------------------------------------------------------------

fn limits(per_user: u32, per_tenant: u32) -> CapLimits {
    CapLimits {
        per_user,
        per_tenant,
        anonymous_per_tenant: 3,
        per_address: 2,
    }
}

/// Two streams per user and three per tenant: the third of a user and the
/// fourth of a tenant are refused, naming the cap; closing a stream frees
/// its slots; other tenants are not counted together. Anonymous streams
/// have a budget of their own (three per tenant, two per address): they
/// neither take signed-in slots nor are refused for want of them.
async fn caps_hold_their_limits(store: Arc<dyn CapStore>) {
    let caps = Caps::new(limits(2, 3), store);
    let t = unique("t");
    let a = caps.acquire(&t, Holder::User("u")).await.unwrap();
    let _b = caps.acquire(&t, Holder::User("u")).await.unwrap();
    assert_eq!(
        caps.acquire(&t, Holder::User("u")).await.err(),
        Some(Refusal::User)
    );
    let _c = caps.acquire(&t, Holder::User("v")).await.unwrap();
    assert_eq!(
        caps.acquire(&t, Holder::Service).await.err(),
        Some(Refusal::Tenant)
    );
    let other = unique("t");
    let _d = caps.acquire(&other, Holder::User("u")).await.unwrap();
    let ip = |n: u8| Holder::Anonymous(std::net::IpAddr::from([192, 0, 2, n]));
    let (one, two) = (ip(1), ip(2));
    let _e = caps
        .acquire(&t, one)
        .await
        .expect("anonymous: a budget of its own");
    let _f = caps.acquire(&t, one).await.unwrap();
    assert_eq!(caps.acquire(&t, one).await.err(), Some(Refusal::Address));
    let _g = caps.acquire(&t, two).await.unwrap();
    assert_eq!(
        caps.acquire(&t, two).await.err(),
        Some(Refusal::AnonymousTenant)
    );
    drop(a);
    assert!(
        eventually(5, || async {
            caps.acquire(&t, Holder::User("u")).await.is_ok()
        })
        .await,
        "a closed stream's slots are freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_caps_hold_their_limits() {
    caps_hold_their_limits(Arc::new(MemoryCaps::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_caps_hold_their_limits() {
    let stop = CancellationToken::new();
    let conn = redis(&unique("caps")).await;
    caps_hold_their_limits(Arc::new(RedisCaps::start(&conn, stop.clone()))).await;
    stop.cancel();
}

/// Cluster mode's caps hold across nodes: a slot taken on one is counted on
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_caps_hold_across_nodes() {
    let stop = CancellationToken::new();
    let conn = redis(&unique("caps")).await;
    let one = Caps::new(
        limits(1, 10),
        Arc::new(RedisCaps::start(&conn, stop.clone())),
    );
    let two = Caps::new(
        limits(1, 10),
        Arc::new(RedisCaps::start(&conn, stop.clone())),
    );
    let t = unique("t");
    let lease = one.acquire(&t, Holder::User("u")).await.unwrap();
    assert_eq!(
        two.acquire(&t, Holder::User("u")).await.err(),
        Some(Refusal::User)
    );
    drop(lease);
    assert!(
        eventually(5, || async {
            two.acquire(&t, Holder::User("u")).await.is_ok()
        })
        .await
    );
    stop.cancel();
}

// ---- presence ---------------------------------------------------------------

fn entry<'a>(conn: u64, tenant: &'a str, topic: &'a str, user: Option<&'a str>) -> Entry<'a> {
    Entry {
        conn,
        tenant,
        topic,
        user,
    }
}

/// The data the members of the presence contract join with.
const DATA: &str = r#"{"name":"Ann"}"#;

/// A member of a topic capped at `cap`.
fn cap(cap: usize) -> Option<crate::presence::Membership<'static>> {
    Some(crate::presence::Membership { cap, claims: DATA })
}

/// Counts of streams and distinct users, one decision per interval, only
/// changes; a user's first stream joins once, its last one leaves once
/// after the linger unless the user is back first; past the cap one
/// truncation and no member events until the topic empties.
async fn presence_decides_once(store: Arc<dyn PresenceStore>) {
    use crate::presence::{Change, Counts, Decision};
    let t = unique("t");
    let room = "room:1";
    let ms = Duration::from_millis;
    let members = cap(10);
    let first = store.join(entry(1, &t, room, Some("u1")), members).await;
    let Ok(Some(Change::Joined(v1))) = first else {
        panic!("u1 did not join: {first:?}");
    };
    assert_eq!(
        store.join(entry(2, &t, room, Some("u1")), members).await,
        Ok(None)
    );
    assert_eq!(
        store.join(entry(3, &t, room, None), members).await,
        Ok(None)
    );
    let counts = |streams, users, was: (u64, u64)| Decision::Changed {
        counts: Counts { streams, users },
        was: Counts {
            streams: was.0,
            users: was.1,
        },
    };
    assert_eq!(
        store.decide(&t, room, ms(200), ms(0)).await,
        counts(3, 1, (0, 0))
    );
    assert_eq!(store.decide(&t, room, ms(200), ms(0)).await, Decision::Lost);
    tokio::time::sleep(ms(250)).await;
    assert_eq!(
        store.decide(&t, room, ms(200), ms(0)).await,
        Decision::Unchanged
    );
    // One of u1's streams closes: u1 stays.
    store
        .leave(entry(1, &t, room, Some("u1")), Some(ms(0)))
        .await;
    // The last one closes; u1 is back within the linger: nothing happens.
    store
        .leave(entry(2, &t, room, Some("u1")), Some(ms(300)))
        .await;
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    assert_eq!(
        store.join(entry(4, &t, room, Some("u1")), members).await,
        Ok(None)
    );
    tokio::time::sleep(ms(350)).await;
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    // Gone for good: one leave, after the linger, to one caller.
    store
        .leave(entry(4, &t, room, Some("u1")), Some(ms(100)))
        .await;
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    tokio::time::sleep(ms(150)).await;
    let left = store.sweep(Duration::ZERO).await.leaves;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (left[0].user.as_str(), left[0].topic.as_str()),
        ("u1", room)
    );
    assert!(left[0].v > v1);
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    assert_eq!(
        store.decide(&t, room, ms(200), ms(0)).await,
        counts(1, 0, (3, 1))
    );
    // Past the cap (one member): one truncation, then nothing.
    let full = "room:2";
    assert!(matches!(
        store.join(entry(5, &t, full, Some("a")), cap(1)).await,
        Ok(Some(Change::Joined(_)))
    ));
    assert!(matches!(
        store.join(entry(6, &t, full, Some("b")), cap(1)).await,
        Ok(Some(Change::Truncated(_)))
    ));
    assert_eq!(
        store.join(entry(7, &t, full, Some("c")), cap(1)).await,
        Ok(None)
    );
    for (conn, user) in [(5, "a"), (6, "b"), (7, "c")] {
        store
            .leave(entry(conn, &t, full, Some(user)), Some(ms(0)))
            .await;
    }
    tokio::time::sleep(ms(20)).await;
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    // Empty again: a set again.
    let joined = store.join(entry(8, &t, full, Some("d")), cap(1)).await;
    let Ok(Some(Change::Joined(vd))) = joined else {
        panic!("d did not join: {joined:?}");
    };
    // The set as decided, with the data each member joined with and a `v`
    // above every transition's, for one check per period.
    let held = store.held(&t, full, ms(500)).await;
    let Ok(Some(held)) = held else {
        panic!("no set held: {held:?}");
    };
    assert_eq!(held.members, vec![("d".to_string(), DATA.to_string())]);
    assert!(!held.truncated && held.v > vd, "{held:?}");
    assert_eq!(store.held(&t, full, ms(500)).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_presence_decides_once() {
    presence_decides_once(Arc::new(MemoryPresence::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_decides_once() {
    let stop = CancellationToken::new();
    let conn = redis(&unique("presence")).await;
    presence_decides_once(Arc::new(RedisPresence::start(&conn, stop.clone()))).await;
    stop.cancel();
}

/// A dead node's streams: their leases expire, the next decision counts
/// them out, and a member among them leaves once after the linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_drops_expired_leases() {
    use crate::presence::{Counts, Decision};
    let stop = CancellationToken::new();
    let conn = redis(&unique("presence")).await;
    let store = RedisPresence::start(&conn, stop.clone());
    let t = unique("t");
    let room = "room:3";
    let ms = Duration::from_millis;
    assert!(store
        .join(entry(1, &t, room, Some("ghost")), cap(10))
        .await
        .is_ok_and(|c| c.is_some()));
    assert_eq!(
        store.decide(&t, room, ms(50), ms(100)).await,
        Decision::Changed {
            counts: Counts {
                streams: 1,
                users: 1
            },
            was: Counts::default()
        }
    );
    tokio::time::sleep(ms(60)).await;
    // As a node that died would leave it: the lease, past its expiry.
    let conns = store.key(&t, room, "conns");
    let mut c = conn.conn.clone();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&conns)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&conns)
        .arg(1)
        .arg(&members[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        store.decide(&t, room, ms(50), ms(100)).await,
        Decision::Changed {
            counts: Counts {
                streams: 0,
                users: 0
            },
            was: Counts {
                streams: 1,
                users: 1
            }
        }
    );
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    tokio::time::sleep(ms(150)).await;
    let left = store.sweep(Duration::ZERO).await.leaves;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].user, "ghost");
    assert_eq!(store.sweep(Duration::ZERO).await.leaves, vec![]);
    stop.cancel();
}

// ---- fan-out ----------------------------------------------------------------

struct Node {
    hub: Hub,
    store: Arc<SqliteStore>,
}

async fn node(dir: &std::path::Path) -> Node {
    let store = Arc::new(SqliteStore::open(dir).await.unwrap());
    let _ = store.create_tenant("acme", "Acme").await;
    let hub = Hub::start(
        store.clone(),
        Arc::new(Metrics::default()),
        vec![("acme".into(), 0)],
        Duration::from_secs(3600),
        Arc::new(NoFilters),
    );
    Node { hub, store }
}

fn note(n: usize) -> NewEvent {
    NewEvent {
        tenant: "acme".into(),
        topic: "feed:1".into(),
        kind: "note".into(),
        data: format!("{{\"n\":{n}}}"),
        retain: false,
    }
}

/// A committed event handed to the fan-out reaches the subscribers of the
/// publishing node's own hub, in id order.
async fn fanout_reaches_its_own_hub(make: impl FnOnce(Hub) -> Arc<dyn Fanout>) {
    let dir = std::env::temp_dir().join(unique("switchyard-fanout"));
    let n = node(&dir).await;
    let fanout = make(n.hub.clone());
    let sub = n
        .hub
        .subscribe("acme", &["feed:1".into()], 16, Arc::default());
    let events = n.store.append((1..=3).map(note).collect()).await.unwrap();
    fanout.publish(&events);
    let mut got = Vec::new();
    for _ in 0..3 {
        let f = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("delivered");
        got.push(f.seq);
    }
    assert_eq!(got, [1, 2, 3]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fanout_reaches_its_own_hub() {
    fanout_reaches_its_own_hub(|hub| Arc::new(MemoryFanout::new(hub))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fanout_reaches_its_own_hub() {
    let stop = CancellationToken::new();
    let conn = redis(&unique("fanout")).await;
    let s = stop.clone();
    fanout_reaches_its_own_hub(move |hub| {
        Arc::new(RedisFanout::start(
            conn,
            1,
            hub,
            Arc::new(Metrics::default()),
            "a".into(),
            s,
        ))
    })
    .await;
    stop.cancel();
}

/// Cluster mode's fan-out carries an event to the other nodes' hubs, on
/// one shard or several; a node reads only the shard of the tenant it has
/// a subscriber of.
async fn redis_fanout_reaches_the_other_nodes(shards: u16) {
    let stop = CancellationToken::new();
    let conn = redis(&unique("fanout")).await;
    let dir = std::env::temp_dir().join(unique("switchyard-fanout"));
    let a = node(&dir).await;
    let b = node(&dir).await;
    let metrics_b = Arc::new(Metrics::default());
    let on_a = RedisFanout::start(
        conn.clone(),
        shards,
        a.hub.clone(),
        Arc::new(Metrics::default()),
        "a".into(),
        stop.clone(),
    );
    let _on_b = RedisFanout::start(
        conn,
        shards,
        b.hub.clone(),
        metrics_b.clone(),
        "b".into(),
        stop.clone(),
    );
    let sub = b
        .hub
        .subscribe("acme", &["feed:1".into()], 64, Arc::default());
    // Until b's reader has joined the stream, an entry may pass it by; its
    // hub then fills the gap from the store when the next one arrives.
    let mut n = 0;
    let first = loop {
        n += 1;
        let events = a.store.append(vec![note(n)]).await.unwrap();
        on_a.publish(&events);
        if let Ok(f) = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            break f.seq;
        }
        assert!(n < 20, "nothing reached the other node");
    };
    assert_eq!(first, 1, "the other node gets every id in order");
    let mine = super::cluster::fanout::shard_of("acme", shards);
    for shard in 0..shards {
        let reading = metrics_b.bus_shard(shard).reading.get();
        assert_eq!(
            reading,
            i64::from(shard == mine),
            "shard {shard} of {shards}"
        );
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fanout_reaches_the_other_nodes_on_one_shard() {
    redis_fanout_reaches_the_other_nodes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fanout_reaches_the_other_nodes_on_eight_shards() {
    redis_fanout_reaches_the_other_nodes(8).await;
}

// ---- bid wake-ups -----------------------------------------------------------

/// A store with an open product `p1`, and a worker deciding its bids.
async fn bidding(dir: &std::path::Path, stop: &CancellationToken) -> (Arc<SqliteStore>, Worker) {
    use crate::store::bids::BidStore;
    let store = Arc::new(SqliteStore::open(dir).await.expect("open"));
    store.create_tenant("acme", "Acme").await.expect("tenant");
    let product = crate::bids::Product {
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
    store.create_product(&product).await.expect("product");
    let plugins = Plugins::new(
        WasmHost::new(Limits::default()).expect("wasm host"),
        store.clone(),
        4,
    );
    let worker = Worker::start(
        store.clone(),
        plugins,
        Arc::new(Metrics::default()),
        stop.clone(),
    );
    (store, worker)
}

/// A wake-up for a product with a queued bid gets the bid decided within a
/// second: before the sweeper, which only looks at bids queued 1.5 s ago,
/// would find it.
async fn a_wake_up_gets_its_bids_decided(wakeups: Arc<dyn BidWakeups>, store: Arc<SqliteStore>) {
    use crate::store::bids::BidStore;
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
    store.submit_bid(&bid).await.expect("bid");
    wakeups.wake("p1").await;
    let decided = eventually(1, || {
        let store = store.clone();
        async move {
            let b = store.bid("b1").await.expect("read").expect("bid");
            b.status == crate::bids::BidStatus::Accepted
        }
    })
    .await;
    assert!(decided, "the wake-up reached the worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_wake_ups_reach_the_worker() {
    let stop = CancellationToken::new();
    let dir = std::env::temp_dir().join(unique("switchyard-wakeups"));
    let (store, worker) = bidding(&dir, &stop).await;
    a_wake_up_gets_its_bids_decided(Arc::new(LocalWakeups(worker)), store).await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wake_ups_reach_a_worker() {
    let stop = CancellationToken::new();
    let dir = std::env::temp_dir().join(unique("switchyard-wakeups"));
    let (store, worker) = bidding(&dir, &stop).await;
    let conn = redis(&unique("wakeups")).await;
    let wakeups = RedisWakeups::start(&conn, worker, "a".into(), stop.clone());
    // The consumer group is made when the consumer starts; a wake-up sent
    // before it exists is the sweeper's.
    let key = format!("{}:bids", conn.prefix);
    let ready = eventually(5, || {
        let (mut c, key) = (conn.conn.clone(), key.clone());
        async move {
            let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut c)
                .await;
            groups.is_ok_and(|g| !g.is_empty())
        }
    })
    .await;
    assert!(ready, "the consumer group was made");
    a_wake_up_gets_its_bids_decided(Arc::new(wakeups), store).await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the client-token secret ------------------------------------------------

/// Embedded mode's secret is generated once and read back the same.
#[test]
fn the_embedded_secret_is_kept() {
    let dir = std::env::temp_dir().join(unique("switchyard-secret"));
    let first = super::embedded::secret(&dir).unwrap();
    assert!(first.len() >= 32);
    assert_eq!(super::embedded::secret(&dir).unwrap(), first);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the console's directory ---------------------------------------------

fn figures(node: &str) -> crate::console::NodeStats {
    crate::console::NodeStats {
        node: node.into(),
        mode: "test".into(),
        at: crate::event::now_ms(),
        interval_ms: 2000,
        streams: 1,
        deliveries_per_s: 0.0,
        publishes_per_s: 0.0,
        caught_up_per_s: 0.0,
        streams_dropped_per_s: 0.0,
        events_skipped: 0,
        bus_lag_ms: None,
        plugin_calls_per_s: 0.0,
        tenants: Vec::new(),
        ready: Vec::new(),
    }
}

/// A listed stream is found by its user with its node and topics, a
/// disconnect ends it (its subscription is told), its end unlists it, and
/// the node's figures are read back.
async fn directory_lists_and_ends_streams(
    make: impl FnOnce(Arc<crate::console::LocalStreams>) -> Arc<dyn crate::console::Directory>,
) {
    use crate::console::{Console, LocalStreams};
    let dir = std::env::temp_dir().join(unique("switchyard-console"));
    let n = node(&dir).await;
    let local = LocalStreams::new("n1");
    let console = Console {
        local: local.clone(),
        directory: make(local),
    };
    console.directory.publish_stats(&figures("n1")).await;
    let sub = n
        .hub
        .subscribe("acme", &["feed:1".into()], 16, Arc::default());
    let other = n
        .hub
        .subscribe("acme", &["feed:1".into()], 16, Arc::default());
    let listed = console.list("acme", "bob", &["feed:1".into()], sub.kicker());
    let _ann = console.list("acme", "ann", &["feed:1".into()], other.kicker());
    let d = console.directory.clone();
    assert!(
        eventually(5, || {
            let d = d.clone();
            async move { d.user_streams("acme", "bob").await.unwrap().len() == 1 }
        })
        .await,
        "the stream is listed"
    );
    let streams = d.user_streams("acme", "bob").await.unwrap();
    assert_eq!(streams[0].node, "n1");
    assert_eq!(streams[0].topics, ["feed:1"]);
    assert!(d.user_streams("beta", "bob").await.unwrap().is_empty());
    let nodes = d.stats().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, "n1");
    d.disconnect("acme", "bob").await.unwrap();
    assert!(sub.kicked(), "bob's stream is told to end");
    assert!(!other.kicked(), "ann's is not");
    drop(listed);
    assert!(
        eventually(5, || {
            let d = d.clone();
            async move { d.user_streams("acme", "bob").await.unwrap().is_empty() }
        })
        .await,
        "the ended stream is unlisted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_directory_lists_and_ends_streams() {
    directory_lists_and_ends_streams(|local| Arc::new(crate::console::MemoryDirectory::new(local)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_directory_lists_and_ends_streams() {
    let stop = CancellationToken::new();
    let conn = redis(&unique("console")).await;
    let s = stop.clone();
    directory_lists_and_ends_streams(move |local| {
        Arc::new(super::cluster::console::RedisDirectory::start(
            &conn, local, s,
        ))
    })
    .await;
    stop.cancel();
}

/// In Redis, a stream of another node is listed while that node is live and
/// ended by a disconnect said on this one; a node whose figures expired is
/// not listed, nor its streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_directory_reaches_the_other_nodes() {
    use super::cluster::console::RedisDirectory;
    use crate::console::{Console, Directory, LocalStreams};
    let stop = CancellationToken::new();
    let prefix = unique("console");
    let dir = std::env::temp_dir().join(unique("switchyard-console"));
    let n = node(&dir).await;
    let (a, b) = (LocalStreams::new("na"), LocalStreams::new("nb"));
    let here = RedisDirectory::start(&redis(&prefix).await, a, stop.clone());
    let there = Console {
        local: b.clone(),
        directory: Arc::new(RedisDirectory::start(
            &redis(&prefix).await,
            b,
            stop.clone(),
        )),
    };
    there.directory.publish_stats(&figures("nb")).await;
    let sub = n
        .hub
        .subscribe("acme", &["feed:1".into()], 16, Arc::default());
    let _listed = there.list("acme", "bob", &["feed:1".into()], sub.kicker());
    let here = Arc::new(here);
    assert!(
        eventually(5, || {
            let h = here.clone();
            async move { h.user_streams("acme", "bob").await.unwrap().len() == 1 }
        })
        .await,
        "the other node's stream is listed here"
    );
    // The other node's listener is subscribed once it hears its own.
    let sub = &sub;
    assert!(
        eventually(5, || {
            let h = here.clone();
            async move {
                h.disconnect("acme", "bob").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                sub.kicked()
            }
        })
        .await,
        "the disconnect reached the other node"
    );
    // The node's figures expire: it and its streams are gone from the view.
    let mut c = redis(&prefix).await.conn;
    let _: () = redis::cmd("ZADD")
        .arg(format!("{prefix}:console:{{nodes}}"))
        .arg(1)
        .arg("nb")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(here.stats().await.unwrap().is_empty());
    assert!(here.user_streams("acme", "bob").await.unwrap().is_empty());
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
