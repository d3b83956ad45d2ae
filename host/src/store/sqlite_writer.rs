//! Embedded mode's batch writer: one SQLite connection of its own, driven
//! synchronously (rusqlite) on a blocking thread.
//!
//! A batch crosses threads once: the whole transaction (every write, the one
//! append, the commit and its fsync) runs on the blocking thread with cached
//! prepared statements, instead of one hand-off to a database thread per
//! statement. `SqliteStore` sends every domain write here (see `batch.rs`);
//! its rare writes (tenants, retention, plugins, secrets) run on a second
//! connection opened the same way (`open_rw`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::batch::{self, Done, Op, Outcome};
use super::bids::sqlite_impl::{commit_round, insert_bid, insert_product};
use super::{
    assign_seqs, message_events, retained_last, tenant_counts, unread_event, Error, Message,
};
use crate::bids::decision::created_event;
use crate::event::{NewEvent, StoredEvent};

/// The writer's connection; a batch holds it from `BEGIN` to `COMMIT`.
pub(crate) struct Writer {
    conn: Arc<Mutex<Connection>>,
}

/// Opens (creating if needed) a writing connection to the database file:
/// WAL, every commit synced, waiting up to 10 s for the write lock.
pub(super) fn open_rw(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A 202 is a promise: a commit reaches the disk before the answer.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32000)?;
    // Sorting and the like stay off the disk.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Writer {
    /// Opens the database file (already created and migrated).
    pub(crate) fn open(path: &Path) -> Result<Writer, Error> {
        Ok(Writer {
            conn: Arc::new(Mutex::new(open_rw(path)?)),
        })
    }
}

#[async_trait]
impl batch::Target for Writer {
    async fn run(&self, ops: Arc<[Op]>) -> Result<Vec<Outcome>, Error> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            run(&mut conn, &ops)
        })
        .await
        .map_err(|e| Error::Internal(format!("the writer thread failed: {e}")))?
    }
}

fn run(conn: &mut Connection, ops: &[Op]) -> Result<Vec<Outcome>, Error> {
    // IMMEDIATE: take the write lock up front (the retention task writes
    // through another connection), so no statement fails to upgrade it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Vec::with_capacity(ops.len());
    for op in ops {
        applied.push(apply(&tx, op)?);
    }
    let stored = append(&tx, &batch::events_of(&applied))?;
    let outcomes = batch::split(applied, stored);
    keep_keys(&tx, ops, &outcomes)?;
    tx.commit()?;
    Ok(outcomes)
}

/// Writes the idempotency keys of the batch's keyed appends (an expired row
/// is replaced; a live one means another write of the batch took the key).
fn keep_keys(conn: &Connection, ops: &[Op], outcomes: &[Outcome]) -> Result<(), Error> {
    let rows = batch::keyed_rows(ops, outcomes);
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO publish_keys (tenant, key, hash, ids, ts, created_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant, key) DO UPDATE SET hash = excluded.hash, ids = excluded.ids, \
         ts = excluded.ts, created_at = excluded.created_at WHERE publish_keys.created_at < ?",
    )?;
    let now = crate::event::now_ms();
    for (key, ids, ts) in rows {
        let ids = serde_json::to_string(&ids).map_err(|e| Error::Internal(e.to_string()))?;
        let n = insert.execute(params![
            key.tenant,
            key.key,
            key.hash,
            ids,
            ts,
            now,
            key.since_ms
        ])?;
        if n == 0 {
            // Another node's write, or another of this batch, took the
            // key meanwhile: the batch is run again and this write sees it.
            return Err(Error::KeyRaced);
        }
    }
    Ok(())
}

fn apply<'a>(conn: &Connection, op: &'a Op) -> Result<batch::Applied<'a>, Error> {
    use std::borrow::Cow;
    Ok(match op {
        Op::Append(events) => Ok((Done::Appended, Cow::Borrowed(events.as_slice()))),
        Op::Keyed(key, events) => {
            let row = conn
                .prepare_cached(
                    "SELECT hash, ids, ts, created_at FROM publish_keys WHERE tenant = ? AND key = ?",
                )?
                .query_row(params![key.tenant, key.key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            batch::apply_keyed(key, events, row)
        }
        Op::Message(msg, notes) => {
            let created_at = crate::event::now_ms();
            let id: i64 = conn
                .prepare_cached(
                    "INSERT INTO messages (tenant, sender, recipient, product_id, body, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                )?
                .query_row(
                    params![msg.tenant, msg.from, msg.to, msg.product_id, msg.body, created_at],
                    |r| r.get(0),
                )?;
            let stored = Message {
                id,
                from: msg.from.clone(),
                to: msg.to.clone(),
                product_id: msg.product_id.clone(),
                body: msg.body.clone(),
                created_at,
            };
            let unread = unread(conn, &msg.tenant, &msg.to)?;
            let events = message_events(&msg.tenant, &stored, notes, unread);
            Ok((Done::Message(stored, unread), Cow::Owned(events)))
        }
        Op::MarkRead(tenant, user, up_to) => {
            conn.prepare_cached(
                "INSERT INTO message_reads (tenant, user_id, up_to) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant, user_id) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
            )?
            .execute(params![tenant, user, up_to])?;
            let unread = unread(conn, tenant, user)?;
            let events = vec![unread_event(tenant, user, unread)];
            Ok((Done::Read(unread), Cow::Owned(events)))
        }
        Op::Bid(bid) => {
            insert_bid(conn, bid)?.map(|(b, new)| (Done::Bid(b, new), Cow::Owned(Vec::new())))
        }
        Op::Product(p) => {
            insert_product(conn, p)?;
            Ok((Done::Product, Cow::Owned(vec![created_event(p)])))
        }
        // The round was decided off this thread; here it is only checked
        // against what it read and written.
        Op::Round(w) => {
            if commit_round(conn, w)? {
                let events = w.round.events.as_slice();
                Ok((Done::Decided, Cow::Borrowed(events)))
            } else {
                Ok((Done::Stale, Cow::Owned(Vec::new())))
            }
        }
    })
}

/// Bumps each tenant's counter once, inserts the events and writes each
/// retained topic's last state.
fn append(conn: &Connection, events: &[&NewEvent]) -> Result<Vec<StoredEvent>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let counts = tenant_counts(events);
    let mut lasts = Vec::with_capacity(counts.len());
    let mut bump = conn.prepare_cached(
        "UPDATE tenants SET last_seq = last_seq + ? WHERE slug = ? RETURNING last_seq",
    )?;
    for (tenant, n) in &counts {
        match bump
            .query_row(params![n, tenant], |r| r.get::<_, i64>(0))
            .optional()?
        {
            Some(last) => lasts.push(last),
            None => return Err(Error::UnknownTenant(tenant.to_string())),
        }
    }
    let stored = assign_seqs(events, &counts, &lasts, crate::event::now_ms());
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (tenant, seq, topic, type, payload, ts) VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for e in &stored {
        insert.execute(params![
            &*e.tenant,
            e.seq as i64,
            e.topic,
            e.kind,
            e.json,
            e.ts
        ])?;
    }
    let mut retain = conn.prepare_cached(
        "INSERT INTO topics (tenant, topic, retained, retained_seq, retained_ts) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, topic) DO UPDATE SET \
         retained = excluded.retained, retained_seq = excluded.retained_seq, \
         retained_ts = excluded.retained_ts",
    )?;
    for (new, e) in retained_last(events, &stored) {
        retain.execute(params![new.tenant, new.topic, new.data, e.seq as i64, e.ts])?;
    }
    Ok(stored)
}

/// A user's unread count.
pub(super) fn unread(conn: &Connection, tenant: &str, user: &str) -> Result<u64, Error> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE tenant = ?1 AND recipient = ?2 AND id > \
             coalesce((SELECT up_to FROM message_reads WHERE tenant = ?1 AND user_id = ?2), 0)",
        )?
        .query_row(params![tenant, user], |r| r.get(0))?;
    Ok(n as u64)
}
