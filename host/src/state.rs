//! `AppState`: what handlers share.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::Keys;
use crate::backend::Backend;
use crate::bids::queue::BidWakeups;
use crate::bus::publisher::Publisher;
use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::ratelimit::RateLimiter;
use crate::sse::caps::Caps;
use crate::sse::session::StreamContext;
use crate::store::{self, Store, Tenant};

/// Known tenants, cached (tenants are never deleted, so a hit stays true).
pub struct TenantCache {
    store: Arc<dyn Store>,
    known: RwLock<HashMap<String, Tenant>>,
    /// Lookups of a tenant not yet known, coalesced: the first requests a
    /// node serves for a tenant (a reconnect storm after a restart) share a
    /// few queries.
    lookups: Coalescer<String, Result<Option<Tenant>, Arc<store::Error>>>,
}

impl TenantCache {
    /// An empty cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        TenantCache {
            store,
            known: RwLock::new(HashMap::new()),
            lookups: Coalescer::default(),
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
        let store = self.store.clone();
        let owned = slug.to_string();
        let found = self
            .lookups
            .get(slug.to_string(), move || async move {
                store.tenant(&owned).await.map_err(Arc::new)
            })
            .await
            .ok_or_else(|| store::Error::Internal("a tenant lookup panicked".into()))?
            .map_err(store::Error::shared)?;
        match found {
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
    /// Presence: streams and users per topic.
    pub presence: crate::presence::Presence,
    /// Per-token POST rate limit.
    pub rate: Arc<RateLimiter>,
    /// The plugin registry (validator, shaper, filter).
    pub plugins: Plugins,
    /// Wake-ups for bid workers.
    pub bid_queue: Arc<dyn BidWakeups>,
    /// The configured sources and their status.
    pub sources: crate::sources::Sources,
    /// Every node's streams and figures, for the operator.
    pub console: crate::console::Console,
}
