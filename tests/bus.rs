//! The sharded bus: on a local Redis Cluster (3 masters, 3 replicas,
//! started by the test), with a master killed mid-way, and on several
//! independent Redis servers. Every test has its own Redis and its own
//! Postgres schema.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{rand_id, secs, wait_for, Env, Mode, Node, PrivateRedis, RedisCluster, Sse};
use switchyard::backend::cluster::fanout::{shard_keys, shard_of};

/// Creates, through `node`, one tenant on each of `shards` shards.
async fn tenant_per_shard(node: &Node, shards: u16) -> Vec<String> {
    let base = rand_id();
    let mut found: Vec<Option<String>> = vec![None; usize::from(shards)];
    let mut i = 0;
    while found.iter().any(Option::is_none) {
        let slug = format!("b{base}-{i}");
        i += 1;
        let s = usize::from(shard_of(&slug, shards));
        if found[s].is_some() {
            continue;
        }
        let r = node
            .post("/admin/tenants", &json!({"slug": slug, "name": "Bus"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        found[s] = Some(slug);
    }
    found.into_iter().flatten().collect()
}

/// One stream per (node, tenant), from the start of `feed:1`.
async fn streams(nodes: &[Node], tenants: &[String]) -> Vec<(usize, usize, Sse)> {
    let mut out = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (t, tenant) in tenants.iter().enumerate() {
            let s = node
                .sse(&format!("/events?tenant={tenant}&topic=feed:1"), Some(0))
                .await;
            out.push((n, t, s));
        }
    }
    out
}

/// Publishes `rounds` events to every tenant's `feed`, alternating nodes;
/// returns each tenant's ids.
async fn publish_rounds(
    nodes: &[Node],
    tenants: &[String],
    rounds: std::ops::Range<usize>,
    ids: &mut [Vec<u64>],
) {
    for r in rounds {
        for (t, tenant) in tenants.iter().enumerate() {
            let node = &nodes[(r + t) % nodes.len()];
            ids[t].push(
                node.publish(tenant, "feed:1", "tick", json!({"r": r}))
                    .await,
            );
        }
    }
}

/// Every stream got exactly its tenant's ids, in order, and nothing more.
async fn assert_exact(streams: &mut [(usize, usize, Sse)], ids: &[Vec<u64>]) {
    for (n, t, s) in streams.iter_mut() {
        let want = &ids[*t];
        let got: Vec<u64> = s
            .take(want.len(), secs(30))
            .await
            .iter()
            .map(|e| e.seq())
            .collect();
        assert_eq!(&got, want, "node {n}, tenant {t}");
    }
    // Nothing repeated after the last one.
    for (n, t, s) in streams.iter_mut() {
        if let Some(e) = s.next(std::time::Duration::from_millis(300)).await {
            assert!(
                e.event != "tick",
                "node {n}, tenant {t}: {} after the last",
                e.seq()
            );
        }
    }
}

/// Tenants on every one of 16 shards, spread over a Redis Cluster's three
/// masters: each event reaches the streams of both nodes in order, and the
/// rest of cluster mode (stream caps, presence, the console, bids) runs on
/// the cluster too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_shard_reaches_every_node_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await;
    let env = Env::new(Mode::Cluster)
        .await
        .with_redis(&cluster.url())
        .set("SWITCHYARD_BUS_SHARDS", 16)
        .set("SWITCHYARD_PRESENCE_INTERVAL_MS", 200);
    let nodes = env.start_nodes(2).await;
    // The shards' streams are spread over every master.
    let masters: std::collections::HashSet<u16> = shard_keys(&env.prefix, 16)
        .iter()
        .map(|k| cluster.master_of(k))
        .collect();
    assert_eq!(masters.len(), 3, "shards on {masters:?}");

    let tenants = tenant_per_shard(&nodes[0], 16).await;
    let mut streams = streams(&nodes, &tenants).await;
    let mut ids = vec![Vec::new(); tenants.len()];
    publish_rounds(&nodes, &tenants, 0..4, &mut ids).await;
    assert_exact(&mut streams, &ids).await;
    for node in &nodes {
        assert_eq!(node.metric("switchyard_bus_shard_reading").await, 16.0);
        assert!(node.metric("switchyard_bus_shard_entries_read_total").await > 0.0);
        let ready = node.get("/ready").await;
        assert_eq!(ready.status(), StatusCode::OK);
    }

    // Presence: one user's stream on each node, counted across both.
    let tenant = &tenants[0];
    let token = env.token("ann", tenant).await;
    let mut watch = nodes[0]
        .sse(
            &format!("/events?tenant={tenant}&topic=room:1~occupancy"),
            None,
        )
        .await;
    let bearer = format!("Bearer {token}");
    let mut present = Vec::new();
    for node in &nodes {
        let url = format!("{}/events?tenant={tenant}&topic=room:1", node.url);
        present.push(
            Sse::connect(&url, None, &[("authorization", &bearer)])
                .await
                .unwrap_or_else(|(s, b)| panic!("stream refused: {s} {b}")),
        );
    }
    let deadline = tokio::time::Instant::now() + secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = watch
            .next_of("occupancy", left)
            .await
            .expect("occupancy of both nodes' streams");
        if ev.json()["data"] == json!({"streams": 2, "users": 1}) {
            break;
        }
    }

    // The console: both nodes' figures, and the user's streams on both.
    let listed: Value = nodes[0]
        .get(&format!("/admin/tenants/{tenant}/users/ann/streams"))
        .await
        .json()
        .await
        .expect("json");
    let streams_listed = listed["streams"].as_array().map_or(0, Vec::len);
    assert_eq!(streams_listed, 2, "{listed}");
    wait_for("both nodes' figures", secs(10), || async {
        let stats: Value = nodes[1]
            .get("/admin/stats")
            .await
            .json()
            .await
            .unwrap_or_default();
        stats["nodes"].as_array().map_or(0, Vec::len) == 2
    })
    .await;

    // Bids: decided through the cluster's wake-ups.
    let product = support::product_at(&nodes[0], tenant, 100).await;
    let bid = support::bid(&nodes[1], &product, "bob", 120).await;
    let decided = support::decided(&nodes[0], &bid).await;
    assert_eq!(decided["status"], "accepted", "{decided}");
    env.cleanup().await;
}

/// Two nodes on a 3-master Redis Cluster with 16 bus shards, a tenant on
/// each shard, a stream per node and tenant, three rounds published; `key`
/// is the first tenant's shard.
struct World {
    cluster: RedisCluster,
    env: Env,
    nodes: Vec<Node>,
    tenants: Vec<String>,
    streams: Vec<(usize, usize, Sse)>,
    ids: Vec<Vec<u64>>,
    key: String,
}

impl World {
    async fn start() -> World {
        let cluster = RedisCluster::start(3).await;
        let env = Env::new(Mode::Cluster)
            .await
            .with_redis(&cluster.url())
            .set("SWITCHYARD_BUS_SHARDS", 16);
        let nodes = env.start_nodes(2).await;
        let tenants = tenant_per_shard(&nodes[0], 16).await;
        let streams = streams(&nodes, &tenants).await;
        let mut ids = vec![Vec::new(); tenants.len()];
        publish_rounds(&nodes, &tenants, 0..3, &mut ids).await;
        let key = shard_keys(&env.prefix, 16)[usize::from(shard_of(&tenants[0], 16))].clone();
        World {
            cluster,
            env,
            nodes,
            tenants,
            streams,
            ids,
            key,
        }
    }
}

/// A master is SIGKILLed while both nodes publish to tenants on every
/// shard: its replica takes over, and every stream gets every event once,
/// in order (what the lost master had not passed on is read from Postgres).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_redis_master_loses_nothing() {
    let World {
        mut cluster,
        env,
        nodes,
        tenants,
        mut streams,
        mut ids,
        key,
    } = World::start().await;
    let victim = cluster.master_of(&key);
    cluster.kill(victim);
    // Publishing goes on while the cluster notices and fails over.
    publish_rounds(&nodes, &tenants, 3..6, &mut ids).await;
    cluster.wait_ok().await;
    assert_eq!(cluster.masters(), 3, "a replica took over");
    publish_rounds(&nodes, &tenants, 6..9, &mut ids).await;
    assert_exact(&mut streams, &ids).await;
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + secs(20);
        loop {
            let r = node.get("/ready").await;
            if r.status() == StatusCode::OK {
                break;
            }
            let body = r.text().await.unwrap_or_default();
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready after the failover: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    env.cleanup().await;
}

/// Several independent Redis servers: the shards are spread over them, and
/// a node reads only the shards of the tenants it has streams of.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_spread_over_independent_servers() {
    let a = PrivateRedis::start().await;
    let mut b = PrivateRedis::start().await;
    let env = Env::new(Mode::Cluster)
        .await
        .with_redis(&format!("{},{}", a.url(), b.url()))
        .set("SWITCHYARD_BUS_SHARDS", 4);
    let nodes = env.start_nodes(2).await;
    let tenants = tenant_per_shard(&nodes[0], 4).await;
    // Node 0 reads every tenant; node 1 only the first.
    let mut all = streams(&nodes[..1], &tenants).await;
    let mut one = streams(&nodes[1..], &tenants[..1]).await;
    for s in one.iter_mut() {
        s.0 = 1;
    }
    let mut ids = vec![Vec::new(); tenants.len()];
    publish_rounds(&nodes, &tenants, 0..4, &mut ids).await;
    assert_exact(&mut all, &ids).await;
    assert_exact(&mut one, &ids[..1]).await;
    assert_eq!(nodes[0].metric("switchyard_bus_shard_reading").await, 4.0);
    assert_eq!(nodes[1].metric("switchyard_bus_shard_reading").await, 1.0);
    // Shard i's stream is on server i mod 2.
    let keys = shard_keys(&env.prefix, 4);
    for (i, key) in keys.iter().enumerate() {
        let (on, off) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let exists = |port: u16| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "EXISTS", key])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(exists(on.port), "1", "shard {i}");
        assert_eq!(exists(off.port), "0", "shard {i}");
    }
    // The second server goes away: `/ready` names its shards, and their
    // tenants' events still arrive, read from Postgres.
    b.stop();
    let deadline = tokio::time::Instant::now() + secs(10);
    loop {
        let r = nodes[0].get("/ready").await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if status == StatusCode::SERVICE_UNAVAILABLE && body.contains("bus shards 1, 3") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before: Vec<usize> = ids.iter().map(Vec::len).collect();
    publish_rounds(&nodes[..1], &tenants, 4..6, &mut ids).await;
    for (_, t, s) in all.iter_mut().chain(one.iter_mut()) {
        let want = &ids[*t][before[*t]..];
        let got: Vec<u64> = s
            .take(want.len(), secs(20))
            .await
            .iter()
            .map(|e| e.seq())
            .collect();
        assert_eq!(got, want, "tenant {t} with server b down");
    }
    env.cleanup().await;
}

/// Every slot of the master holding a shard moves to another master (its
/// keys with them) while both nodes publish: the readers follow the slot,
/// and every stream gets every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resharding_loses_nothing() {
    let World {
        cluster,
        env,
        nodes,
        tenants,
        mut streams,
        mut ids,
        key,
    } = World::start().await;
    let from = cluster.master_of(&key);
    // The first three nodes were made the masters; nothing failed over.
    let to = *cluster.ports[..3]
        .iter()
        .find(|p| **p != from)
        .expect("another master");
    let moving = tokio::task::spawn_blocking(move || support::reshard_all(from, to));
    publish_rounds(&nodes, &tenants, 3..6, &mut ids).await;
    moving.await.expect("resharded");
    assert_eq!(cluster.master_of(&key), to, "the shard's slot moved");
    publish_rounds(&nodes, &tenants, 6..9, &mut ids).await;
    assert_exact(&mut streams, &ids).await;
    env.cleanup().await;
}
