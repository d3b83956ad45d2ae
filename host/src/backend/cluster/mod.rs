//! Cluster mode: any number of nodes behind a load balancer. Postgres is the
//! system of record (it assigns ids and keeps the shared secret); Redis
//! carries events between nodes (`fanout`), holds stream leases (`caps`),
//! presence counts (`presence`) and bid wake-ups (`bid_wakeups`). Redis is never the only copy of anything:
//! what it loses, the store repairs.

pub mod bid_wakeups;
pub mod caps;
pub mod conn;
pub mod console;
pub mod fanout;
pub mod presence;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Backend, Error, Mode, Unready};
use crate::bids::queue::BidWakeups;
use crate::bids::worker::Worker;
use crate::bus::hub::Hub;
use crate::bus::Fanout;
use crate::metrics::Metrics;
use crate::presence::PresenceStore;
use crate::sse::caps::CapStore;
use crate::store::postgres::PostgresStore;
use crate::store::Store;
use conn::RedisConn;

/// Connects to Postgres (applying migrations) and Redis.
pub async fn open(database_url: &str, redis_url: &str, prefix: &str) -> Result<Backend, Error> {
    let store = PostgresStore::connect(database_url)
        .await
        .map_err(Error::Postgres)?;
    let redis = RedisConn::connect(redis_url, prefix, Duration::from_secs(10)).await?;
    let store = Arc::new(store);
    Ok(Backend {
        store: store.clone(),
        bids: store.clone(),
        plugins: store.clone(),
        admin: store.clone(),
        mode: Arc::new(Cluster { store, redis }),
    })
}

/// The secret shared through Postgres (the first node to ask stores it).
pub async fn secret(database_url: &str) -> Result<Vec<u8>, Error> {
    let store = PostgresStore::connect(database_url)
        .await
        .map_err(Error::Postgres)?;
    shared_secret(&store).await
}

async fn shared_secret(store: &PostgresStore) -> Result<Vec<u8>, Error> {
    store
        .secret("jwt", &crate::auth::random_secret())
        .await
        .map(String::into_bytes)
        .map_err(Error::SharedSecret)
}

struct Cluster {
    store: Arc<PostgresStore>,
    redis: RedisConn,
}

#[async_trait::async_trait]
impl Mode for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    async fn on_start(&self, _store: &Arc<dyn Store>) -> Result<(), Error> {
        Ok(())
    }

    async fn secret(&self) -> Result<Vec<u8>, Error> {
        shared_secret(&self.store).await
    }

    fn fanout(
        &self,
        hub: Hub,
        metrics: Arc<Metrics>,
        node: &str,
        stop: CancellationToken,
    ) -> Arc<dyn Fanout> {
        Arc::new(fanout::RedisFanout::start(
            self.redis.clone(),
            hub,
            metrics,
            node.to_string(),
            stop,
        ))
    }

    fn bid_wakeups(
        &self,
        worker: Worker,
        node: &str,
        stop: CancellationToken,
    ) -> Arc<dyn BidWakeups> {
        Arc::new(bid_wakeups::RedisWakeups::start(
            &self.redis,
            worker,
            node.to_string(),
            stop,
        ))
    }

    fn cap_store(&self, stop: CancellationToken) -> Arc<dyn CapStore> {
        Arc::new(caps::RedisCaps::start(&self.redis, stop))
    }

    fn presence_store(&self, stop: CancellationToken) -> Arc<dyn PresenceStore> {
        Arc::new(presence::RedisPresence::start(&self.redis, stop))
    }

    fn console(
        &self,
        local: Arc<crate::console::LocalStreams>,
        stop: CancellationToken,
    ) -> Arc<dyn crate::console::Directory> {
        Arc::new(console::RedisDirectory::start(&self.redis, local, stop))
    }

    fn shares_plugins(&self) -> bool {
        true
    }

    async fn check(&self) -> Vec<(&'static str, Result<(), Unready>)> {
        let (postgres, redis) = tokio::join!(
            super::within(async { Ok(self.store.ping().await?) }),
            super::within(async { Ok(self.redis.ping().await?) }),
        );
        vec![("postgres", postgres), ("redis", redis)]
    }
}
