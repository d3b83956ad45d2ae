//! Embedded mode's batch writer: one SQLite connection of its own, driven
//! synchronously (rusqlite) on a blocking thread.
//!
//! A batch crosses threads once: the whole transaction (every write, the one
//! append, the commit and its fsync) runs on the blocking thread with cached
//! prepared statements, instead of one hand-off to a database thread per
//! statement. `SqliteStore` sends every domain write here (see `batch.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::batch::{self, Done, Op, Outcome, RulesFn};
use super::{
    assign_seqs, message_events, retained_last, tenant_counts, unread_event, Error, Message,
};
use crate::bids::decision::created_event;
use crate::bids::{Bid, Product};
use crate::event::{NewEvent, StoredEvent};

use super::bids::{BID_COLS, PRODUCT_COLS};

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::DiskFull)
            | Some(C::SystemIoFailure) => Error::Unavailable(e.to_string()),
            Some(C::ConstraintViolation) => Error::Conflict(e.to_string()),
            _ => Error::Internal(format!("database error: {e}")),
        }
    }
}

/// The writer's connection; a batch holds it from `BEGIN` to `COMMIT`.
pub(crate) struct Writer {
    conn: Arc<Mutex<Connection>>,
}

impl Writer {
    /// Opens the database file (already created and migrated).
    pub(crate) fn open(path: &Path) -> Result<Writer, Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A 202 is a promise: a commit reaches the disk before the answer.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -32000)?;
        // Sorting and the like stay off the disk.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Writer {
            conn: Arc::new(Mutex::new(conn)),
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
            return Err(batch::key_raced());
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
        Op::Decide(product, limit, rules) => {
            let (n, events) = round(conn, product, *limit, rules.as_ref())?.unwrap_or_default();
            Ok((Done::Decided(n), Cow::Owned(events)))
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

fn unread(conn: &Connection, tenant: &str, user: &str) -> Result<u64, Error> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE tenant = ?1 AND recipient = ?2 AND id > \
             coalesce((SELECT up_to FROM message_reads WHERE tenant = ?1 AND user_id = ?2), 0)",
        )?
        .query_row(params![tenant, user], |r| r.get(0))?;
    Ok(n as u64)
}

fn insert_product(conn: &Connection, p: &Product) -> Result<(), Error> {
    conn.prepare_cached(&format!(
        "INSERT INTO products ({PRODUCT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))?
    .execute(params![
        p.id,
        p.tenant,
        p.seller_id,
        p.title,
        p.starting_price,
        p.min_increment,
        p.anti_snipe_ms,
        p.ends_at,
        p.status,
        p.current_bid,
        p.leader,
        p.bid_count,
        p.version,
        p.created_at
    ])?;
    Ok(())
}

/// Inserts a queued bid, or finds the one stored under its idempotency key
/// (a key used for another bid is refused inside, with nothing written).
fn insert_bid(conn: &Connection, bid: &Bid) -> Result<Result<(Bid, bool), Error>, Error> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO bids ({BID_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING"
        ))?
        .execute(params![
            bid.id,
            bid.tenant,
            bid.product_id,
            bid.bidder_id,
            bid.amount,
            bid.idempotency_key,
            bid.status,
            bid.reason,
            bid.decided_by,
            bid.created_at,
            bid.decided_at
        ])?;
    if inserted == 1 {
        return Ok(Ok((bid.clone(), true)));
    }
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {BID_COLS} FROM bids WHERE tenant = ? AND bidder_id = ? AND idempotency_key = ?"
        ))?
        .query_row(
            params![bid.tenant, bid.bidder_id, bid.idempotency_key],
            bid_row,
        )
        .optional()?;
    Ok(super::bids::same_bid(existing, bid))
}

/// One decision round (the transaction is the lock: SQLite has one writer):
/// the number of bids decided and the events to append (`None`: nothing to
/// write).
fn round(
    conn: &Connection,
    product_id: &str,
    limit: usize,
    rules: &RulesFn,
) -> Result<Option<(usize, Vec<NewEvent>)>, Error> {
    let product = conn
        .prepare_cached(&format!("SELECT {PRODUCT_COLS} FROM products WHERE id = ?"))?
        .query_row(params![product_id], product_row)
        .optional()?;
    let Some(product) = product else {
        return Ok(None);
    };
    let mut bids = conn
        .prepare_cached(&format!(
            "SELECT {BID_COLS} FROM bids WHERE product_id = ? AND status = 'queued' \
             ORDER BY n LIMIT ?"
        ))?
        .query_map(params![product_id, limit as i64 + 1], bid_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let more = bids.len() > limit;
    bids.truncate(limit);
    let before = product.clone();
    let round = rules(product, &bids, more);
    if super::bids::idle(&round, &before) {
        return Ok(None);
    }
    let now = crate::event::now_ms();
    let mut decide = conn.prepare_cached(
        "UPDATE bids SET status = ?, reason = ?, decided_by = ?, decided_at = ?, \
         decision_input = ? WHERE id = ? AND status = 'queued'",
    )?;
    for o in &round.outcomes {
        decide.execute(params![
            o.status,
            o.reason,
            round.decided_by,
            now,
            o.input,
            o.bid_id
        ])?;
    }
    let p = &round.product;
    conn.prepare_cached(
        "UPDATE products SET status = ?, current_bid = ?, leader = ?, bid_count = ?, \
         version = ?, ends_at = ? WHERE id = ?",
    )?
    .execute(params![
        p.status,
        p.current_bid,
        p.leader,
        p.bid_count,
        p.version,
        p.ends_at,
        p.id
    ])?;
    Ok(Some((round.outcomes.len(), round.events)))
}

fn product_row(r: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        tenant: r.get(1)?,
        seller_id: r.get(2)?,
        title: r.get(3)?,
        starting_price: r.get(4)?,
        min_increment: r.get(5)?,
        anti_snipe_ms: r.get(6)?,
        ends_at: r.get(7)?,
        status: r.get(8)?,
        current_bid: r.get(9)?,
        leader: r.get(10)?,
        bid_count: r.get(11)?,
        version: r.get(12)?,
        created_at: r.get(13)?,
    })
}

fn bid_row(r: &Row<'_>) -> rusqlite::Result<Bid> {
    Ok(Bid {
        id: r.get(0)?,
        tenant: r.get(1)?,
        product_id: r.get(2)?,
        bidder_id: r.get(3)?,
        amount: r.get(4)?,
        idempotency_key: r.get(5)?,
        status: r.get(6)?,
        reason: r.get(7)?,
        decided_by: r.get(8)?,
        created_at: r.get(9)?,
        decided_at: r.get(10)?,
    })
}
