//! Embedded mode's reads, driven synchronously (rusqlite) on a blocking
//! thread: a replay page of thousands of events crosses threads once,
//! instead of row by row from a database thread. Every other SQLite read
//! (tenants, messages, bids, plugins) takes a connection here too
//! (`Readers::with`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, Row};

use crate::event::{Seq, StoredEvent};
use crate::store::{Error, Page, Retained, TopicState};

/// Idle read connections kept open.
const IDLE: usize = 4;

/// A small pool of read-only connections.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database file (already created and migrated).
    pub(crate) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "cache_size", -16000)?;
        // Pages come from the mapping instead of a read() each, which matters
        // because a connection's page cache is dropped whenever a write
        // commits.
        conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `f` on a read connection, on a blocking thread.
    pub(crate) async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = me.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match taken {
                Some(c) => c,
                None => me.open()?,
            };
            let out = f(&conn);
            let mut idle = me.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("a read thread failed: {e}")))?
    }

    /// `Store::read`: one read transaction for head, topic states and events.
    pub(crate) async fn read(
        self: &Arc<Self>,
        tenant: &str,
        topics: &[String],
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Page, Error> {
        let tenant: Arc<str> = tenant.into();
        let topics = topics.to_vec();
        self.with(move |conn| page(conn, &tenant, &topics, after, limit))
            .await
    }

    /// `Store::range`: every topic's events in `(after, upto]`, in order.
    pub(crate) async fn range(
        self: &Arc<Self>,
        tenant: &str,
        after: Seq,
        upto: Seq,
    ) -> Result<Vec<StoredEvent>, Error> {
        let tenant: Arc<str> = tenant.into();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, topic, type, payload, ts FROM events \
                 WHERE tenant = ? AND seq > ? AND seq <= ? ORDER BY seq",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![&*tenant, after as i64, upto as i64],
                |r| event_row(r, &tenant),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// One read transaction for a tenant's head, the topics' states and (with
/// `after`) up to `limit` of their events above it.
pub(super) fn page(
    conn: &Connection,
    tenant: &Arc<str>,
    topics: &[String],
    after: Option<Seq>,
    limit: usize,
) -> Result<Page, Error> {
    let tx = conn.unchecked_transaction()?;
    let head: Option<i64> = tx
        .prepare_cached("SELECT last_seq FROM tenants WHERE slug = ?")?
        .query_row([&**tenant], |r| r.get(0))
        .optional()?;
    let Some(head) = head else {
        return Err(Error::UnknownTenant(tenant.to_string()));
    };
    let marks = vec!["?"; topics.len()].join(",");
    let args = || std::iter::once(&**tenant).chain(topics.iter().map(String::as_str));
    let states = tx
        .prepare_cached(&format!(
            "SELECT topic, trimmed_seq, retained, retained_seq, retained_ts FROM topics \
             WHERE tenant = ? AND topic IN ({marks})"
        ))?
        .query_map(params_from_iter(args()), topic_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut events = Vec::new();
    if let Some(after) = after {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT seq, topic, type, payload, ts FROM events \
             WHERE tenant = ? AND topic IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?"
        ))?;
        let n = topics.len();
        stmt.raw_bind_parameter(1, &**tenant)?;
        for (i, t) in topics.iter().enumerate() {
            stmt.raw_bind_parameter(i + 2, t)?;
        }
        stmt.raw_bind_parameter(n + 2, after as i64)?;
        stmt.raw_bind_parameter(n + 3, limit as i64)?;
        events.reserve(limit.min(4096));
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            events.push(event_row(row, tenant)?);
        }
    }
    drop(tx);
    Ok(Page {
        events,
        head: head as Seq,
        topics: states,
    })
}

/// A row of `SELECT seq, topic, type, payload, ts` (columns by position:
/// replay decodes many rows, and a lookup by name costs per column).
pub(super) fn event_row(r: &Row<'_>, tenant: &Arc<str>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get::<_, i64>(0)? as Seq,
        tenant: tenant.clone(),
        topic: r.get(1)?,
        kind: r.get(2)?,
        json: r.get(3)?,
        ts: r.get(4)?,
    })
}

fn topic_row(r: &Row<'_>) -> rusqlite::Result<TopicState> {
    let data: Option<String> = r.get(2)?;
    Ok(TopicState {
        topic: r.get(0)?,
        trimmed: r.get::<_, i64>(1)? as Seq,
        retained: match data {
            Some(data) => Some(Retained {
                data,
                seq: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as Seq,
                ts: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
            }),
            None => None,
        },
    })
}
