//! Switchyard: a real-time event router with exact resume.
//!
//! # Layout
//!
//! - `config`: one `Config` from flags, environment and file.
//! - `event`: events, topics, names and their rules.
//! - `store`: the system of record and event log (`SqliteStore`, `PostgresStore`);
//!   it assigns every event its per-tenant, gapless, commit-ordered id.
//! - `backend`: the mode boundary. `Backend::open` builds, for the configured
//!   mode, the system of record and every mode-specific service behind a
//!   trait (fan-out, stream caps, bid wake-ups, the secret, readiness);
//!   `embedded` and `cluster` (everything that speaks Redis).
//! - `bus`: the `Publisher` (group-commit appender), the `Hub` (this node's
//!   subscribers, fed in id order, filter lanes), the `Fanout` trait and
//!   `retention`.
//! - `presence`: occupancy of topics, appended as retained events on
//!   derived topics (`T~occupancy`).
//! - `sse`: frame encoding and the per-connection `Session` (replay, live,
//!   lag fallback, reset, heartbeat, shutdown).
//! - `http`: the API, one file per resource; `error`: `ApiError`.
//! - `server`: accept loop, connection cap, first request, socket wrappers, drain.
//! - `state`: `AppState`; `metrics`; `shutdown`; `logging` (the log, which
//!   drops lines rather than stall or stop the node).
//!
//! `run` wires them: config → backend → hub → fan-out → publisher → router →
//! accept loop, and tears them down in reverse on shutdown.

pub mod auth;
pub mod backend;
mod bids;
mod bus;
mod coalesce;
pub mod config;
mod console;
mod error;
pub mod event;
/// Entry points of the fuzz targets in `fuzz/`; not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod logging;
mod metrics;
pub mod net;
pub mod plugins;
mod presence;
mod ratelimit;
pub mod server;
pub mod shutdown;
pub mod sources;
mod sse;
mod state;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::bus::hub::Hub;
use crate::bus::publisher::Publisher;
use crate::bus::retention::Retention;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sse::session::StreamContext;
use crate::state::{AppState, TenantCache};

pub use crate::backend::embedded::DEMO_TENANT;

/// Opens the backend for the configured mode (applying migrations).
pub async fn backend(config: &Config) -> Result<Backend, backend::Error> {
    Backend::open(config).await
}

/// The client-token keys the server would use, without starting it: the
/// configured secret, else the one in the data dir (embedded) or Postgres
/// (cluster).
pub async fn client_keys(config: &Config) -> Result<auth::Keys, backend::Error> {
    Backend::keys(config).await
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The backend could not be opened or started.
    #[error(transparent)]
    Backend(#[from] backend::Error),
    /// The tenants' heads could not be read.
    #[error("cannot read tenants: {0}")]
    Heads(#[source] store::Error),
    /// The plugin registry could not start.
    #[error(transparent)]
    Plugins(#[from] plugins::StartError),
    /// The identity provider's keys cannot be used.
    #[error(transparent)]
    Provider(#[from] auth::ProviderError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] server::tls::Error),
    /// The listener has no address.
    #[error("listener has no address: {0}")]
    Listener(#[source] std::io::Error),
}

/// Runs a node on `listener` until `shutdown` is cancelled, then drains:
/// streams flush what is queued, send `shutdown` and end; the call returns
/// once connections are closed or the grace period is over.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let backend = backend(&config).await?;
    let store = backend.store.clone();
    backend.mode.on_start(&store).await?;
    let metrics = Arc::new(Metrics::default());
    let heads = store.heads().await.map_err(RunError::Heads)?;
    // Background tasks stop after the connections have drained.
    let background = CancellationToken::new();
    let plugins = plugins::start(
        &config,
        backend.plugins.clone(),
        backend.mode.shares_plugins(),
        background.clone(),
    )
    .await?;
    {
        let plugins = plugins.clone();
        metrics.gather_plugins(move || plugins.sample());
    }
    let hub = Hub::start(
        store.clone(),
        metrics.clone(),
        heads,
        config.tail_check,
        Arc::new(plugins.clone()),
    );
    let node = node_id();
    let fanout = backend
        .mode
        .fanout(hub.clone(), metrics.clone(), &node, background.clone());
    let retention = Arc::new(
        Retention::new(config.retention_events, config.retention_age)
            .key_window(config.idempotency_window)
            .source_key_window(config.source_key_window),
    );
    tokio::spawn(retention.clone().run(
        store.clone(),
        metrics.clone(),
        config.retention_sweep,
        background.clone(),
    ));
    let publisher = Publisher::start(store.clone(), fanout, retention, metrics.clone());
    let presence = presence::Presence::start(
        config.presence.clone(),
        backend.mode.presence_store(background.clone()),
        publisher.clone(),
        store.clone(),
        background.clone(),
    );
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
        first_reads: Default::default(),
    });
    let worker = bids::worker::Worker::start(
        backend.bids.clone(),
        plugins.clone(),
        metrics.clone(),
        background.clone(),
    );
    let bid_queue = backend.mode.bid_wakeups(worker, &node, background.clone());
    let sources = sources::start(
        &config.sources,
        sources::Deps {
            publisher: publisher.clone(),
            store: store.clone(),
            bids: backend.bids.clone(),
            wakeups: bid_queue.clone(),
            metrics: metrics.clone(),
            key_window: config.source_key_window,
            prefix: config.redis_prefix.clone(),
            node: node.clone(),
        },
        background.clone(),
    );
    let keys = backend.jwt_keys(&config).await?;
    let verifier = auth::Verifier::start(
        keys.clone(),
        config.jwt_public_key.as_deref(),
        config.jwks_url.as_deref(),
        config.jwks_allow_http,
    )
    .await?;
    let caps = sse::caps::Caps::new(
        sse::caps::CapLimits {
            per_user: config.max_streams_per_user,
            per_tenant: config.max_streams_per_tenant,
            anonymous_per_tenant: config.max_anonymous_streams_per_tenant,
            per_address: config.max_streams_per_address,
        },
        backend.mode.cap_store(background.clone()),
    );
    let backend_mode = backend.mode.name();
    let console = {
        let local = console::LocalStreams::new(&node);
        let directory = backend.mode.console(local.clone(), background.clone());
        let mode = backend.mode.clone();
        let readiness: console::stats::Readiness = Arc::new(move || {
            let mode = mode.clone();
            Box::pin(async move {
                let bound = backend::CHECK_TIMEOUT + std::time::Duration::from_millis(100);
                match tokio::time::timeout(bound, mode.check()).await {
                    Ok(checks) => checks
                        .into_iter()
                        .map(|(name, r)| console::stats::DependencyState {
                            name: name.to_string(),
                            ok: r.is_ok(),
                            error: r.err().map(|e| e.to_string()),
                        })
                        .collect(),
                    Err(_) => vec![console::stats::DependencyState {
                        name: "checks".into(),
                        ok: false,
                        error: Some(format!("did not finish within {} ms", bound.as_millis())),
                    }],
                }
            })
        });
        let sampled = plugins.clone();
        console::stats::start(
            node.clone(),
            backend_mode,
            metrics.clone(),
            Arc::new(move || sampled.sample().slots.iter().map(|s| s.calls).sum()),
            readiness,
            directory.clone(),
            background.clone(),
        );
        console::Console { local, directory }
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
        presence,
        rate: Arc::new(ratelimit::RateLimiter::new(
            config.post_rate,
            config.post_burst,
        )),
        plugins,
        bid_queue,
        sources,
        console,
    };
    let fd_limit = server::raise_fd_limit();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| server::default_max_connections(fd_limit));
    metrics
        .connection_cap
        .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
    metrics
        .tenant_stream_cap
        .set(i64::from(config.max_streams_per_tenant));
    let addr = listener.local_addr().map_err(RunError::Listener)?;
    tracing::info!(
        %addr,
        mode = backend_mode,
        fd_limit,
        max_connections,
        admin_api = config.admin_token.is_some(),
        tls = config.tls.is_some(),
        "switchyard listening"
    );
    let tls = match &config.tls {
        Some(files) => Some(server::tls::acceptor(files, background.clone())?),
        None => None,
    };
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
            idle_timeout: config.idle_timeout,
            tls,
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
