//! `Node`: a running `switchyard` process and the requests tests make of it.

use super::*;

/// A running node.
pub struct Node {
    child: Option<Child>,
    pub url: String,
    pub logs: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl Node {
    /// Starts a node with the env's settings plus `extra` variables.
    pub async fn start(env: &Env, extra: &[(&str, &str)]) -> Node {
        let mut cmd = Node::command(env, extra);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn switchyard");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("switchyard listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            let _ = child.start_kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "node did not start; its log:\n{}",
                logs.lock().expect("log lock")
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let node = Node {
            child: Some(child),
            url,
            logs,
            // Idle connections are dropped before the shortest idle limit a
            // test gives a node (SWITCHYARD_HEADER_TIMEOUT_MS=500), so a
            // request never goes out on one the node is closing.
            http: client_builder()
                .pool_max_idle_per_host(4)
                .pool_idle_timeout(std::time::Duration::from_millis(250))
                .build()
                .expect("client"),
        };
        node.wait_ready().await;
        node
    }

    /// The command that starts a node of `env` (stdin closed; stdout and
    /// stderr are the caller's to set).
    fn command(env: &Env, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("serve")
            .env_clear()
            .env("RUST_LOG", "info,switchyard=debug")
            .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_DATA_DIR", &env.data_dir)
            .env("SWITCHYARD_PLUGINS_DIR", env.data_dir.join("plugins.d"))
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN)
            .env("SWITCHYARD_REDIS_PREFIX", &env.prefix)
            .env("SWITCHYARD_TAIL_CHECK_MS", "200")
            .env("SWITCHYARD_SHUTDOWN_GRACE_MS", "5000")
            // Every test client is one address (127.0.0.1); tests of the
            // per-address budget set their own.
            .env("SWITCHYARD_MAX_STREAMS_PER_ADDRESS", "1000000")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let (Some(r), Some(d)) = (&env.redis_url, &env.database_url) {
            cmd.env("REDIS_URL", r).env("DATABASE_URL", d);
        }
        if let Some(leaf) = &env.tls {
            cmd.env("SWITCHYARD_TLS_CERT", &leaf.cert)
                .env("SWITCHYARD_TLS_KEY", &leaf.key);
        }
        for (k, v) in &env.vars {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(n) = env.fd_limit {
            // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Starts a node on `port` with its standard output and error going
    /// where the test says (a full disk, a closed pipe): it is found by its
    /// port, not by the line it prints. `logs` stay empty.
    pub async fn start_with_output(
        env: &Env,
        extra: &[(&str, &str)],
        port: u16,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Node {
        let listen = format!("127.0.0.1:{port}");
        let mut extra = extra.to_vec();
        extra.push(("SWITCHYARD_LISTEN", &listen));
        let mut cmd = Node::command(env, &extra);
        cmd.stdout(stdout).stderr(stderr);
        let child = cmd.spawn().expect("spawn switchyard");
        let node = Node {
            child: Some(child),
            url: format!("http://{listen}"),
            logs: Arc::default(),
            http: client_builder()
                .pool_max_idle_per_host(4)
                .pool_idle_timeout(std::time::Duration::from_millis(250))
                .build()
                .expect("client"),
        };
        node.wait_ready().await;
        node
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("{}/ready", self.url);
        wait_for("node ready", Duration::from_secs(30), || async {
            matches!(self.http.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK)
        })
        .await;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
    }

    /// `PUT /admin/plugins/{slot}{query}` with a component (admin token).
    pub async fn put_plugin(&self, slot: &str, query: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.http
            .put(format!("{}/admin/plugins/{slot}{query}", self.url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("request")
    }

    /// Replaces a plugin slot's configuration; asserts the node took it.
    pub async fn configure_plugin(&self, slot: &str, query: &str, config: Value) {
        let r = self
            .http
            .put(format!("{}/admin/plugins/{slot}/config{query}", self.url))
            .bearer_auth(ADMIN)
            .json(&config)
            .send()
            .await
            .expect("request");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{}",
            r.text().await.unwrap_or_default()
        );
    }

    /// The entry of `slot` for `tenant` (`None`: the default slot) in
    /// `GET /admin/plugins`, or null.
    pub async fn plugin_slot(&self, slot: &str, tenant: Option<&str>) -> Value {
        let all: Value = self.get("/admin/plugins").await.json().await.expect("json");
        all["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .find(|s| s["slot"] == slot && s["tenant"].as_str() == tenant)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Sends SIGKILL and reaps.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        tokio::time::timeout(within, c.wait())
            .await
            .expect("node exits in time")
            .expect("wait")
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("log lock").clone()
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request")
    }

    /// POST JSON with the admin token.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a tenant and returns its slug.
    pub async fn tenant(&self) -> String {
        let slug = format!("t-{}", rand_id());
        let r = self
            .post(
                "/admin/tenants",
                &json!({"slug": slug, "name": "Test tenant"}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        slug
    }

    /// Publishes an event; returns its id.
    pub async fn publish(&self, tenant: &str, topic: &str, kind: &str, data: Value) -> u64 {
        let r = self
            .post(
                "/api/events",
                &json!({"tenant": tenant, "topic": topic, "type": kind, "data": data}),
            )
            .await;
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_u64().expect("id")
    }

    /// Publishes with `retain: true`.
    pub async fn retain(&self, tenant: &str, topic: &str, kind: &str, data: Value) -> u64 {
        let r = self
            .post(
                "/api/events",
                &json!({"tenant": tenant, "topic": topic, "type": kind, "data": data, "retain": true}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.expect("json")["id"]
            .as_u64()
            .expect("id")
    }

    /// A metric's value (summed over label sets), 0 if absent (scraped
    /// with the admin token, which opens `/metrics`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Opens an SSE stream at `path` (with query), optionally resuming.
    pub async fn sse(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        Sse::connect(&format!("{}{path}", self.url), last_event_id, &[])
            .await
            .unwrap_or_else(|(s, b)| panic!("stream {path} refused: {s} {b}"))
    }
}

/// Runs `switchyard serve` with the env's settings plus `extra`, for a start
/// that must fail: asserts the process exits non-zero within 30 s, and
/// returns everything it wrote (stdout and stderr).
pub async fn start_refused(env: &Env, extra: &[(&str, &str)]) -> String {
    let mut cmd = Node::command(env, extra);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the refused node exits within 30 s")
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the node started; its output:\n{text}"
    );
    assert!(!text.contains("panicked"), "the node panicked:\n{text}");
    text
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Lists a product of `tenant` (seller `seller`, "Lamp", starting at 100,
/// increment 10), with the fields of `extra` over those; returns it.
pub async fn product(node: &Node, tenant: &str, extra: Value) -> Value {
    let mut body = json!({"tenant": tenant, "seller_id": "seller", "title": "Lamp",
                          "starting_price": 100, "min_increment": 10});
    for (k, v) in extra.as_object().expect("an object of fields") {
        body[k] = v.clone();
    }
    let r = node.post("/api/products", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

/// Lists a product of `tenant` starting at `starting_price`; returns its id.
pub async fn product_at(node: &Node, tenant: &str, starting_price: i64) -> String {
    product(node, tenant, json!({ "starting_price": starting_price })).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Places a bid (202); returns the bid's id.
pub async fn bid(node: &Node, product: &str, bidder: &str, amount: i64) -> String {
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

/// Waits (up to 60 s) until a bid is decided; returns its status.
pub async fn decided(node: &Node, id: &str) -> Value {
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
        assert!(started.elapsed() < secs(60), "bid {id} never decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes of `env`, a stream of `orders:1` of a new tenant on the first,
/// and one event published on the second and received on it: where every
/// test of a dependency's outage starts.
pub struct Crossing {
    pub a: Node,
    pub b: Node,
    pub tenant: String,
    pub stream: Sse,
    pub ids: Vec<u64>,
}

/// Starts a `Crossing`.
pub async fn crossing(env: &Env) -> Crossing {
    let a = env.start().await;
    let b = env.start().await;
    let tenant = a.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=orders:1");
    let mut stream = a.sse(&path, Some(0)).await;
    let ids = vec![b.publish(&tenant, "orders:1", "placed", json!(0)).await];
    assert_eq!(
        stream.next_data(secs(10)).await.expect("first").seq(),
        ids[0]
    );
    Crossing {
        a,
        b,
        tenant,
        stream,
        ids,
    }
}
