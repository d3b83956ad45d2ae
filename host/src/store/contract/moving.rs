//! A move's steps against two fresh Postgres schemas, with retention
//! running between the pre-copy and the fenced copy: the target ends up
//! with exactly the source's events, whichever side trimmed.

use std::sync::Arc;

use super::fresh_schema;
use crate::event::NewEvent;
use crate::store::placed::{Placed, Rule};
use crate::store::postgres::moving;
use crate::store::Store;

/// Two databases (`main`, `b`), a tenant on `main` with 20 events on two
/// topics; `None` when Postgres does not answer.
async fn world() -> Option<(Arc<Placed>, String, Vec<String>)> {
    let (home, s1) = fresh_schema().await?;
    let (other, s2) = fresh_schema().await?;
    let p = Placed::open(&home, &[("b".to_string(), other)], Rule::Hash)
        .await
        .expect("open");
    let tenant = crate::bids::new_id("mv");
    p.create_tenant_on(&tenant, "Moving", Some("main"))
        .await
        .expect("tenant");
    let events = (0..20)
        .map(|i| NewEvent {
            tenant: tenant.clone(),
            topic: format!("t:{}", i % 2),
            kind: "e".into(),
            data: format!("{{\"i\":{i}}}"),
            retain: false,
        })
        .collect();
    p.append(events).await.expect("append");
    Some((p, tenant, vec![s1, s2]))
}

/// Drops the world's schemas.
async fn drop_world(p: Arc<Placed>, schemas: Vec<String>) {
    for d in p.databases() {
        d.pool.close().await;
    }
    if let Ok(mut c) =
        <sqlx::PgConnection as sqlx::Connection>::connect(&super::postgres_url()).await
    {
        for schema in schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut c)
                .await;
        }
    }
}

/// The ids of the tenant's events in a database.
async fn ids(p: &Placed, db: usize, tenant: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM events WHERE tenant = $1 ORDER BY seq")
        .bind(tenant)
        .fetch_all(&p.databases()[db].pool)
        .await
        .expect("ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_in_the_source_after_the_precopy_is_copied_too() {
    let Some((p, tenant, schemas)) = world().await else {
        return;
    };
    let (main, b) = (&p.databases()[0].pool, &p.databases()[1].pool);
    let pre = moving::precopy(main, b, &tenant).await.expect("precopy");
    // Retention in the source: topic t:0 keeps its newest 3 events.
    let removed = p.databases()[0]
        .trim_topic(&tenant, "t:0", 3)
        .await
        .expect("trim");
    assert_eq!(removed, 7);
    // More events while the pre-copy is done.
    p.append(vec![NewEvent {
        tenant: tenant.clone(),
        topic: "t:1".into(),
        kind: "e".into(),
        data: "{}".into(),
        retain: false,
    }])
    .await
    .expect("append");
    moving::fence(main, &tenant, "b").await.expect("fence");
    let copied = moving::copy(main, b, &tenant, pre).await.expect("copy");
    let source = ids(&p, 0, &tenant).await;
    assert_eq!(source.len(), 14);
    assert_eq!(ids(&p, 1, &tenant).await, source);
    assert_eq!((copied.head, copied.events), (21, 14));
    drop_world(p, schemas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_in_the_target_of_the_precopied_events_is_undone() {
    let Some((p, tenant, schemas)) = world().await else {
        return;
    };
    let (main, b) = (&p.databases()[0].pool, &p.databases()[1].pool);
    let pre = moving::precopy(main, b, &tenant).await.expect("precopy");
    assert_eq!(ids(&p, 1, &tenant).await.len(), 20);
    // The target's retention by age ran on the pre-copied events (every
    // one of them older than the cutoff).
    let removed = p.databases()[1]
        .trim_older_than(crate::event::now_ms() + 1_000)
        .await
        .expect("trim");
    assert_eq!(removed, 20);
    moving::fence(main, &tenant, "b").await.expect("fence");
    let copied = moving::copy(main, b, &tenant, pre).await.expect("copy");
    assert_eq!(ids(&p, 1, &tenant).await, (1..=20).collect::<Vec<i64>>());
    assert_eq!(copied.events, 20);
    // And the target's tenant is whole: its head and no watermark left
    // by the trim.
    let page = p.databases()[1]
        .read(&tenant, &["t:0".to_string()], Some(0), 100)
        .await
        .expect("read");
    assert_eq!((page.head, page.events.len()), (20, 10));
    assert!(
        page.topics.iter().all(|t| t.trimmed == 0),
        "{:?}",
        page.topics
    );
    drop_world(p, schemas).await;
}
