//! The contract of each system-of-record trait (`Store`, `BidStore`,
//! `PluginStore`), run against both implementations so that embedded and
//! cluster mode cannot drift apart. Each property is an async fn over the
//! trait; `contract!` runs it on a fresh SQLite database always, and on a
//! fresh Postgres schema when Postgres answers
//! (`SWITCHYARD_TEST_DATABASE_URL`, default 127.0.0.1:5432; CI has it), and
//! on tenants placed over two fresh schemas by hash (`placed.rs`).

mod admin;
mod bids;
mod moving;
mod plugins;
mod store;

use std::sync::Arc;

use super::admin::AdminStore;
use super::bids::BidStore;
use super::plugins::PluginStore;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::Store;

/// One fresh database, seen through each trait.
pub(super) struct Db {
    /// Tenants and the event log.
    pub(super) store: Arc<dyn Store>,
    /// Products and bids.
    pub(super) bids: Arc<dyn BidStore>,
    /// Plugin slots.
    pub(super) plugins: Arc<dyn PluginStore>,
    /// The audit log and topic listing.
    pub(super) admin: Arc<dyn AdminStore>,
    /// What to remove afterwards.
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Schemas(Vec<(String, sqlx::PgPool)>),
}

/// A fresh schema's URL, or `None` when Postgres does not answer.
pub(super) async fn fresh_schema() -> Option<(String, String)> {
    let url = postgres_url();
    let mut admin = match <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped on Postgres: {url} does not answer ({e})");
            return None;
        }
    };
    let schema = unique("contract");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((
        format!("{url}{sep}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

fn unique(what: &str) -> String {
    crate::bids::new_id(what)
}

fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Db {
    /// A SQLite database in a directory of its own.
    pub(super) async fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(unique("switchyard-contract"));
        let s = Arc::new(SqliteStore::open(&dir).await.expect("open SQLite"));
        Db {
            store: s.clone(),
            bids: s.clone(),
            plugins: s.clone(),
            admin: s,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A Postgres schema of its own, or `None` when Postgres does not
    /// answer (the property is then skipped, and says so).
    pub(super) async fn postgres() -> Option<Db> {
        let (url, schema) = fresh_schema().await?;
        let s = Arc::new(
            PostgresStore::connect(&url)
                .await
                .expect("connect to Postgres"),
        );
        let pool = s.pool.clone();
        Some(Db {
            store: s.clone(),
            bids: s.clone(),
            plugins: s.clone(),
            admin: s,
            cleanup: Cleanup::Schemas(vec![(schema, pool)]),
        })
    }

    /// Two Postgres schemas of their own, tenants placed on them by hash
    /// (so the properties' tenants land on both), or `None` when Postgres
    /// does not answer.
    pub(super) async fn placed() -> Option<Db> {
        let (home, home_schema) = fresh_schema().await?;
        let (other, other_schema) = fresh_schema().await?;
        let p = super::placed::Placed::open(
            &home,
            &[("b".to_string(), other)],
            super::placed::Rule::Hash,
        )
        .await
        .expect("connect to Postgres");
        let pools = p.databases().iter().map(|d| d.pool.clone());
        let cleanup = Cleanup::Schemas(
            vec![home_schema, other_schema]
                .into_iter()
                .zip(pools)
                .collect(),
        );
        Some(Db {
            store: p.clone(),
            bids: p.clone(),
            plugins: p.clone(),
            admin: p,
            cleanup,
        })
    }

    /// Removes the database.
    pub(super) async fn drop(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schemas(schemas) => {
                for (schema, pool) in schemas {
                    pool.close().await;
                    if let Ok(mut c) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url()).await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                }
            }
        }
    }
}

/// Runs each listed property (`async fn(&Db)`) as three tests,
/// `sqlite::name`, `postgres::name` and `placed::name`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::store::contract::Db::sqlite().await;
                    super::$name(&db).await;
                    db.drop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::store::contract::Db::postgres().await {
                        super::$name(&db).await;
                        db.drop().await;
                    }
                }
            )*
        }
        mod placed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::store::contract::Db::placed().await {
                        super::$name(&db).await;
                        db.drop().await;
                    }
                }
            )*
        }
    };
}
pub(crate) use contract;
