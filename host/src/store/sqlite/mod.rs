//! `SqliteStore`: embedded mode's system of record, one SQLite file in WAL mode,
//! reached through rusqlite only, always on a blocking thread.
//!
//! Domain writes (events, messages, read marks, bids, products, decision
//! rounds) go through the batch writer (`writer.rs`: group commit on a
//! connection of its own); the rare others (tenants, retention, plugins,
//! secrets) through a second writing connection (`SqliteStore::write`),
//! waiting on SQLite's busy timeout when the batch holds the lock. Reads use
//! their own connections (`reader.rs`) and never block a writer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

mod admin;
mod bids;
mod plugins;
mod reader;
mod writer;

use reader::{event_row, page, Readers};
use writer::{open_rw, unread, Writer};

use crate::event::{NewEvent, Seq, StoredEvent};
use crate::store::batch::Batcher;
use crate::store::{
    Commits, ConflictReason, Error, Message, NewMessage, Notification, Page, Store, Tenant,
};

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::DiskFull)
            | Some(C::SystemIoFailure) => Error::unavailable(e),
            Some(C::ConstraintViolation) => Error::Conflict(ConflictReason::Duplicate(Box::new(e))),
            _ => Error::Database(Box::new(e)),
        }
    }
}

/// SQLite-backed store.
pub struct SqliteStore {
    /// The rare writes' connection (tenants, retention, plugins, secrets).
    rare: Arc<Mutex<Connection>>,
    /// Group commit of the domain writes (`writer.rs`).
    pub(crate) batch: Batcher,
    /// Every read (`reader.rs`).
    pub(crate) readers: Arc<Readers>,
    /// Where committed events go.
    commits: Commits,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/switchyard.db` and applies migrations.
    pub async fn open(dir: &Path) -> Result<SqliteStore, Error> {
        create_data_dir(dir).map_err(|e| {
            Error::unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("switchyard.db");
        private_database_files(&path).map_err(|e| {
            Error::unavailable(format!(
                "cannot make the database {} private: {e}",
                path.display()
            ))
        })?;
        let opened = path.clone();
        let (rare, writer) = tokio::task::spawn_blocking(move || {
            let mut rare = open_rw(&opened)?;
            crate::store::migrate::sqlite(&mut rare)?;
            Ok::<_, Error>((rare, Writer::open(&opened)?))
        })
        .await
        .map_err(|e| Error::Internal(format!("opening the database failed: {e}")))??;
        let commits = Commits::default();
        Ok(SqliteStore {
            rare: Arc::new(Mutex::new(rare)),
            batch: Batcher::start(Arc::new(writer), commits.clone()),
            readers: Arc::new(Readers::new(&path)),
            commits,
        })
    }

    /// Runs `f` in one write transaction on the rare writes' connection, on
    /// a blocking thread; `f`'s `Err` rolls it back.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = self.rare.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            // IMMEDIATE: take the write lock up front, so a read that is
            // followed by a write never fails to upgrade it.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("a write thread failed: {e}")))?
    }
}

impl SqliteStore {
    /// Every presence topic (`T~occupancy`, `T~members`) with a retained
    /// state: (tenant, topic, retained data).
    pub async fn presence_states(&self) -> Result<Vec<(String, String, String)>, Error> {
        self.readers
            .with(|c| {
                Ok(c.prepare_cached(
                    "SELECT tenant, topic, retained FROM topics WHERE retained IS NOT NULL \
                     AND (topic LIKE '%~occupancy' OR topic LIKE '%~members')",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?)
            })
            .await
    }
}

/// Creates the data dir (and missing parents) readable and writable by this
/// user only (0700, whatever the umask). An existing one is left as it is,
/// as the operator may have set it up so, but one that group or others can
/// write is warned about: whoever can write it can replace the database or
/// the JWT secret.
pub fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o022 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = %format!("{mode:o}"),
                        "the data dir can be written by other users (group or others): \
                         `chmod 700` it, as whoever can write it can replace the database \
                         and the JWT secret"
                    );
                }
                Ok(())
            }
            _ => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            }
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates the database file if missing, and makes it and its `-wal` and
/// `-shm` files readable and writable by this user only (0600, whatever
/// the umask; SQLite gives the `-wal` and `-shm` files it creates later the
/// database file's mode). Existing files are tightened too: they hold every
/// tenant's events and messages.
fn private_database_files(db: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(db)?;
        let name = db.as_os_str().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let mut file = name.clone();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            let Ok(m) = std::fs::metadata(&file) else {
                continue; // no such file (yet)
            };
            let mode = m.permissions().mode() & 0o777;
            if mode != 0o600 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                tracing::info!(
                    file = %file.display(),
                    was = %format!("{mode:o}"),
                    "made the database file readable and writable by this user only (600)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// A row of `SELECT slug, name, created_at FROM tenants`.
fn tenant_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        slug: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

/// A message's columns, in the order `message_row` takes them.
pub(crate) const MESSAGE_COLS: &str = "id, sender, recipient, product_id, body, created_at";

/// A row starting with `MESSAGE_COLS`.
pub(crate) fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        product_id: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), Error> {
        self.readers
            .with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    fn commits(&self) -> &Commits {
        &self.commits
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, Error> {
        let tenant = Tenant {
            slug: slug.into(),
            name: name.into(),
            created_at: crate::event::now_ms(),
        };
        let row = tenant.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO tenants (slug, name, created_at) VALUES (?, ?, ?)",
                params![row.slug, row.name, row.created_at],
            )?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            Error::Conflict(_) => Error::Conflict(ConflictReason::TenantExists(slug.into())),
            other => other,
        })?;
        Ok(tenant)
    }

    async fn tenant(&self, slug: &str) -> Result<Option<Tenant>, Error> {
        let slug = slug.to_string();
        self.readers
            .with(move |c| {
                Ok(
                    c.prepare_cached("SELECT slug, name, created_at FROM tenants WHERE slug = ?")?
                        .query_row([slug], tenant_row)
                        .optional()?,
                )
            })
            .await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        self.readers
            .with(|c| {
                Ok(
                    c.prepare_cached("SELECT slug, name, created_at FROM tenants ORDER BY slug")?
                        .query_map([], tenant_row)?
                        .collect::<Result<_, _>>()?,
                )
            })
            .await
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.batch.append(events).await
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
        let tenant: Arc<str> = tenant.into();
        let topic = topic.to_string();
        self.readers
            .with(move |c| {
                let mut page = page(c, &tenant, std::slice::from_ref(&topic), None, 0)?;
                let mut events = c
                    .prepare_cached(
                        "SELECT seq, topic, type, payload, ts FROM events \
                         WHERE tenant = ? AND topic = ? ORDER BY seq DESC LIMIT ?",
                    )?
                    .query_map(params![&*tenant, topic, limit as i64], |r| {
                        event_row(r, &tenant)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                events.reverse();
                page.events = events;
                Ok(page)
            })
            .await
    }

    async fn range(&self, tenant: &str, after: Seq, upto: Seq) -> Result<Vec<StoredEvent>, Error> {
        self.readers.range(tenant, after, upto).await
    }

    async fn heads(&self) -> Result<Vec<(String, Seq)>, Error> {
        self.readers
            .with(|c| {
                Ok(c.prepare_cached("SELECT slug, last_seq FROM tenants")?
                    .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as Seq)))?
                    .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn trim_topic(&self, tenant: &str, topic: &str, keep: u64) -> Result<u64, Error> {
        let (tenant, topic) = (tenant.to_string(), topic.to_string());
        self.write(move |tx| {
            let cutoff: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM events WHERE tenant = ? AND topic = ? \
                     ORDER BY seq DESC LIMIT 1 OFFSET ?",
                    params![tenant, topic, keep as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(cutoff) = cutoff else {
                return Ok(0);
            };
            tx.execute(
                "INSERT INTO topics (tenant, topic, trimmed_seq) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = max(trimmed_seq, excluded.trimmed_seq)",
                params![tenant, topic, cutoff],
            )?;
            let done = tx.execute(
                "DELETE FROM events WHERE tenant = ? AND topic = ? AND seq <= ?",
                params![tenant, topic, cutoff],
            )?;
            Ok(done as u64)
        })
        .await
    }

    async fn append_keyed(
        &self,
        key: crate::store::PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<crate::store::Keyed, Error> {
        self.batch.keyed(key, events).await
    }

    async fn keyed_ids(&self, tenant: &str, key: &str) -> Result<Option<Vec<Seq>>, Error> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        let ids: Option<String> = self
            .readers
            .with(move |c| {
                Ok(
                    c.prepare_cached("SELECT ids FROM publish_keys WHERE tenant = ? AND key = ?")?
                        .query_row(params![tenant, key], |r| r.get(0))
                        .optional()?,
                )
            })
            .await?;
        ids.map(|ids| crate::store::batch::stored_ids(&ids))
            .transpose()
    }

    async fn trim_publish_keys(&self, cutoff_ms: i64, source_cutoff_ms: i64) -> Result<u64, Error> {
        self.write(move |tx| {
            let done = tx.execute(
                "DELETE FROM publish_keys WHERE (created_at < ? AND key NOT LIKE 'src %') \
                 OR created_at < ?",
                [cutoff_ms, source_cutoff_ms.min(cutoff_ms)],
            )?;
            Ok(done as u64)
        })
        .await
    }

    async fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, Error> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO topics (tenant, topic, trimmed_seq) \
                 SELECT tenant, topic, max(seq) FROM events WHERE ts < ? GROUP BY tenant, topic \
                 ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = max(trimmed_seq, excluded.trimmed_seq)",
                [cutoff_ms],
            )?;
            let done = tx.execute("DELETE FROM events WHERE ts < ?", [cutoff_ms])?;
            Ok(done as u64)
        })
        .await
    }

    async fn post_message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error> {
        self.batch.message(msg, notes).await
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error> {
        self.batch.mark_read(tenant, user, up_to).await
    }

    async fn messages(
        &self,
        tenant: &str,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Message>, Error> {
        let (tenant, user) = (tenant.to_string(), user.to_string());
        self.readers
            .with(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLS} FROM messages WHERE tenant = ?1 \
                     AND (recipient = ?2 OR sender = ?2) AND id > ?3 ORDER BY id LIMIT ?4"
                ))?
                .query_map(params![tenant, user, after, limit as i64], message_row)?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn unread(&self, tenant: &str, user: &str) -> Result<u64, Error> {
        let (tenant, user) = (tenant.to_string(), user.to_string());
        self.readers.with(move |c| unread(c, &tenant, &user)).await
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        let (name, candidate) = (name.to_string(), candidate.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                params![name, candidate],
            )?;
            Ok(
                tx.query_row("SELECT value FROM secrets WHERE name = ?", [name], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
}
