//! Tenants on several Postgres databases (`SWITCHYARD_DATABASES`): the
//! home one (the test's schema on the machine's Postgres) and a second
//! Postgres server started by the test. Placement, moving a tenant while
//! its streams read and it is written to, and `/ready` naming a database
//! that does not answer.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{bid, decided, product, rand_id, secs, wait_for, Env, Mode, Node, PrivatePostgres};

/// Creates a tenant through `node`, on `database` (by the rule if `None`).
async fn tenant_on(node: &Node, database: Option<&str>) -> String {
    let slug = format!("d-{}", rand_id());
    let mut body = json!({"slug": slug, "name": "Placed"});
    if let Some(db) = database {
        body["database"] = json!(db);
    }
    let r = node.post("/admin/tenants", &body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    slug
}

/// A second Postgres server, and an env whose nodes place tenants on the
/// machine's (`main`, the test's schema) and on it (`b`).
async fn two_databases() -> (PrivatePostgres, Env) {
    let pb = PrivatePostgres::start().await;
    let env = Env::new(Mode::Cluster)
        .await
        .set("SWITCHYARD_DATABASES", format!("b={}", pb.url()));
    (pb, env)
}

/// One number a query answers on the database at `url`.
async fn count(url: &str, sql: &str, tenant: &str) -> i64 {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    sqlx::query_scalar::<_, i64>(sql)
        .bind(tenant)
        .fetch_one(&mut c)
        .await
        .expect("query")
}

const EVENTS: &str = "SELECT count(*) FROM events WHERE tenant = $1";
const TENANT_ROWS: &str = "SELECT count(*) FROM tenants WHERE slug = $1";

/// Sends a message as `from` (a user token of `tenant`); returns its id.
async fn message(node: &Node, env: &Env, tenant: &str, from: &str, to: &str) -> i64 {
    let token = env.token(from, tenant).await;
    let r = node
        .http
        .post(format!("{}/api/messages", node.url))
        .bearer_auth(token)
        .json(&json!({"from": from, "to": to, "body": "hello"}))
        .send()
        .await
        .expect("request");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("message id")
}

/// The ids of `user`'s messages.
async fn message_ids(node: &Node, env: &Env, tenant: &str, user: &str) -> Vec<i64> {
    let token = env.token(user, tenant).await;
    let body: Value = node
        .http
        .get(format!("{}/api/users/{user}/messages", node.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_on_two_databases_and_a_move_while_streams_read() {
    let (pb, env) = two_databases().await;
    let home = env.database_url.clone().expect("home database");
    let nodes = env.start_nodes(2).await;

    // Placement: by name, then by the rule (the database with the fewest
    // tenants, the first of equals).
    let on_main = tenant_on(&nodes[0], Some("main")).await;
    let on_b = tenant_on(&nodes[1], Some("b")).await;
    let third = tenant_on(&nodes[0], None).await;
    let fourth = tenant_on(&nodes[1], None).await;
    let dbs: Value = nodes[1]
        .get("/admin/databases")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        dbs["databases"],
        json!([{"name": "main", "tenants": 2}, {"name": "b", "tenants": 2}]),
        "{dbs}"
    );
    for (tenant, db) in [
        (&on_main, &home),
        (&third, &home),
        (&on_b, &pb.url()),
        (&fourth, &pb.url()),
    ] {
        assert_eq!(
            count(db, TENANT_ROWS, tenant).await,
            1,
            "{tenant} in its database"
        );
    }
    assert_eq!(count(&home, TENANT_ROWS, &on_b).await, 0);
    // Each tenant's events go to its database, and every node serves both.
    let a = nodes[0].publish(&on_b, "feed:1", "tick", json!({})).await;
    let b = nodes[1]
        .publish(&on_main, "feed:1", "tick", json!({}))
        .await;
    assert_eq!((a, b), (1, 1));
    assert_eq!(count(&pb.url(), EVENTS, &on_b).await, 1);
    assert_eq!(count(&home, EVENTS, &on_b).await, 0);
    assert_eq!(count(&home, EVENTS, &on_main).await, 1);
    let r = nodes[0]
        .post(
            "/admin/tenants",
            &json!({"slug": format!("d-{}", rand_id()), "name": "x", "database": "nowhere"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The tenant to move: on main, with a product, a bid, messages, and a
    // stream on each node.
    let x = tenant_on(&nodes[0], Some("main")).await;
    let p = product(&nodes[0], &x, json!({})).await;
    let pid = p["id"].as_str().expect("product id").to_string();
    let first_bid = bid(&nodes[1], &pid, "carol", 100).await;
    assert_eq!(decided(&nodes[0], &first_bid).await["status"], "accepted");
    let m1 = message(&nodes[0], &env, &x, "alice", "bob").await;
    let mut streams = Vec::new();
    for node in &nodes {
        streams.push(
            node.sse(&format!("/events?tenant={x}&topic=feed:1"), Some(0))
                .await,
        );
    }

    // Publish 400 events through both nodes, and move the tenant to `b`
    // after the first 100.
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let urls = [nodes[0].url.clone(), nodes[1].url.clone()];
        let http = nodes[0].http.clone();
        let (x, published) = (x.clone(), published.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..400 {
                let r = http
                    .post(format!("{}/api/events", urls[i % 2]))
                    .bearer_auth(support::ADMIN)
                    .json(
                        &json!({"tenant": x, "topic": "feed:1", "type": "tick", "data": {"i": i}}),
                    )
                    .send()
                    .await
                    .expect("request");
                let status = r.status();
                let body: Value = r.json().await.expect("json");
                assert_eq!(status, StatusCode::CREATED, "publish {i}: {body}");
                ids.push(body["id"].as_u64().expect("id"));
                published.store(i + 1, Ordering::SeqCst);
            }
            ids
        })
    };
    wait_for("100 events published", secs(60), || {
        let published = published.clone();
        async move { published.load(Ordering::SeqCst) >= 100 }
    })
    .await;
    let r = nodes[0]
        .post(
            &format!("/admin/tenants/{x}/move"),
            &json!({"database": "b"}),
        )
        .await;
    let status = r.status();
    let report: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("main"), Some("b"))
    );
    assert!(
        report["events"].as_u64().expect("events") >= 100,
        "{report}"
    );
    let ids = publisher.await.expect("every publish answered 201");
    assert!(
        published.load(Ordering::SeqCst) == 400 && ids.windows(2).all(|w| w[0] < w[1]),
        "ids rise: {ids:?}"
    );

    // Every stream, on both nodes, got every event once, in order.
    for (n, s) in streams.iter_mut().enumerate() {
        let got: Vec<u64> = s
            .take(ids.len(), secs(30))
            .await
            .iter()
            .map(|e| e.seq())
            .collect();
        assert_eq!(got, ids, "node {n}");
        assert!(
            s.next_data(secs(1)).await.is_none(),
            "node {n}: nothing more"
        );
    }
    // The tenant is in `b` now, whole: its ids are gapless (as many events
    // as its head) and go on from where they were.
    let head = count(
        &pb.url(),
        "SELECT last_seq FROM tenants WHERE slug = $1",
        &x,
    )
    .await;
    assert_eq!(head as u64, *ids.last().expect("ids"));
    assert_eq!(count(&pb.url(), EVENTS, &x).await, head);
    let next = nodes[1].publish(&x, "feed:1", "tick", json!({})).await;
    assert_eq!(next, head as u64 + 1);
    // A client resuming on either node reads from `b`.
    let mut resumed = nodes[1]
        .sse(&format!("/events?tenant={x}&topic=feed:1"), Some(ids[299]))
        .await;
    let got: Vec<u64> = resumed
        .take(101, secs(30))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    let mut want = ids[300..].to_vec();
    want.push(next);
    assert_eq!(got, want);
    // Its product, bids and messages came along, with their ids.
    let p2: Value = nodes[1]
        .get(&format!("/api/products/{pid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (p2["current_bid"].as_i64(), p2["bid_count"].as_i64()),
        (Some(100), Some(1)),
        "{p2}"
    );
    assert_eq!(decided(&nodes[1], &first_bid).await["status"], "accepted");
    let second_bid = bid(&nodes[0], &pid, "dave", 110).await;
    assert_eq!(decided(&nodes[1], &second_bid).await["status"], "accepted");
    let m2 = message(&nodes[1], &env, &x, "alice", "bob").await;
    assert!(m2 > m1, "message ids go on: {m1} then {m2}");
    assert_eq!(message_ids(&nodes[0], &env, &x, "bob").await, vec![m1, m2]);
    let dbs: Value = nodes[0]
        .get("/admin/databases")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        dbs["databases"][1],
        json!({"name": "b", "tenants": 3}),
        "{dbs}"
    );
    // Each database's commits are measured on its own.
    let metrics = nodes[1].get("/metrics").await.text().await.expect("text");
    for db in ["main", "b"] {
        let line = format!("switchyard_store_commit_seconds_count{{database=\"{db}\"}}");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line}"));
        assert!(n > 0.0, "{line} {n}");
    }
    // The old copy goes after the grace period.
    wait_for("the old copy removed", secs(40), || {
        let home = home.clone();
        let x = x.clone();
        async move { count(&home, TENANT_ROWS, &x).await == 0 && count(&home, EVENTS, &x).await == 0 }
    })
    .await;
    let r = nodes[1]
        .post(
            &format!("/admin/tenants/{x}/move"),
            &json!({"database": "b"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "already there");
    // Refusals: a database that is not one, a tenant that is not one, a
    // slug that could not be one.
    for (path, db, status) in [
        (
            format!("/admin/tenants/{x}/move"),
            "nowhere",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/tenants/nobody-here/move".to_string(),
            "main",
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/tenants/NO%20PE/move".to_string(),
            "main",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = nodes[0].post(&path, &json!({"database": db})).await;
        assert_eq!(r.status(), status, "{path} to {db}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_database_has_nowhere_to_move_to() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let r = node
        .post(
            &format!("/admin/tenants/{tenant}/move"),
            &json!({"database": "main"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let dbs: Value = node
        .get("/admin/databases")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(dbs["databases"][0]["name"], "main", "{dbs}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_names_the_database_that_does_not_answer() {
    let (pb, env) = two_databases().await;
    let node = env.start().await;
    let on_main = tenant_on(&node, Some("main")).await;
    let on_b = tenant_on(&node, Some("b")).await;
    node.publish(&on_b, "feed:1", "tick", json!({})).await;
    pb.stop();
    wait_for("/ready names b", secs(30), || async {
        let r = node.get("/ready").await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("databases b do not answer")
    })
    .await;
    // The other database's tenants are served meanwhile.
    node.publish(&on_main, "feed:1", "tick", json!({})).await;
    let r = node
        .post(
            "/api/events",
            &json!({"tenant": on_b, "topic": "feed:1", "type": "tick", "data": {}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    pb.restart().await;
    wait_for("/ready again", secs(30), || async {
        node.get("/ready").await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(node.publish(&on_b, "feed:1", "tick", json!({})).await, 2);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_placement_naming_a_database_it_lacks() {
    let (_pb, env) = two_databases().await;
    let node = env.start().await;
    tenant_on(&node, Some("b")).await;
    drop(node);
    // A node configured without `b` would not find that tenant: it refuses
    // to start, naming the database.
    let mut lacking = Env::new(Mode::Cluster).await;
    lacking.database_url = env.database_url.clone();
    let out = support::start_refused(&lacking, &[]).await;
    assert!(out.contains("database \"b\""), "{out}");
    lacking.cleanup().await;
    env.cleanup().await;
}
