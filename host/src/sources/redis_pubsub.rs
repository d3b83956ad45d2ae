//! Redis channels by pattern (`PSUBSCRIBE`): at most once. A message
//! published while no node listens (before a start, during a takeover, while
//! the connection is re-made) is gone: pub/sub keeps nothing. What is
//! received becomes a durable event with an id, so browsers resume exactly
//! from there on.
//!
//! In cluster mode only the lease holder subscribes, so a message becomes
//! one event, not one per node (hashing messages instead would fold two
//! equal messages into one).

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::lease::{short_conn, RedisDeadLetters};
use super::mapping::parse_json;
use super::{Ctx, Fault, Item, Source};
use crate::backend::cluster::conn::Dedicated;

pub(super) struct RedisPubsub;

#[async_trait::async_trait]
impl Source for RedisPubsub {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault> {
        let spec = ctx.spec();
        // One server, or a Redis Cluster: a classic `PUBLISH` on any of
        // its nodes reaches a subscriber on any other.
        let (redis, _) = Dedicated::open(&spec.redis_url).await?;
        let dead = RedisDeadLetters::new(short_conn(&redis).await?, &ctx.prefix, &spec.name);
        let mut pubsub = redis.pubsub().await?;
        pubsub.psubscribe(spec.pattern.as_str()).await?;
        let mut messages = pubsub.on_message();
        loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = owned.cancelled() => return Ok(()),
            };
            let Some(first) = first else {
                return Err(Fault::Other("the pub/sub connection closed".into()));
            };
            let mut batch = vec![first];
            while batch.len() < spec.batch {
                match messages.next().now_or_never() {
                    Some(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            let items = batch
                .iter()
                .map(|m| {
                    let channel = m.get_channel_name();
                    let raw = m.get_payload_bytes();
                    let mapped = match spec.pattern.matches(channel) {
                        Some(caps) => parse_json(raw).and_then(|msg| spec.mapping.map(&caps, &msg)),
                        None => Err(format!("channel {channel:?} does not match the pattern")),
                    };
                    Item {
                        origin: format!("channel {channel}"),
                        key: None,
                        raw: raw.to_vec(),
                        mapped,
                    }
                })
                .collect();
            ctx.commit(items, &dead).await?;
        }
    }
}
