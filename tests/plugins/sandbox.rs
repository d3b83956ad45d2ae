//! Hostile components fail their own calls only; the WASI world is
//! deterministic.

use super::*;

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

/// The status and error code of `GET url` (a stream: its headers only).
async fn open_status(http: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = http.get(url).send().await.expect("request");
    let status = r.status();
    if status == StatusCode::OK {
        return (status, String::new());
    }
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// A plugin that sleeps (a WASI monotonic-clock pollable: Rust's
/// `std::thread::sleep`) is held to its call's deadline like guest code: a
/// stream authorizer that sleeps 30 s, or sleeps a millisecond at a time,
/// fails its requests as `timeout` at once (`503 plugin_error`), many of
/// them at a time hold no host thread (`/health` answers, another tenant's
/// streams open and deliver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_plugin_times_out_without_holding_a_thread() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let slow = node.tenant().await;
    let other = node.tenant().await;
    let q = format!("?tenant={slow}");
    configure(&node, "stream-authorizer", &q, json!({"mode": "sleep"})).await;
    let r = put_plugin(
        &node,
        "stream-authorizer",
        &q,
        component("hostile_authorizer"),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let url = format!("{}/events?tenant={slow}&topic=t:1", node.url);
    let started = Instant::now();
    assert_eq!(
        open_status(&node.http, &url).await,
        (StatusCode::SERVICE_UNAVAILABLE, "plugin_error".to_string())
    );
    // Many at once (more than the runtime's blocking threads would
    // survive for 30 s each).
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let http = node.http.clone();
        let url = url.clone();
        opens.spawn(async move { open_status(&http, &url).await });
    }
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    let mut fine = node
        .sse(&format!("/events?tenant={other}&topic=t:1"), None)
        .await;
    let id = node.publish(&other, "t:1", "tick", json!({"i": 1})).await;
    assert_eq!(
        fine.take(1, secs(10))
            .await
            .iter()
            .map(|e| e.seq())
            .collect::<Vec<_>>(),
        vec![id]
    );
    while let Some(r) = opens.join_next().await {
        assert_eq!(
            r.expect("request task"),
            (StatusCode::SERVICE_UNAVAILABLE, "plugin_error".to_string())
        );
    }
    assert!(
        started.elapsed() < secs(20),
        "sleeping plugins answered only after {:?}",
        started.elapsed()
    );
    // A millisecond at a time adds up to the deadline all the same.
    configure(&node, "stream-authorizer", &q, json!({"mode": "naps"})).await;
    let started = Instant::now();
    assert_eq!(
        open_status(&node.http, &url).await,
        (StatusCode::SERVICE_UNAVAILABLE, "plugin_error".to_string())
    );
    assert!(started.elapsed() < secs(5), "{:?}", started.elapsed());
    let info = slot_info(&node, "stream-authorizer", Some(&slow)).await;
    assert_eq!(info["errors"]["timeout"], 202, "{info}");
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}

/// `plugin test` holds a sleeping filter to the deadline too: the case
/// fails as a timeout at once instead of sleeping 30 s.
#[test]
fn plugin_test_of_a_sleeping_filter_times_out_at_once() {
    let dir = std::env::temp_dir().join(format!("switchyard-sleep-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("cases.json");
    std::fs::write(
        &file,
        json!({
            "slot": "event-filter",
            "config": { "mode": "sleep" },
            "cases": [
                { "name": "sleeps", "input": { "event": { "id": "e1", "topic": "t:1", "type": "tick", "data": {} } },
                  "expect": { "result": "pass" } }
            ]
        })
        .to_string(),
    )
    .expect("write");
    let started = Instant::now();
    let out = run_cli(&[
        "plugin",
        "test",
        &artifact("hostile_filter"),
        file.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("timeout"), "{text}");
    assert!(started.elapsed() < secs(20), "{:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Host resources are capped per instance and not carried between calls: a
/// stream authorizer that holds 5,000 pollables at once fails its call as
/// `memory` (`503 plugin_error`), and one that leaks 50 per call and never
/// drops them keeps working call after call (an instance that still holds
/// resources after a call is not reused, so none accumulate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_resources_are_capped_and_not_carried_between_calls() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let q = format!("?tenant={tenant}");
    configure(&node, "stream-authorizer", &q, json!({"mode": "hoard"})).await;
    let r = put_plugin(
        &node,
        "stream-authorizer",
        &q,
        component("hostile_authorizer"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Anonymous: the admin token would bypass the authorizer.
    let anonymous = reqwest::Client::new();
    let url = format!("{}/events?tenant={tenant}&topic=t:1", node.url);
    assert_eq!(
        open_status(&anonymous, &url).await,
        (StatusCode::SERVICE_UNAVAILABLE, "plugin_error".to_string())
    );
    let info = slot_info(&node, "stream-authorizer", Some(&tenant)).await;
    assert_eq!(info["errors"]["memory"], 1, "{info}");

    configure(&node, "stream-authorizer", &q, json!({"mode": "leak"})).await;
    for i in 0..40 {
        assert_eq!(
            open_status(&anonymous, &url).await,
            (StatusCode::OK, String::new()),
            "call {i}"
        );
    }
    let info = slot_info(&node, "stream-authorizer", Some(&tenant)).await;
    assert_eq!(info["errors"]["memory"], 1, "{info}");
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}
