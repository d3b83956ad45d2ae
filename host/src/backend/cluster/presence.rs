//! `RedisPresence`: presence counted in Redis, cluster-wide.
//!
//! Per topic, under `{prefix}:presence:{tenant}:{topic}`:
//!
//! - `:conns`, a sorted set of the topic's streams (`{node}-{id}\n{user}`,
//!   the user empty for an anonymous stream) scored by lease expiry, which
//!   the node refreshes with its stream leases (every 10 s, to 30 s ahead),
//!   so a dead node's streams drop out when their leases expire;
//! - `:users`, a hash user -> streams of that user on the topic;
//! - `:tick`, a key set `NX PX interval` by the one decision of an interval;
//! - `:last`, the counts last appended (`streams,users`; missing: zero).
//!
//! Redis operations, each one script call (one round trip):
//!
//! - join: `ZADD conns`, `PEXPIRE conns`, and for a user `HINCRBY users +1`,
//!   `PEXPIRE users`;
//! - leave: `ZREM conns`, and only if it removed the stream, for a user
//!   `HINCRBY users -1` (`HDEL` at zero);
//! - decision, per topic and interval on one node: `SET tick NX PX`, then
//!   `ZRANGEBYSCORE conns` of expired leases (each `ZREM` and, for a user,
//!   `HINCRBY -1`/`HDEL`), `ZCARD conns`, `HLEN users`, `GET last` and, when
//!   the counts changed, `SET last` (`DEL last` at zero).
//!
//! The refresh is pipelined: per live stream and topic `ZADD XX` and
//! `PEXPIRE` of `conns` and `users`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::conn::RedisConn;
use crate::presence::{Counts, Decision, Entry, PresenceStore, Unavailable};

/// How long a stream's presence lives without refresh (as a cap lease).
const LEASE: Duration = Duration::from_secs(30);
/// How long a topic's keys outlive their last refresh.
const KEY_TTL_MS: i64 = 60_000;

// KEYS: conns, users; ARGV: expiry_ms, member, user ('' if none), key ttl
const JOIN: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 0
"#;

// KEYS: conns, users; ARGV: member, user ('' if none)
const LEAVE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= '' then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
  end
end
return 1
"#;

// KEYS: conns, users, tick, last; ARGV: now_ms, interval_ms
// Returns nil when another decision holds the interval, 'same' when the
// counts are the last appended, else the new counts 'streams,users'.
const DECIDE: &str = r#"
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  local user = string.match(m, '\n(.*)$')
  if user and user ~= '' then
    if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
      redis.call('HDEL', KEYS[2], user)
    end
  end
end
local counts = redis.call('ZCARD', KEYS[1]) .. ',' .. redis.call('HLEN', KEYS[2])
local last = redis.call('GET', KEYS[4]) or '0,0'
if last == counts then
  return 'same'
end
if counts == '0,0' then
  redis.call('DEL', KEYS[4])
else
  redis.call('SET', KEYS[4], counts)
end
return counts
"#;

/// This node's streams on topics, by (connection, conns key): the member
/// and the keys its refresh extends (member, conns, users).
type Live = Arc<Mutex<HashMap<(u64, String), [String; 3]>>>;

/// Presence in Redis.
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    join: redis::Script,
    leave: redis::Script,
    decide: redis::Script,
    /// This node's streams on topics.
    live: Live,
}

impl RedisPresence {
    /// Presence under `{prefix}:presence:`, refreshed until `stop`.
    pub fn start(redis: &RedisConn, stop: tokio_util::sync::CancellationToken) -> RedisPresence {
        let live: Live = Arc::default();
        tokio::spawn(refresh(redis.conn.clone(), live.clone(), stop));
        RedisPresence {
            conn: redis.conn.clone(),
            prefix: redis.prefix.clone(),
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            decide: redis::Script::new(DECIDE),
            live,
        }
    }

    fn key(&self, tenant: &str, topic: &str, part: &str) -> String {
        format!("{}:presence:{tenant}:{topic}:{part}", self.prefix)
    }

    fn member(e: &Entry<'_>) -> String {
        format!(
            "{}-{}\n{}",
            super::caps::process_tag(),
            e.conn,
            e.user.unwrap_or("")
        )
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresence {
    async fn join(&self, e: Entry<'_>) -> Result<(), Unavailable> {
        let conns = self.key(e.tenant, e.topic, "conns");
        let users = self.key(e.tenant, e.topic, "users");
        let member = Self::member(&e);
        let expiry = crate::event::now_ms() + LEASE.as_millis() as i64;
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = self
            .join
            .key(&conns)
            .key(&users)
            .arg(expiry)
            .arg(&member)
            .arg(e.user.unwrap_or(""))
            .arg(KEY_TTL_MS)
            .invoke_async(&mut c)
            .await;
        if let Err(err) = r {
            tracing::warn!(error = %err, "cannot count a stream's presence in Redis");
            return Err(Unavailable);
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((e.conn, conns.clone()), [member, conns, users]);
        Ok(())
    }

    async fn leave(&self, e: Entry<'_>) {
        let conns = self.key(e.tenant, e.topic, "conns");
        let Some([member, conns, users]) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(e.conn, conns))
        else {
            return;
        };
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = self
            .leave
            .key(&conns)
            .key(&users)
            .arg(&member)
            .arg(e.user.unwrap_or(""))
            .invoke_async(&mut c)
            .await;
        if let Err(err) = r {
            // The lease expires by itself.
            tracing::warn!(error = %err, "cannot count a stream out of a topic's presence");
        }
    }

    async fn decide(&self, tenant: &str, topic: &str, interval: Duration) -> Decision {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<String>> = self
            .decide
            .key(self.key(tenant, topic, "conns"))
            .key(self.key(tenant, topic, "users"))
            .key(self.key(tenant, topic, "tick"))
            .key(self.key(tenant, topic, "last"))
            .arg(crate::event::now_ms())
            .arg(interval.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(None) => Decision::Lost,
            Ok(Some(s)) if s == "same" => Decision::Unchanged,
            Ok(Some(s)) => match s.split_once(',').and_then(|(a, b)| {
                Some(Counts {
                    streams: a.parse().ok()?,
                    users: b.parse().ok()?,
                })
            }) {
                Some(c) => Decision::Changed(c),
                None => Decision::Unchanged,
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot decide a topic's occupancy in Redis");
                Decision::Lost
            }
        }
    }

    async fn forget(&self, tenant: &str, topic: &str) {
        let mut c = self.conn.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(tenant, topic, "last"))
            .query_async(&mut c)
            .await;
    }
}

/// Extends this node's presence leases every third of their life.
async fn refresh(
    conn: ConnectionManager,
    live: Live,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(LEASE / 3);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leases: Vec<[String; 3]> = live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let expiry = crate::event::now_ms() + LEASE.as_millis() as i64;
        for chunk in leases.chunks(500) {
            let mut pipe = redis::pipe();
            for [member, conns, users] in chunk {
                pipe.cmd("ZADD")
                    .arg(conns)
                    .arg("XX")
                    .arg(expiry)
                    .arg(member)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(conns).arg(KEY_TTL_MS).ignore();
                pipe.cmd("PEXPIRE").arg(users).arg(KEY_TTL_MS).ignore();
            }
            let mut c = conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                tracing::warn!(error = %e, "cannot refresh presence leases");
                break;
            }
        }
    }
}
