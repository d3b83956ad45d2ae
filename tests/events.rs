//! Publishing and live delivery, snapshots, filters, tenants and bad input,
//! in both modes (in cluster mode events are published on another node than
//! the one streaming them).

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Sse};

async fn live_delivery(mode: Mode) {
    let env = Env::new(mode).await.set("SWITCHYARD_HEARTBEAT_MS", 200);
    let nodes = env.start_nodes(2).await;
    let (sub, pubr) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = sub.tenant().await;
    let mut s = sub
        .sse(
            &format!("/events?tenant={tenant}&topic=global&topic=service:sync"),
            None,
        )
        .await;
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache");
    assert_eq!(s.headers["x-accel-buffering"], "no");
    let id = pubr
        .publish(&tenant, "global", "note", json!({"hello": "world"}))
        .await;
    let ev = s.next_data(secs(10)).await.expect("live event");
    assert_eq!(ev.event, "note");
    assert_eq!(ev.seq(), id);
    let v = ev.json();
    assert_eq!(v["id"], id);
    assert_eq!(v["tenant"], tenant.as_str());
    assert_eq!(v["topic"], "global");
    assert_eq!(v["type"], "note");
    assert_eq!(v["data"]["hello"], "world");
    assert!(v["ts"].as_i64().expect("ts") > 1_600_000_000_000);
    assert_eq!(s.retry, Some(3000));
    // A topic the stream did not ask for is not delivered.
    pubr.publish(&tenant, "other:1", "note", json!(1)).await;
    let id2 = pubr
        .publish(&tenant, "service:sync", "status", json!({"up": true}))
        .await;
    let ev = s.next_data(secs(10)).await.expect("second event");
    assert_eq!(ev.seq(), id2);
    // Heartbeats flow while nothing is published: events a browser's
    // `EventSource` shows to JavaScript, with the interval and the cursor.
    assert_eq!(
        s.heartbeat_ms,
        Some(200),
        "the opening frame tells the interval"
    );
    let before = s.heartbeats;
    assert!(s
        .next(std::time::Duration::from_millis(700))
        .await
        .is_none());
    assert!(s.heartbeats >= before + 2, "no heartbeat seen");
    assert_eq!(s.heartbeat_ms, Some(200));
    assert_eq!(
        s.last_id,
        Some(id2.to_string()),
        "heartbeats carry the cursor"
    );
    assert_eq!(s.comments, 0, "heartbeats are events, not comments");
    env.cleanup().await;
}
both_transports!(live_delivery_test, live_delivery);

async fn snapshot_then_live(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (sub, pubr) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = sub.tenant().await;
    pubr.retain(
        &tenant,
        "service:balance",
        "status",
        json!({"state": "idle"}),
    )
    .await;
    let as_of = pubr
        .retain(
            &tenant,
            "service:balance",
            "status",
            json!({"state": "busy"}),
        )
        .await;
    let mut s = sub
        .sse(
            &format!("/events?tenant={tenant}&topic=service:balance"),
            None,
        )
        .await;
    let first = s.next(secs(10)).await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    let v = first.json();
    assert_eq!(v["data"]["state"], "busy");
    assert_eq!(v["as_of"], as_of);
    assert_eq!(v["topic"], "service:balance");
    // The snapshot carries the stream's cursor: a reconnect with it misses nothing.
    assert_eq!(first.seq(), as_of);
    let id = pubr
        .publish(
            &tenant,
            "service:balance",
            "status",
            json!({"state": "idle"}),
        )
        .await;
    let ev = s.next(secs(10)).await.expect("live");
    assert_eq!((ev.event.as_str(), ev.seq()), ("status", id));
    // The REST view of the retained state agrees.
    let r: Value = sub
        .get(&format!("/api/topics/service:balance?tenant={tenant}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["retained"]["data"]["state"], "busy");
    assert_eq!(r["head"], id);
    env.cleanup().await;
}
both_transports!(snapshot_then_live_test, snapshot_then_live);

async fn type_filter(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (sub, pubr) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = sub.tenant().await;
    let mut s = sub
        .sse(
            &format!("/events?tenant={tenant}&topic=global&events=keep,also"),
            None,
        )
        .await;
    pubr.publish(&tenant, "global", "drop", json!(1)).await;
    let a = pubr.publish(&tenant, "global", "keep", json!(2)).await;
    pubr.publish(&tenant, "global", "drop", json!(3)).await;
    let b = pubr.publish(&tenant, "global", "also", json!(4)).await;
    let got: Vec<(String, u64)> = s
        .take(2, secs(10))
        .await
        .into_iter()
        .map(|e| (e.event.clone(), e.seq()))
        .collect();
    assert_eq!(got, vec![("keep".to_string(), a), ("also".to_string(), b)]);
    env.cleanup().await;
}
both_transports!(type_filter_test, type_filter);

async fn tenant_streams_and_isolation(mode: Mode) {
    // No occupancy events: the tenants' first published ids are exactly 1.
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_PRESENCE_OCCUPANCY", "none");
    let nodes = env.start_nodes(2).await;
    let (sub, pubr) = (&nodes[0], &nodes[nodes.len() - 1]);
    let a = sub.tenant().await;
    let b = sub.tenant().await;
    let mut sa = sub.sse(&format!("/events/tenants/{a}"), None).await;
    let mut sb = sub
        .sse(
            &format!("/events?tenant={b}&topic=tenant:{b}&topic=global"),
            None,
        )
        .await;
    // Same topic names in both tenants.
    for i in 0..5 {
        pubr.publish(
            &a,
            &format!("tenant:{a}"),
            "announcement",
            json!({"i": i, "for": "a"}),
        )
        .await;
        pubr.publish(&b, "global", "note", json!({"i": i, "for": "b"}))
            .await;
    }
    pubr.publish(
        &b,
        &format!("tenant:{b}"),
        "announcement",
        json!({"for": "b"}),
    )
    .await;
    for ev in sa.take(5, secs(10)).await {
        let v = ev.json();
        assert_eq!(v["tenant"], a.as_str());
        assert_eq!(v["data"]["for"], "a");
    }
    for ev in sb.take(6, secs(10)).await {
        assert_eq!(ev.json()["tenant"], b.as_str());
    }
    // Ids are per tenant: both start at 1.
    let ra: Value = sub
        .get(&format!("/api/topics/tenant:{a}/events?tenant={a}&after=0"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ra["events"][0]["id"], 1);
    assert_eq!(ra["events"].as_array().expect("array").len(), 5);
    // Another tenant's broadcast topic is refused.
    let r = Sse::connect(
        &format!("{}/events?tenant={a}&topic=tenant:{b}", sub.url),
        None,
        &[],
    )
    .await;
    assert_eq!(r.err().map(|e| e.0), Some(StatusCode::FORBIDDEN));
    env.cleanup().await;
}
both_transports!(
    tenant_streams_and_isolation_test,
    tenant_streams_and_isolation
);

async fn admin_tenants(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let slug = a.tenant().await;
    // Visible from every node.
    let list: Value = b.get("/admin/tenants").await.json().await.expect("json");
    assert!(list["tenants"]
        .as_array()
        .expect("array")
        .iter()
        .any(|t| t["slug"] == slug.as_str()));
    let dup = b
        .post("/admin/tenants", &json!({"slug": slug, "name": "again"}))
        .await;
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let bad = b
        .post("/admin/tenants", &json!({"slug": "Bad Slug", "name": "x"}))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let v: Value = bad.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_slug");
    let anon = a
        .http
        .get(format!("{}/admin/tenants", a.url))
        .send()
        .await
        .expect("req");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let wrong = a
        .http
        .get(format!("{}/admin/tenants", a.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("req");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // A tenant created on one node is usable on the other at once.
    b.publish(&slug, "global", "hello", json!(null)).await;
    env.cleanup().await;
}
both_modes!(admin_tenants_test, admin_tenants);

async fn error_code(r: reqwest::Response) -> (StatusCode, String, String) {
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        s,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

async fn bad_input(mode: Mode) {
    let env = Env::new(mode).await.set("SWITCHYARD_MAX_BODY_BYTES", 4096);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let url = format!("{}/api/events", node.url);
    let post_raw = |body: String| {
        node.http
            .post(&url)
            .bearer_auth(support::ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Malformed JSON.
    let (s, code, _) = error_code(post_raw("{\"tenant\":".into()).await.expect("req")).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    // Missing field, named.
    let (s, _, msg) = error_code(
        node.post(
            "/api/events",
            &json!({"tenant": tenant, "topic": "global", "data": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg.contains("type"), "{msg}");
    // Wrong type, named.
    let (s, _, msg) = error_code(
        node.post(
            "/api/events",
            &json!({"tenant": tenant, "topic": 5, "type": "x", "data": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg.contains("topic"), "{msg}");
    // Unknown topic kinds and bad names.
    for topic in ["nonsense", "UPPER:1", "a:b c", "x:", "a:b\nc"] {
        let (s, code, _) = error_code(
            node.post(
                "/api/events",
                &json!({"tenant": tenant, "topic": topic, "type": "x", "data": 1}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_topic"),
            "{topic:?}"
        );
    }
    let (s, code, _) = error_code(
        node.post(
            "/api/events",
            &json!({"tenant": tenant, "topic": "global", "type": "bad type", "data": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_type")
    );
    // Unknown tenant.
    let (s, code, _) = error_code(
        node.post(
            "/api/events",
            &json!({"tenant": "no-such-tenant", "topic": "global", "type": "x", "data": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_tenant")
    );
    // Huge body.
    let huge = format!(
        "{{\"tenant\":\"{tenant}\",\"topic\":\"global\",\"type\":\"x\",\"data\":\"{}\"}}",
        "a".repeat(10_000)
    );
    let (s, code, _) = error_code(post_raw(huge).await.expect("req")).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // No credentials.
    let r = node
        .http
        .post(&url)
        .json(&json!({"tenant": tenant, "topic": "global", "type": "x", "data": 1}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Streams: garbage Last-Event-ID, unknown tenant, missing topic, bad topic, private topic.
    let base = &node.url;
    type Case<'a> = (String, Option<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            format!("/events?tenant={tenant}&topic=global"),
            Some(("last-event-id", "garbage")),
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
        ),
        (
            format!("/events?tenant={tenant}&topic=global&lastEventId=-3"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
        ),
        (
            "/events?tenant=no-such-tenant&topic=global".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "unknown_tenant",
        ),
        (
            format!("/events?tenant={tenant}"),
            None,
            StatusCode::BAD_REQUEST,
            "missing_topic",
        ),
        (
            "/events?topic=global".to_string(),
            None,
            StatusCode::BAD_REQUEST,
            "missing_tenant",
        ),
        (
            format!("/events?tenant={tenant}&topic=bogus"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            format!("/events?tenant={tenant}&topic=user:1"),
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/events/tenants/no-such-tenant".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "unknown_tenant",
        ),
        (
            format!("/api/topics/global/events?tenant={tenant}&after=abc"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/api/topics/global/events?tenant={tenant}&limit=100000"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/no/such/route".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (path, header, status, code) in cases {
        let mut req = node.http.get(format!("{base}{path}"));
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let (s, c, _) = error_code(req.send().await.expect("req")).await;
        assert_eq!((s, c.as_str()), (status, code), "{path}");
    }
    // Nothing above changed the log, and the node still serves.
    let r: Value = node
        .get(&format!(
            "/api/topics/global/events?tenant={tenant}&after=0"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["events"].as_array().expect("array").len(), 0);
    node.publish(&tenant, "global", "ok", json!(1)).await;
    env.cleanup().await;
}
both_modes!(bad_input_test, bad_input);

async fn health_ready_metrics(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_CORS_ORIGINS", "http://app.example");
    let node = env.start().await;
    let r = node.get("/health").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r: Value = node.get("/ready").await.json().await.expect("json");
    assert_eq!(r["status"], "ready");
    assert_eq!(
        r["mode"],
        if mode == Mode::Cluster {
            "cluster"
        } else {
            "embedded"
        }
    );
    let tenant = node.tenant().await;
    let _s = node
        .sse(&format!("/events?tenant={tenant}&topic=global"), None)
        .await;
    node.publish(&tenant, "global", "x", json!(1)).await;
    let text = node.get("/metrics").await.text().await.expect("text");
    assert!(
        text.contains(&format!(
            "switchyard_tenant_connections{{tenant=\"{tenant}\"}} 1"
        )),
        "{text}"
    );
    assert!(node.metric("switchyard_events_published_total").await >= 1.0);
    assert!(node.metric("switchyard_store_batches_total").await >= 1.0);
    assert!(
        node.metric("switchyard_store_batch_writes_total").await
            >= node.metric("switchyard_store_batches_total").await
    );
    assert!(text.contains(
        "switchyard_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/events\""
    ));
    // CORS: the configured origin is allowed, others are not.
    let pre = node
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/events", node.url))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "last-event-id")
        .send()
        .await
        .expect("preflight");
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let other = node
        .http
        .get(format!("{}/health", node.url))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("req");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    env.cleanup().await;
}
both_modes!(health_ready_metrics_test, health_ready_metrics);
