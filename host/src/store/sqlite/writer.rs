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

use super::bids::{commit_round, insert_bid, insert_product};
use crate::event::{NewEvent, StoredEvent};
use crate::store::batch::{self, Applied, Outcome, Write};
use crate::store::{
    assign_seqs, folded_topics, message_events, retained_writes, tenant_counts, unread_event,
    Error, Message,
};

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
    async fn run(&self, mut writes: Vec<Write>) -> (Vec<Write>, Result<Vec<Outcome>, Error>) {
        let conn = self.conn.clone();
        // The writes go to the blocking thread and come back with it; a
        // thread that panicked takes them along (their callers see the
        // writer gone).
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let done = run(&mut conn, &mut writes);
            (writes, done)
        })
        .await
        .unwrap_or_else(|e| {
            (
                Vec::new(),
                Err(Error::Internal(format!("the writer thread failed: {e}"))),
            )
        })
    }
}

fn run(conn: &mut Connection, writes: &mut [Write]) -> Result<Vec<Outcome>, Error> {
    // IMMEDIATE: take the write lock up front (the retention task writes
    // through another connection), so no statement fails to upgrade it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Vec::with_capacity(writes.len());
    for w in writes.iter_mut() {
        applied.push(apply(&tx, w)?);
    }
    let stored = append(&tx, &batch::events_of(writes, &applied))?;
    let outcomes = batch::split(writes, applied, stored);
    keep_keys(&tx, writes, &outcomes)?;
    tx.commit()?;
    Ok(outcomes)
}

/// Writes the idempotency keys of the batch's keyed appends (an expired row
/// is replaced; a live one means another write of the batch took the key).
fn keep_keys(conn: &Connection, writes: &[Write], outcomes: &[Outcome]) -> Result<(), Error> {
    let rows = batch::keyed_rows(writes, outcomes);
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

/// One write inside the batch's transaction: `Err` fails the batch, an
/// inner `Err` refuses this write alone (it wrote nothing).
fn apply(conn: &Connection, w: &mut Write) -> Result<Applied, Error> {
    match w {
        Write::Append { .. } => {}
        Write::Keyed { key, repeated, .. } => {
            let row = conn
                .prepare_cached(
                    "SELECT hash, ids, ts, created_at FROM publish_keys WHERE tenant = ? AND key = ?",
                )?
                .query_row(params![key.tenant, key.key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            match batch::keyed_repeat(key, row) {
                Ok(found) => *repeated = found,
                Err(refused) => return Ok(Err(refused)),
            }
        }
        Write::Message {
            msg,
            notes,
            stored,
            events,
            ..
        } => {
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
            let message = Message {
                id,
                from: msg.from.clone(),
                to: msg.to.clone(),
                product_id: msg.product_id.clone(),
                body: msg.body.clone(),
                created_at,
            };
            let count = unread(conn, &msg.tenant, &msg.to)?;
            *events = message_events(&msg.tenant, &message, notes, count);
            *stored = Some((message, count));
        }
        Write::MarkRead {
            tenant,
            user,
            up_to,
            unread: left,
            events,
            ..
        } => {
            conn.prepare_cached(
                "INSERT INTO message_reads (tenant, user_id, up_to) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant, user_id) DO UPDATE SET up_to = max(up_to, excluded.up_to)",
            )?
            .execute(params![&*tenant, &*user, *up_to])?;
            *left = unread(conn, tenant, user)?;
            *events = vec![unread_event(tenant, user, *left)];
        }
        Write::Bid { bid, stored, .. } => match insert_bid(conn, bid)? {
            Ok(found) => *stored = Some(found),
            Err(refused) => return Ok(Err(refused)),
        },
        Write::Product { product, .. } => insert_product(conn, product)?,
        // The round was decided off this thread; here it is only checked
        // against what it read and written.
        Write::Round { write, written, .. } => *written = commit_round(conn, write)?,
    }
    Ok(Ok(()))
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
    let mut prev = std::collections::HashMap::new();
    for (tenant, topic) in folded_topics(events) {
        let state: Option<String> = conn
            .prepare_cached("SELECT retained FROM topics WHERE tenant = ? AND topic = ?")?
            .query_row(params![tenant, topic], |r| r.get(0))
            .optional()?
            .flatten();
        if let Some(s) = state {
            prev.insert((tenant.to_string(), topic.to_string()), s);
        }
    }
    for w in retained_writes(events, &stored, &prev) {
        retain.execute(params![w.tenant, w.topic, w.data, w.seq as i64, w.ts])?;
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
