//! The mode boundary: everything that differs between embedded and cluster
//! mode is built here, behind traits, and nowhere else checks the mode.
//!
//! - `embedded`: SQLite in the data dir; fan-out, stream caps and bid
//!   wake-ups within this process; the client-token secret in the data dir.
//! - `cluster`: Postgres as the system of record; Redis for fan-out between
//!   nodes, stream leases and bid wake-ups (every module that speaks Redis
//!   is under `cluster/`); the secret shared through Postgres; plugin
//!   changes picked up from the other nodes.
//!
//! `Backend::open` is the one place that looks at `Config::mode`. The rest
//! of the server sees the services: `Store`, `BidStore`, `PluginStore`
//! (the system of record) and the `Mode` factories below (`Fanout`,
//! `CapStore`, `BidWakeups`, the secret, readiness). Each trait has a
//! contract suite run against both implementations (`contract.rs`).

pub mod cluster;
#[cfg(test)]
mod contract;
pub mod embedded;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Keys;
use crate::bids::queue::BidWakeups;
use crate::bids::worker::Worker;
use crate::bus::hub::Hub;
use crate::bus::Fanout;
use crate::config::{Config, Mode as ConfigMode};
use crate::metrics::Metrics;
use crate::presence::PresenceStore;
use crate::sse::caps::CapStore;
use crate::store::admin::AdminStore;
use crate::store::bids::BidStore;
use crate::store::plugins::PluginStore;
use crate::store::Store;

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data dir (embedded mode) cannot be used.
    #[error("cannot open the data dir {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// Why.
        source: crate::store::Error,
    },
    /// Postgres does not answer or refused the migrations.
    #[error("cannot use Postgres: {0}")]
    Postgres(#[source] crate::store::Error),
    /// Redis does not answer.
    #[error(transparent)]
    Redis(#[from] cluster::conn::RedisError),
    /// The client-token secret in the data dir cannot be read or kept.
    #[error("cannot keep the JWT secret: in {dir}: {source}")]
    SecretFile {
        /// The data dir.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The client-token secret shared through Postgres cannot be read.
    #[error("cannot keep the JWT secret: cannot read the shared secret: {0}")]
    SharedSecret(#[source] crate::store::Error),
    /// The stored client-token secret (the data dir's file, or the one
    /// shared through Postgres) is too short to sign with.
    #[error(
        "the stored JWT secret is {0} bytes, fewer than {min}: a short HS256 secret can be guessed \
         offline from any token it signed; replace it (or set SWITCHYARD_JWT_SECRET)",
        min = crate::auth::MIN_SECRET_BYTES
    )]
    WeakSecret(usize),
    /// The node's start-up writes failed (embedded: the demo tenant).
    #[error("cannot create the demo tenant: {0}")]
    Start(#[source] crate::store::Error),
}

/// How long `/ready` waits for each dependency (they are asked at once): a
/// dependency that is cut off (a partition holds requests rather than
/// refusing them) is reported as not answering, so the probe itself answers
/// within a second.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// One dependency's check, given [`CHECK_TIMEOUT`].
pub(crate) async fn within<F>(check: F) -> Result<(), Unready>
where
    F: std::future::Future<Output = Result<(), Unready>>,
{
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or(Err(Unready::Timeout(CHECK_TIMEOUT)))
}

/// Why a dependency is not ready (`/ready` names it).
#[derive(Debug, thiserror::Error)]
pub enum Unready {
    /// The data dir's disk is (nearly) full: writes fail.
    #[error("the data dir's disk is full ({0} bytes free)")]
    DiskFull(u64),
    /// No answer within the check's bound.
    #[error("did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The system of record (named in our own words: `/ready` shows it).
    #[error("{}", .0.public())]
    Store(#[from] crate::store::Error),
    /// Redis.
    #[error(transparent)]
    Redis(#[from] cluster::conn::RedisError),
    /// Some of the bus's shards (their numbers) do not answer.
    #[error("bus shards {0} do not answer: {1}")]
    BusShards(String, String),
    /// Some of the tenants' databases (their names) do not answer.
    #[error("databases {0} do not answer: {1}")]
    Databases(String, String),
}

/// The services whose implementation depends on the deployment mode.
#[async_trait::async_trait]
pub trait Mode: Send + Sync + 'static {
    /// `embedded` or `cluster`, for logs and `/ready`.
    fn name(&self) -> &'static str;
    /// Runs once when a node starts serving (embedded mode creates the demo
    /// tenant).
    async fn on_start(&self, store: &Arc<dyn Store>) -> Result<(), Error>;
    /// The client-token secret when none is configured: generated once and
    /// kept where every node of the deployment finds it.
    async fn secret(&self) -> Result<Vec<u8>, Error>;
    /// How committed events reach every node's hub.
    fn fanout(
        &self,
        hub: Hub,
        metrics: Arc<Metrics>,
        node: &str,
        stop: CancellationToken,
    ) -> Arc<dyn Fanout>;
    /// How a stored bid's product reaches a worker.
    fn bid_wakeups(
        &self,
        worker: Worker,
        node: &str,
        stop: CancellationToken,
    ) -> Arc<dyn BidWakeups>;
    /// Where stream caps are counted.
    fn cap_store(&self, stop: CancellationToken) -> Arc<dyn CapStore>;
    /// Where streams on topics are counted for presence.
    fn presence_store(&self, stop: CancellationToken) -> Arc<dyn PresenceStore>;
    /// Where the console finds every node's streams and figures, over this
    /// node's `local` streams.
    fn console(
        &self,
        local: Arc<crate::console::LocalStreams>,
        stop: CancellationToken,
    ) -> Arc<dyn crate::console::Directory>;
    /// Whether plugin changes made on other nodes must be polled for.
    fn shares_plugins(&self) -> bool;
    /// Each dependency and whether it answers, for `/ready`: asked at once,
    /// each within [`CHECK_TIMEOUT`] (see [`within`]).
    async fn check(&self) -> Vec<(&'static str, Result<(), Unready>)>;
}

/// Everything the core needs from a deployment mode.
#[derive(Clone)]
pub struct Backend {
    /// System of record and event log.
    pub store: Arc<dyn Store>,
    /// Products and bids.
    pub bids: Arc<dyn BidStore>,
    /// Plugin versions and slots.
    pub plugins: Arc<dyn PluginStore>,
    /// The audit log and the topic listing.
    pub admin: Arc<dyn AdminStore>,
    /// The mode's other services.
    pub mode: Arc<dyn Mode>,
    /// The tenants' databases and their placement, when there are several
    /// (`SWITCHYARD_DATABASES`): the admin API moves tenants through it.
    pub placement: Option<Arc<crate::store::placed::Placed>>,
}

impl Backend {
    /// Opens the backend of the configured mode (applying migrations).
    pub async fn open(config: &Config) -> Result<Backend, Error> {
        match &config.mode {
            ConfigMode::Embedded => embedded::open(&config.data_dir).await,
            ConfigMode::Cluster {
                redis_url,
                database_url,
                databases,
            } => {
                cluster::open(
                    database_url,
                    databases,
                    config.tenant_placement,
                    redis_url,
                    &config.redis_prefix,
                    config.bus_shards,
                )
                .await
            }
        }
    }

    /// Only the system of record's part of the client-token secret, for the
    /// CLI (`switchyard token`): no Redis needed.
    pub async fn keys(config: &Config) -> Result<Keys, Error> {
        if let Some(s) = &config.jwt_secret {
            return Ok(Keys::with_rules(s.as_bytes(), config.tokens.clone()));
        }
        let secret = match &config.mode {
            ConfigMode::Embedded => embedded::secret(&config.data_dir)?,
            ConfigMode::Cluster { database_url, .. } => cluster::secret(database_url).await?,
        };
        Ok(Keys::with_rules(&strong(secret)?, config.tokens.clone()))
    }

    /// The client-token keys: the configured secret, else the mode's.
    pub async fn jwt_keys(&self, config: &Config) -> Result<Keys, Error> {
        if let Some(s) = &config.jwt_secret {
            return Ok(Keys::with_rules(s.as_bytes(), config.tokens.clone()));
        }
        Ok(Keys::with_rules(
            &strong(self.mode.secret().await?)?,
            config.tokens.clone(),
        ))
    }
}

/// A stored secret long enough to sign with (the node makes long ones; a
/// short one was put there by hand or by an old release).
fn strong(secret: Vec<u8>) -> Result<Vec<u8>, Error> {
    if secret.len() < crate::auth::MIN_SECRET_BYTES {
        return Err(Error::WeakSecret(secret.len()));
    }
    Ok(secret)
}
