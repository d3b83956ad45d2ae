//! `Env`: one test's world (data dir, Postgres schema, Redis prefix, settings) and the nodes it starts.

use super::*;

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
        self.mint(&["--sub", sub, "--tenant", tenant, "--ttl", "1h"])
            .await
    }

    /// A publisher token minted by `switchyard token --service` for this env.
    pub async fn service_token(&self, service: &str, tenant: &str, publish: &str) -> String {
        self.mint(&[
            "--service",
            service,
            "--tenant",
            tenant,
            "--publish",
            publish,
        ])
        .await
    }

    /// Runs `switchyard token ARGS` with this env's settings; its output.
    async fn mint(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("token")
            .args(args)
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
