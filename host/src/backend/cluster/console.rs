//! `RedisDirectory`: the console's view across every node.
//!
//! - A user's streams: one hash per user, `{prefix}:console:streams:{tenant}:{user}`,
//!   field `{node}:{id}`, value the stream's JSON. Each node writes its own
//!   opens and closes, queued and sent as one pipeline per batch by a task
//!   of its own (the open and the close never wait on Redis). A listing
//!   keeps only the streams of live nodes and removes a dead node's.
//! - Live nodes: each node's figures under `{prefix}:console:{nodes}:{node}`
//!   with an expiry ([`STATS_TTL`]), and the sorted set
//!   `{prefix}:console:{nodes}` of nodes scored by that expiry (one hash tag: one
//!   slot of a Redis Cluster).
//! - A disconnect: `PUBLISH {prefix}:console:control` with the tenant and
//!   user; every node listens there and ends that user's streams of its
//!   own. A node that is cut off from Redis when it is said misses it (the
//!   answer lists the streams asked to end; the caller may list again).
//!
//! Redis operations: open and close one `HSET`/`HDEL` (with `PEXPIRE`) each,
//! batched; a listing `ZRANGEBYSCORE` and `HGETALL` (and an `HDEL` of dead
//! nodes' streams); a stats publication `SET PX`, `ZADD`, `ZREMRANGEBYSCORE`
//! every interval per node.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Dedicated, RedisConn};
use crate::console::{Directory, LocalStreams, NodeStats, StreamInfo, Unavailable, STATS_TTL};

/// A stream's hash is kept this long after its last write: a stream of a
/// node that died is removed by the next listing, or with its hash then.
const STREAMS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Writes sent per pipeline, at most.
const BATCH: usize = 256;

enum Op {
    Opened(StreamInfo),
    Closed(StreamInfo),
}

/// The console's view in Redis.
pub struct RedisDirectory {
    conn: Conn,
    prefix: String,
    local: Arc<LocalStreams>,
    ops: mpsc::UnboundedSender<Op>,
}

impl RedisDirectory {
    /// Starts the writer of this node's streams and the listener for
    /// disconnects, until `stop`.
    pub fn start(
        redis: &RedisConn,
        local: Arc<LocalStreams>,
        stop: CancellationToken,
    ) -> RedisDirectory {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(redis.clone(), rx, stop.clone()));
        tokio::spawn(listen(
            redis.dedicated.clone(),
            control_channel(&redis.prefix),
            local.clone(),
            stop,
        ));
        RedisDirectory {
            conn: redis.conn.clone(),
            prefix: redis.prefix.clone(),
            local,
            ops: tx,
        }
    }

    /// Live nodes: those whose figures have not expired.
    async fn live_nodes(&self) -> Result<Vec<String>, Unavailable> {
        let mut c = self.conn.clone();
        let now = crate::event::now_ms();
        c.zrangebyscore(nodes_key(&self.prefix), now, "+inf")
            .await
            .map_err(|e| logged(&e))
    }
}

fn streams_key(prefix: &str, tenant: &str, user: &str) -> String {
    format!("{prefix}:console:streams:{tenant}:{user}")
}

// The live nodes' set and their figures share a hash tag, so one pipeline
// writes them and one `MGET` reads them on a Redis Cluster.
fn nodes_key(prefix: &str) -> String {
    format!("{prefix}:console:{{nodes}}")
}

fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:console:{{nodes}}:{node}")
}

fn control_channel(prefix: &str) -> String {
    format!("{prefix}:console:control")
}

fn field(s: &StreamInfo) -> String {
    format!("{}:{}", s.node, s.id)
}

fn logged(e: &redis::RedisError) -> Unavailable {
    tracing::warn!(error = %e, "the console's directory in Redis is not answering");
    Unavailable
}

/// Sends queued opens and closes, one pipeline per batch. A batch that
/// fails is logged and dropped: the listing then misses (or keeps, until it
/// finds the node gone) those streams, and nothing else waits on it.
async fn write(redis: RedisConn, mut rx: mpsc::UnboundedReceiver<Op>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let prefix = &redis.prefix;
        let mut pipe = redis.batch();
        for op in batch.drain(..) {
            match op {
                Op::Opened(s) => {
                    let key = streams_key(prefix, &s.tenant, &s.user);
                    let json = serde_json::to_string(&s).unwrap_or_default();
                    pipe.add(&key, redis::Cmd::hset(&key, field(&s), json));
                    pipe.add(
                        &key,
                        redis::Cmd::pexpire(&key, STREAMS_TTL.as_millis() as i64),
                    );
                }
                Op::Closed(s) => {
                    let key = streams_key(prefix, &s.tenant, &s.user);
                    pipe.add(&key, redis::Cmd::hdel(&key, field(&s)));
                }
            }
        }
        if let Err(e) = pipe.run(&redis.conn).await {
            tracing::warn!(error = %e, "cannot record open streams in Redis");
        }
    }
}

/// Ends the streams every disconnect names, for as long as the node runs;
/// a lost subscription is made again after a second.
async fn listen(
    client: Dedicated,
    channel: String,
    local: Arc<LocalStreams>,
    stop: CancellationToken,
) {
    use futures_util::StreamExt;
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for disconnects; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            Err(_) => continue,
        };
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(msg) = msg else { break };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Disconnect>(&payload) {
                Ok(d) => {
                    let n = local.kick(&d.tenant, &d.user);
                    if n > 0 {
                        tracing::info!(tenant = %d.tenant, streams = n, "streams closed by an operator");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a disconnect message that does not parse"),
            }
        }
    }
}

/// The message a disconnect publishes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Disconnect {
    tenant: String,
    user: String,
}

#[async_trait::async_trait]
impl Directory for RedisDirectory {
    fn opened(&self, s: &StreamInfo) {
        let _ = self.ops.send(Op::Opened(s.clone()));
    }

    fn closed(&self, s: &StreamInfo) {
        let _ = self.ops.send(Op::Closed(s.clone()));
    }

    async fn user_streams(&self, tenant: &str, user: &str) -> Result<Vec<StreamInfo>, Unavailable> {
        let live = self.live_nodes().await?;
        let mut c = self.conn.clone();
        let key = streams_key(&self.prefix, tenant, user);
        let all: std::collections::HashMap<String, String> =
            c.hgetall(&key).await.map_err(|e| logged(&e))?;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (f, json) in all {
            match serde_json::from_str::<StreamInfo>(&json) {
                // This node's own are always its own truth.
                Ok(s) if s.node == self.local.node() || live.contains(&s.node) => out.push(s),
                _ => dead.push(f),
            }
        }
        if !dead.is_empty() {
            let _: Result<(), _> = c.hdel(&key, dead).await;
        }
        out.sort_by(|a, b| (a.opened_at, &a.node, a.id).cmp(&(b.opened_at, &b.node, b.id)));
        Ok(out)
    }

    async fn disconnect(&self, tenant: &str, user: &str) -> Result<(), Unavailable> {
        self.local.kick(tenant, user);
        let msg = serde_json::to_string(&Disconnect {
            tenant: tenant.to_string(),
            user: user.to_string(),
        })
        .unwrap_or_default();
        let mut c = self.conn.clone();
        let _: i64 = c
            .publish(control_channel(&self.prefix), msg)
            .await
            .map_err(|e| logged(&e))?;
        Ok(())
    }

    async fn publish_stats(&self, stats: &NodeStats) {
        let Ok(json) = serde_json::to_string(stats) else {
            return;
        };
        let now = crate::event::now_ms();
        let expiry = now + STATS_TTL.as_millis() as i64;
        let mut c = self.conn.clone();
        let r: Result<(), _> = redis::pipe()
            .set_options(
                node_key(&self.prefix, &stats.node),
                json,
                redis::SetOptions::default()
                    .with_expiration(redis::SetExpiry::PX(STATS_TTL.as_millis() as u64)),
            )
            .ignore()
            .zadd(nodes_key(&self.prefix), &stats.node, expiry)
            .ignore()
            .zrembyscore(nodes_key(&self.prefix), "-inf", now)
            .ignore()
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "cannot publish this node's figures");
        }
    }

    async fn stats(&self) -> Result<Vec<NodeStats>, Unavailable> {
        let nodes = self.live_nodes().await?;
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(|n| node_key(&self.prefix, n)).collect();
        let mut c = self.conn.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(|e| logged(&e))?;
        let mut out: Vec<NodeStats> = values
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}
