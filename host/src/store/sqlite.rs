//! `SqliteStore`: embedded mode's system of record, one SQLite file in WAL mode.
//!
//! Domain writes (events, messages, read marks, bids, products, decision
//! rounds) go through the batch writer (`sqlite_writer.rs`: group commit on a
//! connection of its own); the rare others (tenants, retention, plugins,
//! secrets) through a pool of one connection, waiting on SQLite's busy
//! timeout when the batch holds the lock. Reads use their own pool and never
//! block a writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::batch::{self, Batcher, Done, Op};
use super::sqlite_reader::Readers;
use super::{Error, Message, NewMessage, Notification, Page, Store, Tenant};
use crate::event::{NewEvent, Seq, StoredEvent};

/// SQLite-backed store.
pub struct SqliteStore {
    pub(crate) write: SqlitePool,
    pub(crate) read: SqlitePool,
    /// Group commit of the domain writes (`sqlite_writer.rs`).
    pub(crate) batch: Batcher,
    /// Log reads: replay pages and gap fills (`sqlite_reader.rs`).
    readers: Arc<Readers>,
}

/// Rows a read connection hands over without waiting for the reader.
const READ_ROW_BUFFER: usize = 2_048;

impl SqliteStore {
    /// Opens (creating if needed) `dir/switchyard.db` and applies migrations.
    pub async fn open(dir: &Path) -> Result<SqliteStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(dir.join("switchyard.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A 202 is a promise: a commit reaches the disk before the answer.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-32000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        super::migrate::sqlite(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            // Rows cross from SQLite's thread to the reader through a bounded
            // channel; room for a whole page (history, `latest`) spares a
            // wake-up per row. Replay pages go through `Readers` instead.
            .connect_with(opts.read_only(true).row_buffer_size(READ_ROW_BUFFER))
            .await?;
        let writer = super::sqlite_writer::Writer::open(&dir.join("switchyard.db"))?;
        let batch = Batcher::start(Arc::new(writer));
        let readers = Arc::new(Readers::new(&dir.join("switchyard.db")));
        Ok(SqliteStore {
            write,
            read,
            batch,
            readers,
        })
    }
}

/// A row of `SELECT seq, topic, type, payload, ts` (columns by position:
/// replay decodes many rows, and a lookup by name costs per column).
fn event_row(row: &SqliteRow, tenant: &Arc<str>) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        seq: row.try_get::<i64, _>(0)? as Seq,
        tenant: tenant.clone(),
        topic: row.try_get(1)?,
        kind: row.try_get(2)?,
        json: row.try_get(3)?,
        ts: row.try_get(4)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, Error> {
        let created_at = crate::event::now_ms();
        sqlx::query("INSERT INTO tenants (slug, name, created_at) VALUES (?, ?, ?)")
            .bind(slug)
            .bind(name)
            .bind(created_at)
            .execute(&self.write)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!("tenant {slug:?} already exists")),
                other => other,
            })?;
        Ok(Tenant {
            slug: slug.into(),
            name: name.into(),
            created_at,
        })
    }

    async fn tenant(&self, slug: &str) -> Result<Option<Tenant>, Error> {
        let row = sqlx::query("SELECT slug, name, created_at FROM tenants WHERE slug = ?")
            .bind(slug)
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(Tenant {
                slug: r.try_get("slug")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
            }),
            None => None,
        })
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        let rows = sqlx::query("SELECT slug, name, created_at FROM tenants ORDER BY slug")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    slug: r.try_get("slug")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (_, stored) = self.batch.write(Op::Append(events)).await?;
        Ok(stored)
    }

    async fn read(
        &self,
        tenant: &str,
        topics: &[String],
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Page, Error> {
        self.readers.read(tenant, topics, after, limit).await
    }

    async fn latest(&self, tenant: &str, topic: &str, limit: usize) -> Result<Page, Error> {
        let mut page = self.read(tenant, &[topic.to_string()], None, 0).await?;
        let rows = sqlx::query(
            "SELECT seq, topic, type, payload, ts FROM events \
             WHERE tenant = ? AND topic = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(topic)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        let t: Arc<str> = tenant.into();
        page.events = rows
            .iter()
            .rev()
            .map(|r| event_row(r, &t))
            .collect::<Result<_, _>>()?;
        Ok(page)
    }

    async fn range(&self, tenant: &str, after: Seq, upto: Seq) -> Result<Vec<StoredEvent>, Error> {
        self.readers.range(tenant, after, upto).await
    }

    async fn heads(&self) -> Result<Vec<(String, Seq)>, Error> {
        let rows = sqlx::query("SELECT slug, last_seq FROM tenants")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("slug")?, r.try_get::<i64, _>("last_seq")? as Seq)))
            .collect()
    }

    async fn trim_topic(&self, tenant: &str, topic: &str, keep: u64) -> Result<u64, Error> {
        let mut tx = self.write.begin().await?;
        let cutoff: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM events WHERE tenant = ? AND topic = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
        )
        .bind(tenant)
        .bind(topic)
        .bind(keep as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        sqlx::query(
            "INSERT INTO topics (tenant, topic, trimmed_seq) VALUES (?, ?, ?) \
             ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = max(trimmed_seq, excluded.trimmed_seq)",
        )
        .bind(tenant)
        .bind(topic)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM events WHERE tenant = ? AND topic = ? AND seq <= ?")
            .bind(tenant)
            .bind(topic)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn append_keyed(
        &self,
        key: super::PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<super::Keyed, Error> {
        batch::write_keyed(&self.batch, key, events).await
    }

    async fn trim_publish_keys(&self, cutoff_ms: i64) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM publish_keys WHERE created_at < ?")
            .bind(cutoff_ms)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, Error> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO topics (tenant, topic, trimmed_seq) \
             SELECT tenant, topic, max(seq) FROM events WHERE ts < ? GROUP BY tenant, topic \
             ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = max(trimmed_seq, excluded.trimmed_seq)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM events WHERE ts < ?")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn post_message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error> {
        match self
            .batch
            .write(Op::Message(msg.clone(), notes.to_vec()))
            .await?
        {
            (Done::Message(m, unread), events) => Ok((m, unread, events)),
            (other, _) => Err(batch::unexpected(other)),
        }
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error> {
        let op = Op::MarkRead(tenant.into(), user.into(), up_to);
        match self.batch.write(op).await? {
            (Done::Read(unread), events) => Ok((unread, events)),
            (other, _) => Err(batch::unexpected(other)),
        }
    }

    async fn messages(
        &self,
        tenant: &str,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Message>, Error> {
        let rows = sqlx::query(
            "SELECT id, sender, recipient, product_id, body, created_at FROM messages \
             WHERE tenant = ? AND (recipient = ? OR sender = ?) AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(tenant)
        .bind(user)
        .bind(user)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Message {
                    id: r.try_get("id")?,
                    from: r.try_get("sender")?,
                    to: r.try_get("recipient")?,
                    product_id: r.try_get("product_id")?,
                    body: r.try_get("body")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn unread(&self, tenant: &str, user: &str) -> Result<u64, Error> {
        let mut conn = self.read.acquire().await?;
        unread_in(&mut conn, tenant, user).await
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.write)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&self.write)
                .await?,
        )
    }
}

async fn unread_in(conn: &mut SqliteConnection, tenant: &str, user: &str) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant = ? AND recipient = ? AND id > \
         coalesce((SELECT up_to FROM message_reads WHERE tenant = ? AND user_id = ?), 0)",
    )
    .bind(tenant)
    .bind(user)
    .bind(tenant)
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}
