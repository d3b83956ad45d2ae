//! Plugins written in JavaScript and Python, end to end: the components
//! componentize-js and componentize-py build from `plugins/js` and
//! `plugins/python` (and the hostile ones from `plugins/testing/{js,python}`)
//! pass the Rust examples' recorded cases, and run on real nodes: a
//! JavaScript filter on a live stream, a Python validator deciding bids, a
//! JavaScript and a Python stream authorizer refusing streams, and hostile
//! components contained.
//!
//! The components come from `scripts/build-plugins` (`scripts/test` runs it
//! first); when they are missing, the first test to need them runs it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{bid, decided, secs, Env, Mode, Node};

/// How long a node may take to compile and install a component: a
/// JavaScript one is 12 MB, a Python one 18 MB (tens of seconds each on a
/// busy machine).
const INSTALL: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository")
        .to_path_buf()
}

const NAMES: [&str; 6] = [
    "bid_validator",
    "notification_shaper",
    "event_filter",
    "stream_authorizer",
    "hostile_filter",
    "hostile_authorizer",
];

/// The directory of one language's components, built by
/// `scripts/build-plugins` if any is missing (under a file lock: nextest runs
/// tests as separate processes).
fn components(lang: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = root().join("target/plugins-lang").join(lang);
    BUILT.get_or_init(|| {
        let lock = std::fs::File::create(std::env::temp_dir().join("switchyard-plugins-lang.lock"))
            .expect("lock file");
        // SAFETY: flock on a file we own; released when the file is closed.
        unsafe {
            libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX);
        }
        let missing = ["js", "python"].iter().any(|l| {
            NAMES.iter().any(|n| {
                !root()
                    .join("target/plugins-lang")
                    .join(l)
                    .join(format!("{n}.wasm"))
                    .exists()
            })
        });
        if missing {
            let status = Command::new("bash")
                .arg(root().join("scripts/build-plugins"))
                .current_dir(root())
                .status()
                .expect("bash runs scripts/build-plugins");
            assert!(
                status.success(),
                "scripts/build-plugins failed (did 'scripts/setup --tests' install the npm and PyPI tools?)"
            );
        }
    });
    dir
}

fn wasm_path(lang: &str, name: &str) -> PathBuf {
    components(lang).join(format!("{name}.wasm"))
}

fn component(lang: &str, name: &str) -> Vec<u8> {
    let path = wasm_path(lang, name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha(bytes: &[u8]) -> String {
    switchyard::plugins::registry::content_hash(bytes)
}

/// `switchyard ARGS`, sharing the nodes' compiled-code cache (`lang_env`).
fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SWITCHYARD_PLUGIN_CACHE_DIR", test_cache())
        .output()
        .expect("run switchyard")
}

/// A test world whose nodes share one compiled-code cache: a 12-18 MB
/// component compiles once for the whole run, not once per node and test.
async fn lang_env(mode: Mode) -> Env {
    Env::new(mode)
        .await
        .set("SWITCHYARD_PLUGIN_CACHE_DIR", test_cache().display())
}

fn test_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache-tests")
}

async fn put_plugin(node: &Node, slot: &str, query: &str, bytes: Vec<u8>) -> reqwest::Response {
    node.put_plugin(slot, query, bytes).await
}

async fn configure(node: &Node, slot: &str, query: &str, config: Value) {
    node.configure_plugin(slot, query, config).await
}

/// The tenant's entry for `slot` in `GET /admin/plugins`.
async fn slot_info(node: &Node, slot: &str, tenant: &str) -> Value {
    node.plugin_slot(slot, Some(tenant)).await
}

/// Uploads `bytes` into the tenant's `slot` on the first node (answered at
/// once while it compiles) and waits until every node runs it.
async fn install(nodes: &[Node], slot: &str, tenant: &str, bytes: Vec<u8>) {
    let want = sha(&bytes);
    let r = put_plugin(&nodes[0], slot, &format!("?tenant={tenant}"), bytes).await;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "{status} {body}"
    );
    for n in nodes {
        let started = Instant::now();
        loop {
            let info = slot_info(n, slot, tenant).await;
            if info["active"]["version"].as_str() == Some(want.as_str()) {
                break;
            }
            assert!(
                info["last_error"]["hash"].as_str() != Some(want.as_str()),
                "the component was refused: {info}"
            );
            assert!(
                started.elapsed() < INSTALL,
                "not active after {INSTALL:?}: {info}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn product(node: &Node, tenant: &str) -> String {
    support::product_at(node, tenant, 1000).await
}

// ---- the recorded cases ------------------------------------------------------

/// `switchyard plugin test` runs the Rust example's cases against the
/// language's component for the same slot.
fn passes_the_rust_examples_cases(lang: &str, name: &str, example: &str) {
    let wasm = wasm_path(lang, name);
    let cases = root()
        .join("plugins/examples")
        .join(example)
        .join("cases.json");
    let out = run_cli(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        cases.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{lang} {name}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 failed"), "{text}");
    // Every case ran: as many as the file holds.
    let n = serde_json::from_str::<Value>(&std::fs::read_to_string(&cases).expect("cases"))
        .expect("cases JSON")["cases"]
        .as_array()
        .expect("cases")
        .len();
    assert!(text.contains(&format!("{n} passed")), "{text}");
}

#[test]
fn javascript_bid_validator_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("js", "bid_validator", "bid-validator");
}

#[test]
fn javascript_notification_shaper_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("js", "notification_shaper", "notification-shaper");
}

#[test]
fn javascript_event_filter_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("js", "event_filter", "event-filter");
}

#[test]
fn javascript_stream_authorizer_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("js", "stream_authorizer", "stream-authorizer");
}

#[test]
fn python_stream_authorizer_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("python", "stream_authorizer", "stream-authorizer");
}

#[test]
fn python_bid_validator_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("python", "bid_validator", "bid-validator");
}

#[test]
fn python_notification_shaper_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("python", "notification_shaper", "notification-shaper");
}

#[test]
fn python_event_filter_passes_the_recorded_cases() {
    passes_the_rust_examples_cases("python", "event_filter", "event-filter");
}

// ---- through the server ----------------------------------------------------

/// The status and error code of `GET /events?topic=bids:p1` for a user
/// whose token lists `bid_on` (`200`, `""` when the stream opens).
async fn bids_stream(
    env: &Env,
    node: &Node,
    tenant: &str,
    sub: &str,
    bid_on: &[&str],
) -> (StatusCode, String) {
    let claims = switchyard::auth::Claims {
        sub: sub.into(),
        tenant: tenant.into(),
        exp: switchyard::auth::now_secs() + 3_600,
        iat: switchyard::auth::now_secs(),
    };
    let mut extra = serde_json::Map::new();
    extra.insert("bid_on".into(), json!(bid_on));
    let token = env.keys().await.sign_with_claims(&claims, &extra);
    let auth = format!("Bearer {token}");
    let url = format!("{}/events?tenant={tenant}&topic=bids:p1", node.url);
    match support::Sse::connect(&url, None, &[("authorization", &auth)]).await {
        Ok(_) => (StatusCode::OK, String::new()),
        Err((status, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (
                status,
                v["error"]["code"].as_str().unwrap_or(&body).to_string(),
            )
        }
    }
}

/// The JavaScript and Python bidders-only authorizers, active for a tenant
/// on every node, refuse a product's bid stream to those who have not bid
/// on it, with the plugin's code, and let its bidders in.
async fn authorizers_refuse_streams(mode: Mode) {
    let env = lang_env(mode).await;
    let nodes = env.start_nodes(2).await;
    for lang in ["js", "python"] {
        let tenant = nodes[0].tenant().await;
        install(
            &nodes,
            "stream-authorizer",
            &tenant,
            component(lang, "stream_authorizer"),
        )
        .await;
        for n in &nodes {
            assert_eq!(
                bids_stream(&env, n, &tenant, "bob", &["p9"]).await,
                (StatusCode::FORBIDDEN, "not_a_bidder".to_string()),
                "{lang}"
            );
            assert_eq!(
                bids_stream(&env, n, &tenant, "ann", &["p1"]).await.0,
                StatusCode::OK,
                "{lang}"
            );
        }
    }
    env.cleanup().await;
}
both_modes!(
    javascript_and_python_authorizers_refuse_streams,
    authorizers_refuse_streams
);

/// A JavaScript filter uploaded for one tenant drops and redacts events on
/// that tenant's live stream; the calls are the tenant's slot's.
async fn javascript_filter_on_a_live_stream(mode: Mode) {
    let env = lang_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    let tenant = a.tenant().await;
    install(
        &nodes,
        "event-filter",
        &tenant,
        component("js", "event_filter"),
    )
    .await;
    let mut stream = a
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:1&min_amount=100&redact=bidder"),
            None,
        )
        .await;
    let mut plain = a
        .sse(&format!("/events?tenant={tenant}&topic=feed:1"), None)
        .await;
    for (amount, bidder) in [(50, "u1"), (150, "u2"), (99, "u3"), (1500, "u4")] {
        b.publish(
            &tenant,
            "feed:1",
            "bid.placed",
            json!({"amount": amount, "bidder": bidder, "bidder_id": bidder, "product": {"id": "p1", "bidder": bidder}}),
        )
        .await;
    }
    let got = stream.take(2, secs(30)).await;
    let data: Vec<Value> = got.iter().map(|e| e.json()["data"].clone()).collect();
    assert_eq!(
        data,
        vec![
            json!({"amount": 150, "product": {"id": "p1"}}),
            json!({"amount": 1500, "product": {"id": "p1"}}),
        ],
        "the amounts under 100 are dropped, the bidder redacted"
    );
    // Without parameters, everything passes untouched.
    let all = plain.take(4, secs(30)).await;
    assert_eq!(all[0].json()["data"]["bidder"], "u1");
    let mut calls = 0;
    for n in &nodes {
        calls += slot_info(n, "event-filter", &tenant).await["calls"]
            .as_u64()
            .expect("calls");
    }
    assert!(
        calls >= 8,
        "the tenant's filter ran for both shapes: {calls}"
    );
    env.cleanup().await;
}
both_modes!(
    a_javascript_filter_filters_a_live_stream,
    javascript_filter_on_a_live_stream
);

/// A Python validator uploaded for one tenant decides its bids, with its
/// configuration, and is named in `decided_by`.
async fn python_validator_decides_bids(mode: Mode) {
    let env = lang_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let b = nodes.last().expect("node");
    let tenant = nodes[0].tenant().await;
    let q = format!("?tenant={tenant}");
    configure(
        &nodes[0],
        "bid-validator",
        &q,
        json!({"max_amount": "5000", "tiers": "0:100,3000:500"}),
    )
    .await;
    let bytes = component("python", "bid_validator");
    let tag = format!("bid-validator@{}", &sha(&bytes)[..12]);
    install(&nodes, "bid-validator", &tenant, bytes).await;
    let p = product(b, &tenant).await;
    let first = decided(b, &bid(b, &p, "u1", 1000).await).await;
    assert_eq!(first["status"], "accepted", "{first}");
    assert_eq!(first["decided_by"], tag.as_str(), "{first}");
    let small = decided(b, &bid(b, &p, "u2", 1050).await).await;
    assert_eq!(small["status"], "rejected", "{small}");
    assert_eq!(small["reason"], "increment_too_small", "{small}");
    let over = decided(b, &bid(b, &p, "u2", 6000).await).await;
    assert_eq!(over["status"], "rejected", "{over}");
    assert_eq!(over["reason"], "over_limit", "{over}");
    let raise = decided(b, &bid(b, &p, "u2", 1100).await).await;
    assert_eq!(raise["status"], "accepted", "{raise}");
    assert_eq!(raise["decided_by"], tag.as_str(), "{raise}");
    env.cleanup().await;
}
both_modes!(
    a_python_validator_decides_bids,
    python_validator_decides_bids
);

// ---- hostile components ------------------------------------------------------

/// A hostile filter for one tenant: the subscriptions that make it loop,
/// exhaust its memory or answer too much get nothing, each failure counted
/// under its kind, while a plain subscription on the same topic gets every
/// event and the node serves on.
async fn hostile_filter_is_contained(lang: &str) {
    // A deadline a loaded machine cannot miss for the plain subscription's
    // calls (a missed one fails closed and drops its event); the endless
    // loop still runs into it.
    let env = lang_env(Mode::Embedded)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", 500);
    let nodes = env.start_nodes(1).await;
    let node = &nodes[0];
    let tenant = node.tenant().await;
    install(
        &nodes,
        "event-filter",
        &tenant,
        component(lang, "hostile_filter"),
    )
    .await;
    let topic = format!("/events?tenant={tenant}&topic=t:1");
    let mut plain = node.sse(&topic, None).await;
    let mut hostile = Vec::new();
    for mode in ["loop", "oom", "huge"] {
        hostile.push(node.sse(&format!("{topic}&mode={mode}"), None).await);
    }
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(node.publish(&tenant, "t:1", "tick", json!({"i": i})).await);
    }
    let got: Vec<u64> = plain
        .take(2, secs(60))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids, "the plain subscription gets every event");
    // Each event was offered to every shape: wait until the failures are
    // counted, then check that nothing was delivered where the filter failed.
    let errors = || async {
        let info = slot_info(node, "event-filter", &tenant).await;
        let e = &info["errors"];
        let n = |k: &str| e[k].as_u64().unwrap_or_default();
        (n("timeout"), n("memory"), n("bad_output"), info)
    };
    let started = Instant::now();
    let (t, m, b, info) = loop {
        let (t, m, b, info) = errors().await;
        if (t + b >= 4 && m >= 2) || started.elapsed() > secs(60) {
            break (t, m, b, info);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The loop times out and the bomb hits the cap, each twice. The huge
    // answer is refused as bad output, or, on a loaded machine, runs past
    // the deadline while the engine builds it: either way it fails closed.
    assert_eq!(
        (t + b, m),
        (4, 2),
        "timeout + bad_output, memory: {info}\n{}",
        node.log_text()
    );
    assert!(t >= 2, "the endless loop timed out twice: {info}");
    for s in &mut hostile {
        assert!(
            s.next_data(Duration::from_millis(300)).await.is_none(),
            "a failed filter delivers nothing"
        );
    }
    // The same component still serves the plain shape, and the node is fine.
    let id = node
        .publish(&tenant, "t:1", "tick", json!({"i": "after"}))
        .await;
    assert_eq!(plain.take(1, secs(30)).await[0].seq(), id);
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}

/// A hostile stream authorizer fails closed: a stream whose call loops,
/// exhausts memory, throws, answers a code the host does not accept or
/// (Python) sleeps is
/// refused with `503 plugin_error` (each failure counted under its kind),
/// while a stream the same component allows opens and gets its events, and
/// the node serves on.
async fn hostile_authorizer_fails_closed(lang: &str, throws: &str) {
    let env = lang_env(Mode::Embedded).await;
    let nodes = env.start_nodes(1).await;
    let node = &nodes[0];
    let tenant = node.tenant().await;
    install(
        &nodes,
        "stream-authorizer",
        &tenant,
        component(lang, "hostile_authorizer"),
    )
    .await;
    // No token: the admin token would bypass the authorizer.
    let anonymous = reqwest::Client::new();
    let open = |mode: &str| {
        let url = format!("{}/events?tenant={tenant}&topic=t:1&mode={mode}", node.url);
        let req = anonymous.get(url);
        async move { req.send().await.expect("request") }
    };
    let mut modes = vec![
        ("loop", "timeout"),
        ("oom", "memory"),
        (throws, "trap"),
        ("garbage", "bad_output"),
    ];
    if lang == "python" {
        // `time.sleep` (JavaScript has no blocking sleep): a 30 s sleep and
        // endless 1 ms naps both end at the call's deadline, not after 30 s.
        modes.extend([("sleep", "timeout"), ("naps", "timeout")]);
    }
    for (mode, kind) in modes {
        let started = Instant::now();
        let r = open(mode).await;
        assert!(
            kind != "timeout" || started.elapsed() < secs(15),
            "{mode} answered after {:?}",
            started.elapsed()
        );
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode}: {body}");
        assert_eq!(body["error"]["code"], "plugin_error", "{mode}: {body}");
        let info = slot_info(node, "stream-authorizer", &tenant).await;
        assert!(
            info["errors"][kind].as_u64().unwrap_or(0) >= 1,
            "{mode} counts as {kind}: {info}"
        );
    }
    let allowed = open("plain").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    drop(allowed);
    let mut plain = node
        .sse(
            &format!("/events?tenant={tenant}&topic=t:1&mode=plain"),
            None,
        )
        .await;
    let id = node.publish(&tenant, "t:1", "tick", json!({"i": 1})).await;
    assert_eq!(plain.take(1, secs(30)).await[0].seq(), id);
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_javascript_authorizer_fails_closed() {
    hostile_authorizer_fails_closed("js", "throw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_python_authorizer_fails_closed() {
    hostile_authorizer_fails_closed("python", "raise").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_javascript_filter_is_contained() {
    hostile_filter_is_contained("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_python_filter_is_contained() {
    hostile_filter_is_contained("python").await;
}
