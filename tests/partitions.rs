//! Partitions, full disks and a log that cannot be written.
//!
//! Partitions go through a proxy in the test process (`support::Proxy`),
//! cut into a black hole: connections stay open and answer nothing, which
//! is what a partition looks like to a node (unlike a server that stops,
//! whose connections close). Full disks are a small tmpfs (`support::TinyFs`,
//! which needs root; the tests say SKIPPED where they cannot mount one).
//!
//! Under each fault: nothing acknowledged is lost and nothing refused is
//! stored, `/health` and `/ready` answer within a second and say which
//! dependency is missing, a write that cannot be stored is refused with a
//! clear error within seconds, and the node recovers by itself.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{free_port, secs, Env, Mode, Node, TinyFs};

/// How long `/health` and `/ready` may take, on a loaded test machine, to
/// answer within the server's one-second bound.
const PROBE: Duration = Duration::from_millis(1_500);

/// `GET path` (no token), answered within `within`: its status and body.
async fn timed_get(node: &Node, path: &str, within: Duration) -> (StatusCode, Value) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        secs(30),
        node.http.get(format!("{}{path}", node.url)).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("{path} did not answer within 30 s"))
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    assert!(
        took <= within,
        "{path} took {took:?} (more than {within:?}): {status} {body}"
    );
    (status, body)
}

/// `/health` says ok within the bound.
async fn healthy(node: &Node) {
    let (status, body) = timed_get(node, "/health", PROBE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `/ready` answers 503 within the bound, naming `down` and not `up`.
async fn unready(node: &Node, down: &str, up: &str) {
    let (status, body) = timed_get(node, "/ready", PROBE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert!(message.contains(&format!("{down}:")), "{body}");
    assert!(!message.contains(&format!("{up}:")), "{body}");
}

/// Publishes `data` on `node`, allowing `within`; `Ok(id)` when stored,
/// `Err(body)` when refused (a 5xx with a JSON error).
async fn try_publish(
    node: &Node,
    tenant: &str,
    data: Value,
    within: Duration,
) -> Result<u64, Value> {
    let started = Instant::now();
    let body = json!({"tenant": tenant, "topic": "orders:1", "type": "placed", "data": data});
    let r = tokio::time::timeout(secs(60), node.post("/api/events", &body))
        .await
        .expect("a publish hung for a minute");
    let took = started.elapsed();
    let status = r.status();
    let v: Value = r.json().await.expect("a JSON body");
    assert!(
        took <= within,
        "a publish took {took:?} (more than {within:?}): {status} {v}"
    );
    if status == StatusCode::CREATED {
        return Ok(v["id"].as_u64().expect("id"));
    }
    assert!(status.is_server_error(), "{status} {v}");
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "a clear error: {v}"
    );
    Err(v)
}

/// The ids a fresh stream from the start of `tenant`'s topic replays.
async fn log_of(node: &Node, tenant: &str, n: usize) -> Vec<u64> {
    let path = format!("/events?tenant={tenant}&topic=orders:1");
    let mut r = node.sse(&path, Some(0)).await;
    let got: Vec<u64> = r.take(n, secs(20)).await.iter().map(|e| e.seq()).collect();
    // Nothing more than that.
    assert!(
        r.next_data(Duration::from_millis(500)).await.is_none(),
        "the log holds more than the acknowledged events"
    );
    got
}

/// Redis cut off (a black hole, not a restart): publishing keeps working
/// (Postgres is the record), `/ready` names Redis within a second, events
/// cross nodes from Postgres within a few tail-check periods, and once the
/// partition ends the nodes use Redis again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_partition() {
    let mut env = Env::new(Mode::Cluster)
        .await
        .set("SWITCHYARD_TAIL_CHECK_MS", 250);
    let proxy = env.redis_proxy().await;
    let support::Crossing {
        a,
        b,
        tenant,
        stream: mut s,
        mut ids,
    } = support::crossing(&env).await;
    let path = format!("/events?tenant={tenant}&topic=orders:1");

    proxy.cut();
    for node in [&a, &b] {
        healthy(node).await;
        unready(node, "redis", "postgres").await;
    }
    // Each event reaches the other node's subscriber from Postgres: the
    // tail check runs every 250 ms, so two periods is the expectation and
    // three seconds a bound no loaded machine should miss.
    let mut slowest = Duration::ZERO;
    for i in 1..=10 {
        let started = Instant::now();
        let id = try_publish(&b, &tenant, json!(i), secs(5))
            .await
            .expect("Postgres stores while Redis is cut off");
        ids.push(id);
        let got = s
            .next_data(secs(10))
            .await
            .expect("delivered from the store");
        assert_eq!(got.seq(), id);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < secs(3),
        "an event took {slowest:?} to cross nodes without Redis"
    );
    // A new stream needs its lease, which lives in Redis: it is refused,
    // clearly and within seconds, rather than left hanging.
    let started = Instant::now();
    let refused = support::Sse::connect(&format!("{}{path}", b.url), None, &[]).await;
    let (status, body) = refused.err().expect("no lease without Redis");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("caps_unavailable"), "{body}");
    assert!(started.elapsed() < secs(5), "{:?}", started.elapsed());
    healthy(&a).await;
    unready(&a, "redis", "postgres").await;

    proxy.mend();
    a.wait_ready().await;
    b.wait_ready().await;
    // The bus works again: b's publishes reach Redis (its error count
    // stops growing) and a's hub gets them from there, not from its tail
    // check (which fills once per event while the bus is down).
    let started = Instant::now();
    loop {
        let errors = b.metric("switchyard_fanout_publish_errors_total").await;
        let fills = a.metric("switchyard_fanout_tail_fills_total").await;
        let id = b
            .publish(&tenant, "orders:1", "placed", json!("probe"))
            .await;
        ids.push(id);
        assert_eq!(s.next_data(secs(10)).await.expect("delivered").seq(), id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if b.metric("switchyard_fanout_publish_errors_total").await == errors
            && a.metric("switchyard_fanout_tail_fills_total").await == fills
        {
            break;
        }
        assert!(started.elapsed() < secs(20), "the bus never worked again");
    }
    let fills = a.metric("switchyard_fanout_tail_fills_total").await;
    for i in 11..=15 {
        let id = b.publish(&tenant, "orders:1", "placed", json!(i)).await;
        ids.push(id);
        assert_eq!(s.next_data(secs(10)).await.expect("delivered").seq(), id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_tail = a.metric("switchyard_fanout_tail_fills_total").await - fills;
    assert!(
        by_tail <= 2.0,
        "{by_tail} of 5 events came by the tail check"
    );
    assert_eq!(log_of(&a, &tenant, ids.len()).await, ids);
    env.cleanup().await;
}

/// Postgres cut off: `/ready` names it within a second, publishing is
/// refused with a clear 503 within seconds (never acknowledged), open
/// streams stay up, and everything works again once the partition ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partition() {
    let mut env = Env::new(Mode::Cluster).await;
    let proxy = env.postgres_proxy().await;
    let support::Crossing {
        a,
        b,
        tenant,
        stream: mut s,
        mut ids,
    } = support::crossing(&env).await;

    proxy.cut();
    for node in [&a, &b] {
        healthy(node).await;
        unready(node, "postgres", "redis").await;
    }
    for i in 0..3 {
        let refused = try_publish(&b, &tenant, json!(format!("refused {i}")), secs(8))
            .await
            .expect_err("nothing is acknowledged that is not stored");
        assert_eq!(refused["error"]["code"], "store_unavailable", "{refused}");
    }
    healthy(&b).await;
    unready(&b, "postgres", "redis").await;

    proxy.mend();
    a.wait_ready().await;
    b.wait_ready().await;
    for i in 1..=5 {
        let id = try_publish(&b, &tenant, json!(i), secs(10))
            .await
            .expect("stored again");
        ids.push(id);
    }
    // The open stream survived and continues without a gap.
    let got: Vec<u64> = s.take(5, secs(20)).await.iter().map(|e| e.seq()).collect();
    assert_eq!(got, ids[1..].to_vec());
    assert_eq!(log_of(&a, &tenant, ids.len()).await, ids);
    env.cleanup().await;
}

/// Embedded mode with its data dir on a disk that fills up: writes are
/// refused with a clear error within seconds, nothing acknowledged is lost,
/// the probes answer, and writes work again once there is space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_disk_full() {
    let Some(fs) = TinyFs::mount("2m") else {
        return;
    };
    let mut env = Env::new(Mode::Embedded).await;
    let _ = std::fs::remove_dir_all(&env.data_dir);
    env.data_dir = fs.dir.join("data");
    std::fs::create_dir_all(&env.data_dir).expect("data dir");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=orders:1");
    let mut s = node.sse(&path, Some(0)).await;
    let mut ids = vec![node.publish(&tenant, "orders:1", "placed", json!(0)).await];

    fs.fill();
    // Events of a few KiB, until the disk refuses one (SQLite may reuse
    // space it already has for a while).
    let blob = "x".repeat(4096);
    let mut refused = None;
    for i in 0..2_000 {
        match try_publish(&node, &tenant, json!({"i": i, "blob": blob}), secs(5)).await {
            Ok(id) => ids.push(id),
            Err(body) => {
                refused = Some(body);
                break;
            }
        }
    }
    let refused = refused.expect("the full disk refuses a write");
    assert_eq!(refused["error"]["code"], "store_unavailable", "{refused}");
    healthy(&node).await;
    let (status, body) = timed_get(&node, "/ready", PROBE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sqlite: the data dir's disk is full"),
        "{body}"
    );
    // A second refusal, as prompt as the first.
    assert!(try_publish(&node, &tenant, json!("refused"), secs(5))
        .await
        .is_err());

    fs.free();
    let started = Instant::now();
    loop {
        if let Ok(id) = try_publish(&node, &tenant, json!("again"), secs(5)).await {
            ids.push(id);
            break;
        }
        assert!(started.elapsed() < secs(20), "writes never stored again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.wait_ready().await;
    // The subscriber got every acknowledged event, in order, and a fresh
    // read of the log has exactly those.
    let got: Vec<u64> = s
        .take(ids.len(), secs(20))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(log_of(&node, &tenant, ids.len()).await, ids);
    env.cleanup().await;
}

/// What a node whose log cannot be written must still do: create a tenant
/// (logged at info), open streams (logged at debug), publish and deliver,
/// and say it is alive and ready.
async fn serves(node: &Node) {
    for _ in 0..3 {
        let tenant = node.tenant().await;
        let path = format!("/events?tenant={tenant}&topic=orders:1");
        let mut s = node.sse(&path, Some(0)).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(node.publish(&tenant, "orders:1", "placed", json!(i)).await);
        }
        let got: Vec<u64> = s.take(5, secs(10)).await.iter().map(|e| e.seq()).collect();
        assert_eq!(got, ids);
    }
    healthy(node).await;
    let (status, body) = timed_get(node, "/ready", PROBE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The log lines the node dropped, from `/metrics`.
async fn dropped(node: &Node) -> f64 {
    node.metric("switchyard_log_lines_dropped_total").await
}

/// Standard output and error on a disk that is full from the start: the
/// node starts, serves, and counts the log lines it could not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_disk_full_at_start() {
    let Some(fs) = TinyFs::mount("256k") else {
        return;
    };
    let env = Env::new(Mode::Embedded).await;
    let log = std::fs::File::create(fs.dir.join("node.log")).expect("log file");
    fs.fill();
    let node = Node::start_with_output(
        &env,
        &[],
        free_port(),
        Stdio::from(log.try_clone().expect("log file")),
        Stdio::from(log),
    )
    .await;
    serves(&node).await;
    assert!(dropped(&node).await > 0.0, "dropped lines are counted");
    drop(node);
    env.cleanup().await;
}

/// The log's disk fills while the node runs: it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_disk_fills_while_serving() {
    let Some(fs) = TinyFs::mount("256k") else {
        return;
    };
    let env = Env::new(Mode::Embedded).await;
    let log = std::fs::File::create(fs.dir.join("node.log")).expect("log file");
    let node = Node::start_with_output(
        &env,
        &[],
        free_port(),
        Stdio::from(log.try_clone().expect("log file")),
        Stdio::from(log),
    )
    .await;
    serves(&node).await;
    assert_eq!(
        dropped(&node).await,
        0.0,
        "nothing dropped while there is space"
    );
    fs.fill();
    // The log file's last page may still take a few lines.
    for _ in 0..30 {
        serves(&node).await;
        if dropped(&node).await > 0.0 {
            break;
        }
    }
    assert!(dropped(&node).await > 0.0, "dropped lines are counted");
    drop(node);
    env.cleanup().await;
}

/// Standard output and error are pipes nobody reads any more (a log
/// collector that went away): the node starts and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pipe_closed() {
    let env = Env::new(Mode::Embedded).await;
    let (out_r, out_w) = std::io::pipe().expect("pipe");
    let (err_r, err_w) = std::io::pipe().expect("pipe");
    drop(out_r);
    drop(err_r);
    let node = Node::start_with_output(
        &env,
        &[],
        free_port(),
        Stdio::from(out_w),
        Stdio::from(err_w),
    )
    .await;
    serves(&node).await;
    assert!(dropped(&node).await > 0.0, "dropped lines are counted");
    drop(node);
    env.cleanup().await;
}
