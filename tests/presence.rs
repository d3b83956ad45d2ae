//! Presence: a topic's occupancy (`T~occupancy`) as retained events in the
//! tenant's log, counted across nodes; derived topics refused for
//! publishing; `user:` topics without presence.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Node, Sse, SseEvent};

/// A short presence interval, so tests wait little.
const INTERVAL_MS: u64 = 200;

fn env_of(env: Env) -> Env {
    env.set("SWITCHYARD_PRESENCE_INTERVAL_MS", INTERVAL_MS)
}

/// A stream of `path` on `node`, with `token` if any.
async fn stream(node: &Node, path: &str, token: Option<&str>, last: Option<u64>) -> Sse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    Sse::connect(&format!("{}{path}", node.url), last, &headers)
        .await
        .unwrap_or_else(|(s, b)| panic!("stream {path} refused: {s} {b}"))
}

/// Reads `occupancy` events until one says `streams`/`users`; returns it
/// and every occupancy event seen on the way.
async fn until_counts(s: &mut Sse, streams: u64, users: u64) -> (SseEvent, Vec<SseEvent>) {
    let deadline = tokio::time::Instant::now() + secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = s
            .next_of("occupancy", left)
            .await
            .unwrap_or_else(|| panic!("no occupancy {streams}/{users}; saw {seen:?}"));
        let d = ev.json()["data"].clone();
        seen.push(ev.clone());
        if d == json!({"streams": streams, "users": users}) {
            return (ev, seen);
        }
    }
}

async fn occupancy_across_nodes(mode: Mode) {
    let env = env_of(Env::new(mode).await);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let u1 = env.token("u1", &tenant).await;
    let u2 = env.token("u2", &tenant).await;
    let mut watch = stream(
        a,
        &format!("/events?tenant={tenant}&topic=room:1~occupancy"),
        None,
        None,
    )
    .await;
    let path = format!("/events?tenant={tenant}&topic=room:1");
    // u1 twice (one stream per node), u2 once, one anonymous reader.
    let s1 = stream(a, &path, Some(&u1), None).await;
    let s2 = stream(b, &path, Some(&u1), None).await;
    let s3 = stream(b, &path, Some(&u2), None).await;
    let s4 = stream(a, &path, None, None).await;
    let (ev, _) = until_counts(&mut watch, 4, 2).await;
    // An occupancy event is an event of the log like any other.
    let j = ev.json();
    assert_eq!(j["topic"], "room:1~occupancy");
    assert_eq!(j["type"], "occupancy");
    assert_eq!(j["id"].as_u64(), Some(ev.seq()));
    drop(s2);
    until_counts(&mut watch, 3, 2).await;
    drop((s1, s3, s4));
    until_counts(&mut watch, 0, 0).await;
    // Nothing changes: nothing more is appended.
    assert!(
        watch
            .next_of("occupancy", Duration::from_millis(4 * INTERVAL_MS))
            .await
            .is_none(),
        "occupancy appended without a change"
    );
    env.cleanup().await;
}
both_modes!(occupancy_across_nodes, occupancy_across_nodes);

async fn occupancy_snapshot_and_resume(mode: Mode) {
    let env = env_of(Env::new(mode).await);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let u1 = env.token("u1", &tenant).await;
    let u2 = env.token("u2", &tenant).await;
    let occ = format!("/events?tenant={tenant}&topic=room:2~occupancy");
    let path = format!("/events?tenant={tenant}&topic=room:2");
    let mut watch = stream(a, &occ, None, None).await;
    let _s1 = stream(b, &path, Some(&u1), None).await;
    let (first, _) = until_counts(&mut watch, 1, 1).await;
    // A new stream of the occupancy topic starts with it as its snapshot.
    let mut late = stream(b, &occ, None, None).await;
    let snap = late.next_of("snapshot", secs(10)).await.expect("snapshot");
    let j = snap.json();
    assert_eq!(j["topic"], "room:2~occupancy");
    assert_eq!(j["data"], json!({"streams": 1, "users": 1}));
    assert_eq!(j["as_of"].as_u64(), Some(first.seq()));
    let cursor = snap.seq();
    drop(late);
    // Changes while it is away.
    let s2 = stream(a, &path, Some(&u2), None).await;
    let (up, _) = until_counts(&mut watch, 2, 2).await;
    drop(s2);
    let (down, _) = until_counts(&mut watch, 1, 1).await;
    // Resuming gets exactly what it missed, on either node.
    for node in [a, b] {
        let mut back = stream(node, &occ, None, Some(cursor)).await;
        let got: Vec<u64> = back
            .take(2, secs(10))
            .await
            .iter()
            .map(|e| e.seq())
            .collect();
        assert_eq!(got, vec![up.seq(), down.seq()]);
        assert!(back.next_data(Duration::from_millis(500)).await.is_none());
    }
    env.cleanup().await;
}
both_modes!(occupancy_snapshot_and_resume, occupancy_snapshot_and_resume);

async fn presence_topics_are_read_only(mode: Mode) {
    let env = env_of(Env::new(mode).await);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let publish = |body: Value, token: Option<String>| {
        let req = node
            .http
            .post(format!("{}/api/events", node.url))
            .bearer_auth(token.unwrap_or_else(|| support::ADMIN.to_string()))
            .json(&body);
        async move {
            let r = req.send().await.expect("request");
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    for topic in ["room:1~occupancy", "room:1~members"] {
        let (s, code) = publish(
            json!({"tenant": tenant, "topic": topic, "type": "note", "data": {}}),
            None,
        )
        .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::FORBIDDEN, "presence_topic")
        );
    }
    // A publisher token whose pattern matches the name is refused too.
    let svc = env.service_token("svc", &tenant, "room:*").await;
    let (s, code) = publish(
        json!({"tenant": tenant, "topic": "room:1~occupancy", "type": "note", "data": {}}),
        Some(svc),
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::FORBIDDEN, "presence_topic")
    );
    for kind in [
        "occupancy",
        "member.joined",
        "member.left",
        "members.truncated",
        "presence.reset",
    ] {
        let (s, code) = publish(
            json!({"tenant": tenant, "topic": "room:1", "type": kind, "data": {}}),
            None,
        )
        .await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_type"),
            "{kind}"
        );
    }
    env.cleanup().await;
}
both_modes!(presence_topics_are_read_only, presence_topics_are_read_only);

async fn presence_is_read_like_its_topic(mode: Mode) {
    let env = env_of(Env::new(mode).await);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let u1 = env.token("u1", &tenant).await;
    let refused = |path: String, token: Option<String>| {
        let url = format!("{}{path}", node.url);
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            match Sse::connect(&url, None, &headers).await {
                Ok(_) => panic!("{path} accepted"),
                Err((s, body)) => (s, body),
            }
        }
    };
    // `user:` topics have no presence, not even for their user.
    for suffix in ["occupancy", "members"] {
        let (s, body) = refused(
            format!("/events?tenant={tenant}&topic=user:u1~{suffix}"),
            Some(u1.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("invalid_topic"), "{body}");
    }
    // Another tenant's broadcasts: refused as the topic itself is.
    let (s, _) = refused(
        format!("/events?tenant={tenant}&topic=tenant:other~occupancy"),
        Some(u1.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A user's own stream appends no presence for it: the tenant's log
    // stays empty (a fresh stream's opening frame carries its head, 0).
    let mine = stream(
        &node,
        &format!("/events/users/u1?tenant={tenant}"),
        Some(&u1),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    drop(mine);
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    let mut head = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=user:u1"),
        Some(&u1),
        None,
    )
    .await;
    let _ = head.next(Duration::from_millis(300)).await;
    assert_eq!(head.last_id.as_deref(), Some("0"));
    env.cleanup().await;
}
both_modes!(
    presence_is_read_like_its_topic,
    presence_is_read_like_its_topic
);

/// A client token of `user` with extra claims.
async fn token_with(env: &Env, user: &str, tenant: &str, extra: Value) -> String {
    let claims = switchyard::auth::Claims {
        sub: user.into(),
        tenant: tenant.into(),
        exp: switchyard::auth::now_secs() + 3600,
        iat: switchyard::auth::now_secs(),
    };
    let extra = extra.as_object().cloned().expect("claims object");
    env.keys().await.sign_with_claims(&claims, &extra)
}

/// Member events (`member.*`, `members.*`) read until none comes for
/// `quiet`.
async fn member_events(s: &mut Sse, quiet: Duration) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(ev) = s.next(quiet).await {
        if ev.event.starts_with("member") {
            out.push(ev);
        }
    }
    out
}

fn summary(evs: &[SseEvent]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| {
            let d = &e.json()["data"];
            (
                e.event.clone(),
                d["user"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const LINGER_MS: u64 = 2_000;

async fn members_join_and_leave_once(mode: Mode) {
    let env = env_of(Env::new(mode).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_LINGER_MS", LINGER_MS);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let u1 = token_with(
        &env,
        "u1",
        &tenant,
        json!({"name": "Ann", "email": "ann@example.com"}),
    )
    .await;
    let u2 = token_with(&env, "u2", &tenant, json!({"name": "Bob"})).await;
    let members = format!("/events?tenant={tenant}&topic=room:1~members");
    let path = format!("/events?tenant={tenant}&topic=room:1");
    let mut watch = stream(a, &members, None, None).await;
    let mut occ = stream(
        b,
        &format!("/events?tenant={tenant}&topic=room:1~occupancy"),
        None,
        None,
    )
    .await;
    // u1 on both nodes, with a `name` in the query that must not count.
    let s1 = stream(a, &format!("{path}&name=Mallory"), Some(&u1), None).await;
    let s2 = stream(b, &path, Some(&u1), None).await;
    let s3 = stream(b, &path, Some(&u2), None).await;
    let joined = member_events(&mut watch, secs(2)).await;
    assert_eq!(
        summary(&joined),
        vec![
            ("member.joined".to_string(), "u1".to_string()),
            ("member.joined".to_string(), "u2".to_string()),
        ]
    );
    assert_eq!(joined[0].json()["data"]["claims"], json!({"name": "Ann"}));
    assert_eq!(joined[1].json()["data"]["claims"], json!({"name": "Bob"}));
    // A new stream of the members topic starts with the set.
    let mut late = stream(b, &members, None, None).await;
    let snap = late.next_of("snapshot", secs(10)).await.expect("snapshot");
    let set = &snap.json()["data"];
    assert_eq!(
        set["members"],
        json!([
            {"user": "u1", "claims": {"name": "Ann"}},
            {"user": "u2", "claims": {"name": "Bob"}},
        ]),
        "{set}"
    );
    assert_eq!(set["truncated"], false);
    let cursor = snap.seq();
    drop(late);
    // u1's stream on one node closes: u1 is still there on the other.
    drop(s1);
    // u2 reconnects within the linger (once its stream is counted out):
    // neither leaves nor joins again.
    drop(s3);
    until_counts(&mut occ, 1, 1).await;
    let s3 = stream(a, &path, Some(&u2), None).await;
    until_counts(&mut occ, 2, 2).await;
    assert!(
        member_events(&mut watch, Duration::from_millis(2 * LINGER_MS))
            .await
            .is_empty(),
        "a member event without a transition"
    );
    // u1's last stream closes: one leave, after the linger.
    drop(s2);
    let left = member_events(&mut watch, Duration::from_millis(2 * LINGER_MS)).await;
    assert_eq!(
        summary(&left),
        vec![("member.left".to_string(), "u1".to_string())]
    );
    // Resuming the members topic gets exactly that.
    let mut back = stream(a, &members, None, Some(cursor)).await;
    let got = back.take(1, secs(10)).await;
    assert_eq!(got[0].seq(), left[0].seq());
    let mut fresh = stream(a, &members, None, None).await;
    let snap = fresh.next_of("snapshot", secs(10)).await.expect("snapshot");
    assert_eq!(
        snap.json()["data"]["members"],
        json!([{"user": "u2", "claims": {"name": "Bob"}}])
    );
    drop(s3);
    env.cleanup().await;
}
both_modes!(members_join_and_leave_once, members_join_and_leave_once);

async fn members_truncate_past_the_cap(mode: Mode) {
    let env = env_of(Env::new(mode).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_LINGER_MS", 200)
        .set("SWITCHYARD_PRESENCE_MAX_MEMBERS", 1);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let members = format!("/events?tenant={tenant}&topic=room:9~members");
    let path = format!("/events?tenant={tenant}&topic=room:9");
    let mut watch = stream(a, &members, None, None).await;
    let u1 = env.token("u1", &tenant).await;
    let u2 = env.token("u2", &tenant).await;
    let u3 = env.token("u3", &tenant).await;
    let s1 = stream(a, &path, Some(&u1), None).await;
    let got = member_events(&mut watch, secs(1)).await;
    assert_eq!(summary(&got), vec![("member.joined".into(), "u1".into())]);
    let s2 = stream(b, &path, Some(&u2), None).await;
    let got = member_events(&mut watch, secs(1)).await;
    assert_eq!(
        summary(&got),
        vec![("members.truncated".into(), String::new())]
    );
    let mut late = stream(b, &members, None, None).await;
    let snap = late.next_of("snapshot", secs(10)).await.expect("snapshot");
    assert_eq!(snap.json()["data"]["members"], json!([]), "{}", snap.data);
    assert_eq!(snap.json()["data"]["truncated"], true);
    // Everybody leaves: nothing to announce (the set was given up); the
    // next user after that joins a set again.
    drop((s1, s2));
    assert!(member_events(&mut watch, secs(2)).await.is_empty());
    let _s3 = stream(a, &path, Some(&u3), None).await;
    let got = member_events(&mut watch, secs(1)).await;
    assert_eq!(summary(&got), vec![("member.joined".into(), "u3".into())]);
    let mut fresh = stream(b, &members, None, None).await;
    let snap = fresh.next_of("snapshot", secs(10)).await.expect("snapshot");
    assert_eq!(snap.json()["data"]["truncated"], false);
    assert_eq!(snap.json()["data"]["members"][0]["user"], "u3");
    env.cleanup().await;
}
both_modes!(members_truncate_past_the_cap, members_truncate_past_the_cap);

/// A node that dies (SIGKILL) with 50 members on a topic: another node's
/// sweep counts its streams out when their leases expire, and each member
/// leaves once, within the linger plus the lease expiry plus the sweep
/// period (README, "Presence").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dead_node_members_leave_once() {
    const USERS: usize = 50;
    // Lease expiry 30 s, sweep period 5 s, the linger, and a tick to append.
    let bound = Duration::from_millis(30_000 + 5_000 + LINGER_MS + 1_000);
    let env = env_of(Env::new(Mode::Cluster).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_LINGER_MS", LINGER_MS);
    let mut nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let mut watch = stream(
        &nodes[1],
        &format!("/events?tenant={tenant}&topic=room:7~members&topic=room:7~occupancy"),
        None,
        None,
    )
    .await;
    let path = format!("/events?tenant={tenant}&topic=room:7");
    let mut streams = Vec::new();
    for i in 0..USERS {
        let user = format!("u{i}");
        let token = token_with(&env, &user, &tenant, json!({"name": user})).await;
        streams.push(stream(&nodes[0], &path, Some(&token), None).await);
    }
    let deadline = tokio::time::Instant::now() + secs(20);
    let mut joined = std::collections::HashSet::new();
    let mut full = false;
    while joined.len() < USERS || !full {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = watch
            .next(left)
            .await
            .unwrap_or_else(|| panic!("{} joined, full {full}", joined.len()));
        let d = ev.json()["data"].clone();
        match ev.event.as_str() {
            "member.joined" => {
                assert!(joined.insert(d["user"].as_str().expect("user").to_string()));
            }
            "occupancy" => full = d == json!({"streams": USERS, "users": USERS}),
            _ => {}
        }
    }
    nodes[0].kill().await;
    let killed = tokio::time::Instant::now();
    drop(streams);
    let mut left = std::collections::HashSet::new();
    let mut empty = false;
    while left.len() < USERS || !empty {
        let rest = (killed + bound).saturating_duration_since(tokio::time::Instant::now());
        let ev = watch.next(rest).await.unwrap_or_else(|| {
            panic!(
                "within {bound:?} of the kill: {} left, occupancy zero {empty}",
                left.len()
            )
        });
        let d = ev.json()["data"].clone();
        match ev.event.as_str() {
            "member.left" => {
                let user = d["user"].as_str().expect("user").to_string();
                assert!(joined.contains(&user), "{user} left without joining");
                assert!(left.insert(user.clone()), "{user} left twice");
            }
            "member.joined" => panic!("a join after the kill: {d}"),
            "occupancy" => empty = d == json!({"streams": 0, "users": 0}),
            _ => {}
        }
    }
    // Nothing more: no leave twice, no other decision.
    while let Some(ev) = watch.next(secs(6)).await {
        assert!(
            !ev.event.starts_with("member") && ev.event != "occupancy",
            "after the leaves: {} {}",
            ev.event,
            ev.data
        );
    }
    env.cleanup().await;
}

/// An embedded node restarts: no stream survived, so presence left from
/// the last run is reset (occupancy zero, a `member.left` per member)
/// before any stream opens, and a resumed reader sees that, then the new
/// joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_restart_resets_presence() {
    let env = env_of(Env::new(Mode::Embedded).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        // Longer than the shutdown: the members are still there at exit.
        .set("SWITCHYARD_PRESENCE_LINGER_MS", 30_000);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let watch_path = format!("/events?tenant={tenant}&topic=room:5~members&topic=room:5~occupancy");
    let path = format!("/events?tenant={tenant}&topic=room:5");
    let mut watch = stream(&node, &watch_path, None, None).await;
    let u1 = token_with(&env, "u1", &tenant, json!({"name": "Ann"})).await;
    let u2 = token_with(&env, "u2", &tenant, json!({"name": "Bob"})).await;
    let _s1 = stream(&node, &path, Some(&u1), None).await;
    let _s2 = stream(&node, &path, Some(&u2), None).await;
    until_counts(&mut watch, 2, 2).await;
    let joined = member_events(&mut watch, secs(1)).await;
    assert!(joined.is_empty() || joined.iter().all(|e| e.event == "member.joined"));
    node.sigterm();
    let mut node = node;
    let _ = watch.next_of("shutdown", secs(10)).await;
    let status = node.wait_exit(secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    let cursor: u64 = watch
        .last_id
        .as_deref()
        .expect("last id")
        .parse()
        .expect("numeric");
    let node = env.start().await;
    let mut back = stream(&node, &watch_path, None, Some(cursor)).await;
    let mut left = Vec::new();
    let mut occupancy = None;
    while let Some(ev) = back.next(secs(2)).await {
        match ev.event.as_str() {
            "member.left" => left.push(ev.json()["data"]["user"].as_str().map(str::to_string)),
            "occupancy" => occupancy = Some(ev.json()["data"].clone()),
            "member.joined" => panic!("a join before any stream: {}", ev.data),
            _ => {}
        }
    }
    left.sort();
    assert_eq!(left, vec![Some("u1".to_string()), Some("u2".to_string())]);
    assert_eq!(occupancy, Some(json!({"streams": 0, "users": 0})));
    // The new run's joins come after, and fold over the reset.
    let u3 = token_with(&env, "u3", &tenant, json!({"name": "Cy"})).await;
    let _s3 = stream(&node, &path, Some(&u3), None).await;
    let mut after = Vec::new();
    while let Some(ev) = back.next(secs(2)).await {
        let d = ev.json()["data"].clone();
        match ev.event.as_str() {
            "member.joined" => after.push(d["user"].clone()),
            "occupancy" => after.push(d),
            _ => {}
        }
    }
    assert_eq!(after, vec![json!("u3"), json!({"streams": 1, "users": 1})]);
    let mut fresh = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=room:5~members"),
        None,
        None,
    )
    .await;
    let snap = fresh.next_of("snapshot", secs(10)).await.expect("snapshot");
    assert_eq!(
        snap.json()["data"]["members"],
        json!([{"user": "u3", "claims": {"name": "Cy"}}])
    );
    // The tenant's lifecycle says the topic was vacated by the restart, then
    // occupied again.
    let mut life = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=tenant:{tenant}~lifecycle"),
        Some(support::ADMIN),
        Some(cursor),
    )
    .await;
    let got = lifecycle_events(&mut life, secs(1)).await;
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(_, k, w)| (k.as_str(), w.as_str()))
        .collect();
    // (Run one's events appended in the batch of the cursor's come first.)
    let at = kinds
        .iter()
        .position(|k| *k == ("topic.vacated", "room:5"))
        .unwrap_or_else(|| panic!("no topic.vacated: {kinds:?}"));
    let mut rest = kinds[at + 1..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        vec![("topic.occupied", "room:5"), ("user.online", "u3")]
    );
    env.cleanup().await;
}

/// `GET /api/topics/{topic}/members`: the member set by user id, paginated,
/// and the counts, read like the topic.
async fn members_over_rest(mode: Mode) {
    let env = env_of(Env::new(mode).await).set("SWITCHYARD_PRESENCE_MEMBERS", "room:*");
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=room:4");
    let mut occ = stream(
        b,
        &format!("/events?tenant={tenant}&topic=room:4~occupancy"),
        None,
        None,
    )
    .await;
    let mut open = Vec::new();
    for (i, user) in ["u3", "u1", "u2"].iter().enumerate() {
        let token = token_with(&env, user, &tenant, json!({"name": user.to_uppercase()})).await;
        let node = if i % 2 == 0 { a } else { b };
        open.push(stream(node, &path, Some(&token), None).await);
    }
    open.push(stream(a, &path, None, None).await);
    until_counts(&mut occ, 4, 3).await;
    let u1 = env.token("u1", &tenant).await;
    let get = |node: &support::Node, query: String, token: Option<String>| {
        let req = node
            .http
            .get(format!("{}/api/topics/{query}", node.url))
            .bearer_auth(token.unwrap_or_else(|| support::ADMIN.to_string()));
        async move {
            let r = req.send().await.expect("request");
            let status = r.status();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (s, first) = get(
        b,
        format!("room:4/members?tenant={tenant}&limit=2"),
        Some(u1.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["occupancy"], json!({"streams": 4, "users": 3}));
    assert_eq!(
        first["members"],
        json!([
            {"user": "u1", "claims": {"name": "U1"}},
            {"user": "u2", "claims": {"name": "U2"}},
        ])
    );
    assert_eq!(first["next_after"], "u2");
    assert_eq!(first["truncated"], false);
    assert!(first["members_as_of"].as_u64().is_some());
    let (s, rest) = get(a, format!("room:4/members?tenant={tenant}&after=u2"), None).await;
    assert_eq!(s, StatusCode::OK, "{rest}");
    assert_eq!(
        rest["members"],
        json!([{"user": "u3", "claims": {"name": "U3"}}])
    );
    assert_eq!(rest["next_after"], Value::Null);
    // A topic without presence yet: zero and nobody.
    let (s, none) = get(a, format!("room:none/members?tenant={tenant}"), None).await;
    assert_eq!(s, StatusCode::OK, "{none}");
    assert_eq!(none["occupancy"], json!({"streams": 0, "users": 0}));
    assert_eq!(none["members"], json!([]));
    // Read like the topic: another tenant's, a user's, a presence topic.
    let (s, _) = get(
        a,
        format!("tenant:other/members?tenant={tenant}"),
        Some(u1.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for topic in ["user:u1", "room:4~members"] {
        let (s, body) = get(
            a,
            format!("{topic}/members?tenant={tenant}"),
            Some(u1.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{topic}: {body}");
        assert_eq!(body["error"]["code"], "invalid_topic");
    }
    let (s, _) = get(a, format!("room:4/members?tenant={tenant}&limit=0"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    drop(open);
    env.cleanup().await;
}
both_modes!(members_over_rest, members_over_rest);

/// Lifecycle events of `tenant:{slug}~lifecycle`, read with kind and topic
/// or user, until none comes for `quiet`.
async fn lifecycle_events(s: &mut Sse, quiet: Duration) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    while let Some(ev) = s.next(quiet).await {
        if ev.event.starts_with("topic.") || ev.event.starts_with("user.") {
            let d = &ev.json()["data"];
            let who = d["topic"].as_str().or(d["user"].as_str()).unwrap_or("");
            out.push((ev.seq(), ev.event.clone(), who.to_string()));
        }
    }
    out
}

/// The tenant's lifecycle topic: a topic's first stream and last one gone,
/// a user's first stream of the tenant and last one gone (plus the linger),
/// each once across nodes; read by a backend with exact resume.
async fn tenant_lifecycle(mode: Mode) {
    let env = env_of(Env::new(mode).await).set("SWITCHYARD_PRESENCE_LINGER_MS", 500);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let life = format!("/events?tenant={tenant}&topic=tenant:{tenant}~lifecycle");
    // A client token may not read it: it names every user.
    let u1 = env.token("u1", &tenant).await;
    let refused = Sse::connect(
        &format!("{}{life}", a.url),
        None,
        &[("authorization", &format!("Bearer {u1}"))],
    )
    .await;
    assert_eq!(refused.err().map(|(s, _)| s), Some(StatusCode::FORBIDDEN));
    let svc = env.service_token("backend", &tenant, "room:*").await;
    let mut backend = stream(a, &life, Some(&svc), None).await;
    let s1 = stream(
        a,
        &format!("/events?tenant={tenant}&topic=room:1"),
        Some(&u1),
        None,
    )
    .await;
    let s2 = stream(
        b,
        &format!("/events?tenant={tenant}&topic=room:2"),
        Some(&u1),
        None,
    )
    .await;
    let mut first = lifecycle_events(&mut backend, secs(2)).await;
    first.sort_by(|x, y| (&x.1, &x.2).cmp(&(&y.1, &y.2)));
    let kinds: Vec<(&str, &str)> = first
        .iter()
        .map(|(_, k, w)| (k.as_str(), w.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("topic.occupied", "room:1"),
            ("topic.occupied", "room:2"),
            ("user.online", "u1"),
        ]
    );
    let cursor = first.iter().map(|e| e.0).max().expect("events");
    drop((s1, s2));
    let mut second = lifecycle_events(&mut backend, secs(2)).await;
    let seqs: Vec<u64> = second.iter().map(|e| e.0).collect();
    second.sort_by(|x, y| (&x.1, &x.2).cmp(&(&y.1, &y.2)));
    let kinds: Vec<(&str, &str)> = second
        .iter()
        .map(|(_, k, w)| (k.as_str(), w.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("topic.vacated", "room:1"),
            ("topic.vacated", "room:2"),
            ("user.offline", "u1"),
        ]
    );
    // A backend resuming with Last-Event-ID, on either node, gets exactly
    // what it missed.
    for node in [a, b] {
        let mut back = stream(node, &life, Some(support::ADMIN), Some(cursor)).await;
        let got: Vec<u64> = lifecycle_events(&mut back, secs(1))
            .await
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(got, seqs);
    }
    env.cleanup().await;
}
both_modes!(tenant_lifecycle, tenant_lifecycle);

/// The consistency check: a transition the log lacks (here a member the
/// presence store holds whose `member.joined` was never appended, as when
/// a node dies between the decision and the append) and one it holds in
/// excess (a member the store no longer has) are each repaired by one
/// `presence.reset` carrying the whole set as the store holds it; the
/// members topic then folds to that set, and no further reset follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_repairs_a_members_topic() {
    let env = env_of(Env::new(Mode::Cluster).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_CHECK_MS", 300);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let mut watch = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=room:9~members"),
        None,
        None,
    )
    .await;
    let u1 = token_with(&env, "u1", &tenant, json!({"name": "Ann"})).await;
    let _s1 = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=room:9"),
        Some(&u1),
        None,
    )
    .await;
    let joined = watch
        .next_of("member.joined", secs(10))
        .await
        .expect("u1 joins");
    assert_eq!(joined.json()["data"]["user"], "u1");
    // Agreeing, the check says nothing.
    assert!(watch.next_of("presence.reset", secs(2)).await.is_none());

    let url = env.redis_url.clone().expect("cluster mode has Redis");
    let mut redis = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let members = format!("{}:presence:{{{tenant}:room:9}}:members", env.prefix);
    let _: () = redis::cmd("HSET")
        .arg(&members)
        .arg("ghost")
        .arg(r#"{"name":"Gus"}"#)
        .query_async(&mut redis)
        .await
        .expect("HSET");
    let reset = watch
        .next_of("presence.reset", secs(10))
        .await
        .expect("a reset for the missing join");
    let set = &reset.json()["data"];
    assert_eq!(
        set["members"],
        json!([
            {"user": "ghost", "claims": {"name": "Gus"}},
            {"user": "u1", "claims": {"name": "Ann"}},
        ]),
        "{set}"
    );
    assert_eq!(set["truncated"], false);
    assert!(set["v"].as_u64() > joined.json()["data"]["v"].as_u64());
    let listed = |node: &Node| {
        let req = node
            .http
            .get(format!(
                "{}/api/topics/room:9/members?tenant={tenant}",
                node.url
            ))
            .bearer_auth(support::ADMIN);
        async move {
            let body: Value = req
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            body["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m["user"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&node).await, ["ghost", "u1"]);
    assert!(
        watch.next_of("presence.reset", secs(2)).await.is_none(),
        "repaired once"
    );

    // A member the log holds in excess: the store lost `ghost`.
    let _: () = redis::cmd("HDEL")
        .arg(&members)
        .arg("ghost")
        .query_async(&mut redis)
        .await
        .expect("HDEL");
    let reset = watch
        .next_of("presence.reset", secs(10))
        .await
        .expect("a reset for the extra member");
    assert_eq!(
        reset.json()["data"]["members"],
        json!([{"user": "u1", "claims": {"name": "Ann"}}])
    );
    assert_eq!(listed(&node).await, ["u1"]);
    // A reader resuming from before the first reset folds to the same set.
    let mut resumed = stream(
        &node,
        &format!("/events?tenant={tenant}&topic=room:9~members"),
        None,
        joined.id.as_deref().and_then(|id| id.parse().ok()),
    )
    .await;
    let first = resumed
        .next_of("presence.reset", secs(5))
        .await
        .expect("first reset");
    let second = resumed
        .next_of("presence.reset", secs(5))
        .await
        .expect("second reset");
    assert_eq!(second.id, reset.id, "the same events, in order");
    assert!(second.json()["data"]["v"].as_u64() > first.json()["data"]["v"].as_u64());
    env.cleanup().await;
}

/// Joins and leaves racing the consistency check never make it reset:
/// what is on its way to the log is not a disagreement.
async fn the_check_keeps_quiet_under_churn(mode: Mode) {
    let env = env_of(Env::new(mode).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_LINGER_MS", 0)
        .set("SWITCHYARD_PRESENCE_CHECK_MS", 100);
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let mut watch = stream(
        &nodes[0],
        &format!("/events?tenant={tenant}&topic=room:5~members"),
        None,
        None,
    )
    .await;
    let path = format!("/events?tenant={tenant}&topic=room:5");
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(token_with(&env, &format!("u{i}"), &tenant, json!({})).await);
    }
    let until = tokio::time::Instant::now() + secs(4);
    let mut round = 0usize;
    while tokio::time::Instant::now() < until {
        let mut open = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let node = &nodes[(i + round) % nodes.len()];
            open.push(stream(node, &path, Some(t), None).await);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(open);
        tokio::time::sleep(Duration::from_millis(100)).await;
        round += 1;
    }
    let mut resets = Vec::new();
    while let Some(ev) = watch.next(secs(2)).await {
        if ev.event == "presence.reset" {
            resets.push(ev.data);
        }
    }
    assert!(resets.is_empty(), "{round} rounds; resets: {resets:?}");
    env.cleanup().await;
}
both_modes!(
    the_check_keeps_quiet_under_churn,
    the_check_keeps_quiet_under_churn
);

/// 2,000 streams of 500 users (four each) open within about a second over
/// the nodes: occupancy converges to exactly 2,000 streams and 500 users,
/// each user joins once (no duplicate `member.joined`), and once they all
/// close, each leaves once and occupancy returns to zero.
async fn a_burst_of_streams_converges(mode: Mode) {
    const USERS: usize = 500;
    const PER_USER: usize = 4;
    let env = env_of(Env::new(mode).await)
        .set("SWITCHYARD_PRESENCE_MEMBERS", "room:*")
        .set("SWITCHYARD_PRESENCE_LINGER_MS", 0);
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let mut watch = stream(
        &nodes[0],
        &format!("/events?tenant={tenant}&topic=room:8~members&topic=room:8~occupancy"),
        None,
        None,
    )
    .await;
    let keys = env.keys().await;
    let path = format!("/events?tenant={tenant}&topic=room:8");
    // One client for the burst (a connection per stream all the same): a
    // client per stream loads the system's root certificates 2,000 times
    // before the later streams send their requests.
    let client = support::client_builder()
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let started = tokio::time::Instant::now();
    let opens = (0..USERS * PER_USER).map(|i| {
        let claims = switchyard::auth::Claims {
            sub: format!("u{}", i % USERS),
            tenant: tenant.clone(),
            exp: switchyard::auth::now_secs() + 3600,
            iat: switchyard::auth::now_secs(),
        };
        let token = keys.sign_with_claims(&claims, &serde_json::Map::new());
        let url = format!("{}{path}", nodes[i % nodes.len()].url);
        let client = client.clone();
        async move {
            let auth = format!("Bearer {token}");
            Sse::connect_with(&client, &url, None, &[("authorization", auth.as_str())])
                .await
                .unwrap_or_else(|(s, b)| panic!("stream {i} refused: {s} {b}"))
        }
    });
    let open: Vec<Sse> = futures_util::future::join_all(opens).await;
    let opened_in = started.elapsed();
    let mut joined = std::collections::HashSet::new();
    let mut counted = false;
    let deadline = tokio::time::Instant::now() + secs(30);
    while joined.len() < USERS || !counted {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = watch.next(left).await.unwrap_or_else(|| {
            panic!(
                "opened in {opened_in:?}; {} joined, counts reached {counted}",
                joined.len()
            )
        });
        let d = ev.json()["data"].clone();
        match ev.event.as_str() {
            "member.joined" => {
                let user = d["user"].as_str().expect("user").to_string();
                assert!(joined.insert(user.clone()), "{user} joined twice");
            }
            "occupancy" => counted = d == json!({"streams": USERS * PER_USER, "users": USERS}),
            "members.truncated" | "presence.reset" => panic!("{}: {d}", ev.event),
            _ => {}
        }
    }
    drop(open);
    let mut left = std::collections::HashSet::new();
    let mut empty = false;
    let deadline = tokio::time::Instant::now() + secs(30);
    while left.len() < USERS || !empty {
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = watch
            .next(rest)
            .await
            .unwrap_or_else(|| panic!("{} left, occupancy zero {empty}", left.len()));
        let d = ev.json()["data"].clone();
        match ev.event.as_str() {
            "member.left" => {
                let user = d["user"].as_str().expect("user").to_string();
                assert!(joined.contains(&user), "{user} left without joining");
                assert!(left.insert(user.clone()), "{user} left twice");
            }
            "member.joined" => panic!("a join after the close: {d}"),
            "occupancy" => empty = d == json!({"streams": 0, "users": 0}),
            _ => {}
        }
    }
    env.cleanup().await;
}
both_modes!(a_burst_of_streams_converges, a_burst_of_streams_converges);
