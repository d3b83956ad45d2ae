//! Publishing: scoped publisher tokens (CLI and admin API), in both modes.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{Env, Mode, Node, Sse, ADMIN};

async fn publish_with(node: &Node, token: &str, body: &Value) -> (StatusCode, Value) {
    let r = node
        .http
        .post(format!("{}/api/events", node.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_with(node: &Node, token: &str, path: &str) -> (StatusCode, Value) {
    let r = node
        .http
        .get(format!("{}{path}", node.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A publisher token publishes to the topics its patterns match in its
/// tenant, reads their history, and nothing else: no other topic, no other
/// tenant, no user stream, no admin API. The admin token keeps working.
async fn scoped_publisher_tokens(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (sub, publ) = (&nodes[0], nodes.last().expect("a node"));
    let tenant = publ.tenant().await;
    let other = publ.tenant().await;
    let svc = env
        .service_token("status-monitor", &tenant, "status:*,feed:main")
        .await;
    let mut stream = sub
        .sse(&format!("/events?tenant={tenant}&topic=status:db"), None)
        .await;
    let ev = |topic: &str| json!({"tenant": tenant, "topic": topic, "type": "status", "data": {"up": true}});
    let (s, body) = publish_with(publ, &svc, &ev("status:db")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_u64().expect("id");
    let got = stream.next_data(support::secs(10)).await.expect("event");
    assert_eq!(got.seq(), id);
    let (s, body) = publish_with(publ, &svc, &ev("feed:main")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Outside its patterns: 403 naming them; nothing stored.
    for topic in [
        "feed:other",
        "user:alice",
        "global",
        &format!("tenant:{tenant}"),
    ] {
        let (s, body) = publish_with(publ, &svc, &ev(topic)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{topic}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("status:*"),
            "{body}"
        );
    }
    // Another tenant: 403.
    let (s, body) = publish_with(
        publ,
        &svc,
        &json!({"tenant": other, "topic": "status:db", "type": "status", "data": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // Its history.
    let (s, body) = get_with(
        publ,
        &svc,
        &format!("/api/topics/status:db/events?tenant={tenant}&after=0"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let ids: Vec<u64> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![id], "{body}");
    // No private streams, no user history, no admin API.
    let (s, _) = get_with(publ, &svc, "/api/users/alice/messages?after=0").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get_with(
        publ,
        &svc,
        &format!("/api/topics/user:alice/events?tenant={tenant}&after=0"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    match Sse::connect(
        &format!("{}/events/users/alice", publ.url),
        None,
        &[("authorization", &format!("Bearer {svc}"))],
    )
    .await
    {
        Ok(_) => panic!("a publisher token opened a user stream"),
        Err((s, _)) => assert_eq!(s, StatusCode::FORBIDDEN),
    }
    let (s, _) = get_with(publ, &svc, "/admin/tenants").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A user token cannot publish; the admin token can, anywhere.
    let alice = env.token("alice", &tenant).await;
    let (s, body) = publish_with(publ, &alice, &ev("status:db")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = publish_with(publ, ADMIN, &ev("global")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Minted through the admin API: the same rules.
    let r = publ
        .post(
            "/admin/tokens",
            &json!({"service": "feeder", "tenant": tenant, "publish": ["feed:*"], "ttl": "1h"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let minted: Value = r.json().await.expect("json");
    assert_eq!(minted["publish"], json!(["feed:*"]));
    let feeder = minted["token"].as_str().expect("token");
    let (s, body) = publish_with(sub, feeder, &ev("feed:x")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, _) = publish_with(sub, feeder, &ev("status:db")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Bad requests name what is wrong; only the admin may mint.
    for (bad, says) in [
        (
            json!({"service": "x", "tenant": tenant, "publish": []}),
            "pattern",
        ),
        (
            json!({"service": "x", "tenant": tenant, "publish": ["Bad Topic"]}),
            "Bad Topic",
        ),
        (
            json!({"service": "x y", "tenant": tenant, "publish": ["a:*"]}),
            "service name",
        ),
        (
            json!({"service": "x", "tenant": tenant, "publish": ["a:*"], "ttl": "forever"}),
            "ttl",
        ),
    ] {
        let r = publ.post("/admin/tokens", &bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body = r.text().await.unwrap_or_default();
        assert!(body.contains(says), "{says:?} not in {body}");
    }
    let r = publ
        .post(
            "/admin/tokens",
            &json!({"service": "x", "tenant": "no-such-tenant", "publish": ["a:*"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = publ
        .http
        .post(format!("{}/admin/tokens", publ.url))
        .bearer_auth(&svc)
        .json(&json!({"service": "x", "tenant": tenant, "publish": ["a:*"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    env.cleanup().await;
}
both_modes!(scoped_publisher_tokens_test, scoped_publisher_tokens);

async fn post_keyed(node: &Node, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = node
        .http
        .post(format!("{}{path}", node.url))
        .bearer_auth(ADMIN)
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.expect("request")
}

/// Every id in a topic's history.
async fn history(node: &Node, tenant: &str, topic: &str) -> Vec<u64> {
    let (s, body) = get_with(
        node,
        ADMIN,
        &format!("/api/topics/{topic}/events?tenant={tenant}&after=0&limit=1000"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect()
}

/// A retried publish with the same `Idempotency-Key` and body answers the
/// same id and stores nothing new, on any node; the key with another body
/// is a 409 that stores nothing; keys are per tenant.
async fn idempotent_publish(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("a node"));
    let tenant = a.tenant().await;
    let other = a.tenant().await;
    let ev = |tenant: &str, n: u64| json!({"tenant": tenant, "topic": "orders:1", "type": "order", "data": {"n": n, "list": [1, 2]}});
    let r = post_keyed(a, "/api/events", Some("order-1"), &ev(&tenant, 1)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let first: Value = r.json().await.expect("json");
    // The retry, on the same node and on another.
    for node in [a, b] {
        let r = post_keyed(node, "/api/events", Some("order-1"), &ev(&tenant, 1)).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            r.headers().get("idempotent-replayed").map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        let again: Value = r.json().await.expect("json");
        assert_eq!(again, first);
    }
    // The same key with another body: 409, nothing stored.
    let r = post_keyed(b, "/api/events", Some("order-1"), &ev(&tenant, 2)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key"),
        "{body}"
    );
    // The same key in another tenant is another key.
    let r = post_keyed(b, "/api/events", Some("order-1"), &ev(&other, 1)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // Concurrent retries of one request: one event.
    let retried = ev(&tenant, 3);
    let posts = (0..8).map(|i| {
        let node = if i % 2 == 0 { a } else { b };
        post_keyed(node, "/api/events", Some("order-2"), &retried)
    });
    let mut ids = Vec::new();
    for r in futures_util::future::join_all(posts).await {
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(r.json::<Value>().await.expect("json")["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let first_id = first["id"].as_u64().expect("id");
    assert_eq!(
        history(a, &tenant, "orders:1").await,
        vec![first_id, ids[0].as_u64().expect("id")]
    );
    // A bad key is refused.
    let r = post_keyed(a, "/api/events", Some(&"k".repeat(300)), &ev(&tenant, 4)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    env.cleanup().await;
}
both_modes!(idempotent_publish_test, idempotent_publish);

/// A batch stores all its events or none and answers their ids in order,
/// consecutive for one tenant; a bad event names its place and stores
/// nothing; a keyed batch retried answers the same ids.
async fn batch_publish(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (sub, publ) = (&nodes[0], nodes.last().expect("a node"));
    let tenant = publ.tenant().await;
    let mut stream = sub
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:a&topic=feed:b"),
            None,
        )
        .await;
    let events: Vec<Value> = (0..50)
        .map(|n| {
            let topic = if n % 2 == 0 { "feed:a" } else { "feed:b" };
            json!({"tenant": tenant, "topic": topic, "type": "note", "data": {"n": n}})
        })
        .collect();
    let r = post_keyed(
        publ,
        "/api/events/batch",
        None,
        &json!({ "events": events }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    let ids: Vec<u64> = body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let got = stream.take(50, support::secs(10)).await;
    for (ev, (id, n)) in got.iter().zip(ids.iter().zip(0u64..)) {
        assert_eq!(ev.seq(), *id);
        assert_eq!(ev.json()["data"]["n"], n);
    }
    // One bad event: 400 naming it, nothing stored.
    let mut bad = events.clone();
    bad[7]["topic"] = json!("Not A Topic");
    let r = post_keyed(publ, "/api/events/batch", None, &json!({ "events": bad })).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("events[7].topic"), "{body}");
    let mut unknown = events.clone();
    unknown[3]["tenant"] = json!("no-such-tenant");
    let r = post_keyed(
        publ,
        "/api/events/batch",
        None,
        &json!({ "events": unknown }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post_keyed(publ, "/api/events/batch", None, &json!({ "events": [] })).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(history(sub, &tenant, "feed:a").await.len(), 25);
    assert_eq!(history(sub, &tenant, "feed:b").await.len(), 25);
    // Keyed: the retry answers the same ids and stores nothing.
    let small = json!({ "events": &events[..3] });
    let r = post_keyed(publ, "/api/events/batch", Some("batch-1"), &small).await;
    let first: Value = r.json().await.expect("json");
    let r = post_keyed(sub, "/api/events/batch", Some("batch-1"), &small).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.expect("json"), first);
    let r = post_keyed(
        sub,
        "/api/events/batch",
        Some("batch-1"),
        &json!({ "events": &events[..2] }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(history(sub, &tenant, "feed:a").await.len(), 27);
    env.cleanup().await;
}
both_modes!(batch_publish_test, batch_publish);

/// Keys are forgotten after `SWITCHYARD_IDEMPOTENCY_SECONDS`: the same key
/// then stores a new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_expire() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_IDEMPOTENCY_SECONDS", 1)
        .set("SWITCHYARD_RETENTION_SWEEP_MS", 200);
    let node = env.start().await;
    let ev = json!({"tenant": "demo", "topic": "orders:9", "type": "order", "data": {}});
    let r = post_keyed(&node, "/api/events", Some("k-9"), &ev).await;
    let first = r.json::<Value>().await.expect("json")["id"].clone();
    let r = post_keyed(&node, "/api/events", Some("k-9"), &ev).await;
    assert_eq!(r.json::<Value>().await.expect("json")["id"], first);
    support::wait_for("the key is forgotten", support::secs(10), || async {
        let r = post_keyed(&node, "/api/events", Some("k-9"), &ev).await;
        r.json::<Value>().await.expect("json")["id"] != first
    })
    .await;
    env.cleanup().await;
}
