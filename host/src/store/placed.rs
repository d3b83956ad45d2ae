//! Tenants placed on several Postgres databases (`SWITCHYARD_DATABASES`).
//!
//! The home database (`DATABASE_URL`, called `main`) keeps the placement:
//! one row per tenant naming the database that holds everything of it (its
//! counter row, events, topics, messages, products, bids, plugin slots and
//! versions, idempotency keys, recordings). The home database also keeps
//! what belongs to the deployment (the shared secret, the audit log) and
//! holds tenants like any other. Every node opens every database and routes
//! each call by its tenant; a tenant's ids come from its counter row in its
//! database, so the per-tenant order and the gapless ids hold as with one
//! database, and one tenant's writes are bounded by one database (its
//! counter row), while adding databases adds write capacity for the rest.
//!
//! A node caches the placement; a move notifies every node (`LISTEN` on the
//! home database) and fences the tenant in its old database, so a node that
//! has not heard yet is refused there (`Moved`, or `UnknownTenant` once the
//! old copy is gone) and asks the home database again: every call here runs
//! again where the tenant is, waiting up to [`MOVE_WAIT`] for a move to
//! finish (`tenant_moving`, 503, past that).
//!
//! Calls by a product's or bid's id (which do not name the tenant) ask the
//! database that answered for that id before, else every database at once,
//! and take the answer of the database its tenant is placed in (a moved
//! tenant's old copy stays for [`GRACE`]). Calls about every tenant (heads,
//! trims, the due products, the plugin rows) ask every database.
//!
//! An append of several tenants of different databases is one transaction
//! per database, not one in all: each tenant's events are still all or
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use sqlx::postgres::PgListener;

use super::admin::{AdminStore, AuditEntry, NewAudit, TopicRow};
use super::bids::{BidStore, RoundInput, RoundSummary, RoundWrite};
use super::plugins::{
    PluginStore, RecordedMessage, RecordedRequest, Refusal, SlotChange, SlotRow, UploadRow,
};
use super::postgres::moving::{self, Copied};
use super::postgres::PostgresStore;
use super::{
    Commits, ConflictReason, Error, Keyed, Message, NewMessage, Notification, Page, PublishKey,
    Store, Tenant,
};
use crate::bids::{Bid, Product};
use crate::event::{NewEvent, Seq, StoredEvent};

/// The home database's name in the placement.
pub const HOME: &str = "main";

/// How long a call waits for its tenant's move to finish before it is
/// answered `tenant_moving` (503, retry).
pub const MOVE_WAIT: Duration = Duration::from_secs(10);

/// How long a moved tenant's old copy stays (for the nodes that read it
/// before they heard of the move) before it is removed.
pub const GRACE: Duration = Duration::from_secs(10);

/// The home database's notification channel: a tenant's placement changed.
const CHANNEL: &str = "switchyard_placement";

/// How often a call waiting for a move reads the placement when no
/// notification came.
const RECHECK: Duration = Duration::from_millis(250);

/// Most product and bid ids whose database is remembered.
const IDS_KEPT: usize = 100_000;

/// How new tenants are placed (`SWITCHYARD_TENANT_PLACEMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// On the database with the fewest tenants (the first such, in the
    /// order of the configuration).
    #[default]
    LeastTenants,
    /// By a hash of the slug (`crc32 mod databases`): where a tenant goes
    /// is known without asking, and stays so while the list is unchanged.
    Hash,
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Rule, String> {
        match s {
            "least-tenants" => Ok(Rule::LeastTenants),
            "hash" => Ok(Rule::Hash),
            other => Err(format!(
                "SWITCHYARD_TENANT_PLACEMENT must be least-tenants or hash, got {other:?}"
            )),
        }
    }
}

/// What a move did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MoveReport {
    /// The tenant.
    pub tenant: String,
    /// Where it was.
    pub from: String,
    /// Where it is.
    pub to: String,
    /// Its head (highest id) when it was fenced: the ids go on from there.
    pub head: Seq,
    /// Events copied.
    pub events: u64,
    /// Rows copied in all.
    pub rows: u64,
    /// How long its writes waited (fence to flip), in ms.
    pub paused_ms: u64,
    /// How long the whole move took (its events copied while its writes
    /// went on, then the pause), in ms.
    pub took_ms: u64,
}

/// Refuses to run on the home database alone when its placement puts
/// tenants on other databases (a node whose `SWITCHYARD_DATABASES` lacks
/// them would answer that those tenants do not exist).
pub async fn check_alone(home: &PostgresStore) -> Result<(), Error> {
    let elsewhere: Option<String> = sqlx::query_scalar(
        "SELECT db FROM placements WHERE db <> $1 \
         UNION SELECT moving_to FROM placements WHERE moving_to IS NOT NULL LIMIT 1",
    )
    .bind(HOME)
    .fetch_optional(&home.pool)
    .await?;
    match elsewhere {
        Some(db) => Err(lacking(&db)),
        None => Ok(()),
    }
}

/// Where a tenant is placed.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Its database (an index into `dbs`).
    db: usize,
    /// The database a move of it is running to (or stopped half-way to).
    moving_to: Option<usize>,
}

/// A node lacking a database the placement names: it would answer that
/// the database's tenants do not exist.
fn lacking(name: &str) -> Error {
    Error::Internal(format!(
        "the placement names database {name:?}, which SWITCHYARD_DATABASES does not list \
         (every node must list every database)"
    ))
}

/// The stores of every database behind one `Store` (and `BidStore`,
/// `PluginStore`, `AdminStore`), routing by tenant.
pub struct Placed {
    /// The databases: the home one first, then `SWITCHYARD_DATABASES`'.
    dbs: Vec<Arc<PostgresStore>>,
    rule: Rule,
    /// Tenant → database, as last read from the home database.
    places: RwLock<HashMap<String, usize>>,
    /// Product or bid id → the database that last answered for it.
    ids: Mutex<HashMap<String, usize>>,
    /// Told whenever a placement changes (here or, by `NOTIFY`, elsewhere):
    /// the calls waiting for a move wake.
    changed: tokio::sync::Notify,
    commits: Commits,
}

/// Runs `$call` (with `$s`, a `&PostgresStore`) on the database of
/// `$tenant`, again where the tenant is when that database refused it as
/// moved (or no longer knows it), within [`MOVE_WAIT`].
macro_rules! routed {
    ($self:ident, $tenant:expr, |$s:ident| $call:expr) => {{
        let tenant: &str = $tenant;
        let deadline = Instant::now() + MOVE_WAIT;
        loop {
            let (db, $s) = $self.db_of(tenant).await?;
            match $call.await {
                Err(e @ (Error::Moved(_) | Error::UnknownTenant(_))) => {
                    if !$self.relocated(tenant, db, &e, deadline).await? {
                        break Err(e);
                    }
                }
                r => break r,
            }
        }
    }};
}

/// Runs `$call` (with `$s`) for an id that does not name its tenant: on the
/// database that last answered for it, else on every database, taking the
/// answer from the database where its tenant (`$tenant` of the answer) is
/// placed.
macro_rules! by_id {
    ($self:ident, $id:expr, |$s:ident| $call:expr, |$v:ident| $tenant:expr) => {{
        let id: &str = $id;
        let mut found = None;
        let known = $self.ids.lock().expect("ids lock").get(id).copied();
        if let Some(db) = known {
            let $s = &*$self.dbs[db];
            if let Some($v) = $call.await? {
                if $self.db_of($tenant).await?.0 == db {
                    found = Some($v);
                }
            }
        }
        if found.is_none() {
            let answers = join_all($self.dbs.iter().map(|$s| async move { $call.await })).await;
            for (db, answer) in answers.into_iter().enumerate() {
                if let Some($v) = answer? {
                    if $self.db_of($tenant).await?.0 == db {
                        $self.remember(id, db);
                        found = Some($v);
                        break;
                    }
                }
            }
        }
        Ok(found)
    }};
}

impl Placed {
    /// Opens the home database and the others (`(name, url)`), applying
    /// migrations to each; places the home database's unplaced tenants
    /// there; refuses a placement that names a database not configured.
    pub async fn open(
        home_url: &str,
        others: &[(String, String)],
        rule: Rule,
    ) -> Result<Arc<Placed>, Error> {
        let commits = Commits::default();
        let mut dbs = vec![Arc::new(
            PostgresStore::connect_as(home_url, HOME, true, commits.clone()).await?,
        )];
        for (name, url) in others {
            dbs.push(Arc::new(
                PostgresStore::connect_as(url, name, true, commits.clone()).await?,
            ));
        }
        let home = &dbs[0].pool;
        sqlx::query(
            "INSERT INTO placements (tenant, db, changed_at) \
             SELECT slug, $1, $2 FROM tenants WHERE moved_at IS NULL ON CONFLICT DO NOTHING",
        )
        .bind(HOME)
        .bind(crate::event::now_ms())
        .execute(home)
        .await?;
        let named: Vec<String> = sqlx::query_scalar(
            "SELECT db FROM placements UNION SELECT moving_to FROM placements \
             WHERE moving_to IS NOT NULL",
        )
        .fetch_all(home)
        .await?;
        if let Some(missing) = named
            .iter()
            .find(|n| !dbs.iter().any(|d| d.name() == n.as_str()))
        {
            return Err(lacking(missing));
        }
        let halted: Vec<String> =
            sqlx::query_scalar("SELECT tenant FROM placements WHERE moving_to IS NOT NULL")
                .fetch_all(home)
                .await?;
        if !halted.is_empty() {
            tracing::warn!(
                tenants = ?halted,
                "moves that stopped half-way: their tenants' writes wait; run each move again \
                 (or move it back to where it is) to finish or undo it"
            );
        }
        let placed = Arc::new(Placed {
            dbs,
            rule,
            places: RwLock::new(HashMap::new()),
            ids: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            commits,
        });
        tokio::spawn(listen(Arc::downgrade(&placed)));
        Ok(placed)
    }

    /// The databases, the home one first.
    pub fn databases(&self) -> &[Arc<PostgresStore>] {
        &self.dbs
    }

    /// The database called `name`.
    fn index(&self, name: &str) -> Option<usize> {
        self.dbs.iter().position(|d| d.name() == name)
    }

    /// Tenants placed on each database, in the configuration's order.
    pub async fn tenant_counts(&self) -> Result<Vec<(String, u64)>, Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT db, count(*) FROM placements GROUP BY db")
                .fetch_all(&self.dbs[0].pool)
                .await?;
        Ok(self
            .dbs
            .iter()
            .map(|d| {
                let n = rows
                    .iter()
                    .find(|(db, _)| db == d.name())
                    .map_or(0, |(_, n)| *n as u64);
                (d.name().to_string(), n)
            })
            .collect())
    }

    /// Where `tenant` is placed, read from the home database (`None`: not
    /// placed, so not a tenant).
    async fn place(&self, tenant: &str) -> Result<Option<Place>, Error> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT db, moving_to FROM placements WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.dbs[0].pool)
                .await?;
        let Some((name, moving_to)) = row else {
            return Ok(None);
        };
        let db = self.index(&name).ok_or_else(|| lacking(&name))?;
        let moving_to = match moving_to {
            Some(n) => Some(self.index(&n).ok_or_else(|| lacking(&n))?),
            None => None,
        };
        self.places
            .write()
            .expect("places lock")
            .insert(tenant.to_string(), db);
        Ok(Some(Place { db, moving_to }))
    }

    /// The database of `tenant` (the home database for one not placed,
    /// which then answers that it does not know it).
    async fn db_of(&self, tenant: &str) -> Result<(usize, &PostgresStore), Error> {
        let cached = self
            .places
            .read()
            .expect("places lock")
            .get(tenant)
            .copied();
        let db = match cached {
            Some(db) => db,
            None => self.place(tenant).await?.map_or(0, |p| p.db),
        };
        Ok((db, &self.dbs[db]))
    }

    /// After `err` from database `was` about `tenant`: waits, until
    /// `deadline`, for the placement to name another database. `true`: run
    /// the call again (there); `false`: `err` stands.
    async fn relocated(
        &self,
        tenant: &str,
        was: usize,
        err: &Error,
        deadline: Instant,
    ) -> Result<bool, Error> {
        loop {
            // Armed before the read, so a flip between the two wakes it.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.place(tenant).await? {
                Some(p) if p.db != was => return Ok(true),
                Some(p) if p.moving_to.is_some() || matches!(err, Error::Moved(_)) => {}
                _ => return Ok(false),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Woken by the flip's notification; read again now and then
            // all the same (a notification can be missed while the
            // listener reconnects), not every few ms by every waiting call.
            let _ = tokio::time::timeout(RECHECK.min(deadline - now), changed).await;
        }
    }

    /// Remembers the database that answered for a product or bid id.
    fn remember(&self, id: &str, db: usize) {
        let mut ids = self.ids.lock().expect("ids lock");
        if ids.len() >= IDS_KEPT {
            ids.clear();
        }
        ids.insert(id.to_string(), db);
    }

    /// Forgets a tenant's cached placement (another node moved it).
    fn forget(&self, tenant: &str) {
        self.places.write().expect("places lock").remove(tenant);
    }

    /// The database a new tenant goes to by the rule.
    async fn choose(&self, slug: &str) -> Result<usize, Error> {
        Ok(match self.rule {
            Rule::Hash => (crc32fast::hash(slug.as_bytes()) as usize) % self.dbs.len(),
            Rule::LeastTenants => {
                let counts = self.tenant_counts().await?;
                counts
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, (_, n))| (*n, *i))
                    .map_or(0, |(i, _)| i)
            }
        })
    }

    /// Creates a tenant on database `on` (by the rule when `None`).
    pub async fn create_tenant_on(
        &self,
        slug: &str,
        name: &str,
        on: Option<&str>,
    ) -> Result<Tenant, Error> {
        let chosen = match on {
            Some(n) => self
                .index(n)
                .ok_or_else(|| Error::Conflict(ConflictReason::UnknownDatabase(n.to_string())))?,
            None => self.choose(slug).await?,
        };
        let placed: Option<String> = sqlx::query_scalar(
            "INSERT INTO placements (tenant, db, changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING RETURNING db",
        )
        .bind(slug)
        .bind(self.dbs[chosen].name())
        .bind(crate::event::now_ms())
        .fetch_optional(&self.dbs[0].pool)
        .await?;
        let db = match placed {
            Some(_) => chosen,
            // Placed before: it exists, or a node stopped between placing
            // it and creating it (then it is created where it was placed).
            None => {
                let p = self.place(slug).await?.map_or(chosen, |p| p.db);
                if self.dbs[p].tenant(slug).await?.is_some() {
                    return Err(Error::Conflict(ConflictReason::TenantExists(slug.into())));
                }
                p
            }
        };
        self.places
            .write()
            .expect("places lock")
            .insert(slug.to_string(), db);
        self.dbs[db].create_tenant(slug, name).await
    }

    /// Moves `tenant` to database `to` (see `postgres/moving.rs` for the
    /// steps): its writes wait from the fence to the flip, its reads go on,
    /// its ids go on from the same head. Run again after a failure, it
    /// finishes the move; to where the tenant is, it undoes a move that
    /// stopped half-way.
    pub async fn move_tenant(&self, tenant: &str, to: &str) -> Result<MoveReport, Error> {
        let target = self
            .index(to)
            .ok_or_else(|| Error::Conflict(ConflictReason::UnknownDatabase(to.to_string())))?;
        let home = &self.dbs[0].pool;
        // One move of a tenant at a time, on any node: a session lock on a
        // connection held for the move (released if this node dies).
        let mut lock = home.acquire().await?;
        let key = format!("switchyard:move:{tenant}");
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&key)
            .fetch_one(&mut *lock)
            .await?;
        if !locked {
            return Err(Error::Conflict(ConflictReason::MoveRunning(tenant.into())));
        }
        let result = self.move_locked(tenant, target).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(&key)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn move_locked(&self, tenant: &str, target: usize) -> Result<MoveReport, Error> {
        let home = &self.dbs[0].pool;
        let Some(place) = self.place(tenant).await? else {
            return Err(Error::UnknownTenant(tenant.into()));
        };
        let (from, to) = (&self.dbs[place.db], &self.dbs[target]);
        let mut report = MoveReport {
            tenant: tenant.into(),
            from: from.name().into(),
            to: to.name().into(),
            head: 0,
            events: 0,
            rows: 0,
            paused_ms: 0,
            took_ms: 0,
        };
        // A move that stopped half-way to another database may have left
        // its copy there (whole, once its copy committed): it goes.
        if let Some(halted) = place.moving_to.filter(|&d| d != target && d != place.db) {
            moving::discard(&self.dbs[halted].pool, tenant).await?;
        }
        if place.db == target {
            if place.moving_to.is_some() {
                // Undo a move that stopped half-way.
                moving::unfence(&from.pool, tenant).await?;
                self.set_place(tenant, target).await?;
            }
            return Ok(report);
        }
        let began = Instant::now();
        sqlx::query("UPDATE placements SET moving_to = $2, changed_at = $3 WHERE tenant = $1")
            .bind(tenant)
            .bind(to.name())
            .bind(crate::event::now_ms())
            .execute(home)
            .await?;
        let mut started = Instant::now();
        let copied: Result<Copied, Error> = async {
            let pre = moving::precopy(&from.pool, &to.pool, tenant).await?;
            started = Instant::now();
            moving::fence(&from.pool, tenant, to.name()).await?;
            let copied = moving::copy(&from.pool, &to.pool, tenant, pre).await?;
            moving::left(&from.pool, tenant).await?;
            Ok(copied)
        }
        .await;
        let copied = match copied {
            Ok(c) => c,
            Err(e) => {
                // Give the tenant back to its database.
                let undo = async {
                    moving::discard(&to.pool, tenant).await?;
                    moving::unfence(&from.pool, tenant).await?;
                    self.set_place(tenant, place.db).await
                };
                if let Err(u) = undo.await {
                    tracing::error!(tenant, error = %u, "a failed move could not be undone: run it again");
                }
                return Err(e);
            }
        };
        self.set_place(tenant, target).await?;
        report.paused_ms = started.elapsed().as_millis() as u64;
        report.took_ms = began.elapsed().as_millis() as u64;
        report.head = copied.head;
        report.events = copied.events;
        report.rows = copied.rows;
        tracing::info!(
            tenant,
            from = %report.from,
            to = %report.to,
            events = copied.events,
            paused_ms = report.paused_ms,
            "tenant moved"
        );
        let old = from.pool.clone();
        let slug = tenant.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(GRACE).await;
            if let Err(e) = moving::purge(&old, &slug).await {
                tracing::warn!(tenant = %slug, error = %e, "the old copy of a moved tenant stays; the next move to that database replaces it");
            }
        });
        Ok(report)
    }

    /// Places `tenant` on database `db` (no move running) and tells every
    /// node.
    async fn set_place(&self, tenant: &str, db: usize) -> Result<(), Error> {
        let mut tx = self.dbs[0].pool.begin().await?;
        sqlx::query(
            "UPDATE placements SET db = $2, moving_to = NULL, changed_at = $3 WHERE tenant = $1",
        )
        .bind(tenant)
        .bind(self.dbs[db].name())
        .bind(crate::event::now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.places
            .write()
            .expect("places lock")
            .insert(tenant.to_string(), db);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Every database's answer to `call`, in order.
    async fn each<T, F, Fut>(&self, call: F) -> Result<Vec<T>, Error>
    where
        F: Fn(Arc<PostgresStore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        join_all(self.dbs.iter().map(|d| call(d.clone())))
            .await
            .into_iter()
            .collect()
    }

    /// Appends the events of one tenant. Each try takes a copy (a try
    /// refused as moved hands nothing back): only with several databases.
    async fn append_one(
        &self,
        tenant: &str,
        events: &[NewEvent],
    ) -> Result<Vec<StoredEvent>, Error> {
        routed!(self, tenant, |s| s.append(events.to_vec()))
    }
}

/// Forgets the placements other nodes changed (`LISTEN` on the home
/// database); everything, when the listener reconnects (it may have missed
/// some).
async fn listen(placed: Weak<Placed>) {
    loop {
        let Some(pool) = placed.upgrade().map(|p| p.dbs[0].pool.clone()) else {
            return;
        };
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for placement changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        drop(pool);
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for placement changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            let Some(p) = placed.upgrade() else {
                return;
            };
            p.places.write().expect("places lock").clear();
            drop(p);
            // `None`: the connection was lost (the next call reconnects).
            while let Ok(Some(n)) = listener.try_recv().await {
                let Some(p) = placed.upgrade() else {
                    return;
                };
                p.forget(n.payload());
                p.changed.notify_waiters();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait]
impl Store for Placed {
    async fn ping(&self) -> Result<(), Error> {
        self.each(|d| async move { d.ping().await })
            .await
            .map(|_| ())
    }

    fn commits(&self) -> &Commits {
        &self.commits
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, Error> {
        self.create_tenant_on(slug, name, None).await
    }

    async fn tenant(&self, slug: &str) -> Result<Option<Tenant>, Error> {
        let (db, s) = self.db_of(slug).await?;
        if let Some(t) = s.tenant(slug).await? {
            return Ok(Some(t));
        }
        // Moved meanwhile?
        match self.place(slug).await? {
            Some(p) if p.db != db => self.dbs[p.db].tenant(slug).await,
            _ => Ok(None),
        }
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        let mut all: Vec<Tenant> = self
            .each(|d| async move { d.tenants().await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| a.slug.cmp(&b.slug));
        all.dedup_by(|a, b| a.slug == b.slug);
        Ok(all)
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, Error> {
        let Some(first) = events.first().map(|e| e.tenant.clone()) else {
            return Ok(Vec::new());
        };
        if events.iter().all(|e| e.tenant == first) {
            return self.append_one(&first, &events).await;
        }
        // Several tenants: one append per tenant, at once; the answer in
        // the input's order.
        let mut groups: Vec<(String, Vec<usize>, Vec<NewEvent>)> = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            match groups.iter_mut().find(|(t, _, _)| *t == e.tenant) {
                Some((_, at, es)) => {
                    at.push(i);
                    es.push(e);
                }
                None => groups.push((e.tenant.clone(), vec![i], vec![e])),
            }
        }
        let n: usize = groups.iter().map(|(_, at, _)| at.len()).sum();
        let (places, appends): (Vec<_>, Vec<_>) =
            groups.into_iter().map(|(t, at, es)| (at, (t, es))).unzip();
        let stored = join_all(appends.iter().map(|(t, es)| self.append_one(t, es))).await;
        let mut out: Vec<Option<StoredEvent>> = vec![None; n];
        for (at, result) in places.iter().zip(stored) {
            for (i, e) in at.iter().zip(result?) {
                out[*i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| Error::Internal("an append answered fewer events".into())))
            .collect()
    }

    async fn read(
        &self,
        tenant: &str,
        topics: &[String],
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Page, Error> {
        routed!(self, tenant, |s| s.read(tenant, topics, after, limit))
    }

    async fn latest(&self, tenant: &str, topic: &str, limit: usize) -> Result<Page, Error> {
        routed!(self, tenant, |s| s.latest(tenant, topic, limit))
    }

    async fn range(&self, tenant: &str, after: Seq, upto: Seq) -> Result<Vec<StoredEvent>, Error> {
        routed!(self, tenant, |s| s.range(tenant, after, upto))
    }

    async fn heads(&self) -> Result<Vec<(String, Seq)>, Error> {
        // A tenant in two databases (for the moment between a move's copy
        // and its old copy being marked old) has the same head in both.
        let mut heads: HashMap<String, Seq> = HashMap::new();
        for (tenant, head) in self
            .each(|d| async move { d.heads().await })
            .await?
            .into_iter()
            .flatten()
        {
            let h = heads.entry(tenant).or_default();
            *h = (*h).max(head);
        }
        Ok(heads.into_iter().collect())
    }

    async fn trim_topic(&self, tenant: &str, topic: &str, keep: u64) -> Result<u64, Error> {
        routed!(self, tenant, |s| s.trim_topic(tenant, topic, keep))
    }

    async fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, Error> {
        Ok(self
            .each(|d| async move { d.trim_older_than(cutoff_ms).await })
            .await?
            .into_iter()
            .sum())
    }

    async fn append_keyed(&self, key: PublishKey, events: Vec<NewEvent>) -> Result<Keyed, Error> {
        let tenant = key.tenant.clone();
        routed!(self, &tenant, |s| s
            .append_keyed(key.clone(), events.clone()))
    }

    async fn keyed_ids(&self, tenant: &str, key: &str) -> Result<Option<Vec<Seq>>, Error> {
        routed!(self, tenant, |s| s.keyed_ids(tenant, key))
    }

    async fn trim_publish_keys(&self, cutoff_ms: i64, source_cutoff_ms: i64) -> Result<u64, Error> {
        Ok(self
            .each(|d| async move { d.trim_publish_keys(cutoff_ms, source_cutoff_ms).await })
            .await?
            .into_iter()
            .sum())
    }

    async fn post_message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error> {
        routed!(self, &msg.tenant, |s| s.post_message(msg, notes))
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error> {
        routed!(self, tenant, |s| s.mark_read(tenant, user, up_to))
    }

    async fn messages(
        &self,
        tenant: &str,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Message>, Error> {
        routed!(self, tenant, |s| s.messages(tenant, user, after, limit))
    }

    async fn unread(&self, tenant: &str, user: &str) -> Result<u64, Error> {
        routed!(self, tenant, |s| s.unread(tenant, user))
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        self.dbs[0].secret(name, candidate).await
    }
}

#[async_trait]
impl BidStore for Placed {
    async fn create_product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error> {
        let events = routed!(self, &p.tenant, |s| s.create_product(p))?;
        let (db, _) = self.db_of(&p.tenant).await?;
        self.remember(&p.id, db);
        Ok(events)
    }

    async fn product(&self, id: &str) -> Result<Option<Product>, Error> {
        by_id!(self, id, |s| s.product(id), |p| &p.tenant)
    }

    async fn submit_bid(&self, bid: &Bid) -> Result<(Bid, bool), Error> {
        let stored = routed!(self, &bid.tenant, |s| s.submit_bid(bid))?;
        let (db, _) = self.db_of(&bid.tenant).await?;
        self.remember(&stored.0.id, db);
        Ok(stored)
    }

    async fn bid(&self, id: &str) -> Result<Option<Bid>, Error> {
        by_id!(self, id, |s| s.bid(id), |b| &b.tenant)
    }

    async fn read_round(
        &self,
        product_id: &str,
        limit: usize,
    ) -> Result<Option<RoundInput>, Error> {
        by_id!(self, product_id, |s| s.read_round(product_id, limit), |r| {
            &r.product.tenant
        })
    }

    async fn commit_round(&self, write: RoundWrite) -> Result<Option<RoundSummary>, Error> {
        let tenant = write.round.product.tenant.clone();
        let (db, s) = self.db_of(&tenant).await?;
        match s.commit_round(write).await {
            // Moved since its read: decided again from a read where it is
            // now, once the move is done.
            Err(e @ (Error::Moved(_) | Error::UnknownTenant(_))) => {
                if self
                    .relocated(&tenant, db, &e, Instant::now() + MOVE_WAIT)
                    .await?
                {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    async fn due(&self, queued_before: i64, ended_before: i64) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = self
            .each(|d| async move { d.due(queued_before, ended_before).await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn queued(&self) -> Result<(u64, Option<i64>), Error> {
        let each = self.each(|d| async move { d.queued().await }).await?;
        Ok((
            each.iter().map(|(n, _)| n).sum(),
            each.iter().filter_map(|(_, oldest)| *oldest).min(),
        ))
    }

    async fn decided(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Bid, String)>, Error> {
        if let Some(t) = tenant {
            return routed!(self, t, |s| s.decided(Some(t), limit));
        }
        let mut all: Vec<(Bid, String)> = self
            .each(|d| async move { d.decided(None, limit).await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by_key(|(b, _)| b.decided_at);
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }
}

#[async_trait]
impl PluginStore for Placed {
    async fn recorded_messages(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RecordedMessage>, Error> {
        if let Some(t) = tenant {
            return routed!(self, t, |s| s.recorded_messages(Some(t), limit));
        }
        let mut all: Vec<RecordedMessage> = self
            .each(|d| async move { d.recorded_messages(None, limit).await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by_key(|m| m.message.created_at);
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }

    async fn record_stream_requests(
        &self,
        batch: Vec<RecordedRequest>,
        keep: usize,
    ) -> Result<(), Error> {
        let mut by_tenant: HashMap<String, Vec<RecordedRequest>> = HashMap::new();
        for r in batch {
            by_tenant.entry(r.tenant.clone()).or_default().push(r);
        }
        for (tenant, rs) in by_tenant {
            routed!(self, &tenant, |s| s
                .record_stream_requests(rs.clone(), keep))?;
        }
        Ok(())
    }

    async fn recorded_stream_requests(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RecordedRequest>, Error> {
        if let Some(t) = tenant {
            return routed!(self, t, |s| s.recorded_stream_requests(Some(t), limit));
        }
        let mut all: Vec<RecordedRequest> = self
            .each(|d| async move { d.recorded_stream_requests(None, limit).await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }

    async fn record_upload(&self, row: UploadRow) -> Result<(), Error> {
        let tenant = row.tenant.clone();
        routed!(self, &tenant, |s| s.record_upload(row.clone()))
    }

    async fn plugin_uploads(
        &self,
        tenant: &str,
        slot: &str,
        limit: usize,
    ) -> Result<Vec<UploadRow>, Error> {
        routed!(self, tenant, |s| s.plugin_uploads(tenant, slot, limit))
    }

    async fn plugin_slots(&self) -> Result<Vec<SlotRow>, Error> {
        let mut all: Vec<SlotRow> = self
            .each(|d| async move { d.plugin_slots().await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        // Once each (a moved tenant's rows are the same in both databases
        // for a moment).
        all.sort_by(|a, b| (&a.tenant, &a.slot, b.rev).cmp(&(&b.tenant, &b.slot, a.rev)));
        all.dedup_by(|a, b| a.tenant == b.tenant && a.slot == b.slot);
        Ok(all)
    }

    async fn plugin_revs(&self) -> Result<Vec<(String, String, i64)>, Error> {
        let mut all: Vec<(String, String, i64)> = self
            .each(|d| async move { d.plugin_revs().await })
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1, b.2).cmp(&(&b.0, &b.1, a.2)));
        all.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        Ok(all)
    }

    async fn plugin_wasm(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        // Content-addressed: any database's copy is the version.
        for d in &self.dbs {
            if let Some(w) = d.plugin_wasm(hash).await? {
                return Ok(Some(w));
            }
        }
        Ok(None)
    }

    async fn plugin_update(
        &self,
        tenant: &str,
        slot: &str,
        wasm: Option<(&str, &[u8])>,
        change: SlotChange,
    ) -> Result<SlotRow, Error> {
        // A refused try (the tenant moved) never called `change`: the next
        // try takes it.
        let change = Arc::new(Mutex::new(Some(change)));
        routed!(self, tenant, |s| {
            let change = change.clone();
            s.plugin_update(
                tenant,
                slot,
                wasm,
                Box::new(
                    move |row| match change.lock().expect("change lock").take() {
                        Some(f) => f(row),
                        None => Err(Refusal("the slot change was already applied")),
                    },
                ),
            )
        })
    }
}

#[async_trait]
impl AdminStore for Placed {
    async fn audit(&self, entry: NewAudit) -> Result<AuditEntry, Error> {
        self.dbs[0].audit(entry).await
    }

    async fn audit_log(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Error> {
        self.dbs[0].audit_log(tenant, before, limit).await
    }

    async fn topic_list(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<TopicRow>, Error> {
        routed!(self, tenant, |s| s.topic_list(tenant, after, limit))
    }
}
