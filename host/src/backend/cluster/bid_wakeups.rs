//! `RedisWakeups`: cluster mode's bid wake-ups.
//!
//! A wake-up is appended to a Redis Stream read by a consumer group, so it
//! reaches one node's worker; entries a dead consumer read but never
//! acknowledged are claimed by another after a while (`XAUTOCLAIM`). The
//! stream is only a hint: the bids themselves are in the system of record,
//! and every node's sweeper finds queued bids whose wake-up was lost (Redis
//! restarted or flushed).

use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Dedicated, RedisConn};
use crate::bids::queue::BidWakeups;
use crate::bids::worker::Worker;

/// A Redis Stream shared by every node's worker.
pub struct RedisWakeups {
    /// For the fallback when Redis does not answer.
    worker: Worker,
    /// Publishing connection.
    conn: Conn,
    /// Stream key.
    key: String,
}

const GROUP: &str = "workers";

impl RedisWakeups {
    /// Starts this node's consumer.
    pub fn start(
        redis: &RedisConn,
        worker: Worker,
        node: String,
        stop: CancellationToken,
    ) -> RedisWakeups {
        let key = format!("{}:bids", redis.prefix);
        tokio::spawn(consume(
            redis.dedicated.clone(),
            key.clone(),
            node,
            worker.clone(),
            stop,
        ));
        RedisWakeups {
            worker,
            conn: redis.conn.clone(),
            key,
        }
    }
}

#[async_trait::async_trait]
impl BidWakeups for RedisWakeups {
    async fn wake(&self, product: &str) {
        let mut c = self.conn.clone();
        let sent: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("p")
            .arg(product)
            .query_async(&mut c)
            .await;
        if sent.is_err() {
            // Decide here rather than wait for a sweeper.
            self.worker.mark(product);
        }
    }
}

async fn consume(
    client: Dedicated,
    key: String,
    node: String,
    worker: Worker,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = client.connect(Duration::from_secs(5)) => c,
        };
        let Ok(mut conn) = conn else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        };
        let mut last_claim = std::time::Instant::now();
        loop {
            // (Re)create the group; after a FLUSHALL it is gone.
            let _: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(GROUP)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            let opts = StreamReadOptions::default()
                .group(GROUP, &node)
                .block(2_000)
                .count(200);
            let keys = [key.as_str()];
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                _ = stop.cancelled() => return,
                r = conn.xread_options(&keys, &[">"], &opts) => r,
            };
            let mut ids = Vec::new();
            match read {
                Ok(Some(reply)) => {
                    for s in reply.keys {
                        for e in s.ids {
                            if let Some(p) = e.get::<String>("p") {
                                worker.mark(&p);
                            }
                            ids.push(e.id);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) if e.to_string().contains("NOGROUP") => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "bid queue consumer lost Redis");
                    break;
                }
            }
            if last_claim.elapsed() > Duration::from_secs(5) {
                last_claim = std::time::Instant::now();
                // Entries a dead consumer took but never acknowledged.
                let claimed: redis::RedisResult<redis::Value> = redis::cmd("XAUTOCLAIM")
                    .arg(&key)
                    .arg(GROUP)
                    .arg(&node)
                    .arg(10_000)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(200)
                    .query_async(&mut conn)
                    .await;
                if let Ok(redis::Value::Array(parts)) = claimed {
                    if let Some(redis::Value::Array(entries)) = parts.get(1) {
                        for entry in entries {
                            if let redis::Value::Array(kv) = entry {
                                if let (Some(id), Some(redis::Value::Array(fields))) =
                                    (kv.first(), kv.get(1))
                                {
                                    if let (Ok(id), Some(p)) =
                                        (redis::from_redis_value::<String>(id), fields.get(1))
                                    {
                                        if let Ok(p) = redis::from_redis_value::<String>(p) {
                                            worker.mark(&p);
                                        }
                                        ids.push(id);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if !ids.is_empty() {
                let _: redis::RedisResult<()> = conn.xack(&key, GROUP, &ids).await;
            }
        }
    }
}
