//! `RedisFanout`: cluster mode's bus, one Redis Stream every node reads.
//!
//! After a commit, the publishing node delivers to its own hub at once and
//! queues the events for a relay task, which appends each batch as one entry
//! to `{prefix}:fanout` (approximately capped). Every node reads that stream
//! with `XREAD BLOCK`, remembering its position across reconnects, and hands
//! other nodes' events to its hub. The hub puts them in id order and fills
//! gaps from Postgres, so an entry lost with a Redis restart, or trimmed
//! before a slow node read it, delays an event but never loses it.
//!
//! Entry fields: `n` (publishing node id) and `b` (events, one per line, each
//! `seq \t tenant \t topic \t type \t json`; names are validated to hold no
//! tab or newline and compact JSON holds no raw control character).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::RedisConn;
use crate::bus::hub::Hub;
use crate::bus::Fanout;
use crate::event::StoredEvent;
use crate::metrics::Metrics;

/// Approximate length cap of the fan-out stream.
const STREAM_MAXLEN: usize = 100_000;
/// How long one `XREAD` blocks.
const BLOCK_MS: usize = 2_000;

/// Redis Stream fan-out.
pub struct RedisFanout {
    hub: Hub,
    relay: mpsc::UnboundedSender<String>,
}

impl RedisFanout {
    /// Starts the relay and the reader.
    pub fn start(
        redis: RedisConn,
        hub: Hub,
        metrics: Arc<Metrics>,
        node: String,
        stop: CancellationToken,
    ) -> RedisFanout {
        let key = format!("{}:fanout", redis.prefix);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(relay(
            rx,
            redis.conn.clone(),
            key.clone(),
            node.clone(),
            metrics,
        ));
        tokio::spawn(reader(redis.client, key, node, hub.clone(), stop));
        RedisFanout { hub, relay: tx }
    }
}

impl Fanout for RedisFanout {
    fn publish(&self, events: &[StoredEvent]) {
        self.hub.deliver(events.to_vec());
        let mut body = String::with_capacity(events.iter().map(|e| e.json.len() + 64).sum());
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push('\n');
            }
            encode(e, &mut body);
        }
        let _ = self.relay.send(body);
    }
}

fn encode(e: &StoredEvent, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t{}",
        e.seq, e.tenant, e.topic, e.kind, e.json
    );
}

fn decode(line: &str) -> Option<StoredEvent> {
    let mut parts = line.splitn(5, '\t');
    let seq = parts.next()?.parse().ok()?;
    let tenant = parts.next()?;
    let topic = parts.next()?;
    let kind = parts.next()?;
    let json = parts.next()?;
    Some(StoredEvent {
        seq,
        tenant: tenant.into(),
        topic: topic.into(),
        kind: kind.into(),
        json: json.into(),
        ts: 0,
    })
}

async fn relay(
    mut rx: mpsc::UnboundedReceiver<String>,
    mut conn: ConnectionManager,
    key: String,
    node: String,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut body = first;
        while body.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => {
                    body.push('\n');
                    body.push_str(&more);
                }
                Err(_) => break,
            }
        }
        let result: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("n")
            .arg(&node)
            .arg("b")
            .arg(&body)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("fan-out publishing to Redis recovered");
            }
            Ok(_) => {}
            Err(e) => {
                metrics.fanout_publish_errors.inc();
                // Other nodes' tail checks deliver these from the store, and
                // whatever queued meanwhile too: it is dropped rather than
                // kept for a Redis that is gone or cut off (each attempt
                // waits for the response timeout), so a long outage neither
                // grows this queue nor delays the events after it.
                while rx.try_recv().is_ok() {
                    metrics.fanout_publish_errors.inc();
                }
                if !failing {
                    tracing::warn!(error = %e, "fan-out publish to Redis failed; other nodes will catch up from the store");
                    failing = true;
                }
            }
        }
    }
}

async fn reader(
    client: redis::Client,
    key: String,
    node: String,
    hub: Hub,
    stop: CancellationToken,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_millis(BLOCK_MS as u64 + 3_000));
    let mut last_id = "$".to_string();
    let mut backoff = Duration::from_millis(100);
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = client.get_multiplexed_async_connection_with_config(&config) => c,
        };
        let mut conn = match conn {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::debug!(error = %e, "fan-out reader cannot reach Redis");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if last_id == "$" {
            // Start after whatever is there now; the hub's tail check covers
            // anything committed between loading heads and this point.
            let newest: redis::RedisResult<redis::streams::StreamRangeReply> =
                conn.xrevrange_count(&key, "+", "-", 1).await;
            match newest {
                Ok(r) => {
                    last_id = r
                        .ids
                        .first()
                        .map(|e| e.id.clone())
                        .unwrap_or_else(|| "0-0".into())
                }
                Err(_) => continue,
            }
        }
        let opts = StreamReadOptions::default().block(BLOCK_MS).count(1_000);
        loop {
            let keys = [key.as_str()];
            let ids = [last_id.as_str()];
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                _ = stop.cancelled() => return,
                r = conn.xread_options(&keys, &ids, &opts) => r,
            };
            let reply = match read {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "fan-out reader lost Redis; reconnecting");
                    break;
                }
            };
            for stream in reply.keys {
                for entry in stream.ids {
                    last_id = entry.id.clone();
                    let from: Option<String> = entry.get("n");
                    if from.as_deref() == Some(node.as_str()) {
                        continue;
                    }
                    let Some(body) = entry.get::<String>("b") else {
                        continue;
                    };
                    let events: Vec<StoredEvent> = body.lines().filter_map(decode).collect();
                    hub.deliver(events);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let e = StoredEvent {
            seq: 42,
            tenant: "acme".into(),
            topic: "product:1".into(),
            kind: "bid.accepted".into(),
            json: r#"{"id":42,"data":{"note":"tab\tand\nnewline"}}"#
                .replace('\t', "\\t")
                .replace('\n', "\\n"),
            ts: 0,
        };
        let mut line = String::new();
        encode(&e, &mut line);
        let back = decode(&line).expect("decodes");
        assert_eq!(back.seq, 42);
        assert_eq!(&*back.tenant, "acme");
        assert_eq!(back.topic, "product:1");
        assert_eq!(back.kind, "bid.accepted");
        assert_eq!(back.json, e.json);
    }
}
