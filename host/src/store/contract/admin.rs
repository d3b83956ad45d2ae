//! `AdminStore`: the audit log (newest first, by page, by tenant) and the
//! topic listing (heads, retained state, watermarks, occupancy, by page).

use super::{contract, Db};
use crate::event::NewEvent;
use crate::store::admin::NewAudit;

contract!(
    the_audit_log_reads_newest_first_by_page_and_tenant,
    topics_are_listed_with_their_figures_by_page,
);

fn action(actor: &str, action: &str, tenant: Option<&str>, hash: Option<&str>) -> NewAudit {
    NewAudit {
        actor: actor.into(),
        action: action.into(),
        tenant: tenant.map(str::to_string),
        slot: Some("event-filter".into()),
        hash: hash.map(str::to_string),
        message: Some("first try".into()),
    }
}

/// Five actions come back newest first with everything recorded; a page
/// ends where the next one begins (`before`), and one tenant's are read
/// alone.
async fn the_audit_log_reads_newest_first_by_page_and_tenant(db: &Db) {
    let mut ids = Vec::new();
    for (i, tenant) in ["acme", "beta", "acme", "acme", "beta"].iter().enumerate() {
        let e = db
            .admin
            .audit(action(
                if i % 2 == 0 { "admin" } else { "operator:ann" },
                "plugin.upload",
                Some(tenant),
                Some(&format!("h{i}")),
            ))
            .await
            .expect("record");
        assert!(e.at > 0);
        ids.push(e.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
    let all = db.admin.audit_log(None, None, 100).await.expect("read");
    assert_eq!(all.len(), 5);
    let hashes: Vec<_> = all.iter().filter_map(|e| e.hash.clone()).collect();
    assert_eq!(hashes, ["h4", "h3", "h2", "h1", "h0"]);
    assert_eq!(all[0].actor, "admin");
    assert_eq!(all[1].actor, "operator:ann");
    assert_eq!(all[0].message.as_deref(), Some("first try"));
    assert_eq!(all[0].slot.as_deref(), Some("event-filter"));
    let first = db.admin.audit_log(None, None, 2).await.expect("page 1");
    let second = db
        .admin
        .audit_log(None, Some(first[1].id), 2)
        .await
        .expect("page 2");
    let paged: Vec<_> = first.iter().chain(&second).map(|e| e.id).collect();
    assert_eq!(paged, all.iter().take(4).map(|e| e.id).collect::<Vec<_>>());
    let acme = db
        .admin
        .audit_log(Some("acme"), None, 100)
        .await
        .expect("acme");
    let hashes: Vec<_> = acme.iter().filter_map(|e| e.hash.clone()).collect();
    assert_eq!(hashes, ["h3", "h2", "h0"]);
    let none = db
        .admin
        .audit(action("admin", "tenant.create", None, None))
        .await
        .expect("no tenant");
    assert_eq!((none.tenant, none.hash), (None, None));
}

fn event(topic: &str, retain: bool, data: &str) -> NewEvent {
    NewEvent {
        tenant: "acme".into(),
        topic: topic.into(),
        kind: "note".into(),
        data: data.into(),
        retain,
    }
}

/// Topics are listed by name with their newest id, retained state and
/// trimmed watermark, and the counts of their occupancy topic; derived
/// topics are not listed themselves, another tenant's never; a page starts
/// after the last name of the one before.
async fn topics_are_listed_with_their_figures_by_page(db: &Db) {
    for t in ["acme", "other"] {
        db.store.create_tenant(t, t).await.expect("tenant");
    }
    db.store
        .append(vec![
            event("a:1", false, "{}"),
            event("b:1", true, "{\"x\":1}"),
            event("a:1", false, "{}"),
            event("b:1~occupancy", true, "{\"streams\":2,\"users\":1}"),
            event("c:1", false, "{}"),
            event("c:1", false, "{}"),
            event("c:1", false, "{}"),
        ])
        .await
        .expect("append");
    db.store
        .append(vec![NewEvent {
            tenant: "other".into(),
            ..event("z:1", false, "{}")
        }])
        .await
        .expect("append other");
    db.store.trim_topic("acme", "c:1", 1).await.expect("trim");
    let rows = db.admin.topic_list("acme", "", 100).await.expect("list");
    let names: Vec<_> = rows.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(names, ["a:1", "b:1", "c:1"]);
    assert_eq!(rows[0].head, Some(3));
    assert!(!rows[0].retained);
    assert_eq!(rows[0].occupancy, None);
    assert_eq!(rows[1].head, Some(2));
    assert!(rows[1].retained);
    assert_eq!(rows[1].retained_seq, Some(2));
    assert_eq!(
        rows[1].occupancy.as_deref(),
        Some("{\"streams\":2,\"users\":1}")
    );
    assert_eq!(rows[2].head, Some(7));
    assert_eq!(rows[2].trimmed, 6);
    let first = db.admin.topic_list("acme", "", 2).await.expect("page 1");
    assert_eq!(first.len(), 2);
    let rest = db
        .admin
        .topic_list("acme", &first[1].topic, 2)
        .await
        .expect("page 2");
    let names: Vec<_> = rest.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(names, ["c:1"]);
    assert!(db
        .admin
        .topic_list("nobody", "", 10)
        .await
        .expect("unknown")
        .is_empty());
}
