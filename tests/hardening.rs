//! What a stranger on the network or a hostile page could do with a node on
//! its default settings, each tried over real sockets: demo sign-in, the
//! anonymous stream budget, forged cookie writes, reserved event types, the
//! admin token's carriers, trickled bodies, idle HTTP/2 connections, and the
//! smaller holes (type lists, publisher patterns, bid status, cursors).

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Node, Sse, ADMIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn stream_status(node: &Node, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    match Sse::connect(&format!("{}{path}", node.url), None, headers).await {
        Ok(_) => (StatusCode::OK, String::new()),
        Err(e) => e,
    }
}

/// Opens a stream and keeps it, or answers why not.
async fn open(
    node: &Node,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Sse, (StatusCode, String)> {
    Sse::connect(&format!("{}{path}", node.url), None, headers).await
}

// ---- demo sign-in -----------------------------------------------------------

/// Demo sign-in hands anyone a token for any user of `demo`: off unless
/// `SWITCHYARD_DEMO_TOKENS=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_sign_in_is_off_unless_turned_on() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let r = node
        .post("/api/demo/token", &json!({"user": "alice"}))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("json");
    assert!(body.get("token").is_none(), "{body}");
    drop(node);

    let on = Node::start(&env, &[("SWITCHYARD_DEMO_TOKENS", "true")]).await;
    let r = on.post("/api/demo/token", &json!({"user": "alice"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    env.cleanup().await;
}

// ---- the anonymous budget ---------------------------------------------------

/// Anonymous readers have a budget of their own: filling the tenant's cap
/// with anonymous streams locks no signed-in user out, and one address can
/// hold only so many.
async fn anonymous_streams_have_their_own_budget(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_MAX_STREAMS_PER_TENANT", 4)
        .set("SWITCHYARD_MAX_STREAMS_PER_ADDRESS", 5)
        .set("SWITCHYARD_MAX_ANONYMOUS_STREAMS_PER_TENANT", 50);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let public = format!("/events?tenant={tenant}&topic=global");
    let mut held = Vec::new();
    for i in 0..5 {
        let s = open(&node, &public, &[]).await;
        assert!(s.is_ok(), "anonymous stream {i}: {:?}", s.err());
        held.push(s.expect("stream"));
    }
    // The address is full; the tenant's signed-in slots are untouched.
    let (status, body) = open(&node, &public, &[]).await.err().expect("refused");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body.contains("too_many_streams") && body.contains("address"),
        "{body}"
    );
    for user in ["alice", "bob", "carol", "dave"] {
        let token = env.token(user, &tenant).await;
        let auth = format!("Bearer {token}");
        let s = open(&node, &public, &[("authorization", &auth)]).await;
        assert!(s.is_ok(), "{user} is locked out: {:?}", s.err());
        held.push(s.expect("stream"));
    }
    // The tenant's signed-in cap still holds for users.
    let erin = format!("Bearer {}", env.token("erin", &tenant).await);
    let (status, _) = open(&node, &public, &[("authorization", &erin)])
        .await
        .err()
        .expect("full");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    drop(held);
    env.cleanup().await;
}
both_modes!(anonymous_budget, anonymous_streams_have_their_own_budget);

/// The tenant's anonymous budget holds across addresses; behind a trusted
/// proxy each client address (from `X-Forwarded-For`) counts on its own,
/// and a client cannot forge one through an untrusted peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_budget_per_tenant_and_per_forwarded_address() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_MAX_STREAMS_PER_ADDRESS", 1)
        .set("SWITCHYARD_MAX_ANONYMOUS_STREAMS_PER_TENANT", 3)
        .set("SWITCHYARD_TRUSTED_PROXIES", "127.0.0.1");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let public = format!("/events?tenant={tenant}&topic=global");
    let mut held = Vec::new();
    for i in 1..=3 {
        let xff = format!("198.51.100.{i}");
        held.push(
            open(&node, &public, &[("x-forwarded-for", &xff)])
                .await
                .expect("own address"),
        );
    }
    let (status, body) = open(&node, &public, &[("x-forwarded-for", "198.51.100.9")])
        .await
        .err()
        .expect("tenant's anonymous budget is full");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("anonymous"), "{body}");
    drop(held);
    env.cleanup().await;

    // Without a trusted proxy the header proves nothing: one address.
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_MAX_STREAMS_PER_ADDRESS", 1);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let public = format!("/events?tenant={tenant}&topic=global");
    let _one = open(&node, &public, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("first");
    let (status, _) = open(&node, &public, &[("x-forwarded-for", "198.51.100.2")])
        .await
        .err()
        .expect("same peer");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    env.cleanup().await;
}

// ---- forged cookie writes ---------------------------------------------------

async fn post_message(node: &Node, headers: &[(&str, &str)], body: &Value) -> (StatusCode, String) {
    let mut req = node
        .http
        .post(format!("{}/api/messages", node.url))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    (r.status(), r.text().await.unwrap_or_default())
}

/// A page on another site cannot write as a signed-in user: JSON is
/// recognised by its parsed type (not `text/plain; x=+json`, which a
/// browser sends cross-site without a preflight), and a write carried by
/// the cookie needs this server's own origin or a configured one.
async fn cookie_writes_need_an_allowed_origin(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_CORS_ORIGINS", "https://app.example");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let alice = env.token("alice", &tenant).await;
    let cookie = format!("switchyard_token={alice}");
    let msg = json!({"from": "alice", "to": "bob", "body": "hi", "product_id": "p-1"});
    let own = node.url.clone();

    let (s, b) = post_message(
        &node,
        &[
            ("cookie", &cookie),
            ("content-type", "text/plain; x=+json"),
            ("origin", &own),
        ],
        &msg,
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");

    let json_ct = ("content-type", "application/json");
    for evil in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let (s, b) = post_message(
            &node,
            &[("cookie", &cookie), json_ct, ("origin", evil)],
            &msg,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{evil}: {b}");
        assert!(b.contains("origin_refused"), "{b}");
    }
    let (s, b) = post_message(&node, &[("cookie", &cookie), json_ct], &msg).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no Origin: {b}");

    let (s, b) = post_message(
        &node,
        &[("cookie", &cookie), json_ct, ("origin", &own)],
        &msg,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "same origin: {b}");
    let (s, b) = post_message(
        &node,
        &[
            ("cookie", &cookie),
            json_ct,
            ("origin", "https://app.example"),
        ],
        &msg,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "configured origin: {b}");
    let bearer = format!("Bearer {alice}");
    let (s, b) = post_message(&node, &[("authorization", &bearer), json_ct], &msg).await;
    assert_eq!(s, StatusCode::CREATED, "a bearer token is no cookie: {b}");

    // Nothing refused was stored: three messages, from the three writes let in.
    let r = node
        .http
        .get(format!("{}/api/users/alice/messages", node.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(3), "{v}");
    env.cleanup().await;
}
both_modes!(cookie_writes, cookie_writes_need_an_allowed_origin);

// ---- reserved types ---------------------------------------------------------

/// Publishers cannot send the server's own control frames, which clients
/// act on (`auth.expired` stops a `switchyard.js` client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_event_types_are_refused() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    for kind in [
        "auth.expired",
        "heartbeat",
        "Heartbeat",
        "snapshot",
        "reset",
        "shutdown",
        "error",
        "open",
        "switchyard.anything",
    ] {
        let r = node
            .http
            .post(format!("{}/api/events", node.url))
            .bearer_auth(ADMIN)
            .json(&json!({"tenant": tenant, "topic": "feed:1", "type": kind, "data": {}}))
            .send()
            .await
            .expect("ok");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{kind}");
        let body = r.text().await.expect("body");
        assert!(
            body.contains("invalid_type") && body.contains("reserved"),
            "{body}"
        );
    }
    // A stream may still narrow to them (they filter nothing).
    let path = format!("/events?tenant={tenant}&topic=feed:1&events=note,heartbeat");
    assert_eq!(stream_status(&node, &path, &[]).await.0, StatusCode::OK);
    node.publish(&tenant, "feed:1", "note", json!({})).await;
    env.cleanup().await;
}

// ---- the admin token's carriers ---------------------------------------------

/// The admin token is taken only from `Authorization`: in a URL or a
/// cookie it leaks (logs, `Referer`); the old behaviour is a setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_only_in_the_authorization_header() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let get = |path: String, cookie: Option<String>| {
        let mut r = node.http.get(format!("{}{path}", node.url));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let r = get(format!("/admin/tenants?token={ADMIN}"), None)
        .await
        .expect("ok");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let text = r.text().await.expect("body");
    assert!(
        !text.contains(ADMIN),
        "the answer repeats the token: {text}"
    );
    let r = get(
        "/admin/tenants".into(),
        Some(format!("switchyard_token={ADMIN}")),
    )
    .await
    .expect("ok");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = node
        .http
        .get(format!("{}/admin/tenants", node.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    // Publishing as the admin through the query string is refused too.
    let tenant = node.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=user:alice&token={ADMIN}");
    assert_eq!(
        stream_status(&node, &path, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !node.log_text().contains(ADMIN),
        "the admin token reached the log"
    );
    drop(node);

    let old = Node::start(&env, &[("SWITCHYARD_ADMIN_TOKEN_HEADER_ONLY", "false")]).await;
    assert_eq!(stream_status(&old, &path, &[]).await.0, StatusCode::OK);
    env.cleanup().await;
}

// ---- slow bodies and idle connections ---------------------------------------

/// Reads what the server answers on `s` until it closes (or `within`).
async fn read_until_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A body trickled one byte at a time is cut off at the body deadline with
/// a 408, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_body_meets_the_body_deadline() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_BODY_TIMEOUT_MS", 1000);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let addr = node.url.trim_start_matches("http://").to_string();
    let body =
        json!({"tenant": tenant, "topic": "feed:slow", "type": "note", "data": {}}).to_string();
    let mut s = TcpStream::connect(&addr).await.expect("request");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("request");
    let started = Instant::now();
    let trickle = async {
        for b in body.as_bytes()[..body.len() - 1].iter() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > secs(15) {
                break;
            }
        }
    };
    trickle.await;
    let (answer, closed) = read_until_close(&mut s, secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed, "the connection stays open after the 408");
    assert!(started.elapsed() < secs(10), "took {:?}", started.elapsed());
    assert!(node.metric("switchyard_body_timeouts_total").await >= 1.0);
    let r = node
        .http
        .get(format!(
            "{}/api/topics/feed:slow/events?tenant={tenant}",
            node.url
        ))
        .send()
        .await
        .expect("request");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0), "{v}");
    env.cleanup().await;
}

/// An HTTP/2 connection with no stream is closed (`GOAWAY`) at the idle
/// limit, even though its peer would answer every ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_IDLE_TIMEOUT_MS", 1000);
    let node = env.start().await;
    let addr = node.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.expect("request");
    // Clear-text HTTP/2 with prior knowledge: the preface and empty SETTINGS.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("ok");
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("request");
    let started = Instant::now();
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(secs(8), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let kind = buf[3];
                if kind == 4 && buf[4] & 1 == 0 {
                    // Acknowledge the server's SETTINGS, as a live peer does.
                    let _ = s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                }
                if kind == 6 && buf[4] & 1 == 0 {
                    // Answer pings: the connection is alive, only idle.
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&buf[9..17]);
                    let _ = s.write_all(&ack).await;
                }
                frames.push(kind);
                buf.drain(..9 + len);
            }
        }
    })
    .await
    .is_ok();
    assert!(
        closed,
        "the idle connection is still open after {:?}",
        started.elapsed()
    );
    assert!(frames.contains(&7), "no GOAWAY among {frames:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    env.cleanup().await;
}

// ---- smaller holes ----------------------------------------------------------

/// `events=` takes a bounded list; ids past the largest there can be are
/// refused rather than wrapped to "from the start".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_lists_and_cursors_are_bounded() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let path = format!(
        "/events?tenant={tenant}&topic=feed:1&events={}",
        many.join(",")
    );
    let (status, body) = stream_status(&node, &path, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("invalid_events"), "{body}");

    node.publish(&tenant, "feed:1", "note", json!({"n": 1}))
        .await;
    let r = node
        .http
        .get(format!(
            "{}/api/topics/feed:1/events?tenant={tenant}&after=18446744073709551615",
            node.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let path = format!("/events?tenant={tenant}&topic=feed:1");
    let (status, body) =
        stream_status(&node, &path, &[("last-event-id", "18446744073709551615")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    env.cleanup().await;
}

/// A publisher pattern of a bare `*` is refused, and a prefix that is not
/// `user:…` does not reach users' private topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_patterns_do_not_reach_user_topics() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let r = node
        .http
        .post(format!("{}/admin/tokens", node.url))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant": tenant, "service": "cms", "publish": ["*"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "{}",
        r.text().await.expect("body")
    );
    let broad = env.service_token("cms", &tenant, "u*,feed:*").await;
    let publish = |topic: &str, token: &str| {
        node.http
            .post(format!("{}/api/events", node.url))
            .bearer_auth(token)
            .json(&json!({"tenant": tenant, "topic": topic, "type": "note", "data": {}}))
            .send()
    };
    let r = publish("user:alice", &broad).await.expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = publish("feed:1", &broad).await.expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);
    let users = env.service_token("notify", &tenant, "user:*").await;
    let r = publish("user:alice", &users).await.expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);
    env.cleanup().await;
}

/// A bid's status names nobody to a stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_status_names_nobody_to_strangers() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let product = support::product_at(&node, &tenant, 100).await;
    let bid = support::bid(&node, &product, "secret-bidder", 150).await;
    let anon = node
        .http
        .get(format!("{}/api/bids/{bid}", node.url))
        .send()
        .await
        .expect("request");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    assert!(!anon.text().await.expect("body").contains("secret-bidder"));
    let mallory = env.token("mallory", &tenant).await;
    let r = node
        .http
        .get(format!("{}/api/bids/{bid}", node.url))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.text().await.expect("body").contains("secret-bidder"));
    let owner = env.token("secret-bidder", &tenant).await;
    let r = node
        .http
        .get(format!("{}/api/bids/{bid}", node.url))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    env.cleanup().await;
}
