//! The example plugins through the server, and outbid digests through the
//! notification shaper.

use super::*;

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
    // A call that misses its deadline drops its event (filters fail
    // closed); on a loaded machine 50 ms can pass between two instructions,
    // and this test is about which events a replay passes, not deadlines.
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", 5_000);
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
