//! Migrations, embedded in the binary from `migrations/{sqlite,postgres}/`.
//!
//! Each runs once, in its own transaction, recorded in `schema_migrations`.
//! On Postgres an advisory lock keeps nodes that start together from racing.

use rusqlite::OptionalExtension;
use sqlx::PgPool;

use super::Error;

/// One migration step.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../../migrations/sqlite/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "messages",
        sql: include_str!("../../../migrations/sqlite/0002_messages.sql"),
    },
    Migration {
        version: 3,
        name: "bids",
        sql: include_str!("../../../migrations/sqlite/0003_bids.sql"),
    },
    Migration {
        version: 4,
        name: "plugins",
        sql: include_str!("../../../migrations/sqlite/0004_plugins.sql"),
    },
    Migration {
        version: 5,
        name: "publish_keys",
        sql: include_str!("../../../migrations/sqlite/0005_publish_keys.sql"),
    },
    Migration {
        version: 6,
        name: "stream_requests",
        sql: include_str!("../../../migrations/sqlite/0006_stream_requests.sql"),
    },
    Migration {
        version: 7,
        name: "audit",
        sql: include_str!("../../../migrations/sqlite/0007_audit.sql"),
    },
    Migration {
        version: 8,
        name: "plugin_uploads",
        sql: include_str!("../../../migrations/sqlite/0008_plugin_uploads.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../../migrations/postgres/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "messages",
        sql: include_str!("../../../migrations/postgres/0002_messages.sql"),
    },
    Migration {
        version: 3,
        name: "bids",
        sql: include_str!("../../../migrations/postgres/0003_bids.sql"),
    },
    Migration {
        version: 4,
        name: "plugins",
        sql: include_str!("../../../migrations/postgres/0004_plugins.sql"),
    },
    Migration {
        version: 5,
        name: "publish_keys",
        sql: include_str!("../../../migrations/postgres/0005_publish_keys.sql"),
    },
    Migration {
        version: 6,
        name: "stream_requests",
        sql: include_str!("../../../migrations/postgres/0006_stream_requests.sql"),
    },
    Migration {
        version: 7,
        name: "audit",
        sql: include_str!("../../../migrations/postgres/0007_audit.sql"),
    },
    Migration {
        version: 8,
        name: "plugin_uploads",
        sql: include_str!("../../../migrations/postgres/0008_plugin_uploads.sql"),
    },
    Migration {
        version: 9,
        name: "placement",
        sql: include_str!("../../../migrations/postgres/0009_placement.sql"),
    },
];

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
    (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Applies pending SQLite migrations on `conn` (a blocking call); returns
/// how many ran.
pub(crate) fn sqlite(conn: &mut rusqlite::Connection) -> Result<usize, Error> {
    conn.execute_batch(LEDGER)?;
    let mut ran = 0;
    for m in SQLITE {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?",
                [m.version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            continue;
        }
        tx.execute_batch(m.sql).map_err(|e| Error::Migration {
            version: m.version,
            source: Box::new(e),
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            rusqlite::params![m.version, m.name, crate::event::now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        ran += 1;
    }
    Ok(ran)
}

/// Applies pending Postgres migrations under an advisory lock.
pub(crate) async fn postgres(pool: &PgPool) -> Result<usize, Error> {
    let mut conn = pool.acquire().await?;
    // One lock per schema, so tests with their own schemas do not wait on each other.
    sqlx::query("SELECT pg_advisory_lock(hashtext('switchyard:' || current_schema()))")
        .execute(&mut *conn)
        .await?;
    let result = async {
        sqlx::query(LEDGER).execute(&mut *conn).await?;
        let mut ran = 0;
        for m in POSTGRES {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if done.is_some() {
                continue;
            }
            let fail = |e: sqlx::Error| Error::Migration {
                version: m.version,
                source: Box::new(e),
            };
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(crate::event::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            ran += 1;
        }
        Ok::<usize, Error>(ran)
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('switchyard:' || current_schema()))")
        .execute(&mut *conn)
        .await;
    result
}
