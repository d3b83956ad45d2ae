//! `RedisCaps`: stream caps that hold across every node.
//!
//! One sorted set per user and per tenant; members are connection ids scored
//! by lease expiry. Acquiring drops expired members and adds one only under
//! the cap, in one script, so the cap holds across every node together; a
//! node refreshes its leases while their streams live, so a node that dies
//! frees its connections when the leases expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::conn::RedisConn;
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
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    /// Live leases of this node: id -> keys, refreshed on an interval.
    live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl RedisCaps {
    /// Leases under `{prefix}:streams:`, refreshed until `stop`.
    pub fn start(redis: &RedisConn, stop: tokio_util::sync::CancellationToken) -> RedisCaps {
        let live: Arc<Mutex<HashMap<u64, Vec<String>>>> = Arc::default();
        tokio::spawn(refresh(redis.conn.clone(), live.clone(), stop));
        RedisCaps {
            conn: redis.conn.clone(),
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
        let now = now_ms();
        let mut inv = self.script.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(now)
            .arg(now + LEASE.as_millis() as i64)
            .arg(&member);
        for l in limits {
            inv.arg(*l);
        }
        let mut c = self.conn.clone();
        match inv.invoke_async::<i64>(&mut c).await {
            Ok(0) => {}
            Ok(i) => return Err(CapError::Full(i as usize - 1)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check stream caps in Redis");
                return Err(CapError::Unavailable);
            }
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
        let mut conn = self.conn.clone();
        let member = format!("{}-{id}", process_tag());
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("ZREM").arg(k).arg(&member).ignore();
            }
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        });
    }
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
    conn: ConnectionManager,
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
            let mut pipe = redis::pipe();
            for (id, keys) in chunk {
                let member = format!("{}-{id}", process_tag());
                for k in keys {
                    pipe.cmd("ZADD")
                        .arg(k)
                        .arg("XX")
                        .arg(expiry)
                        .arg(&member)
                        .ignore();
                    pipe.cmd("PEXPIRE").arg(k).arg(60_000).ignore();
                }
            }
            let mut c = conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                tracing::warn!(error = %e, "cannot refresh stream leases");
                break;
            }
        }
    }
}
