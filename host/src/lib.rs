//! Switchyard: a real-time event router with exact resume.
//!
//! # Layout
//!
//! - `config`: one `Config` from flags, environment and file.
//! - `event`: events, topics, names and their rules.
//! - `store`: the system of record and event log (`SqliteStore`, `PostgresStore`);
//!   it assigns every event its per-tenant, gapless, commit-ordered id.
//! - `bus`: the `Publisher` (group-commit appender), the `Hub` (this node's
//!   subscribers, fed in id order), the `Fanout` between nodes (`memory`,
//!   `redis`) and `retention`.
//! - `sse`: frame encoding and the per-connection `Session` (replay, live,
//!   lag fallback, reset, heartbeat, shutdown).
//! - `http`: the API, one file per resource; `error`: `ApiError`.
//! - `server`: accept loop, connection cap, write deadline, drain.
//! - `state`: `AppState` and `Backend`; `metrics`; `shutdown`.
//!
//! `run` wires them: config → backend → hub → fan-out → publisher → router →
//! accept loop, and tears them down in reverse on shutdown.

pub mod auth;
pub mod bids;
pub mod bus;
pub mod config;
pub mod error;
pub mod event;
pub mod http;
pub mod metrics;
pub mod plugins;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::hub::Hub;
use crate::bus::memory::MemoryFanout;
use crate::bus::publisher::Publisher;
use crate::bus::redis::RedisFanout;
use crate::bus::retention::Retention;
use crate::bus::Fanout;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::sse::session::StreamContext;
use crate::state::{AppState, Backend, TenantCache};

/// The tenant embedded mode creates on first start.
pub const DEMO_TENANT: &str = "demo";

/// Opens the backend for the configured mode (applying migrations).
pub async fn backend(config: &Config) -> Result<Backend, String> {
    match config.mode {
        Mode::Embedded => Backend::embedded(config).await,
        Mode::Cluster { .. } => Backend::cluster(config).await,
    }
}

/// The client-token keys the server would use, without starting it: the
/// configured secret, else the one in the data dir (embedded) or Postgres
/// (cluster).
pub async fn client_keys(config: &Config) -> Result<auth::Keys, String> {
    if let Some(s) = &config.jwt_secret {
        return Ok(auth::Keys::with_rules(s.as_bytes(), config.tokens.clone()));
    }
    match &config.mode {
        Mode::Embedded => auth::secret_from_data_dir(&config.data_dir)
            .map(|s| auth::Keys::with_rules(&s, config.tokens.clone()))
            .map_err(|e| {
                format!(
                    "cannot read the JWT secret in {}: {e}",
                    config.data_dir.display()
                )
            }),
        Mode::Cluster { database_url, .. } => {
            let store = store::postgres::PostgresStore::connect(database_url)
                .await
                .map_err(|e| format!("cannot use Postgres: {e}"))?;
            let store = Arc::new(store);
            let backend = Backend {
                store: store.clone(),
                bids: store.clone(),
                plugins: store,
                redis: None,
            };
            backend.jwt_secret(config).await
        }
    }
}

/// Runs a node on `listener` until `shutdown` is cancelled, then drains:
/// streams flush what is queued, send `shutdown` and end; the call returns
/// once connections are closed or the grace period is over.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let config = Arc::new(config);
    let backend = backend(&config).await?;
    let store = backend.store.clone();
    if config.mode == Mode::Embedded {
        match store.create_tenant(DEMO_TENANT, "Demo marketplace").await {
            Ok(_) => tracing::info!(tenant = DEMO_TENANT, "created the demo tenant"),
            Err(store::Error::Conflict(_)) => {}
            Err(e) => return Err(format!("cannot create the demo tenant: {e}")),
        }
    }
    let metrics = Arc::new(Metrics::default());
    let heads = store
        .heads()
        .await
        .map_err(|e| format!("cannot read tenants: {e}"))?;
    // Background tasks stop after the connections have drained.
    let background = CancellationToken::new();
    let plugins = plugins::start(&config, &backend, background.clone()).await?;
    let hub = Hub::start(
        store.clone(),
        metrics.clone(),
        heads,
        config.tail_check,
        plugins.clone(),
    );
    let node = node_id();
    let fanout: Arc<dyn Fanout> = match &backend.redis {
        None => Arc::new(MemoryFanout::new(hub.clone())),
        Some(redis) => Arc::new(RedisFanout::start(
            redis.clone(),
            hub.clone(),
            metrics.clone(),
            node.clone(),
            background.clone(),
        )),
    };
    let retention = Arc::new(Retention::new(
        config.retention_events,
        config.retention_age,
    ));
    tokio::spawn(retention.clone().run(
        store.clone(),
        metrics.clone(),
        config.retention_sweep,
        background.clone(),
    ));
    let publisher = Publisher::start(store.clone(), fanout, retention, metrics.clone());
    {
        // Streams learn of the shutdown through their queues.
        let hub = hub.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            hub.wake_all();
        });
    }
    let streams = Arc::new(StreamContext {
        store: store.clone(),
        hub: hub.clone(),
        metrics: metrics.clone(),
        retry: config.retry,
        heartbeat: config.heartbeat,
        heartbeat_body: sse::encode::heartbeat_body(config.heartbeat),
        reconnect_window: config.reconnect_window,
        queue: config.client_queue,
        shutdown: shutdown.clone(),
        plugins: plugins.clone(),
    });
    let worker = bids::worker::Worker::start(
        backend.bids.clone(),
        publisher.clone(),
        plugins.clone(),
        metrics.clone(),
        background.clone(),
    );
    let bid_queue = match &backend.redis {
        None => bids::queue::BidQueue::Local(worker),
        Some(redis) => {
            bids::queue::BidQueue::redis(redis, worker, node.clone(), background.clone())
        }
    };
    let keys = backend.jwt_secret(&config).await?;
    let verifier = auth::Verifier::start(
        keys.clone(),
        config.jwt_public_key.as_deref(),
        config.jwks_url.as_deref(),
    )
    .await?;
    let caps = match &backend.redis {
        None => sse::caps::Caps::memory(config.max_streams_per_user, config.max_streams_per_tenant),
        Some(redis) => sse::caps::Caps::redis(
            redis,
            config.max_streams_per_user,
            config.max_streams_per_tenant,
            background.clone(),
        ),
    };
    let state = AppState {
        config: config.clone(),
        backend,
        publisher,
        metrics: metrics.clone(),
        tenants: Arc::new(TenantCache::new(store.clone())),
        streams,
        keys,
        verifier,
        caps,
        rate: Arc::new(http::ratelimit::RateLimiter::new(
            config.post_rate,
            config.post_burst,
        )),
        plugins,
        bid_queue,
    };
    let fd_limit = server::raise_fd_limit();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| server::default_max_connections(fd_limit));
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener has no address: {e}"))?;
    tracing::info!(
        %addr,
        mode = config.mode_name(),
        fd_limit,
        max_connections,
        admin_api = config.admin_token.is_some(),
        "switchyard listening"
    );
    let app = http::router::router(state);
    server::serve(
        listener,
        app,
        metrics,
        server::ServeOptions {
            max_connections,
            write_deadline: config.write_deadline,
            grace: config.shutdown_grace,
            head: config.head,
        },
        shutdown,
    )
    .await;
    background.cancel();
    tracing::info!("switchyard stopped");
    Ok(())
}

fn node_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
