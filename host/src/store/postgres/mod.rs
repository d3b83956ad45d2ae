//! `PostgresStore`: cluster mode's system of record.
//!
//! The tenant row's `last_seq` is bumped with `UPDATE … RETURNING` inside the
//! append transaction; its row lock is held to commit, so ids are assigned in
//! commit order across every node. A schema can be chosen in the URL
//! (`?options=-csearch_path%3Dname`), which is how tests keep their data apart.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

mod admin;
mod bids;
pub(crate) mod moving;
mod plugins;

use crate::event::{NewEvent, Seq, StoredEvent};
use crate::store::batch::{self, Applied, Batcher, Outcome, Write};
use crate::store::{
    assign_seqs, folded_topics, message_events, retained_writes, tenant_counts, unread_event,
    Commits, ConflictReason, Error, Message, NewMessage, Notification, Page, Retained, Store,
    Tenant, TopicState,
};

/// How long a request waits for a pooled connection (a connection is
/// pinged before it is handed out, so this also bounds that ping): a
/// database that went away, or is cut off and holds every byte, shows up
/// as `store_unavailable` (503) and in `/ready` within seconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one group-commit transaction may run. Past it the batch is
/// abandoned (its connection dropped, so the transaction rolls back unless
/// its commit had already been sent) and its writes are refused with 503
/// `store_unavailable`: without it, a connection that a partition left
/// hanging mid-transaction would hold the batch task, and every write
/// queued behind it, until the operating system gave up on the socket.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Error::unavailable(e),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(ConflictReason::Duplicate(Box::new(e)))
            }
            _ => Error::Database(Box::new(e)),
        }
    }
}

/// Postgres-backed store.
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// Group commit of the domain writes.
    pub(crate) batch: Batcher,
    /// Where committed events go.
    pub(crate) commits: Commits,
    /// The database's name in the placement (`main` for `DATABASE_URL`).
    pub(crate) name: Arc<str>,
    /// Tenants can be moved out of this database: the writes that append
    /// no event take `FOR KEY SHARE` on their tenant's row (`guard`).
    pub(crate) fenced: bool,
}

impl PostgresStore {
    /// Connects and applies migrations: the one database of a deployment.
    pub async fn connect(url: &str) -> Result<PostgresStore, Error> {
        PostgresStore::connect_as(url, crate::store::placed::HOME, false, Commits::default()).await
    }

    /// Connects to the database called `name` in the placement, applying
    /// migrations; `fenced` when tenants can be moved between databases;
    /// committed events go to `commits` (shared by a deployment's databases).
    pub async fn connect_as(
        url: &str,
        name: &str,
        fenced: bool,
        commits: Commits,
    ) -> Result<PostgresStore, Error> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::unavailable(format!("invalid URL of database {name:?}: {e}")))?
            .application_name("switchyard");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        crate::store::migrate::postgres(&pool).await?;
        let name: Arc<str> = name.into();
        let batch = Batcher::start(
            Arc::new(Writer {
                pool: pool.clone(),
                fenced,
                commit_seconds: crate::metrics::STORE_COMMIT_SECONDS.with_label_values(&[&name]),
            }),
            commits.clone(),
        );
        Ok(PostgresStore {
            pool,
            batch,
            commits,
            name,
            fenced,
        })
    }

    /// The database's name in the placement.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Refuses (`Moved`) a write of any of `tenants` that was moved out of this
/// database, holding `FOR KEY SHARE` on their rows to the caller's commit:
/// a move's fence (`FOR UPDATE`) waits for the writes that passed, and the
/// writes after it see `moved_to`. For the writes that append no event (an
/// append's counter bump is its own fence, see `append_tx`).
pub(crate) async fn guard(conn: &mut PgConnection, tenants: &[&str]) -> Result<(), Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT slug, moved_to FROM tenants WHERE slug = ANY($1) ORDER BY slug FOR KEY SHARE",
    )
    .bind(tenants)
    .fetch_all(&mut *conn)
    .await?;
    match rows.into_iter().find(|(_, moved)| moved.is_some()) {
        Some((slug, _)) => Err(Error::Moved(slug)),
        None => Ok(()),
    }
}

/// Runs batches of writes, one transaction at a time per node. The tenants'
/// sequence rows are locked only by the batch's final append, so they are
/// held for a few statements and the commit, not for the whole batch.
struct Writer {
    pool: PgPool,
    /// See `PostgresStore::fenced`.
    fenced: bool,
    /// The database's commit latency.
    commit_seconds: prometheus::Histogram,
}

#[async_trait]
impl batch::Target for Writer {
    async fn run(&self, mut writes: Vec<Write>) -> (Vec<Write>, Result<Vec<Outcome>, Error>) {
        let done = tokio::time::timeout(BATCH_TIMEOUT, self.transaction(&mut writes))
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(format!(
                    "a write transaction did not finish within {} s",
                    BATCH_TIMEOUT.as_secs()
                )))
            });
        (writes, done)
    }
}

impl Writer {
    /// One batch in one transaction.
    async fn transaction(&self, writes: &mut [Write]) -> Result<Vec<Outcome>, Error> {
        let mut tx = self.pool.begin().await?;
        let keys = key_rows(&mut tx, writes).await?;
        let mut applied = Vec::with_capacity(writes.len());
        for w in writes.iter_mut() {
            applied.push(apply(&mut tx, w, self.fenced, &keys).await?);
        }
        let stored = append_tx(&mut tx, &batch::events_of(writes, &applied)).await?;
        let outcomes = batch::split(writes, applied, stored);
        keep_keys(&mut tx, writes, &outcomes).await?;
        let started = std::time::Instant::now();
        tx.commit().await?;
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(outcomes)
    }
}

/// A key's row: `hash`, `ids` (JSON), `ts`, `created_at`.
type KeyRow = (String, String, i64, i64);

/// The stored rows of the batch's keyed writes' keys, in one query (a
/// statement per key made a keyed batch 0.33-0.45x as fast as an
/// unkeyed one in cluster mode: docs/benchmarks.md).
async fn key_rows(
    tx: &mut PgConnection,
    writes: &[Write],
) -> Result<HashMap<(String, String), KeyRow>, Error> {
    let (tenants, keys): (Vec<&str>, Vec<&str>) = writes
        .iter()
        .filter_map(|w| match w {
            Write::Keyed { key, .. } => Some((key.tenant.as_str(), key.key.as_str())),
            _ => None,
        })
        .unzip();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT tenant, key, hash, ids, ts, created_at FROM publish_keys \
         WHERE (tenant, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&tenants)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, k, hash, ids, ts, created)| ((t, k), (hash, ids, ts, created)))
        .collect())
}

/// Writes the idempotency keys of the batch's keyed appends, in one
/// statement. An expired row (created before its write's `since_ms`) is
/// replaced; a live one (another node's write committed meanwhile, whose
/// row lock this waited for) fails the batch, which is then run again and
/// sees the key; two writes of the batch with one key fail it too (a row
/// cannot be written twice in a statement), and they are run one by one.
async fn keep_keys(
    tx: &mut PgConnection,
    writes: &[Write],
    outcomes: &[Outcome],
) -> Result<(), Error> {
    let rows = batch::keyed_rows(writes, outcomes);
    if rows.is_empty() {
        return Ok(());
    }
    let now = crate::event::now_ms();
    let tenants: Vec<&str> = rows.iter().map(|(k, _, _)| k.tenant.as_str()).collect();
    let keys: Vec<&str> = rows.iter().map(|(k, _, _)| k.key.as_str()).collect();
    let hashes: Vec<&str> = rows.iter().map(|(k, _, _)| k.hash.as_str()).collect();
    let ids = rows
        .iter()
        .map(|(_, ids, _)| serde_json::to_string(ids))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let ts: Vec<i64> = rows.iter().map(|(_, _, ts)| *ts).collect();
    let since: Vec<i64> = rows.iter().map(|(k, _, _)| k.since_ms).collect();
    let done = sqlx::query(
        "INSERT INTO publish_keys AS p (tenant, key, hash, ids, ts, created_at) \
         SELECT t, k, h, i, s, $7 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::bigint[], $6::bigint[]) AS u(t, k, h, i, s, since) \
         ON CONFLICT (tenant, key) DO UPDATE SET \
         hash = excluded.hash, ids = excluded.ids, ts = excluded.ts, \
         created_at = excluded.created_at \
         WHERE p.created_at < (SELECT min(v.since) FROM UNNEST($1::text[], $2::text[], $6::bigint[]) \
         AS v(t, k, since) WHERE v.t = excluded.tenant AND v.k = excluded.key)",
    )
    .bind(&tenants)
    .bind(&keys)
    .bind(&hashes)
    .bind(&ids)
    .bind(&ts)
    .bind(&since)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() < rows.len() as u64 {
        // Another node's write took a key meanwhile: the batch is run
        // again and this write sees it.
        return Err(Error::KeyRaced);
    }
    Ok(())
}

/// One write inside a batch's transaction: `Err` fails the batch, an inner
/// `Err` refuses this write alone (it wrote nothing).
async fn apply(
    tx: &mut PgConnection,
    w: &mut Write,
    fenced: bool,
    keys: &HashMap<(String, String), KeyRow>,
) -> Result<Applied, Error> {
    match w {
        Write::Append { .. } => {}
        Write::Keyed { key, repeated, .. } => {
            let row = keys.get(&(key.tenant.clone(), key.key.clone())).cloned();
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
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO messages (tenant, sender, recipient, product_id, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&msg.tenant)
            .bind(&msg.from)
            .bind(&msg.to)
            .bind(&msg.product_id)
            .bind(&msg.body)
            .bind(created_at)
            .fetch_one(&mut *tx)
            .await?;
            let message = Message {
                id,
                from: msg.from.clone(),
                to: msg.to.clone(),
                product_id: msg.product_id.clone(),
                body: msg.body.clone(),
                created_at,
            };
            let unread = unread_in(tx, &msg.tenant, &msg.to).await?;
            *events = message_events(&msg.tenant, &message, notes, unread);
            *stored = Some((message, unread));
        }
        Write::MarkRead {
            tenant,
            user,
            up_to,
            unread,
            events,
            ..
        } => {
            sqlx::query(
                "INSERT INTO message_reads (tenant, user_id, up_to) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, user_id) DO UPDATE \
                 SET up_to = GREATEST(message_reads.up_to, excluded.up_to)",
            )
            .bind(&*tenant)
            .bind(&*user)
            .bind(*up_to)
            .execute(&mut *tx)
            .await?;
            *unread = unread_in(tx, tenant, user).await?;
            *events = vec![unread_event(tenant, user, *unread)];
        }
        Write::Bid { bid, stored, .. } => {
            if fenced {
                guard(tx, &[&bid.tenant]).await?;
            }
            match bids::insert_bid(tx, bid).await? {
                Ok(found) => *stored = Some(found),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        Write::Product { product, .. } => bids::insert_product(tx, product).await?,
        // Cluster rounds lock the product in a transaction of their own
        // (`bids.rs`) and never come through the batch.
        Write::Round { .. } => {
            return Ok(Err(Error::Internal(
                "decision rounds are not batched in cluster mode".into(),
            )))
        }
    }
    Ok(Ok(()))
}

/// Appends inside the caller's transaction: bumps each tenant's counter (its
/// row lock, held to commit, orders ids by commit), inserts the events and
/// updates retained state.
pub(crate) async fn append_tx<E: Borrow<NewEvent> + Sync>(
    tx: &mut PgConnection,
    events: &[E],
) -> Result<Vec<StoredEvent>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let counts = tenant_counts(events);
    let mut lasts = Vec::with_capacity(counts.len());
    for (tenant, n) in &counts {
        // A tenant moved out of this database (`moved_to`) is fenced here:
        // a move's fence waits for this row lock, and a bump after it
        // updates nothing.
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE tenants SET last_seq = last_seq + $1 WHERE slug = $2 AND moved_to IS NULL \
             RETURNING last_seq",
        )
        .bind(n)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        match last {
            Some(last) => lasts.push(last),
            None => return Err(absent(tx, tenant).await),
        }
    }
    let stored = assign_seqs(events, &counts, &lasts, crate::event::now_ms());
    let tenants: Vec<&str> = stored.iter().map(|e| &*e.tenant).collect();
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq as i64).collect();
    let topics: Vec<&str> = stored.iter().map(|e| e.topic.as_str()).collect();
    let kinds: Vec<&str> = stored.iter().map(|e| e.kind.as_str()).collect();
    let payloads: Vec<&str> = stored.iter().map(|e| e.json.as_str()).collect();
    let ts: Vec<i64> = stored.iter().map(|e| e.ts).collect();
    sqlx::query(
        "INSERT INTO events (tenant, seq, topic, type, payload, ts) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])",
    )
    .bind(&tenants)
    .bind(&seqs)
    .bind(&topics)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&ts)
    .execute(&mut *tx)
    .await?;
    // A folded topic's state is read under the tenant counter's row lock,
    // taken above: no other append of the tenant runs until this commits.
    let mut prev = std::collections::HashMap::new();
    for (tenant, topic) in folded_topics(events) {
        let state: Option<Option<String>> =
            sqlx::query_scalar("SELECT retained FROM topics WHERE tenant = $1 AND topic = $2")
                .bind(tenant)
                .bind(topic)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(Some(s)) = state {
            prev.insert((tenant.to_string(), topic.to_string()), s);
        }
    }
    let retained = retained_writes(events, &stored, &prev);
    if !retained.is_empty() {
        let tenants: Vec<&str> = retained.iter().map(|w| w.tenant).collect();
        let topics: Vec<&str> = retained.iter().map(|w| w.topic).collect();
        let data: Vec<&str> = retained.iter().map(|w| &*w.data).collect();
        let seqs: Vec<i64> = retained.iter().map(|w| w.seq as i64).collect();
        let ts: Vec<i64> = retained.iter().map(|w| w.ts).collect();
        sqlx::query(
            "INSERT INTO topics (tenant, topic, retained, retained_seq, retained_ts) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (tenant, topic) DO UPDATE SET \
             retained = excluded.retained, retained_seq = excluded.retained_seq, \
             retained_ts = excluded.retained_ts",
        )
        .bind(&tenants)
        .bind(&topics)
        .bind(&data)
        .bind(&seqs)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
    }
    Ok(stored)
}

/// Why a tenant's row was not there to update: `Moved` (its row is a
/// tombstone) or `UnknownTenant`.
async fn absent(conn: &mut PgConnection, tenant: &str) -> Error {
    let moved: Result<Option<Option<String>>, sqlx::Error> =
        sqlx::query_scalar("SELECT moved_to FROM tenants WHERE slug = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await;
    match moved {
        Ok(Some(Some(_))) => Error::Moved(tenant.to_string()),
        Ok(_) => Error::UnknownTenant(tenant.to_string()),
        Err(e) => e.into(),
    }
}

fn event_row(row: &PgRow, tenant: &Arc<str>) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        seq: row.try_get::<i64, _>("seq")? as Seq,
        tenant: tenant.clone(),
        topic: row.try_get("topic")?,
        kind: row.try_get("type")?,
        json: row.try_get("payload")?,
        ts: row.try_get("ts")?,
    })
}

fn topic_row(row: &PgRow) -> Result<TopicState, sqlx::Error> {
    let data: Option<String> = row.try_get("retained")?;
    Ok(TopicState {
        topic: row.try_get("topic")?,
        trimmed: row.try_get::<i64, _>("trimmed_seq")? as Seq,
        retained: match data {
            Some(data) => Some(Retained {
                data,
                seq: row.try_get::<Option<i64>, _>("retained_seq")?.unwrap_or(0) as Seq,
                ts: row.try_get::<Option<i64>, _>("retained_ts")?.unwrap_or(0),
            }),
            None => None,
        },
    })
}

/// A row with a message's columns (by name).
pub(crate) fn message_row(r: &PgRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: r.try_get("id")?,
        from: r.try_get("sender")?,
        to: r.try_get("recipient")?,
        product_id: r.try_get("product_id")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

fn tenant_row(r: &PgRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn commits(&self) -> &Commits {
        &self.commits
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, Error> {
        let created_at = crate::event::now_ms();
        sqlx::query("INSERT INTO tenants (slug, name, created_at) VALUES ($1, $2, $3)")
            .bind(slug)
            .bind(name)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(ConflictReason::TenantExists(slug.into())),
                other => other,
            })?;
        Ok(Tenant {
            slug: slug.into(),
            name: name.into(),
            created_at,
        })
    }

    async fn tenant(&self, slug: &str) -> Result<Option<Tenant>, Error> {
        let row = sqlx::query("SELECT slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(tenant_row).transpose()?)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        let rows = sqlx::query(
            "SELECT slug, name, created_at FROM tenants WHERE moved_at IS NULL ORDER BY slug",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(tenant_row).collect::<Result<_, _>>()?)
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
        let mut tx = self.pool.begin().await?;
        // One snapshot for head, topic state and events.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let head: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM tenants WHERE slug = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(head) = head else {
            return Err(Error::UnknownTenant(tenant.into()));
        };
        let states = sqlx::query(
            "SELECT topic, trimmed_seq, retained, retained_seq, retained_ts FROM topics \
             WHERE tenant = $1 AND topic = ANY($2)",
        )
        .bind(tenant)
        .bind(topics)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(topic_row)
        .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::new();
        if let Some(after) = after {
            let rows = sqlx::query(
                "SELECT seq, topic, type, payload, ts FROM events \
                 WHERE tenant = $1 AND topic = ANY($2) AND seq > $3 ORDER BY seq LIMIT $4",
            )
            .bind(tenant)
            .bind(topics)
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            let tenant: Arc<str> = tenant.into();
            events = rows
                .iter()
                .map(|r| event_row(r, &tenant))
                .collect::<Result<_, _>>()?;
        }
        tx.commit().await?;
        Ok(Page {
            events,
            head: head as Seq,
            topics: states,
        })
    }

    async fn latest(&self, tenant: &str, topic: &str, limit: usize) -> Result<Page, Error> {
        let mut page = self.read(tenant, &[topic.to_string()], None, 0).await?;
        let rows = sqlx::query(
            "SELECT seq, topic, type, payload, ts FROM events \
             WHERE tenant = $1 AND topic = $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(topic)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(
            "SELECT seq, topic, type, payload, ts FROM events \
             WHERE tenant = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(tenant)
        .bind(after as i64)
        .bind(upto as i64)
        .fetch_all(&self.pool)
        .await?;
        if self.fenced && (rows.len() as u64) < upto.saturating_sub(after) {
            // Short: trimmed, or the tenant is not (all) here any more. A
            // moved tenant's copy here is whole up to the head it was moved
            // at; past that, or once the copy is gone, the caller asks where
            // the tenant is now.
            let row: Option<(i64, Option<String>)> =
                sqlx::query_as("SELECT last_seq, moved_to FROM tenants WHERE slug = $1")
                    .bind(tenant)
                    .fetch_optional(&self.pool)
                    .await?;
            match row {
                None => return Err(Error::UnknownTenant(tenant.into())),
                Some((head, Some(_))) if upto > head as Seq => {
                    return Err(Error::Moved(tenant.into()))
                }
                Some(_) => {}
            }
        }
        let t: Arc<str> = tenant.into();
        Ok(rows
            .iter()
            .map(|r| event_row(r, &t))
            .collect::<Result<_, _>>()?)
    }

    async fn heads(&self) -> Result<Vec<(String, Seq)>, Error> {
        let rows = sqlx::query("SELECT slug, last_seq FROM tenants WHERE moved_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("slug")?, r.try_get::<i64, _>("last_seq")? as Seq)))
            .collect()
    }

    async fn trim_topic(&self, tenant: &str, topic: &str, keep: u64) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await?;
        let cutoff: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM events WHERE tenant = $1 AND topic = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3",
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
            "INSERT INTO topics (tenant, topic, trimmed_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = GREATEST(topics.trimmed_seq, excluded.trimmed_seq)",
        )
        .bind(tenant)
        .bind(topic)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM events WHERE tenant = $1 AND topic = $2 AND seq <= $3")
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
        key: crate::store::PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<crate::store::Keyed, Error> {
        self.batch.keyed(key, events).await
    }

    async fn keyed_ids(&self, tenant: &str, key: &str) -> Result<Option<Vec<Seq>>, Error> {
        let ids: Option<String> =
            sqlx::query_scalar("SELECT ids FROM publish_keys WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        ids.map(|ids| batch::stored_ids(&ids)).transpose()
    }

    async fn trim_publish_keys(&self, cutoff_ms: i64, source_cutoff_ms: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM publish_keys WHERE (created_at < $1 AND key NOT LIKE 'src %') \
             OR created_at < $2",
        )
        .bind(cutoff_ms)
        .bind(source_cutoff_ms.min(cutoff_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO topics (tenant, topic, trimmed_seq) \
             SELECT tenant, topic, max(seq) FROM events WHERE ts < $1 GROUP BY tenant, topic \
             ON CONFLICT (tenant, topic) DO UPDATE SET trimmed_seq = GREATEST(topics.trimmed_seq, excluded.trimmed_seq)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM events WHERE ts < $1")
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
        let rows = sqlx::query(
            "SELECT id, sender, recipient, product_id, body, created_at FROM messages \
             WHERE tenant = $1 AND (recipient = $2 OR sender = $2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant)
        .bind(user)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(message_row).collect::<Result<_, _>>()?)
    }

    async fn unread(&self, tenant: &str, user: &str) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await?;
        unread_in(&mut conn, tenant, user).await
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

async fn unread_in(conn: &mut PgConnection, tenant: &str, user: &str) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant = $1 AND recipient = $2 AND id > \
         coalesce((SELECT up_to FROM message_reads WHERE tenant = $1 AND user_id = $2), 0)",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}
