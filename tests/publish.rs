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
