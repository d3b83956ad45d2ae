//! `RedisCaps`: stream caps that hold across every node.
//!
//! One sorted set per user and per tenant; members are connection ids scored
//! by lease expiry. Acquiring drops expired members and adds one only under
//! the cap, in one script, so the cap holds across every node together; a
//! node refreshes its leases while their streams live, so a node that dies
//! frees its connections when the leases expire.
//!
//! On a Redis Cluster a script's keys must share a slot: the keys carry
//! their tenant (or, for the per-address cap, the address) as hash tag, and
//! keys of different slots are taken one script per slot in turn, those
//! taken given back when a later one is full. Every step checks and adds
//! atomically, so a cap is never exceeded; two acquires racing may refuse
//! each other where one script would have let one through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{slot, RedisConn};
use crate::sse::caps::{CapError, CapStore};

/// How long a lease lives without refresh.
const LEASE: Duration = Duration::from_secs(30);

// KEYS: the sets; ARGV: now_ms, expiry_ms, member, cap per key...
// Returns 0 on success, else the 1-based index of the key that is full.
const ACQUIRE: &str = r#"
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('PEXPIRE', key, 60000)
end
return 0
"#;

/// Leases in Redis.
pub struct RedisCaps {
    redis: RedisConn,
    prefix: String,
    script: redis::Script,
    /// Live leases of this node: id -> keys, refreshed on an interval.
    live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl RedisCaps {
    /// Leases under `{prefix}:streams:`, refreshed until `stop`.
    pub fn start(redis: &RedisConn, stop: tokio_util::sync::CancellationToken) -> RedisCaps {
        let live: Arc<Mutex<HashMap<u64, Vec<String>>>> = Arc::default();
        tokio::spawn(refresh(redis.clone(), live.clone(), stop));
        RedisCaps {
            redis: redis.clone(),
            prefix: redis.prefix.clone(),
            script: redis::Script::new(ACQUIRE),
            live,
        }
    }
}

#[async_trait::async_trait]
impl CapStore for RedisCaps {
    async fn acquire(&self, id: u64, keys: &[String], limits: &[u32]) -> Result<(), CapError> {
        // Connection ids are unique per process; the process tag makes them
        // unique across nodes and restarts.
        let member = format!("{}-{id}", process_tag());
        let keys: Vec<String> = keys
            .iter()
            .map(|k| format!("{}:streams:{k}", self.prefix))
            .collect();
        // Keys in one slot go in one script (all of them, on one server).
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let s = if self.redis.cluster { slot(k) } else { 0 };
            match groups.iter_mut().find(|(g, _)| *g == s) {
                Some((_, members)) => members.push(i),
                None => groups.push((s, vec![i])),
            }
        }
        for (n, (_, group)) in groups.iter().enumerate() {
            let now = now_ms();
            let mut inv = self.script.prepare_invoke();
            for &i in group {
                inv.key(&keys[i]);
            }
            inv.arg(now)
                .arg(now + LEASE.as_millis() as i64)
                .arg(&member);
            for &i in group {
                inv.arg(limits[i]);
            }
            let mut c = self.redis.conn.clone();
            let refused = match inv.invoke_async::<i64>(&mut c).await {
                Ok(0) => continue,
                Ok(full) => Err(CapError::Full(group[full as usize - 1])),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check stream caps in Redis");
                    Err(CapError::Unavailable)
                }
            };
            // Give back what the earlier groups took.
            let taken: Vec<String> = groups[..n]
                .iter()
                .flat_map(|(_, g)| g.iter().map(|&i| keys[i].clone()))
                .collect();
            if !taken.is_empty() {
                remove(&self.redis, taken, member.clone());
            }
            return refused;
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, keys);
        Ok(())
    }

    fn release(&self, id: u64, _keys: Vec<String>) {
        let Some(keys) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
        else {
            return;
        };
        let member = format!("{}-{id}", process_tag());
        remove(&self.redis, keys, member);
    }
}

/// Takes `member` out of `keys`, in the background.
fn remove(redis: &RedisConn, keys: Vec<String>, member: String) {
    let mut batch = redis.batch();
    for k in &keys {
        batch.add(k, redis::cmd("ZREM").arg(k).arg(&member).clone());
    }
    let conn = redis.conn.clone();
    tokio::spawn(async move {
        let _ = batch.run(&conn).await;
    });
}

fn now_ms() -> i64 {
    crate::event::now_ms()
}

/// Unique per process start, so members from a restarted node never collide.
pub(super) fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("{}.{}", std::process::id(), now_ms()))
}

/// Extends this node's leases every third of their life.
async fn refresh(
    redis: RedisConn,
    live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(LEASE / 3);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leases: Vec<(u64, Vec<String>)> = live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, keys)| (*id, keys.clone()))
            .collect();
        let expiry = now_ms() + LEASE.as_millis() as i64;
        for chunk in leases.chunks(500) {
            let mut batch = redis.batch();
            for (id, keys) in chunk {
                let member = format!("{}-{id}", process_tag());
                for k in keys {
                    batch.add(
                        k,
                        redis::cmd("ZADD")
                            .arg(k)
                            .arg("XX")
                            .arg(expiry)
                            .arg(&member)
                            .clone(),
                    );
                    batch.add(k, redis::cmd("PEXPIRE").arg(k).arg(60_000).clone());
                }
            }
            if let Err(e) = batch.run(&redis.conn).await {
                tracing::warn!(error = %e, "cannot refresh stream leases");
                break;
            }
        }
    }
}
