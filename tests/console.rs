//! The operator's admin API beyond plugins, in both modes (cluster mode
//! across two nodes): a tenant's topics with heads and subscribers, a
//! user's streams listed and disconnected, every node's live figures, the
//! audit log of plugin changes with who made them, and the viewer role,
//! which reads everything and changes nothing. Operator and viewer tokens
//! come from an identity provider whose key `openssl` makes.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, wait_for, Env, Mode, Node, Sse, ADMIN};
use switchyard::auth::now_secs;

/// The claim that grants console roles in these tests.
const ROLE_CLAIM: &str = "console_roles";

/// The identity provider: an RSA key pair made by `openssl`.
struct Provider {
    private: Vec<u8>,
    public_pem: PathBuf,
}

impl Provider {
    fn make(dir: &Path) -> Provider {
        let private = dir.join("idp.key");
        let public_pem = dir.join("idp.pub");
        let ok = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private)
            .status()
            .expect("openssl is installed")
            .success();
        assert!(ok, "openssl genpkey");
        let ok = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public_pem)
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl pkey -pubout");
        Provider {
            private: std::fs::read(&private).expect("private key"),
            public_pem,
        }
    }

    /// A token of `sub` whose role claim is `roles`.
    fn token(&self, sub: &str, roles: Value) -> String {
        let claims = json!({
            "sub": sub,
            "exp": now_secs() + 3600,
            ROLE_CLAIM: roles,
        });
        let key = EncodingKey::from_rsa_pem(&self.private).expect("signing key");
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
    }
}

/// An env whose nodes take operator sign-in and count presence quickly.
async fn console_env(mode: Mode) -> (Env, Provider) {
    let env = Env::new(mode).await;
    let idp = Provider::make(&env.data_dir);
    let env = env
        .set("SWITCHYARD_JWT_PUBLIC_KEY", idp.public_pem.display())
        .set("SWITCHYARD_CONSOLE_ROLE_CLAIM", ROLE_CLAIM)
        .set("SWITCHYARD_PRESENCE_INTERVAL_MS", 200);
    (env, idp)
}

/// `method path` with `token`, and a JSON body for writes.
async fn call(node: &Node, method: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", node.url);
    let req = match method {
        "get" => node.http.get(url),
        "post" => node.http.post(url).json(&json!({})),
        "put" => node.http.put(url).json(&json!({})),
        "delete" => node.http.delete(url),
        other => panic!("no method {other}"),
    };
    let r = req.bearer_auth(token).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_json(node: &Node, path: &str) -> Value {
    let r = node.get(path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.expect("json")
}

/// A stream of `topic` with a user's token.
async fn user_stream(node: &Node, tenant: &str, topic: &str, token: &str) -> Sse {
    let auth = format!("Bearer {token}");
    Sse::connect(
        &format!("{}/events?tenant={tenant}&topic={topic}", node.url),
        None,
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap_or_else(|(s, b)| panic!("stream refused: {s} {b}"))
}

/// The topic listing shows each topic with its newest id and retained
/// state, and the subscribers of one read on one node counted on every
/// node; a topic nobody reads has none counted.
async fn topics_listed_with_head_and_subscribers(mode: Mode) {
    let (env, _) = console_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = first.tenant().await;
    let status = first
        .retain(&tenant, "status:api", "status", json!({"up": true}))
        .await;
    let news = first.publish(&tenant, "news:1", "story", json!({})).await;
    let _reader = first
        .sse(&format!("/events?tenant={tenant}&topic=status:api"), None)
        .await;
    let path = format!("/admin/tenants/{tenant}/topics");
    let listing = until("the reader counted on the other node", || async {
        let seen = get_json(last, &path).await;
        seen["topics"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["topic"] == "status:api"))
            .is_some_and(|t| t["subscribers"]["streams"] == 1)
            .then_some(seen)
    })
    .await;
    let topics = listing["topics"].as_array().expect("topics");
    let names: Vec<&str> = topics.iter().filter_map(|t| t["topic"].as_str()).collect();
    assert_eq!(names, ["news:1", "status:api"], "{listing}");
    assert_eq!(topics[0]["head"], news);
    assert_eq!(topics[0]["retained"], false);
    assert_eq!(topics[0]["subscribers"], Value::Null);
    assert_eq!(topics[1]["head"], status);
    assert_eq!(topics[1]["retained"], true);
    assert_eq!(topics[1]["retained_id"], status);
    assert_eq!(topics[1]["trimmed"], 0);
    let page = get_json(last, &format!("{path}?limit=1")).await;
    assert_eq!(page["topics"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next"], "news:1");
    let rest = get_json(last, &format!("{path}?limit=1&after=news:1")).await;
    assert_eq!(rest["topics"][0]["topic"], "status:api");
    let (code, _) = call(last, "get", "/admin/tenants/nobody-here/topics", ADMIN).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = call(last, "get", &format!("{path}?limit=0"), ADMIN).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    env.cleanup().await;
}
both_modes!(topics_listed, topics_listed_with_head_and_subscribers);

/// A user's streams on each node are listed with their node and age; a
/// disconnect on one node ends every one of them (each says
/// `switchyard.disconnected` and ends), and the listing empties.
async fn user_streams_listed_and_disconnected(mode: Mode) {
    let (env, _) = console_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let token = env.token("bob", &tenant).await;
    let mut streams = Vec::new();
    for node in &nodes {
        streams.push(user_stream(node, &tenant, "feed:1", &token).await);
    }
    let other = env.token("ann", &tenant).await;
    let mut bystander = user_stream(&nodes[0], &tenant, "feed:1", &other).await;
    let path = format!("/admin/tenants/{tenant}/users/bob/streams");
    let listing = until("bob's streams listed", || async {
        let seen = get_json(&nodes[0], &path).await;
        (seen["streams"].as_array().map(Vec::len) == Some(nodes.len())).then_some(seen)
    })
    .await;
    let listed = listing["streams"].as_array().expect("streams");
    let held_by: BTreeSet<&str> = listed.iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(held_by.len(), nodes.len(), "one stream per node: {listing}");
    for s in listed {
        assert_eq!(s["user"], "bob");
        assert_eq!(s["tenant"], tenant);
        assert_eq!(s["topics"], json!(["feed:1"]));
        assert!(s["age_ms"].as_i64().is_some_and(|a| a >= 0), "{s}");
    }
    let last = &nodes[nodes.len() - 1];
    let (code, body) = call(last, "delete", &path, ADMIN).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["streams"].as_array().map(Vec::len), Some(nodes.len()));
    for s in &mut streams {
        let bye = s
            .next_of("switchyard.disconnected", secs(10))
            .await
            .expect("the stream says it was disconnected");
        assert_eq!(bye.json()["reason"], "closed by an operator");
        assert!(s.next(secs(10)).await.is_none(), "then the stream ends");
        assert!(s.ended);
    }
    wait_for("bob's listing empty", secs(20), || async {
        get_json(&nodes[0], &path).await["streams"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    // Another user's stream goes on.
    let id = nodes[0].publish(&tenant, "feed:1", "note", json!({})).await;
    let ev = bystander
        .next_data(secs(10))
        .await
        .expect("ann still reads");
    assert_eq!(ev.seq(), id);
    let audit = get_json(last, &format!("/admin/audit?tenant={tenant}")).await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "streams.disconnect");
    assert_eq!(entry["actor"], "admin");
    let (code, _) = call(
        last,
        "get",
        &format!("/admin/tenants/{tenant}/users/b%20b/streams"),
        ADMIN,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    env.cleanup().await;
}
both_modes!(user_streams, user_streams_listed_and_disconnected);

/// Uploads (active, then a candidate in shadow by an operator), the
/// promotion and the rollback are in the audit log, newest first, with who
/// made each, the content hash and the upload's message; in cluster mode
/// one log, read on the other node.
async fn audit_records_plugin_changes_with_who(mode: Mode) {
    let (env, idp) = console_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = first.tenant().await;
    let operator = idp.token("olga", json!(["operator"]));
    let v1 = component("event_filter");
    let v2 = variant(&v1, 7);
    let upload = |bytes: Vec<u8>, query: String, token: String| async move {
        first
            .http
            .put(format!("{}/admin/plugins/event-filter{query}", first.url))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("request")
    };
    let r = upload(
        v1.clone(),
        format!("?tenant={tenant}&wait=true&message=first%20cut"),
        ADMIN.into(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let r = first
        .http
        .put(format!(
            "{}/admin/plugins/event-filter?tenant={tenant}&wait=true&mode=shadow",
            first.url
        ))
        .bearer_auth(&operator)
        .header("content-type", "application/wasm")
        .header("x-switchyard-message", "try the new rule")
        .body(v2.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let q = format!("?tenant={tenant}");
    let (code, body) = call(
        first,
        "post",
        &format!("/admin/plugins/event-filter/promote{q}"),
        &operator,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = call(
        first,
        "post",
        &format!("/admin/plugins/event-filter/rollback{q}"),
        ADMIN,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let r = upload(
        v1.clone(),
        format!("?tenant={tenant}&message=%07bell"),
        ADMIN.into(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a control character in a message"
    );
    let audit = get_json(last, &format!("/admin/audit?tenant={tenant}")).await;
    let entries = audit["entries"].as_array().expect("entries");
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default(),
                e["actor"].as_str().unwrap_or_default(),
                e["hash"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let (h1, h2) = (sha(&v1), sha(&v2));
    assert_eq!(
        seen,
        [
            ("plugin.rollback", "admin", h1.as_str()),
            ("plugin.promote", "operator:olga", h2.as_str()),
            ("plugin.upload", "operator:olga", h2.as_str()),
            ("plugin.upload", "admin", h1.as_str()),
            ("tenant.create", "admin", ""),
        ],
        "{audit}"
    );
    assert_eq!(entries[2]["message"], "shadow: try the new rule");
    assert_eq!(entries[3]["message"], "active: first cut");
    assert!(entries
        .iter()
        .all(|e| e["tenant"] == tenant && e["at"].as_i64() > Some(0)));
    assert_eq!(entries[0]["slot"], "event-filter");
    let page = get_json(last, &format!("/admin/audit?tenant={tenant}&limit=2")).await;
    let next = page["next"].as_i64().expect("a next page");
    let rest = get_json(
        last,
        &format!("/admin/audit?tenant={tenant}&limit=2&before={next}"),
    )
    .await;
    assert_eq!(rest["entries"][0]["action"], "plugin.upload");
    assert_eq!(rest["entries"][0]["actor"], "operator:olga");
    env.cleanup().await;
}
both_modes!(audit_log, audit_records_plugin_changes_with_who);

/// A viewer's token reads every admin GET and is refused (403) every
/// write the API declares, which then changes nothing; a provider token
/// naming no role, and a user's own token, open nothing.
async fn a_viewer_reads_everything_and_changes_nothing(mode: Mode) {
    let (env, idp) = console_env(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let viewer = idp.token("vera", json!("viewer"));
    let doc: Value = node
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("document");
    let paths = doc["paths"].as_object().expect("paths");
    let fill = |p: &str| {
        p.replace("{tenant}", &tenant)
            .replace("{slot}", "event-filter")
            .replace("{user}", "bob")
    };
    let mut reads = 0;
    let mut writes = 0;
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/admin")) {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let (code, body) = call(&node, method, &fill(path), &viewer).await;
            if method == "get" {
                reads += 1;
                assert_eq!(code, StatusCode::OK, "viewer GET {path}: {body}");
            } else {
                writes += 1;
                assert_eq!(
                    code,
                    StatusCode::FORBIDDEN,
                    "viewer {method} {path}: {body}"
                );
            }
        }
    }
    assert!(reads >= 6 && writes >= 9, "{reads} reads, {writes} writes");
    let audit = get_json(&node, "/admin/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["action"] == "tenant.create"),
        "a viewer changed nothing: {audit}"
    );
    let (code, me) = call(&node, "get", "/admin/whoami", &viewer).await;
    assert_eq!(code, StatusCode::OK, "{me}");
    assert_eq!(me, json!({"actor": "viewer:vera", "role": "viewer"}));
    let operator = idp.token("olga", json!(["viewer", "operator"]));
    let (_, me) = call(&node, "get", "/admin/whoami", &operator).await;
    assert_eq!(me, json!({"actor": "operator:olga", "role": "operator"}));
    let (_, me) = call(&node, "get", "/admin/whoami", ADMIN).await;
    assert_eq!(me, json!({"actor": "admin", "role": "operator"}));
    let nobody = idp.token("nora", json!(["reader"]));
    let (code, _) = call(&node, "get", "/admin/tenants", &nobody).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let user = env.token("bob", &tenant).await;
    let (code, _) = call(&node, "get", "/admin/tenants", &user).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _) = call(&node, "get", "/admin/tenants", "not-the-admin-token").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    env.cleanup().await;
}
both_modes!(viewer, a_viewer_reads_everything_and_changes_nothing);

/// `/admin/stats` on one node shows every node's figures (both nodes in
/// cluster mode): its open streams, its publishes, and each dependency
/// `/ready` checks answering.
async fn stats_report_every_node(mode: Mode) {
    let (env, _) = console_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let tenant = nodes[0].tenant().await;
    let last = &nodes[nodes.len() - 1];
    let _reader = last
        .sse(&format!("/events?tenant={tenant}&topic=feed:1"), None)
        .await;
    let stats = until("every node's figures, the stream counted", || async {
        let seen = get_json(&nodes[0], "/admin/stats").await;
        let list = seen["nodes"].as_array()?;
        let counted = list.len() == nodes.len()
            && list
                .iter()
                .map(|n| n["streams"].as_i64().unwrap_or(0))
                .sum::<i64>()
                == 1
            && list.iter().any(|n| {
                n["tenants"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["tenant"] == tenant && t["streams"] == 1))
            });
        counted.then_some(seen)
    })
    .await;
    for n in stats["nodes"].as_array().expect("nodes") {
        let ready = n["ready"].as_array().expect("ready");
        assert!(
            !ready.is_empty() && ready.iter().all(|d| d["ok"] == true),
            "{n}"
        );
        assert_eq!(
            n["mode"],
            if mode == Mode::Cluster {
                "cluster"
            } else {
                "embedded"
            }
        );
    }
    let ids: BTreeSet<&str> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(ids.len(), nodes.len());
    // Publishes show as a rate on the node that took them.
    let started = std::time::Instant::now();
    wait_for("publishes counted", secs(20), || async {
        for i in 0..20 {
            last.publish(&tenant, "feed:1", "note", json!({"i": i}))
                .await;
        }
        let s = get_json(&nodes[0], "/admin/stats").await;
        s["nodes"].as_array().is_some_and(|l| {
            l.iter()
                .any(|n| n["publishes_per_s"].as_f64().is_some_and(|r| r > 0.0))
        })
    })
    .await;
    assert!(started.elapsed() < secs(20));
    env.cleanup().await;
}
both_modes!(stats, stats_report_every_node);

/// Every series name the alert rules (`docs/prometheus/alerts.yml`) and the
/// Grafana dashboard (`docs/grafana/switchyard.json`) use is one a node
/// serves at `/metrics` (a histogram's `_bucket` by its family), once the
/// node has a tenant with a stream, a publish and a plugin slot.
async fn monitoring_uses_only_served_metrics(mode: Mode) {
    let (env, _) = console_env(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let _reader = node
        .sse(&format!("/events?tenant={tenant}&topic=feed:1"), None)
        .await;
    node.publish(&tenant, "feed:1", "note", json!({})).await;
    let r = node
        .put_plugin(
            "event-filter",
            &format!("?tenant={tenant}&wait=true"),
            component("event_filter"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut used = BTreeSet::new();
    for file in ["docs/prometheus/alerts.yml", "docs/grafana/switchyard.json"] {
        let text = std::fs::read_to_string(root.join(file)).expect("monitoring file");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("switchyard_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            // `switchyard_*` in prose names them all.
            if !name.ends_with('_') {
                used.insert(name);
            }
        }
    }
    assert!(used.len() > 15, "{used:?}");
    // Some series appear with the first sample of the node's figures.
    let deadline = std::time::Instant::now() + secs(20);
    loop {
        let text = node.get("/metrics").await.text().await.expect("metrics");
        let served: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| !served.contains(n.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "used by the monitoring files but not served: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    env.cleanup().await;
}
both_modes!(monitoring_names, monitoring_uses_only_served_metrics);

/// Polls `f` every 100 ms until it answers; panics with `what` after 20 s.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A component built from `plugins/`.
fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The same component with a custom section appended: a new content hash.
fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"switchyard-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&n.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

fn sha(bytes: &[u8]) -> String {
    switchyard::plugins::registry::content_hash(bytes)
}

/// The console's page is served under its prefix with a strict
/// Content-Security-Policy, not elsewhere; with neither an admin token nor
/// a role claim it is not served at all; a prefix that would hide the API's
/// routes stops the start.
#[tokio::test]
async fn console_page_under_its_prefix_with_its_policy() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_CONSOLE_PREFIX", "/ops/console");
    let node = env.start().await;
    let r = node.get("/ops/console/").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let page = r.text().await.unwrap_or_default();
    assert!(page.contains("console.js"), "{page}");
    let r = node.get("/ops/console/uPlot.iife.min.js").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(node.get("/console/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        node.get("/ops/console/../../Cargo.toml").await.status(),
        StatusCode::NOT_FOUND
    );
    drop(node);
    let text = support::start_refused(&env, &[("SWITCHYARD_CONSOLE_PREFIX", "/admin")]).await;
    assert!(text.contains("SWITCHYARD_CONSOLE_PREFIX"), "{text}");
    env.cleanup().await;

    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_ADMIN_TOKEN", "");
    let node = env.start().await;
    assert_eq!(node.get("/console/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(node.get("/health").await.status(), StatusCode::OK);
    drop(node);
    env.cleanup().await;
}

/// `method path` with `token` and a JSON `body`.
async fn call_with(
    node: &Node,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", node.url);
    let req = match method {
        "post" => node.http.post(url),
        "put" => node.http.put(url),
        other => panic!("no method {other} with a body"),
    };
    let r = req
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A slot's upload history names who uploaded each version (the admin
/// token, an operator), when and with what message, and a refused upload
/// with its error; any kept version is a rollback target, the active one
/// going into the history; a viewer can roll back nothing; bad versions get
/// clear errors. In cluster mode the second node shows the first's uploads.
async fn upload_history_and_rollback_to_any_version(mode: Mode) {
    let (env, idp) = console_env(mode).await;
    let nodes = env.start_nodes(2).await;
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    let tenant = first.tenant().await;
    let operator = idp.token("olga", json!(["operator"]));
    let viewer = idp.token("vera", json!(["viewer"]));
    let v1 = component("event_filter");
    let (v2, v3) = (variant(&v1, 2), variant(&v1, 3));
    let (h1, h2, h3) = (sha(&v1), sha(&v2), sha(&v3));
    let put = |bytes: Vec<u8>, token: String, message: &'static str| {
        let url = format!(
            "{}/admin/plugins/event-filter?tenant={tenant}&wait=true&message={message}",
            first.url
        );
        let http = first.http.clone();
        async move {
            http.put(url)
                .bearer_auth(token)
                .header("content-type", "application/wasm")
                .body(bytes)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(put(v1.clone(), ADMIN.into(), "one").await, StatusCode::OK);
    assert_eq!(
        put(v2.clone(), operator.clone(), "two").await,
        StatusCode::OK
    );
    assert_eq!(put(v3.clone(), ADMIN.into(), "three").await, StatusCode::OK);
    let refused = put(b"\0asm not really".to_vec(), operator.clone(), "broken").await;
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY);

    let path = format!("/admin/plugins/event-filter/versions?tenant={tenant}");
    let history = until("the other node to show every upload", || async {
        let (code, body) = call(last, "get", &path, &viewer).await;
        (code == StatusCode::OK
            && body["uploads"].as_array().map(Vec::len) == Some(4)
            && body["versions"].as_array().map(Vec::len) == Some(3))
        .then_some(body)
    })
    .await;
    let states: Vec<(&str, &str)> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (h3.as_str(), "active"),
            (h2.as_str(), "previous"),
            (h1.as_str(), "previous")
        ],
        "{history}"
    );
    let uploads = history["uploads"].as_array().expect("uploads");
    let seen: Vec<(&str, &str, &str, &str)> = uploads
        .iter()
        .map(|u| {
            (
                u["actor"].as_str().unwrap_or_default(),
                u["message"].as_str().unwrap_or_default(),
                u["outcome"].as_str().unwrap_or_default(),
                u["origin"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("operator:olga", "broken", "refused", "upload"),
            ("admin", "three", "installed", "upload"),
            ("operator:olga", "two", "installed", "upload"),
            ("admin", "one", "installed", "upload"),
        ],
        "{history}"
    );
    assert!(
        uploads[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a refused upload keeps its error: {history}"
    );
    assert!(uploads[1]["error"].is_null());
    assert_eq!(history["versions"][1]["upload"]["message"], "two");
    assert!(history["managed_by"].is_null(), "no file owns the slot");

    // Back to the oldest, past the previous one: the active one is kept.
    let rollback =
        |v: String| format!("/admin/plugins/event-filter/rollback?tenant={tenant}&version={v}");
    let (code, body) = call(first, "post", &rollback(h1.clone()), &viewer).await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "a viewer rolls back nothing: {body}"
    );
    let (code, body) = call(first, "post", &rollback(h1.clone()), &operator).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["active"]["version"], h1.as_str());
    let kept: Vec<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(kept, [h3.as_str(), h2.as_str()], "{body}");
    let (code, body) = call(first, "post", &rollback("abc".into()), &operator).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_version");
    let (code, body) = call(first, "post", &rollback(sha(b"never uploaded")), &operator).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, body) = call(
        first,
        "get",
        "/admin/plugins/event-filter/versions?tenant=no-such-tenant",
        ADMIN,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let audit = get_json(first, &format!("/admin/audit?tenant={tenant}&limit=1")).await;
    assert_eq!(audit["entries"][0]["action"], "plugin.rollback");
    assert_eq!(audit["entries"][0]["actor"], "operator:olga");
    assert_eq!(audit["entries"][0]["hash"], h1.as_str());
    env.cleanup().await;
}
both_modes!(upload_history, upload_history_and_rollback_to_any_version);

/// A shadow candidate that answers otherwise: each disagreement with its
/// input (as a case), both answers and both latencies, filtered by kind;
/// the cases file passes `plugin test` with the active version and fails
/// with the candidate; a replay gives `plugin replay`'s summary (operators
/// only); the active version's log lines are tailed, with the slot's
/// configuration values redacted.
async fn shadow_diffs_cases_replay_and_logs(mode: Mode) {
    let (env, idp) = console_env(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let operator = idp.token("olga", json!(["operator"]));
    let viewer = idp.token("vera", json!(["viewer"]));
    let active = component("event_filter");
    let candidate = component("hostile_filter");
    let q = format!("?tenant={tenant}");
    let r = node
        .put_plugin("event-filter", &format!("{q}&wait=true"), active.clone())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // A secret in the configuration: never in the log ring.
    node.configure_plugin("event-filter", &q, json!({"api_key": "s3cret-value"}))
        .await;
    let r = node
        .put_plugin(
            "event-filter",
            &format!("{q}&wait=true&mode=shadow"),
            candidate.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (code, none) = call(
        &node,
        "get",
        &format!("/admin/plugins/event-filter/shadow{q}&kind=answer"),
        &viewer,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{none}");

    // The active filter redacts `bidder`; the candidate passes everything.
    let user = env.token("bob", &tenant).await;
    let mut redacted = user_stream(&node, &tenant, "product:p1&redact=bidder", &user).await;
    // A floor that is not a number: the active filter warns (a log line).
    let mut warned = user_stream(&node, &tenant, "product:p1&min_amount=s3cret-value", &user).await;
    let id = node
        .publish(
            &tenant,
            "product:p1",
            "bid.placed",
            json!({"amount": 5, "bidder": "x"}),
        )
        .await;
    let got = redacted.next_data(secs(10)).await.expect("the event");
    assert_eq!(got.json()["data"], json!({"amount": 5}));
    warned.next_data(secs(10)).await.expect("the event");

    let path = format!("/admin/plugins/event-filter/shadow{q}");
    let diff = until("a disagreement", || async {
        let (code, body) = call(&node, "get", &path, &viewer).await;
        (code == StatusCode::OK
            && body["disagreements"]
                .as_array()
                .is_some_and(|d| !d.is_empty()))
        .then_some(body)
    })
    .await;
    assert_eq!(diff["version"], sha(&candidate).as_str());
    let d = &diff["disagreements"][0];
    assert_eq!(d["kind"], "answer", "{diff}");
    assert_eq!(d["input"]["event"]["id"], id.to_string());
    assert_eq!(d["input"]["event"]["topic"], "product:p1");
    assert_eq!(
        d["input"]["event"]["data"],
        json!({"amount": 5, "bidder": "x"})
    );
    assert_eq!(d["input"]["subscription"], json!({"redact": "bidder"}));
    assert_eq!(d["candidate"], json!({"result": "pass"}), "{diff}");
    assert_ne!(d["active"], d["candidate"]);
    assert!(
        d["active_us"].is_u64() && d["candidate_us"].is_u64(),
        "{diff}"
    );
    assert!(diff["compared"].as_u64() >= Some(1) && diff["disagreed"].as_u64() >= Some(1));
    let (code, trap) = call(&node, "get", &format!("{path}&kind=trap"), &viewer).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(trap["disagreements"], json!([]), "{trap}");
    let (code, bad) = call(&node, "get", &format!("{path}&kind=wrong"), &viewer).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_kind");

    // The cases file: `plugin test` passes it with the active version and
    // fails it with the candidate.
    let r = node
        .http
        .get(format!(
            "{}/admin/plugins/event-filter/shadow/cases{q}",
            node.url
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let file: Value = r.json().await.expect("json");
    assert_eq!(file["slot"], "event-filter");
    assert_eq!(file["cases"][0]["input"], d["input"], "{file}");
    assert_eq!(file["cases"][0]["expect"], d["active"]);
    let dir = env.data_dir.join("cases");
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = dir.join("cases.json");
    std::fs::write(&cases, file.to_string()).expect("write");
    let run = |wasm: &[u8], name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, wasm).expect("write");
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["plugin", "test"])
            .arg(&path)
            .arg(&cases)
            .env("SWITCHYARD_PLUGIN_CACHE_DIR", dir.join("code"))
            .output()
            .expect("the binary runs")
    };
    let pass = run(&active, "active.wasm");
    assert!(
        pass.status.success(),
        "{}",
        String::from_utf8_lossy(&pass.stdout)
    );
    let fail = run(&candidate, "candidate.wasm");
    assert!(!fail.status.success(), "the candidate fails the cases");

    // Replay: an operator's, with the summary; bounded parameters.
    let replay = format!("/admin/plugins/event-filter/replay{q}");
    let (code, _) = call(&node, "post", &replay, &viewer).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, body) = call(&node, "post", &format!("{replay}&limit=0"), &operator).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = call(&node, "post", &format!("{replay}&version=xyz"), &operator).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = call(&node, "post", &format!("{replay}&limit=50"), &operator).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["version"], sha(&candidate).as_str());
    assert!(body["differ"].is_u64(), "{body}");
    assert!(
        body["report"]
            .as_str()
            .is_some_and(|r| r.contains("events")),
        "{body}"
    );

    // The active version's log, tailed from a point; the secret redacted.
    let logs = format!("/admin/plugins/event-filter/logs{q}");
    let lines = until("a log line", || async {
        let (_, body) = call(&node, "get", &logs, &viewer).await;
        body["lines"].as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    let text: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(text.iter().any(|l| l.contains("[redacted]")), "{text:?}");
    assert!(text.iter().all(|l| !l.contains("s3cret-value")), "{text:?}");
    let last = lines.last().and_then(|l| l["seq"].as_u64()).expect("seq");
    let (_, after) = call(&node, "get", &format!("{logs}&after={last}"), &viewer).await;
    assert_eq!(after["lines"], json!([]));
    let (code, _) = call(&node, "get", &format!("{logs}&after=x"), &viewer).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    env.cleanup().await;
}
both_modes!(shadow_diffs, shadow_diffs_cases_replay_and_logs);

/// An operator tails a topic with a token the console mints (read through
/// `GET /events` with the token in the header) and publishes a test event
/// to it, both in the audit log; a viewer does neither; a user's topic, a
/// derived one and oversized data are refused; the overview counts the
/// tenant's deliveries.
async fn topic_tail_and_test_events(mode: Mode) {
    let (env, idp) = console_env(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let operator = idp.token("olga", json!(["operator"]));
    let viewer = idp.token("vera", json!(["viewer"]));
    let base = format!("/admin/tenants/{tenant}/topics");
    let (code, _) = call(
        &node,
        "post",
        &format!("{base}/product:p9/tail-token"),
        &viewer,
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, minted) = call(
        &node,
        "post",
        &format!("{base}/product:p9/tail-token"),
        &operator,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().expect("token").to_string();
    assert!(minted["expires_at"].as_u64() > Some(now_secs()));
    let mut tail = user_stream(&node, &tenant, "product:p9", &token).await;

    let publish = |token: String, topic: &'static str, body: Value| {
        let path = format!("{base}/{topic}/events");
        let node = &node;
        async move { call_with(node, "post", &path, &token, body).await }
    };
    let (code, _) = publish(viewer.clone(), "product:p9", json!({})).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, body) = publish(
        operator.clone(),
        "product:p9",
        json!({"type": "console.test", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let id = body["id"].as_u64().expect("id");
    let (code, body) = publish(operator.clone(), "product:p9", json!({})).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["type"], "console.test");
    let second = body["id"].as_u64().expect("id");
    assert!(second > id);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = tail
            .next_of("console.test", secs(10))
            .await
            .expect("a test event");
        seen.push((e.seq(), e.json()["data"].clone()));
    }
    assert_eq!(
        seen,
        [(id, json!({"n": 1})), (second, json!({}))],
        "in order"
    );

    for (topic, what) in [
        ("user:bob", "a user's topic"),
        ("product:p9~occupancy", "a derived topic"),
    ] {
        let (code, body) = publish(operator.clone(), topic, json!({})).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{what}: {body}");
        let (code, body) = call(
            &node,
            "post",
            &format!("{base}/{topic}/tail-token"),
            &operator,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{what}: {body}");
    }
    let big = "x".repeat(20_000);
    let (code, body) = publish(
        operator.clone(),
        "product:p9",
        json!({"data": {"big": big}}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = publish(operator.clone(), "product:p9", json!({"type": "bad type"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = call(
        &node,
        "post",
        "/admin/tenants/no-such/topics/product:p9/tail-token",
        &operator,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let audit = get_json(&node, &format!("/admin/audit?tenant={tenant}&limit=3")).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["event.publish", "event.publish", "token.mint"],
        "{audit}"
    );
    assert_eq!(audit["entries"][2]["actor"], "operator:olga");

    // The tenant's deliveries per second, on the overview's figures.
    until("the tenant's deliveries counted", || async {
        node.publish(&tenant, "product:p9", "tick", json!({})).await;
        let stats = get_json(&node, "/admin/stats").await;
        stats["nodes"]
            .as_array()?
            .iter()
            .flat_map(|n| n["tenants"].as_array().cloned().unwrap_or_default())
            .any(|t| t["tenant"] == tenant.as_str() && t["deliveries_per_s"].as_f64() > Some(0.0))
            .then_some(())
    })
    .await;
    drop(tail);
    env.cleanup().await;
}
both_modes!(topic_tail, topic_tail_and_test_events);
