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

impl RedisConn {
    /// Connects, retrying for up to `patience`.
    pub async fn connect(url: &str, prefix: &str, patience: Duration) -> Result<RedisConn, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid REDIS_URL: {e}"))?;
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
                Err(e) => return Err(format!("cannot connect to Redis: {e}")),
            }
        }
    }

    /// `PING`, for `/ready`.
    pub async fn ping(&self) -> Result<(), String> {
        let mut c = self.conn.clone();
        let pong: Result<String, _> = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async(&mut c),
        )
        .await
        .map_err(|_| "Redis did not answer PING within 2s".to_string())?;
        pong.map(|_| ()).map_err(|e| e.to_string())
    }
}
