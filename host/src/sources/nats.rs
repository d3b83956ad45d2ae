//! A NATS JetStream stream read through a durable pull consumer: exactly
//! once and in order.
//!
//! The consumer (`group`, default `switchyard`) takes the subjects of
//! `pattern` (`orders.*`; each `*` a whole token, captured as `{1}`..).
//! Each message becomes one event (or one dead letter) appended under the
//! idempotency key `src {source} {stream}@{created} {stream sequence}` (the
//! stream's creation time tells a re-made stream's sequences apart), in
//! the same commit as the event; the batch is acknowledged only after that
//! commit, with one `AckAll` of its last message.
//!
//! In order: the consumer holds at most one batch unacknowledged
//! (`max_ack_pending`), so nothing newer is delivered while a batch is
//! open. A node that starts (or takes the source over) with a batch left
//! open by a dead one re-makes the consumer right after its ack floor,
//! rather than waiting out the ack wait; those messages are read again and
//! their keys stop a second publish. A message delivered again after its
//! batch committed (a slow commit past the ack wait) is below the last
//! sequence committed: it is acknowledged and skipped.
//!
//! A message whose tenant is unknown goes to the JetStream stream
//! `SWITCHYARD_DEAD_LETTERS` (subject `switchyard.deadletters.{source}`,
//! the newest 100,000 kept), made when first needed.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::mapping::parse_json;
use super::{Ctx, Fault, Item, Source};

/// How long the server waits for an acknowledgement before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// The stream node-level dead letters go to.
const DEAD_STREAM: &str = "SWITCHYARD_DEAD_LETTERS";

pub(super) struct NatsJetstream;

fn fault(what: &str) -> impl Fn(&dyn std::fmt::Display) -> Fault + '_ {
    move |e| Fault::Other(format!("nats: {what}: {e}"))
}

/// A stream or consumer name: 1-64 of `A-Z a-z 0-9 - _`.
pub(super) fn check_stream_name(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "{s:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'"
        ))
    }
}

/// A subject pattern: dot-separated tokens, each `*` a whole token (`>` is
/// refused: it would capture several tokens as one).
pub(super) fn check_subject_pattern(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= 256
        && p.split('.').all(|t| {
            !t.is_empty()
                && (t == "*"
                    || t.chars()
                        .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`pattern` {p:?} must be a NATS subject whose wildcards are whole `*` tokens \
             (`orders.*`; `>` is not taken)"
        ))
    }
}

/// Node-level dead letters: a capped JetStream stream of their own.
struct NatsDeadLetters {
    js: jetstream::Context,
}

#[async_trait::async_trait]
impl super::NodeDeadLetters for NatsDeadLetters {
    async fn dead_letter(
        &self,
        source: &str,
        origin: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<(), Fault> {
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: DEAD_STREAM.into(),
                subjects: vec!["switchyard.deadletters.>".into()],
                max_messages: 100_000,
                ..Default::default()
            })
            .await
            .map_err(|e| fault("the dead-letter stream")(&e))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Switchyard-Origin", origin);
        headers.insert(
            "Switchyard-Reason",
            reason.replace(['\r', '\n'], " ").as_str(),
        );
        self.js
            .publish_with_headers(
                format!("switchyard.deadletters.{source}"),
                headers,
                raw.to_vec().into(),
            )
            .await
            .map_err(|e| fault("dead letter")(&e))?
            .await
            .map_err(|e| fault("dead letter")(&e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for NatsJetstream {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault> {
        let spec = ctx.spec();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(spec.url.as_str())
            .await
            .map_err(|e| fault("connect")(&e))?;
        let js = jetstream::new(client);
        let mut stream = js.get_stream(&spec.table).await.map_err(|e| {
            Fault::Other(format!(
                "nats: the stream {:?} is not there: {e}",
                spec.table
            ))
        })?;
        let created = stream
            .info()
            .await
            .map_err(|e| fault("stream info")(&e))?
            .created
            .unix_timestamp_nanos();
        let durable = spec.group.clone();
        let config = |deliver| pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: spec.pattern.as_str().to_string(),
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: spec.batch as i64,
            deliver_policy: deliver,
            ..Default::default()
        };
        // An existing consumer is re-made right after its ack floor when it
        // has a batch open (left by a dead node) or reads other subjects.
        let existing = stream.get_consumer::<pull::Config>(&durable).await.ok();
        let mut consumer = match existing {
            Some(mut c) => {
                let info = c.info().await.map_err(|e| fault("consumer info")(&e))?;
                let floor = info.ack_floor.stream_sequence;
                let remake = info.num_ack_pending > 0
                    || info.config.filter_subject != spec.pattern.as_str()
                    || info.config.ack_policy != AckPolicy::All
                    || info.config.max_ack_pending != spec.batch as i64;
                if remake {
                    stream
                        .delete_consumer(&durable)
                        .await
                        .map_err(|e| fault("delete consumer")(&e))?;
                    stream
                        .create_consumer(config(DeliverPolicy::ByStartSequence {
                            start_sequence: floor + 1,
                        }))
                        .await
                        .map_err(|e| fault("create consumer")(&e))?
                } else {
                    c
                }
            }
            None => stream
                .create_consumer(config(if spec.start_all {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::New
                }))
                .await
                .map_err(|e| fault("create consumer")(&e))?,
        };
        let dead = NatsDeadLetters { js: js.clone() };
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(spec.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| fault("messages")(&e))?;
        let mut committed = 0u64;
        let mut measured = Instant::now() - LAG_EVERY;
        loop {
            if measured.elapsed() >= LAG_EVERY {
                measured = Instant::now();
                if let Ok(info) = consumer.info().await {
                    ctx.status.lag(Some(info.num_pending), None);
                }
            }
            let first = tokio::select! {
                m = messages.next() => m,
                _ = tokio::time::sleep(LAG_EVERY) => continue,
                _ = owned.cancelled() => return Ok(()),
            };
            let Some(first) = first else {
                return Err(Fault::Other("nats: the consumer's messages ended".into()));
            };
            let mut batch = vec![first.map_err(|e| fault("message")(&e))?];
            while batch.len() < spec.batch {
                match messages.next().now_or_never() {
                    Some(Some(m)) => batch.push(m.map_err(|e| fault("message")(&e))?),
                    _ => break,
                }
            }
            let mut items = Vec::with_capacity(batch.len());
            let mut last = None;
            for m in &batch {
                let seq = m
                    .info()
                    .map_err(|e| fault("message info")(&e))?
                    .stream_sequence;
                last = Some((seq, m));
                if seq <= committed {
                    // Delivered again after its batch committed.
                    continue;
                }
                let subject = m.subject.as_str();
                let raw = m.payload.to_vec();
                let mapped = match spec.pattern.matches(subject) {
                    Some(caps) => parse_json(&raw).and_then(|msg| spec.mapping.map(&caps, &msg)),
                    None => Err(format!("subject {subject:?} does not match the pattern")),
                };
                items.push(Item {
                    origin: format!("{} {seq} {subject}", spec.table),
                    key: Some(format!("{}@{created} {seq}", spec.table)),
                    raw,
                    mapped,
                });
            }
            if !items.is_empty() {
                ctx.commit(items, &dead).await?;
            }
            if let Some((seq, m)) = last {
                committed = committed.max(seq);
                m.ack().await.map_err(|e| fault("ack")(&e))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_take_whole_star_tokens() {
        assert!(check_subject_pattern("orders.*").is_ok());
        assert!(check_subject_pattern("a.*.b.*").is_ok());
        assert!(check_subject_pattern("orders.>").is_err());
        assert!(check_subject_pattern("orders.a*").is_err());
        assert!(check_subject_pattern("orders..x").is_err());
        assert!(check_subject_pattern("a b").is_err());
        assert!(check_stream_name("ORDERS").is_ok());
        assert!(check_stream_name("a.b").is_err());
    }
}
