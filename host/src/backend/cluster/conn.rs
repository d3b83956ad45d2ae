//! `RedisConn`: the node's Redis connection for short commands (it
//! reconnects by itself), and the client for dedicated blocking ones.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis connection shared by the node for short commands (reconnects by itself).
#[derive(Clone)]
pub struct RedisConn {
    /// The managed connection.
    pub conn: ConnectionManager,
    /// The client, for dedicated (blocking) connections.
    pub client: redis::Client,
    /// Key prefix.
    pub prefix: String,
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

impl RedisConn {
    /// Connects, retrying for up to `patience`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        patience: Duration,
    ) -> Result<RedisConn, RedisError> {
        let client = redis::Client::open(url).map_err(RedisError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let started = std::time::Instant::now();
        loop {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(conn) => {
                    return Ok(RedisConn {
                        conn,
                        client,
                        prefix: prefix.to_string(),
                    })
                }
                Err(e) if started.elapsed() < patience => {
                    tracing::warn!(error = %e, "Redis not answering yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(RedisError::Connect(e)),
            }
        }
    }

    /// `PING`, for `/ready` (which bounds it; the connection's response
    /// timeout bounds it too).
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn.clone();
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
        pong.map(|_| ()).map_err(RedisError::Command)
    }
}
