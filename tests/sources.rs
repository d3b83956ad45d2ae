//! Sources against the real Redis, PostgreSQL and NATS: a stream, pub/sub
//! channels, a list of bids, an outbox table and a JetStream stream, each
//! delivered to a stream reader in order; a node killed with
//! SIGKILL mid-batch loses and repeats nothing; two cluster nodes publish
//! each entry once; poison messages land in the tenant's dead-letter topic;
//! shadow mode publishes nothing and shows what it would have.
//!
//! Each test uses keys under its own prefix and a source name of its own.

mod support;

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{product_at, rand_id, secs, start_refused, Env, Mode, Node, Sse, ADMIN};

type Result<T = ()> = anyhow::Result<T>;

fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis() -> Result<MultiplexedConnection> {
    Ok(redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// A test's names: tenant, key prefix, source name.
struct Names {
    tenant: String,
    prefix: String,
    source: String,
}

fn names() -> Names {
    let id = rand_id();
    Names {
        tenant: format!("s-{id}"),
        prefix: format!("src-test-{id}"),
        source: format!("src-{id}"),
    }
}

/// An env whose nodes run `sources` (and keep every event for replay).
async fn env_with(mode: Mode, sources: Value) -> Env {
    Env::new(mode)
        .await
        .set("SWITCHYARD_SOURCES", sources.to_string())
        .set("SWITCHYARD_RETENTION_EVENTS", 1_000_000)
        .set("SWITCHYARD_PRESENCE_OCCUPANCY", "none")
}

async fn create_tenant(node: &Node, slug: &str) -> Result {
    let r = node
        .post("/admin/tenants", &json!({"slug": slug, "name": "Sources"}))
        .await;
    anyhow::ensure!(r.status() == StatusCode::CREATED, "{}", r.text().await?);
    Ok(())
}

/// A node of `env` without its sources, to create the tenant before any
/// source reads.
async fn bootstrap(env: &Env, tenant: &str) -> Result {
    let mut n = Node::start(env, &[("SWITCHYARD_SOURCES", "[]")]).await;
    create_tenant(&n, tenant).await?;
    n.kill().await;
    Ok(())
}

/// The source as `GET /admin/sources` shows it.
/// The tenant's dead letters, from the start (an admin stream).
async fn dead_letters(node: &Node, tenant: &str) -> Result<Sse> {
    let bearer = format!("Bearer {ADMIN}");
    Sse::connect(
        &format!(
            "{}/events?tenant={tenant}&topic=tenant:{tenant}~deadletters",
            node.url
        ),
        Some(0),
        &[("authorization", &bearer)],
    )
    .await
    .map_err(|(s, b)| anyhow::anyhow!("{s} {b}"))
}

/// A world whose nodes read `key` as a list of the tenant's bids.
async fn list_env(mode: Mode, n: &Names, key: &str) -> Env {
    env_with(
        mode,
        json!([{"name": n.source, "kind": "redis-list-bids", "redis_url": redis_url(),
                "key": key, "tenant": n.tenant}]),
    )
    .await
}

/// Asserts that the bid list and its processing list are both empty.
async fn assert_lists_empty(c: &mut MultiplexedConnection, key: &str) -> Result {
    let left: i64 = redis::cmd("LLEN")
        .arg(format!("{key}:processing"))
        .query_async(c)
        .await?;
    let pending: i64 = redis::cmd("LLEN").arg(key).query_async(c).await?;
    assert_eq!(
        (left, pending),
        (0, 0),
        "every message removed after its commit"
    );
    Ok(())
}

async fn source(node: &Node, name: &str) -> Result<Value> {
    let v: Value = node.get("/admin/sources").await.json().await?;
    v["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no source {name}: {v}"))
}

/// Waits until one of `nodes` runs the source; its index.
async fn running(nodes: &[&Node], name: &str) -> Result<usize> {
    let started = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if source(n, name).await?["state"] == "running" {
                return Ok(i);
            }
        }
        anyhow::ensure!(started.elapsed() < secs(20), "no node runs {name}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn xadd(c: &mut MultiplexedConnection, key: &str, fields: &[(&str, String)]) -> Result {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    let _: String = cmd.query_async(c).await?;
    Ok(())
}

/// `n` seed-format entries (`event`, `payload` with `matchId` and `n`)
/// numbered from `from`, in one pipeline.
async fn xadd_many(c: &mut MultiplexedConnection, key: &str, from: usize, n: usize) -> Result {
    let mut p = redis::pipe();
    for i in from..from + n {
        p.cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("event")
            .arg("match:updated")
            .arg("payload")
            .arg(json!({"matchId": "m1", "n": i}).to_string())
            .ignore();
    }
    let _: () = p.query_async(c).await?;
    Ok(())
}

fn stream_source(n: &Names, key: &str, extra: Value) -> Value {
    let mut s = json!({
        "name": n.source, "kind": "redis-stream", "redis_url": redis_url(), "key": key,
        "preset": "event-payload", "tenant": n.tenant, "topic": "match:{/payload/matchId}",
        "start": "all",
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    json!([s])
}

/// Reads `match:m1` from the start until `n` events came (or 60 s
/// passed), then a little more: the `n` field of each, in order.
async fn all_from_start(node: &Node, tenant: &str, n: usize) -> Result<Vec<u64>> {
    let mut s = node
        .sse(&format!("/events?tenant={tenant}&topic=match:m1"), Some(0))
        .await;
    let mut out = Vec::new();
    let mut last_id = 0;
    let deadline = Instant::now() + secs(60);
    while out.len() < n && Instant::now() < deadline {
        if let Some(ev) = s.next_data(secs(2)).await {
            anyhow::ensure!(ev.seq() > last_id, "ids out of order");
            last_id = ev.seq();
            out.push(ev.json()["data"]["n"].as_u64().unwrap_or(u64::MAX));
        }
    }
    // Nothing more may come.
    if let Some(ev) = s.next_data(Duration::from_millis(1_500)).await {
        out.push(ev.json()["data"]["n"].as_u64().unwrap_or(u64::MAX));
    }
    Ok(out)
}

fn check_exactly(seen: &[u64], n: usize) -> Result {
    let dupes = seen.len().saturating_sub(n);
    anyhow::ensure!(
        seen.len() == n,
        "{} events for {n} entries ({dupes} extra)",
        seen.len()
    );
    for (i, v) in seen.iter().enumerate() {
        anyhow::ensure!(
            *v == i as u64,
            "event {i} carries n={v}: lost, repeated or out of order"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------

async fn stream_in_order_with_a_poison_message(mode: Mode) -> Result {
    let n = names();
    let key = format!("{}:trayb:events:realtime", n.prefix);
    let env = env_with(mode, stream_source(&n, &key, json!({}))).await;
    let nodes = env.start_nodes(2).await;
    let reader = &nodes[0];
    create_tenant(reader, &n.tenant).await?;
    let mut s = reader
        .sse(
            &format!("/events?tenant={}&topic=match:m1", n.tenant),
            Some(0),
        )
        .await;
    let mut dead = dead_letters(reader, &n.tenant).await?;
    let mut c = redis().await?;
    for i in 0..6 {
        let payload = match i {
            3 => "{not json".to_string(),
            _ => json!({"matchId": "m1", "n": i}).to_string(),
        };
        xadd(
            &mut c,
            &key,
            &[("event", "match:updated".into()), ("payload", payload)],
        )
        .await?;
    }
    let evs = s.take(5, secs(20)).await;
    let got: Vec<u64> = evs
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 4, 5],
        "the entries after the poison are delivered, in order"
    );
    assert!(evs.iter().all(|e| e.event == "match:updated"));
    assert!(evs.windows(2).all(|w| w[0].seq() < w[1].seq()));
    let d = dead.next_data(secs(10)).await.expect("a dead letter");
    assert_eq!(d.event, "source.dead_letter");
    let data = &d.json()["data"];
    assert_eq!(data["source"], n.source.as_str());
    assert!(
        data["reason"].as_str().unwrap_or("").contains("not JSON"),
        "{data}"
    );
    assert!(
        data["raw"].as_str().unwrap_or("").contains("{not json"),
        "{data}"
    );
    // Only the admin or a publisher token reads the dead letters.
    let dead_path = format!(
        "{}/events?tenant={}&topic=tenant:{}~deadletters",
        reader.url, n.tenant, n.tenant
    );
    let anon = Sse::connect(&dead_path, None, &[]).await;
    assert!(matches!(
        anon,
        Err((StatusCode::FORBIDDEN, _)) | Err((StatusCode::UNAUTHORIZED, _))
    ));
    let mut dead_count = 0.0;
    let mut read = 0.0;
    for node in &nodes {
        dead_count += node.metric("switchyard_source_dead_letters_total").await;
        read += node.metric("switchyard_source_messages_read_total").await;
    }
    assert_eq!(dead_count, 1.0);
    assert_eq!(read, 6.0);
    let ready: Value = reader.get("/ready").await.json().await?;
    assert_eq!(ready["sources"][0]["name"], n.source.as_str(), "{ready}");
    drop(nodes);
    env.cleanup().await;
    Ok(())
}

async fn stream_kill9_mid_batch_loses_and_repeats_nothing(mode: Mode) -> Result {
    let n = names();
    let key = format!("{}:events", n.prefix);
    let env = env_with(mode, stream_source(&n, &key, json!({"batch": 20}))).await;
    bootstrap(&env, &n.tenant).await?;
    let total = 6_000;
    let mut c = redis().await?;
    xadd_many(&mut c, &key, 0, total).await?;
    let mut node = env.start().await;
    // Kill it as soon as it has published some, mid-way.
    let started = Instant::now();
    loop {
        let published = node
            .metric("switchyard_source_events_published_total")
            .await;
        if published >= 300.0 {
            node.kill().await;
            assert!(
                published < total as f64,
                "killed after the whole backlog: nothing tested"
            );
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(30), "the source publishes nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node = env.start().await;
    let seen = all_from_start(&node, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&key)
        .arg("switchyard")
        .query_async(&mut c)
        .await?;
    let count = match &pending {
        redis::Value::Array(v) => v.first().cloned(),
        _ => None,
    };
    assert_eq!(
        count,
        Some(redis::Value::Int(0)),
        "all acknowledged: {pending:?}"
    );
    // The state a kill between a commit and its XACK leaves, made on
    // purpose: the group rewound, its first entries pending again, every
    // entry stored. Reading them all again stores nothing.
    let mut node = node;
    node.kill().await;
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&key)
        .arg("switchyard")
        .arg("0")
        .query_async(&mut c)
        .await?;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("switchyard")
        .arg("switchyard")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut c)
        .await?;
    let node = env.start().await;
    let started = Instant::now();
    while node.metric("switchyard_source_messages_read_total").await < total as f64 {
        anyhow::ensure!(
            started.elapsed() < secs(60),
            "the rewound group is not read again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = all_from_start(&node, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    drop(node);
    env.cleanup().await;
    Ok(())
}

/// Where a takeover test's entries come from: a Redis stream, an outbox
/// table or a JetStream stream.
enum Feed {
    Stream(String),
    Outbox(AppDb),
    Jet(Nats),
}

impl Feed {
    async fn new(kind: &str, n: &Names) -> Result<Feed> {
        Ok(match kind {
            "stream" => Feed::Stream(format!("{}:events", n.prefix)),
            "outbox" => Feed::Outbox(AppDb::new(n).await?),
            _ => Feed::Jet(Nats::new(n).await?),
        })
    }

    fn source(&self, n: &Names) -> Value {
        let batch = json!({"batch": 20});
        match self {
            Feed::Stream(key) => stream_source(n, key, batch),
            Feed::Outbox(db) => db.source(n, batch),
            Feed::Jet(nats) => nats.source(n, batch),
        }
    }

    /// Entries `from..from + count` (`match:m1`, `n` numbering them), in order.
    async fn add(&self, tenant: &str, from: usize, count: usize) -> Result {
        match self {
            Feed::Stream(key) => xadd_many(&mut redis().await?, key, from, count).await,
            Feed::Outbox(db) => {
                sqlx::query(
                    "INSERT INTO switchyard_outbox (tenant, topic, type, data) \
                     SELECT $1, 'match:m1', 'match:updated', jsonb_build_object('matchId', 'm1', 'n', g) \
                     FROM generate_series($2::bigint, $3::bigint) g ORDER BY g",
                )
                .bind(tenant)
                .bind(from as i64)
                .bind((from + count) as i64 - 1)
                .execute(&db.pool)
                .await?;
                Ok(())
            }
            Feed::Jet(nats) => {
                nats.publish(
                    (from..from + count).map(|i| json!({"matchId": "m1", "n": i}).to_string()),
                )
                .await
            }
        }
    }

    async fn drop(self) {
        match self {
            Feed::Stream(_) => {}
            Feed::Outbox(db) => db.drop().await,
            Feed::Jet(nats) => nats.drop().await,
        }
    }
}

/// Two cluster nodes run the source; one reads it, the other stands by and
/// takes over when the reader is killed mid-way: each entry is published
/// once, in order.
async fn two_cluster_nodes_publish_each_entry_once(kind: &str) -> Result {
    let n = names();
    let feed = Feed::new(kind, &n).await?;
    let env = env_with(Mode::Cluster, feed.source(&n)).await;
    bootstrap(&env, &n.tenant).await?;
    let total = 4_000;
    feed.add(&n.tenant, 0, total / 2).await?;
    let mut a = env.start().await;
    let mut b = env.start().await;
    let owner = running(&[&a, &b], &n.source).await?;
    let other = if owner == 0 { &b } else { &a };
    assert_eq!(source(other, &n.source).await?["state"], "standby");
    // Kill the owner mid-way; the other takes over.
    let started = Instant::now();
    loop {
        let o = if owner == 0 { &a } else { &b };
        if o.metric("switchyard_source_events_published_total").await >= 200.0 {
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(30), "the owner publishes nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if owner == 0 {
        a.kill().await;
    } else {
        b.kill().await;
    }
    feed.add(&n.tenant, total / 2, total / 2).await?;
    let survivor = if owner == 0 { &b } else { &a };
    running(&[survivor], &n.source).await?;
    let seen = all_from_start(survivor, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    if let Feed::Outbox(db) = &feed {
        db.drained("switchyard_outbox").await?;
    }
    drop((a, b));
    env.cleanup().await;
    feed.drop().await;
    Ok(())
}

async fn pubsub_delivers_in_order(mode: Mode) -> Result {
    let n = names();
    let pattern = format!("{}:sse:product:*", n.prefix);
    let env = env_with(
        mode,
        json!([{"name": n.source, "kind": "redis-pubsub", "redis_url": redis_url(),
                "pattern": pattern, "preset": "json", "tenant": n.tenant, "topic": "product:{1}"}]),
    )
    .await;
    let nodes = env.start_nodes(2).await;
    create_tenant(&nodes[0], &n.tenant).await?;
    let mut s = nodes[0]
        .sse(
            &format!("/events?tenant={}&topic=product:p1", n.tenant),
            None,
        )
        .await;
    let mut c = redis().await?;
    // Until a node listens, a message is gone: wait for a listener.
    let started = Instant::now();
    loop {
        let heard: i64 = redis::cmd("PUBLISH")
            .arg(format!("{}:sse:product:probe", n.prefix))
            .arg(json!({"type": "probe"}).to_string())
            .query_async(&mut c)
            .await?;
        if heard >= 1 {
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(20), "no node subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..50 {
        let msg = json!({"type": "bid", "currentBid": 100 + i, "n": i});
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{}:sse:product:p1", n.prefix))
            .arg(msg.to_string())
            .query_async(&mut c)
            .await?;
    }
    let evs = s.take(50, secs(20)).await;
    let got: Vec<u64> = evs
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<u64>>());
    assert!(evs.iter().all(|e| e.event == "bid" && e.id.is_some()));
    let mut read = 0.0;
    for node in &nodes {
        read += node.metric("switchyard_source_messages_read_total").await;
    }
    assert!(read >= 51.0, "received messages are counted: {read}");
    drop(nodes);
    env.cleanup().await;
    Ok(())
}

/// A backlog of 1,200 seed-format bids on four products, pushed at once
/// (the source takes it in batches), with a poison message among them; the
/// node is killed (-9) mid-way and started again. Each product's amounts
/// rise by its increment, so every bid is accepted only if each is decided
/// once and in the list's order (a rejection goes to the bidder's own
/// topic): each product's accepted amounts are exactly 1..=300.
async fn list_backlog_kill9_decides_each_bid_once_in_order(mode: Mode) -> Result {
    let n = names();
    let key = format!("{}:bids:pending", n.prefix);
    let env = list_env(mode, &n, &key).await;
    let mut node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    let mut products = Vec::new();
    for _ in 0..4 {
        let p = support::product(
            &node,
            &n.tenant,
            json!({"starting_price": 1, "min_increment": 1}),
        )
        .await;
        products.push(p["id"].as_str().expect("id").to_string());
    }
    let per = 300;
    let mut c = redis().await?;
    // LPUSH pushes its arguments left in turn: the first is taken first.
    let mut push = redis::cmd("LPUSH");
    push.arg(&key);
    for i in 0..per * products.len() {
        if i == 500 {
            push.arg("not a bid");
        }
        let amount = i / products.len() + 1;
        push.arg(
            json!({"productId": products[i % products.len()], "bidderId": format!("b{}", i % 7),
                   "amount": amount, "timestamp": i})
            .to_string(),
        );
    }
    let _: i64 = push.query_async(&mut c).await?;
    let started = Instant::now();
    loop {
        let d = node.metric("switchyard_bid_decisions_accepted_total").await
            + node.metric("switchyard_bid_decisions_rejected_total").await;
        if d >= 100.0 {
            assert!(
                d < (per * products.len()) as f64,
                "killed after the whole backlog: nothing tested"
            );
            node.kill().await;
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(60), "no bid decided");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node = env.start().await;
    let topics: String = products
        .iter()
        .map(|p| format!("&topic=product:{p}"))
        .collect();
    let mut s = node
        .sse(&format!("/events?tenant={}{topics}", n.tenant), Some(0))
        .await;
    let mut accepted: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let mut seen = 0;
    while seen < per * products.len() {
        let Some(ev) = s.next_data(secs(60)).await else {
            let counts = format!(
                "decided {} + {}, queued {}",
                node.metric("switchyard_bid_decisions_accepted_total").await,
                node.metric("switchyard_bid_decisions_rejected_total").await,
                node.metric("switchyard_bids_queued").await
            );
            let log = node.log_text();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            anyhow::bail!("{seen} bids accepted ({counts}); the node's log, newest first:\n{tail}");
        };
        if ev.event == "bid.accepted" {
            seen += 1;
            let topic = ev.json()["topic"].as_str().unwrap_or_default().to_string();
            let product = topic.trim_start_matches("product:").to_string();
            let amount = ev.json()["data"]["amount"].as_i64().unwrap_or(-1);
            accepted.entry(product).or_default().push(amount);
        }
    }
    let want: Vec<i64> = (1..=per as i64).collect();
    for p in &products {
        assert_eq!(
            accepted.get(p.as_str()),
            Some(&want),
            "product {p}: each bid once, in order"
        );
    }
    // Nothing more is decided (a repeat would follow as a rejection).
    if let Some(ev) = s.next_data(secs(2)).await {
        assert!(
            !ev.event.starts_with("bid."),
            "a bid decided twice: {:?}",
            ev.json()
        );
    }
    assert_lists_empty(&mut c, &key).await?;
    // The poison message is the tenant's one dead letter.
    let mut dead = dead_letters(&node, &n.tenant).await?;
    let d = dead.next_data(secs(10)).await.expect("a dead letter");
    assert_eq!(d.json()["data"]["raw"], "not a bid");
    assert!(dead.next_data(secs(1)).await.is_none(), "one dead letter");
    drop(node);
    env.cleanup().await;
    Ok(())
}

async fn list_bid_is_decided_once(mode: Mode) -> Result {
    let n = names();
    let key = format!("{}:bids:pending", n.prefix);
    let processing = format!("{key}:processing");
    let env = list_env(mode, &n, &key).await;
    let mut node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    let product = product_at(&node, &n.tenant, 100).await;
    let mut s = node
        .sse(
            &format!("/events?tenant={}&topic=product:{product}", n.tenant),
            Some(0),
        )
        .await;
    let mut c = redis().await?;
    let seed = |bidder: &str, amount: i64, ts: i64| {
        json!({"productId": product, "bidderId": bidder, "amount": amount, "timestamp": ts})
            .to_string()
    };
    let first = seed("alice", 150, 1);
    let _: i64 = redis::cmd("LPUSH")
        .arg(&key)
        .arg(&first)
        .query_async(&mut c)
        .await?;
    let _: i64 = redis::cmd("LPUSH")
        .arg(&key)
        .arg("not a bid")
        .query_async(&mut c)
        .await?;
    let accepted = s
        .next_of("bid.accepted", secs(20))
        .await
        .expect("bid.accepted");
    assert_eq!(accepted.json()["data"]["amount"], 150);
    assert_eq!(accepted.json()["data"]["bidder"], "alice");
    // A crash between its commit and its removal: the message is left in
    // the processing list. Another bid waits on the list.
    node.kill().await;
    let _: i64 = redis::cmd("LPUSH")
        .arg(&processing)
        .arg(&first)
        .query_async(&mut c)
        .await?;
    let _: i64 = redis::cmd("LPUSH")
        .arg(&key)
        .arg(seed("bob", 200, 2))
        .query_async(&mut c)
        .await?;
    let node = env.start().await;
    let mut s = node
        .sse(
            &format!("/events?tenant={}&topic=product:{product}", n.tenant),
            Some(0),
        )
        .await;
    // The killed node's lease runs out first (5 s), then the leftover and
    // the new bid are read; a second decision of the first would follow.
    let mut kinds = Vec::new();
    let deadline = Instant::now() + secs(30);
    let mut decided = 0;
    while Instant::now() < deadline {
        let wait = if decided >= 2 { secs(2) } else { secs(30) };
        let Some(ev) = s.next_data(wait).await else {
            break;
        };
        decided += usize::from(ev.event.starts_with("bid."));
        kinds.push((ev.event.clone(), ev.json()["data"]["amount"].clone()));
    }
    let bids: Vec<_> = kinds
        .iter()
        .filter(|(k, _)| k.starts_with("bid."))
        .collect();
    assert_eq!(
        bids,
        vec![
            &("bid.accepted".to_string(), json!(150)),
            &("bid.accepted".to_string(), json!(200))
        ],
        "each bid decided once: {kinds:?}"
    );
    assert_lists_empty(&mut c, &key).await?;
    let v = source(&node, &n.source).await?;
    assert_eq!(v["state"], "running", "{v}");
    // The poison message went to the tenant's dead letters.
    let mut dead = dead_letters(&node, &n.tenant).await?;
    let d = dead.next_data(secs(10)).await.expect("a dead letter");
    assert_eq!(d.json()["data"]["raw"], "not a bid");
    drop(node);
    env.cleanup().await;
    Ok(())
}

async fn shadow_publishes_nothing_and_shows_counts() -> Result {
    let n = names();
    let key = format!("{}:events", n.prefix);
    let env = env_with(
        Mode::Embedded,
        stream_source(
            &n,
            &key,
            json!({"mode": "shadow", "topic": "match:{/payload/matchId}"}),
        ),
    )
    .await;
    let node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    let mut c = redis().await?;
    for (m, i) in [("m1", 0), ("m1", 1), ("m2", 2)] {
        xadd(
            &mut c,
            &key,
            &[
                ("event", "match:updated".into()),
                ("payload", json!({"matchId": m, "n": i}).to_string()),
            ],
        )
        .await?;
    }
    let started = Instant::now();
    let view = loop {
        let v = source(&node, &n.source).await?;
        if v["published"] == 3 {
            break v;
        }
        anyhow::ensure!(started.elapsed() < secs(20), "shadow never counted: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["mode"], "shadow");
    let topics = view["shadow"].as_array().cloned().unwrap_or_default();
    let count = |t: &str| {
        topics
            .iter()
            .find(|x| x["topic"] == t)
            .map(|x| x["count"].clone())
    };
    assert_eq!(count("match:m1"), Some(json!(2)), "{view}");
    assert_eq!(count("match:m2"), Some(json!(1)), "{view}");
    assert_eq!(topics[0]["examples"][0]["data"]["n"], 0, "{view}");
    let log: Value = node
        .get(&format!("/api/topics/match:m1/events?tenant={}", n.tenant))
        .await
        .json()
        .await?;
    assert_eq!(log["events"], json!([]), "shadow publishes nothing: {log}");
    drop(node);
    env.cleanup().await;
    Ok(())
}

/// Opens a stream of `match:m1` whose `Last-Event-ID` is a foreign id.
async fn resume_foreign(node: &Node, tenant: &str, id: &str) -> Result<Sse> {
    Sse::connect(
        &format!("{}/events?tenant={tenant}&topic=match:m1", node.url),
        None,
        &[("last-event-id", id)],
    )
    .await
    .map_err(|(s, b)| anyhow::anyhow!("stream with Last-Event-ID {id} refused: {s} {b}"))
}

/// The `n` of the events a stream sends within `wait` (control frames
/// apart), and the control frames' types.
async fn drain(s: &mut Sse, wait: Duration) -> (Vec<u64>, Vec<String>) {
    let (mut ns, mut control) = (Vec::new(), Vec::new());
    while let Some(ev) = s.next(wait).await {
        if ev.is_control() {
            control.push(ev.event.clone());
        } else {
            ns.push(ev.json()["data"]["n"].as_u64().unwrap_or(u64::MAX));
        }
    }
    (ns, control)
}

/// A page that was on the old SSE service (which sent Redis stream entry
/// ids as event ids) comes over during the migration window: it resumes
/// right after the event its last entry became, waits for an entry this
/// node has not stored yet, and starts over (with a `reset`) for one no
/// source stored; after the window such an id is refused again.
async fn migration_window_resumes_after_the_entry(mode: Mode) -> Result {
    let n = names();
    let key = format!("{}:trayb:events:realtime", n.prefix);
    let env = env_with(
        mode,
        stream_source(&n, &key, json!({"migration_until": "2099-01-01T00:00:00Z"})),
    )
    .await;
    bootstrap(&env, &n.tenant).await?;
    let node = env.start().await;
    let mut c = redis().await?;
    // Ten entries, as the producer writes them; their ids are what the old
    // service sent its browsers.
    let mut ids = Vec::new();
    for i in 0..10 {
        let id: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("event")
            .arg("match:updated")
            .arg("payload")
            .arg(json!({"matchId": "m1", "n": i}).to_string())
            .query_async(&mut c)
            .await?;
        ids.push(id);
    }
    check_exactly(&all_from_start(&node, &n.tenant, 10).await?, 10)?;

    // The browser last saw entry 4 on the old service.
    let mut s = resume_foreign(&node, &n.tenant, &ids[4]).await?;
    let (got, control) = drain(&mut s, Duration::from_millis(1_500)).await;
    assert_eq!(got, vec![5, 6, 7, 8, 9], "right after entry 4's event");
    assert!(control.is_empty(), "{control:?}");
    // From then on it holds Switchyard ids, and live events follow.
    let switched = s.last_id.clone().unwrap_or_default();
    assert!(switched.parse::<u64>().is_ok(), "{switched:?}");
    xadd_many(&mut c, &key, 10, 1).await?;
    let live = s
        .next_data(secs(10))
        .await
        .map(|e| e.json()["data"]["n"].clone());
    assert_eq!(live, Some(json!(10)));

    // The page's last entry is one this node has not read yet: its stream
    // waits for it, then starts right after it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let ahead = format!("{}-0", now_ms + 1_000);
    let url = node.url.clone();
    let (tenant, ahead2) = (n.tenant.clone(), ahead.clone());
    let pending = tokio::spawn(async move {
        Sse::connect(
            &format!("{url}/events?tenant={tenant}&topic=match:m1"),
            None,
            &[("last-event-id", &ahead2)],
        )
        .await
        .map_err(|(s, b)| anyhow::anyhow!("{s} {b}"))
    });
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg(&ahead)
        .arg("event")
        .arg("match:updated")
        .arg("payload")
        .arg(json!({"matchId": "m1", "n": 11}).to_string())
        .query_async(&mut c)
        .await?;
    let mut s = pending.await??;
    xadd_many(&mut c, &key, 12, 1).await?;
    let (got, control) = drain(&mut s, Duration::from_millis(1_500)).await;
    assert_eq!(got, vec![12], "after the awaited entry, nothing repeated");
    assert!(control.is_empty(), "{control:?}");

    // An entry no source stored: the stream starts over, saying so.
    let mut s = resume_foreign(&node, &n.tenant, "1-0").await?;
    let (got, control) = drain(&mut s, Duration::from_millis(1_000)).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        control.first().map(String::as_str),
        Some("reset"),
        "{control:?}"
    );

    assert_eq!(
        node.metric("switchyard_source_migration_resumes_total")
            .await,
        3.0
    );
    drop(s);
    drop(node);

    // After the window, a foreign id is refused like any malformed one.
    let past =
        stream_source(&n, &key, json!({"migration_until": "2020-01-01T00:00:00Z"})).to_string();
    let node = Node::start(&env, &[("SWITCHYARD_SOURCES", &past)]).await;
    let refused = resume_foreign(&node, &n.tenant, &ids[4]).await;
    assert!(
        refused
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("400")),
        "{:?}",
        refused.err()
    );
    drop(node);
    env.cleanup().await;
    Ok(())
}

async fn a_bad_source_stops_the_start_with_one_line() -> Result {
    let env = Env::new(Mode::Embedded).await.set(
        "SWITCHYARD_SOURCES",
        json!([{"name": "bad", "kind": "redis-pubsub", "redis_url": redis_url(),
                "pattern": "sse:product:*", "tenant": "acme", "topic": "product:{2}", "type": "bid"}])
        .to_string(),
    );
    let out = start_refused(&env, &[]).await;
    assert!(
        out.contains("source \"bad\"") && out.contains("`topic`"),
        "{out}"
    );
    env.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// PostgreSQL outbox

fn pg_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The application's database: a schema of the test's own with the
/// migration of examples/sources/outbox.sql run in it.
struct AppDb {
    pool: sqlx::PgPool,
    schema: String,
}

impl AppDb {
    async fn new(n: &Names) -> Result<AppDb> {
        let schema = format!("app_{}", n.prefix.replace('-', "_"));
        let admin = sqlx::PgPool::connect(&pg_url()).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let sep = if pg_url().contains('?') { '&' } else { '?' };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&format!(
                "{}{sep}options=-csearch_path%3D{schema}",
                pg_url()
            ))
            .await?;
        sqlx::raw_sql(include_str!("../examples/sources/outbox.sql"))
            .execute(&pool)
            .await?;
        Ok(AppDb { pool, schema })
    }

    fn source(&self, n: &Names, extra: Value) -> Value {
        let mut s = json!({
            "name": n.source, "kind": "postgres-outbox", "database_url": pg_url(),
            "table": format!("{}.switchyard_outbox", self.schema),
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        json!([s])
    }

    async fn rows(&self) -> Result<i64> {
        self.rows_of("switchyard_outbox").await
    }

    async fn rows_of(&self, table: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await?)
    }

    /// Waits (up to 10 s) until the source has deleted every row of `table`.
    async fn drained(&self, table: &str) -> Result {
        let started = Instant::now();
        while self.rows_of(table).await? > 0 {
            anyhow::ensure!(started.elapsed() < secs(10), "stored rows are not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn drop(self) {
        let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}

/// `switchyard_publish` of a `match:m1` event numbered `i`, in `tx`.
async fn publish_n<'c, E>(tx: E, tenant: &str, topic: &str, i: u64) -> Result
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query("SELECT switchyard_publish($1, $2, 'match:updated', $3::jsonb)")
        .bind(tenant)
        .bind(topic)
        .bind(json!({"matchId": "m1", "n": i}).to_string())
        .execute(tx)
        .await?;
    Ok(())
}

async fn outbox_in_transaction_order_with_a_poison_row(mode: Mode) -> Result {
    let n = names();
    let db = AppDb::new(&n).await?;
    let env = env_with(mode, db.source(&n, json!({}))).await;
    let node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    running(&[&node], &n.source).await?;
    let mut s = node
        .sse(
            &format!("/events?tenant={}&topic=match:m1", n.tenant),
            Some(0),
        )
        .await;
    let mut dead = dead_letters(&node, &n.tenant).await?;
    // A transaction that wrote first and commits last holds back one that
    // committed meanwhile; both come, in the order they wrote.
    let mut a = db.pool.begin().await?;
    publish_n(&mut *a, &n.tenant, "match:m1", 0).await?;
    publish_n(&db.pool, &n.tenant, "match:m1", 1).await?;
    assert!(
        s.next_data(Duration::from_millis(2_500)).await.is_none(),
        "a row was read while an older transaction was open"
    );
    a.commit().await?;
    // A rolled-back transaction publishes nothing.
    let mut r = db.pool.begin().await?;
    publish_n(&mut *r, &n.tenant, "match:m1", 99).await?;
    r.rollback().await?;
    publish_n(&db.pool, &n.tenant, "not a topic!", 100).await?;
    publish_n(&db.pool, &n.tenant, "match:m1", 2).await?;
    publish_n(&db.pool, &n.tenant, "match:m1", 3).await?;
    let evs = s.take(4, secs(20)).await;
    let got: Vec<u64> = evs
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 3],
        "in transaction order, past the poison row"
    );
    assert!(evs.windows(2).all(|w| w[0].seq() < w[1].seq()));
    assert!(
        s.next_data(Duration::from_millis(1_500)).await.is_none(),
        "the rolled-back row was published"
    );
    let d = dead.next_data(secs(10)).await.expect("a dead letter");
    assert_eq!(d.event, "source.dead_letter");
    let data = &d.json()["data"];
    assert!(
        data["reason"].as_str().unwrap_or("").contains("topic"),
        "{data}"
    );
    assert!(
        data["raw"].as_str().unwrap_or("").contains("not a topic!"),
        "{data}"
    );
    db.drained("switchyard_outbox").await?;
    drop(node);
    env.cleanup().await;
    db.drop().await;
    Ok(())
}

/// Debezium's outbox table, kept as it is with Switchyard's two columns
/// and trigger added by the lines `examples/sources/outbox.sql` gives: a
/// row becomes an event on `{aggregatetype}:{aggregateid}` with its `type`
/// and `payload`, once, and is deleted; a rolled-back row publishes nothing.
async fn debezium_outbox_table() -> Result {
    let n = names();
    let db = AppDb::new(&n).await?;
    sqlx::query(
        "CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
         aggregatetype varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL, \
         type varchar(255) NOT NULL, payload jsonb)",
    )
    .execute(&db.pool)
    .await?;
    // The documented statements, as an operator copies them.
    let doc = include_str!("../examples/sources/outbox.sql");
    let added: String = doc
        .lines()
        .skip_while(|l| !l.contains("Debezium's outbox table instead"))
        .filter_map(|l| l.strip_prefix("--   "))
        .collect::<Vec<_>>()
        .join("\n");
    anyhow::ensure!(added.contains("ALTER TABLE outbox"), "{added}");
    sqlx::raw_sql(&added).execute(&db.pool).await?;
    let sources = json!([{
        "name": n.source, "kind": "postgres-outbox", "database_url": pg_url(),
        "table": format!("{}.outbox", db.schema), "preset": "debezium", "tenant": n.tenant,
    }]);
    let env = env_with(Mode::Embedded, sources).await;
    let node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    running(&[&node], &n.source).await?;
    let mut s = node
        .sse(
            &format!("/events?tenant={}&topic=order:42", n.tenant),
            Some(0),
        )
        .await;
    let insert = "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) \
                  VALUES ('order', '42', $1, $2::jsonb)";
    let mut rolled = db.pool.begin().await?;
    sqlx::query(insert)
        .bind("order.cancelled")
        .bind(json!({"why": "rolled back"}).to_string())
        .execute(&mut *rolled)
        .await?;
    rolled.rollback().await?;
    let mut tx = db.pool.begin().await?;
    for (kind, payload) in [
        ("order.paid", json!({"total": 990})),
        ("order.shipped", json!({"carrier": "post"})),
    ] {
        sqlx::query(insert)
            .bind(kind)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let evs = s.take(2, secs(20)).await;
    let got: Vec<(String, Value)> = evs
        .iter()
        .map(|e| (e.event.clone(), e.json()["data"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("order.paid".to_string(), json!({"total": 990})),
            ("order.shipped".to_string(), json!({"carrier": "post"})),
        ]
    );
    assert!(
        s.next_data(Duration::from_millis(1_500)).await.is_none(),
        "only the committed rows, once"
    );
    db.drained("outbox").await?;
    drop(node);
    env.cleanup().await;
    db.drop().await;
    Ok(())
}

async fn outbox_kill9_mid_batch_loses_and_repeats_nothing(mode: Mode) -> Result {
    let n = names();
    let db = AppDb::new(&n).await?;
    let env = env_with(mode, db.source(&n, json!({"batch": 20}))).await;
    bootstrap(&env, &n.tenant).await?;
    let total = 6_000;
    let insert = "INSERT INTO switchyard_outbox (id, tenant, topic, type, data) \
         SELECT g + 1, $1, 'match:m1', 'match:updated', jsonb_build_object('matchId', 'm1', 'n', g) \
         FROM generate_series($2::bigint, $3::bigint) g";
    sqlx::query(insert)
        .bind(&n.tenant)
        .bind(0i64)
        .bind(total as i64 - 1)
        .execute(&db.pool)
        .await?;
    let mut node = env.start().await;
    let started = Instant::now();
    loop {
        let published = node
            .metric("switchyard_source_events_published_total")
            .await;
        if published >= 300.0 {
            node.kill().await;
            assert!(
                published < total as f64,
                "killed after the whole backlog: nothing tested"
            );
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(30), "the source publishes nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut node = env.start().await;
    let seen = all_from_start(&node, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    assert_eq!(db.rows().await?, 0, "every stored row is deleted");
    // The state a kill between a commit and its delete leaves, made on
    // purpose: the first rows back in the outbox, already stored. Reading
    // them again stores nothing and deletes them.
    node.kill().await;
    sqlx::query(insert)
        .bind(&n.tenant)
        .bind(0i64)
        .bind(99i64)
        .execute(&db.pool)
        .await?;
    let node = env.start().await;
    let started = Instant::now();
    while db.rows().await? > 0 {
        anyhow::ensure!(started.elapsed() < secs(20), "the rows are not read again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        node.metric("switchyard_source_events_published_total")
            .await,
        0.0
    );
    let seen = all_from_start(&node, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    drop(node);
    env.cleanup().await;
    db.drop().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// NATS JetStream

fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream of the test's own taking `{subject prefix}.>`.
struct Nats {
    js: async_nats::jetstream::Context,
    stream: String,
    subjects: String,
}

impl Nats {
    async fn new(n: &Names) -> Result<Nats> {
        let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await?);
        let stream = n.prefix.replace('-', "_").to_uppercase();
        let subjects = n.prefix.replace('-', "_");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subjects}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
        Ok(Nats {
            js,
            stream,
            subjects,
        })
    }

    fn source(&self, n: &Names, extra: Value) -> Value {
        let mut s = json!({
            "name": n.source, "kind": "nats-jetstream", "nats_url": nats_url(),
            "stream": self.stream, "pattern": format!("{}.match.*", self.subjects),
            "tenant": n.tenant, "topic": "match:{1}", "type": "match:updated", "start": "all",
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        json!([s])
    }

    /// Publishes each payload to `{subjects}.match.m1`, in order, acknowledged.
    async fn publish(&self, payloads: impl IntoIterator<Item = String>) -> Result {
        let mut acks = Vec::new();
        for p in payloads {
            acks.push(
                self.js
                    .publish(format!("{}.match.m1", self.subjects), p.into())
                    .await
                    .map_err(|e| anyhow::anyhow!("publish: {e}"))?,
            );
        }
        for a in acks {
            a.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
        }
        Ok(())
    }

    async fn drop(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

async fn nats_in_order_with_a_poison_message(mode: Mode) -> Result {
    let n = names();
    let nats = Nats::new(&n).await?;
    let env = env_with(mode, nats.source(&n, json!({}))).await;
    let reader = env.start().await;
    create_tenant(&reader, &n.tenant).await?;
    running(&[&reader], &n.source).await?;
    let mut s = reader
        .sse(
            &format!("/events?tenant={}&topic=match:m1", n.tenant),
            Some(0),
        )
        .await;
    let mut dead = dead_letters(&reader, &n.tenant).await?;
    nats.publish((0..6).map(|i| match i {
        3 => "{not json".to_string(),
        _ => json!({"matchId": "m1", "n": i}).to_string(),
    }))
    .await?;
    let evs = s.take(5, secs(20)).await;
    let got: Vec<u64> = evs
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 4, 5],
        "in order, past the poison message"
    );
    assert!(evs.windows(2).all(|w| w[0].seq() < w[1].seq()));
    let d = dead.next_data(secs(10)).await.expect("a dead letter");
    let data = &d.json()["data"];
    assert!(
        data["reason"].as_str().unwrap_or("").contains("not JSON"),
        "{data}"
    );
    assert!(
        data["raw"].as_str().unwrap_or("").contains("{not json"),
        "{data}"
    );
    drop(reader);
    env.cleanup().await;
    nats.drop().await;
    Ok(())
}

async fn nats_kill9_mid_batch_loses_and_repeats_nothing(mode: Mode) -> Result {
    let n = names();
    let nats = Nats::new(&n).await?;
    let env = env_with(mode, nats.source(&n, json!({"batch": 20}))).await;
    bootstrap(&env, &n.tenant).await?;
    let total = 6_000;
    nats.publish((0..total).map(|i| json!({"matchId": "m1", "n": i}).to_string()))
        .await?;
    let mut node = env.start().await;
    let started = Instant::now();
    loop {
        let published = node
            .metric("switchyard_source_events_published_total")
            .await;
        if published >= 300.0 {
            node.kill().await;
            assert!(
                published < total as f64,
                "killed after the whole backlog: nothing tested"
            );
            break;
        }
        anyhow::ensure!(started.elapsed() < secs(30), "the source publishes nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node = env.start().await;
    let seen = all_from_start(&node, &n.tenant, total).await?;
    check_exactly(&seen, total)?;
    drop(node);
    env.cleanup().await;
    nats.drop().await;
    Ok(())
}

macro_rules! test_modes {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() -> anyhow::Result<()> {
                super::$name(super::Mode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() -> anyhow::Result<()> {
                super::$name(super::Mode::Cluster).await
            }
        }
    };
}

test_modes!(stream_in_order_with_a_poison_message);
test_modes!(stream_kill9_mid_batch_loses_and_repeats_nothing);
test_modes!(pubsub_delivers_in_order);
test_modes!(list_bid_is_decided_once);
test_modes!(list_backlog_kill9_decides_each_bid_once_in_order);
test_modes!(outbox_in_transaction_order_with_a_poison_row);
test_modes!(outbox_kill9_mid_batch_loses_and_repeats_nothing);
test_modes!(nats_in_order_with_a_poison_message);
test_modes!(nats_kill9_mid_batch_loses_and_repeats_nothing);
test_modes!(migration_window_resumes_after_the_entry);

mod two_cluster_nodes_each_entry_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream() -> anyhow::Result<()> {
        super::two_cluster_nodes_publish_each_entry_once("stream").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox() -> anyhow::Result<()> {
        super::two_cluster_nodes_publish_each_entry_once("outbox").await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream() -> anyhow::Result<()> {
        super::two_cluster_nodes_publish_each_entry_once("jetstream").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_outbox() -> Result {
    debezium_outbox_table().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode() -> Result {
    shadow_publishes_nothing_and_shows_counts().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors() -> Result {
    a_bad_source_stops_the_start_with_one_line().await
}

/// A JetStream source in a deployment whose Redis is a Redis Cluster: its
/// lease is taken there, and its events reach both nodes' streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_leases_on_a_redis_cluster() -> Result {
    let cluster = support::RedisCluster::start(3).await;
    let n = names();
    let nats = Nats::new(&n).await?;
    let env = env_with(Mode::Cluster, nats.source(&n, json!({})))
        .await
        .with_redis(&cluster.url());
    let nodes = env.start_nodes(2).await;
    create_tenant(&nodes[0], &n.tenant).await?;
    running(&[&nodes[0], &nodes[1]], &n.source).await?;
    let path = format!("/events?tenant={}&topic=match:m1", n.tenant);
    let mut streams = [
        nodes[0].sse(&path, Some(0)).await,
        nodes[1].sse(&path, Some(0)).await,
    ];
    nats.publish((0..5).map(|i| json!({"matchId": "m1", "n": i}).to_string()))
        .await?;
    for s in streams.iter_mut() {
        let got: Vec<u64> = s
            .take(5, secs(20))
            .await
            .iter()
            .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
    drop(nodes);
    env.cleanup().await;
    nats.drop().await;
    Ok(())
}

/// The three Redis kinds read a producer's Redis Cluster (given by its seed
/// nodes): a stream and a list (its processing list put in the list's hash
/// slot) on whichever master holds them, and pub/sub messages published on
/// any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sources_read_a_redis_cluster() -> Result {
    let cluster = support::RedisCluster::start(3).await;
    let n = names();
    let (stream_key, list_key) = (
        format!("{}:orders", n.prefix),
        format!("{}:bids:pending", n.prefix),
    );
    let pattern = format!("{}:chat:*", n.prefix);
    let env = env_with(
        Mode::Embedded,
        json!([
            {"name": format!("{}-s", n.source), "kind": "redis-stream", "redis_url": cluster.url(),
             "key": stream_key, "preset": "event-payload", "tenant": n.tenant,
             "topic": "match:{/payload/matchId}", "start": "all"},
            {"name": format!("{}-p", n.source), "kind": "redis-pubsub", "redis_url": cluster.url(),
             "pattern": pattern, "preset": "json", "tenant": n.tenant, "topic": "chat:{1}"},
            {"name": format!("{}-l", n.source), "kind": "redis-list-bids", "redis_url": cluster.url(),
             "key": list_key, "tenant": n.tenant},
        ]),
    )
    .await;
    let node = env.start().await;
    create_tenant(&node, &n.tenant).await?;
    for kind in ["s", "p", "l"] {
        running(&[&node], &format!("{}-{kind}", n.source)).await?;
    }
    let client = redis::cluster::ClusterClient::new(
        cluster
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>(),
    )?;
    let mut c = client.get_async_connection().await?;

    // A stream on the cluster.
    let mut matches = node
        .sse(
            &format!("/events?tenant={}&topic=match:m1", n.tenant),
            Some(0),
        )
        .await;
    for i in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg(&stream_key)
            .arg("*")
            .arg("event")
            .arg("match:updated")
            .arg("payload")
            .arg(json!({"matchId": "m1", "n": i}).to_string())
            .query_async(&mut c)
            .await?;
    }
    let got: Vec<u64> = matches
        .take(5, secs(20))
        .await
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);

    // Pub/sub: a message published on any node of the cluster. Until the
    // source listens a message is gone, so probes go first.
    let mut chat = node
        .sse(&format!("/events?tenant={}&topic=chat:r1", n.tenant), None)
        .await;
    let channel = format!("{}:chat:r1", n.prefix);
    let started = Instant::now();
    loop {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(json!({"type": "probe"}).to_string())
            .query_async(&mut c)
            .await?;
        if chat.next_data(Duration::from_millis(200)).await.is_some() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < secs(20),
            "the pub/sub source never heard"
        );
    }
    // Published on each master in turn: every message arrives once, and
    // those of one node in order (the cluster relays another node's
    // messages over its bus, so across nodes the order is the relay's).
    for (i, port) in cluster.ports.iter().take(3).cycle().take(9).enumerate() {
        let msg = json!({"type": "said", "n": i}).to_string();
        cluster.cli(*port, &["PUBLISH", &channel, &msg]);
    }
    let mut said = Vec::new();
    while said.len() < 9 {
        let Some(e) = chat.next_data(secs(20)).await else {
            anyhow::bail!("only {said:?} arrived");
        };
        if e.event == "said" {
            said.push(e.json()["data"]["n"].as_u64().unwrap_or(u64::MAX));
        }
    }
    let mut all = said.clone();
    all.sort_unstable();
    assert_eq!(all, (0..9).collect::<Vec<u64>>(), "each once: {said:?}");
    for node in 0..3 {
        let of_node: Vec<u64> = said.iter().copied().filter(|n| n % 3 == node).collect();
        assert!(
            of_node.windows(2).all(|w| w[0] < w[1]),
            "node {node}'s in order: {said:?}"
        );
    }

    // A list of bids: moved to a processing list in its hash slot, decided
    // once, removed.
    let product = product_at(&node, &n.tenant, 100).await;
    let mut bids = node
        .sse(
            &format!("/events?tenant={}&topic=product:{product}", n.tenant),
            Some(0),
        )
        .await;
    let seed = json!({"productId": product, "bidderId": "alice", "amount": 150, "timestamp": 1});
    let _: i64 = redis::cmd("LPUSH")
        .arg(&list_key)
        .arg(seed.to_string())
        .query_async(&mut c)
        .await?;
    let accepted = bids
        .next_of("bid.accepted", secs(20))
        .await
        .expect("bid.accepted");
    assert_eq!(accepted.json()["data"]["amount"], 150);
    let processing = format!("{{{list_key}}}:processing");
    let started = Instant::now();
    loop {
        let left: i64 = redis::cmd("LLEN")
            .arg(&processing)
            .query_async(&mut c)
            .await?;
        let pending: i64 = redis::cmd("LLEN")
            .arg(&list_key)
            .query_async(&mut c)
            .await?;
        if (left, pending) == (0, 0) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < secs(20),
            "{left} left in processing, {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(node);
    env.cleanup().await;
    Ok(())
}
