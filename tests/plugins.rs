//! WebAssembly plugins end to end: the example plugins against their cases
//! and through the server, hostile components (each fails its call only),
//! hot swap under load, rollback, shadow runs, cluster propagation, the
//! event filter's one-call-per-shape economy, and `plugin replay`.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, wait_for, Env, Mode, Node, ADMIN};

/// A component built from `plugins/` (examples and the hostile test plugins).
fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases(example: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/examples")
        .join(example)
        .join("cases.json")
}

/// The same component with a custom section appended: identical behaviour,
/// a different content hash (a new version).
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"switchyard-test";
    let payload = n.to_le_bytes();
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(body.len() as u8); // size (< 128: one LEB128 byte)
    out.extend_from_slice(&body);
    out
}

fn sha(bytes: &[u8]) -> String {
    switchyard::plugins::registry::content_hash(bytes)
}

/// Uploads a component and waits for its compile (`wait=true`): the answer
/// is the slot's state once the upload is active, or the refusal.
async fn put_plugin(node: &Node, slot: &str, query: &str, bytes: Vec<u8>) -> reqwest::Response {
    let sep = if query.is_empty() { "?" } else { "&" };
    node.put_plugin(slot, &format!("{query}{sep}wait=true"), bytes)
        .await
}

async fn configure(node: &Node, slot: &str, query: &str, config: Value) {
    node.configure_plugin(slot, query, config).await
}

async fn slot_info(node: &Node, slot: &str, tenant: Option<&str>) -> Value {
    node.plugin_slot(slot, tenant).await
}

async fn active_hash(node: &Node, slot: &str, tenant: Option<&str>) -> Option<String> {
    slot_info(node, slot, tenant).await["active"]["version"]
        .as_str()
        .map(str::to_string)
}

async fn product(node: &Node, tenant: &str) -> String {
    let r = node
        .post(
            "/api/products",
            &json!({"tenant": tenant, "seller_id": "seller", "title": "Lamp", "starting_price": 100, "min_increment": 10}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn bid(node: &Node, product: &str, bidder: &str, amount: i64) -> String {
    let r = node
        .post(
            &format!("/api/products/{product}/bids"),
            &json!({"bidder_id": bidder, "amount": amount}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json::<Value>().await.expect("json")["bid_id"]
        .as_str()
        .expect("bid_id")
        .to_string()
}

async fn decided(node: &Node, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let b: Value = node
            .get(&format!("/api/bids/{id}"))
            .await
            .json()
            .await
            .expect("json");
        if b["status"] != "queued" {
            return b;
        }
        assert!(started.elapsed() < secs(30), "bid {id} never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchyard")
}

// ---- the author's kit ------------------------------------------------------

#[test]
fn example_plugins_pass_their_recorded_cases() {
    for (name, dir) in [
        ("bid_validator", "bid-validator"),
        ("notification_shaper", "notification-shaper"),
        ("event_filter", "event-filter"),
    ] {
        let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join(format!("{name}.wasm"));
        let out = run_cli(&[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            cases(dir).to_str().expect("utf-8"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" 0 failed"), "{text}");
    }
}

#[test]
fn a_failing_case_prints_a_diff_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("switchyard-cases-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("cases.json");
    std::fs::write(
        &file,
        json!({
            "slot": "bid-validator",
            "config": { "max_amount": "500" },
            "cases": [
                { "name": "over the maximum", "input": { "bid": { "amount": 900 }, "product": { "starting_price": 100, "min_increment": 10 }, "now": 0 },
                  "expect": { "verdict": "reject", "code": "over_limit" } },
                { "name": "wrongly expected to pass", "input": { "bid": { "amount": 900 }, "product": { "starting_price": 100, "min_increment": 10 }, "now": 0 },
                  "expect": { "verdict": "accept" } }
            ]
        })
        .to_string(),
    )
    .expect("write");
    let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("bid_validator.wasm");
    let out = run_cli(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ok    over the maximum"), "{text}");
    assert!(text.contains("FAIL  wrongly expected to pass"), "{text}");
    assert!(text.contains("- .verdict: \"accept\""), "{text}");
    assert!(text.contains("+ .verdict: \"reject\""), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plugin_check_says_which_slot_fits_and_why_not() {
    let wasm = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("event_filter.wasm");
    let out = run_cli(&["plugin", "check", wasm.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fits event-filter"), "{text}");
    assert!(text.contains("not bid-validator: does not fit"), "{text}");

    let dir = std::env::temp_dir().join(format!("switchyard-check-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"this is not webassembly at all").expect("write");
    let out = run_cli(&["plugin", "check", junk.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"));
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let out = run_cli(&["plugin", "check", core.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a component"));
    let _ = std::fs::remove_dir_all(dir);
}

// ---- the example plugins through the server ------------------------------

async fn examples_are_active_and_used(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    for slot in ["bid-validator", "notification-shaper", "event-filter"] {
        let info = slot_info(a, slot, None).await;
        assert_eq!(info["active"]["origin"], "bundled", "{info}");
    }
    let tenant = a.tenant().await;
    // The shaper plugin redacts card numbers (the built-in rule does not).
    let tok = env.token("bob", &tenant).await;
    let mut inbox = a
        .sse(
            &format!("/events/users/bob?tenant={tenant}&token={tok}"),
            None,
        )
        .await;
    let r = b
        .post(
            "/api/messages",
            &json!({"tenant": tenant, "from": "alice", "to": "bob", "body": "card 4111 1111 1111 1111, mail me at a@b.example"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let msg = inbox.next_of("message", secs(10)).await.expect("message");
    let preview = msg.json()["data"]["preview"]
        .as_str()
        .expect("preview")
        .to_string();
    assert!(
        preview.contains("[card]") && preview.contains("[email]"),
        "{preview}"
    );
    assert!(!preview.contains("4111"), "{preview}");
    // The validator plugin enforces a per-tenant maximum from its configuration.
    configure(
        a,
        "bid-validator",
        &format!("?tenant={tenant}"),
        json!({"max_amount": "1000"}),
    )
    .await;
    let r = put_plugin(
        a,
        "bid-validator",
        &format!("?tenant={tenant}"),
        component("bid_validator"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    // Either node may decide the bid: wait until both run the tenant's version.
    let want = sha(&component("bid_validator"));
    for n in &nodes {
        wait_for("the tenant's validator on every node", secs(10), || async {
            active_hash(n, "bid-validator", Some(&tenant))
                .await
                .as_deref()
                == Some(want.as_str())
        })
        .await;
    }
    let p = product(b, &tenant).await;
    let over = decided(b, &bid(b, &p, "u1", 5_000).await).await;
    assert_eq!(over["status"], "rejected");
    assert_eq!(over["reason"], "over_limit");
    let ok = decided(b, &bid(b, &p, "u1", 500).await).await;
    assert_eq!(ok["status"], "accepted", "{ok}");
    assert!(
        ok["decided_by"]
            .as_str()
            .expect("decided_by")
            .starts_with("bid-validator@"),
        "{ok}"
    );
    // The filter plugin honours the subscription's parameters.
    let mut cheap = a
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:1&min_amount=100&redact=bidder"),
            None,
        )
        .await;
    b.publish(
        &tenant,
        "feed:1",
        "bid.placed",
        json!({"amount": 50, "bidder": "u1"}),
    )
    .await;
    b.publish(
        &tenant,
        "feed:1",
        "bid.placed",
        json!({"amount": 150, "bidder": "u2"}),
    )
    .await;
    let e = cheap.next_data(secs(10)).await.expect("event");
    assert_eq!(
        e.json()["data"]["amount"],
        150,
        "the 50 is below min_amount"
    );
    assert!(e.json()["data"].get("bidder").is_none(), "{}", e.data);
    env.cleanup().await;
}
both_modes!(
    examples_are_active_and_used_through_the_server,
    examples_are_active_and_used
);

/// A stream that resumes far behind gets the filter's answer for every
/// event it replays, the same as live: pages after the first have their
/// answers worked out ahead, while the page before is written.
async fn the_filter_applies_to_a_long_replay(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    const N: u64 = 4_500; // more than two replay pages
    let mut first = None;
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let ids = futures_util::future::join_all(chunk.iter().map(|&n| {
            node.publish(
                &tenant,
                "feed:1",
                "bid.placed",
                json!({"amount": n % 200, "bidder": format!("u{n}"), "n": n}),
            )
        }))
        .await;
        first = first.or(ids.iter().min().copied());
    }
    let before = first.expect("published") - 1;
    let mut s = node
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:1&min_amount=100&redact=bidder"),
            Some(before),
        )
        .await;
    let want: Vec<u64> = (0..N).filter(|n| n % 200 >= 100).collect();
    let got = s.take(want.len(), secs(60)).await;
    let ns: Vec<u64> = got
        .iter()
        .map(|e| e.json()["data"]["n"].as_u64().expect("n"))
        .collect();
    let mut sorted = ns.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want, "the replay passed the wrong events");
    assert!(
        got.windows(2).all(|w| w[0].seq() < w[1].seq()),
        "out of order"
    );
    assert!(
        got.iter().all(|e| e.json()["data"].get("bidder").is_none()),
        "a bidder was not redacted"
    );
    env.cleanup().await;
}
both_modes!(
    a_long_replay_goes_through_the_event_filter,
    the_filter_applies_to_a_long_replay
);

// ---- outbid digests through the shaper ------------------------------------

async fn outbid_digest_is_shaped(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    let tenant = a.tenant().await;
    let tok = env.token("bob", &tenant).await;
    let mut inbox = a
        .sse(
            &format!("/events/users/bob?tenant={tenant}&token={tok}"),
            None,
        )
        .await;
    let p = product(b, &tenant).await;
    assert_eq!(
        decided(b, &bid(b, &p, "bob", 200).await).await["status"],
        "accepted"
    );
    assert_eq!(
        decided(b, &bid(b, &p, "alice", 1250).await).await["status"],
        "accepted"
    );
    // The bundled shaper's digest: its preview and data.
    let e = inbox
        .next_of("bid.outbid", secs(10))
        .await
        .expect("bid.outbid");
    let data = &e.json()["data"];
    assert_eq!(
        data["preview"], "Outbid on “Lamp”: the bid is now 12.50",
        "{data}"
    );
    assert_eq!(data["product_id"], p.as_str(), "{data}");
    assert_eq!(data["amount"], 1250, "{data}");
    assert_eq!(data["times"], 1, "{data}");
    assert!(data.get("title").is_none(), "shaped, not built in: {data}");
    let mut calls = 0;
    for n in &nodes {
        calls += slot_info(n, "notification-shaper", None).await["calls"]
            .as_u64()
            .expect("calls");
    }
    assert_eq!(calls, 1, "one digest, shaped on the node that decided");
    // A shaper that fails: the built-in bid.outbid goes out instead.
    configure(a, "notification-shaper", "", json!({"mode": "panic"})).await;
    let r = put_plugin(a, "notification-shaper", "", component("hostile_shaper")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let hostile = sha(&component("hostile_shaper"));
    for n in &nodes {
        wait_for("the hostile shaper on every node", secs(10), || async {
            active_hash(n, "notification-shaper", None).await.as_deref() == Some(hostile.as_str())
        })
        .await;
    }
    assert_eq!(
        decided(b, &bid(b, &p, "bob", 1300).await).await["status"],
        "accepted"
    );
    let alice_last = bid(b, &p, "alice", 1400).await;
    assert_eq!(decided(b, &alice_last).await["status"], "accepted");
    let e = inbox
        .next_of("bid.outbid", secs(10))
        .await
        .expect("bid.outbid");
    let data = &e.json()["data"];
    assert_eq!(data["title"], "Lamp", "{data}");
    assert_eq!(data["amount"], 1400, "{data}");
    assert_eq!(data["bid_id"], alice_last.as_str(), "{data}");
    assert_eq!(data["times"], 1, "{data}");
    assert_eq!(
        data["preview"], "Outbid on “Lamp”: the bid is now 14.00",
        "{data}"
    );
    let mut trapped = 0;
    for n in &nodes {
        trapped += slot_info(n, "notification-shaper", None).await["errors"]["trap"]
            .as_u64()
            .unwrap_or_default();
    }
    // Two digests (alice outbid by bob, then bob by alice), each a failed call.
    assert_eq!(trapped, 2);
    env.cleanup().await;
}
both_modes!(
    an_outbid_user_gets_the_shaped_digest_and_a_failing_shaper_falls_back,
    outbid_digest_is_shaped
);

// ---- hostile components ----------------------------------------------------

/// Installs the hostile validator in `mode`; a bid is then rejected with
/// `plugin_error`, the error is counted under `kind`, and the node serves on.
async fn hostile_validator(mode: &str, kind: &str) {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", 100)
        .set("SWITCHYARD_PLUGIN_MEMORY_MB", 16);
    let node = env.start().await;
    let tenant = node.tenant().await;
    configure(&node, "bid-validator", "", json!({"mode": mode})).await;
    let r = put_plugin(&node, "bid-validator", "", component("hostile_validator")).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let p = product(&node, &tenant).await;
    let b = decided(&node, &bid(&node, &p, "u1", 200).await).await;
    assert_eq!(b["status"], "rejected", "{b}");
    assert_eq!(b["reason"], "plugin_error", "{b}");
    let info = slot_info(&node, "bid-validator", None).await;
    assert_eq!(info["errors"][kind], 1, "{info}");
    // The same node, a well-behaved configuration: bids are accepted again.
    configure(&node, "bid-validator", "", json!({})).await;
    let b = decided(&node, &bid(&node, &p, "u2", 300).await).await;
    assert_eq!(b["status"], "accepted", "{b}");
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_infinite_loop_times_out() {
    hostile_validator("loop", "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_memory_bomb_hits_the_cap() {
    hostile_validator("oom", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_panic_traps() {
    hostile_validator("panic", "trap").await;
}

/// The deterministic WASI world, seen by a component that reads what
/// language runtimes read (clocks, random bytes, environment, arguments,
/// stdin) and tries a file and a socket: two streams of the same shape get
/// byte-identical data for the same event; the clock reads the event's time;
/// another event gives other random bytes; the environment is empty; the
/// file and the socket are errors the guest sees (no trap, nothing counted);
/// what it prints becomes the node's log lines.
async fn wasi_is_deterministic(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let r = put_plugin(
        &node,
        "event-filter",
        &format!("?tenant={tenant}"),
        component("wasi_probe"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    // Different query parameters: two shapes, so two calls per event.
    let mut a = node
        .sse(&format!("/events?tenant={tenant}&topic=t:1&probe=a"), None)
        .await;
    let mut b = node
        .sse(&format!("/events?tenant={tenant}&topic=t:1&probe=b"), None)
        .await;
    let first = node.publish(&tenant, "t:1", "tick", json!({"i": 1})).await;
    let second = node.publish(&tenant, "t:1", "tick", json!({"i": 1})).await;
    let got_a = a.take(2, secs(10)).await;
    let got_b = b.take(2, secs(10)).await;
    assert_eq!(
        got_a.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        vec![first, second]
    );
    assert_eq!(
        got_b.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        vec![first, second]
    );
    let seen = |e: &support::SseEvent| e.json()["data"].clone();
    // The subscription is part of the input, so the two shapes may differ in
    // their random bytes; replaying one shape must not.
    let mut again = node
        .sse(
            &format!("/events?tenant={tenant}&topic=t:1&probe=a"),
            Some(0),
        )
        .await;
    let replayed = again.take(2, secs(10)).await;
    for (live, replay) in got_a.iter().zip(&replayed) {
        assert_eq!(seen(live), seen(replay), "same input, same output");
    }
    for e in got_a.iter().chain(&got_b) {
        let d = seen(e);
        assert_eq!(
            d["wall_ms"],
            e.json()["ts"],
            "the clock reads the event's time: {d}"
        );
        assert_eq!(
            d["mono_elapsed_ns"], 0,
            "time stands still within a call: {d}"
        );
        assert_eq!(d["env"], 0, "{d}");
        assert_eq!(d["args"], 0, "{d}");
        assert_eq!(d["stdin"]["Ok"], 0, "{d}");
        assert!(d["file"]["Err"].is_string(), "no files: {d}");
        assert!(d["tcp"]["Err"].is_string(), "no sockets: {d}");
        assert_eq!(d["random"].as_str().map(str::len), Some(32), "{d}");
    }
    assert_ne!(
        seen(&got_a[0])["random"],
        seen(&got_a[1])["random"],
        "another event, other random bytes"
    );
    let info = slot_info(&node, "event-filter", Some(&tenant)).await;
    assert_eq!(info["errors"]["trap"], 0, "{info}");
    let log = node.log_text();
    assert!(
        log.contains(&format!("probe saw event {first}")),
        "stdout goes to the log:\n{log}"
    );
    assert!(
        log.contains("probe stderr line"),
        "stderr goes to the log:\n{log}"
    );
    env.cleanup().await;
}
both_modes!(
    wasi_reads_the_call_input_and_refuses_files_and_sockets,
    wasi_is_deterministic
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_garbage_verdict_is_refused() {
    hostile_validator("bad_code", "bad_output").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shaper_output_falls_back_to_a_plain_notification() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let r = put_plugin(
        &node,
        "notification-shaper",
        "",
        component("hostile_shaper"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let tok = env.token("bob", &tenant).await;
    let mut inbox = node
        .sse(
            &format!("/events/users/bob?tenant={tenant}&token={tok}"),
            None,
        )
        .await;
    for (i, mode) in ["huge", "garbage", "many", "loop", "panic"]
        .iter()
        .enumerate()
    {
        configure(&node, "notification-shaper", "", json!({"mode": mode})).await;
        let r = node
            .post(
                "/api/messages",
                &json!({"tenant": tenant, "from": "alice", "to": "bob", "body": format!("hello {i} a@b.example")}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{mode}");
        let m = inbox.next_of("message", secs(10)).await.expect("message");
        // The built-in notification: the preview with the address redacted.
        assert_eq!(
            m.json()["data"]["preview"],
            format!("hello {i} [email]"),
            "{mode}"
        );
    }
    let info = slot_info(&node, "notification-shaper", None).await;
    assert_eq!(info["errors"]["bad_output"], 3, "{info}");
    assert_eq!(info["errors"]["timeout"], 1, "{info}");
    assert_eq!(info["errors"]["trap"], 1, "{info}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filter_fails_closed_for_its_subscription_only() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", 20);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let r = put_plugin(&node, "event-filter", "", component("hostile_filter")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut plain = node
        .sse(&format!("/events?tenant={tenant}&topic=t:1"), None)
        .await;
    let mut hang = node
        .sse(&format!("/events?tenant={tenant}&topic=t:1&hang=1"), None)
        .await;
    let mut crash = node
        .sse(&format!("/events?tenant={tenant}&topic=t:1&crash=1"), None)
        .await;
    let mut garbage = node
        .sse(
            &format!("/events?tenant={tenant}&topic=t:1&garbage=1"),
            None,
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(node.publish(&tenant, "t:1", "tick", json!({"i": i})).await);
    }
    let got: Vec<u64> = plain
        .take(3, secs(10))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, ids);
    for s in [&mut hang, &mut crash, &mut garbage] {
        assert!(
            s.next_data(Duration::from_millis(300)).await.is_none(),
            "a failed filter delivers nothing"
        );
    }
    let info = slot_info(&node, "event-filter", None).await;
    assert_eq!(info["errors"]["timeout"], 3, "{info}");
    assert_eq!(info["errors"]["trap"], 3, "{info}");
    assert_eq!(info["errors"]["bad_output"], 3, "{info}");
    env.cleanup().await;
}

/// An upload is answered at once while its component compiles off the
/// serving path (`202`, `compiling`), the old version serving meanwhile; it
/// then becomes active. A component that fails to compile is refused with
/// the reason in `GET /admin/plugins`. A restart loads the stored version
/// from the compiled-code cache instead of compiling it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_compile_off_the_serving_path_and_a_restart_reuses_the_code() {
    let env = Env::new(Mode::Embedded).await;
    let mut node = env.start().await;
    let tenant = node.tenant().await;
    let bytes = variant(&component("event_filter"), 4242);
    let hash = sha(&bytes);
    let r = node
        .http
        .put(format!(
            "{}/admin/plugins/event-filter?tenant={tenant}",
            node.url
        ))
        .bearer_auth(ADMIN)
        .body(bytes.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["state"], "compiling", "{answer}");
    assert_eq!(answer["version"], hash.as_str(), "{answer}");
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    wait_for("the upload to become active", secs(20), || async {
        active_hash(&node, "event-filter", Some(&tenant))
            .await
            .as_deref()
            == Some(hash.as_str())
    })
    .await;
    let info = slot_info(&node, "event-filter", Some(&tenant)).await;
    assert!(info["compiling"].is_null(), "{info}");
    assert!(node.metric("switchyard_plugin_compiles_total").await >= 1.0);

    // A component whose body does not compile: refused, the active one stays.
    let mut broken = bytes.clone();
    broken.truncate(bytes.len() / 2);
    let r = node
        .http
        .put(format!(
            "{}/admin/plugins/event-filter?tenant={tenant}",
            node.url
        ))
        .bearer_auth(ADMIN)
        .body(broken.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    wait_for("the broken upload to be refused", secs(20), || async {
        slot_info(&node, "event-filter", Some(&tenant)).await["last_error"]["hash"]
            == sha(&broken).as_str()
    })
    .await;
    let info = slot_info(&node, "event-filter", Some(&tenant)).await;
    assert!(
        info["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("compile"),
        "{info}"
    );
    assert_eq!(
        active_hash(&node, "event-filter", Some(&tenant))
            .await
            .as_deref(),
        Some(hash.as_str())
    );

    // Restart on the same data: nothing is compiled again.
    node.kill().await;
    let node = env.start().await;
    wait_for(
        "the stored version to be active again",
        secs(20),
        || async {
            active_hash(&node, "event-filter", Some(&tenant))
                .await
                .as_deref()
                == Some(hash.as_str())
        },
    )
    .await;
    assert_eq!(node.metric("switchyard_plugin_compiles_total").await, 0.0);
    assert!(node.metric("switchyard_plugin_cache_hits_total").await >= 1.0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_wrong_world_uploads_are_refused_and_the_old_version_stays() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let before = active_hash(&node, "bid-validator", None)
        .await
        .expect("bundled validator");
    for (bytes, says) in [
        (
            component("event_filter"),
            "does not fit the `bid-validator` world",
        ),
        (
            b"random bytes, not a component".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            component("bid_validator")[..1000].to_vec(),
            "does not compile",
        ),
    ] {
        let r = put_plugin(&node, "bid-validator", "", bytes).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "plugin_refused");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains(says),
            "{body}"
        );
        let info = slot_info(&node, "bid-validator", None).await;
        assert!(
            info["last_error"]["message"]
                .as_str()
                .expect("last_error")
                .contains(says),
            "{info}"
        );
        assert_eq!(
            active_hash(&node, "bid-validator", None).await.as_deref(),
            Some(before.as_str())
        );
    }
    // A broken file in the plugins dir is refused the same way.
    let dir = env.data_dir.join("plugins.d");
    std::fs::write(dir.join("bid-validator.wasm"), b"garbage").expect("write");
    wait_for("the broken file to be refused", secs(10), || async {
        slot_info(&node, "bid-validator", None).await["last_error"]["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("file:"))
    })
    .await;
    assert_eq!(
        active_hash(&node, "bid-validator", None).await.as_deref(),
        Some(before.as_str())
    );
    assert!(node
        .log_text()
        .contains("plugin refused; the current version stays active"));
    env.cleanup().await;
}

// ---- hot swap, rollback, shadow, cluster -----------------------------------

async fn hot_swap_under_load(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    let tenant = a.tenant().await;
    let p = product(a, &tenant).await;
    let mut watchers = Vec::new();
    for node in [a, b] {
        watchers.push(
            node.sse(&format!("/events/products/{p}?tenant={tenant}"), None)
                .await,
        );
    }
    let base = component("bid_validator");
    let mut tags: HashSet<String> = HashSet::new();
    tags.insert(format!("bid-validator@{}", &sha(&base)[..12]));
    // Bidders run while the validator is replaced ten times, alternately by
    // file (on node a's plugins dir) and by the admin API (on node b).
    let bidding = {
        let (url, p) = (b.url.clone(), p.clone());
        let http = b.http.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200i64 {
                let r = http
                    .post(format!("{url}/api/products/{p}/bids"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"bidder_id": format!("u{}", i % 7), "amount": 100 + i * 10}))
                    .send()
                    .await
                    .expect("bid");
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                ids.push(
                    r.json::<Value>().await.expect("json")["bid_id"]
                        .as_str()
                        .expect("id")
                        .to_string(),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
    };
    let dir = env.data_dir.join("plugins.d");
    for n in 1..=10u32 {
        let v = variant(&base, n);
        tags.insert(format!("bid-validator@{}", &sha(&v)[..12]));
        if n % 2 == 0 {
            let tmp = dir.join(format!(".incoming-{n}"));
            std::fs::write(&tmp, &v).expect("write");
            std::fs::rename(&tmp, dir.join("bid-validator.wasm")).expect("rename");
        } else {
            let r = put_plugin(b, "bid-validator", "", v.clone()).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let want = sha(&v);
        wait_for(
            "the new version to be active on both nodes",
            secs(10),
            || {
                let want = want.clone();
                async move {
                    active_hash(a, "bid-validator", None).await.as_deref() == Some(&want)
                        && active_hash(b, "bid-validator", None).await.as_deref() == Some(&want)
                }
            },
        )
        .await;
    }
    let ids = bidding.await.expect("bidders");
    let mut accepted = Vec::new();
    for id in &ids {
        let d = decided(b, id).await;
        let by = d["decided_by"].as_str().expect("decided_by").to_string();
        assert!(tags.contains(&by), "decided by an unknown version {by}");
        if d["status"] == "accepted" {
            accepted.push(d["amount"].as_i64().expect("amount"));
        }
    }
    assert_eq!(
        accepted.len(),
        ids.len(),
        "every increasing bid is accepted"
    );
    // Every decision reached every stream once, in order, and no stream closed.
    for w in &mut watchers {
        let mut seen = Vec::new();
        while seen.len() < accepted.len() {
            let e = w
                .next_of("bid.accepted", secs(20))
                .await
                .expect("stream stays open");
            seen.push(e.json()["data"]["amount"].as_i64().expect("amount"));
        }
        assert_eq!(seen, accepted);
    }
    // Rollback returns to the previous version, on both nodes.
    let history = slot_info(a, "bid-validator", None).await["history"].clone();
    let previous = history[0].as_str().expect("history").to_string();
    let r = a
        .post("/admin/plugins/bid-validator/rollback", &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    wait_for("rollback on both nodes", secs(10), || {
        let previous = previous.clone();
        async move {
            active_hash(a, "bid-validator", None).await.as_deref() == Some(&previous)
                && active_hash(b, "bid-validator", None).await.as_deref() == Some(&previous)
        }
    })
    .await;
    let swaps = slot_info(b, "bid-validator", None).await["swaps"]
        .as_u64()
        .expect("swaps");
    assert!(swaps >= 11, "swaps counted: {swaps}");
    env.cleanup().await;
}
both_modes!(hot_swap_under_load_loses_nothing, hot_swap_under_load);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_on_one_node_is_active_on_the_other_within_a_bound() {
    let env = Env::new(Mode::Cluster).await;
    let nodes = env.start_nodes(2).await;
    let v = variant(&component("bid_validator"), 77);
    let want = sha(&v);
    let started = Instant::now();
    let r = put_plugin(&nodes[0], "bid-validator", "", v).await;
    assert_eq!(r.status(), StatusCode::OK);
    wait_for("the other node to switch", secs(10), || {
        let want = want.clone();
        let b = &nodes[1];
        async move { active_hash(b, "bid-validator", None).await.as_deref() == Some(&want) }
    })
    .await;
    // A bound, not a speed goal: the other node polls every 250 ms and then
    // compiles the component (a debug build, maybe under a full test run);
    // the release figure is in docs/benchmarks.md.
    let took = started.elapsed();
    assert!(took < secs(5), "active on the other node after {took:?}");
    env.cleanup().await;
}

async fn shadow_then_promote(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    let tenant = a.tenant().await;
    let q = format!("?tenant={tenant}");
    configure(a, "bid-validator", &q, json!({"max_amount": "1000"})).await;
    let r = put_plugin(a, "bid-validator", &q, component("bid_validator")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The candidate has no maximum: it would accept what the active one refuses.
    let r = put_plugin(
        a,
        "bid-validator",
        &format!("{q}&mode=shadow"),
        component("hostile_validator"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    wait_for("the candidate on both nodes", secs(10), || async {
        !slot_info(b, "bid-validator", Some(&tenant)).await["shadow"].is_null()
    })
    .await;
    let p = product(b, &tenant).await;
    let d1 = decided(b, &bid(b, &p, "u1", 500).await).await;
    let d2 = decided(b, &bid(b, &p, "u2", 5_000).await).await;
    assert_eq!(d1["status"], "accepted");
    assert_eq!(
        d2["status"], "rejected",
        "the shadow's verdict is not applied"
    );
    assert_eq!(d2["reason"], "over_limit");
    let mut compared = 0;
    let mut disagreed = 0;
    let mut examples = Vec::new();
    for node in &nodes {
        let s = slot_info(node, "bid-validator", Some(&tenant)).await["shadow"].clone();
        compared += s["compared"].as_u64().expect("compared");
        disagreed += s["disagreed"].as_u64().expect("disagreed");
        examples.extend(s["examples"].as_array().expect("examples").clone());
    }
    assert_eq!((compared, disagreed), (2, 1));
    assert_eq!(examples.len(), 1);
    assert_eq!(examples[0]["active"]["code"], "over_limit");
    assert_eq!(examples[0]["candidate"]["verdict"], "accept");
    let r = a
        .post(
            &format!("/admin/plugins/bid-validator/promote{q}"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let want = sha(&component("hostile_validator"));
    wait_for("promotion on both nodes", secs(10), || {
        let (want, tenant) = (want.clone(), tenant.clone());
        async move {
            active_hash(b, "bid-validator", Some(&tenant))
                .await
                .as_deref()
                == Some(&want)
        }
    })
    .await;
    let d3 = decided(b, &bid(b, &p, "u2", 6_000).await).await;
    assert_eq!(d3["status"], "accepted", "{d3}");
    env.cleanup().await;
}
both_modes!(
    shadow_candidates_are_compared_then_promoted,
    shadow_then_promote
);

// ---- the event filter economy ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_runs_once_per_event_per_shape_not_per_connection() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let shapes = ["min_amount=10", "min_amount=100", "redact=bidder", ""];
    let mut streams = Vec::new();
    for i in 0..24 {
        let extra = shapes[i % shapes.len()];
        let sep = if extra.is_empty() { "" } else { "&" };
        streams.push(
            node.sse(
                &format!("/events?tenant={tenant}&topic=feed:9{sep}{extra}"),
                None,
            )
            .await,
        );
    }
    let calls = || async {
        slot_info(&node, "event-filter", None).await["calls"]
            .as_u64()
            .expect("calls")
    };
    let before = calls().await;
    let events = 5;
    for i in 0..events {
        node.publish(
            &tenant,
            "feed:9",
            "bid.placed",
            json!({"amount": 50 * (i + 1), "bidder": "u1"}),
        )
        .await;
    }
    let mut delivered: HashMap<usize, usize> = HashMap::new();
    for (i, s) in streams.iter_mut().enumerate() {
        let want = match i % shapes.len() {
            0 => 5, // 50..250, all >= 10
            1 => 4, // 100..250
            _ => 5,
        };
        let got = s.take(want, secs(10)).await;
        assert_eq!(got.len(), want);
        if i % shapes.len() == 2 {
            assert!(got.iter().all(|e| e.json()["data"].get("bidder").is_none()));
        }
        *delivered.entry(i % shapes.len()).or_default() += got.len();
    }
    let after = calls().await;
    assert_eq!(
        after - before,
        events as u64 * shapes.len() as u64,
        "one call per event per shape"
    );
    env.cleanup().await;
}

// ---- replay ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replay_reports_where_a_candidate_would_decide_otherwise() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let p = product(&node, &tenant).await;
    for (i, amount) in [200, 300, 400].iter().enumerate() {
        let d = decided(&node, &bid(&node, &p, &format!("u{i}"), *amount).await).await;
        assert_eq!(d["status"], "accepted");
    }
    let data_dir = env.data_dir.to_str().expect("utf-8").to_string();
    let same = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("bid_validator.wasm");
    let out = run_cli(&[
        "plugin",
        "replay",
        same.to_str().expect("utf-8"),
        "--data-dir",
        &data_dir,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 decisions replayed, 0 differ"), "{text}");
    let strict = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join("hostile_validator.wasm");
    let out = run_cli(&[
        "plugin",
        "replay",
        strict.to_str().expect("utf-8"),
        "--data-dir",
        &data_dir,
        "--set",
        "mode=reject",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 decisions replayed, 3 differ"), "{text}");
    assert!(
        text.contains("taken `accept`") && text.contains("candidate `reject hostile`"),
        "{text}"
    );
    env.cleanup().await;
}

fn artifact(name: &str) -> String {
    PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS"))
        .join(format!("{name}.wasm"))
        .to_str()
        .expect("utf-8")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replay_compares_a_shaper_with_the_notifications_sent() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    for body in [
        "hello",
        "card 4111 1111 1111 1111 please",
        "mail a@b.example",
    ] {
        let r = node
            .post(
                "/api/messages",
                &json!({"tenant": tenant, "from": "alice", "to": "bob", "body": body}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let data_dir = env.data_dir.to_str().expect("utf-8").to_string();
    // The shaper that sent them: nothing differs.
    let out = run_cli(&[
        "plugin",
        "replay",
        &artifact("notification_shaper"),
        "--data-dir",
        &data_dir,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 messages replayed, 0 differ"), "{text}");
    // Another shaper: every message differs, with what was sent and what it
    // would send.
    let out = run_cli(&[
        "plugin",
        "replay",
        &artifact("hostile_shaper"),
        "--data-dir",
        &data_dir,
        "--tenant",
        &tenant,
        "--set",
        "mode=plain",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 messages replayed, 3 differ"), "{text}");
    assert!(
        text.contains("[card] please") && text.contains(r#""preview":"plain""#),
        "{text}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replay_runs_a_filter_over_recorded_events_for_a_shape() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    for (amount, bidder) in [(50, "u1"), (150, "u2"), (1500, "u3")] {
        node.publish(
            &tenant,
            "feed:1",
            "bid.placed",
            json!({"amount": amount, "bidder": bidder}),
        )
        .await;
    }
    node.publish(&tenant, "other:1", "note", json!({"amount": 1}))
        .await;
    let data_dir = env.data_dir.to_str().expect("utf-8").to_string();
    let replay = |shape: &'static str| {
        run_cli(&[
            "plugin",
            "replay",
            &artifact("event_filter"),
            "--data-dir",
            &data_dir,
            "--topic",
            "feed:1",
            "--shape",
            shape,
        ])
    };
    // Against the active filter (the same component): nothing differs.
    let out = replay("min_amount=100");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 events replayed, 0 differ"), "{text}");
    assert!(
        text.contains("candidate: pass 2, drop 1, replace 0, failed 0"),
        "{text}"
    );
    assert!(text.contains("compared with: event-filter@"), "{text}");
    // With no filter active, the built-in passes everything.
    let r = node
        .http
        .delete(format!("{}/admin/plugins/event-filter", node.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let out = replay("redact=bidder");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("3 events replayed, 3 differ"), "{text}");
    assert!(
        text.contains("active:    pass 3, drop 0, replace 0")
            && text.contains("candidate: pass 0, drop 0, replace 3"),
        "{text}"
    );
    assert!(
        text.contains(r#"builtin `pass`, candidate `replace {"amount":50}`"#),
        "{text}"
    );
    env.cleanup().await;
}
