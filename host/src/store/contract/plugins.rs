//! `PluginStore`: slot changes, each one transaction on the stored row.

use super::{contract, Db};
use crate::store::plugins::{Refusal, SlotChange, SlotRow, UploadRow, UPLOADS_KEPT};
use crate::store::{ConflictReason, Error};

contract!(
    concurrent_slot_updates_both_apply_in_order,
    a_refused_slot_change_changes_nothing,
    uploads_are_kept_per_slot_newest_first_and_bounded,
);

/// A change that appends `mark` to the slot's history.
fn mark(mark: &'static str) -> SlotChange {
    Box::new(move |mut row: SlotRow| {
        row.history.push(mark.into());
        Ok(row)
    })
}

/// Two updates of one slot at once are applied one after the other, each
/// to the row the other left: both marks are kept, and the revisions are 1
/// and 2 in the order the history shows.
async fn concurrent_slot_updates_both_apply_in_order(db: &Db) {
    let (a, b) = (db.plugins.clone(), db.plugins.clone());
    let first =
        tokio::spawn(async move { a.plugin_update("acme", "validator", None, mark("a")).await });
    let second =
        tokio::spawn(async move { b.plugin_update("acme", "validator", None, mark("b")).await });
    let first = first.await.expect("task").expect("update a");
    let second = second.await.expect("task").expect("update b");
    let mut revs = [first.rev, second.rev];
    revs.sort();
    assert_eq!(revs, [1, 2]);
    let rows = db.plugins.plugin_slots().await.expect("slots");
    let row = rows
        .iter()
        .find(|r| r.tenant == "acme" && r.slot == "validator")
        .expect("the row");
    assert_eq!(row.rev, 2);
    let (earlier, later) = if first.rev == 1 {
        ("a", "b")
    } else {
        ("b", "a")
    };
    assert_eq!(
        row.history,
        [earlier, later],
        "the later update saw the earlier one"
    );
    let revs = db.plugins.plugin_revs().await.expect("revs");
    assert!(revs.contains(&("acme".into(), "validator".into(), 2)));
}

/// A change refused by its own rule is `Conflict(Slot)` and leaves the row
/// and its revision as they were.
async fn a_refused_slot_change_changes_nothing(db: &Db) {
    db.plugins
        .plugin_update("acme", "validator", None, mark("a"))
        .await
        .expect("update");
    let refuse: SlotChange = Box::new(|_| Err(Refusal("there is no earlier version")));
    match db
        .plugins
        .plugin_update("acme", "validator", None, refuse)
        .await
    {
        Err(Error::Conflict(ConflictReason::Slot(r))) => {
            assert_eq!(r.to_string(), "there is no earlier version")
        }
        other => panic!("refused change: {other:?}"),
    }
    let rows = db.plugins.plugin_slots().await.expect("slots");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].rev, rows[0].history.clone()),
        (1, vec!["a".to_string()])
    );
}

/// A slot's uploads come back newest first with every field, only its own
/// (not another slot's or tenant's), and only the latest `UPLOADS_KEPT`.
async fn uploads_are_kept_per_slot_newest_first_and_bounded(db: &Db) {
    let upload = |tenant: &str, slot: &str, n: i64| UploadRow {
        id: 0,
        at: 1_000 + n,
        tenant: tenant.into(),
        slot: slot.into(),
        hash: format!("{n:064x}"),
        origin: "upload".into(),
        actor: (n % 2 == 0).then(|| "operator:olga".to_string()),
        message: Some(format!("number {n}")),
        mode: "active".into(),
        outcome: if n == 3 { "refused" } else { "installed" }.into(),
        error: (n == 3).then(|| "does not compile".to_string()),
    };
    for n in 0..(UPLOADS_KEPT + 5) {
        db.plugins
            .record_upload(upload("acme", "event-filter", n))
            .await
            .expect("record");
    }
    db.plugins
        .record_upload(upload("acme", "bid-validator", 0))
        .await
        .expect("record");
    db.plugins
        .record_upload(upload("other", "event-filter", 0))
        .await
        .expect("record");
    let got = db
        .plugins
        .plugin_uploads("acme", "event-filter", 1_000)
        .await
        .expect("uploads");
    assert_eq!(got.len() as i64, UPLOADS_KEPT, "only the latest are kept");
    let newest = UPLOADS_KEPT + 4;
    let mut want = upload("acme", "event-filter", newest);
    want.id = got[0].id;
    assert_eq!(got[0], want, "every field back");
    assert!(got.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(got.last().map(|u| u.at), Some(1_000 + 5));
    let two = db
        .plugins
        .plugin_uploads("acme", "event-filter", 2)
        .await
        .expect("uploads");
    assert_eq!(two.len(), 2);
    let other = db
        .plugins
        .plugin_uploads("other", "event-filter", 10)
        .await
        .expect("uploads");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].tenant, "other");
}
