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
