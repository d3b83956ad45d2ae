//! One node reads a source at a time: a lease in the source's Redis
//! (`{prefix}:source:{name}:owner`, `SET NX PX`), refreshed by its holder
//! every fifth of its length and given up on shutdown; when the holder dies,
//! the lease runs out and another node takes it.
//!
//! A holder that cannot refresh in time stops reading at once (its token
//! is cancelled). Two holders can still overlap briefly (a holder paused
//! past its lease); what they read is then deduplicated by the kinds' keys
//! in the store, shared by every node.

use std::time::Duration;

use crate::backend::cluster::conn::{Conn, Dedicated, RedisConn};
use tokio_util::sync::CancellationToken;

/// Extends the lease only if this node still holds it.
const REFRESH: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Gives the lease up only if this node holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// A source's lease, as this node sees it.
#[derive(Clone)]
pub struct Lease {
    /// One server or a Redis Cluster (the node's own Redis may be one).
    conn: Conn,
    key: String,
    me: String,
    length: Duration,
}

/// A connection for short commands to a source's Redis (2 s per answer).
pub async fn short_conn(redis: &Dedicated) -> Result<Conn, redis::RedisError> {
    redis.connect(Duration::from_secs(2)).await
}

impl Lease {
    /// Connects to the source's Redis.
    pub async fn connect(
        url: &str,
        prefix: &str,
        source: &str,
        node: &str,
        length: Duration,
    ) -> Result<Lease, redis::RedisError> {
        let redis = RedisConn::connect(url, prefix, Duration::ZERO)
            .await
            .map_err(crate::backend::cluster::conn::RedisError::into_redis)?;
        Ok(Lease {
            conn: redis.conn,
            key: format!("{prefix}:source:{source}:owner"),
            me: node.to_string(),
            length,
        })
    }

    /// Takes the lease if no node holds it (or this one does).
    pub async fn acquire(&self) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.me)
            .arg("NX")
            .arg("PX")
            .arg(self.length.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        self.refresh().await
    }

    async fn refresh(&self) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(REFRESH)
            .key(&self.key)
            .arg(&self.me)
            .arg(self.length.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Refreshes the lease until `owned` is cancelled; cancels it when the
    /// lease is lost or cannot be refreshed before it would run out.
    pub async fn keep(self, owned: CancellationToken) {
        let every = self.length / 5;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = owned.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.refresh().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.key, "source lease lost to another node");
                    owned.cancel();
                    return;
                }
                Err(e) if last.elapsed() + every >= self.length => {
                    tracing::warn!(lease = %self.key, error = %e, "source lease not refreshed in time");
                    owned.cancel();
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the lease up (on shutdown or failure), if still held.
    pub async fn release(&self) {
        let mut c = self.conn.clone();
        let r: Result<i64, _> = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.me)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::debug!(lease = %self.key, error = %e, "source lease not released; it runs out");
        }
    }
}

/// Node-level dead letters in the source's Redis: a capped stream
/// `{prefix}:source:{name}:dead-letters` (reason, origin, raw message).
pub struct RedisDeadLetters {
    /// A connection for short commands.
    pub conn: Conn,
    /// The stream's key.
    pub key: String,
}

impl RedisDeadLetters {
    /// The node-level dead letters of a source.
    pub fn new(conn: Conn, prefix: &str, source: &str) -> RedisDeadLetters {
        RedisDeadLetters {
            conn,
            key: format!("{prefix}:source:{source}:dead-letters"),
        }
    }
}

#[async_trait::async_trait]
impl super::NodeDeadLetters for RedisDeadLetters {
    async fn dead_letter(
        &self,
        _source: &str,
        origin: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<(), super::Fault> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("origin")
            .arg(origin)
            .arg("reason")
            .arg(reason)
            .arg("raw")
            .arg(raw)
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}
