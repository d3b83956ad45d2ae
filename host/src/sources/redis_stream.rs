//! A Redis stream read through a consumer group (`XREADGROUP`): exactly
//! once and in order.
//!
//! Each entry becomes one event (or one dead letter) appended under the
//! idempotency key `src {source} {stream} {entry id}`, in the same commit
//! as the event; the batch is `XACK`ed only after that commit. A crash
//! before the commit leaves the entries pending (nothing stored); after it
//! and before the `XACK`, they are pending and stored, and reading them
//! again finds their keys and stores nothing. So at start (and when a node
//! takes the source over) the group's pending entries are read first
//! (`XREADGROUP … 0`): one consumer name, `switchyard`, is shared by every
//! node, as only the lease holder reads.
//!
//! A source's keys are kept `SWITCHYARD_SOURCE_KEY_SECONDS` (the store's
//! retention sweep forgets them after that, not after the publish key
//! window). An entry pending longer than that (its id's time is older)
//! might have been stored and its key forgotten: it goes to the dead
//! letters with that reason rather than perhaps twice to subscribers.
//!
//! The key row also records which event an entry became (entry id → event
//! id), what a stream resuming from the old system's `Last-Event-ID` needs.

use std::time::{Duration, Instant};

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::lease::{short_conn, RedisDeadLetters};
use super::mapping::entry_object;
use super::{Ctx, Fault, Item, Source};
use crate::backend::cluster::conn::{Conn, Dedicated};

/// The consumer every node reads as (only the lease holder reads).
const CONSUMER: &str = "switchyard";
/// How long one `XREADGROUP` blocks.
const BLOCK: Duration = Duration::from_millis(1_000);
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);

pub(super) struct RedisStream;

#[async_trait::async_trait]
impl Source for RedisStream {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault> {
        let spec = ctx.spec();
        // One server, or a Redis Cluster (the stream's key is one slot).
        let (redis, _) = Dedicated::open(&spec.redis_url).await?;
        let mut short = short_conn(&redis).await?;
        let mut reader = redis.connect(BLOCK + Duration::from_secs(5)).await?;
        let dead = RedisDeadLetters::new(short.clone(), &ctx.prefix, &spec.name);
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&spec.key)
            .arg(&spec.group)
            .arg(if spec.start_all { "0" } else { "$" })
            .arg("MKSTREAM")
            .query_async(&mut short)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        // The pending entries first, from the start of the list, then new ones.
        let mut pending_from: Option<String> = Some("0".into());
        let mut measured = Instant::now() - LAG_EVERY;
        loop {
            if owned.is_cancelled() {
                return Ok(());
            }
            if measured.elapsed() >= LAG_EVERY {
                measured = Instant::now();
                measure_lag(ctx, &mut short).await;
            }
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&spec.group)
                .arg(CONSUMER)
                .arg("COUNT")
                .arg(spec.batch);
            if pending_from.is_none() {
                cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            cmd.arg("STREAMS")
                .arg(&spec.key)
                .arg(pending_from.as_deref().unwrap_or(">"));
            let reply: Value = tokio::select! {
                r = cmd.query_async(&mut reader) => r?,
                _ = owned.cancelled() => return Ok(()),
            };
            let entries = entries(reply).map_err(Fault::Other)?;
            let Some((last, _)) = entries.last() else {
                // Every pending entry is read: on to new ones.
                pending_from = None;
                continue;
            };
            let rereading = pending_from.is_some();
            if rereading {
                pending_from = Some(last.clone());
            }
            let oldest_kept = crate::event::now_ms() - ctx.key_window.as_millis() as i64;
            let mut ids = Vec::with_capacity(entries.len());
            let mut items = Vec::with_capacity(entries.len());
            for (id, fields) in entries {
                ids.push(id.clone());
                let Some(fields) = fields else {
                    // Trimmed from the stream while pending: nothing left to read.
                    tracing::warn!(source = %spec.name, entry = %id,
                        "a pending stream entry was trimmed before it was acknowledged");
                    continue;
                };
                let raw = serde_json::Value::Object(
                    fields
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                            )
                        })
                        .collect(),
                )
                .to_string()
                .into_bytes();
                let mapped = if rereading && entry_ms(&id).is_some_and(|ms| ms < oldest_kept) {
                    Err(format!(
                        "entry {id} was pending longer than the source key window \
                         (SWITCHYARD_SOURCE_KEY_SECONDS): it may have been published already"
                    ))
                } else {
                    entry_object(&fields).and_then(|m| spec.mapping.map(&[], &m))
                };
                items.push(Item {
                    origin: format!("{} {id}", spec.key),
                    key: Some(format!("{} {id}", spec.key)),
                    raw,
                    mapped,
                });
            }
            ctx.commit(items, &dead).await?;
            let _: i64 = redis::cmd("XACK")
                .arg(&spec.key)
                .arg(&spec.group)
                .arg(&ids)
                .query_async(&mut short)
                .await?;
        }
    }
}

/// The millisecond part of an entry id.
fn entry_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// `XINFO GROUPS`: the group's `lag`; and the age of the first entry after
/// its last delivered one.
async fn measure_lag(ctx: &Ctx, c: &mut Conn) {
    let spec = ctx.spec();
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&spec.key)
        .query_async(c)
        .await
    {
        Ok(v) => v,
        Err(_) => return,
    };
    let Value::Array(groups) = groups else { return };
    for g in groups {
        let fields = pairs(g);
        if fields.get("name").and_then(text).as_deref() != Some(spec.group.as_str()) {
            continue;
        }
        let lag = match fields.get("lag") {
            Some(Value::Int(n)) => Some((*n).max(0) as u64),
            _ => None,
        };
        let mut age = Some(0);
        if let Some(last) = fields.get("last-delivered-id").and_then(text) {
            let next: redis::RedisResult<Value> = redis::cmd("XRANGE")
                .arg(&spec.key)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(c)
                .await;
            if let Ok(v) = next {
                if let Ok(e) = entries_of(v) {
                    if let Some(ms) = e.first().and_then(|(id, _)| entry_ms(id)) {
                        age = Some((crate::event::now_ms() - ms).max(0) as u64);
                    }
                }
            }
        }
        ctx.status.lag(lag, age);
    }
}

fn pairs(v: Value) -> std::collections::HashMap<String, Value> {
    let mut out = std::collections::HashMap::new();
    match v {
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = text(&k) {
                    out.insert(k, v);
                }
            }
        }
        Value::Map(items) => {
            for (k, v) in items {
                if let Some(k) = text(&k) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An entry: its id and its fields (`None`: trimmed while pending).
type Entry = (String, Option<Vec<(String, Vec<u8>)>>);

/// The entries of an `XREADGROUP` reply for one stream (nil: none).
fn entries(reply: Value) -> Result<Vec<Entry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => return Err(format!("unexpected XREADGROUP reply: {other:?}")),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut kv) = s else {
            return Err("unexpected XREADGROUP reply".into());
        };
        if kv.len() != 2 {
            return Err("unexpected XREADGROUP reply".into());
        }
        out.extend(entries_of(kv.remove(1))?);
    }
    Ok(out)
}

/// A list of `[id, [field, value, …]]` (or `[id, nil]`).
fn entries_of(v: Value) -> Result<Vec<Entry>, String> {
    let Value::Array(list) = v else {
        return Ok(Vec::new());
    };
    list.into_iter()
        .map(|e| {
            let Value::Array(mut parts) = e else {
                return Err("unexpected stream entry".to_string());
            };
            if parts.len() != 2 {
                return Err("unexpected stream entry".into());
            }
            let fields = parts.pop();
            let id = parts
                .pop()
                .as_ref()
                .and_then(text)
                .ok_or("a stream entry without an id")?;
            let fields = match fields {
                Some(Value::Array(f)) => {
                    let mut out = Vec::with_capacity(f.len() / 2);
                    let mut it = f.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        let k = text(&k).ok_or("a stream field name is not text")?;
                        let v = match v {
                            Value::BulkString(b) => b,
                            Value::SimpleString(s) => s.into_bytes(),
                            Value::Int(n) => n.to_string().into_bytes(),
                            _ => return Err("a stream field value is not text".into()),
                        };
                        out.push((k, v));
                    }
                    Some(out)
                }
                _ => None,
            };
            Ok((id, fields))
        })
        .collect()
}
