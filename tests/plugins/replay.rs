//! `switchyard plugin replay` over what the system of record holds.

use super::*;

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
