//! Moving a tenant from one Postgres database to another (the steps; the
//! placement layer, `store/placed.rs`, runs them in order).
//!
//! 0. `precopy`: the tenant's events up to its head then are copied to the
//!    target while its writes go on (committed there without its counter
//!    row, so no listing and no read sees them): the bulk of a tenant is its
//!    log, and this takes it out of the pause.
//! 1. `fence`: the tenant's row in the source is locked `FOR UPDATE`, which
//!    waits for every write of the tenant in flight (an append holds the
//!    row's lock to its commit; the writes that append nothing hold
//!    `FOR KEY SHARE`, see `guard`), and marked `moved_to`. Every write
//!    after it is refused there (`Moved`) and waits in the placement layer.
//!    Reads go on: what is there is whole up to the head the fence found.
//! 2. `copy`: everything of the tenant is read from one snapshot of the
//!    source and written to the target in one transaction (leftovers of an
//!    earlier move there are removed first, but the pre-copied events): its
//!    counter (so ids go on from the same head), the events after the
//!    pre-copy (all of them when retention removed any of the tenant's
//!    events on either side meanwhile), topics, messages (with their ids, the clients'
//!    read cursors; the target's id sequence is moved past them), read
//!    marks, products, bids, plugin slots and the versions they name,
//!    idempotency keys, recorded stream requests and uploads.
//! 3. `left`: the source's copy is marked old (`moved_at`): listings of
//!    every tenant (tenants, heads, due products, plugin slots) take the
//!    target's from here on; both copies are the same until the flip, as
//!    no write of the tenant is accepted in between.
//! 4. The placement is flipped (in the home database, with a notification).
//! 5. `purge`: after a grace period the source's copy goes.
//!
//! Rows are streamed with `COPY … TO STDOUT` / `COPY … FROM STDIN` in the
//! binary format, which works for every table alike because both databases
//! run the same migrations; the columns a table numbers itself (bids' `n`,
//! the ids of recorded requests and uploads) are numbered again by the
//! target, in the same order.

use sqlx::{PgConnection, PgPool};

use crate::event::Seq;
use crate::store::Error;

/// One table of a tenant's data: its name, the column naming the tenant,
/// the order rows are copied in, and the column the target numbers itself.
struct Table {
    name: &'static str,
    tenant: &'static str,
    order: &'static str,
    renumbered: Option<&'static str>,
}

/// Every table holding a tenant's data, but `tenants` and `plugin_versions`
/// (copied by their own rules). The audit log stays in the home database.
const TABLES: &[Table] = &[
    Table {
        name: "events",
        tenant: "tenant",
        order: "seq",
        renumbered: None,
    },
    Table {
        name: "topics",
        tenant: "tenant",
        order: "topic",
        renumbered: None,
    },
    Table {
        name: "messages",
        tenant: "tenant",
        order: "id",
        renumbered: None,
    },
    Table {
        name: "message_reads",
        tenant: "tenant",
        order: "user_id",
        renumbered: None,
    },
    Table {
        name: "products",
        tenant: "tenant",
        order: "id",
        renumbered: None,
    },
    Table {
        name: "bids",
        tenant: "tenant",
        order: "n",
        renumbered: Some("n"),
    },
    Table {
        name: "plugin_slots",
        tenant: "tenant",
        order: "slot",
        renumbered: None,
    },
    Table {
        name: "publish_keys",
        tenant: "tenant",
        order: "key",
        renumbered: None,
    },
    Table {
        name: "stream_requests",
        tenant: "tenant",
        order: "id",
        renumbered: Some("id"),
    },
    Table {
        name: "plugin_uploads",
        tenant: "tenant",
        order: "id",
        renumbered: Some("id"),
    },
];

/// What a copy carried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copied {
    /// The tenant's head (its highest id) when it was fenced.
    pub head: Seq,
    /// Events copied.
    pub events: u64,
    /// Rows copied in all (events included).
    pub rows: u64,
}

/// Fences `tenant` in `from` for a move to `to`, after its writes in flight
/// committed; returns its head. Again on a fenced tenant (a move run once
/// more after a failure), the same.
pub(crate) async fn fence(from: &PgPool, tenant: &str, to: &str) -> Result<Seq, Error> {
    let mut tx = from.begin().await?;
    let head: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM tenants WHERE slug = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(head) = head else {
        return Err(Error::UnknownTenant(tenant.into()));
    };
    sqlx::query("UPDATE tenants SET moved_to = $2 WHERE slug = $1")
        .bind(tenant)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(head as Seq)
}

/// Marks the source's copy of a copied tenant old (step 3).
pub(crate) async fn left(from: &PgPool, tenant: &str) -> Result<(), Error> {
    sqlx::query("UPDATE tenants SET moved_at = $2 WHERE slug = $1 AND moved_to IS NOT NULL")
        .bind(tenant)
        .bind(crate::event::now_ms())
        .execute(from)
        .await?;
    Ok(())
}

/// Lifts a fence: a move given up before its flip leaves the tenant where
/// it was, writable again.
pub(crate) async fn unfence(from: &PgPool, tenant: &str) -> Result<(), Error> {
    sqlx::query("UPDATE tenants SET moved_to = NULL, moved_at = NULL WHERE slug = $1")
        .bind(tenant)
        .execute(from)
        .await?;
    Ok(())
}

/// What a pre-copy carried: the tenant's events up to `upto`, and its
/// topics' trim watermarks (summed) then.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Precopied {
    upto: Seq,
    trimmed: i64,
    events: u64,
}

/// The sum of the tenant's topics' trim watermarks: it grows whenever
/// retention removes any of its events.
async fn trimmed(conn: &mut PgConnection, tenant: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(trimmed_seq), 0)::bigint FROM topics WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?)
}

/// Copies the tenant's events up to its head now to `to` while its writes
/// go on (step 0), replacing whatever of it `to` held.
pub(crate) async fn precopy(from: &PgPool, to: &PgPool, tenant: &str) -> Result<Precopied, Error> {
    let mut src = from.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *src)
        .await?;
    let head: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM tenants WHERE slug = $1")
        .bind(tenant)
        .fetch_optional(&mut *src)
        .await?;
    let Some(head) = head else {
        return Err(Error::UnknownTenant(tenant.into()));
    };
    let trimmed = trimmed(&mut src, tenant).await?;
    let mut dst = to.begin().await?;
    purge_tx(&mut dst, tenant, None).await?;
    let events = copy_rows(
        &mut src,
        &mut dst,
        "events",
        &format!("tenant = $1 AND seq <= {head}"),
        "seq",
        None,
        tenant,
    )
    .await?;
    dst.commit().await?;
    src.commit().await?;
    Ok(Precopied {
        upto: head as Seq,
        trimmed,
        events,
    })
}

/// Copies everything of the fenced `tenant` from `from` to `to` (see the
/// module's doc), in one transaction on `to`, after `pre`.
pub(crate) async fn copy(
    from: &PgPool,
    to: &PgPool,
    tenant: &str,
    pre: Precopied,
) -> Result<Copied, Error> {
    let mut src = from.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *src)
        .await?;
    let head: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT last_seq, moved_to FROM tenants WHERE slug = $1")
            .bind(tenant)
            .fetch_optional(&mut *src)
            .await?;
    let Some((head, Some(_))) = head else {
        return Err(Error::Internal(format!(
            "tenant {tenant:?} is not fenced in the source: refusing to copy it"
        )));
    };
    let mut dst = to.begin().await?;
    // The pre-copied events stand unless retention removed any of the
    // tenant's events since, here (rows of its topics appeared: the
    // target's retention ran on them) or in the source (a watermark moved).
    let target_trimmed: i64 = sqlx::query_scalar("SELECT count(*) FROM topics WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&mut *dst)
        .await?;
    let keep = (target_trimmed == 0 && trimmed(&mut src, tenant).await? == pre.trimmed)
        .then_some(pre.upto);
    purge_tx(&mut dst, tenant, keep).await?;
    let mut copied = Copied {
        head: head as Seq,
        ..Copied::default()
    };
    // The counter first: the tenant exists in the target from here on
    // (visible at the commit, with everything else).
    copied.rows += copy_rows(
        &mut src,
        &mut dst,
        "tenants",
        "slug = $1",
        "slug",
        None,
        tenant,
    )
    .await?;
    sqlx::query("UPDATE tenants SET moved_to = NULL, moved_at = NULL WHERE slug = $1")
        .bind(tenant)
        .execute(&mut *dst)
        .await?;
    for t in TABLES {
        let filter = match (t.name, keep) {
            ("events", Some(upto)) => {
                copied.events = pre.events;
                copied.rows += pre.events;
                format!("tenant = $1 AND seq > {upto}")
            }
            _ => format!("{} = $1", t.tenant),
        };
        let n = copy_rows(
            &mut src,
            &mut dst,
            t.name,
            &filter,
            t.order,
            t.renumbered,
            tenant,
        )
        .await?;
        if t.name == "events" {
            copied.events += n;
        }
        copied.rows += n;
    }
    // The versions its slots name (content-addressed: another tenant's
    // copy of the same bytes in the target is the same version).
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT h FROM (SELECT active AS h FROM plugin_slots WHERE tenant = $1 \
         UNION SELECT shadow FROM plugin_slots WHERE tenant = $1 \
         UNION SELECT jsonb_array_elements_text(history::jsonb) FROM plugin_slots WHERE tenant = $1) v \
         WHERE h IS NOT NULL",
    )
    .bind(tenant)
    .fetch_all(&mut *src)
    .await?;
    for hash in hashes {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT wasm, created_at FROM plugin_versions WHERE hash = $1")
                .bind(&hash)
                .fetch_optional(&mut *src)
                .await?;
        if let Some((wasm, created_at)) = row {
            sqlx::query(
                "INSERT INTO plugin_versions (hash, wasm, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(&hash)
            .bind(wasm)
            .bind(created_at)
            .execute(&mut *dst)
            .await?;
            copied.rows += 1;
        }
    }
    // Message ids go on above the moved ones.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('messages', 'id'), \
         GREATEST((SELECT COALESCE(max(id), 0) FROM messages), 1))",
    )
    .execute(&mut *dst)
    .await?;
    dst.commit().await?;
    src.commit().await?;
    Ok(copied)
}

/// Copies the rows of `table` matching `filter` (`$1`: the tenant) in
/// `order`, streamed with `COPY` in the binary format (both databases run
/// the same migrations, so the columns' types match); `renumbered` is left
/// for the target to fill, in that order.
///
/// `COPY` instead of `INSERT … SELECT` over JSON pages: a move of a tenant
/// with 101,005 events paused its writes 8.8 s that way (docs/benchmarks.md,
/// "Moving a tenant"); `COPY` streams the rows with no page queries.
async fn copy_rows(
    src: &mut PgConnection,
    dst: &mut PgConnection,
    table: &str,
    filter: &str,
    order: &str,
    renumbered: Option<&str>,
    tenant: &str,
) -> Result<u64, Error> {
    use futures_util::StreamExt;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(column_name::text) FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *dst)
    .await?;
    let columns = columns
        .into_iter()
        .filter(|c| Some(c.as_str()) != renumbered)
        .collect::<Vec<_>>()
        .join(", ");
    // `COPY` takes no parameters: the slug as a literal (slugs are
    // `[a-z0-9-]`; a quote would be doubled all the same).
    let filter = filter.replace("$1", &format!("'{}'", tenant.replace('\'', "''")));
    let out = format!(
        "COPY (SELECT {columns} FROM {table} WHERE {filter} ORDER BY {order}) \
         TO STDOUT (FORMAT binary)"
    );
    let mut copy_in = dst
        .copy_in_raw(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let sent: Result<(), Error> = async {
        let mut rows = src.copy_out_raw(&out).await?;
        while let Some(chunk) = rows.next().await {
            copy_in.send(chunk?).await?;
        }
        Ok(())
    }
    .await;
    match sent {
        Ok(()) => Ok(copy_in.finish().await?),
        Err(e) => {
            let _ = copy_in.abort("the source's rows could not be read").await;
            Err(e)
        }
    }
}

/// Removes everything of `tenant` from the database of `pool`: a moved
/// tenant's old copy once its grace period is over (its tombstone too:
/// a node that still sends the tenant here learns where it went from the
/// `UnknownTenant` it gets).
pub(crate) async fn purge(pool: &PgPool, tenant: &str) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // Only a tenant that was moved away: never one that lives here.
    let moved: Option<Option<String>> =
        sqlx::query_scalar("SELECT moved_to FROM tenants WHERE slug = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    if !matches!(moved, Some(Some(_))) {
        return Ok(());
    }
    purge_tx(&mut tx, tenant, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the copy a move made in `to` when the move is undone before its
/// flip (the placement still names the source, so no node wrote there).
pub(crate) async fn discard(to: &PgPool, tenant: &str) -> Result<(), Error> {
    let mut tx = to.begin().await?;
    purge_tx(&mut tx, tenant, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes every row of `tenant` inside the caller's transaction, but its
/// events up to `keep` (pre-copied) when given.
async fn purge_tx(tx: &mut PgConnection, tenant: &str, keep: Option<Seq>) -> Result<(), Error> {
    for t in TABLES {
        let upto = match (t.name, keep) {
            ("events", Some(upto)) => format!(" AND seq > {upto}"),
            _ => String::new(),
        };
        sqlx::query(&format!(
            "DELETE FROM {} WHERE {} = $1{upto}",
            t.name, t.tenant
        ))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM tenants WHERE slug = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    // Versions no slot names any more (as `plugin_update` does).
    sqlx::query(&format!(
        "{} AND hash NOT IN (SELECT jsonb_array_elements_text(history::jsonb) FROM plugin_slots)",
        crate::store::plugins::GC
    ))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
