//! Exact resume: `Last-Event-ID` replay, the replay-to-live hand-over under a
//! steady publisher, resuming on another node, `reset` past retention, slow
//! and stalled readers.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Sse};

async fn replay_exactly(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=chat:1&topic=chat:2");
    let mut s = a.sse(&path, None).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "chat:1" } else { "chat:2" };
        ids.push(b.publish(&tenant, topic, "msg", json!({"i": i})).await);
        b.publish(&tenant, "chat:3", "msg", json!({"noise": i}))
            .await;
    }
    let got: Vec<u64> = s.take(6, secs(10)).await.iter().map(|e| e.seq()).collect();
    assert_eq!(got, ids);
    // The client leaves after the third event; more happens meanwhile.
    let cursor = ids[2];
    drop(s);
    let mut later = Vec::new();
    for i in 0..4 {
        later.push(
            b.publish(&tenant, "chat:2", "msg", json!({"late": i}))
                .await,
        );
    }
    // Header on one node, query parameter on the other: the same replay.
    let mut expected: Vec<u64> = ids[3..].to_vec();
    expected.extend(&later);
    let mut r1 = b.sse(&path, Some(cursor)).await;
    let got: Vec<u64> = r1
        .take(expected.len(), secs(10))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, expected);
    let mut r2 = a.sse(&format!("{path}&lastEventId={cursor}"), None).await;
    let got: Vec<u64> = r2
        .take(expected.len(), secs(10))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, expected);
    // And then live, with no duplicate.
    let next = b.publish(&tenant, "chat:1", "msg", json!("live")).await;
    assert_eq!(r1.next_data(secs(10)).await.expect("live").seq(), next);
    assert_eq!(r2.next_data(secs(10)).await.expect("live").seq(), next);
    // The REST log agrees with the stream.
    let rest: Value = a
        .get(&format!(
            "/api/topics/chat:2/events?tenant={tenant}&after={cursor}"
        ))
        .await
        .json()
        .await
        .expect("json");
    let rest_ids: Vec<u64> = rest["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    let want: Vec<u64> = [ids[3], ids[5]]
        .into_iter()
        .chain(later.iter().copied())
        .collect();
    assert_eq!(rest_ids, want);
    assert_eq!(rest["reset"], false);
    env.cleanup().await;
}
both_transports!(replay_exactly_test, replay_exactly);

/// A publisher at a steady rate while clients drop and resume many times:
/// every client ends with the exact sequence, no gap, no duplicate.
async fn resume_under_fire(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let total = 300u64;
    let publisher = {
        let node_url = nodes[nodes.len() - 1].url.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let http = support::client_builder().build().expect("client");
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0..total {
                tick.tick().await;
                let topic = if n % 3 == 0 { "feed:b" } else { "feed:a" };
                let r: Value = http
                    .post(format!("{node_url}/api/events"))
                    .bearer_auth(support::ADMIN)
                    .json(&json!({"tenant": tenant, "topic": topic, "type": "tick", "data": {"n": n}}))
                    .send()
                    .await
                    .expect("publish")
                    .json()
                    .await
                    .expect("json");
                ids.push(r["id"].as_u64().expect("id"));
            }
            ids
        })
    };
    let mut clients = Vec::new();
    for c in 0..4 {
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        let tenant = tenant.clone();
        clients.push(tokio::spawn(async move {
            let path = format!("/events?tenant={tenant}&topic=feed:a&topic=feed:b");
            let mut seen: Vec<u64> = Vec::new();
            // The tenant is fresh, so resuming from 0 is "from the start".
            let mut last: u64 = 0;
            let mut reconnects = 0;
            while seen.len() < total as usize {
                // Alternate nodes on every reconnect.
                let url = &urls[(c + reconnects) % urls.len()];
                let mut s = Sse::connect(&format!("{url}{path}"), Some(last), &[])
                    .await
                    .expect("connect");
                // Read a few events, then drop the connection abruptly.
                let take = 7 + (c * 5 + reconnects * 3) % 23;
                for _ in 0..take {
                    match s.next_data(secs(10)).await {
                        Some(ev) => {
                            let id = ev.seq();
                            seen.push(id);
                            last = id;
                        }
                        None => break,
                    }
                    if seen.len() >= total as usize {
                        break;
                    }
                }
                reconnects += 1;
            }
            (seen, reconnects)
        }));
    }
    let published = publisher.await.expect("publisher");
    for c in clients {
        let (seen, reconnects) = c.await.expect("client");
        assert!(reconnects > 5, "only {reconnects} reconnects");
        assert_eq!(
            seen, published,
            "client sequence differs after {reconnects} reconnects"
        );
    }
    env.cleanup().await;
}
both_transports!(resume_under_fire_test, resume_under_fire);

/// Past retention the stream says `reset` (naming the topic) and hands over
/// the current state instead of skipping silently.
async fn reset_past_retention(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_RETENTION_EVENTS", 5)
        .set("SWITCHYARD_RETENTION_SWEEP_MS", 50);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let first = b.retain(&tenant, "room:1", "state", json!({"v": 0})).await;
    b.publish(&tenant, "room:2", "msg", json!("kept")).await;
    let mut last = first;
    for v in 1..=20 {
        last = b.retain(&tenant, "room:1", "state", json!({"v": v})).await;
    }
    let url = format!("/api/topics/room:1/events?tenant={tenant}&after={first}");
    support::wait_for("retention trims room:1", secs(10), || async {
        let r: Value = a.get(&url).await.json().await.expect("json");
        r["reset"] == true
    })
    .await;
    let mut s = a
        .sse(
            &format!("/events?tenant={tenant}&topic=room:1&topic=room:2"),
            Some(first),
        )
        .await;
    let reset = s.next(secs(10)).await.expect("reset");
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json()["topic"], "room:1");
    let snap = s.next(secs(10)).await.expect("snapshot");
    assert_eq!(snap.event, "snapshot");
    assert_eq!(snap.json()["data"]["v"], 20);
    // room:2 was not trimmed: its event is replayed; room:1's old events are not.
    let ev = s.next_data(secs(10)).await.expect("room:2 replay");
    assert_eq!(ev.json()["topic"], "room:2");
    let next = b.retain(&tenant, "room:1", "state", json!({"v": 21})).await;
    assert!(next > last);
    let ev = s.next_data(secs(10)).await.expect("live");
    assert_eq!(ev.seq(), next);
    // An id this tenant never issued is reset too, not trusted.
    let mut s = a
        .sse(
            &format!("/events?tenant={tenant}&topic=room:2"),
            Some(next + 1000),
        )
        .await;
    let ev = s.next(secs(10)).await.expect("reset");
    assert_eq!(ev.event, "reset");
    // The reset names the tenant's head: `next`, or later when the topics'
    // occupancy (presence, kept for every topic) changed since.
    assert!(
        (next..next + 1000).contains(&ev.seq()),
        "reset at {}, after {next}",
        ev.seq()
    );
    assert!(a.metric("switchyard_resets_total").await >= 2.0);
    env.cleanup().await;
}
both_transports!(reset_past_retention_test, reset_past_retention);

/// A reader whose queue overflows falls back to the log and misses nothing;
/// a fast reader on the same topic is unaffected.
async fn slow_reader_catches_up(mode: Mode) {
    let env = Env::new(mode).await.set("SWITCHYARD_CLIENT_QUEUE", 4);
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=big:1");
    let mut fast = a.sse(&path, None).await;
    let mut slow = a.sse(&path, None).await;
    let pad = "x".repeat(64 * 1024);
    let n = 120;
    let fast_reader = tokio::spawn(async move {
        let evs = fast.take(n, secs(60)).await;
        evs.iter().map(|e| e.seq()).collect::<Vec<_>>()
    });
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            b.publish(&tenant, "big:1", "blob", json!({"i": i, "pad": pad}))
                .await,
        );
    }
    // The fast reader had everything while the slow one has not read a byte.
    assert_eq!(fast_reader.await.expect("fast"), ids);
    support::wait_for("slow reader's queue overflowed", secs(20), || async {
        a.metric("switchyard_client_lagged_total").await >= 1.0
    })
    .await;
    let got: Vec<u64> = slow
        .take(n, secs(60))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids);
    assert!(a.metric("switchyard_events_replayed_total").await >= 1.0);
    env.cleanup().await;
}
both_transports!(slow_reader_catches_up_test, slow_reader_catches_up);

/// A client that accepts no bytes is closed after the write deadline and
/// counted; it resumes with `Last-Event-ID` and has everything.
async fn stalled_reader_closed(mode: Mode) {
    use tokio::io::AsyncWriteExt;
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_CLIENT_QUEUE", 4)
        .set("SWITCHYARD_WRITE_DEADLINE_MS", 500);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let addr = node.url.trim_start_matches("http://").to_string();
    // A raw socket with a tiny receive buffer that never reads.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = sock
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    stalled
        .write_all(format!("GET /events?tenant={tenant}&topic=big:1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut fast = node
        .sse(&format!("/events?tenant={tenant}&topic=big:1"), None)
        .await;
    let pad = "y".repeat(64 * 1024);
    let mut ids = Vec::new();
    let mut published = 0;
    while node.metric("switchyard_write_deadline_closed_total").await < 1.0 {
        assert!(published < 400, "stalled client never closed");
        ids.push(
            node.publish(&tenant, "big:1", "blob", json!({"pad": pad}))
                .await,
        );
        published += 1;
        if published % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let got: Vec<u64> = fast
        .take(ids.len(), secs(60))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids, "fast reader affected");
    // The stalled connection is gone: the count of open streams drops to the fast one.
    support::wait_for("stalled connection closed", secs(10), || async {
        node.metric("switchyard_connections").await == 1.0
    })
    .await;
    let mut resumed = node
        .sse(&format!("/events?tenant={tenant}&topic=big:1"), Some(0))
        .await;
    let got: Vec<u64> = resumed
        .take(ids.len(), secs(60))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids);
    drop(stalled);
    env.cleanup().await;
}
both_modes!(stalled_reader_closed_test, stalled_reader_closed);

/// Many clients on many topics over two nodes, each with its own cursor:
/// the polling fallback (REST) returns the same events as the stream.
async fn rest_polling_matches_stream(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let mut s = a
        .sse(&format!("/events?tenant={tenant}&topic=q:1"), None)
        .await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(b.publish(&tenant, "q:1", "ask", json!({"i": i})).await);
    }
    let streamed: Vec<u64> = s.take(25, secs(10)).await.iter().map(|e| e.seq()).collect();
    let mut polled = Vec::new();
    let mut after = 0;
    let mut pages: HashMap<u64, usize> = HashMap::new();
    loop {
        let r: Value = b
            .get(&format!(
                "/api/topics/q:1/events?tenant={tenant}&after={after}&limit=10"
            ))
            .await
            .json()
            .await
            .expect("json");
        let evs = r["events"].as_array().expect("events");
        if evs.is_empty() {
            break;
        }
        *pages.entry(after).or_default() += 1;
        polled.extend(evs.iter().map(|e| e["id"].as_u64().expect("id")));
        after = r["last_id"].as_u64().expect("last_id");
    }
    assert_eq!(streamed, ids);
    assert_eq!(polled, ids);
    assert_eq!(pages.len(), 3);
    // Without `after`: the newest events, oldest first.
    let r: Value = a
        .get(&format!("/api/topics/q:1/events?tenant={tenant}&limit=3"))
        .await
        .json()
        .await
        .expect("json");
    let newest: Vec<u64> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(newest, ids[22..].to_vec());
    env.cleanup().await;
}
both_transports!(
    rest_polling_matches_stream_test,
    rest_polling_matches_stream
);

/// `snapshot=` on a resume: a client that starts serving a topic on a stream
/// it resumes (a browser tab joining a shared stream) gets that topic's
/// retained state first, then the replay from the cursor, with no duplicate.
async fn snapshot_on_resume(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = a.tenant().await;
    let early = b.publish(&tenant, "chat:1", "msg", json!(0)).await;
    let state = b
        .retain(&tenant, "board:1", "status", json!({"v": 1}))
        .await;
    let after: Vec<u64> = vec![
        b.publish(&tenant, "chat:1", "msg", json!(1)).await,
        b.publish(&tenant, "board:1", "status", json!({"v": 2}))
            .await,
    ];
    let path = format!("/events?tenant={tenant}&topic=chat:1&topic=board:1&snapshot=board:1");
    let mut s = a.sse(&path, Some(early)).await;
    let snap = s.next(secs(10)).await.expect("snapshot");
    assert_eq!(snap.event, "snapshot");
    assert_eq!(snap.seq(), early, "a snapshot keeps the cursor");
    let v = snap.json();
    assert_eq!(v["topic"], "board:1");
    assert_eq!(v["as_of"], state);
    assert_eq!(v["data"]["v"], 1);
    let got: Vec<u64> = s.take(2, secs(10)).await.iter().map(|e| e.seq()).collect();
    let mut want = vec![state];
    want.extend(&after[..1]);
    assert_eq!(got, want, "the replay from the cursor follows");
    assert_eq!(s.next_data(secs(10)).await.expect("last").seq(), after[1]);
    // Only topics of the stream may be named.
    let r = a
        .get(&format!(
            "/events?tenant={tenant}&topic=chat:1&snapshot=board:1"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_snapshot");
    env.cleanup().await;
}
both_transports!(snapshot_on_resume_test, snapshot_on_resume);
