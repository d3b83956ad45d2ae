//! The stream authorizer: the built-in rule without a component, the
//! bidders-only example refusing streams and REST history with its code,
//! a swap while streams are open, a shadow candidate's report, a failing
//! authorizer refusing (it fails closed), and `plugin replay` over the
//! recorded stream requests.

use super::*;
use support::Sse;
use switchyard::auth::{now_secs, Claims};

/// A user token of `tenant` whose claims list `bid_on` (the products the
/// user has bid on, as a marketplace's identity provider would put them).
async fn bidder_token(env: &Env, sub: &str, tenant: &str, bid_on: &[&str]) -> String {
    let keys = env.keys().await;
    let claims = Claims {
        sub: sub.into(),
        tenant: tenant.into(),
        exp: now_secs() + 3_600,
        iat: now_secs(),
    };
    let mut extra = serde_json::Map::new();
    extra.insert("bid_on".into(), json!(bid_on));
    keys.sign_with_claims(&claims, &extra)
}

/// Opens `/events?topic=...` of `tenant` with `token` (`None`: anonymous).
async fn open(
    node: &Node,
    tenant: &str,
    topics: &[&str],
    extra: &str,
    token: Option<&str>,
) -> Result<Sse, (StatusCode, String)> {
    let mut url = format!("{}/events?tenant={tenant}", node.url);
    for t in topics {
        url.push_str(&format!("&topic={t}"));
    }
    url.push_str(extra);
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    Sse::connect(&url, None, &headers).await
}

/// The status and error code of a refused stream (`200`, `""` when open).
async fn refusal(
    node: &Node,
    tenant: &str,
    topics: &[&str],
    extra: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    match open(node, tenant, topics, extra, token).await {
        Ok(_) => (StatusCode::OK, String::new()),
        Err((s, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (s, v["error"]["code"].as_str().unwrap_or(&body).to_string())
        }
    }
}

/// `GET /api/topics/{topic}/events` of `tenant` with `token`: status and
/// error code (`""` when it answered).
async fn history(
    node: &Node,
    tenant: &str,
    topic: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = node.http.get(format!(
        "{}/api/topics/{topic}/events?tenant={tenant}",
        node.url
    ));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

async fn activate(node: &Node, tenant: &str, bytes: Vec<u8>) {
    let r = put_plugin(
        node,
        "stream-authorizer",
        &format!("?tenant={tenant}"),
        bytes,
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

/// With no component, streams and history follow the host's rules alone;
/// with the bidders-only example active for the tenant, a `bids:{id}`
/// stream or its history is refused (`403` and the plugin's code) to all but
/// the product's bidders, on every node; other topics and the admin token
/// are unaffected, and the host's own rules still come first.
async fn bidders_only_streams(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (a, b) = (&nodes[0], nodes.last().expect("node"));
    let tenant = a.tenant().await;
    let ann = bidder_token(&env, "ann", &tenant, &["p1"]).await;
    let bob = bidder_token(&env, "bob", &tenant, &["p9"]).await;

    // The built-in rule: any caller of the tenant may read `bids:p1`.
    assert_eq!(
        refusal(a, &tenant, &["bids:p1"], "", Some(&bob)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        refusal(a, &tenant, &["bids:p1"], "", None).await.0,
        StatusCode::OK
    );

    activate(a, &tenant, component("stream_authorizer")).await;
    for node in [a, b] {
        wait_for(
            "the authorizer is active on every node",
            secs(20),
            || async {
                refusal(node, &tenant, &["bids:p1"], "", Some(&bob)).await.0
                    == StatusCode::FORBIDDEN
            },
        )
        .await;
    }
    for node in [a, b] {
        let Err((status, body)) = open(node, &tenant, &["bids:p1"], "", Some(&bob)).await else {
            panic!("bob reads p1's bids");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        let body: Value = serde_json::from_str(&body).expect("an error body");
        assert_eq!(body["error"]["code"], "not_a_bidder", "{body}");
        assert_eq!(
            body["error"]["message"],
            "the bid stream of product p1 is for those who have bid on it"
        );
        assert_eq!(
            refusal(node, &tenant, &["bids:p1"], "", None).await,
            (StatusCode::FORBIDDEN, "login_required".into())
        );
        // Every topic of a stream counts.
        assert_eq!(
            refusal(node, &tenant, &["product:p1", "bids:p1"], "", Some(&bob)).await,
            (StatusCode::FORBIDDEN, "not_a_bidder".into())
        );
        // REST history: the same rule.
        assert_eq!(
            history(node, &tenant, "bids:p1", Some(&bob)).await,
            (StatusCode::FORBIDDEN, "not_a_bidder".into())
        );
        assert_eq!(
            history(node, &tenant, "bids:p1", Some(&ann)).await.0,
            StatusCode::OK
        );
        // Other topics, and the admin token, are not the plugin's to refuse.
        assert_eq!(
            refusal(node, &tenant, &["product:p1"], "", Some(&bob))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            refusal(node, &tenant, &["bids:p1"], "", Some(ADMIN))
                .await
                .0,
            StatusCode::OK
        );
        // The host's rules come first: bob still cannot read ann's stream.
        assert_eq!(
            refusal(node, &tenant, &["user:ann"], "", Some(&bob))
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }

    // The bidder gets the product's bids, published on the other node.
    let mut s = open(a, &tenant, &["bids:p1"], "", Some(&ann))
        .await
        .unwrap_or_else(|(s, b)| panic!("ann refused: {s} {b}"));
    let id = b
        .publish(
            &tenant,
            "bids:p1",
            "bid.placed",
            json!({"amount": 1200, "bidder": "ann"}),
        )
        .await;
    let e = s.next_of("bid.placed", secs(10)).await.expect("the bid");
    assert_eq!(e.seq(), id);

    let info = slot_info(a, "stream-authorizer", Some(&tenant)).await;
    assert!(info["calls"].as_u64().unwrap_or(0) >= 8, "{info}");
    assert_eq!(info["errors"]["trap"], 0, "{info}");
    // Another tenant keeps the built-in rule.
    let other = a.tenant().await;
    let carl = bidder_token(&env, "carl", &other, &[]).await;
    assert_eq!(
        refusal(a, &other, &["bids:p1"], "", Some(&carl)).await.0,
        StatusCode::OK
    );
    env.cleanup().await;
}

both_modes!(
    bidders_only_streams_and_history_are_refused_with_the_plugins_code,
    bidders_only_streams
);

/// An authorizer is asked when a stream opens: swapping it does not touch
/// streams already open; the next request is decided by the new version,
/// and deactivating it brings the built-in rule back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_decides_new_streams_and_leaves_open_ones_alone() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let bob = bidder_token(&env, "bob", &tenant, &[]).await;
    let mut open_before = open(&node, &tenant, &["bids:p1"], "", Some(&bob))
        .await
        .unwrap_or_else(|(s, b)| panic!("refused before: {s} {b}"));
    activate(&node, &tenant, component("stream_authorizer")).await;
    assert_eq!(
        refusal(&node, &tenant, &["bids:p1"], "", Some(&bob)).await,
        (StatusCode::FORBIDDEN, "not_a_bidder".into())
    );
    let id = node
        .publish(&tenant, "bids:p1", "bid.placed", json!({"amount": 5}))
        .await;
    let e = open_before
        .next_of("bid.placed", secs(10))
        .await
        .expect("still delivered");
    assert_eq!(e.seq(), id);
    // A new version (same behaviour, new hash) swaps in; then none at all.
    activate(&node, &tenant, variant(&component("stream_authorizer"), 1)).await;
    assert_eq!(
        refusal(&node, &tenant, &["bids:p1"], "", Some(&bob))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let r = node
        .http
        .delete(format!(
            "{}/admin/plugins/stream-authorizer?tenant={tenant}",
            node.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        refusal(&node, &tenant, &["bids:p1"], "", Some(&bob))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        slot_info(&node, "stream-authorizer", Some(&tenant)).await["swaps"],
        3
    );
}

/// A candidate in shadow is asked beside the built-in rule on live stream
/// requests: nothing is refused, and the slot's shadow report counts the
/// requests it would have refused, with examples.
async fn shadow_authorizer(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let ann = bidder_token(&env, "ann", &tenant, &["p1"]).await;
    let bob = bidder_token(&env, "bob", &tenant, &[]).await;
    let r = put_plugin(
        &node,
        "stream-authorizer",
        &format!("?tenant={tenant}&mode=shadow"),
        component("stream_authorizer"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    for token in [&ann, &bob, &bob] {
        assert_eq!(
            refusal(&node, &tenant, &["bids:p1"], "", Some(token))
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        history(&node, &tenant, "bids:p1", None).await.0,
        StatusCode::OK
    );
    let shadow = &slot_info(&node, "stream-authorizer", Some(&tenant)).await["shadow"];
    assert_eq!(shadow["compared"], 4, "{shadow}");
    assert_eq!(shadow["disagreed"], 3, "{shadow}");
    assert_eq!(shadow["failed"], 0, "{shadow}");
    let examples = shadow["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 3);
    let ex = &examples[0];
    assert_eq!(ex["active"]["decision"], "allow", "{ex}");
    assert_eq!(ex["candidate"]["code"], "not_a_bidder", "{ex}");
    // The input as a case of a cases file takes it.
    assert_eq!(ex["input"]["request"]["user"], "bob", "{ex}");
    assert_eq!(ex["input"]["request"]["topics"], json!(["bids:p1"]), "{ex}");
    assert_eq!(ex["kind"], "answer", "{ex}");
    assert_eq!(examples[2]["candidate"]["code"], "login_required");
    env.cleanup().await;
}

both_modes!(
    a_shadow_authorizer_reports_what_it_would_refuse,
    shadow_authorizer
);

/// A failed authorizer call refuses the request, stream or history, with
/// `503 plugin_error` (it fails closed), counted by kind; the node serves on
/// and a request the plugin answers is decided again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_authorizer_fails_closed() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_PLUGIN_TIMEOUT_MS", 100);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let ann = bidder_token(&env, "ann", &tenant, &["p1"]).await;
    activate(&node, &tenant, component("hostile_authorizer")).await;
    assert_eq!(
        refusal(&node, &tenant, &["product:p1"], "", Some(&ann))
            .await
            .0,
        StatusCode::OK
    );
    for (param, kind) in [
        ("crash", "trap"),
        ("hang", "timeout"),
        ("garbage", "bad_output"),
    ] {
        let Err((status, body)) = open(
            &node,
            &tenant,
            &["product:p1"],
            &format!("&{param}=1"),
            Some(&ann),
        )
        .await
        else {
            panic!("{param}: a failed authorizer let the stream open");
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{param}: {body}");
        let body: Value = serde_json::from_str(&body).expect("error body");
        assert_eq!(body["error"]["code"], "plugin_error", "{param}");
        let info = slot_info(&node, "stream-authorizer", Some(&tenant)).await;
        assert!(
            info["errors"][kind].as_u64().unwrap_or(0) >= 1,
            "{param}: {info}"
        );
    }
    configure(
        &node,
        "stream-authorizer",
        &format!("?tenant={tenant}"),
        json!({"mode": "panic"}),
    )
    .await;
    assert_eq!(
        history(&node, &tenant, "product:p1", Some(&ann)).await,
        (StatusCode::SERVICE_UNAVAILABLE, "plugin_error".into())
    );
    assert!(node.metric("switchyard_plugin_errors_total").await >= 4.0);
    configure(
        &node,
        "stream-authorizer",
        &format!("?tenant={tenant}"),
        json!({}),
    )
    .await;
    assert_eq!(
        refusal(&node, &tenant, &["product:p1"], "", Some(&ann))
            .await
            .0,
        StatusCode::OK
    );
}

/// Stream requests are recorded with what was decided; `plugin replay`
/// runs a candidate over them and lists where it would decide otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replay_runs_an_authorizer_over_recorded_stream_requests() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let ann = bidder_token(&env, "ann", &tenant, &["p1"]).await;
    let bob = bidder_token(&env, "bob", &tenant, &[]).await;
    for (topic, token) in [
        ("bids:p1", Some(&ann)),
        ("bids:p1", Some(&bob)),
        ("product:p1", None),
    ] {
        assert_eq!(
            refusal(&node, &tenant, &[topic], "", token.map(String::as_str))
                .await
                .0,
            StatusCode::OK
        );
    }
    let data_dir = env.data_dir.to_string_lossy().to_string();
    let wasm = artifact("stream_authorizer");
    let args = [
        "plugin",
        "replay",
        wasm.as_str(),
        "--tenant",
        tenant.as_str(),
        "--data-dir",
        data_dir.as_str(),
    ];
    // The records are written off the requests' path: wait for all three.
    let started = Instant::now();
    let out = loop {
        let out = run_cli(&args);
        if String::from_utf8_lossy(&out.stdout).contains("3 stream requests replayed") {
            break out;
        }
        assert!(
            started.elapsed() < secs(20),
            "the requests were not recorded: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("1 differ"), "{text}");
    assert!(
        text.contains("user bob")
            && text.contains("taken `allow` (builtin), candidate `refuse not_a_bidder`"),
        "{text}"
    );
    assert!(!text.contains("user ann"), "{text}");
}
