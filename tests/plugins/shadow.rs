//! A candidate in shadow beside the active version, then promoted.

use super::*;

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
