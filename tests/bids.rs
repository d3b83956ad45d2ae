//! The bid pipeline: race-free decisions, exactly once, across nodes and
//! through crashes, auction ends and anti-sniping, in both modes.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{product, secs, Env, Mode, Node, PrivateRedis};
use switchyard::auth::{now_secs, Claims, Keys};

fn token(keys: &Keys, sub: &str, tenant: &str) -> String {
    keys.sign(&Claims {
        sub: sub.into(),
        tenant: tenant.into(),
        exp: now_secs() + 3600,
        iat: now_secs(),
    })
}

async fn bid(
    node: &Node,
    tok: &str,
    product: &str,
    bidder: &str,
    amount: i64,
) -> reqwest::Response {
    node.http
        .post(format!("{}/api/products/{product}/bids", node.url))
        .bearer_auth(tok)
        .json(&json!({"bidder_id": bidder, "amount": amount}))
        .send()
        .await
        .expect("request")
}

/// Waits for every bid to be decided (up to 60 s each); returns them.
async fn decided(node: &Node, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(support::decided(node, id).await);
    }
    out
}

async fn two_equal_bids(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let keys = env.keys().await;
    let p = product(&nodes[0], &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let (t1, t2) = (token(&keys, "u1", &tenant), token(&keys, "u2", &tenant));
    let mut stream = nodes[0]
        .sse(&format!("/events/products/{id}?tenant={tenant}"), None)
        .await;
    assert_eq!(
        stream.next(secs(10)).await.expect("snapshot").json()["data"]["product"]["id"],
        id.as_str()
    );
    let (a, b) = tokio::join!(
        bid(&nodes[0], &t1, &id, "u1", 150),
        bid(&nodes[nodes.len() - 1], &t2, &id, "u2", 150)
    );
    let mut ids = Vec::new();
    for r in [a, b] {
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["status"], "queued");
        ids.push(v["bid_id"].as_str().expect("bid id").to_string());
    }
    let bids = decided(&nodes[0], &ids).await;
    let accepted: Vec<&Value> = bids.iter().filter(|b| b["status"] == "accepted").collect();
    let rejected: Vec<&Value> = bids.iter().filter(|b| b["status"] == "rejected").collect();
    assert_eq!((accepted.len(), rejected.len()), (1, 1), "{bids:?}");
    assert_eq!(rejected[0]["reason"], "too_low");
    let ev = stream
        .next_of("bid.accepted", secs(10))
        .await
        .expect("bid.accepted");
    assert_eq!(ev.json()["data"]["bid_id"], accepted[0]["id"]);
    env.cleanup().await;
}
both_modes!(two_equal_bids_test, two_equal_bids);

/// 50 bidders × 20 bids at once, on two nodes: every bid decided once, the
/// accepted amounts rise by at least the increment, the final state is the
/// replay of the accepted ones, each of which is on the product stream once.
async fn many_bidders(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let keys = env.keys().await;
    let p = product(&nodes[0], &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let mut stream = nodes[0]
        .sse(&format!("/events/products/{id}?tenant={tenant}"), Some(0))
        .await;
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let node_url = nodes[(i as usize) % nodes.len()].url.clone();
        let tok = token(&keys, &format!("u{i}"), &tenant);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            for j in 0..20i64 {
                let amount = 100 + 10 * (j * 50 + i) + (i * 7 + j * 3) % 25;
                let r = http
                    .post(format!("{node_url}/api/products/{id}/bids"))
                    .bearer_auth(&tok)
                    .json(&json!({"bidder_id": format!("u{i}"), "amount": amount, "idempotency_key": format!("k{j}")}))
                    .send()
                    .await
                    .expect("bid");
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                ids.push(r.json::<Value>().await.expect("json")["bid_id"].as_str().expect("id").to_string());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("bidder"));
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);
    let bids = decided(&nodes[nodes.len() - 1], &ids).await;
    let accepted: HashSet<String> = bids
        .iter()
        .filter(|b| b["status"] == "accepted")
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    assert!(!accepted.is_empty());
    // The product stream, in order: each accepted bid exactly once, rising.
    let mut seen = HashSet::new();
    let mut last: Option<i64> = None;
    let mut last_bidder = String::new();
    while seen.len() < accepted.len() {
        let ev = stream
            .next_of("bid.accepted", secs(30))
            .await
            .expect("bid.accepted");
        let d = ev.json()["data"].clone();
        let bid_id = d["bid_id"].as_str().expect("bid id").to_string();
        assert!(
            accepted.contains(&bid_id),
            "stream shows a bid not accepted: {bid_id}"
        );
        assert!(seen.insert(bid_id), "a decision appeared twice");
        let amount = d["amount"].as_i64().expect("amount");
        match last {
            None => assert!(amount >= 100),
            Some(prev) => assert!(amount >= prev + 10, "{amount} after {prev}"),
        }
        last = Some(amount);
        last_bidder = d["bidder"].as_str().expect("bidder").to_string();
    }
    let state: Value = nodes[0]
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(state["current_bid"], last.expect("some accepted"));
    assert_eq!(state["leader"], last_bidder.as_str());
    assert_eq!(state["bid_count"], accepted.len() as u64);
    let rejected: HashMap<String, usize> =
        bids.iter()
            .filter(|b| b["status"] == "rejected")
            .fold(HashMap::new(), |mut m, b| {
                *m.entry(b["reason"].as_str().expect("reason").to_string())
                    .or_default() += 1;
                m
            });
    assert!(rejected.keys().all(|r| r == "too_low"), "{rejected:?}");
    env.cleanup().await;
}
both_modes!(many_bidders_test, many_bidders);

/// SIGKILL a node while bids are queued, start it again: every 202 is
/// decided, none twice.
async fn crash_mid_load(mode: Mode) {
    let env = Env::new(mode).await;
    let mut a = env.start().await;
    let b = if mode == Mode::Cluster {
        Some(env.start().await)
    } else {
        None
    };
    let tenant = a.tenant().await;
    let keys = env.keys().await;
    let p = product(&a, &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let mut ids = Vec::new();
    for i in 0..60i64 {
        let tok = token(&keys, &format!("u{}", i % 6), &tenant);
        let r = bid(&a, &tok, &id, &format!("u{}", i % 6), 100 + i * 10).await;
        ids.push(
            r.json::<Value>().await.expect("json")["bid_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    a.kill().await;
    let restarted = env.start().await;
    let judge = b.as_ref().unwrap_or(&restarted);
    let bids = decided(judge, &ids).await;
    let accepted = bids.iter().filter(|b| b["status"] == "accepted").count();
    let state: Value = judge
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        state["bid_count"], accepted as u64,
        "a bid was decided twice or lost"
    );
    let mut s = judge
        .sse(
            &format!("/events/products/{id}?tenant={tenant}&events=bid.accepted"),
            Some(0),
        )
        .await;
    let evs = s.take(accepted, secs(10)).await;
    let unique: HashSet<Value> = evs
        .iter()
        .map(|e| e.json()["data"]["bid_id"].clone())
        .collect();
    assert_eq!(unique.len(), accepted);
    env.cleanup().await;
}
both_modes!(crash_mid_load_test, crash_mid_load);

/// FLUSHALL on the test's own Redis mid-load loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_load() {
    let redis = PrivateRedis::start().await;
    let env = Env::new(Mode::Cluster).await.with_redis(&redis.url());
    let a = env.start().await;
    let b = env.start().await;
    let tenant = a.tenant().await;
    let keys = env.keys().await;
    let p = product(&a, &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let mut ids = Vec::new();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for i in 0..80i64 {
        let node = if i % 2 == 0 { &a } else { &b };
        let tok = token(&keys, &format!("u{}", i % 8), &tenant);
        let r = bid(node, &tok, &id, &format!("u{}", i % 8), 100 + i * 10).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        ids.push(
            r.json::<Value>().await.expect("json")["bid_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
        if i == 40 {
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut conn)
                .await
                .expect("flushall");
        }
    }
    let bids = decided(&a, &ids).await;
    let accepted = bids.iter().filter(|b| b["status"] == "accepted").count();
    let state: Value = a
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(state["bid_count"], accepted as u64);
    assert_eq!(state["current_bid"], 100 + 79 * 10);
    env.cleanup().await;
}

/// No bid accepted after the end; the auction closes once; an anti-sniping
/// bid moves the end and a bid before the new end is honoured.
async fn auction_end(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let keys = env.keys().await;
    let ends = switchyard::event::now_ms() + 1_500;
    let p = product(&nodes[0], &tenant, json!({"ends_at": ends})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let mut stream = nodes[0]
        .sse(&format!("/events/products/{id}?tenant={tenant}"), Some(0))
        .await;
    let mut ids = Vec::new();
    let mut amount = 100;
    // Keep bidding until well past the end.
    while switchyard::event::now_ms() < ends + 700 {
        let who = format!("u{}", amount % 3);
        let r = bid(
            &nodes[(amount as usize / 10) % nodes.len()],
            &token(&keys, &who, &tenant),
            &id,
            &who,
            amount,
        )
        .await;
        ids.push(
            r.json::<Value>().await.expect("json")["bid_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
        amount += 10;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bids = decided(&nodes[0], &ids).await;
    for b in &bids {
        let created = b["created_at"].as_i64().expect("created");
        if b["status"] == "accepted" {
            assert!(created < ends, "accepted a bid placed after the end");
        } else if created >= ends {
            assert_eq!(b["reason"], "auction_closed");
        }
    }
    let closed = stream
        .next_of("auction.closed", secs(15))
        .await
        .expect("auction.closed");
    assert_eq!(closed.json()["data"]["product"]["status"], "closed");
    assert!(
        stream
            .next_of("auction.closed", Duration::from_millis(1_500))
            .await
            .is_none(),
        "closed twice"
    );

    // Anti-sniping: a bid in the last 2 s pushes the end 2 s past it.
    let ends = switchyard::event::now_ms() + 1_000;
    let p = product(
        &nodes[0],
        &tenant,
        json!({"ends_at": ends, "anti_snipe_secs": 2}),
    )
    .await;
    let id = p["id"].as_str().expect("id").to_string();
    let t1 = token(&keys, "u1", &tenant);
    let r = bid(&nodes[0], &t1, &id, "u1", 200).await;
    let first = r.json::<Value>().await.expect("json")["bid_id"]
        .as_str()
        .expect("id")
        .to_string();
    decided(&nodes[0], &[first]).await;
    let state: Value = nodes[0]
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    let new_end = state["ends_at"].as_i64().expect("ends_at");
    assert!(new_end > ends, "the end did not move");
    support::wait_for("original end passed", secs(5), || async {
        switchyard::event::now_ms() > ends + 50
    })
    .await;
    let t2 = token(&keys, "u2", &tenant);
    let r = bid(&nodes[nodes.len() - 1], &t2, &id, "u2", 300).await;
    let late = r.json::<Value>().await.expect("json")["bid_id"]
        .as_str()
        .expect("id")
        .to_string();
    let b = decided(&nodes[0], &[late]).await;
    assert_eq!(
        b[0]["status"], "accepted",
        "a bid before the extended end was refused: {:?}",
        b[0]
    );
    env.cleanup().await;
}
both_modes!(auction_end_test, auction_end);

async fn bid_input_and_access(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let other = node.tenant().await;
    let keys = env.keys().await;
    let p = product(&node, &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let t1 = token(&keys, "u1", &tenant);
    // Idempotency: same key and body, same bid; another body, 409.
    let post = |body: Value| {
        node.http
            .post(format!("{}/api/products/{id}/bids", node.url))
            .bearer_auth(&t1)
            .json(&body)
            .send()
    };
    let a: Value = post(json!({"bidder_id": "u1", "amount": 150, "idempotency_key": "k1"}))
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let b: Value = post(json!({"bidder_id": "u1", "amount": 150, "idempotency_key": "k1"}))
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(a["bid_id"], b["bid_id"]);
    let c = post(json!({"bidder_id": "u1", "amount": 170, "idempotency_key": "k1"}))
        .await
        .expect("req");
    assert_eq!(c.status(), StatusCode::CONFLICT);
    // Malformed bodies name the field.
    let r = post(json!({"bidder_id": "u1", "amount": "lots"}))
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap_or_default().contains("amount"));
    let r = post(json!({"amount": 10})).await.expect("req");
    assert!(r.text().await.unwrap_or_default().contains("bidder_id"));
    // Unknown product, no token, someone else's bidder id, another tenant's product.
    let r = node
        .http
        .post(format!("{}/api/products/p_nope/bids", node.url))
        .bearer_auth(&t1)
        .json(&json!({"bidder_id": "u1", "amount": 200}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = node
        .http
        .post(format!("{}/api/products/{id}/bids", node.url))
        .json(&json!({"bidder_id": "u1", "amount": 200}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = bid(&node, &t1, &id, "u2", 200).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let outsider = token(&keys, "u1", &other);
    let r = bid(&node, &outsider, &id, "u1", 200).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = node
        .http
        .get(format!("{}/api/products/{id}", node.url))
        .bearer_auth(&outsider)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A bid is visible to its bidder, not to another user.
    let bid_id = a["bid_id"].as_str().expect("id");
    let t2 = token(&keys, "u2", &tenant);
    let r = node
        .http
        .get(format!("{}/api/bids/{bid_id}", node.url))
        .bearer_auth(&t2)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r: Value = node
        .http
        .get(format!("{}/api/bids/{bid_id}", node.url))
        .bearer_auth(&t1)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(r["product_id"], id.as_str());
    assert_eq!(r["amount"], 150);
    // Products: validation names the field.
    let r = node.post("/api/products", &json!({"tenant": tenant, "seller_id": "s", "title": "x", "starting_price": 0, "min_increment": 1})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("starting_price"));
    env.cleanup().await;
}
both_modes!(bid_input_and_access_test, bid_input_and_access);

/// Bids that arrive together share a commit. A refused bid (a key reused for
/// another bid) and a repeated one (same key, same body) in the same burst as
/// new bids disturb none of them: every new bid is stored and decided once.
async fn burst_with_refusals(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_POST_RATE", 1000)
        .set("SWITCHYARD_POST_BURST", 1000);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let keys = env.keys().await;
    let p = product(&node, &tenant, json!({})).await;
    let id = p["id"].as_str().expect("id").to_string();
    let tok = token(&keys, "u1", &tenant);
    let post = |amount: i64, key: String| {
        node.http
            .post(format!("{}/api/products/{id}/bids", node.url))
            .bearer_auth(&tok)
            .json(&json!({"bidder_id": "u1", "amount": amount, "idempotency_key": key}))
            .send()
    };
    let first: Value = post(110, "k0".into())
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let first_id = first["bid_id"].as_str().expect("bid_id").to_string();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..60i64 {
        let (amount, key) = match i % 3 {
            0 => (110, "k0".to_string()),
            1 => (120 + i, "k0".to_string()),
            _ => (200 + i, format!("k{i}")),
        };
        let req = post(amount, key);
        burst.spawn(async move {
            let r = req.await.expect("request");
            let status = r.status();
            (i, status, r.json::<Value>().await.expect("json"))
        });
    }
    let mut fresh = vec![first_id.clone()];
    while let Some(done) = burst.join_next().await {
        let (i, status, body) = done.expect("task");
        match i % 3 {
            0 => {
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                assert_eq!(body["bid_id"], first_id.as_str(), "a repeat made a new bid");
            }
            1 => {
                assert_eq!(status, StatusCode::CONFLICT, "{body}");
                assert_eq!(body["error"]["code"], "conflict");
            }
            _ => {
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                let bid = body["bid_id"].as_str().expect("bid_id").to_string();
                assert!(!fresh.contains(&bid), "bid id {bid} answered twice");
                fresh.push(bid);
            }
        }
    }
    assert_eq!(fresh.len(), 21);
    let bids = decided(&node, &fresh).await;
    let accepted = bids.iter().filter(|b| b["status"] == "accepted").count();
    assert!(accepted >= 1, "no bid accepted: {bids:?}");
    let state: Value = node
        .get(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(state["bid_count"], accepted as i64, "{state}");
    env.cleanup().await;
}
both_modes!(burst_with_refusals_test, burst_with_refusals);

/// A slow validator of one tenant delays only its own round: the hostile
/// validator spins in guest code up to its (long) deadline, and meanwhile
/// another tenant's publishes and the same tenant's unrelated ones answer at
/// once; the bid is then decided once (the validator was called once, one
/// rejection), and the product takes the next bid as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_validator_delays_only_its_round() {
    const DEADLINE_MS: u64 = 8_000;
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", DEADLINE_MS);
    let node = env.start().await;
    let (slow, other) = (node.tenant().await, node.tenant().await);
    let query = format!("?tenant={slow}");
    node.configure_plugin("bid-validator", &query, json!({"mode": "loop"}))
        .await;
    let wasm = std::path::PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS"))
        .join("hostile_validator.wasm");
    let r = node
        .put_plugin(
            "bid-validator",
            &format!("{query}&wait=true"),
            std::fs::read(&wasm).expect("the hostile validator is built"),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let product = support::product_at(&node, &slow, 100).await;
    let placed = Instant::now();
    let bid_id = support::bid(&node, &product, "u1", 200).await;
    // Publish (the other tenant, then the slow one's own unrelated topic)
    // until the bid is decided, timing each answer.
    let (mut publishes, mut slowest) = (0u32, Duration::ZERO);
    let decided = loop {
        for (tenant, topic) in [(&other, "feed:other"), (&slow, "feed:unrelated")] {
            let t = Instant::now();
            node.publish(tenant, topic, "note", json!({ "n": publishes }))
                .await;
            slowest = slowest.max(t.elapsed());
            publishes += 1;
        }
        let b: Value = node
            .get(&format!("/api/bids/{bid_id}"))
            .await
            .json()
            .await
            .expect("json");
        if b["status"] != "queued" {
            break b;
        }
        assert!(placed.elapsed() < secs(60), "the bid was never decided");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The publishes ran while the validator did (its calls end at the
    // deadline), and none waited for it.
    assert!(
        placed.elapsed() >= Duration::from_millis(DEADLINE_MS),
        "decided after {:?}",
        placed.elapsed()
    );
    assert!(
        slowest < secs(3),
        "a publish waited {slowest:?} for another round's validator"
    );
    assert!(publishes >= 10, "{publishes} publishes");
    assert_eq!(decided["status"], "rejected", "{decided}");
    assert_eq!(decided["reason"], "plugin_error", "{decided}");
    let slot = node.plugin_slot("bid-validator", Some(&slow)).await;
    assert_eq!(slot["errors"]["timeout"], 1, "validated once: {slot}");
    assert_eq!(
        node.metric("switchyard_bid_decisions_rejected_total").await,
        1.0
    );
    // A well-behaved configuration: the next bid is accepted.
    node.configure_plugin("bid-validator", &query, json!({}))
        .await;
    let next = support::decided(&node, &support::bid(&node, &product, "u2", 300).await).await;
    assert_eq!(next["status"], "accepted", "{next}");
    let state: Value = node
        .get(&format!("/api/products/{product}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (state["current_bid"].clone(), state["bid_count"].clone()),
        (json!(300), json!(1))
    );
    env.cleanup().await;
}
