//! `AppState` (what handlers share) and `Backend` (what a deployment mode provides).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::Keys;
use crate::bids::queue::BidQueue;
use crate::bus::publisher::Publisher;
use crate::bus::redis::RedisConn;
use crate::config::{Config, Mode};
use crate::http::ratelimit::RateLimiter;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::sse::caps::Caps;
use crate::sse::session::StreamContext;
use crate::store::bids::BidStore;
use crate::store::plugins::PluginStore;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{self, Store, Tenant};

/// Everything the core needs from a deployment mode.
#[derive(Clone)]
pub struct Backend {
    /// System of record and event log.
    pub store: Arc<dyn Store>,
    /// Products and bids.
    pub bids: Arc<dyn BidStore>,
    /// Plugin versions and slots.
    pub plugins: Arc<dyn PluginStore>,
    /// Redis, in cluster mode.
    pub redis: Option<RedisConn>,
}

impl Backend {
    /// The client-token secret: configured, else generated once and kept in
    /// the data dir (embedded) or in Postgres, shared by every node (cluster).
    pub async fn jwt_secret(&self, config: &Config) -> Result<Keys, String> {
        if let Some(s) = &config.jwt_secret {
            return Ok(Keys::with_rules(s.as_bytes(), config.tokens.clone()));
        }
        let secret = match config.mode {
            Mode::Embedded => crate::auth::secret_from_data_dir(&config.data_dir).map_err(|e| {
                format!(
                    "cannot keep the JWT secret in {}: {e}",
                    config.data_dir.display()
                )
            })?,
            Mode::Cluster { .. } => self
                .store
                .secret("jwt", &crate::auth::random_secret())
                .await
                .map_err(|e| format!("cannot read the shared JWT secret: {e}"))?
                .into_bytes(),
        };
        Ok(Keys::with_rules(&secret, config.tokens.clone()))
    }

    /// Embedded mode: a SQLite file in the data dir.
    pub async fn embedded(config: &Config) -> Result<Backend, String> {
        let store = SqliteStore::open(&config.data_dir).await.map_err(|e| {
            format!(
                "cannot open the data dir {}: {e}",
                config.data_dir.display()
            )
        })?;
        let store = Arc::new(store);
        Ok(Backend {
            store: store.clone(),
            bids: store.clone(),
            plugins: store,
            redis: None,
        })
    }

    /// Cluster mode: Postgres and Redis.
    pub async fn cluster(config: &Config) -> Result<Backend, String> {
        let Mode::Cluster {
            redis_url,
            database_url,
        } = &config.mode
        else {
            return Err("cluster mode needs REDIS_URL and DATABASE_URL".into());
        };
        let store = PostgresStore::connect(database_url)
            .await
            .map_err(|e| format!("cannot use Postgres: {e}"))?;
        let redis = RedisConn::connect(
            redis_url,
            &config.redis_prefix,
            std::time::Duration::from_secs(10),
        )
        .await?;
        let store = Arc::new(store);
        Ok(Backend {
            store: store.clone(),
            bids: store.clone(),
            plugins: store,
            redis: Some(redis),
        })
    }
}

/// Known tenants, cached (tenants are never deleted, so a hit stays true).
pub struct TenantCache {
    store: Arc<dyn Store>,
    known: RwLock<HashMap<String, Tenant>>,
}

impl TenantCache {
    /// An empty cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        TenantCache {
            store,
            known: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant, or `UnknownTenant`.
    pub async fn get(&self, slug: &str) -> Result<Tenant, store::Error> {
        if let Some(t) = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(slug)
        {
            return Ok(t.clone());
        }
        match self.store.tenant(slug).await? {
            Some(t) => {
                self.known
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(slug.to_string(), t.clone());
                Ok(t)
            }
            None => Err(store::Error::UnknownTenant(slug.to_string())),
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// Deployment mode's services.
    pub backend: Backend,
    /// The appender every event goes through.
    pub publisher: Publisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tenant lookups.
    pub tenants: Arc<TenantCache>,
    /// What SSE sessions share.
    pub streams: Arc<StreamContext>,
    /// This server's token keys (for minting).
    pub keys: Keys,
    /// Checks client and publisher tokens (this server's and the identity
    /// provider's).
    pub verifier: crate::auth::Verifier,
    /// Stream caps.
    pub caps: Arc<Caps>,
    /// Per-token POST rate limit.
    pub rate: Arc<RateLimiter>,
    /// The plugin registry (validator, shaper, filter).
    pub plugins: Plugins,
    /// Wake-ups for bid workers.
    pub bid_queue: BidQueue,
}
