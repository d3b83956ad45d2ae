//! `RedisConn`: the node's Redis, whichever shape it has.
//!
//! `REDIS_URL` names one server, or several separated by commas. The first
//! one answered decides the shape:
//!
//! - one server: everything on it;
//! - a **Redis Cluster** (`cluster_enabled:1` in `INFO cluster`): the URLs are
//!   its seed nodes; every command goes through `redis`'s cluster client,
//!   which follows `MOVED` and `ASK` and refreshes its slot map after a
//!   failover or a resharding. Keys a script or a pipeline touches together
//!   share one hash tag (see each module), and [`Batch`] splits a pipeline of
//!   unrelated keys by slot;
//! - several independent servers: the bus's shards are spread over them
//!   (`bus_servers`), and everything else (caps, presence, the console, bid
//!   wake-ups) lives on the first.
//!
//! Short commands share one multiplexed connection (`conn`, which
//! reconnects by itself); a blocking read takes a connection of its own
//! from [`Dedicated`].

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// How a command given up on is bounded.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub enum Conn {
    /// The shared connection to one server (reconnects by itself).
    Managed(ConnectionManager),
    /// A dedicated connection to one server.
    Plain(MultiplexedConnection),
    /// A connection to a Redis Cluster (one per master, routed by slot).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where dedicated connections come from (a blocking read must not hold
/// up the shared connection's other commands).
#[derive(Clone)]
pub enum Dedicated {
    /// One server.
    Single(redis::Client),
    /// A cluster, by its seed nodes.
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Dedicated {
    /// Where connections to `list` come from: one Redis URL, or a Redis
    /// Cluster's seed nodes separated by commas (the first server answered
    /// says which, by `INFO cluster`). For the sources, which read a
    /// producer's Redis; `true` for a cluster.
    pub async fn open(list: &str) -> redis::RedisResult<(Dedicated, bool)> {
        let clients = urls(list)
            .into_iter()
            .map(redis::Client::open)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = clients.first() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no URL",
            )));
        };
        if cluster_enabled(first).await? {
            let seeds = clients
                .iter()
                .map(|c| c.get_connection_info().clone())
                .collect();
            return Ok((Dedicated::Cluster(seeds), true));
        }
        Ok((Dedicated::Single(first.clone()), false))
    }

    /// A connection of its own whose commands may wait `response` (longer
    /// than a blocking read's block time).
    pub async fn connect(&self, response: Duration) -> redis::RedisResult<Conn> {
        match self {
            Dedicated::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(response);
                Ok(Conn::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Dedicated::Cluster(seeds) => {
                let client = cluster_builder(seeds).response_timeout(response).build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A pub/sub connection. On a cluster a classic `PUBLISH` reaches every
    /// node, so one subscription on any node hears them all: the seeds are
    /// tried in turn.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match self {
            Dedicated::Single(client) => client.get_async_pubsub().await,
            Dedicated::Cluster(seeds) => {
                let mut last = None;
                for seed in seeds {
                    match redis::Client::open(seed.clone()) {
                        Ok(c) => match c.get_async_pubsub().await {
                            Ok(p) => return Ok(p),
                            Err(e) => last = Some(e),
                        },
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::ClientError, "no seed node"))
                }))
            }
        }
    }
}

fn cluster_builder(seeds: &[redis::ConnectionInfo]) -> redis::cluster::ClusterClientBuilder {
    // A failover takes the cluster a few seconds (the node timeout, then
    // the election): the client retries a redirected or refused command a
    // few times over about that long; past it the caller's own bound (and
    // Postgres, the record) takes over.
    ClusterClient::builder(seeds.to_vec())
        .connection_timeout(Duration::from_secs(1))
        .retries(4)
        .min_retry_wait(100)
        .max_retry_wait(1_000)
}

/// One of the servers the bus's shards are spread over.
#[derive(Clone)]
pub struct BusServer {
    /// Short commands (the relay's appends).
    pub conn: Conn,
    /// The shards' readers.
    pub dedicated: Dedicated,
}

/// The node's Redis: a shared connection for short commands, and where
/// dedicated ones come from.
#[derive(Clone)]
pub struct RedisConn {
    /// The shared connection (to the first server, or the cluster).
    pub conn: Conn,
    /// Dedicated connections to the same.
    pub dedicated: Dedicated,
    /// Key prefix.
    pub prefix: String,
    /// Whether `conn` is a Redis Cluster.
    pub cluster: bool,
    /// The servers the bus's shards go to: shard `i` on `bus_servers[i % n]`.
    pub bus_servers: Vec<BusServer>,
}

/// Why Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `REDIS_URL` does not parse.
    #[error("invalid REDIS_URL: {0}")]
    Url(#[source] redis::RedisError),
    /// No connection within the patience given.
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// A command failed.
    #[error("{0}")]
    Command(#[source] redis::RedisError),
}

impl RedisError {
    /// The driver's error underneath.
    pub fn into_redis(self) -> redis::RedisError {
        match self {
            RedisError::Url(e) | RedisError::Connect(e) | RedisError::Command(e) => e,
        }
    }
}

/// The URLs of `REDIS_URL` (one, or several separated by commas).
pub fn urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

impl RedisConn {
    /// Connects, retrying for up to `patience`.
    pub async fn connect(
        list: &str,
        prefix: &str,
        patience: Duration,
    ) -> Result<RedisConn, RedisError> {
        let clients = urls(list)
            .into_iter()
            .map(redis::Client::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(RedisError::Url)?;
        let Some(first) = clients.first() else {
            return Err(RedisError::Url(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no URL",
            ))));
        };
        let until = std::time::Instant::now() + patience;
        let cluster = patiently(until, || cluster_enabled(first)).await?;
        if cluster {
            let seeds: Vec<redis::ConnectionInfo> = clients
                .iter()
                .map(|c| c.get_connection_info().clone())
                .collect();
            let client = cluster_builder(&seeds)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(RedisError::Url)?;
            let conn = Conn::Cluster(patiently(until, || client.get_async_connection()).await?);
            let dedicated = Dedicated::Cluster(seeds);
            return Ok(RedisConn {
                bus_servers: vec![BusServer {
                    conn: conn.clone(),
                    dedicated: dedicated.clone(),
                }],
                conn,
                dedicated,
                prefix: prefix.to_string(),
                cluster: true,
            });
        }
        let mut servers = Vec::with_capacity(clients.len());
        for client in &clients {
            let conn = patiently(until, || managed(client)).await?;
            servers.push(BusServer {
                conn,
                dedicated: Dedicated::Single(client.clone()),
            });
        }
        Ok(RedisConn {
            conn: servers[0].conn.clone(),
            dedicated: servers[0].dedicated.clone(),
            prefix: prefix.to_string(),
            cluster: false,
            bus_servers: servers,
        })
    }

    /// `PING`, for `/ready` (which bounds it; the connection's response
    /// timeout bounds it too).
    pub async fn ping(&self) -> Result<(), RedisError> {
        ping(&self.conn).await
    }

    /// A `Batch` of commands for this connection.
    pub fn batch(&self) -> Batch {
        Batch {
            cluster: self.cluster,
            groups: HashMap::new(),
        }
    }
}

/// Tries `connect` every 500 ms until it succeeds or `until` has passed.
async fn patiently<T, F, Fut>(until: std::time::Instant, mut connect: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < until => {
                tracing::warn!(error = %e, "Redis not answering yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(RedisError::Connect(e)),
        }
    }
}

/// `PING` on a connection.
pub async fn ping(conn: &Conn) -> Result<(), RedisError> {
    let mut c = conn.clone();
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
    pong.map(|_| ()).map_err(RedisError::Command)
}

async fn managed(client: &redis::Client) -> redis::RedisResult<Conn> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(2)
        .set_max_delay(1_000);
    Ok(Conn::Managed(
        ConnectionManager::new_with_config(client.clone(), config).await?,
    ))
}

/// Whether the server is a node of a Redis Cluster.
async fn cluster_enabled(client: &redis::Client) -> redis::RedisResult<bool> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(RESPONSE_TIMEOUT);
    let mut c = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut c)
        .await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// Commands whose replies are not needed, sent as few round trips as the
/// topology allows: one pipeline on one server; on a cluster one pipeline
/// per hash slot (a pipeline must stay on one node), all at once.
pub struct Batch {
    cluster: bool,
    groups: HashMap<u16, Pipeline>,
}

impl Batch {
    /// Adds `cmd`, whose keys hash like `key`.
    pub fn add(&mut self, key: &str, cmd: Cmd) -> &mut Self {
        let slot = if self.cluster { slot(key) } else { 0 };
        self.groups
            .entry(slot)
            .or_default()
            .add_command(cmd)
            .ignore();
        self
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Sends every command; the first error, if any.
    pub async fn run(self, conn: &Conn) -> redis::RedisResult<()> {
        let sends = self.groups.into_values().map(|pipe| {
            let mut c = conn.clone();
            async move { pipe.query_async::<()>(&mut c).await }
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(())
    }
}

/// The hash slot of a key (its hash tag's, when it has one), as Redis
/// Cluster computes it: CRC16 (XMODEM) modulo 16,384.
pub fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &key[open + 1..open + 1 + close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(
            slot("a{}b"),
            slot("a{}b"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot("a{}b"), slot(""));
        assert_eq!(slot("x{tag}y{other}"), slot("tag"));
    }

    #[test]
    fn urls_split_on_commas() {
        assert_eq!(
            urls(" redis://a:1 , redis://b:2,,"),
            vec!["redis://a:1", "redis://b:2"]
        );
    }
}
