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
use crate::store::placed::{Placed, Rule};
use crate::store::postgres::PostgresStore;
use crate::store::Store;
use conn::RedisConn;

/// Connects to Postgres (applying migrations) and Redis; the bus has
/// `shards` shards. With `databases` beside `database_url` (the home one),
/// tenants are placed on all of them (`store/placed.rs`).
pub async fn open(
    database_url: &str,
    databases: &[(String, String)],
    rule: Rule,
    redis_url: &str,
    prefix: &str,
    shards: u16,
) -> Result<Backend, Error> {
    let opened = if databases.is_empty() {
        let store = Arc::new(
            PostgresStore::connect(database_url)
                .await
                .map_err(Error::Postgres)?,
        );
        crate::store::placed::check_alone(&store)
            .await
            .map_err(Error::Postgres)?;
        Databases::One(store)
    } else {
        let placed = Placed::open(database_url, databases, rule)
            .await
            .map_err(Error::Postgres)?;
        tracing::info!(
            databases = placed.databases().len(),
            rule = ?rule,
            "tenants placed on several databases"
        );
        Databases::Placed(placed)
    };
    let redis = RedisConn::connect(redis_url, prefix, Duration::from_secs(10)).await?;
    tracing::info!(
        redis_cluster = redis.cluster,
        redis_servers = redis.bus_servers.len(),
        bus_shards = shards,
        "connected to Redis"
    );
    Ok(match opened {
        Databases::Placed(placed) => Backend {
            store: placed.clone(),
            bids: placed.clone(),
            plugins: placed.clone(),
            admin: placed.clone(),
            mode: Arc::new(Cluster {
                dbs: placed.databases().to_vec(),
                redis,
                shards,
            }),
            placement: Some(placed),
        },
        Databases::One(store) => Backend {
            store: store.clone(),
            bids: store.clone(),
            plugins: store.clone(),
            admin: store.clone(),
            mode: Arc::new(Cluster {
                dbs: vec![store],
                redis,
                shards,
            }),
            placement: None,
        },
    })
}

/// The system of record cluster mode opened.
enum Databases {
    /// `DATABASE_URL` alone.
    One(Arc<PostgresStore>),
    /// Several, tenants placed on them.
    Placed(Arc<Placed>),
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
    /// The tenants' databases, the home one (`DATABASE_URL`) first.
    dbs: Vec<Arc<PostgresStore>>,
    redis: RedisConn,
    shards: u16,
}

impl Cluster {
    /// Every database answers: `/ready` names those that do not.
    async fn check_databases(&self) -> Result<(), Unready> {
        let asks = self.dbs.iter().map(|d| async move {
            super::within(async { Ok(d.ping().await?) })
                .await
                .err()
                .map(|e| (d.name().to_string(), e))
        });
        let mut failed: Vec<(String, Unready)> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if self.dbs.len() == 1 && !failed.is_empty() {
            return Err(failed.remove(0).1);
        }
        match failed.first() {
            None => Ok(()),
            Some((_, e)) => Err(Unready::Databases(
                failed
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                e.to_string(),
            )),
        }
    }

    /// Each bus shard's stream answers on its server (on a Redis Cluster,
    /// its master): `/ready` names the shards that do not. Only when there
    /// is more than one place to ask.
    async fn check_shards(&self) -> Result<(), Unready> {
        if self.shards <= 1 && self.redis.bus_servers.len() <= 1 {
            return Ok(());
        }
        let keys = fanout::shard_keys(&self.redis.prefix, self.shards);
        let asks = keys.iter().enumerate().map(|(i, key)| {
            let server = &self.redis.bus_servers[i % self.redis.bus_servers.len()];
            let mut c = server.conn.clone();
            async move {
                let r: redis::RedisResult<i64> =
                    redis::cmd("EXISTS").arg(key).query_async(&mut c).await;
                r.err().map(|e| (i, e))
            }
        });
        let failed: Vec<(usize, redis::RedisError)> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        match failed.first() {
            None => Ok(()),
            Some((_, e)) => Err(Unready::BusShards(
                failed
                    .iter()
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                e.to_string(),
            )),
        }
    }
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
        shared_secret(&self.dbs[0]).await
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
            self.shards,
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
            self.check_databases(),
            super::within(async {
                self.redis.ping().await?;
                self.check_shards().await
            }),
        );
        vec![("postgres", postgres), ("redis", redis)]
    }
}
