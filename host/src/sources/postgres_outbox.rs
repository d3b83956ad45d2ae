//! An outbox table in the application's PostgreSQL: the application
//! publishes in the same transaction that changes its data (it calls
//! `switchyard_publish(tenant, topic, type, data, idempotency_key)`, or
//! inserts a row of Debezium's outbox shape), and what rolls back is never
//! published. `examples/sources/outbox.sql` is the migration an operator
//! runs in the application's database.
//!
//! Exactly once: each row becomes one event (or one dead letter) appended
//! under the idempotency key `src {source} {table} row:{id}` (or
//! `key:{idempotency_key}` when the application gave one, so its own retries
//! are published once too), in the same commit as the event; the rows are
//! deleted only after that commit. A crash before the commit leaves the
//! rows (nothing stored); after it and before the delete, they are read
//! again, their keys are found and nothing is stored twice.
//!
//! The order. A `bigserial` id is not the order in which transactions
//! became visible: a transaction that took id 7 can commit after one that
//! took id 8, so a reader that had passed 8 would skip 7, and one that
//! orders by id would publish 8 before 7 existed. PostgreSQL does not
//! expose commit order without logical decoding (a replication slot the
//! operator must run and watch) or `track_commit_timestamp` (a server
//! setting, and timestamps that tie). So each row carries the id of the
//! transaction that wrote it (`switchyard_xid xid8 DEFAULT
//! pg_current_xact_id()`), and a row is read only once every transaction
//! with a lower id has ended: `switchyard_xid <
//! pg_snapshot_xmin(pg_current_snapshot())`. Rows are delivered in
//! (transaction id, row order) order; once a row is delivered no row can
//! appear before it, nothing is skipped, and a transaction's rows stay
//! together and in the order it wrote them. Transactions that overlapped
//! are ordered by when each first wrote, not by when each committed; a
//! transaction that has not ended holds back the rows of every later one
//! (a long transaction in the same PostgreSQL delays delivery; it loses
//! nothing). The trade is taken because it needs nothing from the server
//! but the migration.
//!
//! Woken by `LISTEN switchyard` (a statement trigger on the table notifies
//! at commit, with the table's name), polling every second as a fallback
//! (a notification missed while reconnecting, or rows held back by an
//! older transaction that wrote no row).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Fault, Item, Source};

/// The channel the migration's trigger notifies (payload `schema.table`).
const CHANNEL: &str = "switchyard";
/// How often the table is read without a notification.
const POLL: Duration = Duration::from_secs(1);
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);

pub(super) struct PostgresOutbox;

/// Checks a configured table name: `table` or `schema.table`, each a
/// plain identifier (it is quoted, never spliced as given).
pub(super) fn check_table(t: &str) -> Result<(), String> {
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = t.split('.').collect();
    if (parts.len() == 1 || parts.len() == 2) && parts.iter().all(|p| ident(p)) {
        Ok(())
    } else {
        Err(format!(
            "`table` {t:?} must be `table` or `schema.table`, each of a-z, 0-9 and '_'"
        ))
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table as found in the catalog, and the statements that read it.
struct Table {
    /// `schema.table`, as the trigger names it in its notification.
    name: String,
    read: String,
    delete: String,
    count: String,
    dead: String,
}

async fn resolve(pool: &PgPool, configured: &str) -> Result<Table, Fault> {
    let found = sqlx::query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass($1)",
    )
    .bind(configured)
    .fetch_optional(pool)
    .await?;
    let Some(found) = found else {
        return Err(Fault::Other(format!(
            "the outbox table {configured:?} does not exist: run examples/sources/outbox.sql \
             in the application's database"
        )));
    };
    let schema: String = found.try_get("schema")?;
    let name: String = found.try_get("name")?;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
    )
    .bind(configured)
    .fetch_all(pool)
    .await?;
    let type_of = |c: &str| columns.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
    let id_type = type_of("id").ok_or_else(|| {
        Fault::Other(format!(
            "the outbox table {schema}.{name} has no `id` column"
        ))
    })?;
    if type_of("switchyard_xid").as_deref() != Some("xid8") {
        return Err(Fault::Other(format!(
            "the outbox table {schema}.{name} has no `switchyard_xid xid8` column: \
             see examples/sources/outbox.sql"
        )));
    }
    // Debezium's `id` is a uuid, in no order: the migration adds a
    // `switchyard_seq`, the order of a transaction's rows.
    let order = if type_of("switchyard_seq").is_some() {
        "switchyard_seq"
    } else {
        "id"
    };
    let q = format!("{}.{}", quote(&schema), quote(&name));
    Ok(Table {
        name: format!("{schema}.{name}"),
        read: format!(
            "SELECT o.id::text AS id, row_to_json(o)::text AS row FROM {q} o \
             WHERE o.switchyard_xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY o.switchyard_xid, o.{order} LIMIT $1"
        ),
        // The ids come back as text; the cast goes through the column's type
        // (as the catalog spells it) so the primary key's index is used.
        delete: format!("DELETE FROM {q} WHERE id = ANY($1::text[]::{id_type}[])"),
        count: format!("SELECT count(*) FROM {q}"),
        dead: format!(
            "INSERT INTO {}.switchyard_dead_letters (source, origin, reason, raw) \
             VALUES ($1, $2, $3, $4)",
            quote(&schema)
        ),
    })
}

/// Node-level dead letters (no known tenant): `switchyard_dead_letters`,
/// next to the outbox table.
struct PgDeadLetters<'a> {
    pool: &'a PgPool,
    sql: &'a str,
}

#[async_trait::async_trait]
impl super::NodeDeadLetters for PgDeadLetters<'_> {
    async fn dead_letter(
        &self,
        source: &str,
        origin: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<(), Fault> {
        sqlx::query(self.sql)
            .bind(source)
            .bind(origin)
            .bind(reason)
            .bind(String::from_utf8_lossy(raw).into_owned())
            .execute(self.pool)
            .await
            .map_err(|e| {
                Fault::Other(format!(
                    "cannot keep a dead letter in switchyard_dead_letters \
                     (see examples/sources/outbox.sql): {e}"
                ))
            })?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for PostgresOutbox {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault> {
        let spec = ctx.spec();
        let opts: sqlx::postgres::PgConnectOptions = spec
            .url
            .parse()
            .map_err(|_| Fault::Other("`database_url` is not a PostgreSQL URL".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        let table = resolve(&pool, &spec.table).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let dead = PgDeadLetters {
            pool: &pool,
            sql: &table.dead,
        };
        let mut measured = Instant::now() - LAG_EVERY;
        loop {
            if owned.is_cancelled() {
                return Ok(());
            }
            if measured.elapsed() >= LAG_EVERY {
                measured = Instant::now();
                if let Ok(n) = sqlx::query_scalar::<_, i64>(&table.count)
                    .fetch_one(&pool)
                    .await
                {
                    ctx.status.lag(Some(n.max(0) as u64), None);
                }
            }
            let rows: Vec<(String, String)> = sqlx::query_as(&table.read)
                .bind(spec.batch as i64)
                .fetch_all(&pool)
                .await?;
            if rows.is_empty() {
                // Wait for a commit on this table (or the poll).
                let deadline = tokio::time::Instant::now() + POLL;
                loop {
                    let n = tokio::select! {
                        n = listener.recv() => n,
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = owned.cancelled() => return Ok(()),
                    };
                    if n?.payload() == table.name {
                        break;
                    }
                }
                continue;
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut items = Vec::with_capacity(rows.len());
            for (id, row) in rows {
                let parsed = serde_json::from_str::<serde_json::Value>(&row)
                    .map_err(|e| format!("the row is not JSON: {e}"))
                    .and_then(unfold);
                let key = parsed
                    .as_ref()
                    .ok()
                    .and_then(|r| r.get("idempotency_key"))
                    .and_then(|k| k.as_str())
                    .filter(|k| !k.is_empty())
                    .map(|k| format!("{} key:{k}", table.name))
                    .unwrap_or_else(|| format!("{} row:{id}", table.name));
                items.push(Item {
                    origin: format!("{} row {id}", table.name),
                    key: Some(key),
                    raw: row.into_bytes(),
                    mapped: parsed.and_then(|r| spec.mapping.map(&[], &r)),
                });
                ids.push(id);
            }
            ctx.commit(items, &dead).await?;
            sqlx::query(&table.delete).bind(&ids).execute(&pool).await?;
        }
    }
}

/// A row's text columns holding a JSON object or array (a Debezium
/// `payload` kept as text) are read as JSON; a row that is not an object
/// has no fields.
fn unfold(row: serde_json::Value) -> Result<serde_json::Value, String> {
    let serde_json::Value::Object(map) = row else {
        return Err("the row is not an object".into());
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s)
                if k != "idempotency_key"
                    && matches!(s.trim_start().as_bytes().first(), Some(b'{' | b'[')) =>
            {
                serde_json::from_str(&s)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("column {k:?} is not JSON: {e}"))
            }
            v => Ok((k, v)),
        })
        .collect::<Result<_, _>>()
        .map(serde_json::Value::Object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_is_an_identifier_or_two() {
        assert!(check_table("switchyard_outbox").is_ok());
        assert!(check_table("app.outbox").is_ok());
        assert!(check_table("a.b.c").is_err());
        assert!(check_table("outbox; drop table x").is_err());
        assert!(check_table("\"Outbox\"").is_err());
        assert!(check_table("").is_err());
    }

    #[test]
    fn a_text_payload_holding_json_is_read_as_json() -> Result<(), String> {
        let r = unfold(serde_json::json!({"payload": "{\"a\":1}", "type": "x"}))?;
        assert_eq!(r, serde_json::json!({"payload": {"a": 1}, "type": "x"}));
        assert!(unfold(serde_json::json!({"payload": "{nope"})).is_err());
        Ok(())
    }
}
