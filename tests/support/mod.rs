//! Test harness: real `switchyard` processes on port 0, real HTTP, a real SSE
//! client, and per-test data (a temp dir; in cluster mode also a Postgres
//! schema and a Redis key prefix), so tests run in parallel.
//!
//! Cluster tests use `SWITCHYARD_TEST_REDIS_URL` and
//! `SWITCHYARD_TEST_DATABASE_URL` (defaults: the local Redis and Postgres).

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin token every test node runs with.
pub const ADMIN: &str = "test-admin-token";

/// Deployment mode under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite + in-process bus.
    Embedded,
    /// Postgres + Redis, several nodes.
    Cluster,
}

/// How tests reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 in clear text (streams on the server's lean writer).
    Plain,
    /// TLS with ALPN `h2`: HTTP/2, several requests on one connection.
    TlsH2,
}

tokio::task_local! {
    /// The transport of the test running in this task (`Plain` outside
    /// `both_transports!`).
    pub static TRANSPORT: Transport;
}

/// The transport of the current test.
pub fn transport() -> Transport {
    TRANSPORT.try_with(|t| *t).unwrap_or(Transport::Plain)
}

/// Runs `$body(Mode)` as four tests: `embedded` and `cluster` over plain
/// HTTP/1.1, and `embedded_h2` and `cluster_h2` over TLS and HTTP/2.
#[macro_export]
macro_rules! both_transports {
    ($name:ident, $body:ident) => {
        mod $name {
            use $crate::support::{Mode, Transport, TRANSPORT};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                TRANSPORT
                    .scope(Transport::Plain, super::$body(Mode::Embedded))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                TRANSPORT
                    .scope(Transport::Plain, super::$body(Mode::Cluster))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_h2() {
                TRANSPORT
                    .scope(Transport::TlsH2, super::$body(Mode::Embedded))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_h2() {
                TRANSPORT
                    .scope(Transport::TlsH2, super::$body(Mode::Cluster))
                    .await
            }
        }
    };
}

/// Runs `$body(Mode)` as two tests, `embedded` and `cluster`.
#[macro_export]
macro_rules! both_modes {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$body($crate::support::Mode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$body($crate::support::Mode::Cluster).await
            }
        }
    };
}

/// A short random hex string.
pub fn rand_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One test's world: where its nodes keep their data and how they are configured.
pub struct Env {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub redis_url: Option<String>,
    pub database_url: Option<String>,
    pub schema: Option<String>,
    pub prefix: String,
    pub vars: Vec<(String, String)>,
    /// Open-file limit for the nodes' processes.
    pub fd_limit: Option<u64>,
    /// TLS certificate and key the nodes serve with (`Transport::TlsH2`).
    pub tls: Option<Leaf>,
}

impl Env {
    /// A fresh world; in cluster mode creates a Postgres schema.
    pub async fn new(mode: Mode) -> Env {
        let id = rand_id();
        let data_dir = std::env::temp_dir().join(format!("switchyard-test-{id}"));
        std::fs::create_dir_all(&data_dir).expect("temp dir");
        let mut env = Env {
            mode,
            data_dir,
            redis_url: None,
            database_url: None,
            schema: None,
            prefix: format!("t-{id}"),
            vars: Vec::new(),
            fd_limit: None,
            tls: None,
        };
        if transport() == Transport::TlsH2 {
            env.tls = Some(test_ca().issue(&env.data_dir.join("tls"), "localhost"));
        }
        if mode == Mode::Cluster {
            let redis = std::env::var("SWITCHYARD_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let pg = std::env::var("SWITCHYARD_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("t_{id}");
            create_schema(&pg, &schema).await;
            let sep = if pg.contains('?') { '&' } else { '?' };
            env.database_url = Some(format!("{pg}{sep}options=-csearch_path%3D{schema}"));
            env.redis_url = Some(redis);
            env.schema = Some(schema);
        }
        env
    }

    /// Sets an extra variable for every node started after this.
    pub fn set(mut self, key: &str, value: impl ToString) -> Env {
        self.vars.push((key.into(), value.to_string()));
        self
    }

    /// Uses another Postgres (a private one, for fault tests); the schema
    /// made by `new` is not used.
    pub fn with_postgres(mut self, url: &str) -> Env {
        self.database_url = Some(url.into());
        self.schema = None;
        self
    }

    /// Uses another Redis (a private one, for fault tests).
    pub fn with_redis(mut self, url: &str) -> Env {
        self.redis_url = Some(url.into());
        self
    }

    /// Starts one node.
    pub async fn start(&self) -> Node {
        Node::start(self, &[]).await
    }

    /// Starts `n` nodes in cluster mode, one in embedded mode (it has no
    /// cluster): tests subscribe on the first and publish on the last, so in
    /// cluster mode every event crosses nodes.
    pub async fn start_nodes(&self, n: usize) -> Vec<Node> {
        let n = if self.mode == Mode::Cluster { n } else { 1 };
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(self.start().await);
        }
        nodes
    }

    /// The client-token keys the nodes of this env use (read the way the
    /// server reads them: data dir or Postgres).
    pub async fn keys(&self) -> switchyard::auth::Keys {
        let options = switchyard::config::Options {
            data_dir: Some(self.data_dir.clone()),
            redis_url: self.redis_url.clone(),
            database_url: self.database_url.clone(),
            ..Default::default()
        };
        let config = switchyard::config::Config::from_options(options).expect("config");
        switchyard::client_keys(&config).await.expect("keys")
    }

    /// A token minted by `switchyard token` (the CLI) for this env.
    pub async fn token(&self, sub: &str, tenant: &str) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["token", "--sub", sub, "--tenant", tenant, "--ttl", "1h"])
            .env_clear()
            .env("SWITCHYARD_DATA_DIR", &self.data_dir)
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        if let (Some(r), Some(d)) = (&self.redis_url, &self.database_url) {
            cmd.env("REDIS_URL", r).env("DATABASE_URL", d);
        }
        let out = cmd.output().await.expect("run switchyard token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// A publisher token minted by `switchyard token --service` for this env.
    pub async fn service_token(&self, service: &str, tenant: &str, publish: &str) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["token", "--service", service, "--tenant", tenant])
            .args(["--publish", publish])
            .env_clear()
            .env("SWITCHYARD_DATA_DIR", &self.data_dir)
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        if let (Some(r), Some(d)) = (&self.redis_url, &self.database_url) {
            cmd.env("REDIS_URL", r).env("DATABASE_URL", d);
        }
        let out = cmd.output().await.expect("run switchyard token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Drops the test's schema (best effort).
    pub async fn cleanup(self) {
        if let (Some(schema), Some(_)) = (&self.schema, &self.database_url) {
            let pg = std::env::var("SWITCHYARD_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&pg).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut c)
                    .await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn create_schema(pg: &str, schema: &str) {
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(pg)
        .await
        .unwrap_or_else(|e| {
            panic!("cluster tests need Postgres at {pg} (set SWITCHYARD_TEST_DATABASE_URL): {e}")
        });
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .expect("create schema");
}

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
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
            http: client_builder()
                .pool_max_idle_per_host(4)
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

    /// A metric's value (summed over label sets), 0 if absent.
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

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Polls `f` until it is true; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    while !f().await {
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad json {:?}: {e}", self.data))
    }

    /// The event id.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("numeric id")
    }

    /// True for server control frames.
    pub fn is_control(&self) -> bool {
        matches!(
            self.event.as_str(),
            "snapshot" | "reset" | "shutdown" | "auth.expired"
        )
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A streaming SSE client that parses frames like a browser's `EventSource`.
pub struct Sse {
    stream: ByteStream,
    buf: Vec<u8>,
    /// The `lastEventId` a browser would hold.
    pub last_id: Option<String>,
    /// The `retry:` hint seen.
    pub retry: Option<u64>,
    /// Comment lines seen.
    pub comments: usize,
    /// `heartbeat` events seen (not returned by `next`: they only move the
    /// last id, as they do for the browser client).
    pub heartbeats: usize,
    /// The interval the last heartbeat announced.
    pub heartbeat_ms: Option<u64>,
    /// The stream ended.
    pub ended: bool,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Sse {
    /// Connects; `Err((status, body))` when the server refuses.
    pub async fn connect(
        url: &str,
        last_event_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Result<Sse, (StatusCode, String)> {
        let client = client_builder().build().expect("client");
        Sse::connect_with(&client, url, last_event_id, headers).await
    }

    /// Connects with `client` (over HTTP/2, streams of one client share its
    /// connection).
    pub async fn connect_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Result<Sse, (StatusCode, String)> {
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req
            .send()
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
        if url.starts_with("https://") {
            // Over TLS every stream test is an HTTP/2 test.
            assert_eq!(res.version(), reqwest::Version::HTTP_2, "{url}");
        }
        if res.status() != StatusCode::OK {
            let s = res.status();
            return Err((s, res.text().await.unwrap_or_default()));
        }
        let headers = res.headers().clone();
        Ok(Sse {
            stream: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            last_id: last_event_id.map(|i| i.to_string()),
            retry: None,
            comments: 0,
            heartbeats: 0,
            heartbeat_ms: None,
            ended: false,
            headers,
        })
    }

    /// The next event (any type), or `None` at the end of the stream or after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(pos) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                if let Some(ev) = self.parse_block(&block) {
                    return Some(ev);
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(_))) | Ok(None) => self.ended = true,
            }
        }
    }

    /// The next event that is not a server control frame.
    pub async fn next_data(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if !ev.is_control() {
                return Some(ev);
            }
        }
    }

    /// The next event of type `kind`.
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if ev.event == kind {
                return Some(ev);
            }
        }
    }

    /// Collects `n` data events (panics with what it has after `timeout`).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_data(left).await {
                Some(ev) => out.push(ev),
                None => panic!(
                    "stream gave {} of {n} events (ended: {}); last: {:?}",
                    out.len(),
                    self.ended,
                    out.last()
                ),
            }
        }
        out
    }

    fn parse_block(&mut self, block: &[u8]) -> Option<SseEvent> {
        let text = String::from_utf8_lossy(block);
        let mut id = None;
        let mut event = None;
        let mut data: Option<String> = None;
        for line in text.split('\n') {
            if line.is_empty() {
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = Some(value.to_string()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
        if let Some(id) = &id {
            self.last_id = Some(id.clone());
        }
        let data = data?;
        if event.as_deref() == Some("heartbeat") {
            self.heartbeats += 1;
            let v: Value = serde_json::from_str(&data).expect("heartbeat data is JSON");
            self.heartbeat_ms = v["interval_ms"].as_u64();
            assert!(id.is_some(), "a heartbeat without id: {text:?}");
            return None;
        }
        Some(SseEvent {
            id: id.or_else(|| self.last_id.clone()),
            event: event.unwrap_or_else(|| "message".into()),
            data,
        })
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// An HTTP client for the test's nodes: it trusts the test CA, and over TLS
/// offers `h2` (and `http/1.1`) by ALPN.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().add_root_certificate(
        reqwest::Certificate::from_pem(&test_ca().pem).expect("test CA certificate"),
    )
}

/// A certificate authority made for this test process (`openssl`), which
/// issues the nodes' certificates.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate, PEM.
    pub pem: Vec<u8>,
}

/// A server certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The process's test CA (made on first use).
pub fn test_ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-test-ca-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("CA dir");
        let (key, pem) = (dir.join("ca.key"), dir.join("ca.pem"));
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2",
            &["-subj", "/CN=Switchyard test CA"],
            &[("-keyout", &key), ("-out", &pem)],
        );
        let pem = std::fs::read(pem).expect("CA certificate");
        TestCa { dir, pem }
    })
}

impl TestCa {
    /// The CA certificate's file.
    pub fn pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `localhost` and 127.0.0.1 into `dir`
    /// (`cert.pem`, `key.pem`), with `cn` as its common name.
    pub fn issue(&self, dir: &std::path::Path, cn: &str) -> Leaf {
        std::fs::create_dir_all(dir).expect("leaf dir");
        let id = rand_id();
        let csr = dir.join(format!("{id}.csr"));
        let ext = dir.join(format!("{id}.ext"));
        let leaf = Leaf {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
            &["-subj", &format!("/CN={cn}")],
            &[("-keyout", &leaf.key), ("-out", &csr)],
        );
        openssl(
            "x509 -req -days 2",
            &["-set_serial", &format!("0x{id}")],
            &[
                ("-in", &csr),
                ("-CA", &self.dir.join("ca.pem")),
                ("-CAkey", &self.dir.join("ca.key")),
                ("-extfile", &ext),
                ("-out", &leaf.cert),
            ],
        );
        let _ = std::fs::remove_file(csr);
        let _ = std::fs::remove_file(ext);
        leaf
    }
}

/// Runs `openssl` with `fixed` (split at spaces), `args` and `files`.
fn openssl(fixed: &str, args: &[&str], files: &[(&str, &std::path::Path)]) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(fixed.split(' ')).args(args);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().expect("openssl (installed by scripts/setup)");
    assert!(
        out.status.success(),
        "openssl {fixed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private `redis-server` on a free port, for tests that stop Redis.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one (nothing on disk).
    pub async fn start() -> PrivateRedis {
        let port = free_port();
        let mut r = PrivateRedis { port, child: None };
        r.restart().await;
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("private redis up", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Seconds as a `Duration` (shorthand for timeouts).
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A private PostgreSQL cluster on a free port (Debian's binaries, run as the
/// `postgres` user), for tests that stop the database.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts one.
    pub async fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(format!("switchyard-pg-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.as_postgres(
            &["chown", "-R", "postgres", &pg.dir.display().to_string()],
            true,
        );
        let initdb = pg.bin.join("initdb").display().to_string();
        let data = pg.dir.join("data").display().to_string();
        pg.as_postgres(
            &[
                &initdb,
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            false,
        );
        pg.restart().await;
        pg
    }

    fn as_postgres(&self, args: &[&str], as_root: bool) {
        let status = if as_root || !is_root() {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .status()
        } else {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .status()
        };
        assert!(status.expect("run").success(), "{args:?} failed");
    }

    /// Its URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again).
    pub async fn restart(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.as_postgres(
            &[&pg_ctl, "-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
            false,
        );
    }

    /// Stops it (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        self.as_postgres(&[&pg_ctl, "-D", &data, "-m", "fast", "-w", "stop"], false);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
