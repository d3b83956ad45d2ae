//! Faults: SIGTERM with live subscribers, Redis going away and coming back,
//! running out of file descriptors, the connection cap.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Node, PrivateRedis, Sse};

/// SIGTERM: every subscriber gets `shutdown`, the node exits 0 in time, and
/// the subscribers resume elsewhere (embedded: on the restarted node) with
/// every event.
async fn sigterm_with_subscribers(mode: Mode) {
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_RECONNECT_WINDOW_MS", 1234);
    let mut doomed = env.start().await;
    let other = if mode == Mode::Cluster {
        Some(env.start().await)
    } else {
        None
    };
    let tenant = doomed.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=news:1");
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(doomed.sse(&path, Some(0)).await);
    }
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            doomed
                .publish(&tenant, "news:1", "item", json!({"i": i}))
                .await,
        );
    }
    for s in subs.iter_mut() {
        let got: Vec<u64> = s.take(10, secs(10)).await.iter().map(|e| e.seq()).collect();
        assert_eq!(got, ids);
    }
    doomed.sigterm();
    for s in subs.iter_mut() {
        let ev = s
            .next_of("shutdown", secs(10))
            .await
            .expect("shutdown event");
        assert_eq!(ev.seq(), *ids.last().expect("ids"));
        // How to spread the reconnects: the configured window.
        assert_eq!(ev.json()["reconnect_window_ms"], 1234);
        assert!(
            s.next(secs(5)).await.is_none() && s.ended,
            "stream closed after shutdown"
        );
    }
    let status = doomed.wait_exit(secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    // Events keep coming while the clients are away.
    let restarted;
    let next: &Node = match &other {
        Some(o) => o,
        None => {
            restarted = env.start().await;
            &restarted
        }
    };
    for i in 10..15 {
        ids.push(
            next.publish(&tenant, "news:1", "item", json!({"i": i}))
                .await,
        );
    }
    for s in &subs {
        let last: u64 = s
            .last_id
            .as_deref()
            .expect("last id")
            .parse()
            .expect("numeric");
        let mut r = next.sse(&path, Some(last)).await;
        let got: Vec<u64> = r.take(5, secs(10)).await.iter().map(|e| e.seq()).collect();
        assert_eq!(got, ids[10..].to_vec());
    }
    env.cleanup().await;
}
both_transports!(sigterm_with_subscribers_test, sigterm_with_subscribers);

/// Redis stops and comes back (empty: it keeps nothing on disk). `/ready`
/// says 503 and recovers; publishes keep succeeding (Postgres is the record);
/// subscribers on another node get every acknowledged event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_nothing() {
    let mut redis = PrivateRedis::start().await;
    let env = Env::new(Mode::Cluster).await.with_redis(&redis.url());
    let support::Crossing {
        a,
        b,
        tenant,
        stream: mut s,
        mut ids,
    } = support::crossing(&env).await;
    let path = format!("/events?tenant={tenant}&topic=orders:1");

    redis.stop();
    support::wait_for("/ready reports Redis down", secs(15), || async {
        let r = a.get("/ready").await;
        r.status() == StatusCode::SERVICE_UNAVAILABLE
            && r.json::<Value>()
                .await
                .map(|v| v["error"]["message"].to_string().contains("redis"))
                .unwrap_or(false)
    })
    .await;
    for i in 1..=10 {
        ids.push(b.publish(&tenant, "orders:1", "placed", json!(i)).await);
    }
    // Delivered across nodes from the store while the bus is down.
    let got: Vec<u64> = s.take(10, secs(20)).await.iter().map(|e| e.seq()).collect();
    assert_eq!(got, ids[1..].to_vec());

    redis.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    for i in 11..=20 {
        ids.push(b.publish(&tenant, "orders:1", "placed", json!(i)).await);
    }
    let got: Vec<u64> = s.take(10, secs(20)).await.iter().map(|e| e.seq()).collect();
    assert_eq!(got, ids[11..].to_vec());
    // A fresh resume from the start has exactly the acknowledged events.
    let mut r = b.sse(&path, Some(0)).await;
    let got: Vec<u64> = r
        .take(ids.len(), secs(10))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids);
    env.cleanup().await;
}

/// At the connection cap a node answers 503 with a clear error and keeps
/// serving the connections it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_answers_503() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_MAX_CONNECTIONS", 20);
    let node = env.start().await;
    // A connection opened before the cap is reached, kept open (the node's
    // own client drops idle connections within 250 ms).
    let kept = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .expect("client");
    let health = || async {
        kept.get(format!("{}/health", node.url))
            .send()
            .await
            .expect("health")
            .status()
    };
    assert_eq!(health().await, StatusCode::OK);
    let path = "/events?tenant=demo&topic=global";
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        match Sse::connect(&format!("{}{path}", node.url), None, &[]).await {
            Ok(s) => held.push(s),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let (status, body) = refused.expect("the cap is enforced");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("at_capacity"), "{body}");
    assert_eq!(health().await, StatusCode::OK, "node still answers");
    drop(held);
    env.cleanup().await;
}

/// Out of file descriptors: new connections get 503 with a clear error, the
/// log says what happened, and the node recovers when descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_answers_503() {
    let mut env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_MAX_CONNECTIONS", 5000);
    // A hard limit of 128 descriptors for the node only.
    env.fd_limit = Some(128);
    let node = env.start().await;
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        match Sse::connect(
            &format!("{}/events?tenant=demo&topic=global", node.url),
            None,
            &[],
        )
        .await
        {
            Ok(s) => held.push(s),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let (status, body) = refused.expect("descriptors ran out");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("out_of_file_descriptors"), "{body}");
    support::wait_for("log names the problem", secs(5), || async {
        node.log_text().contains("out of file descriptors")
    })
    .await;
    drop(held);
    support::wait_for("node serves again", secs(10), || async {
        matches!(node.http.get(format!("{}/health", node.url)).send().await, Ok(r) if r.status() == StatusCode::OK)
    })
    .await;
    env.cleanup().await;
}

/// Postgres stops and comes back: `/ready` says 503 naming it, publishing
/// answers 503 with a clear error (nothing is acknowledged that is not
/// stored), open streams stay up, and everything works again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart() {
    let pg = support::PrivatePostgres::start().await;
    let env = Env::new(Mode::Cluster).await.with_postgres(&pg.url());
    let support::Crossing {
        a,
        b,
        tenant,
        stream: mut s,
        mut ids,
    } = support::crossing(&env).await;
    let path = format!("/events?tenant={tenant}&topic=orders:1");

    pg.stop();
    support::wait_for("/ready reports Postgres down", secs(20), || async {
        let r = a.get("/ready").await;
        r.status() == StatusCode::SERVICE_UNAVAILABLE
            && r.json::<Value>()
                .await
                .map(|v| v["error"]["message"].to_string().contains("postgres"))
                .unwrap_or(false)
    })
    .await;
    let r = b
        .post(
            "/api/events",
            &json!({"tenant": tenant, "topic": "orders:1", "type": "placed", "data": "lost?"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "store_unavailable");

    pg.restart().await;
    a.wait_ready().await;
    b.wait_ready().await;
    for i in 1..=5 {
        ids.push(b.publish(&tenant, "orders:1", "placed", json!(i)).await);
    }
    // The open stream survived and continues without a gap.
    let got: Vec<u64> = s.take(5, secs(20)).await.iter().map(|e| e.seq()).collect();
    assert_eq!(got, ids[1..].to_vec());
    let mut r = b.sse(&path, Some(0)).await;
    let got: Vec<u64> = r
        .take(ids.len(), secs(10))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids, "only acknowledged events are in the log");
    env.cleanup().await;
}
