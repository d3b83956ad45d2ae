//! Per-user and per-tenant caps on concurrent streams.
//!
//! Embedded mode counts in memory. Cluster mode keeps leases in Redis: one
//! sorted set per user and per tenant, members are connection ids scored by
//! lease expiry. Acquiring drops expired members and adds one only under the
//! cap, in one script, so the cap holds across every node together; a node
//! refreshes its leases while their streams live, so a node that dies frees
//! its connections when the leases expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::bus::redis::RedisConn;

/// How long a lease lives without refresh.
const LEASE: Duration = Duration::from_secs(30);

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has too many streams.
    User,
    /// The tenant has too many streams.
    Tenant,
    /// The cap could not be checked (Redis down).
    Unavailable,
}

/// Stream caps.
pub struct Caps {
    per_user: u32,
    per_tenant: u32,
    inner: Backend,
}

enum Backend {
    Memory(Mutex<HashMap<String, u32>>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
        script: redis::Script,
        /// Live leases of this node: id -> keys, refreshed on an interval.
        live: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    },
}

/// Held while a stream is open; dropping it releases the stream's slots.
pub struct Lease {
    caps: Arc<Caps>,
    id: u64,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &self.caps.inner {
            Backend::Memory(counts) => {
                let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                for k in &self.keys {
                    if let Some(n) = counts.get_mut(k) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            counts.remove(k);
                        }
                    }
                }
            }
            Backend::Redis { conn, live, .. } => {
                live.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.id);
                let mut conn = conn.clone();
                let keys = std::mem::take(&mut self.keys);
                let member = format!("{}-{}", process_tag(), self.id);
                tokio::spawn(async move {
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("ZREM").arg(k).arg(&member).ignore();
                    }
                    let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
                });
            }
        }
    }
}

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

impl Caps {
    /// Caps counted in this process.
    pub fn memory(per_user: u32, per_tenant: u32) -> Arc<Caps> {
        Arc::new(Caps {
            per_user,
            per_tenant,
            inner: Backend::Memory(Mutex::new(HashMap::new())),
        })
    }

    /// Caps held as leases in Redis, refreshed until `stop`.
    pub fn redis(
        redis: &RedisConn,
        per_user: u32,
        per_tenant: u32,
        stop: tokio_util::sync::CancellationToken,
    ) -> Arc<Caps> {
        let live: Arc<Mutex<HashMap<u64, Vec<String>>>> = Arc::default();
        tokio::spawn(refresh(redis.conn.clone(), live.clone(), stop));
        Arc::new(Caps {
            per_user,
            per_tenant,
            inner: Backend::Redis {
                conn: redis.conn.clone(),
                prefix: redis.prefix.clone(),
                script: redis::Script::new(ACQUIRE),
                live,
            },
        })
    }

    /// Takes a slot for a stream of `tenant` (and `user`, if signed in).
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        user: Option<&str>,
    ) -> Result<Lease, Refusal> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut keys = vec![format!("tenant:{tenant}")];
        let mut limits = vec![self.per_tenant];
        if let Some(u) = user {
            keys.push(format!("user:{tenant}:{u}"));
            limits.push(self.per_user);
        }
        let refusal = |i: usize| {
            if i == 0 {
                Refusal::Tenant
            } else {
                Refusal::User
            }
        };
        match &self.inner {
            Backend::Memory(counts) => {
                let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                for (i, k) in keys.iter().enumerate() {
                    if counts.get(k).copied().unwrap_or(0) >= limits[i] {
                        return Err(refusal(i));
                    }
                }
                for k in &keys {
                    *counts.entry(k.clone()).or_default() += 1;
                }
            }
            Backend::Redis {
                conn,
                prefix,
                script,
                live,
            } => {
                // Connection ids are unique per process; the process tag
                // makes them unique across nodes and restarts.
                let member = format!("{}-{id}", process_tag());
                keys = keys
                    .into_iter()
                    .map(|k| format!("{prefix}:streams:{k}"))
                    .collect();
                let now = now_ms();
                let mut inv = script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(now)
                    .arg(now + LEASE.as_millis() as i64)
                    .arg(&member);
                for l in &limits {
                    inv.arg(*l);
                }
                let mut c = conn.clone();
                match inv.invoke_async::<i64>(&mut c).await {
                    Ok(0) => {}
                    Ok(i) => return Err(refusal(i as usize - 1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check stream caps in Redis");
                        return Err(Refusal::Unavailable);
                    }
                }
                live.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, keys.clone());
                return Ok(Lease {
                    caps: self.clone(),
                    id,
                    keys,
                });
            }
        }
        Ok(Lease {
            caps: self.clone(),
            id,
            keys,
        })
    }
}

fn now_ms() -> i64 {
    crate::event::now_ms()
}

/// Unique per process start, so members from a restarted node never collide.
fn process_tag() -> &'static str {
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
