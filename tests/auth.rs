//! Client tokens, private user streams, messages, connection caps, rate
//! limits, tenant isolation and secrets kept out of logs, in both modes.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Node, Sse};
use switchyard::auth::{now_secs, Claims, Keys};

fn claims(sub: &str, tenant: &str, exp: u64) -> Claims {
    Claims {
        sub: sub.into(),
        tenant: tenant.into(),
        exp,
        iat: now_secs(),
    }
}

async fn stream_status(node: &Node, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    match Sse::connect(&format!("{}{path}", node.url), None, headers).await {
        Ok(_) => StatusCode::OK,
        Err((s, _)) => s,
    }
}

async fn send(node: &Node, token: &str, from: &str, to: &str, body: &str) -> reqwest::Response {
    node.http
        .post(format!("{}/api/messages", node.url))
        .bearer_auth(token)
        .json(&json!({"from": from, "to": to, "body": body, "product_id": "p-1"}))
        .send()
        .await
        .expect("request")
}

async fn user_stream_auth(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let other_tenant = node.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let bob = env.token("bob", &tenant).await;
    let path = "/events/users/alice";
    // No token, another user's, a token of a tenant that does not exist.
    assert_eq!(
        stream_status(&node, path, &[]).await,
        StatusCode::UNAUTHORIZED
    );
    let bearer_bob = format!("Bearer {bob}");
    assert_eq!(
        stream_status(&node, path, &[("authorization", &bearer_bob)]).await,
        StatusCode::FORBIDDEN
    );
    let keys = env.keys().await;
    let ghost = keys.sign(&claims("alice", "no-such-tenant", now_secs() + 60));
    assert_eq!(
        stream_status(&node, &format!("{path}?token={ghost}"), &[]).await,
        StatusCode::NOT_FOUND
    );
    // Expired, forged, alg none.
    let expired = keys.sign(&claims("alice", &tenant, now_secs() - 1));
    let forged = Keys::new(b"not-the-secret").sign(&claims("alice", &tenant, now_secs() + 60));
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims("alice", &tenant, now_secs() + 60)).expect("json"));
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    for bad in [&expired, &forged, &none] {
        assert_eq!(
            stream_status(&node, &format!("{path}?token={bad}"), &[]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // A token names its tenant; a `tenant` that disagrees is refused.
    assert_eq!(
        stream_status(
            &node,
            &format!("{path}?token={alice}&tenant={other_tenant}"),
            &[]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // Each carrier works, and the stream opens with the unread count.
    let bearer = format!("Bearer {alice}");
    let cookie = format!("switchyard_token={alice}");
    let query = format!("{path}?token={alice}");
    for (p, h) in [
        (path, ("authorization", bearer.as_str())),
        (path, ("cookie", cookie.as_str())),
        (query.as_str(), ("x-none", "")),
    ] {
        let mut s = Sse::connect(&format!("{}{p}", node.url), None, &[h])
            .await
            .expect("stream opens");
        let snap = s.next(secs(10)).await.expect("snapshot");
        assert_eq!(snap.event, "snapshot");
        assert_eq!(snap.json()["data"]["unread"], 0);
    }
    // user:* inside /events follows the same rule.
    assert_eq!(
        stream_status(&node, &format!("/events?topic=user:alice&token={bob}"), &[]).await,
        StatusCode::FORBIDDEN
    );
    env.cleanup().await;
}
both_transports!(user_stream_auth_test, user_stream_auth);

async fn messages_flow(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let bob = env.token("bob", &tenant).await;
    let mut bob_stream = a.sse(&format!("/events/users/bob?token={bob}"), None).await;
    assert_eq!(
        bob_stream.next(secs(10)).await.expect("snapshot").json()["data"]["unread"],
        0
    );
    // Alice writes to Bob on the other node; Bob's stream shows it at once.
    let r = send(
        b,
        &alice,
        "alice",
        "bob",
        "Hi! mail me at alice@example.com or call +1 555 123 4567",
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let msg: Value = r.json().await.expect("json");
    let ev = bob_stream
        .next_of("message", secs(10))
        .await
        .expect("message event");
    let v = ev.json();
    assert_eq!(v["topic"], "user:bob");
    assert_eq!(v["data"]["from"], "alice");
    assert_eq!(v["data"]["message_id"], msg["id"]);
    let preview = v["data"]["preview"].as_str().expect("preview");
    assert!(
        preview.contains("[email]") && preview.contains("[phone]"),
        "{preview}"
    );
    assert!(!preview.contains("alice@example.com") && !preview.contains("4567"));
    let badge = bob_stream
        .next_of("unread", secs(10))
        .await
        .expect("unread");
    assert_eq!(badge.json()["data"]["unread"], 1);
    // History: Bob (and Alice, the sender) see it; nobody else may look.
    let hist: Value = b
        .http
        .get(format!("{}/api/users/bob/messages", b.url))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(hist["messages"][0]["body"], msg["body"]);
    assert_eq!(hist["unread"], 1);
    let peek = b
        .http
        .get(format!("{}/api/users/bob/messages", b.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("req");
    assert_eq!(peek.status(), StatusCode::FORBIDDEN);
    // Nobody sends as someone else; anonymous nobody sends at all.
    assert_eq!(
        send(a, &alice, "bob", "alice", "spoof").await.status(),
        StatusCode::FORBIDDEN
    );
    let anon = a
        .http
        .post(format!("{}/api/messages", a.url))
        .json(&json!({"from":"x","to":"y","body":"z"}))
        .send()
        .await
        .expect("req");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    // Bad bodies name the field.
    let r = a
        .http
        .post(format!("{}/api/messages", a.url))
        .bearer_auth(&alice)
        .json(&json!({"from":"alice","body":"no recipient"}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap_or_default().contains("to"));
    // The admin token may send on anyone's behalf, naming the tenant.
    let r = a
        .post(
            "/api/messages",
            &json!({"tenant": tenant, "from": "system", "to": "bob", "body": "welcome"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        bob_stream
            .next_of("unread", secs(10))
            .await
            .expect("unread")
            .json()["data"]["unread"],
        2
    );
    // Marking read clears the badge, live and in the next snapshot.
    let last = hist["last_id"].as_i64().expect("last id") + 1;
    let r = b
        .http
        .post(format!("{}/api/users/bob/messages/read", b.url))
        .bearer_auth(&bob)
        .json(&json!({"up_to": last + 1000}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.json::<Value>().await.expect("json")["unread"], 0);
    assert_eq!(
        bob_stream
            .next_of("unread", secs(10))
            .await
            .expect("unread")
            .json()["data"]["unread"],
        0
    );
    let mut again = b.sse(&format!("/events/users/bob?token={bob}"), None).await;
    assert_eq!(
        again.next(secs(10)).await.expect("snapshot").json()["data"]["unread"],
        0
    );
    env.cleanup().await;
}
both_modes!(messages_flow_test, messages_flow);

/// A user who was offline gets the messages by history and by
/// `Last-Event-ID` replay, once each.
async fn reload_after_offline(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let bob = env.token("bob", &tenant).await;
    let mut s = a.sse(&format!("/events/users/bob?token={bob}"), None).await;
    s.next(secs(10)).await.expect("snapshot");
    let cursor: u64 = s
        .last_id
        .as_deref()
        .expect("cursor")
        .parse()
        .expect("numeric");
    drop(s);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = send(b, &alice, "alice", "bob", &format!("message {i}")).await;
        ids.push(r.json::<Value>().await.expect("json")["id"].clone());
    }
    let hist: Value = a
        .http
        .get(format!("{}/api/users/bob/messages?after=0", a.url))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let got: Vec<Value> = hist["messages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids);
    let mut r = b
        .sse(
            &format!("/events/users/bob?token={bob}&events=message"),
            Some(cursor),
        )
        .await;
    let evs = r.take(3, secs(10)).await;
    let replayed: Vec<Value> = evs
        .iter()
        .map(|e| e.json()["data"]["message_id"].clone())
        .collect();
    assert_eq!(replayed, ids);
    assert!(
        r.next_data(Duration::from_millis(300)).await.is_none(),
        "a message came twice"
    );
    env.cleanup().await;
}
both_modes!(reload_after_offline_test, reload_after_offline);

/// Per-user caps hold across nodes; a freed slot can be used again.
async fn stream_caps(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_MAX_STREAMS_PER_USER", 2);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let path = format!("/events/users/alice?token={alice}");
    let first = a.sse(&path, None).await;
    let _second = b.sse(&path, None).await;
    let refused = Sse::connect(&format!("{}{path}", a.url), None, &[])
        .await
        .err()
        .expect("third refused");
    assert_eq!(refused.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.1.contains("too_many_streams"), "{}", refused.1);
    let raw = a
        .http
        .get(format!("{}{path}", a.url))
        .send()
        .await
        .expect("req");
    assert!(raw.headers().get("retry-after").is_some());
    // Another user is not affected.
    let bob = env.token("bob", &tenant).await;
    let _bob = a.sse(&format!("/events/users/bob?token={bob}"), None).await;
    drop(first);
    support::wait_for("slot freed", secs(10), || async {
        Sse::connect(&format!("{}{path}", b.url), None, &[])
            .await
            .is_ok()
    })
    .await;
    assert!(a.metric("switchyard_streams_refused_total").await >= 1.0);
    env.cleanup().await;
}
both_transports!(stream_caps_test, stream_caps);

async fn post_rate_limit(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_POST_RATE", 1)
        .set("SWITCHYARD_POST_BURST", 3);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = send(&node, &alice, "alice", "bob", &format!("m{i}")).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().get("retry-after").is_some());
        }
        statuses.push(r.status());
    }
    assert_eq!(&statuses[..3], &[StatusCode::CREATED; 3]);
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Another token has its own bucket.
    let carol = env.token("carol", &tenant).await;
    assert_eq!(
        send(&node, &carol, "carol", "bob", "hi").await.status(),
        StatusCode::CREATED
    );
    assert!(node.metric("switchyard_rate_limited_total").await >= 1.0);
    env.cleanup().await;
}
both_modes!(post_rate_limit_test, post_rate_limit);

/// A stream ends with `auth.expired` when its token expires.
async fn token_expiry_ends_stream(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let keys = env.keys().await;
    let short = keys.sign(&claims("alice", &tenant, now_secs() + 2));
    let mut s = node
        .sse(&format!("/events/users/alice?token={short}"), None)
        .await;
    let ev = s
        .next_of("auth.expired", secs(10))
        .await
        .expect("auth.expired");
    assert!(ev.json()["reason"]
        .as_str()
        .expect("reason")
        .contains("expired"));
    assert!(s.next(secs(5)).await.is_none() && s.ended, "stream closed");
    env.cleanup().await;
}
both_transports!(token_expiry_ends_stream_test, token_expiry_ends_stream);

/// Two tenants with the same user ids and topic names: nothing crosses.
async fn tenants_never_cross(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let t1 = a.tenant().await;
    let t2 = a.tenant().await;
    let u1 = env.token("u1", &t1).await;
    let u1_other = env.token("u1", &t2).await;
    let u2 = env.token("u2", &t1).await;
    let u2_other = env.token("u2", &t2).await;
    let mut s1 = a.sse(&format!("/events/users/u1?token={u1}"), None).await;
    let mut s2 = a
        .sse(&format!("/events/users/u1?token={u1_other}"), None)
        .await;
    assert_eq!(
        s1.next(secs(10)).await.expect("snapshot").json()["data"]["unread"],
        0
    );
    assert_eq!(
        s2.next(secs(10)).await.expect("snapshot").json()["data"]["unread"],
        0
    );
    for i in 0..10 {
        assert_eq!(
            send(b, &u2, "u2", "u1", &format!("t1 #{i}")).await.status(),
            StatusCode::CREATED
        );
        if i % 2 == 0 {
            assert_eq!(
                send(b, &u2_other, "u2", "u1", &format!("t2 #{i}"))
                    .await
                    .status(),
                StatusCode::CREATED
            );
        }
        b.publish(&t1, "global", "note", json!({"t": 1})).await;
        b.publish(&t2, "global", "note", json!({"t": 2})).await;
    }
    for _ in 0..20 {
        let ev = s1.next_data(secs(10)).await.expect("t1 event");
        assert_eq!(ev.json()["tenant"], t1.as_str());
    }
    for _ in 0..10 {
        let ev = s2.next_data(secs(10)).await.expect("t2 event");
        assert_eq!(ev.json()["tenant"], t2.as_str());
    }
    assert!(
        s2.next_data(Duration::from_millis(300)).await.is_none(),
        "t2 got more than its own"
    );
    let h1: Value = a
        .http
        .get(format!("{}/api/users/u1/messages", a.url))
        .bearer_auth(&u1)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let h2: Value = a
        .http
        .get(format!("{}/api/users/u1/messages", a.url))
        .bearer_auth(&u1_other)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(h1["messages"].as_array().expect("array").len(), 10);
    assert_eq!(h2["messages"].as_array().expect("array").len(), 5);
    assert!(h2["messages"]
        .as_array()
        .expect("array")
        .iter()
        .all(|m| m["body"].as_str().expect("body").starts_with("t2")));
    let snap1 = a
        .sse(&format!("/events/users/u1?token={u1}"), None)
        .await
        .next(secs(10))
        .await
        .expect("snap");
    let snap2 = a
        .sse(&format!("/events/users/u1?token={u1_other}"), None)
        .await
        .next(secs(10))
        .await
        .expect("snap");
    assert_eq!(snap1.json()["data"]["unread"], 10);
    assert_eq!(snap2.json()["data"]["unread"], 5);
    env.cleanup().await;
}
both_modes!(tenants_never_cross_test, tenants_never_cross);

/// Tokens in every carrier, the admin token and the JWT secret never reach the log.
async fn no_secrets_in_logs(mode: Mode) {
    let env = Env::new(mode).await.set(
        "SWITCHYARD_JWT_SECRET",
        "jwt-secret-that-must-not-leak-0123456789",
    );
    // Every level, every crate: nothing below `trace` is filtered out.
    let node = Node::start(&env, &[("RUST_LOG", "trace")]).await;
    let tenant = node.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let keys = Keys::new(b"jwt-secret-that-must-not-leak-0123456789");
    let forged = Keys::new(b"x").sign(&claims("alice", &tenant, now_secs() + 60));
    let expired = keys.sign(&claims("alice", &tenant, now_secs() - 10));
    // Tokens in URLs down error paths: history, an unknown route, a refused
    // stream, an expired token, a head over the limit.
    for path in [
        format!("/api/topics/user:alice/events?tenant={tenant}&after=0&token={alice}"),
        format!("/no/such/route?token={alice}"),
        format!("/events?tenant=no-such-tenant&topic=a:1&token={alice}"),
        format!("/events/users/bob?token={alice}"),
        format!("/events/users/alice?token={expired}"),
        format!("/api/topics/user:alice/events?tenant={tenant}&after=x&token={alice}"),
    ] {
        let r = node
            .http
            .get(format!("{}{path}", node.url))
            .send()
            .await
            .expect("request");
        assert!(
            r.status().is_success() || r.status().is_client_error(),
            "{path}"
        );
    }
    let r = node
        .http
        .get(format!("{}/events/users/alice?token={alice}", node.url))
        .header("x-pad", "p".repeat(20 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let _ = Sse::connect(
        &format!("{}/events/users/alice?token={alice}", node.url),
        None,
        &[],
    )
    .await;
    let _ = Sse::connect(
        &format!("{}/events/users/alice", node.url),
        None,
        &[("cookie", &format!("switchyard_token={alice}"))],
    )
    .await;
    let _ = Sse::connect(
        &format!("{}/events/users/alice?token={forged}", node.url),
        None,
        &[],
    )
    .await;
    let _ = send(&node, &alice, "alice", "bob", "hello").await;
    let _ = node
        .http
        .get(format!("{}/admin/tenants", node.url))
        .bearer_auth("wrong-admin-token-xyz")
        .send()
        .await;
    assert!(
        keys.verify(&alice, now_secs()).is_ok(),
        "the test uses the server's secret"
    );
    let log = node.log_text();
    assert!(!log.is_empty());
    for secret in [
        alice.as_str(),
        forged.as_str(),
        expired.as_str(),
        support::ADMIN,
        "jwt-secret-that-must-not-leak-0123456789",
        "wrong-admin-token-xyz",
    ] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
    for token in [&alice, &forged, &expired] {
        let sig = token.rsplit('.').next().expect("signature");
        assert!(!log.contains(sig), "log leaks a token signature");
    }
    env.cleanup().await;
}
both_modes!(no_secrets_in_logs_test, no_secrets_in_logs);

/// With `SWITCHYARD_QUERY_TOKENS=false` a token in the URL is refused (401,
/// saying where to put it instead), even beside a valid cookie; the cookie
/// and the header keep working.
async fn query_tokens_can_be_refused(mode: Mode) {
    let env = Env::new(mode).await.set("SWITCHYARD_QUERY_TOKENS", "false");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let cookie = format!("switchyard_token={alice}");
    for (path, headers) in [
        (format!("/events/users/alice?token={alice}"), vec![]),
        (
            format!("/events/users/alice?token={alice}"),
            vec![("cookie", cookie.as_str())],
        ),
        (
            format!("/api/topics/user:alice/events?after=0&token={alice}"),
            vec![],
        ),
    ] {
        let mut req = node.http.get(format!("{}{path}", node.url));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "query_token_refused", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("cookie"),
            "{body}"
        );
    }
    assert_eq!(
        stream_status(&node, "/events/users/alice", &[("cookie", &cookie)]).await,
        StatusCode::OK
    );
    let r = node
        .http
        .get(format!("{}/api/topics/user:alice/events?after=0", node.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    env.cleanup().await;
}
both_modes!(
    query_tokens_can_be_refused_test,
    query_tokens_can_be_refused
);

/// An empty or short `jwt_secret` file in the data dir, or a short
/// `SWITCHYARD_JWT_SECRET`: the node does not start, exits non-zero
/// without a panic, and says in one line what is wrong and what to do; the
/// file is left as it was and no secret is printed. 32 bytes start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwt_secrets_refuse_the_start() {
    let env = Env::new(Mode::Embedded).await;
    let file = env.data_dir.join("jwt_secret");
    for (content, says) in [("", "is empty"), ("too-short\n", "shorter than 32 bytes")] {
        std::fs::write(&file, content).expect("write the secret file");
        let out = support::start_refused(&env, &[]).await;
        let line = out
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no line says {says:?}:\n{out}"));
        assert!(
            line.contains(&file.display().to_string()) && line.contains("delete it"),
            "{line}"
        );
        assert!(!out.contains("too-short"), "the secret is printed:\n{out}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), content);
    }
    std::fs::remove_file(&file).expect("remove");
    let short = "0123456789abcdef0123456789";
    let out = support::start_refused(&env, &[("SWITCHYARD_JWT_SECRET", short)]).await;
    assert!(
        out.lines()
            .any(|l| l.contains("SWITCHYARD_JWT_SECRET must be at least 32 bytes")),
        "{out}"
    );
    assert!(!out.contains(short), "the secret is printed:\n{out}");
    let node = Node::start(&env, &[("SWITCHYARD_JWT_SECRET", &"k".repeat(32))]).await;
    drop(node);
    env.cleanup().await;
}

/// In cluster mode the secret shared through Postgres is held to the same
/// bound: a short one (put there by hand) stops the node at start with one
/// line that says so, without printing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_shared_secret_refuses_the_start() {
    let env = Env::new(Mode::Cluster).await;
    drop(Node::start(&env, &[]).await);
    let url = env.database_url.clone().expect("cluster mode");
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("postgres");
    sqlx::query("UPDATE secrets SET value = 'short-shared-secret' WHERE name = 'jwt'")
        .execute(&mut c)
        .await
        .expect("update");
    let out = support::start_refused(&env, &[]).await;
    assert!(
        out.lines()
            .any(|l| l.contains("JWT secret is 19 bytes, fewer than 32")),
        "{out}"
    );
    assert!(
        !out.contains("short-shared-secret"),
        "the secret is printed:\n{out}"
    );
    env.cleanup().await;
}

/// The data dir the node creates is its user's only (700), the database
/// and its `-wal` and `-shm` files and the JWT secret 600, whatever the
/// umask; a database file made readable by others is tightened again at
/// start; an existing data dir others can write is left alone but warned
/// about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let env = Env::new(Mode::Embedded).await;
    let dir = env.data_dir.join("fresh");
    let dir_s = dir.display().to_string();
    let mut node = Node::start(&env, &[("SWITCHYARD_DATA_DIR", &dir_s)]).await;
    let tenant = node.tenant().await;
    node.publish(&tenant, "a:1", "t", json!({})).await;
    assert_eq!(mode(&dir), 0o700, "the data dir");
    for f in [
        "switchyard.db",
        "switchyard.db-wal",
        "switchyard.db-shm",
        "jwt_secret",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    node.sigterm();
    assert!(node.wait_exit(secs(30)).await.success());
    let db = dir.join("switchyard.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let node = Node::start(&env, &[("SWITCHYARD_DATA_DIR", &dir_s)]).await;
    assert_eq!(mode(&db), 0o600, "the database file is tightened");
    drop(node);

    let open = env.data_dir.join("shared");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let open_s = open.display().to_string();
    let node = Node::start(&env, &[("SWITCHYARD_DATA_DIR", &open_s)]).await;
    let log = node.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("can be written by other users") && l.contains("shared")),
        "{log}"
    );
    assert_eq!(mode(&open), 0o777, "an existing data dir is left as it is");
    assert_eq!(mode(&open.join("switchyard.db")), 0o600);
    drop(node);
    env.cleanup().await;
}

const METRICS_TOKEN: &str = "scrape-only-token-123";

/// `GET /metrics` with `token` as a bearer (or none): status and body.
async fn scrape(node: &Node, token: Option<&str>) -> (StatusCode, String) {
    let mut req = node.http.get(format!("{}/metrics", node.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    (r.status(), r.text().await.expect("body"))
}

/// `/metrics` names every tenant (its series carry a tenant label), so it
/// asks for the metrics token or the admin token: anonymous and wrong
/// tokens get 401 naming no tenant; the metrics token opens nothing else;
/// `SWITCHYARD_METRICS_PUBLIC=true` serves it to anyone as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_METRICS_TOKEN", METRICS_TOKEN);
    let node = env.start().await;
    let tenant = node.tenant().await;
    // A stream of the tenant puts it in the series.
    let alice = env.token("alice", &tenant).await;
    let _stream = node
        .sse(&format!("/events/users/alice?token={alice}"), None)
        .await;
    let (status, body) = scrape(&node, Some(support::ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&tenant),
        "the tenant is in the series: {body}"
    );
    for token in [None, Some("wrong-token-12345"), Some(alice.as_str())] {
        let (status, body) = scrape(&node, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert!(!body.contains(&tenant), "{body}");
        let body: Value = serde_json::from_str(&body).expect("the error body");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let (status, body) = scrape(&node, None).await;
    assert!(
        body.contains("SWITCHYARD_METRICS_TOKEN"),
        "{status}: {body}"
    );
    let (status, body) = scrape(&node, Some(METRICS_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&tenant), "{body}");
    // The metrics token opens nothing else.
    for (method, path, body) in [
        ("GET", "/admin/tenants".to_string(), None),
        ("GET", "/admin/plugins".to_string(), None),
        (
            "POST",
            "/api/events".to_string(),
            Some(json!({"tenant": tenant, "topic": "a:1", "type": "t", "data": {}})),
        ),
        (
            "GET",
            format!("/api/topics/a:1/events?tenant={tenant}&after=0"),
            None,
        ),
    ] {
        let url = format!("{}{path}", node.url);
        let mut req = match method {
            "GET" => node.http.get(url),
            _ => node.http.post(url),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    drop(node);
    env.cleanup().await;

    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_METRICS_PUBLIC", "true");
    let node = env.start().await;
    let (status, body) = scrape(&node, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("switchyard_"), "{body}");
    drop(node);
    env.cleanup().await;
}
