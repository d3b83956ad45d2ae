//! The event filter runs once per event per subscription shape.

use super::*;

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

/// Query parameters a filter does not read make no new shapes: with the
/// parameters its configuration names (`shape_params`), streams that differ only in
/// others share one call per event; without a declaration, a tenant's
/// streams may hold at most 64 distinct shapes, and a new one past that is
/// refused with `429 too_many_shapes` (a stream of a shape already open
/// still opens). Streams of one shape resuming over the same events share
/// the filter's answers: one call per replayed event, not one per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_come_from_declared_parameters_and_replay_filters_once_per_shape() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let q = format!("?tenant={tenant}");
    configure(
        &node,
        "event-filter",
        &q,
        json!({"shape_params": "min_amount,redact"}),
    )
    .await;
    let r = put_plugin(&node, "event-filter", &q, component("event_filter")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let calls = || async {
        slot_info(&node, "event-filter", Some(&tenant)).await["calls"]
            .as_u64()
            .expect("calls")
    };
    let mut streams = Vec::new();
    for i in 0..80 {
        streams.push(
            node.sse(
                &format!("/events?tenant={tenant}&topic=feed:1&min_amount=10&x={i}"),
                None,
            )
            .await,
        );
    }
    let before = calls().await;
    for i in 0..3 {
        node.publish(&tenant, "feed:1", "bid.placed", json!({"amount": 50 + i}))
            .await;
    }
    for s in streams.iter_mut() {
        assert_eq!(s.take(3, secs(10)).await.len(), 3);
    }
    assert_eq!(calls().await - before, 3, "one shape: one call per event");

    // Replay: five streams of one shape resume from the start of a topic
    // no live stream follows.
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            node.publish(&tenant, "feed:2", "bid.placed", json!({"amount": 100 + i}))
                .await,
        );
    }
    let before = calls().await;
    for _ in 0..5 {
        let mut s = node
            .sse(
                &format!("/events?tenant={tenant}&topic=feed:2&min_amount=10"),
                Some(0),
            )
            .await;
        let got: Vec<u64> = s.take(10, secs(10)).await.iter().map(|e| e.seq()).collect();
        assert_eq!(got, ids);
    }
    assert_eq!(
        calls().await - before,
        10,
        "one call per replayed event and shape"
    );

    // Without a declaration (the hostile filter declares none) every other
    // parameter counts, up to the cap.
    let tenant = node.tenant().await;
    let r = put_plugin(
        &node,
        "event-filter",
        &format!("?tenant={tenant}"),
        component("hostile_filter"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut open = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let r = node
            .http
            .get(format!(
                "{}/events?tenant={tenant}&topic=feed:3&y={i}",
                node.url
            ))
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::OK {
            open.push(r);
            continue;
        }
        let status = r.status();
        let body: Value = r.json().await.expect("error body");
        refused = Some((i, status, body));
        break;
    }
    let (at, status, body) = refused.expect("a new shape past the cap is refused");
    assert_eq!(at, 64, "{body}");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "too_many_shapes", "{body}");
    let again = node
        .http
        .get(format!(
            "{}/events?tenant={tenant}&topic=feed:3&y=7",
            node.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a shape already open still opens"
    );
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    env.cleanup().await;
}

/// The bundled example filter declares the parameters it reads in its
/// component (`export_event_filter!(.., params = [..])`): with no
/// configuration at all, anonymous streams with made-up parameters share
/// one shape and cannot use up the tenant's 64, while `min_amount` still
/// filters; a `shape_params` configuration overrides the declaration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_filter_declares_its_parameters_so_made_up_ones_make_no_shapes() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let calls = || async {
        slot_info(&node, "event-filter", None).await["calls"]
            .as_u64()
            .expect("calls")
    };
    let mut streams = Vec::new();
    for i in 0..100 {
        let r = node
            .http
            .get(format!(
                "{}/events?tenant={tenant}&topic=feed:1&min_amount=60&junk={i}",
                node.url
            ))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "stream {i}");
        streams.push(r);
    }
    drop(streams);
    let mut a = node
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:2&min_amount=60&x=1"),
            None,
        )
        .await;
    let mut b = node
        .sse(
            &format!("/events?tenant={tenant}&topic=feed:2&min_amount=60&x=2"),
            None,
        )
        .await;
    let before = calls().await;
    for amount in [50, 70] {
        node.publish(&tenant, "feed:2", "bid.placed", json!({ "amount": amount }))
            .await;
    }
    for s in [&mut a, &mut b] {
        let got = s.take(1, secs(10)).await;
        assert_eq!(
            got[0].json()["data"]["amount"],
            70,
            "min_amount still filters"
        );
    }
    assert_eq!(calls().await - before, 2, "one shape: one call per event");
    drop((a, b));

    // Configured names win over the component's: `x` now makes shapes.
    configure(
        &node,
        "event-filter",
        &format!("?tenant={tenant}"),
        json!({"shape_params": "x"}),
    )
    .await;
    let r = put_plugin(
        &node,
        "event-filter",
        &format!("?tenant={tenant}"),
        component("event_filter"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut open = Vec::new();
    let mut refused = None;
    for i in 0..80 {
        let r = node
            .http
            .get(format!(
                "{}/events?tenant={tenant}&topic=feed:3&x={i}",
                node.url
            ))
            .send()
            .await
            .expect("request");
        if r.status() != StatusCode::OK {
            refused = Some((i, r.status()));
            break;
        }
        open.push(r);
    }
    assert_eq!(refused, Some((64, StatusCode::TOO_MANY_REQUESTS)));
    env.cleanup().await;
}
